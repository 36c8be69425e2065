//! swarm-sim: a Docker-Engine-API-compatible simulated Docker Swarm.
//!
//! Nodes are `n1..nN` (managers first, then workers). Each manager (and, with
//! `worker_endpoints`, each worker) answers the Docker API on its own TCP port on 127.0.0.1 with
//! its own engine version; the port is closed while that node's engine is stopped. The control
//! address serves `/_sim/...` and the current leader's Docker API.
//!
//! Layers, each depending only on those below it: `cli` -> `handle` (a running swarm) ->
//! `api` (the Docker API; its service and network writes in `api_writes`) and `control` (`/_sim`) -> `http` (shared plumbing) and `sim` (the
//! running simulator: one lock, the ticker, node operations, listeners) -> `render` (engine
//! JSON) -> `state` (the model and its reconciliation) -> `clock`, `config`, `ipam`. Beside
//! them, `client`: the one HTTP client of this crate (hyper's HTTP/1 connection, one request a
//! connection, over TCP or a unix socket), which `cli` uses to reach the control address and
//! tests and benches use to call the Docker API as an admin or the `docker` CLI would.

pub mod api;
mod api_swarm;
mod api_writes;
pub mod captures;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod control;
mod handle;
pub mod http;
pub mod ipam;
pub mod render;
pub mod sim;
pub mod state;

pub use config::{Faults, SimConfig, Stack, Timings};
pub use handle::SimHandle;
pub use sim::{NodeOpResult, Sim};
pub use state::{ApiError, ServiceDef};
