//! The operator's one clock: wall time read once at start, advanced by tokio's monotonic clock.
//!
//! Every decision that depends on time (a step's age, the maintenance window, the health gates'
//! window, event times) reads a [`Clock`] handed down from the loop, so a test under
//! `tokio::time::pause()` sees wall time move exactly as tokio's time does. `clippy.toml` bans
//! reading the wall clock anywhere else.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Wall time anchored once, then advanced by `tokio::time::Instant` (never stepped backwards by
/// NTP, and paused with tokio's clock in tests).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_start: Timestamp,
    started: tokio::time::Instant,
}

impl Clock {
    /// The system's wall time, read now (the one place that reads it for decisions).
    #[allow(clippy::disallowed_methods)]
    pub fn system() -> Self {
        Self::starting_at(Timestamp::now())
    }

    /// A clock that reads `wall` now; for tests that need a known date (a maintenance window).
    pub(crate) fn starting_at(wall: Timestamp) -> Self {
        Self {
            wall_at_start: wall,
            started: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        let elapsed =
            SignedDuration::try_from(self.started.elapsed()).unwrap_or(SignedDuration::MAX);
        self.wall_at_start
            .checked_add(elapsed)
            .unwrap_or(Timestamp::MAX)
    }

    /// Time since `since` on this clock; zero when `since` is in the future (written by an
    /// operator on a host whose clock ran ahead).
    pub fn since(&self, since: Timestamp) -> Duration {
        Duration::try_from(self.now().duration_since(since)).unwrap_or(Duration::ZERO)
    }
}

/// The wall clock, for times that only label output (a log line, when a file was loaded) and
/// decide nothing. Decisions read a [`Clock`].
#[allow(clippy::disallowed_methods)]
pub(crate) fn label_time() -> Timestamp {
    Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_time_moves_with_tokios_paused_time() {
        let start: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let clock = Clock::starting_at(start);
        assert_eq!(clock.now(), start);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(
            clock.now(),
            "2026-12-01T10:01:30Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(clock.since(start), Duration::from_secs(90));
        let later: Timestamp = "2026-12-01T11:00:00Z".parse().unwrap();
        assert_eq!(clock.since(later), Duration::ZERO);
    }
}
