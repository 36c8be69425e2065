//! The maintenance window: days, start and end time of day, in a time zone.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Day of week as written in the spec (`mon` .. `sun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// `days: [mon, ...]`, `start: "22:00"`, `end: "04:00"`, `timezone: UTC`. An end at or before
/// the start spans midnight; the day named is the day the window opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Window {
    pub days: Vec<Weekday>,
    pub start: String,
    pub end: String,
    pub timezone: String,
}

impl Window {
    /// Whether a new node may be started at `now`.
    pub fn is_open(&self, _now: jiff::Timestamp) -> bool {
        true
    }
}
