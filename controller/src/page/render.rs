//! Draws a [`Timeline`] as a self-contained SVG (no script, no external font). Every state has
//! a text label or a title besides its colour, so the picture reads without colour too.
//!
//! Each node's row is a `<g class="row" data-node=HOSTNAME>`, each bar a `<rect class="bar
//! STEP" data-step data-start data-end>` (RFC 3339): tests and tools can read the picture back.

use std::fmt::Write;

use super::timeline::{Bar, Marker, Row, Timeline, human};
use crate::events::EventStep;

const WIDTH: f64 = 960.0;
const LABEL_WIDTH: f64 = 150.0;
const RIGHT_MARGIN: f64 = 20.0;
const TOP: f64 = 44.0;
const ROW_HEIGHT: f64 = 30.0;
const BAR_HEIGHT: f64 = 18.0;
const LEGEND_HEIGHT: f64 = 34.0;

const STYLE: &str = "\
text{font:12px sans-serif;fill:#222}\
.axis line{stroke:#bbb;stroke-width:1}\
.axis text{font-size:11px;fill:#555}\
.row-label{font-weight:bold}\
.role{font-size:11px;fill:#555}\
.bar{stroke:#222;stroke-width:0.5}\
.drain{fill:#f2c14e}.upgrade{fill:#5b8def}.ready{fill:#8fd18b}.reactivate{fill:#3aa17e}\
.rollback{fill:#c77dff}.bar.open{stroke-dasharray:3 2;fill-opacity:0.6}\
.bar.failed{stroke:#b00020;stroke-width:2}\
.held{stroke:#888;stroke-width:2;stroke-dasharray:2 2}\
.bar-label{font-size:10px;fill:#111;pointer-events:none}\
.failure{fill:#b00020;font-weight:bold}.unlock{fill:#6a1b9a}\
.rollout-mark line{stroke-width:1.5;stroke-dasharray:5 3}\
.paused line{stroke:#b06000}.completed line{stroke:#2e7d32}\
.paused text{fill:#b06000}.completed text{fill:#2e7d32}";

/// The picture's width and height in pixels.
pub fn size(timeline: &Timeline) -> (f64, f64) {
    let height = TOP + ROW_HEIGHT * timeline.rows.len().max(1) as f64 + LEGEND_HEIGHT;
    (WIDTH, height)
}

/// The SVG text of the timeline.
pub fn svg(timeline: &Timeline) -> String {
    if timeline.rows.is_empty() && timeline.rollout_marks.is_empty() {
        return message_svg("No step yet: no node has been drained.");
    }
    let scale = Scale::of(timeline);
    let (_, height) = size(timeline);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="Rollout timeline: one row per node, one bar per step"><style>{STYLE}</style>"#
    );
    let _ = write!(
        out,
        r##"<rect width="{WIDTH}" height="{height}" fill="#fff"/><text x="8" y="16">started {} UTC, {} shown</text>"##,
        timeline.start.strftime("%Y-%m-%d %H:%M:%S"),
        human(timeline.end.duration_since(timeline.start)),
    );
    axis(&mut out, &scale, height - LEGEND_HEIGHT);
    for (i, row) in timeline.rows.iter().enumerate() {
        row_svg(&mut out, &scale, row, TOP + ROW_HEIGHT * i as f64);
    }
    for mark in &timeline.rollout_marks {
        rollout_mark(&mut out, &scale, mark, height - LEGEND_HEIGHT);
    }
    legend(&mut out, height - LEGEND_HEIGHT + 22.0);
    out.push_str("</svg>\n");
    out
}

/// A picture holding one line of text, where there is no timeline to draw.
pub(crate) fn message_svg(text: &str) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{WIDTH}" height="40" viewBox="0 0 {WIDTH} 40"><rect width="{WIDTH}" height="40" fill="#fff"/><text x="8" y="24" style="font:13px sans-serif">{}</text></svg>
"##,
        escape(text)
    )
}

/// Seconds to x.
struct Scale {
    timeline_start: jiff::Timestamp,
    span: f64,
}

impl Scale {
    fn of(timeline: &Timeline) -> Self {
        Self {
            timeline_start: timeline.start,
            span: timeline.span_seconds().max(1.0),
        }
    }

    fn x_at(&self, secs: f64) -> f64 {
        LABEL_WIDTH + secs / self.span * (WIDTH - LABEL_WIDTH - RIGHT_MARGIN)
    }

    fn x(&self, t: jiff::Timestamp) -> f64 {
        self.x_at(t.duration_since(self.timeline_start).as_secs_f64())
    }
}

/// A tick every "round" interval, at most about ten of them.
fn tick_interval(span: f64) -> f64 {
    const NICE: [f64; 16] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        14400.0, 43200.0,
    ];
    NICE.into_iter()
        .find(|step| span / step <= 10.0)
        .unwrap_or(86400.0)
}

fn axis(out: &mut String, scale: &Scale, bottom: f64) {
    let step = tick_interval(scale.span);
    out.push_str(r#"<g class="axis">"#);
    let mut t = 0.0;
    while t <= scale.span + f64::EPSILON {
        let x = scale.x_at(t);
        let label = if step >= 60.0 {
            format!("+{}m", t / 60.0)
        } else {
            format!("+{t}s")
        };
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{bottom}"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            TOP - 8.0,
            TOP - 12.0
        );
        t += step;
    }
    out.push_str("</g>");
}

fn row_svg(out: &mut String, scale: &Scale, row: &Row, y: f64) {
    let host = escape(&row.hostname);
    let _ = write!(
        out,
        r#"<g class="row" data-node="{host}" data-role="{}"><text class="row-label" x="8" y="{:.1}">{host}</text><text class="role" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        escape(&row.role),
        y + 19.0,
        LABEL_WIDTH - 8.0,
        y + 19.0,
        escape(&row.role),
    );
    let mid = y + ROW_HEIGHT / 2.0;
    for (from, to) in &row.held {
        let _ = write!(
            out,
            r#"<line class="held" x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}"><title>{host}: ready, held drained for {}</title></line>"#,
            scale.x(*from),
            scale.x(*to),
            human(to.duration_since(*from)),
        );
    }
    for bar in &row.bars {
        bar_svg(out, scale, &host, bar, y);
    }
    for marker in &row.markers {
        marker_svg(out, scale, &host, marker, y);
    }
    out.push_str("</g>");
}

fn bar_svg(out: &mut String, scale: &Scale, host: &str, bar: &Bar, y: f64) {
    let x = scale.x(bar.start);
    let width = (scale.x(bar.end) - x).max(2.0);
    let step = bar.step.as_str();
    let state = match (bar.failed, bar.open) {
        (true, _) => " failed",
        (false, true) => " open",
        _ => "",
    };
    let took = human(bar.end.duration_since(bar.start));
    let words = match (bar.failed, bar.open) {
        (true, _) => format!("{step}, failed after {took}"),
        (false, true) => format!("{step}, under way for {took}"),
        _ => format!("{step}, {took}"),
    };
    let _ = write!(
        out,
        r#"<rect class="bar {step}{state}" data-step="{step}" data-start="{}" data-end="{}" x="{x:.1}" y="{:.1}" width="{width:.1}" height="{BAR_HEIGHT}"><title>{host}: {words}</title></rect>"#,
        bar.start,
        bar.end,
        y + (ROW_HEIGHT - BAR_HEIGHT) / 2.0,
    );
    // A text label where it fits: the picture reads without colour.
    let label = if width >= 7.0 * step.len() as f64 {
        step
    } else if width >= 10.0 {
        &step[..1]
    } else {
        ""
    };
    if !label.is_empty() {
        let _ = write!(
            out,
            r#"<text class="bar-label" x="{:.1}" y="{:.1}">{label}</text>"#,
            x + 2.0,
            y + 19.0
        );
    }
}

fn marker_svg(out: &mut String, scale: &Scale, host: &str, marker: &Marker, y: f64) {
    let (class, label) = match marker.step {
        EventStep::Failed => ("failure", "✕ failed"),
        _ => ("unlock", "🔓 unlock"),
    };
    let _ = write!(
        out,
        r#"<text class="marker {class}" data-step="{}" data-at="{}" x="{:.1}" y="{:.1}">{label}<title>{host}: {}</title></text>"#,
        marker.step,
        marker.at,
        scale.x(marker.at) + 2.0,
        y + 12.0,
        escape(&marker.message),
    );
}

fn rollout_mark(out: &mut String, scale: &Scale, mark: &Marker, bottom: f64) {
    let x = scale.x(mark.at);
    // Near the right edge the label goes left of its line, so it is not cut off.
    let (label_x, anchor) = if x > WIDTH - 90.0 {
        (x - 3.0, "end")
    } else {
        (x + 3.0, "start")
    };
    let _ = write!(
        out,
        r#"<g class="rollout-mark {step}" data-step="{step}" data-at="{}"><line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{bottom}"/><text x="{label_x:.1}" y="{}" text-anchor="{anchor}">{step}</text><title>{step}: {}</title></g>"#,
        mark.at,
        TOP - 6.0,
        TOP + 2.0,
        escape(&mark.message),
        step = mark.step,
    );
}

fn legend(out: &mut String, y: f64) {
    out.push_str(r#"<g class="legend">"#);
    let mut x = LABEL_WIDTH;
    for step in ["drain", "upgrade", "ready", "reactivate", "rollback"] {
        let _ = write!(
            out,
            r##"<rect class="{step}" x="{x}" y="{}" width="14" height="12" stroke="#222" stroke-width="0.5"/><text x="{}" y="{y}">{step}</text>"##,
            y - 10.0,
            x + 18.0
        );
        x += 30.0 + 7.0 * step.len() as f64;
    }
    let _ = write!(
        out,
        r#"<line class="held" x1="{x}" y1="{}" x2="{}" y2="{}"/><text x="{}" y="{y}">held drained</text><text class="failure" x="{}" y="{y}">✕ failed</text><text x="{}" y="{y}">dashed: under way</text>"#,
        y - 4.0,
        x + 20.0,
        y - 4.0,
        x + 24.0,
        x + 120.0,
        x + 200.0
    );
    out.push_str("</g>");
}

/// Escapes text for XML content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
