//! Whether this operator may act, decided from the lease record it just read and its own
//! monotonic clock; no I/O, so every case runs under paused time.
//!
//! As client-go's leaderelection: a standby remembers when it last saw the record change and
//! takes over once it has seen no change for the record's duration. The holder counts itself
//! active for two thirds of the duration after it *sent* its last successful renewal: a
//! standby saw that renewal no earlier than it was sent, so it waits longer than the holder
//! acts, whatever the two hosts' wall clocks say.

use std::time::Duration;

use tokio::time::Instant;

use super::record::LeaseRecord;

/// The lease's duration and the periods that follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    pub duration: Duration,
}

impl LeaseTimings {
    pub(crate) const DEFAULT_DURATION: Duration = Duration::from_secs(15);

    /// How often the holder renews: three tries within a lease.
    pub(crate) fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// How long the holder counts itself active after the renewal it sent last.
    pub(crate) fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// How often a standby reads the lease, and a failed read or write is tried again.
    pub fn retry(&self) -> Duration {
        (self.duration / 15).max(Duration::from_millis(100))
    }
}

impl Default for LeaseTimings {
    fn default() -> Self {
        Self {
            duration: Self::DEFAULT_DURATION,
        }
    }
}

/// What to do after reading the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The lease is free or expired: write this record to take it.
    Acquire(LeaseRecord),
    /// This operator holds it: write this record to keep it.
    Renew(LeaseRecord),
    /// Another operator holds a live lease; it expires in `expires_in` unless it changes.
    Standby {
        holder: String,
        expires_in: Duration,
    },
}

#[derive(Debug)]
pub struct Election {
    identity: String,
    timings: LeaseTimings,
    /// The record last read, and when it was first read as it is (on this clock).
    observed: Option<(Option<LeaseRecord>, Instant)>,
    /// The last record read that named a holder: a lease taken after a release continues its
    /// counts.
    last_held: Option<LeaseRecord>,
    /// When the write that last took or renewed the lease was sent.
    renewed_at: Option<Instant>,
}

impl Election {
    pub fn new(identity: impl Into<String>, timings: LeaseTimings) -> Self {
        Self {
            identity: identity.into(),
            timings,
            observed: None,
            last_held: None,
            renewed_at: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timings(&self) -> LeaseTimings {
        self.timings
    }

    /// Decides from the record read at `now` (`None`: nobody holds the lease).
    pub(crate) fn decide(&mut self, record: Option<LeaseRecord>, now: Instant) -> Decision {
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != record);
        if changed {
            self.observed = Some((record.clone(), now));
        }
        let observed_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let Some(record) = record.clone().filter(|r| !r.is_free()) else {
            // Free: never taken (no labels), or released (its counts go on).
            let (renewals, transitions) = record
                .as_ref()
                .or(self.last_held.as_ref())
                .map_or((0, 0), |r| (r.renewals, r.transitions));
            return Decision::Acquire(
                self.mine(renewals.wrapping_add(1), transitions.wrapping_add(1)),
            );
        };
        self.last_held = Some(record.clone());
        if record.holder == self.identity {
            // Safe even after this operator stopped acting: the write carries the version it
            // read, so it succeeds only if nobody took the lease meanwhile.
            return Decision::Renew(LeaseRecord {
                renewals: record.renewals.wrapping_add(1),
                duration: self.timings.duration,
                ..record
            });
        }
        // Another holds it: whatever this operator held is lost.
        self.renewed_at = None;
        let expires = observed_at + record.duration;
        if now >= expires {
            Decision::Acquire(self.mine(
                record.renewals.wrapping_add(1),
                record.transitions.wrapping_add(1),
            ))
        } else {
            Decision::Standby {
                holder: record.holder,
                expires_in: expires - now,
            }
        }
    }

    fn mine(&self, renewals: u64, transitions: u64) -> LeaseRecord {
        LeaseRecord {
            holder: self.identity.clone(),
            renewals,
            duration: self.timings.duration,
            transitions,
        }
    }

    /// The write of an `Acquire` or `Renew` decision sent at `sent_at` succeeded.
    pub fn written(&mut self, sent_at: Instant) {
        self.renewed_at = Some(sent_at);
    }

    /// Until when this operator may act, if it holds the lease.
    pub(crate) fn active_until(&self) -> Option<Instant> {
        self.renewed_at.map(|at| at + self.timings.renew_deadline())
    }

    pub(crate) fn is_active(&self, now: Instant) -> bool {
        self.active_until().is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn election(id: &str) -> Election {
        Election::new(id, LeaseTimings { duration: D })
    }

    fn held_by(holder: &str, renewals: u64) -> Option<LeaseRecord> {
        Some(LeaseRecord {
            holder: holder.into(),
            renewals,
            duration: D,
            transitions: 1,
        })
    }

    async fn advance(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_lease_is_taken_and_held_only_while_renewed() {
        let mut a = election("a");
        let Decision::Acquire(record) = a.decide(None, Instant::now()) else {
            panic!("a free lease is taken")
        };
        assert_eq!((record.holder.as_str(), record.renewals), ("a", 1));
        assert!(
            !a.is_active(Instant::now()),
            "not before the write succeeds"
        );
        a.written(Instant::now());
        assert!(a.is_active(Instant::now()));
        advance(D * 2 / 3 - Duration::from_millis(1)).await;
        assert!(a.is_active(Instant::now()));
        advance(Duration::from_millis(1)).await;
        assert!(
            !a.is_active(Instant::now()),
            "no renewal for 2/3 of the lease"
        );
        // Its own record, still unchanged: renewing it is safe and makes it active again.
        let Decision::Renew(renewed) = a.decide(Some(record), Instant::now()) else {
            panic!("its own lease is renewed")
        };
        assert_eq!((renewed.renewals, renewed.transitions), (2, 1));
        a.written(Instant::now());
        assert!(a.is_active(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_waits_the_duration_from_the_last_change_it_saw() {
        let mut b = election("b");
        assert_eq!(
            b.decide(held_by("a", 5), Instant::now()),
            Decision::Standby {
                holder: "a".into(),
                expires_in: D
            }
        );
        advance(Duration::from_secs(10)).await;
        // The holder renewed: the wait starts again.
        let Decision::Standby { expires_in, .. } = b.decide(held_by("a", 6), Instant::now()) else {
            panic!("a renewed lease stands")
        };
        assert_eq!(expires_in, D);
        advance(D - Duration::from_millis(1)).await;
        assert!(matches!(
            b.decide(held_by("a", 6), Instant::now()),
            Decision::Standby { .. }
        ));
        advance(Duration::from_millis(1)).await;
        let Decision::Acquire(taken) = b.decide(held_by("a", 6), Instant::now()) else {
            panic!("an unchanged lease expires")
        };
        assert_eq!(
            taken,
            LeaseRecord {
                holder: "b".into(),
                renewals: 7,
                duration: D,
                transitions: 2
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_reads_another_holder_stops_at_once() {
        let mut a = election("a");
        a.decide(None, Instant::now());
        a.written(Instant::now());
        advance(Duration::from_secs(1)).await;
        assert!(matches!(
            a.decide(held_by("b", 9), Instant::now()),
            Decision::Standby { .. }
        ));
        assert!(!a.is_active(Instant::now()));
        assert_eq!(a.active_until(), None);
    }

    /// The holder renews every third of the lease, then stops (killed); a standby reads every
    /// `retry`, each read seeing the record as it was some lag before, and its write succeeds
    /// only if what it read was current (the version index). Whatever the lag, the
    /// standby takes over only after the holder stopped counting itself active, and within
    /// the duration plus two reads and the lag of the holder's last renewal.
    #[tokio::test(start_paused = true)]
    async fn the_standby_never_acts_while_the_holder_may_and_takes_over_in_bound() {
        for lag_ms in [0u64, 40, 300, 900] {
            let lag = Duration::from_millis(lag_ms);
            let start = Instant::now();
            let mut a = election("a");
            let mut b = election("b");
            let timings = a.timings();
            // The record's history: (when it was written, what it says).
            let mut history: Vec<(Instant, Option<LeaseRecord>)> = vec![(start, None)];
            let seen_at = |history: &[(Instant, Option<LeaseRecord>)], t: Instant| {
                let t = t.checked_sub(lag).unwrap_or(start);
                history
                    .iter()
                    .rev()
                    .find(|(at, _)| *at <= t)
                    .and_then(|(_, r)| r.clone())
            };
            let killed_at = start + Duration::from_secs(31);
            let (mut next_a, mut b_took) = (start, None);
            while b_took.is_none() {
                let now = Instant::now();
                if now >= next_a && now < killed_at {
                    let record = history.last().unwrap().1.clone();
                    if let Decision::Acquire(r) | Decision::Renew(r) = a.decide(record, now) {
                        history.push((now, Some(r)));
                        a.written(now);
                    }
                    next_a = now + timings.renew_every();
                }
                let seen = seen_at(&history, now);
                let current = seen == history.last().unwrap().1;
                // A write made from a stale read carries a stale version index: refused.
                if let Decision::Acquire(_) = b.decide(seen, now)
                    && current
                {
                    b_took = Some(now);
                    assert!(
                        !a.is_active(now),
                        "lag {lag:?}: b takes over while a may still act"
                    );
                }
                advance(timings.retry()).await;
            }
            let last_renewal = history.last().unwrap().0;
            let took = b_took.unwrap() - last_renewal;
            assert!(
                took >= D && took <= D + 2 * timings.retry() + lag,
                "lag {lag:?}: taken over {took:?} after the last renewal"
            );
        }
    }
}
