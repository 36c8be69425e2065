//! swarm-sim
