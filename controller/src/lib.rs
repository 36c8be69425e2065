//! swarm-upgrade: keeps every Docker Swarm node's engine at a declared version.

pub mod cluster;
pub mod events;
pub mod marks;
pub mod planner;
pub mod spec;
pub mod health;
