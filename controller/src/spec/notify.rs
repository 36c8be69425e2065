//! `spec.notify`: the webhooks told of a rollout's failures, pauses, resumptions, completion and
//! upgraded nodes. The URL's path, query and user info are secret (a Slack or chat webhook URL
//! is its own credential): only [`WebhookUrl::redacted`] is ever shown.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SpecDuration;

/// Where the rollout's notifications go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotifySpec {
    /// Each webhook gets one POST per event it lists, in the order the events happen.
    #[serde(default)]
    pub webhooks: Vec<WebhookSpec>,
}

impl NotifySpec {
    pub fn is_default(&self) -> bool {
        self.webhooks.is_empty()
    }
}

/// One receiver of notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    /// The name in the `webhook` label of `swarm_upgrade_notifications_failed_total` and in
    /// the log (the URL never is). Default: `webhook-N`, N its position in the list from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), example = "ops-chat")]
    pub name: Option<String>,
    /// `http://` or `https://` URL the events are POSTed to. Its path, query and user info
    /// are treated as secret: the log shows only the scheme, host and port. User info
    /// (`https://user:password@host/...`) is sent as HTTP Basic authentication.
    pub url: WebhookUrl,
    /// The events sent to this webhook. Default: all of them.
    #[serde(default = "NotifyEvent::all")]
    #[schemars(length(min = 1))]
    pub events: Vec<NotifyEvent>,
    /// `json` (the event as a JSON object, see README) or `slack` (`{"text": "..."}`, for
    /// Slack, Mattermost or Rocket.Chat incoming webhooks).
    #[serde(default)]
    pub format: WebhookFormat,
    /// A file holding a shared secret (surrounding whitespace ignored), read at each send.
    /// When set, each POST carries `X-Swarm-Upgrade-Signature-256: sha256=<hex>`, the
    /// HMAC-SHA256 of the body with that secret (as GitHub signs its webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = "/run/secrets/swarm-upgrade-webhook")]
    pub secret_file: Option<String>,
    /// How long one attempt may take (connect, send, answer). Must not be zero. A failed
    /// attempt (no answer, a 5xx or 429) is retried 4 times with exponential backoff.
    #[serde(default = "default_webhook_timeout")]
    pub timeout: SpecDuration,
}

fn default_webhook_timeout() -> SpecDuration {
    SpecDuration::from_secs(10)
}

impl WebhookSpec {
    /// The name shown in the log and the metric: [`Self::name`] or `webhook-N` (`index` from 0).
    pub(crate) fn display_name(&self, index: usize) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("webhook-{}", index + 1),
        }
    }
}

/// What a webhook can be told.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum NotifyEvent {
    /// A node failed (the `failed` event: its reason, and what was done about it).
    Failed,
    /// The rollout stopped: after a failed node, or `strategy.paused: true`.
    Paused,
    /// A paused rollout goes on: the failure was cleared (`swarm-upgrade resume`, a spec
    /// change) or `strategy.paused` was set back to false.
    Resumed,
    /// Every selected node is at the target version.
    Completed,
    /// A node is at the target version and back to its earlier availability.
    NodeUpgraded,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 5] = [
        NotifyEvent::Failed,
        NotifyEvent::Paused,
        NotifyEvent::Resumed,
        NotifyEvent::Completed,
        NotifyEvent::NodeUpgraded,
    ];

    fn all() -> Vec<NotifyEvent> {
        Self::ALL.to_vec()
    }

    /// As written in the spec and sent in the `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Failed => "failed",
            NotifyEvent::Paused => "paused",
            NotifyEvent::Resumed => "resumed",
            NotifyEvent::Completed => "completed",
            NotifyEvent::NodeUpgraded => "nodeUpgraded",
        }
    }
}

/// The body's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

/// A webhook URL: shown (`Debug`, `Display`) only as scheme, host and port.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(example = "https://hooks.slack.com/services/T000/B000/XXXX")]
pub struct WebhookUrl(pub String);

/// Why a webhook URL was refused (the message never repeats the URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("it is not a URL")]
    NotAUrl,
    #[error("only http:// and https:// are supported")]
    Scheme,
    #[error("the host is missing")]
    NoHost,
}

/// A webhook URL taken apart: what is sent and what is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedWebhookUrl {
    /// The URL without its user info, as the request is sent.
    pub request_uri: hyper::Uri,
    /// `user:password` from the URL, for Basic authentication.
    pub user_info: Option<String>,
    /// `scheme://host[:port]/…`: what the log shows.
    pub redacted: String,
}

impl WebhookUrl {
    pub fn parse(&self) -> Result<ParsedWebhookUrl, WebhookUrlError> {
        let uri: hyper::Uri = self
            .0
            .trim()
            .parse()
            .map_err(|_| WebhookUrlError::NotAUrl)?;
        let scheme = uri.scheme_str().ok_or(WebhookUrlError::NotAUrl)?;
        if scheme != "http" && scheme != "https" {
            return Err(WebhookUrlError::Scheme);
        }
        let authority = uri.authority().ok_or(WebhookUrlError::NoHost)?;
        if authority.host().is_empty() {
            return Err(WebhookUrlError::NoHost);
        }
        let user_info = authority
            .as_str()
            .rsplit_once('@')
            .map(|(info, _)| info.to_string());
        let host_port = match authority.port() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_string(),
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request_uri = hyper::Uri::builder()
            .scheme(scheme)
            .authority(host_port.as_str())
            .path_and_query(path)
            .build()
            .map_err(|_| WebhookUrlError::NotAUrl)?;
        Ok(ParsedWebhookUrl {
            request_uri,
            user_info,
            redacted: format!("{scheme}://{host_port}/…"),
        })
    }

    /// `scheme://host[:port]/…`, or `(an invalid URL)`.
    pub(crate) fn redacted(&self) -> String {
        self.parse()
            .map_or_else(|_| "(an invalid URL)".into(), |p| p.redacted)
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// What is wrong with `spec.notify.webhooks[index]`: the field, the problem, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookIssue {
    pub index: usize,
    pub field: &'static str,
    pub message: String,
    pub hint: String,
}

/// The first problem in `spec.notify`, if any.
pub(crate) fn notify_issue(spec: &NotifySpec) -> Option<WebhookIssue> {
    let mut names = std::collections::BTreeMap::new();
    spec.webhooks.iter().enumerate().find_map(|(index, w)| {
        let issue = |field, message: String, hint: &str| WebhookIssue {
            index,
            field,
            message: format!("notify.webhooks[{index}].{field}: {message}"),
            hint: hint.to_string(),
        };
        if let Err(e) = w.url.parse() {
            return Some(issue(
                "url",
                e.to_string(),
                "write the receiver's URL, like url: https://hooks.slack.com/services/...",
            ));
        }
        if w.events.is_empty() {
            return Some(issue(
                "events",
                "the list is empty".into(),
                "list what to send, like events: [failed, paused, completed], or leave events out for all",
            ));
        }
        if w.timeout.get().is_zero() {
            return Some(issue(
                "timeout",
                "it is zero".into(),
                "write a positive duration, like timeout: 10s",
            ));
        }
        if w.name.as_ref().is_some_and(|n| !is_label_value(n)) {
            return Some(issue(
                "name",
                "it must be 1-64 letters, digits, '-', '_' or '.'".into(),
                "name the webhook like name: ops-chat",
            ));
        }
        let name = w.display_name(index);
        if let Some(first) = names.insert(name.clone(), index) {
            return Some(issue(
                "name",
                format!("{name:?} is also the name of notify.webhooks[{first}]"),
                "give each webhook its own name",
            ));
        }
        None
    })
}

fn is_label_value(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_parts_of_a_url_are_never_shown() {
        let url = WebhookUrl(
            "https://bot:hunter2@hooks.example.com:8443/services/T0/B0/XYZ?token=abc".into(),
        );
        let parsed = url.parse().unwrap();
        assert_eq!(parsed.redacted, "https://hooks.example.com:8443/…");
        assert_eq!(parsed.user_info.as_deref(), Some("bot:hunter2"));
        assert_eq!(
            parsed.request_uri.to_string(),
            "https://hooks.example.com:8443/services/T0/B0/XYZ?token=abc"
        );
        for shown in [format!("{url}"), format!("{url:?}")] {
            for secret in ["hunter2", "bot", "services", "XYZ", "token", "abc"] {
                assert!(!shown.contains(secret), "{shown} shows {secret}");
            }
        }
        assert_eq!(
            WebhookUrl("http://10.0.0.5/hook".into()).redacted(),
            "http://10.0.0.5/…"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for (bad, why) in [
            ("hooks.example.com/x", WebhookUrlError::NotAUrl),
            ("ftp://hooks.example.com/x", WebhookUrlError::Scheme),
            ("not a url at all", WebhookUrlError::NotAUrl),
        ] {
            assert_eq!(WebhookUrl(bad.into()).parse(), Err(why), "{bad}");
        }
        let spec = NotifySpec {
            webhooks: vec![WebhookSpec {
                name: None,
                url: WebhookUrl("ftp://h/secret-token".into()),
                events: NotifyEvent::all(),
                format: WebhookFormat::Json,
                secret_file: None,
                timeout: default_webhook_timeout(),
            }],
        };
        let issue = notify_issue(&spec).unwrap();
        assert_eq!((issue.index, issue.field), (0, "url"));
        assert!(!issue.message.contains("secret-token"), "{issue:?}");
    }

    #[test]
    fn names_default_to_the_position_and_must_differ() {
        let hook = |name: Option<&str>| WebhookSpec {
            name: name.map(String::from),
            url: WebhookUrl("http://h/x".into()),
            events: NotifyEvent::all(),
            format: WebhookFormat::Slack,
            secret_file: None,
            timeout: default_webhook_timeout(),
        };
        let ok = NotifySpec {
            webhooks: vec![hook(None), hook(Some("chat"))],
        };
        assert_eq!(notify_issue(&ok), None);
        assert_eq!(ok.webhooks[0].display_name(0), "webhook-1");
        let clash = NotifySpec {
            webhooks: vec![hook(None), hook(Some("webhook-1"))],
        };
        let issue = notify_issue(&clash).unwrap();
        assert_eq!((issue.index, issue.field), (1, "name"));
        let bad = NotifySpec {
            webhooks: vec![hook(Some("has space"))],
        };
        assert_eq!(notify_issue(&bad).unwrap().field, "name");
    }
}
