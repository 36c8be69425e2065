//! The desired state: the `EngineUpgrade` spec file (CRD-like YAML).
//!
//! Types here are the single source of the JSON Schema (`swarm-upgrade schema`) and of the
//! examples in `crds-like-specs/`; parsing and validation live in [`load`].

pub mod base_url;
pub mod duration;
pub mod load;
pub mod notify;
pub mod target;
pub mod watch;
pub mod window;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use base_url::{BaseUrl, BaseUrlError};
pub use duration::SpecDuration;
pub use load::{SpecError, load_spec_file, parse_spec, parse_spec_bytes};
pub use notify::{NotifyEvent, NotifySpec, WebhookFormat, WebhookSpec, WebhookUrl};
pub use target::{ProbeKind, Target, TargetError};
pub use watch::{SpecState, SpecWatcher, WatchOptions};
pub use window::{Weekday, Window};

pub const API_VERSION: &str = "swarm-upgrade.io/v1alpha1";
pub const KIND: &str = "EngineUpgrade";

/// The whole document, as written in the spec file.
///
/// An `EngineUpgrade` declares the Docker Engine version every node of a swarm must run and how
/// the operator gets it there. Unknown fields are an error everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "EngineUpgrade")]
pub struct EngineUpgrade {
    /// Must be `swarm-upgrade.io/v1alpha1`.
    #[schemars(extend("const" = API_VERSION))]
    pub api_version: String,
    /// Must be `EngineUpgrade`.
    #[schemars(extend("const" = KIND))]
    pub kind: String,
    pub metadata: Metadata,
    pub spec: EngineUpgradeSpec,
}

/// Identifies the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// A name for this rollout, used in logs and metrics. Must not be empty.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// The desired state: target version, how to upgrade a node, and the rollout's rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineUpgradeSpec {
    /// Target engine version. A node is at target when its EngineVersion equals this,
    /// ignoring build metadata after '+' ("26.1.5+dfsg1" matches "26.1.5").
    /// Written `N.N.N`, optionally followed by `+build`; quote it in YAML: `version: "26.1.5"`.
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+\.[0-9]+(\+[0-9A-Za-z.\-]+)?$"))]
    pub version: String,
    pub upgrade: UpgradeSpec,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub node_selector: NodeSelector,
    /// Optional maintenance window: no new node is started outside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Health gates checked before each node and after each reactivation; a failed gate pauses
    /// the rollout.
    #[serde(default, skip_serializing_if = "HealthSpec::is_default")]
    pub health: HealthSpec,
    /// Webhooks told of failures, pauses, resumptions, completion and upgraded nodes. Not part
    /// of the rollout: changing it does not retry a failed node.
    #[serde(default, skip_serializing_if = "NotifySpec::is_default")]
    pub notify: NotifySpec,
}

/// How a node's engine is upgraded (and rolled back): commands run by the operator, as argv.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeSpec {
    /// The node-side upgrade, as argv (never a shell string). Placeholders
    /// `{id} {hostname} {addr} {role} {version} {current_version}` are substituted per element.
    /// It must be idempotent: after an operator restart it is run again for a node caught mid-upgrade.
    /// At least one element; the first (the program) must not be empty. Write `{{` and `}}` for
    /// literal braces. The same values are in the environment: `SWARM_UPGRADE_NODE_ID`,
    /// `SWARM_UPGRADE_NODE_HOSTNAME`, `SWARM_UPGRADE_NODE_ADDR`, `SWARM_UPGRADE_NODE_ROLE`,
    /// `SWARM_UPGRADE_TARGET_VERSION`, `SWARM_UPGRADE_CURRENT_VERSION`.
    #[schemars(schema_with = "argv_schema")]
    pub command: Vec<String>,
    /// Optional argv run when the upgrade fails or the node does not come back in time.
    /// Same rules and placeholders as `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "argv_schema")]
    pub rollback: Option<Vec<String>>,
    /// How long the command may run before it is killed and counted as failed. Must not be zero.
    #[serde(default = "default_upgrade_timeout")]
    pub timeout: SpecDuration,
    /// Where the swarm's unlock key is, for an autolocked swarm (`docker swarm update
    /// --autolock=true`): each upgraded manager comes up locked, and the operator unlocks it
    /// with `POST /swarm/unlock` on that manager's own engine. The key itself is never in the
    /// spec, the log, `/status`, the events or the metrics. Without it the rollout waits at each
    /// locked manager for someone to run `docker swarm unlock` there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<UnlockKeySource>,
}

/// Where the operator reads the swarm's unlock key (`docker swarm unlock-key -q`), each time it
/// unlocks a manager: a file (a swarm or Kubernetes secret mounted in the operator's container)
/// or an environment variable. Surrounding whitespace is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum UnlockKeySource {
    /// A file holding the key, such as `/run/secrets/swarm-unlock-key`.
    File(String),
    /// The name of an environment variable of the operator holding the key.
    Env(String),
}

impl fmt::Display for UnlockKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "spec.upgrade.unlockKey.file {path}"),
            Self::Env(name) => write!(f, "spec.upgrade.unlockKey.env {name}"),
        }
    }
}

/// How fast and how carefully the rollout goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    /// How many workers may be out of service at once (at least 1). Managers are always one
    /// at a time.
    #[serde(default = "default_max_unavailable_workers")]
    #[schemars(range(min = 1))]
    pub max_unavailable_workers: u32,
    /// How long a drained node may keep running tasks before the rollout stops. Must not be zero.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: SpecDuration,
    /// How long a node may take to be back Ready at the target version after its upgrade.
    /// Must not be zero.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: SpecDuration,
    /// Wait after a node is reactivated before the next one is started.
    #[serde(default = "default_settle")]
    pub settle: SpecDuration,
    /// Stop before the next step, leaving nothing half-done.
    #[serde(default)]
    pub paused: bool,
    /// Before the leader's engine is stopped, demote it to a worker (the swarm hands raft
    /// leadership to another manager at once) and promote it back once it is Ready at the
    /// target. Experimental, off by default, and not safe on 20.10 engines yet: in 2 of about
    /// 15 runs on the real lab the demoted manager stopped at once, its engine was upgraded
    /// before the swarm had given it a worker certificate, and promoted back it crashed in
    /// raft ("tocommit(120) is out of range [lastIndex(0)]"); the Docker API does not show
    /// when that certificate arrives. Measured, it is no faster above the physical floor than
    /// upgrading the leader in place. Applies with 3 managers or more, and only where the
    /// leader's own engine is one of the `--docker-host` endpoints.
    #[serde(default)]
    pub leader_handover: bool,
    /// Let the rollout take a node whose engine is newer than `version` down to it. Without
    /// it, a node newer than the target stops the rollout before anything is drained.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_downgrade: bool,
}

/// Which nodes the rollout covers. Both parts must match; the default (empty) is every node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelector {
    /// Every label must be present on the node (Spec.Labels) with this value.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// If not empty, only nodes with one of these hostnames.
    #[serde(default)]
    pub hostnames: Vec<String>,
}

/// The health gates: before each node is started and after each reactivation, every service on
/// the affected nodes must be converged (running = desired), no task may have been rejected or
/// failed since the step began, the operator's own probes must stay within
/// `maxConnectivityErrors`, and the optional Prometheus query must return no series. A failed
/// gate pauses the rollout; it resumes by itself once every gate passes again if
/// `resumeWhenHealthy`, otherwise when the spec is changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthSpec {
    /// Targets the operator probes itself, each on its own interval. Errors count into
    /// `swarm_upgrade_connectivity_errors_total{target}`.
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
    /// Probe errors allowed during one step (from the step's start) before the gate fails.
    #[serde(default)]
    pub max_connectivity_errors: u64,
    /// Optional: a Prometheus query that must return no series (like an alert check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusGate>,
    /// true: a rollout paused by a failed gate resumes by itself once every gate passes again.
    /// false: it stays paused until the spec is changed.
    #[serde(default)]
    pub resume_when_healthy: bool,
    /// Services that keep their node from being started: a node running a task of a service
    /// with every one of these labels (`Spec.Labels`) is not drained while that task runs
    /// there (a backup, a batch job, a singleton that must not move).
    #[serde(default, skip_serializing_if = "BlockingServices::is_empty")]
    pub blocking_services: BlockingServices,
}

/// `health.blockingServices`: which services hold the node they run on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockingServices {
    /// Every label must be on the service (`docker service create --label KEY=VALUE`) with this
    /// value. Empty: no service blocks.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl BlockingServices {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Whether a service with these labels blocks its nodes.
    pub fn matches(&self, service_labels: &BTreeMap<String, String>) -> bool {
        !self.is_empty()
            && self
                .labels
                .iter()
                .all(|(k, v)| service_labels.get(k) == Some(v))
    }
}

impl HealthSpec {
    /// True when nothing is set (the section is then left out of the serialized spec, so
    /// [`spec_hash`] of a spec without `health` is what it was before the section existed).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether any gate is configured: `blockingServices` alone turns none on.
    pub(crate) fn has_gates(&self) -> bool {
        let gates = HealthSpec {
            blocking_services: BlockingServices::default(),
            ..self.clone()
        };
        !gates.is_default()
    }
}

/// One target the operator probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeSpec {
    /// `HOST:PORT` (TCP connect) or `http://HOST[:PORT]/path` (HTTP GET). `tasks.<service>:PORT`
    /// resolves to every task of the service, and every address is probed.
    #[schemars(length(min = 1), example = "tasks.web:80")]
    pub target: String,
    /// Time between two rounds. Must not be zero.
    #[serde(default = "default_probe_interval")]
    pub interval: SpecDuration,
    /// How long one attempt (connect, and for HTTP the response head) may take. Must not be zero.
    #[serde(default = "default_probe_timeout")]
    pub timeout: SpecDuration,
    /// HTTP targets only: the status expected (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<u16>,
}

/// A Prometheus instant query that must return no series for the gate to pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusGate {
    /// Base URL of the Prometheus server, `http://HOST[:PORT][/prefix]` (https is not supported).
    #[schemars(example = "http://prometheus:9090")]
    pub url: String,
    /// PromQL instant query; the gate fails while it returns any series, or cannot be run.
    #[schemars(
        length(min = 1),
        example = r#"ALERTS{alertstate="firing",severity="critical"}"#
    )]
    pub query: String,
    /// How long the query may take before it counts as failed. Must not be zero.
    #[serde(default = "default_prometheus_timeout")]
    pub timeout: SpecDuration,
}

impl Default for Strategy {
    fn default() -> Self {
        Self {
            max_unavailable_workers: default_max_unavailable_workers(),
            drain_timeout: default_drain_timeout(),
            ready_timeout: default_ready_timeout(),
            settle: default_settle(),
            paused: false,
            leader_handover: false,
            allow_downgrade: false,
        }
    }
}

fn default_upgrade_timeout() -> SpecDuration {
    SpecDuration::from_secs(600)
}
fn default_max_unavailable_workers() -> u32 {
    1
}
fn default_drain_timeout() -> SpecDuration {
    SpecDuration::from_secs(300)
}
fn default_ready_timeout() -> SpecDuration {
    SpecDuration::from_secs(300)
}
fn default_settle() -> SpecDuration {
    SpecDuration::from_secs(10)
}
fn default_probe_interval() -> SpecDuration {
    SpecDuration::from_secs(1)
}
fn default_probe_timeout() -> SpecDuration {
    SpecDuration::from_secs(1)
}
fn default_prometheus_timeout() -> SpecDuration {
    SpecDuration::from_secs(10)
}

impl EngineUpgradeSpec {
    /// Whether an engine version string is the target, ignoring build metadata after '+'.
    pub fn is_target(&self, engine_version: &str) -> bool {
        version_core(engine_version) == version_core(&self.version)
    }
}

/// "26.1.5+dfsg1" -> "26.1.5".
pub fn version_core(version: &str) -> &str {
    version.split('+').next().unwrap_or(version).trim()
}

/// The placeholders allowed in `upgrade.command` and `upgrade.rollback` elements.
pub(crate) const PLACEHOLDERS: [&str; 6] = [
    "id",
    "hostname",
    "addr",
    "role",
    "version",
    "current_version",
];

/// One piece of an argv element template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgPiece<'a> {
    /// Literal text (with `{{`/`}}` already turned into single braces by [`expand_arg`]).
    Text(&'a str),
    /// A `{name}` placeholder (name not yet checked against [`PLACEHOLDERS`]).
    Placeholder(&'a str),
}

/// Why an argv element is not a valid template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgTemplateError {
    /// `{name}` with a name not in [`PLACEHOLDERS`].
    UnknownPlaceholder(String),
    /// A `{` with no closing `}`.
    Unclosed,
    /// A lone `}` (write `}}` for a literal brace).
    StrayClose,
}

impl fmt::Display for ArgTemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownPlaceholder(name) => write!(f, "unknown placeholder {{{name}}}"),
            Self::Unclosed => f.write_str("a '{' is not closed by '}'"),
            Self::StrayClose => f.write_str("a '}' closes no placeholder"),
        }
    }
}

/// Splits an argv element into literal text and placeholders. `{{` and `}}` are literal braces.
pub(crate) fn parse_arg_template(arg: &str) -> Result<Vec<ArgPiece<'_>>, ArgTemplateError> {
    let mut pieces = Vec::new();
    let bytes = arg.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                if text_start < i {
                    pieces.push(ArgPiece::Text(&arg[text_start..i]));
                }
                pieces.push(ArgPiece::Text("{"));
                i += 2;
                text_start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                if text_start < i {
                    pieces.push(ArgPiece::Text(&arg[text_start..i]));
                }
                pieces.push(ArgPiece::Text("}"));
                i += 2;
                text_start = i;
            }
            b'{' => {
                let close = arg[i + 1..].find('}').ok_or(ArgTemplateError::Unclosed)? + i + 1;
                let name = &arg[i + 1..close];
                if !PLACEHOLDERS.contains(&name) {
                    return Err(ArgTemplateError::UnknownPlaceholder(name.to_string()));
                }
                if text_start < i {
                    pieces.push(ArgPiece::Text(&arg[text_start..i]));
                }
                pieces.push(ArgPiece::Placeholder(name));
                i = close + 1;
                text_start = i;
            }
            b'}' => return Err(ArgTemplateError::StrayClose),
            _ => i += 1,
        }
    }
    if text_start < bytes.len() {
        pieces.push(ArgPiece::Text(&arg[text_start..]));
    }
    Ok(pieces)
}

/// The per-node values substituted into `upgrade.command` / `upgrade.rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeVars {
    /// Swarm node ID.
    pub id: String,
    /// `Description.Hostname`.
    pub hostname: String,
    /// `Status.Addr`.
    pub addr: String,
    /// `manager` or `worker`.
    pub role: String,
    /// The target version (`spec.version`).
    pub version: String,
    /// The node's engine version before the upgrade.
    pub current_version: String,
}

impl NodeVars {
    /// The value of a placeholder name (one of [`PLACEHOLDERS`]).
    pub fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "id" => &self.id,
            "hostname" => &self.hostname,
            "addr" => &self.addr,
            "role" => &self.role,
            "version" => &self.version,
            "current_version" => &self.current_version,
            _ => return None,
        })
    }

    /// Substitutes placeholders in every element. Each element stays one argv element whatever
    /// the values contain (no shell, no splitting). Elements are validated by `parse_spec`; an
    /// element that is not a valid template anyway is passed through unchanged.
    pub(crate) fn expand_argv(&self, argv: &[String]) -> Vec<String> {
        argv.iter().map(|a| self.expand_arg(a)).collect()
    }

    /// Substitutes placeholders in one argv element (see [`expand_argv`](Self::expand_argv)).
    pub(crate) fn expand_arg(&self, arg: &str) -> String {
        match parse_arg_template(arg) {
            Ok(pieces) => pieces
                .iter()
                .map(|p| match p {
                    ArgPiece::Text(t) => *t,
                    ArgPiece::Placeholder(n) => self.get(n).unwrap_or_default(),
                })
                .collect(),
            Err(_) => arg.to_string(),
        }
    }

    /// The same values as environment variables for the command.
    pub fn env(&self) -> [(&'static str, &str); 6] {
        [
            ("SWARM_UPGRADE_NODE_ID", &self.id),
            ("SWARM_UPGRADE_NODE_HOSTNAME", &self.hostname),
            ("SWARM_UPGRADE_NODE_ADDR", &self.addr),
            ("SWARM_UPGRADE_NODE_ROLE", &self.role),
            ("SWARM_UPGRADE_TARGET_VERSION", &self.version),
            ("SWARM_UPGRADE_CURRENT_VERSION", &self.current_version),
        ]
    }
}

/// JSON-Schema regex for one argv element: text, `{{`, `}}` or a known placeholder.
pub(crate) const ARG_PATTERN: &str =
    r"^([^{}]|\{\{|\}\}|\{(id|hostname|addr|role|version|current_version)\})*$";

fn argv_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "description": "argv, never a shell string: the program, then its arguments. Each element may hold placeholders {id} {hostname} {addr} {role} {version} {current_version}, substituted per element (the value never splits an element); {{ and }} are literal braces.",
        "minItems": 1,
        "prefixItems": [{ "type": "string", "minLength": 1, "pattern": ARG_PATTERN, "description": "the program (must not be empty)" }],
        "items": { "type": "string", "pattern": ARG_PATTERN },
        "examples": [["/opt/upgrade-engine", "{hostname}", "{version}"]]
    })
}

/// The JSON Schema of the spec file, generated from these types: pretty JSON with a trailing
/// newline. `swarm-upgrade schema` prints it; `crds-like-specs/engineupgrade.schema.json` is a
/// committed copy (a test checks they are equal).
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(EngineUpgrade);
    let mut out = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    out.push('\n');
    out
}

/// A short, stable fingerprint of the spec's content: a node that failed under one spec is
/// retried once the spec is different.
pub fn spec_hash(spec: &EngineUpgradeSpec) -> String {
    // Where notifications go is not how the rollout runs: a webhook edit retries nothing.
    let rollout = EngineUpgradeSpec {
        notify: NotifySpec::default(),
        ..spec.clone()
    };
    let json = serde_json::to_string(&rollout).expect("a spec always serializes");
    format!("{:016x}", stable_hash(json.as_bytes()))
}

/// FNV-1a 64 of `bytes`: the same in every build and version of the operator (std's
/// `DefaultHasher` is not), which the `swarm-upgrade.spec-hash` node labels written by earlier
/// versions rely on.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::stable_hash;

    /// The published FNV-1a 64 test vectors: a different function would make every stored
    /// `swarm-upgrade.spec-hash` label mismatch and retry failed nodes.
    #[test]
    fn the_stable_hash_is_fnv1a_64() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
