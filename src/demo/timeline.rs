//! What one scripted session recorded, what it measures, and how it is drawn.
//!
//! Everything here is pure: a [`Run`] is plain data on one clock (offsets from the start of the
//! session), so the same recording can be measured, printed in the terminal, and drawn as SVG
//! or HTML — and tested from fixed numbers.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use unicode_width::UnicodeWidthStr;

/// A key press: when the person pressed it, and when the UI loop got to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Key {
    #[serde(with = "millis")]
    pub pressed: Duration,
    #[serde(with = "millis_opt")]
    pub handled: Option<Duration>,
}

/// A lookup's life, from submit to outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    #[serde(with = "millis")]
    pub start: Duration,
    #[serde(with = "millis")]
    pub end: Duration,
}

/// One session, sync or async, on one clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub label: String,
    /// OS threads that ran the UI loop and its lookups.
    pub threads: usize,
    #[serde(with = "millis")]
    pub total: Duration,
    #[serde(with = "millis")]
    pub frame_interval: Duration,
    #[serde(with = "millis")]
    pub tick_interval: Duration,
    #[serde(with = "millis_vec")]
    pub frames: Vec<Duration>,
    pub keys: Vec<Key>,
    #[serde(with = "millis_vec")]
    pub ticks: Vec<Duration>,
    pub lookups: Vec<Span>,
}

/// A key counts as late when the loop took longer than this to get to it: three frames at
/// 60 fps, about where people notice lag in typing.
pub const LATE_KEY: Duration = Duration::from_millis(50);

/// The numbers the side-by-side table shows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Measures {
    #[serde(with = "millis")]
    pub total: Duration,
    /// Of the `frames_expected`, those drawn: due less those skipped in gaps between frames,
    /// and at most the frames drawn while lookups were pending (see `frames_drawn`).
    pub frames_drawn: usize,
    /// Frames a 60 fps bar would have drawn while lookups were pending.
    pub frames_expected: usize,
    /// The longest time the screen did not change while it should have (a lookup pending).
    /// A key can wait longer, through several freezes back to back: that is
    /// `worst_key_delay`, shown beside it, not folded into it (the timeline shows frames
    /// between those freezes).
    #[serde(with = "millis")]
    pub longest_freeze: Duration,
    pub keys: usize,
    pub keys_late: usize,
    #[serde(with = "millis")]
    pub worst_key_delay: Duration,
    pub ticks_run: usize,
    pub ticks_missed: usize,
    pub threads: usize,
}

impl Run {
    pub fn measures(&self) -> Measures {
        let pending = merged(&self.lookups);
        let pending_time: Duration = pending.iter().map(|s| s.end.saturating_sub(s.start)).sum();
        let frames_expected = ratio(pending_time, self.frame_interval);

        // Gaps between consecutive frames that overlap a pending interval: the bar should
        // have moved in them.
        let mut edges = Vec::with_capacity(self.frames.len() + 2);
        edges.push(Duration::ZERO);
        edges.extend(self.frames.iter().copied());
        edges.push(self.total);
        edges.sort();
        let longest = edges
            .windows(2)
            .flat_map(|w| {
                // Only the part of a gap while a lookup was pending counts: idle time before
                // the first key is not a freeze.
                pending
                    .iter()
                    .map(move |s| w[1].min(s.end).saturating_sub(w[0].max(s.start)))
            })
            .max()
            .unwrap_or_default();
        let delays = self
            .keys
            .iter()
            .map(|k| k.handled.unwrap_or(self.total).saturating_sub(k.pressed));
        let worst_key_delay = delays.clone().max().unwrap_or_default();
        let keys_late = delays.filter(|&d| d > LATE_KEY).count();
        let ticks_missed = missed_ticks(&self.ticks, self.tick_interval, self.total);
        Measures {
            total: self.total,
            frames_drawn: frames_drawn(&self.frames, &pending, self.frame_interval),
            frames_expected,
            longest_freeze: longest,
            keys: self.keys.len(),
            keys_late,
            worst_key_delay,
            ticks_run: self.ticks.len(),
            ticks_missed,
            threads: self.threads,
        }
    }
}

/// Ticks that fell due while the thread could not run them. A tick falls due every
/// interval from the run's start (the ticker's own schedule, which never runs one early);
/// one due is missed when none ran before the next was due. With tokio's `Skip`, a tick due
/// in a freeze runs late, at its end, once: that one counts as run, the others as missed. A
/// tick due in the run's last half interval is left out: the run may end before its turn
/// comes, frozen or not. (Counting dues by dividing the run's length came out one off both
/// ways, depending on the latency.)
fn missed_ticks(ticks: &[Duration], interval: Duration, total: Duration) -> usize {
    if interval.is_zero() || ticks.is_empty() {
        return 0;
    }
    let last_due = total.saturating_sub(interval / 2);
    // The ticks are recorded in the order they ran: one pass.
    let mut ran = ticks.iter().peekable();
    let mut missed = 0;
    let mut due = Duration::ZERO;
    while due <= last_due {
        let next = due + interval;
        while ran.next_if(|&&t| t < due).is_some() {}
        if ran.peek().is_none_or(|&&t| t >= next) {
            missed += 1;
        }
        due = next;
    }
    missed
}

/// Whole `b`s in `a`, in integers: in floating point, 17 × 17 ms over 17 ms came out a hair
/// under 17 and floored to 16.
fn ratio(a: Duration, b: Duration) -> usize {
    a.as_nanos()
        .checked_div(b.as_nanos())
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Of the frames due while lookups were pending (one per `interval` of pending time, as
/// `frames_expected` counts them), how many were drawn: those due less those skipped, and
/// never more than the frames drawn in that time. A gap of n intervals between frames (or
/// between a span's start and its first frame) skipped n − 1 frames, to the nearest
/// interval, so a loop that draws a little early or late loses nothing (counting frames per
/// fixed slot lost 3 of 60 to jitter). The gap from the last frame to the span's end counts
/// whole intervals only, as `due` does: rounded, a frozen lookup's one frame counted or not
/// by the fraction of its length (1 of 60 at 1000 ms, 0 of 60 at 1010 ms). A plain count of frames read above what was due: the
/// screen also draws on keys and answers, and the sync loop draws the bar once just before it
/// blocks (30 of 10 for 30 lookups at 5 ms). That one frame still counts, as it was drawn
/// while the lookup was pending: a freeze of a few ms misses no frame. Only the time a
/// lookup was pending counts: idle frames before the first key would put the share above
/// 100 %.
fn frames_drawn(frames: &[Duration], pending: &[Span], interval: Duration) -> usize {
    let pending_time: Duration = pending.iter().map(|s| s.end.saturating_sub(s.start)).sum();
    let due = ratio(pending_time, interval);
    // Intervals in a gap, to the nearest, less the one drawn at its end.
    let skipped = |gap: Duration| ratio(gap + interval / 2, interval).saturating_sub(1);
    let mut sorted = frames.to_vec();
    sorted.sort();
    let (mut skipped_in_all, mut drawn) = (0, 0);
    for span in pending {
        let mut last = span.start;
        for &f in sorted.iter().filter(|&&f| f > span.start && f <= span.end) {
            skipped_in_all += skipped(f - last);
            last = f;
            drawn += 1;
        }
        skipped_in_all += ratio(span.end - last, interval).saturating_sub(1);
    }
    drawn.min(due.saturating_sub(skipped_in_all))
}

/// Overlapping spans joined, sorted by start.
fn merged(spans: &[Span]) -> Vec<Span> {
    let mut sorted = spans.to_vec();
    sorted.sort_by_key(|s| s.start);
    let mut out: Vec<Span> = Vec::new();
    for s in sorted {
        match out.last_mut() {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => out.push(s),
        }
    }
    out
}

/// Rounded to the nearest millisecond: 16.9 ms read "16 ms" beside a frame of 17.
pub(crate) fn ms(d: Duration) -> String {
    format!("{} ms", (d.as_micros() + 500) / 1000)
}

/// Lookups drawn each on a row of their own; more are folded into one last row.
const LOOKUP_ROWS: usize = 20;

/// The lookup rows of a run's timeline: a row a lookup up to [`LOOKUP_ROWS`], past that
/// the first ones and a last row holding the rest (the times any of them was in flight).
/// With `--lookups 1000` a row each made a 2,000-line report and an SVG 44,000 px high.
fn lookup_rows(lookups: &[Span]) -> Vec<(String, Vec<Span>)> {
    if lookups.len() <= LOOKUP_ROWS {
        return lookups
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("lookup {}", i + 1), vec![*l]))
            .collect();
    }
    let (own, rest) = lookups.split_at(LOOKUP_ROWS - 1);
    let mut rows = lookup_rows(own);
    rows.push((format!("+{} more", rest.len()), merged(rest)));
    rows
}

/// A row of the table: its label, and how a run's measures fill its cell.
type TableRow = (&'static str, fn(&Measures) -> String);

/// The side-by-side table, one column per run; on a terminal narrower than that, each
/// measure on a line of its own with the runs' values below it, so nothing wraps mid-word.
pub fn table_for(runs: &[Run], width: usize) -> String {
    let wide = table(runs);
    let fits = wide
        .lines()
        .all(|line| UnicodeWidthStr::width(line) <= width);
    if fits {
        return wide;
    }
    let measures: Vec<Measures> = runs.iter().map(Run::measures).collect();
    let mut out = String::new();
    for (label, cell) in table_rows() {
        let values: Vec<String> = runs
            .iter()
            .zip(&measures)
            .map(|(run, m)| format!("{} {}", run.label, cell(m)))
            .collect();
        let _ = writeln!(out, "{label}\n  {}", values.join(" · "));
    }
    out
}

/// The measures the table shows, in order.
fn table_rows() -> [TableRow; 7] {
    [
        ("total time", |m| ms(m.total)),
        // Lookups pending for less than a frame's time in all: no frame was due ("0 / 0"
        // read as none drawn, "none (no wait)" as no wait).
        ("frames drawn / due at 60 fps", |m| {
            match m.frames_expected {
                0 => "none due".to_owned(),
                due => format!("{} / {due}", m.frames_drawn),
            }
        }),
        ("longest UI freeze", |m| ms(m.longest_freeze)),
        ("keys handled late (> 50 ms)", |m| {
            format!("{} of {}", m.keys_late, m.keys)
        }),
        ("worst key delay", |m| ms(m.worst_key_delay)),
        ("background ticks missed", |m| {
            format!("{} (ran {})", m.ticks_missed, m.ticks_run)
        }),
        ("OS threads for UI + lookups", |m| m.threads.to_string()),
    ]
}

/// The side-by-side table, one column per run.
pub fn table(runs: &[Run]) -> String {
    let measures: Vec<Measures> = runs.iter().map(Run::measures).collect();
    let rows = table_rows();
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, f)| measures.iter().map(f).collect())
        .collect();
    let col_width = runs
        .iter()
        .map(|r| r.label.chars().count())
        .chain(cells.iter().flatten().map(|c| c.chars().count()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = write!(out, "{:label_width$}", "");
    for run in runs {
        let _ = write!(out, "  {:>col_width$}", run.label);
    }
    out.push('\n');
    for ((label, _), values) in rows.iter().zip(&cells) {
        let _ = write!(out, "{label:label_width$}");
        for v in values {
            let _ = write!(out, "  {v:>col_width$}");
        }
        out.push('\n');
    }
    out
}

/// The timeline as text: for each run, rows for frames, keys, the ticker and each lookup, on
/// one shared time axis `width` columns wide.
pub fn render_text(runs: &[Run], width: usize) -> String {
    let width = width.max(20);
    let span = runs
        .iter()
        .map(|r| r.total)
        .max()
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    let col = |d: Duration| {
        ((d.as_secs_f64() / span.as_secs_f64()) * (width - 1) as f64).round() as usize
    };
    let label_width = 10;
    let mut out = String::new();
    for run in runs {
        let m = run.measures();
        let head = format!("{} — {} thread(s)", run.label, run.threads);
        let freeze = format!("longest freeze {}", ms(m.longest_freeze));
        // On two lines where one would wrap (a 40-column terminal).
        if UnicodeWidthStr::width(head.as_str()) + 2 + freeze.len() <= width + 2 + label_width {
            let _ = writeln!(out, "{head}, {freeze}");
        } else {
            let _ = writeln!(out, "{head}\n  {freeze}");
        }
        // Columns the run lasted without a frame are dots; after its end, nothing.
        let mut frames = vec![' '; width];
        let last = col(run.total).min(width - 1);
        frames[..=last].fill('·');
        for &f in &run.frames {
            frames[col(f).min(width - 1)] = '|';
        }
        // Waits first, then the presses, then where late keys were handled: a key's wait
        // drawn over an earlier key's ▲ hid when that one was handled, and on a narrow
        // terminal, where keys share columns, presses drawn last hid every ▲ (the sync row
        // read as the async one). A key handled in time gets no ▲, even when its handling
        // fell in the next column.
        let mut keys = vec![' '; width];
        let spans = || {
            run.keys.iter().map(|k| {
                let handled = k.handled.unwrap_or(run.total);
                let late = handled.saturating_sub(k.pressed) > LATE_KEY;
                (
                    col(k.pressed).min(width - 1),
                    col(handled).min(width - 1),
                    late,
                )
            })
        };
        for (from, to, late) in spans() {
            if late {
                keys.iter_mut()
                    .take(to)
                    .skip(from + 1)
                    .for_each(|c| *c = '─');
            }
        }
        for (from, _, _) in spans() {
            keys[from] = 'k';
        }
        for (from, to, late) in spans() {
            if late && to > from {
                keys[to] = '▲';
            }
        }
        let mut ticks = vec![' '; width];
        for &t in &run.ticks {
            ticks[col(t).min(width - 1)] = '•';
        }
        let mut row = |name: &str, cells: &[char]| {
            let line = format!("  {name:<label_width$}{}", cells.iter().collect::<String>());
            let _ = writeln!(out, "{}", line.trim_end());
        };
        row("frames", &frames);
        row("keys", &keys);
        row("ticker", &ticks);
        for (name, spans) in lookup_rows(&run.lookups) {
            let mut cells = vec![' '; width];
            for l in spans {
                let (from, to) = (col(l.start).min(width - 1), col(l.end).min(width - 1));
                for c in cells.iter_mut().take(to + 1).skip(from) {
                    *c = '━';
                }
            }
            row(&name, &cells);
        }
        out.push('\n');
    }
    let end = ms(span);
    let mid = ms(span / 2);
    let mut axis = vec![' '; width];
    for (i, c) in "0 ms".chars().enumerate() {
        axis[i] = c;
    }
    let mid_at = (width / 2).saturating_sub(mid.len() / 2);
    for (i, c) in mid.chars().enumerate() {
        axis[mid_at + i] = c;
    }
    for (i, c) in end.chars().enumerate() {
        axis[width - end.len() + i] = c;
    }
    let axis = format!("  {:<label_width$}{}", "", axis.iter().collect::<String>());
    let _ = writeln!(out, "{}", axis.trim_end());
    // Two lines, so an 80-column terminal does not wrap it; one item a line where the
    // timeline is narrower than those (a 50-column terminal).
    let two_lines = "  legend: | frame drawn  · no frame   k─▲ key pressed → handled\n          • background tick   ━ lookup in flight";
    let fits = two_lines
        .lines()
        .all(|line| UnicodeWidthStr::width(line) <= width + 2 + label_width);
    let legend = if fits {
        two_lines
    } else {
        "  legend: | frame drawn\n          · no frame\n          k─▲ key pressed → handled\n          • background tick\n          ━ lookup in flight"
    };
    let _ = writeln!(out, "{legend}");
    out
}

const LANE: f64 = 22.0;
const LEFT: f64 = 110.0;
const PLOT: f64 = 900.0;

/// The timeline as a standalone SVG document.
/// The timeline as a standalone SVG document: each scenario (its runs) on a time axis of its
/// own, as the text draws them; on one shared axis a one-second scenario beside an
/// 80-second one took 2 % of the width.
pub fn render_svg(scenarios: &[Vec<Run>]) -> String {
    let mut svg = String::new();
    let height = svg_height(scenarios);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="12">"#,
        w = LEFT + PLOT + 30.0
    );
    svg_scenarios(&mut svg, scenarios);
    svg.push_str("</svg>\n");
    svg
}

fn svg_scenarios(svg: &mut String, scenarios: &[Vec<Run>]) {
    let mut y = 10.0;
    for runs in scenarios {
        y = svg_body(svg, runs, y);
    }
}

/// What `svg_body` draws for each scenario: per run a title (30 px), frames, keys, ticker and
/// the lookup rows (a lane each) and 10 px apart; then the axis and its labels (30 px).
fn svg_height(scenarios: &[Vec<Run>]) -> f64 {
    let runs = scenarios.iter().flatten();
    let lanes: usize = runs
        .clone()
        .map(|r| 3 + lookup_rows(&r.lookups).len())
        .sum();
    10.0 + lanes as f64 * LANE + 40.0 * runs.count() as f64 + 30.0 * scenarios.len() as f64
}

/// One scenario's runs from `y` down, on their own time axis; returns where the next may
/// start.
fn svg_body(svg: &mut String, runs: &[Run], mut y: f64) -> f64 {
    let span = runs
        .iter()
        .map(|r| r.total)
        .max()
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    let x = |d: Duration| LEFT + d.as_secs_f64() / span.as_secs_f64() * PLOT;
    for run in runs {
        let m = run.measures();
        y += 20.0;
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{y}" font-weight="bold">{} — {} thread(s), longest freeze {}, {} missed</text>"#,
            xml_escape(&run.label),
            run.threads,
            ms(m.longest_freeze),
            crate::console::count(m.ticks_missed as u64, "tick", "ticks"),
        );
        y += 10.0;
        let mut lane = |name: &str, body: &mut dyn FnMut(&mut String, f64)| {
            let mid = y + LANE / 2.0;
            let _ = writeln!(
                svg,
                r##"<g class="track"><text x="10" y="{:.1}">{}</text>"##,
                mid + 4.0,
                xml_escape(name)
            );
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="#ddd"/>"##,
                LEFT + PLOT
            );
            body(svg, mid);
            svg.push_str("</g>\n");
            y += LANE;
        };
        // One mark per half pixel: the 1000 lookups of `--lookups 1000` put ~4 keys on
        // every pixel of the keys lane (a 2 MB picture, its marks drawn over one another).
        let px = |d: Duration| (x(d) * 2.0).round() as i64;
        lane("frames", &mut |s, mid| {
            let mut drawn = HashSet::new();
            for &f in run.frames.iter().filter(|&&f| drawn.insert(px(f))) {
                let _ = writeln!(
                    s,
                    r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#2b7bb9"/>"##,
                    x(f),
                    mid - 8.0,
                    mid + 8.0
                );
            }
        });
        lane("keys", &mut |s, mid| {
            let mut drawn = HashSet::new();
            for k in &run.keys {
                let handled = k.handled.unwrap_or(run.total);
                let late = handled.saturating_sub(k.pressed) > LATE_KEY;
                if !drawn.insert((px(k.pressed), px(handled), late)) {
                    continue;
                }
                let colour = if late { "#d62728" } else { "#2ca02c" };
                let _ = writeln!(
                    s,
                    r##"<line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="{colour}" stroke-width="2"/><circle cx="{:.1}" cy="{mid:.1}" r="3" fill="none" stroke="{colour}"/><circle cx="{:.1}" cy="{mid:.1}" r="3" fill="{colour}"/>"##,
                    x(k.pressed),
                    x(handled),
                    x(k.pressed),
                    x(handled)
                );
            }
        });
        lane("ticker", &mut |s, mid| {
            let mut drawn = HashSet::new();
            for &t in run.ticks.iter().filter(|&&t| drawn.insert(px(t))) {
                let _ = writeln!(
                    s,
                    r##"<circle cx="{:.1}" cy="{mid:.1}" r="2.5" fill="#9467bd"/>"##,
                    x(t)
                );
            }
        });
        for (name, spans) in lookup_rows(&run.lookups) {
            lane(&name, &mut |s, mid| {
                for l in &spans {
                    let _ = writeln!(
                        s,
                        r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="10" rx="3" fill="#ff7f0e"/>"##,
                        x(l.start),
                        mid - 5.0,
                        (x(l.end) - x(l.start)).max(1.0)
                    );
                }
            });
        }
        y += 10.0;
    }
    // The scenario's time axis, shared by its runs.
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#333"/>"##,
        LEFT + PLOT
    );
    let step = axis_step(span);
    let mut t = Duration::ZERO;
    while t <= span {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{y:.1}" x2="{0:.1}" y2="{1:.1}" stroke="#333"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{3}</text>"##,
            x(t),
            y + 5.0,
            y + 18.0,
            ms(t)
        );
        t += step;
    }
    y + 30.0
}

/// A round axis step (1, 2 or 5 times a power of ten milliseconds, 10 ms at least) giving at
/// most ten labels, however long the run: a fixed largest step put hundreds of overlapping
/// labels under a run of hours.
fn axis_step(span: Duration) -> Duration {
    let total = span.as_millis().max(1);
    let mut magnitude: u128 = 10;
    loop {
        for step in [magnitude, 2 * magnitude, 5 * magnitude] {
            // Labels at 0, step, … up to the span: total / step + 1 of them.
            if total / step < 10 {
                return Duration::from_millis(u64::try_from(step).unwrap_or(u64::MAX));
            }
        }
        magnitude *= 10;
    }
}

/// One self-contained HTML page: the table, the legend and the timeline, no external references.
/// `summary`: what the text report says below its table (the back-to-back lookups from
/// first submit to last answer, and what that shows), which the page says too.
pub fn render_html(scenarios: &[Vec<Run>], title: &str, summary: &str) -> String {
    let mut body = String::new();
    let height = svg_height(scenarios);
    let _ = writeln!(
        body,
        r#"<svg width="{w}" height="{height}" viewBox="0 0 {w} {height}" font-family="sans-serif" font-size="12" role="img" aria-label="timeline">"#,
        w = LEFT + PLOT + 30.0
    );
    svg_scenarios(&mut body, scenarios);
    body.push_str("</svg>\n");
    // A table per scenario, as the runs compare within one.
    let tables: String = scenarios
        .iter()
        .map(|runs| format!("<pre>{}</pre>\n", xml_escape(&table(runs))))
        .collect();
    format!(
        r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
pre {{ background: #f6f6f6; padding: 1em; }}
.legend span {{ margin-right: 1.5em; }}
</style>
</head>
<body>
<h1>{title}</h1>
{tables}<pre>{summary}</pre>
<p class="legend"><span style="color:#2b7bb9">| frame drawn</span><span style="color:#2ca02c">○─● key pressed → handled</span><span style="color:#d62728">○─● key handled late</span><span style="color:#9467bd">● background tick</span><span style="color:#ff7f0e">▬ lookup in flight</span></p>
{body}</body>
</html>
"##,
        title = xml_escape(title),
        summary = xml_escape(summary.trim_end()),
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Durations as milliseconds (fractional) in JSON output.
pub(crate) mod millis {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(of(*d))
    }

    /// Milliseconds to the microsecond: `as_secs_f64() * 1000.0` printed binary noise
    /// (`0.5626439999999999`); a whole number of microseconds over 1000 prints as written.
    pub fn of(d: Duration) -> f64 {
        d.as_micros() as f64 / 1000.0
    }
}

mod millis_opt {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(super::millis::of(*d)),
            None => s.serialize_none(),
        }
    }
}

mod millis_vec {
    use serde::Serializer;
    use serde::ser::SerializeSeq;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for d in v {
            seq.serialize_element(&super::millis::of(*d))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_milliseconds_print_as_decimals_without_binary_noise() {
        #[derive(serde::Serialize)]
        struct T(#[serde(with = "millis")] Duration);
        let d = Duration::from_nanos(562_644_321);
        assert_eq!(serde_json::to_string(&T(d)).unwrap(), "562.644");
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A fixed recording: sync froze for the whole 1 s lookup, async kept drawing.
    fn recorded() -> Vec<Run> {
        let frames_async: Vec<Duration> = (0..=70).map(|i| ms(100 + i * 17)).collect();
        vec![
            Run {
                label: "sync".into(),
                threads: 1,
                total: ms(1300),
                frame_interval: ms(17),
                tick_interval: ms(100),
                frames: vec![ms(0), ms(50), ms(100), ms(1120), ms(1200)],
                keys: vec![
                    Key {
                        pressed: ms(90),
                        handled: Some(ms(95)),
                    },
                    Key {
                        pressed: ms(400),
                        handled: Some(ms(1110)),
                    },
                    Key {
                        pressed: ms(700),
                        handled: Some(ms(1111)),
                    },
                ],
                ticks: vec![ms(0), ms(100), ms(1100), ms(1200)],
                lookups: vec![Span {
                    start: ms(100),
                    end: ms(1100),
                }],
            },
            Run {
                label: "async".into(),
                threads: 1,
                total: ms(1300),
                frame_interval: ms(17),
                tick_interval: ms(100),
                frames: frames_async,
                keys: vec![
                    Key {
                        pressed: ms(90),
                        handled: Some(ms(91)),
                    },
                    Key {
                        pressed: ms(400),
                        handled: Some(ms(402)),
                    },
                    Key {
                        pressed: ms(700),
                        handled: Some(ms(701)),
                    },
                ],
                ticks: (0..13).map(|i| ms(i * 100)).collect(),
                lookups: vec![Span {
                    start: ms(100),
                    end: ms(1100),
                }],
            },
        ]
    }

    /// The text timeline for a 50-column terminal (an axis of 36) is no wider than that,
    /// legend included.
    #[test]
    fn the_text_timeline_fits_a_narrow_terminal() {
        let mut runs = recorded();
        // A freeze of over 10 s makes the longest header line.
        runs[0].lookups[0].end = ms(12_000);
        // A key pressed just before the freeze ends, in the column where the late keys are
        // handled on a narrow terminal.
        runs[0].keys.push(Key {
            pressed: ms(1105),
            handled: Some(ms(1112)),
        });
        // render_text gets the terminal's width less 14 columns.
        for terminal in 40..=80 {
            let text = render_text(&runs, terminal - 14);
            assert!(
                text.lines().all(|l| UnicodeWidthStr::width(l) <= terminal),
                "at {terminal}:\n{text}"
            );
            assert!(
                text.lines().all(|l| l == l.trim_end()),
                "trailing spaces at {terminal}:\n{text}"
            );
            let sync_keys = text.lines().find(|l| l.trim_start().starts_with("keys"));
            assert!(
                sync_keys.is_some_and(|l| l.contains('▲')),
                "no late key at {terminal}:\n{text}"
            );
            assert!(text.contains("━ lookup in flight"), "{text}");
        }
    }

    /// A thousand lookups take twenty rows, not a thousand: the last row holds the rest, in
    /// flight wherever any of them was.
    #[test]
    fn many_lookups_fold_into_one_last_row() {
        let mut run = recorded().remove(1);
        run.lookups = (0..1000)
            .map(|i| Span {
                start: ms(i),
                end: ms(i + 100),
            })
            .collect();
        let text = render_text(std::slice::from_ref(&run), 60);
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("lookup") || l.contains("more"))
            .collect();
        assert_eq!(rows.len(), LOOKUP_ROWS, "{text}");
        assert!(rows[0].trim_start().starts_with("lookup 1 "), "{text}");
        let last = rows[LOOKUP_ROWS - 1].trim_start();
        assert!(last.starts_with("+981 more"), "{text}");
        // Lookups 20..1000 were in flight from 19 ms to 1099 ms without a break.
        let drawn = last.trim_start_matches("+981 more").trim();
        assert!(drawn.chars().all(|c| c == '━'), "{last}");

        let scenario = [vec![run]];
        let svg = render_svg(&scenario);
        assert_eq!(svg.matches("<g class=\"track\">").count(), 3 + LOOKUP_ROWS);
        assert!(svg.contains(">+981 more</text>"), "{svg}");
        // No blank band at the foot: the axis labels' baseline is the lowest thing drawn.
        let lowest = svg
            .split(" y=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next()?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        let height = svg_height(&scenario);
        assert!(height < 700.0, "{height}");
        assert!(
            (5.0..=20.0).contains(&(height - lowest)),
            "{height} {lowest}"
        );
    }

    /// A run shorter than the axis draws nothing past its end: dots there would read as a
    /// screen that stopped drawing. The dot is in the legend.
    #[test]
    fn the_frames_row_ends_with_its_run() {
        let mut runs = recorded();
        // The async run ends halfway through the sync one's time.
        let half = runs[0].total / 2;
        runs[1].total = half;
        runs[1].frames.retain(|&f| f <= half);
        let text = render_text(&runs, 60);
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("frames"))
            .collect();
        let [sync, asynchronous] = rows[..] else {
            panic!("{text}")
        };
        let cells = |row: &str| {
            row.trim()
                .trim_start_matches("frames")
                .trim_start()
                .to_owned()
        };
        assert!(cells(sync).chars().count() >= 59, "{sync}");
        // Its row stops where it does.
        let span = runs[0].total.as_secs_f64();
        let end = (runs[1].total.as_secs_f64() / span * 59.0).round() as usize;
        assert_eq!(
            cells(asynchronous).chars().count(),
            end + 1,
            "{asynchronous}"
        );
        assert!(text.contains("· no frame"), "{text}");
    }

    /// On a terminal too narrow for the side-by-side table, each measure gets its own line
    /// and the values go below it, so no line is wider than the terminal.
    #[test]
    fn the_table_stacks_on_a_narrow_terminal() {
        let runs = recorded();
        assert_eq!(table_for(&runs, 100), table(&runs));
        let narrow = table_for(&runs, 40);
        assert!(
            narrow.lines().all(|l| UnicodeWidthStr::width(l) <= 40),
            "{narrow}"
        );
        assert!(
            narrow.contains("longest UI freeze\n  sync 1000 ms · async "),
            "{narrow}"
        );
    }

    /// A freeze from 400 to 651 ms in a run of 1251 ms: the ticks due at 400, 500 and 600
    /// fell in it, one ran late at 652, so two were missed (13 due, 11 ran).
    #[test]
    fn ticks_due_count_the_one_at_the_start_and_one_run_late_is_no_miss() {
        let mut run = recorded().remove(0);
        run.total = ms(1251);
        run.ticks = [0, 100, 200, 300, 652, 700, 800, 900, 1000, 1100, 1200]
            .into_iter()
            .map(ms)
            .collect();
        let m = run.measures();
        assert_eq!((m.ticks_run, m.ticks_missed), (11, 2));
        run.ticks = (0..13).map(|i| ms(i * 100)).collect();
        assert_eq!(run.measures().ticks_missed, 0);
        // As the ticker really runs: its first tick a little after the start, and the run
        // ending just after a whole number of intervals, before the next tick's turn.
        let late = |i: u64| ms(i * 100) + Duration::from_micros(300);
        run.total = ms(3000) + Duration::from_micros(50);
        run.ticks = (0..30).map(late).collect();
        assert_eq!(
            run.measures().ticks_missed,
            0,
            "a tick due as the run ends is no miss"
        );
        run.ticks = (0..30).filter(|i| !(5..8).contains(i)).map(late).collect();
        assert_eq!(run.measures().ticks_missed, 3);
    }

    /// Ticks as a real async run recorded them (demo --latency 10ms): the first ran 1.7 ms
    /// after its due time, later ones 1.0-2.2 ms after theirs. None was missed; counted from
    /// the first tick run, the one at 101.4 ms fell before "its" due time and three were.
    #[test]
    fn ticks_run_a_little_less_late_than_the_first_are_no_miss() {
        let mut run = recorded().remove(1);
        run.total = Duration::from_micros(1_011_731);
        run.ticks = [
            1_675, 101_402, 202_156, 301_902, 401_666, 501_410, 601_736, 701_055, 801_402, 901_719,
            1_001_057,
        ]
        .into_iter()
        .map(Duration::from_micros)
        .collect();
        assert_eq!(run.measures().ticks_missed, 0);
    }

    /// A key pressed during a freeze keeps its ▲ where it was handled when a later key's
    /// longer wait runs over it; a key handled in time has none, even when its handling
    /// fell into the next column.
    #[test]
    fn each_late_key_shows_where_it_was_handled() {
        let mut run = recorded().remove(0);
        run.keys = vec![
            Key {
                pressed: ms(200),
                handled: Some(ms(600)),
            },
            Key {
                pressed: ms(300),
                handled: Some(ms(1110)),
            },
            // Columns of 1300/64 ms: pressed in column 59, handled in 60.
            Key {
                pressed: ms(1207),
                handled: Some(ms(1210)),
            },
        ];
        let text = render_text(&[run], 65);
        let keys = text
            .lines()
            .find(|l| l.trim_start().starts_with("keys"))
            .unwrap();
        // Where each late key was handled (columns of 1300/64 ms after the row's name),
        // and nowhere else.
        let marks: Vec<usize> = keys
            .chars()
            .enumerate()
            .filter(|&(_, c)| c == '▲')
            .map(|(i, _)| i - "  keys      ".len())
            .collect();
        assert_eq!(marks, [30, 55], "{text}");
        // Three presses, and the row's name.
        assert_eq!(keys.matches('k').count(), 3 + 1, "{text}");
        assert!(keys.trim_end().ends_with('k'), "{text}");
    }

    #[test]
    fn sync_measures_show_the_freeze() {
        let runs = recorded();
        let sync = runs[0].measures();
        assert_eq!(sync.longest_freeze, ms(1000));
        assert_eq!(sync.keys_late, 2);
        assert_eq!(sync.worst_key_delay, ms(710));
        assert_eq!(sync.ticks_missed, 9);
        let asynchronous = runs[1].measures();
        assert!(asynchronous.longest_freeze <= ms(20), "{asynchronous:?}");
        assert_eq!(asynchronous.keys_late, 0);
        assert_eq!(asynchronous.ticks_missed, 0);
        assert_eq!(asynchronous.frames_expected, 58);
        // Frames while the lookup was pending only: none for the frozen sync run.
        assert_eq!((sync.frames_drawn, asynchronous.frames_drawn), (0, 58));
    }

    /// Frames drawn never pass those due: the sync loop draws the bar just before each
    /// block, and the screen draws on keys and answers too.
    #[test]
    fn frames_drawn_never_pass_those_due() {
        let run = |frames: Vec<Duration>, lookups: Vec<Span>| Run {
            label: "sync".into(),
            threads: 1,
            total: ms(1000),
            frame_interval: ms(17),
            tick_interval: ms(100),
            frames,
            keys: Vec::new(),
            ticks: Vec::new(),
            lookups,
        };
        // 30 lookups of 5 ms, 20 ms apart, each with the frame drawn just before it blocked.
        let spans: Vec<Span> = (0..30)
            .map(|i| Span {
                start: ms(200 + i * 20),
                end: ms(205 + i * 20),
            })
            .collect();
        let before_each_block = spans.iter().map(|s| s.start + ms(1)).collect();
        let short = run(before_each_block, spans).measures();
        assert_eq!(short.frames_expected, 8);
        assert_eq!(short.frames_drawn, 8, "{short:?}");

        // A frame every 8 ms over one 1 s lookup: 125 frames, 58 slots due, all drawn.
        let busy = (0..=125).map(|i| ms(i * 8)).collect();
        let span = Span {
            start: ms(0),
            end: ms(1000),
        };
        let twice_as_often = run(busy, vec![span]).measures();
        assert_eq!(twice_as_often.frames_expected, 58);
        assert_eq!(twice_as_often.frames_drawn, 58, "{twice_as_often:?}");

        // One frame at the start of the second half only.
        let one = run(vec![ms(501)], vec![span]).measures();
        assert_eq!(one.frames_drawn, 1);
    }

    /// A loop that draws a little early or late loses no frame: 60 fps with gaps of
    /// 15.4–17.6 ms is 60 of 60, and six frames in a 100.9 ms lookup 6 of 6 (counting by
    /// fixed 1/60 s slots read 57 and 5). A frozen loop's one frame, drawn as the lookup
    /// began, is all it gets.
    #[test]
    fn frames_drawn_forgive_jitter_and_count_a_freeze() {
        let us = Duration::from_micros;
        let run = |frames: Vec<Duration>, start: u64, end: u64| {
            Run {
                label: "async".into(),
                threads: 1,
                total: us(end + 100_000),
                frame_interval: us(16_667),
                tick_interval: ms(100),
                frames,
                keys: Vec::new(),
                ticks: Vec::new(),
                lookups: vec![Span {
                    start: us(start),
                    end: us(end),
                }],
            }
            .measures()
        };
        let mut jittery = vec![us(300)];
        for i in 0.. {
            let gap = if i % 2 == 0 { 17_600 } else { 15_400 };
            let next = *jittery.last().unwrap() + us(gap);
            if next > us(1_000_800) {
                break;
            }
            jittery.push(next);
        }
        let second = run(jittery, 0, 1_000_800);
        assert_eq!((second.frames_drawn, second.frames_expected), (60, 60));

        let seen = [401_000, 418_500, 434_000, 451_400, 467_900, 484_400];
        let tenth = run(seen.iter().map(|&t| us(t)).collect(), 400_700, 501_600);
        assert_eq!((tenth.frames_drawn, tenth.frames_expected), (6, 6));

        let frozen = run(vec![us(401_160), us(502_000)], 400_700, 501_600);
        assert_eq!((frozen.frames_drawn, frozen.frames_expected), (1, 6));
        // Whatever the fraction of a frame the lookup's length leaves over.
        for end in [1_000_500, 1_003_500, 1_010_000, 1_013_000] {
            let frozen = run(vec![us(500)], 0, end);
            assert_eq!(
                (frozen.frames_drawn, frozen.frames_expected),
                (1, 60),
                "{end}"
            );
        }
    }

    /// Three sync lookups back to back: the screen moves between them, a key pressed
    /// during the first waits for all three. The freeze is the longest gap, not that wait.
    #[test]
    fn back_to_back_freezes_are_each_a_freeze_and_the_key_waits_through_all() {
        let span = |start, end| Span {
            start: ms(start),
            end: ms(end),
        };
        let run = Run {
            label: "sync".into(),
            threads: 2,
            total: ms(3300),
            frame_interval: ms(17),
            tick_interval: ms(100),
            frames: vec![ms(100), ms(1100), ms(2100), ms(3100), ms(3117)],
            keys: vec![Key {
                pressed: ms(150),
                handled: Some(ms(3101)),
            }],
            ticks: vec![ms(0), ms(3200)],
            lookups: vec![span(100, 1100), span(1100, 2100), span(2100, 3100)],
        };
        let m = run.measures();
        assert_eq!(m.longest_freeze, ms(1000));
        assert_eq!(m.worst_key_delay, ms(2951));
    }

    #[test]
    fn overlapping_lookups_count_their_pending_time_once() {
        let spans = [
            Span {
                start: ms(0),
                end: ms(100),
            },
            Span {
                start: ms(50),
                end: ms(150),
            },
        ];
        assert_eq!(
            merged(&spans),
            vec![Span {
                start: ms(0),
                end: ms(150)
            }]
        );
    }

    #[test]
    fn terminal_timeline_snapshot() {
        let runs = recorded();
        insta::assert_snapshot!(format!("{}\n{}", table(&runs), render_text(&runs, 60)));
    }

    #[test]
    fn svg_is_well_formed_with_one_group_per_track() {
        let runs = recorded();
        let svg = render_svg(&[runs]);
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let tracks = doc
            .descendants()
            .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("track"))
            .count();
        // frames, keys, ticker and one lookup, for each of the two runs.
        assert_eq!(tracks, 2 * 4);
        assert!(svg.contains("9 ticks missed</text>"), "{svg}");
    }

    /// Each scenario gets its own time axis, as in the text: a one-second scenario beside a
    /// ten-times longer one is not squeezed into a tenth of the width. Marks that fall on one
    /// pixel are drawn once.
    #[test]
    fn each_scenario_of_the_svg_has_its_own_axis() {
        let short = recorded();
        let mut long = recorded();
        for run in &mut long {
            run.total *= 10;
            run.frames.iter_mut().for_each(|f| *f *= 10);
        }
        let svg = render_svg(&[short, long.clone()]);
        roxmltree::Document::parse(&svg).expect("well-formed XML");
        // 1300 ms in steps of 200 ms; 13000 ms in steps of 2000 ms.
        assert!(svg.contains(">1200 ms</text>"), "{svg}");
        assert!(svg.contains(">12000 ms</text>"), "{svg}");
        assert_eq!(svg.matches(">0 ms</text>").count(), 2, "{svg}");

        // A thousand keys and frames inside a millisecond: one mark each.
        long[0].keys = vec![long[0].keys[0]; 1000];
        long[0].frames = vec![ms(5); 1000];
        let svg = render_svg(&[vec![long[0].clone()]]);
        assert_eq!(svg.matches("<circle").count(), 2 + long[0].ticks.len());
        assert_eq!(svg.matches(r##"stroke="#2b7bb9""##).count(), 1);
    }

    #[test]
    fn html_is_self_contained() {
        let html = render_html(
            &[recorded()],
            "userfetch demo <1 s>",
            "2 lookups of 1s each, first submit to last answer:\n  sync > 2000 ms\n",
        );
        for external in ["src=", "href=", "http://", "https://", "@import", "url("] {
            assert!(!html.contains(external), "found {external}");
        }
        assert!(html.contains("&lt;1 s&gt;"));
        // What the text says below its table, the page says too.
        assert!(
            html.contains(
                "<pre>2 lookups of 1s each, first submit to last answer:\n  sync &gt; 2000 ms</pre>"
            ),
            "{html}"
        );
        assert!(html.contains("<svg") && html.contains("legend"));
    }

    /// At most ten labels on the axis, for a run of milliseconds or of hours.
    #[test]
    fn the_axis_has_at_most_ten_labels() {
        for ms in [1, 90, 1_000, 2_345, 60_000, 600_001, 10_000_000, 86_400_000] {
            let span = Duration::from_millis(ms);
            let step = axis_step(span);
            let labels = span.as_millis() / step.as_millis() + 1;
            assert!(labels <= 10, "{ms} ms: step {step:?}, {labels} labels");
            assert!(step >= Duration::from_millis(10), "{ms} ms: {step:?}");
        }
        assert_eq!(
            axis_step(Duration::from_millis(1_000)),
            Duration::from_millis(200)
        );
        assert_eq!(
            axis_step(Duration::from_secs(3_600)),
            Duration::from_secs(500)
        );
    }
}
