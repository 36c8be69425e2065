//! Window::is_open / next_open: days, midnight wrap, time zones, DST.

use jiff::{SignedDuration, Timestamp, Zoned};
use swarm_upgrade::spec::{Weekday, Window};

use Weekday::*;

fn w(days: &[Weekday], start: &str, end: &str, tz: &str) -> Window {
    Window {
        days: days.to_vec(),
        start: start.into(),
        end: end.into(),
        timezone: tz.into(),
    }
}

/// "2025-01-03T22:00Z" (2025-01-03 is a Friday).
fn t(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A wall-clock time in a zone: "2024-03-10T01:30-05:00[America/New_York]".
fn z(s: &str) -> Timestamp {
    s.parse::<Zoned>()
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .timestamp()
}

#[test]
fn friday_night_window_wraps_into_saturday() {
    let win = w(&[Fri], "22:00", "04:00", "UTC");
    assert_eq!(
        t("2025-01-03T00:00Z")
            .to_zoned(jiff::tz::TimeZone::UTC)
            .weekday(),
        jiff::civil::Weekday::Friday
    );
    for open in [
        "2025-01-03T22:00Z",
        "2025-01-03T23:59Z",
        "2025-01-04T00:00Z",
        "2025-01-04T02:00Z",
        "2025-01-04T03:59:59Z",
    ] {
        assert!(win.is_open(t(open)), "{open} should be open");
    }
    for closed in [
        "2025-01-03T21:59:59Z",
        "2025-01-04T04:00Z",
        "2025-01-04T22:30Z", // Saturday night: not a named day
        "2025-01-03T02:00Z", // Friday early morning belongs to Thursday's window
        "2025-01-02T23:00Z",
    ] {
        assert!(!win.is_open(t(closed)), "{closed} should be closed");
    }
}

#[test]
fn same_day_window() {
    let win = w(&[Mon, Tue, Wed, Thu, Fri], "09:00", "17:00", "UTC");
    assert!(win.is_open(t("2025-01-06T09:00Z")));
    assert!(win.is_open(t("2025-01-06T16:59:59Z")));
    assert!(!win.is_open(t("2025-01-06T17:00Z")));
    assert!(!win.is_open(t("2025-01-06T08:59Z")));
    assert!(!win.is_open(t("2025-01-04T12:00Z")), "Saturday");
    assert_eq!(
        win.next_open(t("2025-01-03T17:00Z")),
        t("2025-01-06T09:00Z"),
        "Friday evening -> Monday"
    );
    assert_eq!(
        win.next_open(t("2025-01-06T08:00Z")),
        t("2025-01-06T09:00Z")
    );
    assert_eq!(
        win.next_open(t("2025-01-06T10:00Z")),
        t("2025-01-06T10:00Z"),
        "open now -> now"
    );
    assert_eq!(
        win.closes_at(t("2025-01-06T10:00Z")),
        Some(t("2025-01-06T17:00Z"))
    );
    assert_eq!(win.closes_at(t("2025-01-06T18:00Z")), None);
}

#[test]
fn end_equal_to_start_is_a_whole_day() {
    let win = w(&[Mon], "06:00", "06:00", "UTC");
    assert!(win.is_open(t("2025-01-06T06:00Z")));
    assert!(win.is_open(t("2025-01-07T05:59Z")));
    assert!(!win.is_open(t("2025-01-07T06:00Z")));
    assert!(!win.is_open(t("2025-01-06T05:59Z")));
    let sunday = w(&[Sun], "00:00", "00:00", "UTC");
    assert!(sunday.is_open(t("2025-01-05T00:00Z")));
    assert!(sunday.is_open(t("2025-01-05T23:59:59Z")));
    assert!(!sunday.is_open(t("2025-01-06T00:00Z")));
    assert!(!sunday.is_open(t("2025-01-04T23:59:59Z")));
}

#[test]
fn sunday_night_wraps_into_monday() {
    let win = w(&[Sun], "23:00", "01:00", "UTC");
    assert!(
        win.is_open(t("2025-01-06T00:30Z")),
        "Monday 00:30 belongs to Sunday's window"
    );
    assert!(
        !win.is_open(t("2025-01-05T00:30Z")),
        "Sunday 00:30 would be Saturday's"
    );
    assert_eq!(
        win.next_open(t("2025-01-06T01:00Z")),
        t("2025-01-12T23:00Z")
    );
}

#[test]
fn next_open_weekday_nights() {
    let win = w(&[Mon, Tue, Wed, Thu, Fri], "22:00", "04:00", "UTC");
    assert_eq!(
        win.next_open(t("2025-01-04T10:00Z")),
        t("2025-01-06T22:00Z"),
        "Saturday -> Monday night"
    );
    assert_eq!(
        win.next_open(t("2025-01-04T03:00Z")),
        t("2025-01-04T03:00Z"),
        "Saturday 03:00 is Friday's window"
    );
    assert_eq!(
        win.next_open(t("2025-01-07T04:00Z")),
        t("2025-01-07T22:00Z")
    );
    assert_eq!(
        win.closes_at(t("2025-01-04T03:00Z")),
        Some(t("2025-01-04T04:00Z"))
    );
}

#[test]
fn days_are_taken_in_the_window_time_zone() {
    // Monday 20:00-22:00 in Los Angeles is Tuesday 04:00-06:00 UTC.
    let win = w(&[Mon], "20:00", "22:00", "America/Los_Angeles");
    assert!(win.is_open(t("2025-01-07T05:00Z")));
    assert!(!win.is_open(t("2025-01-06T05:00Z")));
    assert_eq!(
        win.next_open(t("2025-01-06T12:00Z")),
        t("2025-01-07T04:00Z")
    );
    // Monday 09:00-10:00 in Tokyo is Monday 00:00-01:00 UTC.
    let tokyo = w(&[Mon], "09:00", "10:00", "Asia/Tokyo");
    assert!(tokyo.is_open(t("2025-01-06T00:30Z")));
    assert!(!tokyo.is_open(t("2025-01-06T09:30Z")));
}

#[test]
fn dst_spring_forward_shortens_and_shifts() {
    // 2024-03-10 (Sunday), New York: 02:00 EST jumps to 03:00 EDT.
    let win = w(&[Sun], "01:00", "03:00", "America/New_York");
    assert!(win.is_open(z("2024-03-10T01:30-05:00[America/New_York]")));
    assert!(win.is_open(t("2024-03-10T06:59Z")));
    assert!(
        !win.is_open(t("2024-03-10T07:00Z")),
        "03:00 EDT: only one hour that night"
    );
    // A start in the gap moves forward by the gap: 02:30 -> 03:30 EDT.
    let gap = w(&[Sun], "02:30", "04:00", "America/New_York");
    assert!(!gap.is_open(t("2024-03-10T07:15Z")));
    assert!(gap.is_open(t("2024-03-10T07:30Z")));
    assert_eq!(
        gap.next_open(t("2024-03-10T05:00Z")),
        t("2024-03-10T07:30Z")
    );
    assert!(!gap.is_open(t("2024-03-10T08:00Z")), "04:00 EDT");
    // The week after, 02:30 EDT is an ordinary time.
    assert_eq!(
        gap.next_open(t("2024-03-10T08:00Z")),
        z("2024-03-17T02:30-04:00[America/New_York]")
    );
}

#[test]
fn dst_fall_back_lengthens() {
    // 2024-11-03 (Sunday), New York: 02:00 EDT falls back to 01:00 EST.
    let win = w(&[Sun], "00:00", "03:00", "America/New_York");
    assert_eq!(
        win.next_open(t("2024-11-02T12:00Z")),
        t("2024-11-03T04:00Z")
    );
    assert!(
        win.is_open(t("2024-11-03T07:30Z")),
        "02:30 EST, four hours after opening"
    );
    assert!(!win.is_open(t("2024-11-03T08:00Z")), "03:00 EST");
    // A time that happens twice means the first one.
    let twice = w(&[Sun], "00:30", "01:30", "America/New_York");
    assert!(twice.is_open(t("2024-11-03T05:15Z")), "01:15 EDT");
    assert!(
        !twice.is_open(t("2024-11-03T06:15Z")),
        "01:15 EST, after the first 01:30"
    );
}

#[test]
fn dst_inside_a_midnight_wrap() {
    // 2024-03-31 (Sunday), Berlin: 02:00 CET jumps to 03:00 CEST. Sat 22:00 CET = 21:00Z,
    // Sun 04:00 CEST = 02:00Z: a five-hour window.
    let win = w(&[Sat], "22:00", "04:00", "Europe/Berlin");
    assert_eq!(
        win.next_open(t("2024-03-30T12:00Z")),
        t("2024-03-30T21:00Z")
    );
    assert!(win.is_open(t("2024-03-31T01:30Z")));
    assert!(!win.is_open(t("2024-03-31T02:00Z")));
    assert_eq!(
        win.closes_at(t("2024-03-31T01:30Z")),
        Some(t("2024-03-31T02:00Z"))
    );
}

#[test]
fn invalid_window_is_never_open() {
    for bad in [
        w(&[], "22:00", "04:00", "UTC"),
        w(&[Mon], "25:00", "04:00", "UTC"),
        w(&[Mon], "22:00", "4", "UTC"),
        w(&[Mon], "22:00", "04:00", "Nowhere/Special"),
    ] {
        assert!(bad.validate().is_err());
        assert!(!bad.is_open(t("2025-01-06T23:00Z")));
        assert_eq!(bad.next_open(t("2025-01-06T23:00Z")), Timestamp::MAX);
    }
}

/// Reference model for UTC windows, by weekday index (Mon = 0) and minute of day.
fn model(days: &[Weekday], start: u32, end: u32, weekday: usize, minute: u32) -> bool {
    let all = [Mon, Tue, Wed, Thu, Fri, Sat, Sun];
    let has = |i: usize| days.contains(&all[i % 7]);
    if start < end {
        has(weekday) && (start..end).contains(&minute)
    } else {
        (has(weekday) && minute >= start) || (has(weekday + 6) && minute < end)
    }
}

#[test]
fn exhaustive_against_a_model_in_utc() {
    let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
    let day_sets: [&[Weekday]; 5] = [
        &[Mon],
        &[Fri, Sat],
        &[Sun],
        &[Mon, Tue, Wed, Thu, Fri],
        &[Mon, Wed, Fri, Sun],
    ];
    let times = [0, 45, 9 * 60, 17 * 60 + 30, 22 * 60, 23 * 60 + 59];
    // 2025-01-06 is a Monday.
    let monday = t("2025-01-06T00:00Z");
    for days in day_sets {
        for &start in &times {
            for &end in &times {
                let win = w(days, &hhmm(start), &hhmm(end), "UTC");
                assert!(win.validate().is_ok());
                // Every 15 minutes over two weeks, plus a minute before each edge.
                let mut step = 0;
                while step < 14 * 24 * 60 {
                    for minute in [step, step + start % 15, step + end % 15] {
                        let now = monday + SignedDuration::from_mins(minute as i64);
                        let (wd, m) = ((minute / (24 * 60)) as usize % 7, minute % (24 * 60));
                        let want = model(days, start, end, wd, m);
                        assert_eq!(win.is_open(now), want, "{win:?} at {now}");
                        let next = win.next_open(now);
                        if want {
                            assert_eq!(next, now);
                        } else {
                            assert!(next > now, "{win:?} at {now}: next {next}");
                            assert!(win.is_open(next), "{win:?} at {now}: next {next} not open");
                            let before = next - SignedDuration::from_secs(1);
                            assert!(
                                !win.is_open(before),
                                "{win:?} at {now}: next {next} is not the opening"
                            );
                            assert!(
                                next - SignedDuration::from_hours(24 * 7) <= now,
                                "{win:?} at {now}: next {next} too far"
                            );
                        }
                    }
                    step += 15;
                }
            }
        }
    }
}
