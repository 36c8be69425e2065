//! swarm-upgrade: keeps every Docker Swarm node's engine at a declared version.

pub mod spec;
