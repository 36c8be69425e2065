//! swarm-upgrade: keeps every Docker Swarm node's engine at a declared version.

pub mod cli;
pub mod cluster;
pub mod demo;
pub mod docker;
pub mod events;
pub mod executor;
pub mod health;
pub mod http;
pub mod marks;
pub mod metrics;
pub mod observe;
pub mod operator;
pub mod planner;
pub mod probe;
pub mod reconciler;
pub mod spec;
pub mod status;
