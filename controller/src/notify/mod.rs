//! `spec.notify.webhooks`: the rollout's failures, pauses, resumptions, completion and upgraded
//! nodes POSTed to webhooks, without ever holding up the reconcile loop.
//!
//! The loop writes events ([`crate::events::EventSink`]); each one that is a notification is
//! put, without waiting, on the queue of every webhook that lists it. Each webhook has its
//! own queue and sender task, so a slow or hanging receiver delays only itself; it gets the
//! events in order. A full queue (a receiver down for long) drops the notification and counts
//! it (`swarm_upgrade_notifications_failed_total{reason="queue_full"}`); so does a send that
//! failed after its retries, with the last failure as the reason. The URL never appears in
//! the log or the metrics: the webhook's name does.

pub mod deliver;
pub mod message;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::events::{Event, EventListener};
use crate::metrics::NotificationFailureLabels;
use crate::spec::{SpecState, WebhookSpec};
use deliver::Webhook;
use message::{Notification, notification};

/// Notifications a webhook's queue holds while its receiver is slow; more are dropped and
/// counted. A rollout writes a handful per node, so this is a long outage's worth.
pub(crate) const QUEUE_CAPACITY: usize = 256;

/// Counts notifications that did not reach their webhook.
#[derive(Clone)]
struct Failures(Family<NotificationFailureLabels, Counter>);

impl Failures {
    fn count(&self, webhook: &str, reason: &str) {
        self.0
            .get_or_create(&NotificationFailureLabels {
                webhook: webhook.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// A webhook's queue and the task sending from it.
struct Sender {
    name: String,
    queue: mpsc::Sender<Notification>,
    /// Queued or being sent.
    pending: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// Hands events to the webhooks of the spec in force. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    spec: watch::Receiver<SpecState>,
    failures: Failures,
    /// By the webhook's whole spec: an edited webhook gets a new sender, and the old one
    /// finishes what it holds.
    senders: Arc<Mutex<BTreeMap<String, Sender>>>,
    retired: Arc<Mutex<Vec<Sender>>>,
    next_delivery: Arc<AtomicU64>,
}

impl Notifier {
    pub fn new(
        spec: watch::Receiver<SpecState>,
        failed: Family<NotificationFailureLabels, Counter>,
    ) -> Self {
        Self {
            spec,
            failures: Failures(failed),
            senders: Arc::default(),
            retired: Arc::default(),
            next_delivery: Arc::default(),
        }
    }

    /// Queues each notification among `events` for the webhooks that list it; never waits.
    pub fn notify(&self, events: &[Event]) {
        let state = self.spec.borrow().clone();
        let Some(doc) = state.current else {
            return;
        };
        let webhooks = &doc.spec.notify.webhooks;
        let mut senders = self.senders.lock().expect("notifier poisoned");
        self.retire_removed(&mut senders, webhooks);
        for event in events {
            let Some(kind) = notification(event) else {
                continue;
            };
            let delivery_id = format!(
                "{}-{}",
                event.time.as_millisecond(),
                self.next_delivery.fetch_add(1, Ordering::Relaxed)
            );
            for (index, webhook) in webhooks.iter().enumerate() {
                if !webhook.events.contains(&kind) {
                    continue;
                }
                let Some(sender) = self.sender(&mut senders, index, webhook) else {
                    continue;
                };
                let n = Notification {
                    kind,
                    rollout: doc.metadata.name.clone(),
                    event: event.clone(),
                    delivery_id: delivery_id.clone(),
                };
                sender.pending.fetch_add(1, Ordering::SeqCst);
                if let Err(e) = sender.queue.try_send(n) {
                    sender.pending.fetch_sub(1, Ordering::SeqCst);
                    let reason = match e {
                        mpsc::error::TrySendError::Full(_) => "queue_full",
                        mpsc::error::TrySendError::Closed(_) => "sender_stopped",
                    };
                    self.failures.count(&sender.name, reason);
                    tracing::warn!(webhook = %sender.name, event = kind.as_str(), "notification dropped: {reason} ({QUEUE_CAPACITY} waiting for a slow receiver)");
                }
            }
        }
    }

    /// The sender of `webhook`, started on first use; none for a URL that does not parse
    /// (the spec's validation refuses it, so this is only a safeguard).
    fn sender<'a>(
        &self,
        senders: &'a mut BTreeMap<String, Sender>,
        index: usize,
        webhook: &WebhookSpec,
    ) -> Option<&'a Sender> {
        let key = serde_json::to_string(webhook).expect("a webhook spec serializes");
        if !senders.contains_key(&key) {
            let name = webhook.display_name(index);
            let Ok(url) = webhook.url.parse() else {
                self.failures.count(&name, "invalid_url");
                return None;
            };
            let hook = Webhook::new(name, webhook.clone(), url);
            senders.insert(key.clone(), spawn_sender(hook, self.failures.clone()));
        }
        senders.get(&key)
    }

    /// Senders of webhooks no longer in the spec stop once their queue is empty.
    fn retire_removed(&self, senders: &mut BTreeMap<String, Sender>, webhooks: &[WebhookSpec]) {
        let keep: Vec<String> = webhooks
            .iter()
            .map(|w| serde_json::to_string(w).expect("a webhook spec serializes"))
            .collect();
        let gone: Vec<String> = senders
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        let mut retired = self.retired.lock().expect("notifier poisoned");
        retired.retain(|s| !s.task.is_finished());
        for key in gone {
            if let Some(sender) = senders.remove(&key) {
                retired.push(sender);
            }
        }
    }

    /// Notifications queued or being sent, over every webhook.
    pub fn pending(&self) -> usize {
        let senders = self.senders.lock().expect("notifier poisoned");
        let retired = self.retired.lock().expect("notifier poisoned");
        senders
            .values()
            .chain(retired.iter())
            .map(|s| s.pending.load(Ordering::SeqCst))
            .sum()
    }

    /// Before the process exits: lets the senders finish for up to `grace`, then says how many
    /// notifications were never sent.
    pub async fn flush(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while self.pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.pending();
        if left > 0 {
            tracing::warn!(
                "{left} notifications not sent before the operator exits (a webhook is slow or down)"
            );
        }
    }
}

impl EventListener for Notifier {
    fn events_written(&self, events: &[Event]) {
        self.notify(events);
    }
}

fn spawn_sender(webhook: Webhook, failures: Failures) -> Sender {
    let (queue, mut rx) = mpsc::channel::<Notification>(QUEUE_CAPACITY);
    let pending = Arc::new(AtomicUsize::new(0));
    let name = webhook.name.clone();
    let left = pending.clone();
    let task = tokio::spawn(async move {
        while let Some(n) = rx.recv().await {
            match webhook.deliver(&n).await {
                Ok(()) => {
                    tracing::debug!(webhook = %webhook.name, event = n.kind.as_str(), "notification sent")
                }
                Err(e) => {
                    failures.count(&webhook.name, e.metric_label());
                    tracing::warn!(
                        webhook = %webhook.name,
                        url = %webhook.url.redacted,
                        event = n.kind.as_str(),
                        "notification not delivered: {e}"
                    );
                }
            }
            left.fetch_sub(1, Ordering::SeqCst);
        }
    });
    Sender {
        name,
        queue,
        pending,
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventStep;
    use crate::spec::parse_spec;

    fn state(webhook_url: &str) -> SpecState {
        let text = format!(
            r#"apiVersion: swarm-upgrade.io/v1alpha1
kind: EngineUpgrade
metadata: {{ name: engine-26 }}
spec:
  version: "26.1.5"
  upgrade: {{ command: ["/bin/true"] }}
  notify:
    webhooks:
      - name: slow
        url: {webhook_url}
        events: [completed]
        timeout: 5s
"#
        );
        let doc = parse_spec(&text, std::path::Path::new("spec.yaml")).unwrap();
        SpecState {
            current: Some(Arc::new(doc)),
            generation: 1,
            content_hash: 1,
            error: None,
            loaded_at: "2026-12-02T06:00:00Z".parse().unwrap(),
        }
    }

    fn completed() -> Event {
        let time = "2026-12-02T06:00:00Z".parse().unwrap();
        Event::rollout(time, EventStep::Completed, "26.1.5", "done")
    }

    /// A receiver that accepts connections and never answers: the queue fills, and what does
    /// not fit is counted at once instead of waited for.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (_tx, rx) = watch::channel(state(&url));
        let failed = Family::<NotificationFailureLabels, Counter>::default();
        let notifier = Notifier::new(rx, failed.clone());
        let extra = 44;
        let started = tokio::time::Instant::now();
        // One call, so the sender task has not taken any yet (this runtime has one thread).
        let events = vec![completed(); QUEUE_CAPACITY + extra];
        notifier.notify(&events);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        let dropped = failed
            .get(&NotificationFailureLabels {
                webhook: "slow".into(),
                reason: "queue_full".into(),
            })
            .map(|c| c.get());
        assert_eq!(dropped, Some(extra as u64));
        assert_eq!(notifier.pending(), QUEUE_CAPACITY);
        // Other steps are not notifications.
        let mut drain = completed();
        drain.step = EventStep::Drain;
        notifier.notify(&[drain]);
        assert_eq!(notifier.pending(), QUEUE_CAPACITY);
        drop(listener);
    }
}
