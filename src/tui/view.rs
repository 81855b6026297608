//! Drawing the state. Nothing here changes anything or reads a clock: time is `app.now`.
//!
//! All text that came from outside (records, error messages, ids) was sanitized when it
//! entered the state; this module only lays it out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratatui::Frame;
use ratatui::buffer::CellWidth;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use super::app::{App, GAP_WINDOW, Mode, Row, Status};
use crate::engine::Source;
use crate::term::{fit, sanitize};

/// Below this width the detail pane goes under the list instead of beside it.
const WIDE: u16 = 90;
/// Rows the two panes keep on a small terminal, side by side or stacked: within their
/// borders, a few rows of content in each.
const BODY_LEAST: [u16; 2] = [6, 8];
/// Rows the panes get before the header lines' wrapped rest do: a record's first fields are
/// worth more than the end of a status line.
const BODY_FIRST: [u16; 2] = [8, 12];
/// The id column of the lookup rows, in terminal columns.
const ID_COLUMNS: usize = 8;
/// Most rows one of the three header lines may take on a narrow terminal.
const INFO_ROWS: u16 = 3;

/// Rows the notice may wrap onto.
const NOTICE_ROWS: u16 = 3;
/// Width of a loading bar, and of the block that sweeps across it.
const BAR: usize = 12;
const BLOCK: usize = 3;
/// One step of the sweep: fast enough to look alive, slow enough to follow.
const STEP_MS: u128 = 70;

pub const PROMPT: &str = "Enter user id: ";

struct Palette {
    on: bool,
}

impl Palette {
    fn fg(&self, color: Color) -> Style {
        if self.on {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    fn bold(&self) -> Style {
        if self.on {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        }
    }

    fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
}

pub fn view(app: &App, frame: &mut Frame) {
    let p = Palette {
        on: app.config.color,
    };
    // A header line too long for the terminal wraps onto the rows it needs rather than lose
    // its end (the status line is ~110 columns once lookups have latencies).
    let wrap = Wrap { trim: true };
    let width = frame.area().width;
    let lines = [
        header_line(app, &p),
        Line::from(status_line(app)),
        meter_line(app, &p),
    ];
    let rows_for = |line: Line<'_>| {
        u16::try_from(Paragraph::new(line).wrap(wrap).line_count(width))
            .unwrap_or(INFO_ROWS)
            .clamp(1, INFO_ROWS)
    };
    let wanted = lines.clone().map(rows_for);
    // The status line is given the rows it needs once latencies show ("p50 –" becomes
    // "p50 707 ms"), from the start: the first answer moved the whole screen down a row.
    // Last, after every line's own rows: a row kept blank must not cost one with text.
    let four_digits = Duration::from_millis(9999);
    let status_reserve = rows_for(Line::from(status_line_with(
        app,
        Some((four_digits, four_digits)),
    )))
    .saturating_sub(wanted[1]);
    // Rows are handed out by what matters most, so a small terminal keeps the prompt, the
    // first row of a notice showing (why a line was not looked up), some rows of each
    // pane, the first header line, the key help, the rest of a wrapped notice, one row
    // of each other header line, the notice row when empty, the header lines' wrapped rest
    // (the status line's figures: errors, p50/p95, cache hits), and a few more rows for the
    // panes; the panes take what is left.
    let stacked = usize::from(width < WIDE);
    let mut spare = frame.area().height;
    let mut take = |want: u16| {
        let got = want.min(spare);
        spare -= got;
        got
    };
    // A long notice (a path in it, say) wraps onto up to NOTICE_ROWS rows: cut at the edge,
    // it lost the part that said what was wrong.
    let notice_text = app.notice.as_deref().map(|text| {
        Paragraph::new(Span::styled(text, p.fg(Color::Yellow))).wrap(Wrap { trim: false })
    });
    let notice_wanted = notice_text.as_ref().map_or(1, |text| {
        u16::try_from(text.line_count(width))
            .unwrap_or(NOTICE_ROWS)
            .clamp(1, NOTICE_ROWS)
    });
    let prompt_rows = take(3);
    // A notice showing gets its first row before the panes and the header lines (it answers
    // what was just typed: below 11 rows the panes took them all, and an id refused at the
    // prompt vanished without a word), and the rows it wraps onto after the first header line
    // and the key help but before the other two; an empty one keeps its row only where there
    // is room, so the layout does not jump when one comes. The panes' extra rows come after
    // the status line's wrapped figures: at 100 × 16 they hid the figures.
    let mut notice_rows = if notice_text.is_some() { take(1) } else { 0 };
    let mut body_least = take(BODY_LEAST[stacked]);
    let header_first = take(1);
    let footer_rows = take(1);
    if notice_rows > 0 {
        notice_rows += take(notice_wanted - 1);
    }
    let mut got = [header_first, take(1), take(1)];
    if notice_text.is_none() {
        notice_rows = take(1);
    }
    for (got, wanted) in got.iter_mut().zip(wanted) {
        if *got > 0 {
            *got += take(wanted - 1);
        }
    }
    body_least += take(BODY_FIRST[stacked] - BODY_LEAST[stacked]);
    if got[1] > 0 {
        got[1] += take(status_reserve);
    }
    // Wrapped even when given fewer rows than it wraps onto: its rows end between figures,
    // so the figures that show are whole, where a line cut at the edge cut one in two.
    let [header_text, status_text, meter_text] = lines.map(|line| Paragraph::new(line).wrap(wrap));
    let [header_rows, status_rows, meter_rows] = got;
    let [header, status, meter, prompt, notice, body, footer] = Layout::vertical([
        Constraint::Length(header_rows),
        Constraint::Length(status_rows),
        Constraint::Length(meter_rows),
        Constraint::Length(prompt_rows),
        Constraint::Length(notice_rows),
        Constraint::Min(body_least),
        Constraint::Length(footer_rows),
    ])
    .areas(frame.area());

    frame.render_widget(header_text, header);
    frame.render_widget(status_text, status);
    frame.render_widget(meter_text, meter);
    draw_prompt(app, frame, prompt, &p);
    if let Some(text) = notice_text {
        frame.render_widget(text, notice);
    }
    let [list, detail] = if stacked == 0 {
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body)
    } else {
        // Halves: a record has as many fields to show as a busy list has rows.
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(body)
    };
    draw_rows(app, frame, list, &p);
    draw_detail(app, frame, detail);
    frame.render_widget(
        Paragraph::new(key_help(footer.width, !app.input.is_empty())).style(p.fg(Color::DarkGray)),
        footer,
    );
}

/// The keys, most needed first, as many whole ones as fit in `width` columns. `typing`: the
/// prompt holds text, where q is a letter of an id: the first key is then how to clear it
/// (a user who read "q quit" typed q after an id, and the screen stayed).
fn key_help(width: u16, typing: bool) -> String {
    // Short enough for all but the history to fit in 80 columns: Tab is the only way to
    // choose the row whose record shows.
    const KEYS: [&str; 7] = [
        "q quit",
        "Enter fetch",
        "Tab select",
        "PgUp/Dn scroll",
        "Esc cancel",
        "F2 sync/async",
        "↑↓ history",
    ];
    let mut help = String::new();
    let first = if typing { "Ctrl-U clear" } else { KEYS[0] };
    for key in std::iter::once(first).chain(KEYS.into_iter().skip(1)) {
        let wanted = if help.is_empty() {
            key.to_owned()
        } else {
            format!("{help} · {key}")
        };
        if UnicodeWidthStr::width(wanted.as_str()) > usize::from(width) {
            break;
        }
        help = wanted;
    }
    help
}

fn header_line<'a>(app: &'a App, p: &Palette) -> Line<'a> {
    let mode = match app.mode {
        Mode::Async => Span::styled(" ASYNC ", p.fg(Color::Green).patch(p.bold())),
        Mode::Sync => Span::styled(" SYNC (blocking) ", p.fg(Color::Red).patch(p.bold())),
    };
    let threads = match app.config.threads {
        1 => "1 thread".to_owned(),
        n => format!("{n} threads"),
    };
    let clock = app.clock.map_or_else(|| "--:--:--".to_owned(), wall_clock);
    let uptime = app.now.saturating_duration_since(app.started);
    Line::from(vec![
        Span::styled("userfetch", p.bold()),
        mode,
        Span::raw(figures(&[
            threads,
            format!("{clock} UTC"),
            format!("up {}", hms(uptime)),
            format!("clock ticks {}", app.ticks),
        ])),
    ])
}

fn status_line(app: &App) -> String {
    status_line_with(app, app.stats.percentiles)
}

fn status_line_with(app: &App, percentiles: Option<(Duration, Duration)>) -> String {
    let health = match &app.health {
        None => "API health: checking…".to_owned(),
        Some(h) => {
            let ago = app.now.saturating_duration_since(h.at).as_secs();
            match &h.result {
                Ok(latency) => whole(&format!("API up {} ({ago} s ago)", millis(*latency))),
                Err(e) => format!("API DOWN: {e} {}", whole(&format!("({ago} s ago)"))),
            }
        }
    };
    let s = &app.stats;
    let percentiles = match percentiles {
        Some((p50, p95)) => format!(
            "{} {}",
            whole(&format!("p50 {}", millis(p50))),
            whole(&format!("p95 {}", millis(p95)))
        ),
        None => whole("p50 –") + " " + &whole("p95 –"),
    };
    let mut parts = vec![format!("in flight {}", s.in_flight - s.queued)];
    if s.queued > 0 {
        parts.push(format!("queued {}", s.queued));
    }
    parts.extend([
        format!("found {}", s.found),
        format!("not found {}", s.not_found),
        format!("errors {}", s.errors),
    ]);
    // The health's error text wraps where it likes: it can be longer than a row.
    format!(
        "{health}{SEPARATOR}{}{SEPARATOR}{percentiles}{SEPARATOR}{}",
        figures(&parts),
        whole(&format!("cache hits {}", s.cache_hits)),
    )
}

/// Between two figures of a header line: the dot sticks to the figure before it, so a
/// wrapped line never starts with one.
const SEPARATOR: &str = "\u{a0}· ";

/// A label and its value joined by no-break spaces, so that a header line wrapped on a
/// narrow terminal breaks between figures, never inside one ("p50 0" / "ms").
fn whole(text: &str) -> String {
    text.replace(' ', "\u{a0}")
}

/// Figures kept [`whole`], joined by [`SEPARATOR`].
fn figures(parts: &[String]) -> String {
    parts
        .iter()
        .map(|part| whole(part))
        .collect::<Vec<_>>()
        .join(SEPARATOR)
}

fn meter_line<'a>(app: &'a App, p: &Palette) -> Line<'a> {
    let gap = app
        .meter
        .longest_gap(app.now)
        .map_or_else(|| "–".to_owned(), millis);
    let input = app
        .meter
        .last_input_to_draw
        .map_or_else(|| "–".to_owned(), millis);
    let mut spans = vec![Span::raw(figures(&[
        format!("fps {}", app.meter.fps(app.now)),
        format!("longest frame gap {gap} (last {} s)", GAP_WINDOW.as_secs()),
        format!("key→screen {input}"),
    ]))];
    if let Some(froze) = app.meter.last_freeze {
        spans.push(Span::styled(
            format!(
                "{SEPARATOR}{}",
                whole(&format!(
                    "last sync lookup froze the UI for {}",
                    seconds(froze)
                ))
            ),
            p.fg(Color::Red),
        ));
    }
    Line::from(spans)
}

fn draw_prompt(app: &App, frame: &mut Frame, area: Rect, p: &Palette) {
    // The longest wording that fits the box, so that the F2 hint stays on a narrow terminal
    // (at 40 columns the long one lost it, cut by the border without a mark).
    let (wordings, style): (&[&str], _) = match (app.frozen_on.is_some(), app.mode) {
        (true, _) => (
            &[
                " SYNC: UI frozen until the lookup returns (keys wait, Ctrl-C quits) ",
                " SYNC: UI frozen (Ctrl-C quits) ",
                " SYNC: frozen ",
            ],
            p.fg(Color::Red).patch(p.bold()),
        ),
        (false, Mode::Sync) => (
            &[
                " sync mode: the next lookup will block the UI (F2: async) ",
                " sync: next lookup blocks (F2: async) ",
                " sync (F2: async) ",
            ],
            p.fg(Color::Red),
        ),
        (false, Mode::Async) => (
            &[
                " lookups run beside the UI (F2: sync) ",
                " async (F2: sync) ",
            ],
            Style::default(),
        ),
    };
    let room = usize::from(area.width.saturating_sub(2));
    let wording = wordings
        .iter()
        .find(|w| UnicodeWidthStr::width(**w) <= room)
        .map_or_else(
            || fit(wordings[wordings.len() - 1], room),
            |w| (*w).to_owned(),
        );
    let title = Span::styled(wording, style);
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    // Keep the cursor in view when the line is longer than the box: drop grapheme clusters
    // from the front until what precedes the cursor fits. Counted in terminal columns as
    // ratatui draws them (its `cell_width`), a cluster at a time (a CJK character takes two, and so does an
    // emoji with a skin tone, which is two characters). Typed text is the user's own, but a
    // pasted bidi override would still reorder the line: an unsafe character is drawn as
    // the replacement mark, and measured as one.
    let room = (inner.width as usize).saturating_sub(PROMPT.len() + 1);
    let before = sanitize(&app.input[..app.cursor]);
    let (mut start, mut used) = (before.len(), 0);
    for (at, cluster) in before.grapheme_indices(true).rev() {
        let width = usize::from(cluster.cell_width());
        if used + width > room {
            break;
        }
        used += width;
        start = at;
    }
    let shown = format!("{}{}", &before[start..], sanitize(&app.input[app.cursor..]));
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(PROMPT, p.bold()),
            Span::raw(shown),
        ]))
        .block(block),
        area,
    );
    let x = inner.x as usize + PROMPT.len() + used;
    if x < (inner.x + inner.width) as usize {
        frame.set_cursor_position(Position::new(x as u16, inner.y));
    }
}

fn draw_rows(app: &App, frame: &mut Frame, area: Rect, p: &Palette) {
    // Cut with a mark rather than by the border: a URL cut short silently shows a wrong port.
    let room = usize::from(area.width.saturating_sub(2))
        .saturating_sub(UnicodeWidthStr::width(" lookups →  "));
    let title = format!(" lookups → {} ", fit(&sanitize(&app.config.api), room));
    let mut block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    let height = inner.height as usize;
    if height == 0 || app.rows.is_empty() {
        frame.render_widget(block, area);
        return;
    }
    // Only the visible window is built: ten thousand rows must cost the same as ten.
    let selected = app.selected.unwrap_or(app.rows.len() - 1);
    let kept = app.rows_first.get();
    let first = if selected < kept {
        selected
    } else {
        kept.max((selected + 1).saturating_sub(height))
    }
    // No empty rows below while rows above are hidden (after the terminal grew).
    .min(app.rows.len().saturating_sub(height));
    app.rows_first.set(first);
    // Rows out of view are said, as the details pane says its own: nine lookups in six rows
    // showed no sign of the other three.
    if app.rows.len() > height {
        let last = (first + height).min(app.rows.len());
        let shown = if first + 1 == last {
            format!(" {last} of {}, Tab/Shift-Tab ", app.rows.len())
        } else {
            format!(
                " {}–{last} of {}, Tab/Shift-Tab ",
                first + 1,
                app.rows.len()
            )
        };
        let room = usize::from(area.width.saturating_sub(2));
        block = block.title_bottom(Line::from(fit(&shown, room)).right_aligned());
    }
    frame.render_widget(block, area);
    let lines: Vec<Line> = app.rows[first..]
        .iter()
        .take(height)
        .enumerate()
        .map(|(i, row)| {
            ellipsized(
                row_line(app, row, first + i == selected, p, usize::from(inner.width)),
                usize::from(inner.width),
            )
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

/// `line` cut to `width` columns with `…` as its last, when it is wider: cut at the pane's
/// edge without a mark, a message read as whole ("server answered 500 Internal Server Erro").
fn ellipsized(line: Line<'_>, width: usize) -> Line<'_> {
    if line.width() <= width || width == 0 {
        return line;
    }
    let mut room = width;
    let mut spans = Vec::with_capacity(line.spans.len());
    for span in line.spans {
        let columns = span.width();
        if columns < room {
            room -= columns;
            spans.push(span);
            continue;
        }
        // Cut with the mark also when this part fits exactly: the parts after it are lost.
        spans.push(Span::styled(
            crate::term::cut(&span.content, room),
            span.style,
        ));
        break;
    }
    Line { spans, ..line }
}

/// The fewest columns a name is cut to so that its row's latency shows; below that, the row
/// is cut at its end as any other.
const NAME_LEAST: usize = 8;

fn row_line<'a>(app: &App, row: &'a Row, selected: bool, p: &Palette, width: usize) -> Line<'a> {
    let marker = if selected { "›" } else { " " };
    let mut spans = vec![
        Span::raw(format!("{marker} ")),
        Span::styled(
            format!("{} ", pad(&fit(&row.id, ID_COLUMNS), ID_COLUMNS)),
            p.bold(),
        ),
    ];
    let waited = app.now.saturating_duration_since(row.started);
    match &row.status {
        Status::Queued => spans.push(Span::styled("queued", p.fg(Color::DarkGray))),
        Status::Pending { retry: Some(r) } if r.until > app.now => {
            spans.push(Span::styled(bar(waited), p.fg(Color::Yellow)));
            spans.push(Span::styled(
                format!(
                    " retrying in {} (attempt {}/{}): {}",
                    seconds(r.until - app.now),
                    r.next_attempt,
                    r.max_attempts,
                    r.reason
                ),
                p.fg(Color::Yellow),
            ));
        }
        Status::Pending { retry } => {
            // The limit is per attempt, so the clock beside it restarts with each retry.
            let in_attempt = match retry {
                Some(r) => app.now.saturating_duration_since(r.until),
                None => waited,
            };
            spans.push(Span::styled(bar(waited), p.fg(Color::Cyan)));
            spans.push(Span::raw(format!(
                " {} / {}",
                seconds(in_attempt),
                seconds(app.config.timeout)
            )));
            if let Some(r) = retry {
                spans.push(Span::raw(format!(
                    " (attempt {}/{})",
                    r.next_attempt, r.max_attempts
                )));
            }
            if row.mode == Mode::Sync {
                spans.push(Span::styled(" sync", p.fg(Color::Red)));
            }
        }
        Status::Found {
            summary,
            source,
            latency,
            attempts,
            ..
        } => {
            spans.push(Span::styled("✓ ", p.fg(Color::Green)));
            let mut tail = format!(" · {}", millis(*latency));
            if *source == Source::Cache {
                tail.push_str(" · cached");
            }
            if *attempts > 1 {
                tail.push_str(&format!(" · {attempts} attempts"));
            }
            // A long name is cut rather than the latency after it, which was lost at the
            // pane's edge.
            let used: usize = spans.iter().map(Span::width).sum();
            let room = width.saturating_sub(used + tail.width());
            let name = if summary.width() > room && room >= NAME_LEAST {
                Span::raw(crate::term::cut(summary, room))
            } else {
                Span::raw(summary.as_str())
            };
            spans.push(name);
            spans.push(Span::styled(tail, p.fg(Color::DarkGray)));
        }
        Status::NotFound { latency } => {
            spans.push(Span::styled("✗ not found", p.fg(Color::Magenta)));
            spans.push(Span::styled(
                format!(" · {}", millis(*latency)),
                p.fg(Color::DarkGray),
            ));
        }
        // The message says what happened in words; the kind (`rate_limited`) is for scripts.
        Status::Failed { message, .. } => {
            spans.push(Span::styled(format!("! {message}"), p.fg(Color::Red)));
        }
        Status::Cancelled { after } => {
            spans.push(Span::styled(
                match after {
                    Some(after) => format!("– cancelled after {}", seconds(*after)),
                    None => "– cancelled before it started".to_owned(),
                },
                p.fg(Color::DarkGray),
            ));
        }
    }
    let line = Line::from(spans);
    if selected {
        line.style(p.selected())
    } else {
        line
    }
}

fn draw_detail(app: &App, frame: &mut Frame, area: Rect) {
    let row = app.selected_row();
    let mut title = match row {
        Some(r) => format!(" user {} ", fit(&r.id, 20)),
        None => " details ".to_owned(),
    };
    let lines: Vec<Line> = match row.map(|r| &r.status) {
        None => vec![Line::raw(match app.config.demo_users {
            Some(n) => format!("Type an id (1–{n} exist in the demo API) and press Enter."),
            None => "Type an id and press Enter.".to_owned(),
        })],
        Some(Status::Found { detail, .. }) => {
            let width = usize::from(area.width.saturating_sub(2)).max(1);
            detail
                .iter()
                .flat_map(|l| hanging(&l.text, l.value_column, width))
                .map(Line::raw)
                .collect()
        }
        Some(Status::Queued) => vec![Line::raw(match row.map(|r| r.mode) {
            Some(Mode::Sync) => {
                "queued: it freezes the screen in turn, after the ids pasted before it"
            }
            _ => "queued: it starts as soon as the lookups in flight leave room for it",
        })],
        Some(Status::Pending { retry: None }) => vec![Line::raw("waiting for the API…")],
        // Whole here: the row has room for only the start of the reason.
        Some(Status::Pending { retry: Some(r) }) => vec![
            Line::raw(if r.until > app.now {
                format!(
                    "attempt {} of {} starts in {}",
                    r.next_attempt,
                    r.max_attempts,
                    seconds(r.until - app.now)
                )
            } else {
                format!(
                    "waiting for the API: attempt {} of {}",
                    r.next_attempt, r.max_attempts
                )
            }),
            Line::raw(format!(
                "attempt {} failed: {}",
                r.next_attempt.saturating_sub(1),
                r.reason
            )),
        ],
        Some(Status::NotFound { .. }) => vec![Line::raw("The API has no user with this id.")],
        Some(Status::Failed { message, .. }) => vec![Line::raw(message.as_str())],
        Some(Status::Cancelled { .. }) => vec![Line::raw("Cancelled; any late answer is dropped.")],
    };
    let text = Paragraph::new(lines).wrap(Wrap { trim: false });
    // Counted as drawn (long values wrap), so the scroll stops at the record's end and the
    // title says which rows show.
    let room = usize::from(area.height.saturating_sub(2));
    let total = text.line_count(area.width.saturating_sub(2));
    app.detail_scroll_max.set(total.saturating_sub(room));
    app.detail_rows.set(room);
    let first = app.detail_scroll.min(total.saturating_sub(room));
    if total > room && room > 0 {
        title.push_str(&format!(
            "rows {}–{} of {}, PgUp/PgDn ",
            first + 1,
            first + room,
            total
        ));
    }
    let block = Block::default().borders(Borders::ALL).title(title);
    let scroll = u16::try_from(first).unwrap_or(u16::MAX);
    frame.render_widget(text.block(block).scroll((scroll, 0)), area);
}

/// A field's line cut to `width` columns, what does not fit continuing under the start of
/// its value: wrapped from column 0, the rest of a value read as a field of its own, and two
/// columns in, as one of a nested object's fields. A value that starts past the middle
/// continues four columns in from its key instead.
fn hanging(line: &str, value_column: usize, width: usize) -> Vec<std::borrow::Cow<'_, str>> {
    let text = line.trim_start();
    let indent = &line[..line.len() - text.len()];
    let column = Some(value_column)
        .filter(|&column| column > indent.len() && column <= width / 2)
        .unwrap_or(indent.len() + 4);
    // Too narrow for that: cut at the edge as it comes.
    if column >= width {
        return vec![line.into()];
    }
    let deeper = " ".repeat(column);
    let options = textwrap::Options::new(width)
        .initial_indent(indent)
        .subsequent_indent(&deeper);
    textwrap::wrap(text, options)
}

/// An indeterminate bar: a block sweeping back and forth, its position taken from the time
/// waited so every frame of the same moment looks the same.
fn bar(waited: Duration) -> String {
    let span = BAR - BLOCK;
    let step = (waited.as_millis() / STEP_MS) as usize % (2 * span);
    let at = if step <= span { step } else { 2 * span - step };
    let mut s = String::with_capacity(BAR * 3 + 2);
    s.push('[');
    for i in 0..BAR {
        s.push(if (at..at + BLOCK).contains(&i) {
            '█'
        } else {
            '░'
        });
    }
    s.push(']');
    s
}

/// `text` padded with spaces to `columns` terminal columns.
fn pad(text: &str, columns: usize) -> String {
    let missing = columns.saturating_sub(UnicodeWidthStr::width(text));
    format!("{text}{}", " ".repeat(missing))
}

/// A latency or a freeze: milliseconds up to four digits, then seconds, so a figure never
/// outgrows the width the status line keeps for it ("9999 ms"; "12.3 s", "250 s").
fn millis(d: Duration) -> String {
    let ms = d.as_millis();
    let tenths = (ms + 50) / 100;
    if ms < 10_000 {
        format!("{ms} ms")
    } else if tenths < 1000 {
        format!("{}.{} s", tenths / 10, tenths % 10)
    } else {
        format!("{} s", (ms + 500) / 1000)
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn wall_clock(t: SystemTime) -> String {
    let s = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_sweeps_back_and_forth() {
        let at = |ms| bar(Duration::from_millis(ms));
        assert_eq!(at(0), "[███░░░░░░░░░]");
        assert_eq!(at(70), "[░███░░░░░░░░]");
        assert_eq!(at(70 * 9), "[░░░░░░░░░███]");
        assert_eq!(at(70 * 10), "[░░░░░░░░███░]");
        assert_eq!(at(70 * 18), at(0));
    }

    #[test]
    fn times_read_as_people_say_them() {
        assert_eq!(hms(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(seconds(Duration::from_millis(2100)), "2.1 s");
        assert_eq!(
            wall_clock(UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3661)),
            "01:01:01"
        );
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abcd", 4), "abcd");
        // Counted in columns: each of these takes two.
        assert_eq!(fit("漢字漢字漢", 8), "漢字漢…");
        assert_eq!(pad("漢字", 6), "漢字  ");
    }

    mod screens {
        use std::time::{Duration, Instant, UNIX_EPOCH};

        use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
        use ratatui::Terminal;
        use ratatui::backend::TestBackend;

        use super::super::view;
        use crate::client::{ErrorKind, FetchError, RetryNotice};
        use crate::engine::{Found, Source};
        use crate::record::Record;
        use crate::tui::app::{App, Config, Msg, ReqId, update};

        /// A screen as text, one line per row, trailing spaces trimmed.
        fn render(app: &App, width: u16, height: u16) -> String {
            let mut app = app.clone();
            app.prepare_frame();
            let app = &app;
            let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
            terminal.draw(|f| view(app, f)).unwrap();
            let buffer = terminal.backend().buffer();
            let mut out = String::new();
            for y in 0..height {
                let mut line = String::new();
                for x in 0..width {
                    line.push_str(buffer[(x, y)].symbol());
                }
                // As a terminal shows it: a no-break space is a space.
                let line = line.replace('\u{a0}', " ");
                out.push_str(line.trim_end());
                out.push('\n');
            }
            out
        }

        /// On a narrow terminal the prompt's title takes a shorter wording that keeps the F2
        /// hint, rather than being cut by the border.
        #[test]
        fn the_prompt_title_keeps_its_f2_hint_when_narrow() {
            let mut app = app();
            for (width, said) in [
                (80, " lookups run beside the UI (F2: sync) "),
                (30, " async (F2: sync) "),
            ] {
                let screen = render(&app, width, 24);
                assert!(screen.contains(said), "{width}:\n{screen}");
            }
            app.mode = crate::tui::app::Mode::Sync;
            let screen = render(&app, 40, 24);
            assert!(
                screen.contains(" sync: next lookup blocks (F2: async) "),
                "{screen}"
            );
            submit(&mut app, "5");
            app.frozen_on = Some(ReqId(0));
            let screen = render(&app, 40, 24);
            assert!(
                screen.contains(" SYNC: UI frozen (Ctrl-C quits) "),
                "{screen}"
            );
            let screen = render(&app, 14, 24);
            assert!(
                screen.contains("SYNC: froz…") || screen.contains(" SYNC: fro…"),
                "{screen}"
            );
        }

        /// More lookups than rows: the list's bottom edge says which show, and the keys
        /// that move through the rest; none when all fit.
        #[test]
        fn the_lookups_list_says_which_rows_show() {
            let mut app = app();
            for id in 1..=3 {
                submit(&mut app, &id.to_string());
            }
            assert!(!render(&app, 80, 24).contains(" of 3, "));
            for id in 4..=30 {
                submit(&mut app, &id.to_string());
            }
            let screen = render(&app, 80, 24);
            let edge = screen
                .lines()
                .find(|l| l.contains(" of 30, Tab/Shift-Tab "))
                .unwrap_or_else(|| panic!("{screen}"));
            // The newest is selected, so the last rows show.
            assert!(edge.contains("–30 of 30"), "{edge}");
            assert!(screen.lines().any(|l| l.contains(" 30 ")), "{screen}");
        }

        /// An app at a fixed moment: 12:34:56 on the clock, one minute up, API healthy.
        fn app() -> App {
            let t0 = Instant::now();
            let mut app = App::new(
                Config {
                    threads: 1,
                    timeout: Duration::from_secs(10),
                    api: "embedded demo API".into(),
                    demo_users: Some(10_000),
                    ..Config::default()
                },
                t0,
            );
            app.now = t0 + Duration::from_secs(60);
            update(
                &mut app,
                Msg::Clock(UNIX_EPOCH + Duration::from_secs(45_296)),
            );
            update(&mut app, Msg::Health(Ok(Duration::from_millis(3))));
            for _ in 0..3 {
                update(
                    &mut app,
                    Msg::Frame {
                        gap: Some(Duration::from_millis(17)),
                        input_to_draw: Some(Duration::from_millis(2)),
                    },
                );
            }
            app
        }

        /// Types `id` and presses Enter; the lookup starts at once, as the loop starts it
        /// when there is room.
        fn submit(app: &mut App, id: &str) {
            type_text(app, id);
            update(
                app,
                Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
            );
            let req = ReqId(app.rows.len() as u64 - 1);
            update(app, Msg::Started(req));
        }

        fn found(id: u64, source: Source) -> crate::engine::Outcome {
            let user = user_json(id, "Clementine Bauch").to_string();
            Ok(Found {
                record: Record::from_body(user.as_bytes()).unwrap(),
                source,
                attempts: 1,
                latency: Duration::from_millis(412),
            })
        }

        /// A record shaped like the demo API's (and JSONPlaceholder's), with a long value.
        fn user_json(id: u64, name: &str) -> serde_json::Value {
            serde_json::json!({
                "id": id,
                "name": name,
                "username": "Samantha",
                "email": "Nathan@yesenia.net",
                "address": {
                    "street": "Douglas Extension",
                    "suite": "Suite 847",
                    "city": "McKenziehaven",
                    "zipcode": "59590-4157",
                    "geo": { "lat": "-68.6102", "lng": "-47.0653" }
                },
                "phone": "1-463-123-4447",
                "website": "ramiro.info",
                "company": {
                    "name": "Romaguera-Jacobson",
                    "catchPhrase": "Face to face bifurcated interface, with a phrase long enough that it must wrap in the pane",
                    "bs": "e-enable strategic applications"
                },
                "tags": ["a", 1, true]
            })
        }

        fn advance(app: &mut App, ms: u64) {
            app.now += Duration::from_millis(ms);
        }

        #[test]
        fn idle() {
            insta::assert_snapshot!(render(&app(), 100, 20));
        }

        #[test]
        fn the_idle_hint_names_demo_users_only_for_the_demo_api() {
            let mut other = app();
            other.config.api = "https://api.example.com/users/{id}".into();
            other.config.demo_users = None;
            let screen = render(&other, 100, 20);
            assert!(screen.contains("Type an id and press Enter."), "{screen}");
            assert!(!screen.contains("demo API"), "{screen}");
        }

        #[test]
        fn several_loading_rows() {
            let mut app = app();
            submit(&mut app, "1");
            advance(&mut app, 350);
            submit(&mut app, "2");
            advance(&mut app, 700);
            submit(&mut app, "3");
            advance(&mut app, 140);
            update(
                &mut app,
                Msg::Retrying {
                    req: ReqId(1),
                    notice: RetryNotice {
                        failed_attempt: 1,
                        max_attempts: 4,
                        delay: Duration::from_millis(2100),
                        error: FetchError::new(
                            ErrorKind::ServerError,
                            1,
                            "server answered 503 Service Unavailable",
                        ),
                    },
                },
            );
            for _ in 0..4 {
                update(
                    &mut app,
                    Msg::Key(KeyEvent::new(KeyCode::Char('4'), KeyModifiers::NONE)),
                );
            }
            insta::assert_snapshot!(render(&app, 110, 20));
        }

        #[test]
        fn a_retry_in_progress_counts_its_own_time_against_the_limit() {
            let mut app = app();
            submit(&mut app, "1");
            advance(&mut app, 9000);
            update(
                &mut app,
                Msg::Retrying {
                    req: ReqId(0),
                    notice: RetryNotice {
                        failed_attempt: 1,
                        max_attempts: 4,
                        delay: Duration::from_millis(2000),
                        error: FetchError::new(ErrorKind::Timeout, 1, "no complete answer"),
                    },
                },
            );
            // The row has room for the start of the reason only; the pane says it whole.
            app.selected = Some(0);
            let screen = render(&app, 110, 20);
            assert!(
                screen.contains("attempt 2 of 4 starts in 2.0 s"),
                "{screen}"
            );
            assert!(
                screen.contains("attempt 1 failed: no complete answer"),
                "{screen}"
            );
            // The wait is over and the second attempt has run for 1.5 s, 12.5 s in all.
            advance(&mut app, 3500);
            let screen = render(&app, 110, 20);
            assert!(screen.contains(" 1.5 s / 10.0 s (attempt 2/4)"), "{screen}");
            assert!(
                screen.contains("waiting for the API: attempt 2 of 4"),
                "{screen}"
            );
        }

        #[test]
        fn found_with_details() {
            let mut app = app();
            submit(&mut app, "7");
            submit(&mut app, "8");
            advance(&mut app, 420);
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(0),
                    outcome: found(7, Source::Api),
                },
            );
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(1),
                    outcome: found(8, Source::Cache),
                },
            );
            app.prepare_frame();
            insta::assert_snapshot!(render(&app, 110, 26));
        }

        #[test]
        fn the_highlight_moves_through_a_long_list_and_the_rows_stay_put() {
            let mut app = app();
            for id in 101..=130 {
                submit(&mut app, &id.to_string());
            }
            // Drawn on the app itself, not a copy: the frame keeps where the list stands.
            let draw = |app: &mut App| {
                app.prepare_frame();
                let mut terminal = Terminal::new(TestBackend::new(110, 20)).unwrap();
                terminal.draw(|f| view(app, f)).unwrap();
                let screen = render(app, 110, 20);
                let marked = screen
                    .lines()
                    .find(|line| line.contains('›'))
                    .unwrap_or_default()
                    .to_owned();
                (screen, marked)
            };
            let press = |app: &mut App, code, modifiers| {
                update(app, Msg::Key(KeyEvent::new(code, modifiers)));
                draw(app)
            };
            let (screen, marked) = draw(&mut app);
            assert!(marked.contains(" 130 "), "{screen}");
            let (screen, marked) = press(&mut app, KeyCode::BackTab, KeyModifiers::NONE);
            assert!(marked.contains(" 129 "), "{screen}");
            let (screen, marked) = press(&mut app, KeyCode::BackTab, KeyModifiers::NONE);
            assert!(marked.contains(" 128 "), "{screen}");
            assert!(
                screen.contains(" 130 "),
                "the newest row stays in view\n{screen}"
            );
            let (screen, marked) = press(&mut app, KeyCode::Home, KeyModifiers::CONTROL);
            assert!(marked.contains(" 101 "), "{screen}");
            assert!(!screen.contains(" 130 "), "{screen}");
            let (screen, marked) = press(&mut app, KeyCode::Tab, KeyModifiers::NONE);
            assert!(marked.contains(" 102 "), "{screen}");
            assert!(
                screen.contains(" 101 "),
                "the first row stays in view\n{screen}"
            );
            // A new lookup is selected and brings the list to its end.
            type_text(&mut app, "131");
            let (screen, marked) = press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
            assert!(
                marked.contains(" 131 ") && !screen.contains(" 102 "),
                "{screen}"
            );
        }

        fn prompt_row(screen: &str) -> usize {
            screen
                .lines()
                .position(|l| l.contains("Enter user id:"))
                .unwrap()
        }

        /// The first answer brings latencies into the status line, which then wraps at 100
        /// columns: the rows for that were kept from the start, so the screen stays put.
        #[test]
        fn the_first_answer_does_not_move_the_screen() {
            let mut app = app();
            submit(&mut app, "7");
            let before = render(&app, 100, 30);
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(0),
                    outcome: found(7, Source::Api),
                },
            );
            let after = render(&app, 100, 30);
            assert!(after.contains("p50 412 ms"), "{after}");
            assert_eq!(prompt_row(&before), prompt_row(&after), "{before}\n{after}");
        }

        /// User 7 asked for and found.
        fn answered() -> App {
            let mut app = app();
            submit(&mut app, "7");
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(0),
                    outcome: found(7, Source::Api),
                },
            );
            app
        }

        /// On a short terminal the status line's wrapped figures come before a blank row
        /// kept for notices: at 100 × 16 errors, p50/p95 and cache hits were hidden while
        /// the blank row showed.
        #[test]
        fn a_short_terminal_keeps_the_status_figures_before_a_blank_row() {
            let app = answered();
            for height in [15, 16] {
                let screen = render(&app, 100, height);
                assert!(screen.contains("cache hits 0"), "{height} rows:\n{screen}");
            }
        }

        /// A notice coming takes the row kept blank for it: nothing above the panes moves.
        /// (Below 16 rows there may be no row to keep blank; the notice then takes one of a
        /// header line's, as it must show.)
        #[test]
        fn a_notice_does_not_move_the_prompt() {
            let app = answered();
            let mut with_notice = app.clone();
            with_notice.notice = Some("not looked up: the id is empty".to_owned());
            let mut moved = Vec::new();
            for width in [60, 80, 100, 140] {
                for height in 16..=30 {
                    if prompt_row(&render(&app, width, height))
                        != prompt_row(&render(&with_notice, width, height))
                    {
                        moved.push((width, height));
                    }
                }
            }
            assert_eq!(moved, vec![]);
        }

        /// A name too long for the row is cut, not the latency after it.
        #[test]
        fn a_long_name_leaves_room_for_the_latency() {
            let mut app = app();
            submit(&mut app, "7");
            let body = user_json(7, &"山田太郎".repeat(30)).to_string();
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(0),
                    outcome: Ok(Found {
                        record: Record::from_body(body.as_bytes()).unwrap(),
                        source: Source::Api,
                        attempts: 2,
                        latency: Duration::from_millis(412),
                    }),
                },
            );
            let screen = render(&app, 100, 20);
            let row = screen.lines().find(|l| l.contains("› 7")).unwrap();
            assert!(row.contains("… · 412 ms · 2 attempts"), "{screen}");
        }

        /// Latencies of ten seconds and more are shown in seconds: in milliseconds their
        /// fifth digit outgrew the rows kept for the status line, and the screen moved.
        #[test]
        fn a_slow_answer_does_not_move_the_screen_either() {
            let mut app = app();
            submit(&mut app, "7");
            let widths: Vec<u16> = (60..=140).collect();
            let before: Vec<usize> = widths
                .iter()
                .map(|&w| prompt_row(&render(&app, w, 30)))
                .collect();
            let mut slow = found(7, Source::Api);
            if let Ok(found) = &mut slow {
                found.latency = Duration::from_millis(12_345);
            }
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(0),
                    outcome: slow,
                },
            );
            let after: Vec<usize> = widths
                .iter()
                .map(|&w| prompt_row(&render(&app, w, 30)))
                .collect();
            assert_eq!(before, after, "widths {widths:?}");
            assert!(render(&app, 140, 30).contains("p95 12.3 s"));
        }

        #[test]
        fn shows_long_latencies_in_seconds() {
            let shown = |ms| super::super::millis(Duration::from_millis(ms));
            assert_eq!(shown(0), "0 ms");
            assert_eq!(shown(9_999), "9999 ms");
            assert_eq!(shown(10_000), "10.0 s");
            assert_eq!(shown(12_345), "12.3 s");
            assert_eq!(shown(99_949), "99.9 s");
            assert_eq!(shown(99_950), "100 s");
            assert_eq!(shown(3_600_000), "3600 s");
        }

        #[test]
        fn page_keys_scroll_a_long_record_and_stop_at_its_end() {
            let mut app = app();
            submit(&mut app, "7");
            submit(&mut app, "8");
            for (req, id) in [(0, 7), (1, 8)] {
                update(
                    &mut app,
                    Msg::Done {
                        req: ReqId(req),
                        outcome: found(id, Source::Api),
                    },
                );
            }
            // Drawn on the app itself, not a copy: the frame tells it how far it can scroll.
            let draw = |app: &mut App| {
                app.prepare_frame();
                let mut terminal = Terminal::new(TestBackend::new(110, 26)).unwrap();
                terminal.draw(|f| view(app, f)).unwrap();
                render(app, 110, 26)
            };
            let page = |app: &mut App, code| {
                update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
                draw(app)
            };
            let top = draw(&mut app);
            assert!(
                top.contains("│id: 8") && top.contains("rows 1–15 of 22"),
                "{top}"
            );
            let down = page(&mut app, KeyCode::PageDown);
            assert!(
                !down.contains("│id: 8") && down.contains("rows 8–22 of 22"),
                "{down}"
            );
            // Further down there is nothing more: the last rows stay in view.
            let end = page(&mut app, KeyCode::PageDown);
            assert!(
                end.contains("rows 8–22 of 22") && end.contains("tags:"),
                "{end}"
            );
            let up = page(&mut app, KeyCode::PageUp);
            assert!(up.contains("rows 1–15 of 22"), "{up}");
            // Another record starts at its top.
            page(&mut app, KeyCode::PageDown);
            let other = page(&mut app, KeyCode::BackTab);
            assert!(
                other.contains("│id: 7") && other.contains("rows 1–15"),
                "{other}"
            );
        }

        #[test]
        fn not_found_and_error() {
            let mut app = app();
            submit(&mut app, "99999");
            submit(&mut app, "5");
            advance(&mut app, 900);
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(0),
                    outcome: Err(FetchError::new(ErrorKind::NotFound, 1, "not found")),
                },
            );
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(1),
                    outcome: Err(FetchError::new(
                        ErrorKind::ServerError,
                        4,
                        "server answered 503 Service Unavailable\u{1b}[2J",
                    )),
                },
            );
            insta::assert_snapshot!(render(&app, 110, 16));
        }

        /// A part that ends exactly at the edge, with more after it, is cut with the mark too.
        #[test]
        fn a_cut_at_a_parts_end_still_shows_the_mark() {
            use super::super::ellipsized;
            use ratatui::text::{Line, Span};
            let line = Line::from(vec![Span::raw("abc"), Span::raw(" · 9 ms")]);
            let cut = ellipsized(line.clone(), 3);
            assert_eq!(cut.to_string(), "ab…");
            assert_eq!(ellipsized(line.clone(), 4).to_string(), "abc…");
            assert_eq!(ellipsized(line.clone(), 10).to_string(), "abc · 9 ms");
            // Wide characters are not split: a CJK one takes two columns.
            let wide = Line::from(vec![Span::raw("用户名"), Span::raw("x")]);
            assert_eq!(ellipsized(wide, 6).to_string(), "用户…");
        }

        /// A message wider than the pane ends in `…`: cut at the edge without a mark, it
        /// read as whole ("server answered 500 Internal Server Erro").
        #[test]
        fn a_row_wider_than_its_pane_is_cut_with_a_mark() {
            let mut app = app();
            submit(&mut app, "5");
            advance(&mut app, 900);
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(0),
                    outcome: Err(FetchError::new(
                        ErrorKind::ServerError,
                        4,
                        "server answered 500 Internal Server Error, saying \"the database is down\"",
                    )),
                },
            );
            let screen = render(&app, 60, 16);
            let row = screen
                .lines()
                .find(|l| l.contains("server answered"))
                .unwrap_or_else(|| panic!("{screen}"));
            assert!(row.contains("…│"), "{row}");
            // A row that fits is left whole.
            let screen = render(&app, 200, 16);
            assert!(screen.contains("the database is down"), "{screen}");
        }

        #[test]
        fn sync_frozen_label() {
            let mut app = app();
            update(
                &mut app,
                Msg::Key(KeyEvent::new(KeyCode::F(2), KeyModifiers::NONE)),
            );
            submit(&mut app, "12");
            advance(&mut app, 30);
            insta::assert_snapshot!(render(&app, 110, 14));
        }

        #[test]
        fn after_a_freeze_the_meter_says_how_long() {
            let mut app = app();
            update(
                &mut app,
                Msg::Key(KeyEvent::new(KeyCode::F(2), KeyModifiers::NONE)),
            );
            submit(&mut app, "12");
            advance(&mut app, 640);
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(0),
                    outcome: found(12, Source::Api),
                },
            );
            update(&mut app, Msg::Froze(Duration::from_millis(640)));
            insta::assert_snapshot!(render(&app, 110, 14));
        }

        /// The status line's row kept for latencies to come is handed out last: on a
        /// terminal with a row to spare, it went to that blank row and not to the meter's
        /// wrapped end, which says how long the last sync lookup froze the screen.
        #[test]
        fn the_row_kept_for_latencies_costs_no_row_with_text() {
            let mut app = app();
            update(
                &mut app,
                Msg::Key(KeyEvent::new(KeyCode::F(2), KeyModifiers::NONE)),
            );
            submit(&mut app, "12");
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(0),
                    outcome: Err(FetchError::new(ErrorKind::Timeout, 1, "no answer")),
                },
            );
            update(&mut app, Msg::Froze(Duration::from_millis(640)));
            // No latency yet (no answer): the status line is short of what it keeps.
            assert!(app.stats.latencies.is_empty());
            let screen = render(&app, 100, 17);
            let ends_wrapped = |l: &str| l.trim_end().ends_with("froze the UI for 0.6 s");
            assert!(screen.lines().any(ends_wrapped), "{screen}");
        }

        /// Two lookups typed: "3" still loading, "4" found after 500 ms.
        fn one_loading_one_found() -> App {
            let mut app = app();
            submit(&mut app, "3");
            submit(&mut app, "4");
            advance(&mut app, 500);
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(1),
                    outcome: found(4, Source::Api),
                },
            );
            app
        }

        /// A value too long for the pane goes on under its start, so it reads neither as a
        /// field of its own nor as a nested one.
        #[test]
        fn a_long_value_wraps_indented_under_its_key() {
            let app = one_loading_one_found();
            let screen = render(&app, 80, 60);
            let lines: Vec<&str> = screen.lines().collect();
            let at = lines
                .iter()
                .position(|l| l.contains("catchPhrase:"))
                .unwrap_or_else(|| panic!("{screen}"));
            // Under the value, not two columns in, where a nested field would be.
            let value_column = lines[at].find("Face to face").unwrap_or_default();
            let next = lines[at + 1];
            assert_eq!(
                next.find("that it must wrap"),
                Some(value_column),
                "{screen}"
            );
        }

        /// Lookups waiting for room are shown as queued, apart from those in flight.
        #[test]
        fn queued_lookups_are_shown_apart_from_those_in_flight() {
            let mut app = app();
            submit(&mut app, "1");
            for id in ["2", "3"] {
                type_text(&mut app, id);
                update(
                    &mut app,
                    Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
                );
            }
            let screen = render(&app, 110, 24);
            assert!(screen.contains("in flight 1 · queued 2 ·"), "{screen}");
            // Rows of the list, not the header's count.
            let queued = screen
                .lines()
                .filter(|l| l.starts_with('│') && l.contains(" queued "))
                .count();
            assert_eq!(queued, 2, "{screen}");
        }

        /// On a short terminal a notice (why a pasted line was not looked up) takes a row
        /// before the header lines do.
        #[test]
        fn a_short_terminal_shows_a_notice_before_the_header() {
            let mut app = one_loading_one_found();
            app.notice = Some("not looked up: the id contains a control character".into());
            for height in 12..=16 {
                let screen = render(&app, 80, height);
                assert!(screen.contains("not looked up"), "80×{height}:\n{screen}");
            }
            // Below the panes' least rows too: the prompt emptied, and the id vanished with
            // no word of why.
            for (width, height) in [(40, 10), (30, 8), (80, 5)] {
                let screen = render(&app, width, height);
                assert!(
                    screen.contains("not looked up"),
                    "{width}×{height}:\n{screen}"
                );
            }
            // A long one takes its first row there, not the first header row; its other rows
            // come before the other header lines.
            app.notice = Some(format!("the cache file is locked {}end", "x ".repeat(60)));
            let screen = render(&app, 80, 13);
            assert!(screen.contains("the cache file is locked"), "{screen}");
            assert!(screen.contains("userfetch ASYNC"), "{screen}");
            let screen = render(&app, 80, 16);
            assert!(screen.contains("x end"), "{screen}");
        }

        /// A notice longer than the screen is wide wraps, so its end (what is wrong) shows.
        #[test]
        fn a_long_notice_wraps_onto_more_rows() {
            let mut app = one_loading_one_found();
            app.notice = Some(format!(
                "the cache file /home/someone/{}/cache.sqlite3 is locked by another process; \
                 records fetched meanwhile are not stored in it",
                "deep/".repeat(8)
            ));
            let screen = render(&app, 80, 24);
            assert!(screen.contains("not stored in it"), "{screen}");
            assert!(screen.contains("Enter user id:"), "{screen}");
        }

        #[test]
        fn a_wrapped_header_line_breaks_between_figures_not_inside_one() {
            let mut app = one_loading_one_found();
            update(&mut app, Msg::Froze(Duration::from_millis(2000)));
            let figures = [
                "p50 412 ms",
                "p95 412 ms",
                "not found 0",
                "cache hits 0",
                "up 0:01:00",
                "clock ticks 1",
                "12:34:56 UTC",
                "longest frame gap 17 ms (last 5 s)",
            ];
            for width in 40..=100 {
                let screen = render(&app, width, 40);
                for figure in figures {
                    assert!(screen.contains(figure), "{figure} at {width}:\n{screen}");
                }
                assert!(!screen.lines().any(|l| l.starts_with('·')), "{screen}");
                // A fourth row of the meter may not fit (three at most), but never half of it.
                assert!(
                    !screen.contains("last sync")
                        || screen.contains("last sync lookup froze the UI for 2.0 s"),
                    "at {width}:\n{screen}"
                );
            }
            // Short of rows for them, the figures that show are whole ones.
            for height in 12..=20 {
                let screen = render(&app, 80, height);
                for (start, figure) in [("p50", "p50 412 ms"), ("cache", "cache hits 0")] {
                    assert!(
                        !screen.contains(start) || screen.contains(figure),
                        "{figure} at 80×{height}:\n{screen}"
                    );
                }
            }
        }

        /// Rows go to the panes before the header lines: at 80×10 both panes show a row of
        /// their own and the header is what gives way.
        #[test]
        fn a_short_terminal_gives_the_header_rows_up_before_the_panes() {
            let app = one_loading_one_found();
            let screen = render(&app, 80, 10);
            assert!(!screen.contains("userfetch ASYNC"), "{screen}");
            assert!(screen.contains("Enter user id:"), "{screen}");
            let pane_rows = screen
                .lines()
                .filter(|l| l.starts_with('│') && !l.contains("Enter user id:"))
                .count();
            assert!(pane_rows >= 2, "{screen}");
        }

        #[test]
        fn narrow_terminal() {
            let app = one_loading_one_found();
            insta::assert_snapshot!(render(&app, 48, 24));
        }

        /// Where the terminal's cursor ends up, as (column, row).
        fn cursor(app: &App, width: u16) -> (u16, u16) {
            let mut terminal = Terminal::new(TestBackend::new(width, 24)).unwrap();
            terminal.draw(|f| view(app, f)).unwrap();
            let at = terminal.get_cursor_position().unwrap();
            (at.x, at.y)
        }

        fn type_text(app: &mut App, text: &str) {
            for c in text.chars() {
                update(
                    app,
                    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
                );
            }
        }

        /// With text in the prompt q is a letter: the footer says how to clear it instead.
        #[test]
        fn the_footer_says_how_to_clear_the_prompt_while_it_holds_text() {
            let mut app = one_loading_one_found();
            let footer = |app: &App| render(app, 110, 24).lines().last().unwrap().to_owned();
            assert!(
                footer(&app).starts_with("q quit · Enter fetch"),
                "{}",
                footer(&app)
            );
            type_text(&mut app, "12");
            assert!(
                footer(&app).starts_with("Ctrl-U clear · Enter fetch"),
                "{}",
                footer(&app)
            );
            update(
                &mut app,
                Msg::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)),
            );
            assert!(app.input.is_empty());
            assert!(footer(&app).starts_with("q quit"), "{}", footer(&app));
        }

        #[test]
        fn a_small_terminal_keeps_the_prompt_and_its_cursor() {
            let app = one_loading_one_found();
            for (width, height) in [(40, 12), (30, 8), (60, 6), (80, 4)] {
                let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
                terminal.draw(|f| view(&app, f)).unwrap();
                let screen = render(&app, width, height);
                let prompt_row = screen
                    .lines()
                    .position(|l| l.contains(super::super::PROMPT))
                    .unwrap_or_else(|| panic!("no prompt at {width}x{height}:\n{screen}"));
                let at = terminal.get_cursor_position().unwrap();
                assert_eq!(
                    usize::from(at.y),
                    prompt_row,
                    "cursor off the prompt at {width}x{height}:\n{screen}"
                );
                assert!(at.x < width - 1, "cursor on the border at {width}x{height}");
            }
        }

        #[test]
        fn a_mid_size_terminal_still_shows_lookups() {
            let app = one_loading_one_found();
            for (width, height) in [(40, 12), (50, 14), (60, 16)] {
                let screen = render(&app, width, height);
                assert!(
                    screen.contains("✓"),
                    "no lookup row at {width}x{height}:\n{screen}"
                );
                // Header lines short of rows are cut at the edge, not wrapped into fragments.
                assert!(
                    screen
                        .lines()
                        .next()
                        .is_some_and(|l| l.starts_with("userfetch ASYNC")),
                    "{screen}"
                );
            }
        }

        /// Common small terminals (a split tmux pane) show fields of the selected record,
        /// not two borders with nothing between them.
        #[test]
        fn a_small_terminal_shows_some_of_the_selected_record() {
            let mut app = one_loading_one_found();
            app.selected = Some(1);
            for (width, height) in [(80, 15), (60, 15), (50, 16), (40, 18)] {
                let screen = render(&app, width, height);
                let fields = screen
                    .lines()
                    .skip_while(|l| !l.starts_with("┌ user 4"))
                    .skip(1)
                    .take_while(|l| !l.starts_with('└'))
                    .filter(|l| l.contains(": "))
                    .count();
                assert!(
                    fields >= 2,
                    "{fields} fields at {width}x{height}:\n{screen}"
                );
            }
        }

        #[test]
        fn page_down_in_a_short_pane_skips_no_row() {
            let mut app = one_loading_one_found();
            app.selected = Some(1);
            let mut shown = std::collections::BTreeSet::new();
            for _ in 0..30 {
                app.prepare_frame();
                let mut terminal = Terminal::new(TestBackend::new(60, 20)).unwrap();
                terminal.draw(|f| view(&app, f)).unwrap();
                let screen = render(&app, 60, 20);
                let title = screen
                    .lines()
                    .find(|l| l.contains("┌ user"))
                    .unwrap()
                    .to_owned();
                let rows = title.split("rows ").nth(1).unwrap();
                let (first, rest) = rows.split_once('–').unwrap();
                let (last, _) = rest.split_once(" of").unwrap();
                shown.extend(first.parse::<usize>().unwrap()..=last.parse::<usize>().unwrap());
                update(
                    &mut app,
                    Msg::Key(KeyEvent::new(KeyCode::PageDown, KeyModifiers::NONE)),
                );
            }
            let total: usize = render(&app, 60, 20)
                .lines()
                .find_map(|l| l.split(" of ").nth(1)?.split(',').next()?.parse().ok())
                .unwrap();
            assert_eq!(shown, (1..=total).collect(), "rows never shown");
        }

        #[test]
        fn rows_line_up_whatever_the_width_of_their_ids() {
            let mut app = app();
            submit(&mut app, "漢字漢字漢字漢字漢");
            submit(&mut app, "1");
            let screen = render(&app, 100, 24);
            // One cell per symbol in the rendered text (a wide character's second cell is a
            // blank of its own), so characters before the bar are columns.
            let bar_column = |id: &str| {
                let line = screen.lines().find(|l| l.contains(id)).unwrap();
                line[..line.find('[').unwrap()].chars().count()
            };
            assert_eq!(bar_column("漢 字 漢 …"), bar_column("│› 1 "), "{screen}");
        }

        #[test]
        fn a_long_api_url_is_cut_with_a_mark_not_by_the_border() {
            let mut app = app();
            app.config.api = "http://127.0.0.1:43645/a/rather/long/path/users/{id}".into();
            let screen = render(&app, 60, 24);
            let title = screen.lines().find(|l| l.contains("lookups →")).unwrap();
            assert!(
                title.contains("http://127.0.0.1:43645/a/rather/long/path/use… ┐"),
                "{title}"
            );
        }

        #[test]
        fn the_cursor_follows_wide_characters() {
            let mut app = app();
            let (start, row) = cursor(&app, 80);
            type_text(&mut app, "日本語");
            assert_eq!(
                cursor(&app, 80),
                (start + 6, row),
                "three characters, six columns"
            );
            update(
                &mut app,
                Msg::Key(KeyEvent::new(KeyCode::Left, KeyModifiers::NONE)),
            );
            assert_eq!(cursor(&app, 80), (start + 4, row));
        }

        #[test]
        fn the_cursor_steps_over_an_emoji_as_it_is_drawn() {
            let mut app = app();
            let (start, row) = cursor(&app, 80);
            // Two characters each drawn as one emoji two columns wide, then a family of
            // three joined by zero-width joiners, drawn as one.
            type_text(&mut app, "👍🏽a👨\u{200d}👩\u{200d}👧b");
            assert_eq!(cursor(&app, 80), (start + 6, row));
            let left = || Msg::Key(KeyEvent::new(KeyCode::Left, KeyModifiers::NONE));
            for expected in [5, 3, 2, 0] {
                update(&mut app, left());
                assert_eq!(cursor(&app, 80), (start + expected, row));
            }
            // A halfwidth sound mark takes a cell of its own on a terminal, as ratatui draws
            // it, though Unicode gives it no width.
            update(
                &mut app,
                Msg::Key(KeyEvent::new(KeyCode::End, KeyModifiers::NONE)),
            );
            type_text(&mut app, "ｶﾞ");
            use ratatui::buffer::CellWidth;
            let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
            terminal.draw(|f| view(&app, f)).unwrap();
            let buffer = terminal.backend().buffer();
            let (last, cluster) = (start..79)
                .rev()
                .map(|x| (x, buffer[(x, row)].symbol()))
                .find(|(_, symbol)| !symbol.trim().is_empty())
                .unwrap();
            assert_eq!(cluster, "ｶﾞ");
            assert_eq!(cursor(&app, 80), (last + cluster.cell_width(), row));
            // Drawn whole, each in the cells measured for it.
            let screen = render(&app, 80, 24);
            assert!(screen.contains("👍🏽 a👨\u{200d}👩\u{200d}👧 b"), "{screen}");
        }

        #[test]
        fn a_long_line_scrolls_to_keep_the_cursor_inside_the_box() {
            let mut app = app();
            type_text(&mut app, &format!("{}本", "語".repeat(39)));
            let (x, _) = cursor(&app, 40);
            // The box's right border is column 39; the cursor sits on the last free column.
            assert_eq!(x, 38);
            // 38 columns inside the box: the prompt's 15, the cursor's 1, and 11 characters.
            let screen = render(&app, 40, 24);
            let prompt = screen.lines().find(|l| l.contains(super::super::PROMPT));
            assert_eq!(
                prompt.map(|l| l.matches('語').count()),
                Some(10),
                "{screen}"
            );
            assert!(
                prompt.is_some_and(|l| l.contains('本')),
                "the last typed is shown"
            );
        }

        #[test]
        fn the_whole_status_line_shows_at_every_common_width() {
            let app = one_loading_one_found();
            for width in [60, 80, 100, 115, 140] {
                let screen = render(&app, width, 24);
                // Wrapping breaks lines at spaces; joined back, the parts read whole.
                let joined = screen.replace('\n', " ");
                for part in [
                    "clock ticks 1",
                    "p95 412 ms",
                    "cache hits 0",
                    "key→screen 2 ms",
                ] {
                    assert!(
                        joined.contains(part),
                        "{part} at {width} columns:\n{screen}"
                    );
                }
            }
        }

        #[test]
        fn hostile_text_never_reaches_the_buffer_raw() {
            let mut app = app();
            submit(&mut app, "1");
            let user = user_json(
                1,
                "Mallory \u{1b}]0;PWNED\u{7}\u{1b}[2J\u{9b}31m\u{202e}evil\u{85}\u{2066}",
            )
            .to_string();
            update(
                &mut app,
                Msg::Done {
                    req: ReqId(0),
                    outcome: Ok(Found {
                        record: Record::from_body(user.as_bytes()).unwrap(),
                        source: Source::Api,
                        attempts: 1,
                        latency: Duration::from_millis(5),
                    }),
                },
            );
            let screen = render(&app, 120, 30);
            assert!(screen.contains("Mallory"), "{screen}");
            assert!(
                !screen
                    .chars()
                    .any(|c| crate::term::is_unsafe(c) && c != '\n'),
                "{screen}"
            );
        }
    }
}
