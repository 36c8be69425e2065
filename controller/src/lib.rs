//! swarm-upgrade
