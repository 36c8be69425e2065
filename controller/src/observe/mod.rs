//! What the operator knows of the cluster: lean views parsed from the engine's JSON
//! ([`views`]), one store indexed by ID, node and service ([`store`]), and the reflector that
//! keeps it current from the event stream and targeted re-reads ([`reflector`]).

pub mod reflector;
pub mod store;
pub mod views;

pub use reflector::{Cadence, Reflector};
pub use store::{Observation, SlotKey, TaskChanges, TaskScope};
pub use views::{ObservedNetwork, ObservedNode, ObservedService, ObservedTask, Wanted};
