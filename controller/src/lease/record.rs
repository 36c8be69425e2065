//! The lease as labels on the swarm object: who holds it, a counter the holder moves on every
//! renewal (so a standby sees it change without reading anyone's clock), the duration the
//! holder promises to renew within, and how often the lease changed hands.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::spec::SpecDuration;

/// The holder's identity (`run --ha-identity`).
pub const HOLDER: &str = "swarm-upgrade.lease.holder";
/// Moved by one on every write of the lease: what a standby watches change.
pub(crate) const RENEWALS: &str = "swarm-upgrade.lease.renewals";
/// How long the lease stands without a renewal, e.g. `15s`.
pub(crate) const DURATION: &str = "swarm-upgrade.lease.duration";
/// How often the lease changed holders.
pub const TRANSITIONS: &str = "swarm-upgrade.lease.transitions";

const ALL: [&str; 4] = [HOLDER, RENEWALS, DURATION, TRANSITIONS];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    pub renewals: u64,
    pub duration: Duration,
    pub transitions: u64,
}

impl LeaseRecord {
    /// The lease in a swarm spec's `Labels`, if there is one; a released lease has an empty
    /// holder (its counts go on). A duration that does not parse is read as `fallback` (the
    /// reader's own): the record still counts as held.
    pub(crate) fn from_labels(
        labels: Option<&Map<String, Value>>,
        fallback: Duration,
    ) -> Option<Self> {
        let labels = labels?;
        labels.get(HOLDER)?;
        let text = |key: &str| labels.get(key).and_then(Value::as_str).unwrap_or_default();
        let holder = text(HOLDER);
        Some(Self {
            holder: holder.to_string(),
            renewals: text(RENEWALS).parse().unwrap_or(0),
            duration: SpecDuration::parse(text(DURATION)).map_or(fallback, |d| d.get()),
            transitions: text(TRANSITIONS).parse().unwrap_or(0),
        })
    }

    /// Writes the lease into `labels`, leaving every other label as it is.
    pub(crate) fn write_to(&self, labels: &mut Map<String, Value>) {
        labels.insert(HOLDER.into(), self.holder.clone().into());
        labels.insert(RENEWALS.into(), self.renewals.to_string().into());
        labels.insert(
            DURATION.into(),
            SpecDuration(self.duration).to_string().into(),
        );
        labels.insert(TRANSITIONS.into(), self.transitions.to_string().into());
    }

    /// Whether nobody holds it (released).
    pub(crate) fn is_free(&self) -> bool {
        self.holder.is_empty()
    }
}

/// Releases the lease in `labels` (a clean shutdown): the holder emptied, the counts kept, so
/// the next holder's transitions follow on (as client-go releases a Lease).
pub fn release(labels: &mut Map<String, Value>) {
    labels.insert(HOLDER.into(), "".into());
}

/// Removes every lease label, leaving the others.
pub fn clear(labels: &mut Map<String, Value>) {
    for key in ALL {
        labels.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_round_trips_through_labels_beside_an_admins() {
        let mut labels = json!({"team": "platform"}).as_object().unwrap().clone();
        let record = LeaseRecord {
            holder: "op-a".into(),
            renewals: 7,
            duration: Duration::from_secs(15),
            transitions: 2,
        };
        record.write_to(&mut labels);
        assert_eq!(labels[DURATION], "15s");
        assert_eq!(
            LeaseRecord::from_labels(Some(&labels), Duration::from_secs(1)),
            Some(record)
        );
        clear(&mut labels);
        assert_eq!(Value::Object(labels), json!({"team": "platform"}));
    }

    #[test]
    fn no_holder_is_no_lease_and_a_bad_duration_is_the_readers_own() {
        let fallback = Duration::from_secs(15);
        assert_eq!(LeaseRecord::from_labels(None, fallback), None);
        let none = json!({"team": "platform"}).as_object().unwrap().clone();
        assert_eq!(LeaseRecord::from_labels(Some(&none), fallback), None);
        let mut released = none.clone();
        LeaseRecord {
            holder: "op-a".into(),
            renewals: 4,
            duration: fallback,
            transitions: 3,
        }
        .write_to(&mut released);
        release(&mut released);
        let free = LeaseRecord::from_labels(Some(&released), fallback).unwrap();
        assert!(free.is_free());
        assert_eq!((free.renewals, free.transitions), (4, 3));
        let bad = json!({HOLDER: "op-b", DURATION: "soon", RENEWALS: "x"})
            .as_object()
            .unwrap()
            .clone();
        let record = LeaseRecord::from_labels(Some(&bad), fallback).unwrap();
        assert_eq!((record.duration, record.renewals), (fallback, 0));
    }
}
