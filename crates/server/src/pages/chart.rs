//! Line charts drawn on the server as SVG: a series of builds' figures
//! over time, each point a link to its build with its value in a tooltip.

use std::fmt::Write;

use super::common::{Time, escape};

/// A point: the build, when, and the value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Point {
    pub(super) build: i64,
    pub(super) time: i64,
    pub(super) value: f64,
}

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 300.0;
/// Room for the axes' labels: left, right, top, bottom.
const PAD: (f64, f64, f64, f64) = (70.0, 20.0, 12.0, 30.0);

/// A value for an axis label or a tooltip: whole from 100 up, else three
/// significant digits (at most six decimals), no trailing zeros.
fn number(v: f64) -> String {
    let text = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v == 0.0 {
        "0".to_string()
    } else {
        let decimals = (2.0 - v.abs().log10().floor()).clamp(0.0, 6.0) as usize;
        format!("{v:.decimals$}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A round step for about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|f| f * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    if step > 0.0 { step } else { 1.0 }
}

/// The chart of `points` (oldest first), `label` naming it for screen
/// readers and `unit` following values. `None` without points.
pub(super) fn svg(label: &str, unit: &str, points: &[Point]) -> Option<String> {
    let (first, last) = (points.first()?, points.last()?);
    let max = points.iter().map(|p| p.value).fold(0.0_f64, f64::max);
    let step = tick_step(if max > 0.0 { max * 1.1 } else { 1.0 });
    let top = (max * 1.1 / step).ceil().max(1.0) * step;
    let (left, right, up, down) = PAD;
    let (w, h) = (WIDTH - left - right, HEIGHT - up - down);
    let span = (last.time - first.time).max(1) as f64;
    let x = |t: i64| {
        if points.len() == 1 {
            left + w / 2.0
        } else {
            left + (t - first.time) as f64 / span * w
        }
    };
    let y = |v: f64| up + h - v / top * h;
    let unit = escape(unit);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" preserveAspectRatio="xMidYMid meet">"#,
        escape(label)
    );
    // Horizontal grid lines with their values.
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let _ = write!(
            s,
            r#"<line class="grid" x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left + w,
            left - 6.0,
            y(v) + 4.0,
            number(v),
            y = y(v)
        );
        v += step;
    }
    // Dates of the first and the last point.
    let day = |t: i64| Time::of(t).text[..10].to_string();
    let _ = write!(
        s,
        r#"<text class="tick" x="{left}" y="{}" text-anchor="start">{}</text><text class="tick" x="{}" y="{}" text-anchor="end">{}</text>"#,
        HEIGHT - 8.0,
        day(first.time),
        left + w,
        HEIGHT - 8.0,
        day(last.time)
    );
    let line: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.time), y(p.value)))
        .collect();
    let _ = write!(s, r#"<polyline class="line" points="{}"/>"#, line.join(" "));
    for p in points {
        let _ = write!(
            s,
            r#"<a href="/build/{id}"><circle class="point" cx="{:.1}" cy="{:.1}" r="4"><title>build {id}, {}: {} {unit}</title></circle></a>"#,
            x(p.time),
            y(p.value),
            Time::of(p.time).text,
            number(p.value),
            id = p.build,
        );
    }
    s.push_str("</svg>");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(build: i64, time: i64, value: f64) -> Point {
        Point { build, time, value }
    }

    #[test]
    fn a_chart_links_every_point_to_its_build_with_its_value() {
        let svg = svg(
            "Build time",
            "s",
            &[point(1, 1_700_000_000, 10.0), point(2, 1_700_086_400, 25.5)],
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(r#"aria-label="Build time""#));
        assert!(svg.contains(r#"<a href="/build/2">"#));
        assert!(svg.contains("<title>build 2, 2023-11-15 22:13:20: 25.5 s</title>"));
        assert!(svg.contains("2023-11-14</text>"));
        // The axis starts at 0 and ends above the largest value.
        assert!(svg.contains(">0</text>"));
        assert!(svg.contains(">30</text>"), "{svg}");
    }

    #[test]
    fn no_points_no_chart_and_one_point_is_centred() {
        assert_eq!(svg("x", "", &[]), None);
        let one = svg("x", "", &[point(7, 5, 0.0)]).unwrap();
        assert!(one.contains(r#"cx="525.0""#), "{one}");
    }

    #[test]
    fn units_and_labels_are_escaped() {
        let svg = svg("<b>", "<i>", &[point(1, 0, 1.0)]).unwrap();
        assert!(!svg.contains("<b>") && !svg.contains("<i>"));
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(11.0), 2.5);
        assert_eq!(tick_step(1000.0), 200.0);
        assert_eq!(tick_step(0.3), 0.1);
        assert_eq!(number(2.50), "2.5");
        assert_eq!(number(1234.6), "1235");
        assert_eq!(number(0.001177), "0.00118");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1e-9), "0");
    }
}
