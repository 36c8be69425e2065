//! The maintenance window: days, start and end time of day, in a time zone.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Day of week as written in the spec (`mon` .. `sun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
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

impl Weekday {
    /// The same day as jiff's weekday.
    pub(crate) fn to_jiff(self) -> jiff::civil::Weekday {
        use jiff::civil::Weekday as J;
        match self {
            Self::Mon => J::Monday,
            Self::Tue => J::Tuesday,
            Self::Wed => J::Wednesday,
            Self::Thu => J::Thursday,
            Self::Fri => J::Friday,
            Self::Sat => J::Saturday,
            Self::Sun => J::Sunday,
        }
    }
}

/// `days: [mon, ...]`, `start: "22:00"`, `end: "04:00"`, `timezone: UTC`. An end at or before
/// the start spans midnight; the day named is the day the window opens (`fri` 22:00-04:00 is
/// open on Saturday at 02:00). An end equal to the start is a 24-hour window.
///
/// Times are wall-clock times in `timezone`. Across a DST change a time that does not exist
/// (in the gap) is moved forward by the gap's length (02:30 becomes 03:30), and a time that
/// happens twice means the first one, so a window may be shorter or longer on those days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Window {
    /// The days on which the window opens (at least one).
    #[schemars(length(min = 1))]
    pub days: Vec<Weekday>,
    /// Opening time of day, `HH:MM` (24-hour clock), quoted: `"22:00"`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// Closing time of day, `HH:MM`, quoted. At or before `start` means the next day.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,
    /// IANA time zone name (`UTC`, `Europe/Berlin`, `America/New_York`).
    #[schemars(length(min = 1), example = "Europe/Berlin")]
    pub timezone: String,
}

/// Why a window is not usable: the field at fault, what is wrong, what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowError {
    /// `days`, `start`, `end` or `timezone`.
    pub field: &'static str,
    pub message: String,
    pub hint: String,
}

/// Parses `HH:MM` (two digits each, 00:00..23:59).
pub(crate) fn parse_time_of_day(s: &str) -> Option<Time> {
    let b = s.as_bytes();
    if b.len() != 5
        || b[2] != b':'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
    {
        return None;
    }
    let h: i8 = s[..2].parse().ok()?;
    let m: i8 = s[3..].parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    Time::new(h, m, 0, 0).ok()
}

/// A window with its parts parsed.
struct Parsed {
    days: Vec<jiff::civil::Weekday>,
    start: Time,
    end: Time,
    tz: TimeZone,
}

impl Window {
    /// Checks days, times and time zone; the first problem found.
    pub fn validate(&self) -> Result<(), WindowError> {
        self.parsed().map(|_| ())
    }

    fn parsed(&self) -> Result<Parsed, WindowError> {
        if self.days.is_empty() {
            return Err(WindowError {
                field: "days",
                message: "the window has no days".into(),
                hint: "list the days it opens, like `days: [mon, tue, wed, thu, fri]`, or remove `window` to allow any time".into(),
            });
        }
        let time = |field: &'static str, s: &str| {
            parse_time_of_day(s).ok_or_else(|| WindowError {
                field,
                message: format!("{field} time {s:?} is not HH:MM"),
                hint: format!("write a quoted 24-hour time from \"00:00\" to \"23:59\", like {field}: \"22:00\""),
            })
        };
        let start = time("start", &self.start)?;
        let end = time("end", &self.end)?;
        let tz = TimeZone::get(&self.timezone).map_err(|_| WindowError {
            field: "timezone",
            message: format!("unknown time zone {:?}", self.timezone),
            hint: "write an IANA time zone name, like UTC, Europe/Berlin or America/New_York"
                .into(),
        })?;
        Ok(Parsed {
            days: self.days.iter().map(|d| d.to_jiff()).collect(),
            start,
            end,
            tz,
        })
    }

    /// Whether a new node may be started at `now`. An invalid window (never the case after
    /// `parse_spec`) is never open.
    pub fn is_open(&self, now: Timestamp) -> bool {
        let Ok(p) = self.parsed() else { return false };
        let today = now.to_zoned(p.tz.clone()).date();
        // An opening on the day before may still be running past midnight.
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .filter_map(|d| p.interval(d))
            .any(|(open, close)| open <= now && now < close)
    }

    /// When the window is open next: `now` if it is open, else the next opening. An invalid
    /// window (never the case after `parse_spec`) returns [`Timestamp::MAX`] (never opens).
    pub fn next_open(&self, now: Timestamp) -> Timestamp {
        if self.is_open(now) {
            return now;
        }
        let Ok(p) = self.parsed() else {
            return Timestamp::MAX;
        };
        let today = now.to_zoned(p.tz.clone()).date();
        let mut day = today;
        // Eight days ahead covers every weekday plus a possibly empty (DST) opening.
        for _ in 0..9 {
            if let Some((open, _)) = p.interval(day)
                && open > now
            {
                return open;
            }
            day = match day.tomorrow() {
                Ok(d) => d,
                Err(_) => break,
            };
        }
        Timestamp::MAX
    }

    /// When the window that is open at `now` closes, or `None` if it is closed.
    pub fn closes_at(&self, now: Timestamp) -> Option<Timestamp> {
        let p = self.parsed().ok()?;
        let today = now.to_zoned(p.tz.clone()).date();
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .filter_map(|d| p.interval(d))
            .filter(|(open, close)| *open <= now && now < *close)
            .map(|(_, close)| close)
            .max()
    }
}

impl Parsed {
    /// The window opening on `date`, if `date` is one of the days and the window is not empty.
    fn interval(&self, date: Date) -> Option<(Timestamp, Timestamp)> {
        if !self.days.contains(&date.weekday()) {
            return None;
        }
        let end_date = if self.end <= self.start {
            date.tomorrow().ok()?
        } else {
            date
        };
        let open = date
            .to_datetime(self.start)
            .to_zoned(self.tz.clone())
            .ok()?
            .timestamp();
        let close = end_date
            .to_datetime(self.end)
            .to_zoned(self.tz.clone())
            .ok()?
            .timestamp();
        (open < close).then_some((open, close))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_of_day() {
        assert_eq!(
            parse_time_of_day("22:00"),
            Some(Time::constant(22, 0, 0, 0))
        );
        assert_eq!(parse_time_of_day("00:00"), Some(Time::constant(0, 0, 0, 0)));
        assert_eq!(
            parse_time_of_day("23:59"),
            Some(Time::constant(23, 59, 0, 0))
        );
        for bad in [
            "24:00", "7:00", "07:60", "0700", "07:00:00", "", "ab:cd", "+1:00", "07:0 ",
        ] {
            assert_eq!(parse_time_of_day(bad), None, "{bad:?}");
        }
    }
}
