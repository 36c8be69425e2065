//! Sending one notification to one webhook: its headers (the HMAC-SHA256 signature, Basic
//! authentication from the URL), the POST, and its retries with exponential backoff.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use base64::Engine as _;
use bytes::Bytes;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};

use super::message::Notification;
use crate::http_client::{HttpClient, HttpError, Post};
use crate::spec::WebhookSpec;
use crate::spec::notify::ParsedWebhookUrl;

/// Header carrying `sha256=<hex>`, the HMAC-SHA256 of the body keyed with `secretFile`.
pub const SIGNATURE_HEADER: &str = "x-swarm-upgrade-signature-256";
/// Header naming the notification (`failed`, `nodeUpgraded`, ...).
pub const EVENT_HEADER: &str = "x-swarm-upgrade-event";
/// Header with the delivery's ID, the same on each retry.
pub const DELIVERY_HEADER: &str = "x-swarm-upgrade-delivery";

/// Retries after the first attempt.
pub(crate) const RETRIES: usize = 4;

/// Why a notification did not reach its webhook. No variant holds the URL.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot read secretFile {path}: {source}")]
    SecretFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook answered {status}")]
    Status { status: u16 },
    #[error("{0}")]
    Http(#[source] HttpError),
}

impl DeliveryError {
    /// The `reason` label of `swarm_upgrade_notifications_failed_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DeliveryError::SecretFile { .. } => "secret_file",
            DeliveryError::Status { status } if *status >= 500 => "http_5xx",
            DeliveryError::Status { .. } => "http_4xx",
            DeliveryError::Http(e) => e.metric_label(),
        }
    }

    /// Worth another attempt: no answer, a server error or "too many requests". Any other
    /// answer (a 4xx: wrong URL, refused signature) will not change by itself.
    fn is_transient(&self) -> bool {
        match self {
            DeliveryError::Status { status } => *status >= 500 || *status == 429,
            DeliveryError::Http(e) => matches!(
                e,
                HttpError::Connect { .. }
                    | HttpError::Request { .. }
                    | HttpError::Body { .. }
                    | HttpError::TimedOut { .. }
            ),
            DeliveryError::SecretFile { .. } => false,
        }
    }
}

/// One webhook as its sender task sends to it.
pub struct Webhook {
    pub name: String,
    pub spec: WebhookSpec,
    pub url: ParsedWebhookUrl,
    client: HttpClient,
    backoff: ExponentialBuilder,
}

impl Webhook {
    pub fn new(name: String, spec: WebhookSpec, url: ParsedWebhookUrl) -> Self {
        let client = HttpClient::new("swarm-upgrade", spec.timeout.get()).with_max_body(64 * 1024);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(RETRIES)
            .with_jitter();
        Self {
            name,
            spec,
            url,
            client,
            backoff,
        }
    }

    /// Sends `n`, retrying transient failures; the last failure when every attempt failed.
    pub async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let body = Bytes::from(n.body(self.spec.format));
        let headers = self.headers(n, &body)?;
        let attempt = || async {
            let response = self
                .client
                .post(Post {
                    uri: &self.url.request_uri,
                    shown_as: &self.url.redacted,
                    content_type: "application/json",
                    headers: headers.clone(),
                    body: body.clone(),
                })
                .await
                .map_err(DeliveryError::Http)?;
            if response.is_success() {
                Ok(())
            } else {
                Err(DeliveryError::Status {
                    status: response.status,
                })
            }
        };
        attempt
            .retry(self.backoff)
            .sleep(tokio::time::sleep)
            .when(DeliveryError::is_transient)
            .notify(|e, after| {
                tracing::debug!(webhook = %self.name, url = %self.url.redacted, ?after, "notification attempt failed, retrying: {e}")
            })
            .await
    }

    fn headers(
        &self,
        n: &Notification,
        body: &[u8],
    ) -> Result<Vec<(HeaderName, HeaderValue)>, DeliveryError> {
        let value = |s: &str| HeaderValue::from_str(s).expect("ASCII header value");
        let mut headers = vec![
            (
                HeaderName::from_static(EVENT_HEADER),
                value(n.kind.as_str()),
            ),
            (
                HeaderName::from_static(DELIVERY_HEADER),
                value(&n.delivery_id),
            ),
        ];
        if let Some(path) = &self.spec.secret_file {
            let secret =
                std::fs::read_to_string(path).map_err(|source| DeliveryError::SecretFile {
                    path: path.clone(),
                    source,
                })?;
            let signature = format!("sha256={}", hmac_sha256_hex(secret.trim().as_bytes(), body));
            headers.push((HeaderName::from_static(SIGNATURE_HEADER), value(&signature)));
        }
        if let Some(info) = &self.url.user_info {
            let basic = base64::engine::general_purpose::STANDARD.encode(info);
            let mut auth = value(&format!("Basic {basic}"));
            auth.set_sensitive(true);
            headers.push((AUTHORIZATION, auth));
        }
        Ok(headers)
    }
}

/// HMAC-SHA256 of `body` keyed with `key`, as lowercase hex.
pub fn hmac_sha256_hex(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, body);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2, so a receiver checking with any HMAC library agrees.
    #[test]
    fn the_signature_is_standard_hmac_sha256() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_answers_that_may_change_are_retried() {
        let status = |status| DeliveryError::Status { status };
        assert!(status(500).is_transient() && status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(404).is_transient() && !status(401).is_transient());
        assert_eq!(status(502).metric_label(), "http_5xx");
        assert_eq!(status(403).metric_label(), "http_4xx");
        let timeout = DeliveryError::Http(HttpError::TimedOut {
            url: "https://h/…".into(),
            after: Duration::from_secs(1),
        });
        assert!(timeout.is_transient());
        assert_eq!(timeout.metric_label(), "timeout");
    }
}
