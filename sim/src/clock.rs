//! Simulated time: a wall clock that runs `time_scale` times faster than real time.
//!
//! Every read goes through `tokio::time::Instant`, so `tokio::time::pause()` works: with a paused
//! runtime the simulated clock only moves when tokio's clock is advanced.

use std::time::Duration;

/// Nanoseconds since the Unix epoch, in simulated time.
pub type Nanos = i64;
/// One simulated second.
pub const SEC: Nanos = 1_000_000_000;
/// One simulated millisecond.
pub const MS: Nanos = 1_000_000;

/// Converts seconds (possibly fractional) to [`Nanos`].
pub fn secs(s: f64) -> Nanos {
    (s * SEC as f64) as Nanos
}

#[derive(Debug, Clone)]
pub struct Clock {
    base_real: tokio::time::Instant,
    base_sim: Nanos,
    scale: f64,
}

impl Clock {
    /// A clock starting at the current wall time, running `scale` times faster than real time.
    pub fn new(scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        Clock {
            base_real: tokio::time::Instant::now(),
            base_sim: jiff::Timestamp::now().as_nanosecond() as Nanos,
            scale,
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Current simulated time.
    pub fn now(&self) -> Nanos {
        let real = tokio::time::Instant::now().saturating_duration_since(self.base_real);
        self.base_sim + (real.as_nanos() as f64 * self.scale) as Nanos
    }

    /// The real duration that a simulated duration takes.
    pub fn to_real(&self, sim: Nanos) -> Duration {
        Duration::from_nanos((sim.max(0) as f64 / self.scale) as u64)
    }

    /// Sleeps for a simulated duration.
    pub async fn sleep(&self, sim: Nanos) {
        tokio::time::sleep(self.to_real(sim)).await
    }
}

/// RFC 3339 with nanoseconds, as the engine prints timestamps (`2026-11-25T07:52:21.170416662Z`).
pub fn rfc3339(n: Nanos) -> String {
    match jiff::Timestamp::from_nanosecond(n as i128) {
        Ok(t) => t.to_string(),
        Err(_) => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// Parses the engine's `since`/`until` forms: unix seconds (`1700000000`, `1700000000.123`)
/// or RFC 3339.
pub fn parse_time_arg(s: &str) -> Option<Nanos> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_nanosecond() as Nanos);
    }
    let (secs_part, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs_part.parse().ok()?;
    let mut nanos: i64 = 0;
    if !frac.is_empty() {
        let f: String = frac.chars().take(9).collect();
        let scale = 10i64.pow(9 - f.len() as u32);
        nanos = f.parse::<i64>().ok()? * scale;
    }
    Some(secs * SEC + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_time_args() {
        assert_eq!(parse_time_arg("10"), Some(10 * SEC));
        assert_eq!(parse_time_arg("10.5"), Some(10 * SEC + 500 * MS));
        assert_eq!(parse_time_arg("1970-01-01T00:00:01Z"), Some(SEC));
        assert_eq!(parse_time_arg("x"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn scaled_clock_follows_tokio_time() {
        let c = Clock::new(10.0);
        let t0 = c.now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let d = c.now() - t0;
        assert!((d - 10 * SEC).abs() < 10 * MS, "{d}");
        assert_eq!(c.to_real(10 * SEC), Duration::from_secs(1));
    }
}
