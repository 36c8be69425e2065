//! swarm-upgrade: keeps every Docker Swarm node's engine at a declared version.
//!
//! One reconcile pass (`reconciler`): observe the cluster (`observe`: one store kept current from
//! the event stream and targeted re-reads through `docker`; `cluster` is the planner's view of
//! it; `health` reads it for gates, predictions, capacity and rejections), plan
//! with the pure `planner` (which alone decides every change to a node's labels, `marks`, and
//! availability, from the observation, the spec and the outcomes of the commands that ended),
//! carry the plan out (`executor`: node writes, `events`, node-side commands, whose outcomes go
//! back to the planner), wait. `vocab` holds the words all of them share and imports nothing of
//! the crate; `clock` is the one clock, handed down from the loop.
//!
//! `pub` are the modules the binary, the integration tests, the benches and the real-swarm suite
//! use; the rest is `pub(crate)`, so that the compiler reports what nothing calls.

pub mod autolock;
pub mod cli;
pub mod clock;
pub mod cluster;
#[cfg(feature = "demo")]
pub(crate) mod demo;
pub mod docker;
mod engine_json;
pub mod events;
pub(crate) mod executor;
mod gossip;
pub mod health;
pub(crate) mod http;
pub mod http_client;
pub mod lease;
pub mod marks;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod operator;
pub mod page;
pub(crate) mod planner;
pub mod probe;
pub mod reconciler;
pub mod rollout_check;
pub mod spec;
pub mod ssh_check;
pub(crate) mod status;
pub(crate) mod vocab;
