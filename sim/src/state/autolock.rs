//! Autolock (`docker swarm update --autolock=true`): the managers' raft data is encrypted with a
//! key the swarm does not keep on disk, so a manager whose engine restarts comes up **locked**:
//! its engine API answers, but its swarm component waits for `POST /swarm/unlock` with the key.
//! Until then it is not a working manager: no heartbeats, no raft vote, and the other managers
//! list it `down` with the description (engine version) it had before the restart.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::RngCore;

use crate::clock::Nanos;

use super::model::*;
use super::store::*;

/// The prefix of a human-readable swarm unlock key (swarmkit's `encryption` package).
const KEY_PREFIX: &str = "SWMKEY-1-";

/// The engine's answers, word for word (moby `daemon/cluster/errors.go`).
pub const ERR_SWARM_LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.";
pub const ERR_INVALID_UNLOCK_KEY: &str = "swarm could not be unlocked: invalid key provided";
pub const ERR_NOT_LOCKED: &str = "swarm is not locked";
/// `encryption.ParseHumanReadableKey`: not `SWMKEY-1-` followed by unpadded base64.
pub const ERR_INVALID_KEY_STRING: &str = "invalid key string";

impl Cluster {
    /// Turns autolock on (a new key, unless one is set) or off; `rotate` makes a new key.
    pub fn set_autolock(&mut self, on: bool, rotate: bool) {
        if !on {
            self.unlock_key = None;
        } else if self.unlock_key.is_none() || rotate {
            let mut secret = [0u8; 32];
            self.rng.fill_bytes(&mut secret);
            self.unlock_key = Some(format!("{KEY_PREFIX}{}", STANDARD_NO_PAD.encode(secret)));
        }
        self.swarm_version += 1;
        self.touch();
    }

    /// Whether a manager starting now comes up locked (workers hold no raft keys).
    pub(super) fn starts_locked(&self, i: usize) -> bool {
        self.unlock_key.is_some() && self.nodes[i].role == Role::Manager
    }

    /// The engine of node `i` runs `version` but its swarm component waits for the key.
    pub(super) fn come_up_locked(&mut self, i: usize, version: &str) {
        self.nodes[i].locked_engine = Some(version.to_string());
        self.touch();
    }

    /// `POST /swarm/unlock` on node `i`'s own engine.
    pub fn unlock(&mut self, i: usize, key: &str, now: Nanos) -> Result<(), ApiError> {
        let Some(version) = self.nodes[i].locked_engine.clone() else {
            return Err(if self.nodes[i].role == Role::Manager {
                ApiError::new(409, ERR_NOT_LOCKED)
            } else {
                ApiError::new(503, ERR_NOT_MANAGER)
            });
        };
        let well_formed = key
            .strip_prefix(KEY_PREFIX)
            .is_some_and(|b64| STANDARD_NO_PAD.decode(b64).is_ok());
        if !well_formed {
            return Err(ApiError::new(400, ERR_INVALID_KEY_STRING));
        }
        if self.unlock_key.as_deref() != Some(key) {
            return Err(ApiError::new(401, ERR_INVALID_UNLOCK_KEY));
        }
        self.nodes[i].locked_engine = None;
        self.engine_started(i, &version, now);
        Ok(())
    }
}
