//! The report as a picture (`--svg FILE`): (a) the latency percentile curve, latency against
//! percentile on a log scale of 1 / (1 - p) from 0 to 99.99, and (b) throughput and p99 latency
//! per second over the run. Plain SVG text, no plotting library: two panels, axes with ticks
//! and labels, a title with the run's parameters.

use std::fmt::Write;

use crate::report::Report;
use crate::soak::{SoakReport, SoakSample};

/// Width of the picture, pixels.
const WIDTH: f64 = 960.0;
/// Height of one panel's plot area, pixels.
const PLOT_HEIGHT: f64 = 260.0;
/// Left margin (left axis labels), right margin (right axis labels).
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 80.0;
/// Space above the first panel (title).
const TITLE_HEIGHT: f64 = 95.0;
/// Space between panels and below the last one (axis labels, panel title).
const PANEL_GAP: f64 = 90.0;
/// Ticks on a value axis.
const VALUE_TICKS: u32 = 5;
/// The percentile axis: decades of 1 / (1 - p), and their labels.
const PERCENTILE_TICKS: [(f64, &str); 5] = [(0.0, "0"), (1.0, "90"), (2.0, "99"), (3.0, "99.9"), (4.0, "99.99")];

const LATENCY_COLOUR: &str = "#1f6fb2";
const THROUGHPUT_COLOUR: &str = "#2a8c3c";
const P99_COLOUR: &str = "#c0392b";
const MEMORY_COLOUR: &str = "#6c3483";
const FDS_COLOUR: &str = "#7f8c8d";
const RECYCLE_COLOUR: &str = "#e67e22";

/// The SVG document for `report`; `title` names the run (mode, target, mix).
pub fn render(report: &Report, title: &str) -> String {
    let height = TITLE_HEIGHT + 2.0 * (PLOT_HEIGHT + PANEL_GAP);
    let subtitle = format!(
        "{} completed in {:.1} s, {:.1} requests/s, {} errors; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.completed,
        report.elapsed_s,
        report.throughput_per_s,
        report.errors_total,
        report.latency_us.p50 as f64 / 1000.0,
        report.latency_us.p99 as f64 / 1000.0,
        report.latency_us.max as f64 / 1000.0,
    );
    let mut svg = open_document(height, title, &subtitle);
    percentile_panel(&mut svg, report, TITLE_HEIGHT);
    timeline_panel(&mut svg, report, TITLE_HEIGHT + PLOT_HEIGHT + PANEL_GAP);
    svg.push_str("</svg>\n");
    svg
}

/// The soak's picture (`--soak DIR`, `soak.svg`): (a) the server's resident memory and open
/// file descriptors, with each HSM recycle marked, (b) p99 latency and (c) throughput, each per
/// sample against time.
pub fn render_soak(report: &SoakReport, title: &str) -> String {
    let height = TITLE_HEIGHT + 3.0 * (PLOT_HEIGHT + PANEL_GAP);
    let summary = &report.summary;
    let subtitle = format!(
        "{} samples every {:.1} s over {:.0} s, {} completed, {} errors, {} HSM recycles; checks {}",
        report.samples.len(),
        report.every_s,
        summary.duration_s,
        summary.completed,
        summary.errors,
        summary.hsm_recycles.map_or("unknown".to_owned(), |r| r.to_string()),
        if summary.passed() { "passed" } else { "FAILED" },
    );
    let mut svg = open_document(height, title, &subtitle);
    let end_s = report.samples.last().map_or(1.0, |s| s.t_s).ceil().max(1.0);
    let at = |s: &SoakSample| s.t_s;

    let plot = Plot::at(TITLE_HEIGHT);
    plot.frame(&mut svg, "(a) authz resident memory and open file descriptors", "time since the start (s)");
    let rss_mib: Vec<(f64, f64)> =
        report.samples.iter().filter_map(|s| Some((at(s), crate::soak::mib(s.rss_bytes?)))).collect();
    let fds: Vec<(f64, f64)> = report.samples.iter().filter_map(|s| Some((at(s), s.open_fds? as f64))).collect();
    let rss_max = nice_max(rss_mib.iter().map(|p| p.1).fold(0.0, f64::max));
    let fds_max = nice_max(fds.iter().map(|p| p.1).fold(0.0, f64::max));
    plot.value_axis(&mut svg, rss_max, "resident memory (MiB)", MEMORY_COLOUR, false);
    plot.value_axis(&mut svg, fds_max, "open file descriptors", FDS_COLOUR, true);
    plot.time_axis(&mut svg, end_s);
    // A recycle happened between two samples whose recycle counters differ.
    for pair in report.samples.windows(2) {
        if let [before, after] = pair
            && let (Some(b), Some(a)) = (before.hsm_recycles_total, after.hsm_recycles_total)
            && a > b
        {
            plot.marker(&mut svg, "recycle", plot.x(at(after), end_s), RECYCLE_COLOUR);
        }
    }
    polyline(&mut svg, "rss", MEMORY_COLOUR, &plot.points(&rss_mib, end_s, rss_max));
    polyline(&mut svg, "fds", FDS_COLOUR, &plot.points(&fds, end_s, fds_max));
    legend(
        &mut svg,
        TITLE_HEIGHT + PLOT_HEIGHT + 60.0,
        &[("resident memory", MEMORY_COLOUR), ("open fds", FDS_COLOUR), ("HSM recycle", RECYCLE_COLOUR)],
    );

    let top = TITLE_HEIGHT + PLOT_HEIGHT + PANEL_GAP;
    let plot = Plot::at(top);
    plot.frame(&mut svg, "(b) p99 latency between samples", "time since the start (s)");
    let p99_ms: Vec<(f64, f64)> = report
        .samples
        .iter()
        .filter(|s| s.latency_us_p99 > 0)
        .map(|s| (at(s), s.latency_us_p99 as f64 / 1000.0))
        .collect();
    let p99_max = nice_max(p99_ms.iter().map(|p| p.1).fold(0.0, f64::max));
    plot.value_axis(&mut svg, p99_max, "p99 latency (ms)", P99_COLOUR, false);
    plot.time_axis(&mut svg, end_s);
    polyline(&mut svg, "p99", P99_COLOUR, &plot.points(&p99_ms, end_s, p99_max));

    let top = top + PLOT_HEIGHT + PANEL_GAP;
    let plot = Plot::at(top);
    plot.frame(&mut svg, "(c) throughput between samples", "time since the start (s)");
    let rate: Vec<(f64, f64)> = report.samples.iter().skip(1).map(|s| (at(s), s.throughput_per_s)).collect();
    let rate_max = nice_max(rate.iter().map(|p| p.1).fold(0.0, f64::max));
    plot.value_axis(&mut svg, rate_max, "throughput (requests/s)", THROUGHPUT_COLOUR, false);
    plot.time_axis(&mut svg, end_s);
    polyline(&mut svg, "throughput", THROUGHPUT_COLOUR, &plot.points(&rate, end_s, rate_max));
    svg.push_str("</svg>\n");
    svg
}

/// The document's opening: the svg element, a white background, the title and a subtitle.
fn open_document(height: f64, title: &str, subtitle: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="50" text-anchor="middle" fill="#444">{}</text>"##,
        WIDTH / 2.0,
        escape(subtitle)
    );
    svg
}

/// A row of legend entries at `y`: a coloured bar and a name each.
fn legend(svg: &mut String, y: f64, entries: &[(&str, &str)]) {
    for (index, (name, colour)) in entries.iter().enumerate() {
        let x = MARGIN_LEFT + 160.0 * index as f64;
        let _ = writeln!(svg, r#"<rect x="{x}" y="{}" width="14" height="4" fill="{colour}"/>"#, y - 4.0);
        let _ = writeln!(svg, r#"<text x="{}" y="{y}">{}</text>"#, x + 20.0, escape(name));
    }
}

/// A plot area: its pixel box and the value ranges it maps.
struct Plot {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl Plot {
    fn at(top: f64) -> Self {
        Self { left: MARGIN_LEFT, top, width: WIDTH - MARGIN_LEFT - MARGIN_RIGHT, height: PLOT_HEIGHT }
    }

    fn x(&self, value: f64, max: f64) -> f64 {
        self.left + self.width * fraction(value, max)
    }

    fn y(&self, value: f64, max: f64) -> f64 {
        self.top + self.height * (1.0 - fraction(value, max))
    }

    fn frame(&self, svg: &mut String, title: &str, x_label: &str) {
        let (left, top, width, height) = (self.left, self.top, self.width, self.height);
        let _ = writeln!(svg, r#"<text x="{left}" y="{}" font-size="14">{}</text>"#, top - 12.0, escape(title));
        let _ = writeln!(
            svg,
            r##"<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#999"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            left + width / 2.0,
            top + height + 38.0,
            escape(x_label)
        );
    }

    /// Horizontal grid lines with tick labels on the left (or right) side.
    fn value_axis(&self, svg: &mut String, max: f64, label: &str, colour: &str, right: bool) {
        for tick in 0..=VALUE_TICKS {
            let value = max * f64::from(tick) / f64::from(VALUE_TICKS);
            let y = self.y(value, max);
            if !right {
                let _ = writeln!(
                    svg,
                    r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e4e4e4"/>"##,
                    self.left,
                    self.left + self.width
                );
            }
            let (x, anchor) = if right { (self.left + self.width + 6.0, "start") } else { (self.left - 6.0, "end") };
            let _ = writeln!(
                svg,
                r#"<text x="{x}" y="{:.1}" text-anchor="{anchor}" fill="{colour}">{}</text>"#,
                y + 4.0,
                tick_label(value)
            );
        }
        let x = if right { self.left + self.width + 62.0 } else { self.left - 58.0 };
        let y = self.top + self.height / 2.0;
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{y}" text-anchor="middle" fill="{colour}" transform="rotate(-90 {x} {y})">{}</text>"#,
            escape(label)
        );
    }

    /// The time axis from 0 to `end_s` seconds, ticks at a round step.
    fn time_axis(&self, svg: &mut String, end_s: f64) {
        let time_step = round_step(end_s / f64::from(VALUE_TICKS));
        let mut seconds = 0.0;
        while seconds <= end_s {
            self.x_tick(svg, self.x(seconds, end_s), &tick_label(seconds));
            seconds += time_step;
        }
    }

    /// (time, value) pairs as pixel coordinates.
    fn points(&self, values: &[(f64, f64)], end_s: f64, max: f64) -> Vec<(f64, f64)> {
        values.iter().map(|(t, value)| (self.x(*t, end_s), self.y(*value, max))).collect()
    }

    /// A dashed vertical line across the plot at pixel `x`, of class `class`.
    fn marker(&self, svg: &mut String, class: &str, x: f64, colour: &str) {
        let _ = writeln!(
            svg,
            r#"<line class="{class}" x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{colour}" stroke-dasharray="4 3"/>"#,
            self.top,
            self.top + self.height
        );
    }

    /// A vertical tick with its label under the plot.
    fn x_tick(&self, svg: &mut String, x: f64, label: &str) {
        let bottom = self.top + self.height;
        let _ = writeln!(svg, r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{bottom}" stroke="#e4e4e4"/>"##, self.top);
        let _ =
            writeln!(svg, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#, bottom + 18.0, escape(label));
    }
}

fn percentile_panel(svg: &mut String, report: &Report, top: f64) {
    let plot = Plot::at(top);
    plot.frame(svg, "(a) latency by percentile", "percentile (log scale of 1 / (1 - p))");
    let points = &report.latency_percentiles_us;
    let max_ms = nice_max(points.iter().map(|p| p.latency_us as f64 / 1000.0).fold(0.0, f64::max));
    plot.value_axis(svg, max_ms, "latency (ms)", LATENCY_COLOUR, false);
    let decades = PERCENTILE_TICKS.len() as f64 - 1.0;
    for (decade, label) in PERCENTILE_TICKS {
        plot.x_tick(svg, plot.x(decade, decades), label);
    }
    let coordinates: Vec<(f64, f64)> = points
        .iter()
        .map(|p| {
            let decade = -(1.0 - p.percentile / 100.0).max(1e-12).log10();
            (plot.x(decade, decades), plot.y(p.latency_us as f64 / 1000.0, max_ms))
        })
        .collect();
    polyline(svg, "latency-curve", LATENCY_COLOUR, &coordinates);
}

fn timeline_panel(svg: &mut String, report: &Report, top: f64) {
    let plot = Plot::at(top);
    plot.frame(svg, "(b) throughput and p99 latency per second", "time since the start (s)");
    let timeline = &report.timeline;
    // The time axis ends at the run's last whole second, with ticks at a round step.
    let end_s = timeline.last().map_or(1.0, |p| p.start_s + p.length_s).ceil().max(1.0);
    let max_rate = nice_max(timeline.iter().map(|p| p.throughput_per_s).fold(0.0, f64::max));
    let max_p99_ms = nice_max(timeline.iter().map(|p| p.latency_us_p99 as f64 / 1000.0).fold(0.0, f64::max));
    plot.value_axis(svg, max_rate, "throughput (requests/s)", THROUGHPUT_COLOUR, false);
    plot.value_axis(svg, max_p99_ms, "p99 latency (ms)", P99_COLOUR, true);
    plot.time_axis(svg, end_s);
    // Each interval is drawn at its middle.
    let middle = |p: &crate::report::TimePoint| p.start_s + p.length_s / 2.0;
    let throughput: Vec<(f64, f64)> =
        timeline.iter().map(|p| (plot.x(middle(p), end_s), plot.y(p.throughput_per_s, max_rate))).collect();
    let p99: Vec<(f64, f64)> = timeline
        .iter()
        .filter(|p| p.completed > 0)
        .map(|p| (plot.x(middle(p), end_s), plot.y(p.latency_us_p99 as f64 / 1000.0, max_p99_ms)))
        .collect();
    polyline(svg, "throughput", THROUGHPUT_COLOUR, &throughput);
    polyline(svg, "p99", P99_COLOUR, &p99);
    legend(svg, top + PLOT_HEIGHT + 60.0, &[("throughput", THROUGHPUT_COLOUR), ("p99 latency", P99_COLOUR)]);
}

fn polyline(svg: &mut String, id: &str, colour: &str, points: &[(f64, f64)]) {
    let text: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        svg,
        r#"<polyline id="{id}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
        text.join(" ")
    );
}

/// `value / max` within 0 and 1 (0 when max is not positive).
fn fraction(value: f64, max: f64) -> f64 {
    if max > 0.0 && value.is_finite() { (value / max).clamp(0.0, 1.0) } else { 0.0 }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten at or above `value` (1 for nothing).
fn nice_max(value: f64) -> f64 {
    if !(value.is_finite() && value > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|step| step * power).find(|nice| *nice >= value).unwrap_or(10.0 * power)
}

/// The smallest of 1, 2, 5 times a power of ten (at least 1) at or above `value`.
fn round_step(value: f64) -> f64 {
    if !(value.is_finite() && value > 1.0) {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|step| step * power).find(|round| *round >= value).unwrap_or(10.0 * power)
}

fn tick_label(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e9 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Text for an SVG text node or attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::drive::exchange::{Exchanged, RequestKind};
    use crate::report::Recorder;
    use mps_protocol::ResponseCode;
    use std::time::Duration;

    /// Every element opened is closed, in order; returns the element names seen.
    pub(crate) fn check_balanced(svg: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').map(|e| start + e).expect("a tag is closed");
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "no '<' inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.trim()), "closing tag matches");
            } else {
                let name = tag.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
                seen.push(name.clone());
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        seen
    }

    fn points_of(svg: &str, id: &str) -> usize {
        let marker = format!("id=\"{id}\"");
        let line = svg.lines().find(|l| l.contains(&marker)).unwrap();
        let points = line.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        points.split_whitespace().filter(|p| p.split(',').count() == 2).count()
    }

    #[test]
    fn the_picture_is_well_formed_and_holds_every_series() {
        let recorder = Recorder::new().unwrap();
        let exchanged = Exchanged {
            kind: RequestKind::Payment,
            status: Some(200),
            code: Some(ResponseCode::Approved),
            error: None,
        };
        for i in 0..200u64 {
            recorder.claim(0);
            recorder.record(Duration::from_micros(500 + i * 37), &exchanged);
        }
        let report = recorder.report("closed loop, 2 connections".to_owned(), false);
        let svg = render(&report, "loadtest <authz> & friends");
        let elements = check_balanced(&svg);
        assert_eq!(elements.first().map(String::as_str), Some("svg"));
        assert!(svg.contains("&lt;authz&gt; &amp; friends"), "the title is escaped");
        assert_eq!(points_of(&svg, "latency-curve"), report.latency_percentiles_us.len());
        assert_eq!(points_of(&svg, "throughput"), report.timeline.len());
        assert_eq!(points_of(&svg, "p99"), report.timeline.iter().filter(|p| p.completed > 0).count());
        for label in ["99.99", "percentile", "throughput (requests/s)", "p99 latency (ms)"] {
            assert!(svg.contains(label), "{label} is on the picture");
        }
    }

    #[test]
    fn an_empty_run_still_draws() {
        let report = Recorder::new().unwrap().report("open loop".to_owned(), true);
        check_balanced(&render(&report, "empty"));
    }

    #[test]
    fn the_soak_picture_draws_memory_fds_p99_throughput_and_each_recycle() {
        let samples: Vec<SoakSample> = (0..20u64)
            .map(|i| SoakSample {
                t_s: i as f64 * 5.0,
                completed_total: i * 1000,
                throughput_per_s: 200.0,
                latency_us_p99: if i == 0 { 0 } else { 3000 + i * 10 },
                rss_bytes: Some((40 + i % 4) * 1024 * 1024),
                open_fds: Some(60),
                hsm_recycles_total: Some(i / 6),
                ..SoakSample::default()
            })
            .collect();
        let report = SoakReport {
            every_s: 5.0,
            window_s: 20.0,
            samples,
            summary: crate::soak::SoakSummary::default(),
            notes: Vec::new(),
        };
        let svg = render_soak(&report, "soak <authz>");
        check_balanced(&svg);
        assert!(svg.contains("soak &lt;authz&gt;"), "the title is escaped");
        assert_eq!(points_of(&svg, "rss"), 20);
        assert_eq!(points_of(&svg, "fds"), 20);
        assert_eq!(points_of(&svg, "p99"), 19, "the first sample has no completed request");
        assert_eq!(points_of(&svg, "throughput"), 19, "the first sample has no interval before it");
        // The counter goes 0, 1, 2, 3 over the samples: three recycles.
        assert_eq!(svg.matches("class=\"recycle\"").count(), 3);
        for label in ["resident memory (MiB)", "open file descriptors", "p99 latency (ms)", "HSM recycle"] {
            assert!(svg.contains(label), "{label} is on the picture");
        }
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(2.2), 2.5);
        assert_eq!(nice_max(f64::NAN), 1.0);
        assert_eq!(round_step(0.4), 1.0);
        assert_eq!(round_step(1.2), 2.0);
        assert_eq!(round_step(12.0), 20.0);
    }
}
