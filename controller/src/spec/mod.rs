//! The desired state: the `EngineUpgrade` spec file (CRD-like YAML).
//!
//! Types here are the single source of the JSON Schema (`swarm-upgrade schema`) and of the
//! examples in `crds-like-specs/`; parsing and validation live in [`load`].

pub mod duration;
pub mod load;
pub mod watch;
pub mod window;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use duration::SpecDuration;
pub use load::{SpecError, load_spec_file, parse_spec};
pub use window::{Weekday, Window};

pub const API_VERSION: &str = "swarm-upgrade.io/v1alpha1";
pub const KIND: &str = "EngineUpgrade";

/// The whole document, as written in the spec file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "EngineUpgrade")]
pub struct EngineUpgrade {
    /// Must be `swarm-upgrade.io/v1alpha1`.
    pub api_version: String,
    /// Must be `EngineUpgrade`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: EngineUpgradeSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// A name for this rollout, used in logs and metrics.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineUpgradeSpec {
    /// Target engine version. A node is at target when its EngineVersion equals this,
    /// ignoring build metadata after '+' ("26.1.5+dfsg1" matches "26.1.5").
    pub version: String,
    pub upgrade: UpgradeSpec,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub node_selector: NodeSelector,
    /// Optional maintenance window: no new node is started outside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeSpec {
    /// The node-side upgrade, as argv (never a shell string). Placeholders
    /// `{id} {hostname} {addr} {role} {version} {current_version}` are substituted per element.
    /// It must be idempotent: after an operator restart it is run again for a node caught mid-upgrade.
    pub command: Vec<String>,
    /// Optional argv run when the upgrade fails or the node does not come back in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Vec<String>>,
    /// How long the command may run before it is killed and counted as failed.
    #[serde(default = "default_upgrade_timeout")]
    pub timeout: SpecDuration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    /// How many workers may be out of service at once. Managers are always one at a time.
    #[serde(default = "default_max_unavailable_workers")]
    pub max_unavailable_workers: u32,
    /// How long a drained node may keep running tasks before the rollout stops.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: SpecDuration,
    /// How long a node may take to be back Ready at the target version after its upgrade.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: SpecDuration,
    /// Wait after a node is reactivated before the next one is started.
    #[serde(default = "default_settle")]
    pub settle: SpecDuration,
    /// Stop before the next step, leaving nothing half-done.
    #[serde(default)]
    pub paused: bool,
}

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

impl Default for Strategy {
    fn default() -> Self {
        Self {
            max_unavailable_workers: default_max_unavailable_workers(),
            drain_timeout: default_drain_timeout(),
            ready_timeout: default_ready_timeout(),
            settle: default_settle(),
            paused: false,
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
