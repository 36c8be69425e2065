//! What a webhook is sent: which rollout events are notifications, and their bodies (`json`:
//! the event as an object; `slack`: `{"text": ...}` with one line a person reads).

use serde::Serialize;

use crate::events::{Event, EventStep};
use crate::spec::{NotifyEvent, WebhookFormat};

/// The notification an event is, if any: `failed`, `paused`, `resumed`, `completed`, and
/// `nodeUpgraded` for a node back Ready at the target (its `ready` event, written once per
/// upgrade, and never for a node handed back untouched or rolled back).
pub fn notification(event: &Event) -> Option<NotifyEvent> {
    Some(match event.step {
        EventStep::Failed => NotifyEvent::Failed,
        EventStep::Paused => NotifyEvent::Paused,
        EventStep::Resumed => NotifyEvent::Resumed,
        EventStep::Completed => NotifyEvent::Completed,
        EventStep::Ready => NotifyEvent::NodeUpgraded,
        _ => return None,
    })
}

/// One notification, as queued for a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub kind: NotifyEvent,
    /// The spec's `metadata.name`.
    pub rollout: String,
    pub event: Event,
    /// The same for every attempt, so a receiver can drop a retried copy.
    pub delivery_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonBody<'a> {
    event: &'static str,
    rollout: &'a str,
    delivery_id: &'a str,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<JsonNode<'a>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    from_version: &'a str,
    to_version: &'a str,
    message: &'a str,
    /// The same line as the `slack` format's.
    text: String,
}

#[derive(Serialize)]
struct JsonNode<'a> {
    id: &'a str,
    hostname: &'a str,
    role: &'a str,
}

impl Notification {
    /// The body in `format`.
    pub fn body(&self, format: WebhookFormat) -> Vec<u8> {
        let text = self.text();
        let e = &self.event;
        let body = match format {
            WebhookFormat::Slack => serde_json::json!({ "text": text }),
            WebhookFormat::Json => serde_json::to_value(JsonBody {
                event: self.kind.as_str(),
                rollout: &self.rollout,
                delivery_id: &self.delivery_id,
                time: e.time.to_string(),
                node: (!e.node_id.is_empty()).then_some(JsonNode {
                    id: &e.node_id,
                    hostname: &e.hostname,
                    role: &e.role,
                }),
                from_version: &e.from_version,
                to_version: &e.to_version,
                message: &e.message,
                text,
            })
            .expect("a notification serializes"),
        };
        serde_json::to_vec(&body).expect("a JSON value serializes")
    }

    /// One line naming the rollout, the node, the versions and the reason.
    pub fn text(&self) -> String {
        let e = &self.event;
        let node = format!("{} ({})", e.hostname, e.role);
        let versions = format!("{} -> {}", e.from_version, e.to_version);
        let what = match self.kind {
            NotifyEvent::Failed => format!("{node} failed upgrading {versions}: {}", e.message),
            NotifyEvent::NodeUpgraded => format!("{node} upgraded {versions}"),
            NotifyEvent::Paused => {
                let why = e
                    .message
                    .strip_prefix("rollout paused: ")
                    .unwrap_or(&e.message);
                format!("rollout to {} paused: {why}", e.to_version)
            }
            NotifyEvent::Resumed => format!("rollout to {} resumed: {}", e.to_version, e.message),
            NotifyEvent::Completed => {
                format!("rollout to {} completed: {}", e.to_version, e.message)
            }
        };
        format!("swarm-upgrade {}: {what}", self.rollout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{NodeRef, Role};

    fn failed() -> Notification {
        let node = NodeRef {
            id: "abc".into(),
            hostname: "n2".into(),
            role: Role::Manager,
            addr: "10.0.0.2".into(),
            engine_version: "20.10.24".into(),
        };
        let time = "2026-12-02T06:00:00Z".parse().unwrap();
        let reason = "not Ready at 26.1.5 within readyTimeout 3m";
        let event = Event::node(time, EventStep::Failed, &node, "20.10.24", "26.1.5", reason);
        Notification {
            kind: notification(&event).unwrap(),
            rollout: "engine-26".into(),
            event,
            delivery_id: "d1".into(),
        }
    }

    #[test]
    fn only_the_five_notified_steps_are_notifications() {
        let n = failed();
        let mut event = n.event.clone();
        let mut notified = vec![];
        for step in [
            EventStep::Drain,
            EventStep::Upgraded,
            EventStep::Ready,
            EventStep::Reactivated,
            EventStep::Failed,
            EventStep::Paused,
            EventStep::Resumed,
            EventStep::Completed,
            EventStep::Unlock,
        ] {
            event.step = step;
            notified.extend(notification(&event));
        }
        assert_eq!(
            notified,
            [
                NotifyEvent::NodeUpgraded,
                NotifyEvent::Failed,
                NotifyEvent::Paused,
                NotifyEvent::Resumed,
                NotifyEvent::Completed
            ]
        );
    }

    #[test]
    fn the_slack_line_names_node_versions_and_reason() {
        let body: serde_json::Value =
            serde_json::from_slice(&failed().body(WebhookFormat::Slack)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"text": "swarm-upgrade engine-26: n2 (manager) failed upgrading 20.10.24 -> 26.1.5: not Ready at 26.1.5 within readyTimeout 3m"})
        );
    }

    #[test]
    fn the_json_body_carries_the_event_fields() {
        let body: serde_json::Value =
            serde_json::from_slice(&failed().body(WebhookFormat::Json)).unwrap();
        assert_eq!(body["event"], "failed");
        assert_eq!(body["rollout"], "engine-26");
        assert_eq!(body["deliveryId"], "d1");
        assert_eq!(body["node"]["hostname"], "n2");
        assert_eq!(body["node"]["role"], "manager");
        assert_eq!(body["fromVersion"], "20.10.24");
        assert_eq!(body["toVersion"], "26.1.5");
        assert_eq!(body["time"], "2026-12-02T06:00:00Z");
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .contains("n2 (manager) failed")
        );

        let done = Notification {
            kind: NotifyEvent::Completed,
            event: Event::rollout(
                "2026-12-02T07:00:00Z".parse().unwrap(),
                EventStep::Completed,
                "26.1.5",
                "every selected node is at 26.1.5",
            ),
            ..failed()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&done.body(WebhookFormat::Json)).unwrap();
        assert!(
            body.get("node").is_none() && body.get("fromVersion").is_none(),
            "{body}"
        );
        assert_eq!(
            body["text"],
            "swarm-upgrade engine-26: rollout to 26.1.5 completed: every selected node is at 26.1.5"
        );
    }
}
