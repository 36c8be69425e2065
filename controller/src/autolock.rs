//! Autolocked swarms (`docker swarm update --autolock=true`): which managers' own engines say
//! they are locked, whether the swarm is autolocked, and the unlock key read from where
//! `spec.upgrade.unlockKey` says.
//!
//! The key is a secret: [`UnlockKey`] prints as `[redacted]`, and no error here carries it.

use std::fmt;

use bollard::models::{LocalNodeState, SystemInfo};

use crate::cluster::Snapshot;
use crate::spec::UnlockKeySource;

/// The swarm's unlock key, as read for one unlock. Never printed, logged or serialized.
pub struct UnlockKey(String);

impl UnlockKey {
    /// The key, for the one request that needs it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey([redacted])")
    }
}

/// Why the key could not be read; says where from, never what was read.
#[derive(Debug, thiserror::Error)]
pub enum UnlockKeyError {
    #[error("cannot read the unlock key from {source_name}: {io}")]
    File {
        source_name: String,
        #[source]
        io: std::io::Error,
    },
    #[error("cannot read the unlock key from {0}: the operator has no such environment variable")]
    EnvMissing(String),
    #[error("the unlock key in {0} is empty")]
    Empty(String),
}

/// Reads the key from its source now (so a rotated secret is picked up).
pub(crate) fn read_unlock_key(source: &UnlockKeySource) -> Result<UnlockKey, UnlockKeyError> {
    let text = match source {
        UnlockKeySource::File(path) => {
            std::fs::read_to_string(path).map_err(|io| UnlockKeyError::File {
                source_name: source.to_string(),
                io,
            })?
        }
        UnlockKeySource::Env(name) => {
            std::env::var(name).map_err(|_| UnlockKeyError::EnvMissing(source.to_string()))?
        }
    };
    let key = text.trim();
    if key.is_empty() {
        return Err(UnlockKeyError::Empty(source.to_string()));
    }
    Ok(UnlockKey(key.to_string()))
}

fn is_locked(info: &SystemInfo) -> bool {
    info.swarm
        .as_ref()
        .is_some_and(|s| s.local_node_state == Some(LocalNodeState::LOCKED))
}

/// Marks the managers whose own engine says it is locked, and whether the swarm is autolocked
/// (from any working manager's `/info`). A locked manager's `/info` has no node ID unless its
/// endpoint remembered one: it is then found by its address, and given its node ID so that its
/// own engine version replaces the swarm's stale record of it.
pub(crate) fn observe_locks(snapshot: &mut Snapshot, own: &mut [SystemInfo]) {
    snapshot.autolock = own.iter().any(|info| {
        info.swarm
            .as_ref()
            .and_then(|s| s.cluster.as_ref())
            .and_then(|c| c.spec.as_ref())
            .and_then(|s| s.encryption_config.as_ref())
            .and_then(|e| e.auto_lock_managers)
            .unwrap_or(false)
    });
    for info in own.iter_mut().filter(|i| is_locked(i)) {
        let Some(swarm) = info.swarm.as_mut() else {
            continue;
        };
        let id = swarm.node_id.clone().filter(|id| !id.is_empty());
        let addr = swarm.node_addr.clone().filter(|a| !a.is_empty());
        let node = snapshot.nodes.iter_mut().find(|n| {
            n.is_manager()
                && match (&id, &addr) {
                    (Some(id), _) => &n.id == id,
                    (None, Some(addr)) => &n.addr == addr,
                    (None, None) => false,
                }
        });
        if let Some(node) = node {
            node.locked = true;
            swarm.node_id = Some(node.id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeView;

    fn views() -> Vec<NodeView> {
        let nodes: Vec<bollard::models::Node> = swarm_sim::captures::json("20.10.24/nodes.json");
        nodes
            .iter()
            .map(|n| NodeView::from_engine(n).unwrap())
            .collect()
    }

    /// A locked manager's `/info` as moby builds it: no node ID, its address, state locked.
    fn locked_info(addr: &str) -> SystemInfo {
        SystemInfo {
            name: Some("n2".into()),
            server_version: Some("26.1.5+dfsg1".into()),
            swarm: Some(bollard::models::SwarmInfo {
                node_id: Some(String::new()),
                node_addr: Some(addr.into()),
                local_node_state: Some(LocalNodeState::LOCKED),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_locked_manager_is_found_by_its_address_and_the_swarm_is_autolocked() {
        let mut active: SystemInfo = swarm_sim::captures::json("20.10.24/info.json");
        let spec = active.swarm.as_mut().unwrap().cluster.as_mut().unwrap();
        spec.spec.as_mut().unwrap().encryption_config =
            Some(bollard::models::SwarmSpecEncryptionConfig {
                auto_lock_managers: Some(true),
            });
        let mut snapshot = Snapshot {
            nodes: views(),
            ..Default::default()
        };
        let n2 = snapshot.nodes.iter().find(|n| n.hostname == "n2").unwrap();
        let (id, addr) = (n2.id.clone(), n2.addr.clone());
        let mut own = vec![active, locked_info(&addr)];
        observe_locks(&mut snapshot, &mut own);
        assert!(snapshot.autolock);
        let locked: Vec<&str> = snapshot
            .nodes
            .iter()
            .filter(|n| n.locked)
            .map(|n| n.hostname.as_str())
            .collect();
        assert_eq!(locked, ["n2"]);
        assert_eq!(
            own[1].swarm.as_ref().unwrap().node_id.as_deref(),
            Some(id.as_str())
        );
    }

    #[test]
    fn without_autolock_or_an_address_nothing_is_marked() {
        let mut snapshot = Snapshot {
            nodes: views(),
            ..Default::default()
        };
        let mut own = vec![
            swarm_sim::captures::json::<SystemInfo>("20.10.24/info.json"),
            locked_info(""),
        ];
        observe_locks(&mut snapshot, &mut own);
        assert!(!snapshot.autolock);
        assert!(snapshot.nodes.iter().all(|n| !n.locked));
    }

    #[test]
    fn the_key_is_read_trimmed_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "SWMKEY-1-secret\n").unwrap();
        let source = UnlockKeySource::File(path.display().to_string());
        let key = read_unlock_key(&source).unwrap();
        assert_eq!(key.expose(), "SWMKEY-1-secret");
        assert!(!format!("{key:?}").contains("secret"));
        std::fs::write(&path, "  \n").unwrap();
        let err = read_unlock_key(&source).unwrap_err().to_string();
        assert!(
            err.contains("is empty") && err.contains("unlockKey.file"),
            "{err}"
        );
        let missing = UnlockKeySource::File(dir.path().join("none").display().to_string());
        let err = read_unlock_key(&missing).unwrap_err().to_string();
        assert!(
            err.contains("cannot read the unlock key from spec.upgrade.unlockKey.file"),
            "{err}"
        );
        let env = UnlockKeySource::Env("SWARM_UPGRADE_TEST_NO_SUCH_VARIABLE".into());
        let err = read_unlock_key(&env).unwrap_err().to_string();
        assert!(err.contains("no such environment variable"), "{err}");
    }
}
