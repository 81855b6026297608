//! The interactive screen's state and the one function that changes it.
//!
//! `update` is pure: no clock reads, no I/O. Time enters as `App::now`, which the loop sets
//! before every message and every frame, so tests (and snapshots) choose the time themselves.
//! What should happen outside the state (start a lookup, cancel one, quit) comes back as
//! [`Effect`]s for the loop to carry out.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use unicode_segmentation::UnicodeSegmentation;

use crate::client::{ErrorKind, FetchError, RetryNotice};
use crate::engine::{Outcome, Source};
use crate::id::UserId;
use crate::term::sanitize;

/// Identifies one submitted lookup. Results carry it back, and are applied only while the row
/// with this id is still waiting for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReqId(pub u64);

/// How a lookup runs: as a task beside the interface, or blocking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Async,
    Sync,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Async => "ASYNC",
            Mode::Sync => "SYNC",
        }
    }
}

/// Fixed facts about this run, shown on screen.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker threads of the runtime (1: everything shares one thread).
    pub threads: u16,
    /// The per-attempt timeout, so a waiting row can show how much of it is used.
    pub timeout: Duration,
    pub mode: Mode,
    /// Where lookups go, for the header.
    pub api: String,
    /// Users the demo API serves (1..=n), when lookups go to one: the idle hint names them.
    pub demo_users: Option<u64>,
    pub color: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threads: 1,
            timeout: Duration::from_secs(10),
            mode: Mode::Async,
            api: String::new(),
            demo_users: None,
            color: false,
        }
    }
}

/// Everything that can happen to the screen.
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    /// Text pasted into the terminal (bracketed paste): typed into the prompt, each line
    /// ending submitted. Nothing in it is a command, so an id starting with q does not quit.
    Paste(String),
    /// The engine is waiting before another attempt.
    Retrying {
        req: ReqId,
        notice: RetryNotice,
    },
    Done {
        req: ReqId,
        outcome: Outcome,
    },
    /// A queued lookup has started: its request is on its way, and its time runs from now.
    Started(ReqId),
    /// A sync-mode lookup held the interface for this long.
    Froze(Duration),
    /// A line another part of the program would have written on stderr (the cache file
    /// locked by another process), already made safe for the terminal.
    Note(String),
    /// The clock task's tick, with the wall-clock time it read.
    Clock(SystemTime),
    Health(Result<Duration, FetchError>),
    /// A frame reached the terminal. `gap` is the time since the previous frame when an
    /// animation was running (a gap while idle means nothing); `input_to_draw` is the wait of
    /// the oldest key shown by this frame.
    Frame {
        gap: Option<Duration>,
        input_to_draw: Option<Duration>,
    },
}

/// Work for the loop: the outside world, as the state asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Lookup {
        req: ReqId,
        id: UserId,
        mode: Mode,
    },
    Cancel(ReqId),
    /// Switched to async mode: sync lookups still queued (the rest of a paste) run async
    /// now, beside the screen, instead of freezing it one after another.
    QueuedRunAsync,
    /// Leave now; every lookup still in flight is cancelled.
    Quit,
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub until: Instant,
    pub next_attempt: u32,
    pub max_attempts: u32,
    /// Why the last attempt failed, sanitized.
    pub reason: String,
}

#[derive(Debug, Clone)]
pub enum Status {
    /// Submitted, waiting for its turn: a free socket (the open-file limit over HTTP/1.1),
    /// or in sync mode the freezes of the ids pasted before it. No request sent yet, so no
    /// time counted against `--timeout`.
    Queued,
    Pending {
        retry: Option<Retry>,
    },
    Found {
        /// The user's name (or a stand-in), sanitized.
        summary: String,
        source: Source,
        latency: Duration,
        attempts: u32,
        /// The record as indented `key: value` lines, sanitized.
        detail: Vec<DetailLine>,
    },
    NotFound {
        latency: Duration,
    },
    Failed {
        kind: ErrorKind,
        /// Sanitized: error text can quote the server.
        message: String,
        latency: Duration,
    },
    Cancelled {
        /// How long it had run; `None` when it was cancelled while queued.
        after: Option<Duration>,
    },
}

#[derive(Debug, Clone)]
pub struct Row {
    pub req: ReqId,
    /// The id as typed; sanitized for display (an id may hold bidi controls).
    pub id: String,
    pub mode: Mode,
    pub started: Instant,
    pub status: Status,
}

impl Row {
    /// Not settled yet: queued or waiting for the API.
    pub fn is_pending(&self) -> bool {
        matches!(self.status, Status::Queued | Status::Pending { .. })
    }
}

/// Counters for the stats line. Percentiles are computed on demand from `latencies`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Lookups not settled yet, queued ones included.
    pub in_flight: usize,
    /// Of those, the ones not started yet.
    pub queued: usize,
    pub found: u64,
    pub not_found: u64,
    pub errors: u64,
    pub cancelled: u64,
    pub cache_hits: u64,
    /// Latencies of the API's answers (found or not found; not cache hits), in microseconds.
    /// Unsorted; see [`Stats::percentiles`].
    pub latencies: Vec<u64>,
    /// (p50, p95), refreshed by [`App::prepare_frame`] when `latencies` changed.
    pub percentiles: Option<(Duration, Duration)>,
    stale: bool,
}

impl Stats {
    fn record_latency(&mut self, latency: Duration) {
        self.latencies
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self.stale = true;
    }

    fn refresh(&mut self) {
        if !self.stale {
            return;
        }
        self.stale = false;
        if self.latencies.is_empty() {
            self.percentiles = None;
            return;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        // Nearest rank, as batch's summary counts: the median of two is the lower, where
        // rounding half the gap up made it the higher.
        let at = |q: f64| {
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            Duration::from_micros(sorted[rank - 1])
        };
        self.percentiles = Some((at(0.50), at(0.95)));
    }
}

/// The last API health check.
#[derive(Debug, Clone)]
pub struct Health {
    pub at: Instant,
    pub result: Result<Duration, String>,
    pub checks: u64,
}

/// The responsiveness meter: how often frames reach the screen, and the longest stall.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    frames: VecDeque<Instant>,
    gaps: VecDeque<(Instant, Duration)>,
    pub last_input_to_draw: Option<Duration>,
    /// How long the last sync lookup held the interface.
    pub last_freeze: Option<Duration>,
}

/// Frames per second are counted over this window.
const FPS_WINDOW: Duration = Duration::from_secs(1);
/// The longest gap is taken over this window: long enough to read, short enough to recover.
pub const GAP_WINDOW: Duration = Duration::from_secs(5);

impl Meter {
    fn record(&mut self, at: Instant, gap: Option<Duration>) {
        self.frames.push_back(at);
        if let Some(gap) = gap {
            self.gaps.push_back((at, gap));
        }
        self.forget_before(at);
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .frames
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > FPS_WINDOW)
        {
            self.frames.pop_front();
        }
        while self
            .gaps
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > GAP_WINDOW)
        {
            self.gaps.pop_front();
        }
    }

    /// Frames drawn in the last second before `now`.
    pub fn fps(&self, now: Instant) -> usize {
        self.frames
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= FPS_WINDOW)
            .count()
    }

    /// The longest gap between animation frames in the last few seconds.
    pub fn longest_gap(&self, now: Instant) -> Option<Duration> {
        self.gaps
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= GAP_WINDOW)
            .map(|(_, g)| *g)
            .max()
    }
}

/// The whole state of the screen.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Config,
    /// The current time, set by whoever drives `update` and the view.
    pub now: Instant,
    pub started: Instant,
    pub mode: Mode,
    pub input: String,
    /// Cursor position in `input`, in bytes: always between two grapheme clusters, as the
    /// screen draws them (an emoji with a skin tone is one, and one step of the cursor).
    pub cursor: usize,
    pub history: Vec<String>,
    /// Where Up/Down stand in `history`; `None` while editing a new line.
    history_pos: Option<usize>,
    /// The unfinished line, kept while walking the history.
    draft: String,
    pub rows: Vec<Row>,
    pub selected: Option<usize>,
    /// Lines of the selected record scrolled past in the detail pane (PgDn/PgUp).
    pub detail_scroll: usize,
    /// How far the detail pane can scroll, and how many rows it shows, as the last frame
    /// drew it: only the view knows the pane's size and how the record wraps in it.
    pub detail_scroll_max: std::cell::Cell<usize>,
    pub detail_rows: std::cell::Cell<usize>,
    /// The first row the lookups list showed in the last frame: the list scrolls only when
    /// the selection leaves it, so the highlight moves and the rows stay put.
    pub rows_first: std::cell::Cell<usize>,
    /// A message about the last thing typed (an invalid id), sanitized.
    pub notice: Option<String>,
    /// A notice about a running lookup ("its lookup is running already"), and that lookup:
    /// the notice goes when it ends, if it is still the one shown.
    pub notice_while: Option<(ReqId, String)>,
    pub stats: Stats,
    pub health: Option<Health>,
    /// The clock task's last tick; it stops moving when the interface is blocked.
    pub clock: Option<SystemTime>,
    pub ticks: u64,
    pub meter: Meter,
    /// The sync-mode lookup holding the interface right now.
    pub frozen_on: Option<ReqId>,
    /// When the last sync-mode freeze ended, or the process was resumed after a stop (or
    /// the screen redrawn): a health check begun before then timed that, not the API.
    pub thawed_at: Option<Instant>,
    pub quit: bool,
    /// The quit came from Ctrl-C, which scripts and shells read as an interruption.
    pub interrupted: bool,
    next_req: u64,
}

impl App {
    pub fn new(config: Config, now: Instant) -> App {
        App {
            mode: config.mode,
            config,
            now,
            started: now,
            input: String::new(),
            cursor: 0,
            history: Vec::new(),
            history_pos: None,
            draft: String::new(),
            rows: Vec::new(),
            selected: None,
            detail_scroll: 0,
            detail_scroll_max: std::cell::Cell::new(0),
            detail_rows: std::cell::Cell::new(0),
            rows_first: std::cell::Cell::new(0),
            notice: None,
            notice_while: None,
            stats: Stats::default(),
            health: None,
            clock: None,
            ticks: 0,
            meter: Meter::default(),
            frozen_on: None,
            thawed_at: None,
            quit: false,
            interrupted: false,
            next_req: 0,
        }
    }

    /// True while something on screen moves by itself (a loading bar, a retry countdown), so
    /// the loop keeps drawing at the frame rate; otherwise it draws only when told something.
    pub fn animating(&self) -> bool {
        self.stats.in_flight > 0
    }

    /// Brings derived figures up to date before a frame; kept out of `update` so a burst of
    /// ten thousand results costs one sort per frame, not one per result.
    pub fn prepare_frame(&mut self) {
        self.stats.refresh();
        self.meter.forget_before(self.now);
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.selected.and_then(|i| self.rows.get(i))
    }

    /// The row for `req`, if it exists. Request ids are handed out in row order, so the id is
    /// the index; the check guards against that ever changing.
    fn row_index(&self, req: ReqId) -> Option<usize> {
        let i = usize::try_from(req.0).ok()?;
        self.rows.get(i).filter(|r| r.req == req).map(|_| i)
    }

    fn row_mut(&mut self, req: ReqId) -> Option<&mut Row> {
        let i = self.row_index(req)?;
        self.rows.get_mut(i)
    }
}

/// Applies one message and says what the loop must do about it.
pub fn update(app: &mut App, msg: Msg) -> Vec<Effect> {
    match msg {
        Msg::Key(key) => on_key(app, key),
        Msg::Paste(text) => paste(app, &text),
        Msg::Retrying { req, notice } => {
            let now = app.now;
            if let Some(row) = app.row_mut(req)
                && let Status::Pending { retry } = &mut row.status
            {
                *retry = Some(Retry {
                    until: now + notice.delay,
                    next_attempt: notice.failed_attempt + 1,
                    max_attempts: notice.max_attempts,
                    // What went wrong, without the "; gave up after N attempts" of a
                    // final error: this one is retried.
                    reason: sanitize(notice.error.detail()).into_owned(),
                });
            }
            Vec::new()
        }
        Msg::Done { req, outcome } => {
            on_done(app, req, outcome);
            Vec::new()
        }
        Msg::Note(text) => {
            let text = text.strip_prefix("userfetch: ").unwrap_or(&text);
            app.notice = Some(text.to_owned());
            Vec::new()
        }
        Msg::Started(req) => {
            let now = app.now;
            if let Some(row) = app.row_mut(req)
                && matches!(row.status, Status::Queued)
            {
                row.status = Status::Pending { retry: None };
                row.started = now;
                app.stats.queued -= 1;
            }
            Vec::new()
        }
        Msg::Froze(held) => {
            app.meter.last_freeze = Some(held);
            app.frozen_on = None;
            app.thawed_at = Some(app.now);
            Vec::new()
        }
        Msg::Clock(wall) => {
            app.clock = Some(wall);
            app.ticks += 1;
            Vec::new()
        }
        // A check that began before a sync freeze ended timed the freeze, not the API (the
        // header read "API up 3003 ms" after a 3 s freeze): the next one will tell.
        Msg::Health(Ok(latency))
            if app
                .thawed_at
                .is_some_and(|thawed| thawed + latency > app.now) =>
        {
            Vec::new()
        }
        // Likewise a check that timed out across a freeze longer than --timeout (a sync
        // lookup through its retries): its timer ran while nothing could read the answer.
        Msg::Health(Err(e))
            if e.kind == ErrorKind::Timeout
                && app
                    .thawed_at
                    .is_some_and(|thawed| thawed + app.config.timeout > app.now) =>
        {
            Vec::new()
        }
        Msg::Health(result) => {
            let checks = app.health.as_ref().map_or(0, |h| h.checks) + 1;
            app.health = Some(Health {
                at: app.now,
                result: result.map_err(|e| sanitize(&e.to_string()).into_owned()),
                checks,
            });
            Vec::new()
        }
        Msg::Frame { gap, input_to_draw } => {
            let now = app.now;
            app.meter.record(now, gap);
            if input_to_draw.is_some() {
                app.meter.last_input_to_draw = input_to_draw;
            }
            Vec::new()
        }
    }
}

/// How long after a freeze (or a stop) keys are taken as ones that waited unread through it:
/// they are read within milliseconds of its end.
const THAWED_KEYS: Duration = Duration::from_millis(250);

fn just_thawed(app: &App) -> bool {
    app.thawed_at
        .is_some_and(|at| app.now.saturating_duration_since(at) < THAWED_KEYS)
}

fn detail_page(app: &App) -> usize {
    app.detail_rows.get().saturating_sub(1).max(1)
}

/// Each pasted line is looked up as if typed and entered; what the prompt held before joins
/// the first. The last piece, with no line end after it, waits in the prompt for Enter. A
/// line that cannot be an id is said in the notice (of several, the first and how many
/// there were), so a later line looked up does not wipe it.
fn paste(app: &mut App, text: &str) -> Vec<Effect> {
    let mut effects = Vec::new();
    let mut refused = Vec::new();
    // Only this paste's refusals are counted below, not a notice already showing.
    app.notice = None;
    // A row copied from a spreadsheet holds one id per cell.
    let mut pieces = text.split(['\r', '\n', '\t']).peekable();
    while let Some(piece) = pieces.next() {
        let entered = pieces.peek().is_some();
        let at = app.cursor;
        if let Some(c) = piece.chars().find(|c| c.is_control()) {
            // Not typed, not even in part: the prompt must never hold a control character,
            // and an id with one dropped would be another id. A line ended in the paste
            // is refused whole, with what the prompt held; the last piece alone, so what
            // was typed before stays for Enter.
            let line = if entered {
                let mut line = std::mem::take(&mut app.input);
                line.insert_str(at, piece);
                app.cursor = 0;
                line
            } else {
                piece.to_owned()
            };
            refused.push(refusal(crate::id::IdError::ControlChar(c as u32), &line));
            continue;
        }
        // At once, not a character at a time: each insert shifts the rest of the line, and a
        // pasted line of 100,000 characters froze the screen for seconds.
        app.input.insert_str(at, piece);
        app.cursor += piece.len();
        to_cluster_end(app);
        // A line of blanks is skipped like an empty one, not refused as an id; so is one
        // holding no more than what is dropped around an id (a zero-width space, a BOM).
        if entered && UserId::trim(app.input.trim()).is_empty() {
            app.input.clear();
            app.cursor = 0;
            continue;
        }
        if entered {
            effects.extend(submit(app));
            refused.extend(app.notice.take());
        }
    }
    app.notice = match refused.len() {
        0 => None,
        1 => refused.pop(),
        n => Some(format!(
            "{NOT_LOOKED_UP}, {n} pasted lines; the first{}",
            refused[0].strip_prefix(NOT_LOOKED_UP).unwrap_or_default()
        )),
    };
    effects
}

const NOT_LOOKED_UP: &str = "not looked up";

/// The notice for a line that is no id. Why first: the row is cut at the screen's edge, and
/// a quoted line can be long.
fn refusal(why: impl std::fmt::Display, line: &str) -> String {
    format!(
        "{NOT_LOOKED_UP}: {why}: {}",
        sanitize(&crate::term::quote(line))
    )
}

fn type_char(app: &mut App, c: char) {
    app.input.insert(app.cursor, c);
    app.cursor += c.len_utf8();
    to_cluster_end(app);
    app.notice = None;
}

/// After an insert, the cursor at the end of the cluster it is in: what was typed may join
/// the cluster after it (an `e` typed before a combining accent makes one `é`).
fn to_cluster_end(app: &mut App) {
    if app.cursor == 0 {
        return;
    }
    app.cursor = app
        .input
        .grapheme_indices(true)
        .map(|(at, cluster)| at + cluster.len())
        .find(|&end| end >= app.cursor)
        .unwrap_or(app.input.len());
}

/// Where the grapheme cluster before the cursor starts.
fn cluster_before(app: &App) -> usize {
    app.input[..app.cursor]
        .grapheme_indices(true)
        .next_back()
        .map_or(0, |(at, _)| at)
}

/// Where the grapheme cluster after the cursor ends.
fn cluster_after(app: &App) -> usize {
    app.cursor
        + app.input[app.cursor..]
            .graphemes(true)
            .next()
            .map_or(0, str::len)
}

fn on_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    // Terminals that report releases would otherwise type every character twice.
    if key.kind == KeyEventKind::Release {
        return Vec::new();
    }
    // Esc and the key after it, read together, arrive as Alt with that key (a terminal sends
    // Alt-x as ESC x; ESC Enter, ESC Tab, ESC DEL likewise). They are read together when
    // both waited unread: keys pressed during a sync freeze or while stopped. Then the Esc
    // does what Esc does, and the key what it does alone (q on an empty prompt quits).
    // Other keys with Alt (arrows) are chords a terminal sends otherwise.
    let esc_then_key = matches!(
        key.code,
        KeyCode::Char(_) | KeyCode::Enter | KeyCode::Tab | KeyCode::Backspace
    );
    if esc_then_key && key.modifiers.contains(KeyModifiers::ALT) && just_thawed(app) {
        let mut effects = cancel_selected(app);
        effects.extend(on_key(
            app,
            KeyEvent {
                modifiers: key.modifiers - KeyModifiers::ALT,
                ..key
            },
        ));
        return effects;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    // Ctrl-H is the Backspace many terminals send.
    let backspace = key.code == KeyCode::Backspace || (ctrl && key.code == KeyCode::Char('h'));
    match key.code {
        KeyCode::Char('c') if ctrl => {
            app.interrupted = true;
            quit(app)
        }
        // The whole line, as zsh's Ctrl-U and as the footer says ("Ctrl-U clear"): taking
        // only what is before the cursor, as bash does, left text after it and q typed.
        KeyCode::Char('u') if ctrl => {
            app.input.clear();
            app.cursor = 0;
            Vec::new()
        }
        // The line-editing keys of a shell prompt.
        KeyCode::Char('a') if ctrl => {
            app.cursor = 0;
            Vec::new()
        }
        KeyCode::Char('e') if ctrl => {
            app.cursor = app.input.len();
            Vec::new()
        }
        KeyCode::Char('w') if ctrl => {
            // Back over the blanks before the cursor, then over the word before them.
            let before = &app.input[..app.cursor];
            let word_end = before.trim_end().len();
            let start = before[..word_end]
                .char_indices()
                .rev()
                .find(|(_, c)| c.is_whitespace())
                .map_or(0, |(at, c)| at + c.len_utf8());
            app.input.drain(start..app.cursor);
            app.cursor = start;
            Vec::new()
        }
        KeyCode::Char('q') if app.input.is_empty() && !ctrl && !alt => quit(app),
        // Alt with a key (other than an Esc read with the key after it, above) means nothing
        // here; typed, Alt-b (a shell's word back) put a b in the id.
        KeyCode::Char(_) if alt => Vec::new(),
        KeyCode::Char(c) if !ctrl => {
            type_char(app, c);
            Vec::new()
        }
        _ if backspace && app.cursor > 0 => {
            let start = cluster_before(app);
            app.input.drain(start..app.cursor);
            app.cursor = start;
            Vec::new()
        }
        KeyCode::Delete if app.cursor < app.input.len() => {
            let end = cluster_after(app);
            app.input.drain(app.cursor..end);
            Vec::new()
        }
        KeyCode::Left => {
            app.cursor = cluster_before(app);
            Vec::new()
        }
        KeyCode::Right => {
            app.cursor = cluster_after(app);
            Vec::new()
        }
        // Plain Home and End belong to the line being typed.
        KeyCode::Home if ctrl => {
            select_at(app, 0);
            Vec::new()
        }
        KeyCode::End if ctrl => {
            select_at(app, usize::MAX);
            Vec::new()
        }
        KeyCode::Home => {
            app.cursor = 0;
            Vec::new()
        }
        KeyCode::End => {
            app.cursor = app.input.len();
            Vec::new()
        }
        KeyCode::Up => {
            history_back(app);
            Vec::new()
        }
        KeyCode::Down => {
            history_forward(app);
            Vec::new()
        }
        KeyCode::Tab => {
            select(app, 1);
            Vec::new()
        }
        KeyCode::BackTab => {
            select(app, -1);
            Vec::new()
        }
        // A page less one row, so the row at the edge stays in view and none is skipped.
        KeyCode::PageDown => {
            app.detail_scroll = app
                .detail_scroll
                .saturating_add(detail_page(app))
                .min(app.detail_scroll_max.get());
            Vec::new()
        }
        KeyCode::PageUp => {
            // From where the pane stands: a taller terminal may have lowered the maximum.
            app.detail_scroll = app
                .detail_scroll
                .min(app.detail_scroll_max.get())
                .saturating_sub(detail_page(app));
            Vec::new()
        }
        KeyCode::Esc => cancel_selected(app),
        KeyCode::F(2) => match app.mode {
            // Async lookups already queued stay async: they only wait for room.
            Mode::Async => {
                app.mode = Mode::Sync;
                Vec::new()
            }
            Mode::Sync => {
                app.mode = Mode::Async;
                // An id submitted behind a paste's others would have frozen the screen in its
                // turn; async now, it never will.
                app.frozen_on = None;
                for row in &mut app.rows {
                    if matches!(row.status, Status::Queued) {
                        row.mode = Mode::Async;
                    }
                }
                vec![Effect::QueuedRunAsync]
            }
        },
        // Ctrl-J is a line feed, which raw mode hands over as such: what a terminal without
        // bracketed paste sends between pasted lines (dropped, "301\n302" became one id).
        KeyCode::Enter => submit(app),
        KeyCode::Char('j') if ctrl => submit(app),
        _ => Vec::new(),
    }
}

fn quit(app: &mut App) -> Vec<Effect> {
    app.quit = true;
    vec![Effect::Quit]
}

fn set_input(app: &mut App, text: String) {
    app.cursor = text.len();
    app.input = text;
}

fn history_back(app: &mut App) {
    if app.history.is_empty() {
        return;
    }
    let pos = match app.history_pos {
        None => {
            app.draft = std::mem::take(&mut app.input);
            app.history.len() - 1
        }
        Some(p) => p.saturating_sub(1),
    };
    app.history_pos = Some(pos);
    set_input(app, app.history[pos].clone());
}

fn history_forward(app: &mut App) {
    let Some(pos) = app.history_pos else { return };
    if pos + 1 < app.history.len() {
        app.history_pos = Some(pos + 1);
        set_input(app, app.history[pos + 1].clone());
    } else {
        app.history_pos = None;
        let draft = std::mem::take(&mut app.draft);
        set_input(app, draft);
    }
}

fn select(app: &mut App, step: isize) {
    let at = match app.selected {
        None => usize::MAX,
        Some(i) => i.saturating_add_signed(step),
    };
    select_at(app, at);
}

/// Selects row `at`, or the last row when there are fewer.
fn select_at(app: &mut App, at: usize) {
    let Some(last) = app.rows.len().checked_sub(1) else {
        return;
    };
    app.selected = Some(at.min(last));
    app.detail_scroll = 0;
}

fn submit(app: &mut App) -> Vec<Effect> {
    if app.input.is_empty() {
        return Vec::new();
    }
    let text = std::mem::take(&mut app.input);
    app.cursor = 0;
    app.history_pos = None;
    app.draft.clear();
    if app.history.last() != Some(&text) {
        app.history.push(text.clone());
    }
    let id = match UserId::parse_trimmed(&text) {
        Ok(id) => id,
        Err(e) => {
            app.notice = Some(refusal(e, &text));
            return Vec::new();
        }
    };
    let shown = sanitize(id.as_str()).into_owned();
    // The same id asked again while its lookup runs (a list pasted with repeats): its row is
    // selected rather than another request sent for the same answer.
    if let Some(at) = app
        .rows
        .iter()
        .position(|r| r.is_pending() && r.mode == app.mode && r.id == shown)
    {
        app.selected = Some(at);
        app.detail_scroll = 0;
        let notice = refusal("its lookup is running already", &text);
        app.notice_while = Some((app.rows[at].req, notice.clone()));
        app.notice = Some(notice);
        return Vec::new();
    }
    app.notice = None;
    let req = ReqId(app.next_req);
    app.next_req += 1;
    app.rows.push(Row {
        req,
        id: shown,
        mode: app.mode,
        started: app.now,
        // It starts when the loop starts it (Msg::Started): an async lookup when there is
        // room for it, a sync one when its freeze begins (the other ids of a paste wait).
        status: Status::Queued,
    });
    app.selected = Some(app.rows.len() - 1);
    app.detail_scroll = 0;
    app.stats.in_flight += 1;
    app.stats.queued += 1;
    if app.mode == Mode::Sync {
        app.frozen_on = Some(req);
    }
    vec![Effect::Lookup {
        req,
        id,
        mode: app.mode,
    }]
}

fn cancel_selected(app: &mut App) -> Vec<Effect> {
    let now = app.now;
    let Some(row) = app.selected.and_then(|i| app.rows.get_mut(i)) else {
        return Vec::new();
    };
    if !row.is_pending() {
        return Vec::new();
    }
    let after = if matches!(row.status, Status::Queued) {
        app.stats.queued -= 1;
        None
    } else {
        Some(now.saturating_duration_since(row.started))
    };
    row.status = Status::Cancelled { after };
    let req = row.req;
    app.stats.in_flight -= 1;
    app.stats.cancelled += 1;
    // A queued sync id cancelled before its turn never freezes the screen.
    if app.frozen_on == Some(req) {
        app.frozen_on = None;
    }
    // One not begun yet never sends a Done.
    lookup_ended(app, req);
    vec![Effect::Cancel(req)]
}

/// A notice about the lookup `req` ("running already") is stale once it has ended, however.
fn lookup_ended(app: &mut App, req: ReqId) {
    if let Some((_, text)) = app.notice_while.take_if(|(about, _)| *about == req)
        && app.notice.as_deref() == Some(text.as_str())
    {
        app.notice = None;
    }
}

fn on_done(app: &mut App, req: ReqId, outcome: Outcome) {
    lookup_ended(app, req);
    let now = app.now;
    let Some(i) = app.row_index(req) else { return };
    let row = &mut app.rows[i];
    // Cancelled (or otherwise settled) rows keep what they show: a late answer is stale.
    if !row.is_pending() {
        return;
    }
    if matches!(row.status, Status::Queued) {
        app.stats.queued -= 1;
    }
    let waited = now.saturating_duration_since(row.started);
    row.status = match outcome {
        Ok(found) => {
            let value = found.record.to_value();
            Status::Found {
                summary: summary(&value),
                source: found.source,
                latency: found.latency,
                attempts: found.attempts,
                detail: record_detail(found.record.as_json(), &value),
            }
        }
        Err(e) if e.kind == ErrorKind::NotFound => Status::NotFound { latency: waited },
        Err(e) => Status::Failed {
            kind: e.kind,
            message: sanitize(&e.to_string()).into_owned(),
            latency: waited,
        },
    };
    let stats = &mut app.stats;
    stats.in_flight -= 1;
    match &row.status {
        Status::Found {
            source, latency, ..
        } => {
            stats.found += 1;
            // The API's answer times: a cache hit's 0 ms is none (two hits made p50 0 ms
            // for an API that took 3 s).
            if *source == Source::Cache {
                stats.cache_hits += 1;
            } else {
                stats.record_latency(*latency);
            }
        }
        // A 404 is an answer of the API's too, timed as a found user's.
        Status::NotFound { latency } => {
            stats.not_found += 1;
            stats.record_latency(*latency);
        }
        // Set just above from the outcome: found, not found or failed.
        _ => stats.errors += 1,
    }
}

/// What a row shows for a found user: the name when the record has one.
fn summary(value: &serde_json::Value) -> String {
    // An empty or null name says nothing ("✓  · 6 ms", "✓ null"): the username then, or
    // just that the user was found.
    let text = ["name", "username"]
        .iter()
        .filter_map(|key| match value.get(key)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) if s.trim().is_empty() => None,
            serde_json::Value::Object(o) if o.is_empty() => None,
            serde_json::Value::Array(a) if a.is_empty() => None,
            serde_json::Value::String(s) => Some(visible_breaks(s).into_owned()),
            other => Some(other.to_string()),
        })
        .next()
        .unwrap_or_else(|| "found".to_owned());
    sanitize(&text).into_owned()
}

/// The most text the detail pane holds for one record, in characters. The pane wraps its
/// text on every frame: a 1 MB value held each frame for ~100 ms, where the screen promises
/// never to freeze. Nobody reads that much in a pane; `userfetch get` prints it whole.
const DETAIL_CHARS: usize = 64 * 1024;
/// The most of one line shown, so the fields after a long value still get their turn.
const VALUE_CHARS: usize = 4 * 1024;

/// One line of the detail pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailLine {
    pub text: String,
    /// The terminal column its value starts at (past the indent and `key: `), where a
    /// value too long for the pane continues: found by searching the text, a key holding
    /// ": " would put it in the middle of the key.
    pub value_column: usize,
}

/// Lines for the detail pane, within [`DETAIL_CHARS`].
struct Detail {
    lines: Vec<DetailLine>,
    left: usize,
    /// Lines past the budget, left out.
    hidden: usize,
}

impl Detail {
    /// `line` begins with `lead` (its indent and `key: `), after which its value starts.
    fn push(&mut self, lead: &str, line: String) {
        if self.left == 0 {
            self.hidden += 1;
            return;
        }
        let text = cut(line);
        self.left = self.left.saturating_sub(text.chars().count());
        self.lines.push(DetailLine {
            text,
            value_column: unicode_width::UnicodeWidthStr::width(lead),
        });
    }
}

/// [`detail_lines`] of a found record, and a last line when an object in it holds a key
/// twice: the parsed value keeps the last, as `--pretty` and the CSV do, and say so.
fn record_detail(json: &str, value: &serde_json::Value) -> Vec<DetailLine> {
    let mut lines = detail_lines(value);
    if let Some(key) = crate::duplicate_keys::first(json) {
        lines.push(DetailLine {
            text: sanitize(&format!(
                "(the record holds the key {} twice: its last value is shown; `userfetch get` prints the record as sent)",
                crate::term::quote(&key)
            ))
            .into_owned(),
            value_column: 0,
        });
    }
    lines
}

/// The record as lines for the detail pane: one `key: value` per scalar, nested objects
/// indented under their key. Sanitized here, once, where API text enters the screen.
pub fn detail_lines(value: &serde_json::Value) -> Vec<DetailLine> {
    let mut detail = Detail {
        lines: Vec::new(),
        left: DETAIL_CHARS,
        hidden: 0,
    };
    push_value(&mut detail, 0, None, value);
    if detail.hidden > 0 {
        let hidden = detail.hidden;
        detail.lines.push(DetailLine {
            text: format!(
                "… {hidden} more lines not shown here; `userfetch get` prints the whole record"
            ),
            value_column: 0,
        });
    }
    detail.lines
}

fn push_value(lines: &mut Detail, depth: usize, key: Option<&str>, value: &serde_json::Value) {
    use serde_json::Value;
    let indent = "  ".repeat(depth);
    let label = key
        .map(|k| format!("{}: ", sanitize(k)))
        .unwrap_or_default();
    match value {
        Value::Object(map) => {
            let inner = if key.is_some() {
                lines.push(&indent, format!("{indent}{}", label.trim_end()));
                depth + 1
            } else {
                depth
            };
            for (k, v) in map {
                push_value(lines, inner, Some(k), v);
            }
        }
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            let joined: Vec<String> = items.iter().map(scalar).collect();
            lines.push(
                &format!("{indent}{label}["),
                format!("{indent}{label}[{}]", joined.join(", ")),
            );
        }
        Value::Array(items) => {
            lines.push(&indent, format!("{indent}{}", label.trim_end()));
            for (i, v) in items.iter().enumerate() {
                push_value(lines, depth + 1, Some(&format!("[{i}]")), v);
            }
        }
        scalar_value => lines.push(
            &format!("{indent}{label}"),
            format!("{indent}{label}{}", scalar(scalar_value)),
        ),
    }
}

fn scalar(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => sanitize(&visible_breaks(s)).into_owned(),
        other => sanitize(&other.to_string()).into_owned(),
    }
}

/// A value's line breaks as `↵` and its tabs as a space, so that a text written over several
/// lines reads as such on its one row; as control characters they showed as U+FFFD.
fn visible_breaks(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\n', '\r', '\t']) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.replace("\r\n", "\n")
            .replace(['\n', '\r'], "↵")
            .replace('\t', " "),
    )
}

/// `line` cut after [`VALUE_CHARS`] characters, saying how many more there were.
fn cut(line: String) -> String {
    match line.char_indices().nth(VALUE_CHARS) {
        None => line,
        Some((at, _)) => {
            let more = line[at..].chars().count();
            format!("{}… ({more} more characters)", &line[..at])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[DetailLine]) -> Vec<String> {
        lines.iter().map(|l| l.text.clone()).collect()
    }

    #[test]
    fn line_breaks_and_tabs_in_values_show_as_such() {
        let value = serde_json::json!({"name": "Ann\tLee", "bio": "one\ntwo\r\nthree\rfour"});
        assert_eq!(
            texts(&detail_lines(&value)),
            ["name: Ann Lee", "bio: one↵two↵three↵four"]
        );
        assert_eq!(summary(&value), "Ann Lee");
    }

    #[test]
    fn the_pane_says_when_a_key_is_held_twice() {
        let json = r#"{"id":7,"name":"x","name":"y"}"#;
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let lines = texts(&record_detail(json, &value));
        assert_eq!(lines[..2], ["id: 7", "name: y"]);
        assert!(
            lines[2].contains("holds the key \"name\" twice: its last value is shown"),
            "{lines:?}"
        );
        let plain = r#"{"id":7}"#;
        let value: serde_json::Value = serde_json::from_str(plain).unwrap();
        assert_eq!(texts(&record_detail(plain, &value)), ["id: 7"]);
    }

    /// Where each line's value starts, as the pane wraps it: past the indent and the key,
    /// whatever the key holds.
    #[test]
    fn a_detail_line_knows_where_its_value_starts() {
        let value = serde_json::json!({"a": {"note: x": "v", "tags": [1, 2]}});
        let lines = detail_lines(&value);
        let columns: Vec<(&str, usize)> = lines
            .iter()
            .map(|l| (l.text.as_str(), l.value_column))
            .collect();
        assert_eq!(
            columns,
            [("a:", 0), ("  note: x: v", 11), ("  tags: [1, 2]", 9)]
        );
    }
    use crate::engine::Found;

    use crate::record::Record;

    fn app() -> App {
        App::new(Config::default(), Instant::now())
    }

    fn key(code: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn ctrl(c: char) -> Msg {
        Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
    }

    fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            assert!(update(app, key(KeyCode::Char(c))).is_empty());
        }
    }

    fn found(name: &str, source: Source) -> Outcome {
        let body = serde_json::json!({ "id": 1, "name": name, "address": { "city": "X" } });
        Ok(Found {
            record: Record::from_body(body.to_string().as_bytes()).unwrap(),
            source,
            attempts: 1,
            latency: Duration::from_millis(300),
        })
    }

    /// Types `id` and presses Enter, twice: the second finds the first running.
    fn submit_twice(app: &mut App, id: &str) {
        for _ in 0..2 {
            type_text(app, id);
            update(app, key(KeyCode::Enter));
        }
    }

    /// "Its lookup is running already" goes when that lookup ends (it stayed until the next
    /// thing typed); another notice shown since stays.
    #[test]
    fn the_running_already_notice_goes_with_its_lookup() {
        let mut app = app();
        submit_twice(&mut app, "70");
        assert!(
            app.notice
                .as_deref()
                .is_some_and(|n| n.contains("running already"))
        );
        let found_70 = Msg::Done {
            req: ReqId(0),
            outcome: found("Frances", Source::Api),
        };
        update(&mut app, found_70);
        assert_eq!(app.notice, None);

        submit_twice(&mut app, "71");
        update(&mut app, Msg::Note("userfetch: something else".into()));
        let found_71 = Msg::Done {
            req: ReqId(1),
            outcome: found("Ervin", Source::Api),
        };
        update(&mut app, found_71);
        assert_eq!(app.notice.as_deref(), Some("something else"));

        // Cancelled (Esc on its row) before it began: no answer will come.
        submit_twice(&mut app, "72");
        assert!(
            app.notice
                .as_deref()
                .is_some_and(|n| n.contains("running already"))
        );
        update(&mut app, key(KeyCode::Esc));
        assert_eq!(app.notice, None);
    }

    /// A line feed (Ctrl-J: what a terminal without bracketed paste sends between pasted
    /// lines) ends an id as Enter does, instead of gluing it to the next one.
    #[test]
    fn a_line_feed_submits_as_enter_does() {
        let mut app = app();
        let line_feed = Msg::Key(KeyEvent::new(KeyCode::Char('j'), KeyModifiers::CONTROL));
        type_text(&mut app, "86");
        update(&mut app, line_feed.clone());
        type_text(&mut app, "87");
        update(&mut app, line_feed);
        let ids: Vec<&str> = app.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["86", "87"]);
        assert_eq!(app.input, "");
    }

    #[test]
    fn enter_submits_a_lookup_and_clears_the_prompt() {
        let mut app = app();
        type_text(&mut app, "42");
        let effects = update(&mut app, key(KeyCode::Enter));
        assert_eq!(
            effects,
            vec![Effect::Lookup {
                req: ReqId(0),
                id: UserId::parse("42").unwrap(),
                mode: Mode::Async
            }]
        );
        assert_eq!(app.input, "");
        assert_eq!(app.cursor, 0);
        assert_eq!(app.rows.len(), 1);
        assert_eq!(app.selected, Some(0));
        assert_eq!(app.stats.in_flight, 1);
        assert!(app.animating());
    }

    #[test]
    fn spaces_around_a_typed_id_are_not_part_of_it() {
        let mut app = app();
        type_text(&mut app, " 42 ");
        let effects = update(&mut app, key(KeyCode::Enter));
        assert_eq!(
            effects,
            vec![Effect::Lookup {
                req: ReqId(0),
                id: UserId::parse("42").unwrap(),
                mode: Mode::Async
            }]
        );
        assert_eq!(app.rows[0].id, "42");
        assert_eq!(app.notice, None);
    }

    #[test]
    fn pasted_lines_are_looked_up_and_nothing_in_them_is_a_command() {
        let mut app = app();
        let effects = update(&mut app, Msg::Paste("1\nquinn\r\n\u{1b}2\t3".into()));
        let ids: Vec<String> = effects
            .iter()
            .map(|e| match e {
                Effect::Lookup { id, .. } => id.as_str().to_owned(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, ["1", "quinn"]);
        assert!(!app.quit, "a pasted q is text");
        // The line with an escape character is refused whole, not looked up as "2".
        let notice = app.notice.clone().unwrap_or_default();
        assert!(
            notice.starts_with("not looked up: the id contains a control character (U+001B)"),
            "{notice}"
        );
        // The last line waits for Enter.
        assert_eq!(app.input, "3");
    }

    #[test]
    fn a_pasted_line_of_only_a_zero_width_space_or_a_bom_is_skipped() {
        let mut app = app();
        let effects = update(&mut app, Msg::Paste("14\n\u{200b}\n\u{feff} \n15\n".into()));
        assert_eq!(effects.len(), 2, "14 and 15 are looked up");
        assert_eq!(app.notice, None);
    }

    #[test]
    fn a_refused_pasted_line_stays_said_after_the_lines_that_follow() {
        let mut app = app();
        let effects = update(&mut app, Msg::Paste("7\u{a0}\n8\n  \n".into()));
        assert_eq!(effects.len(), 1, "8 is looked up");
        let notice = app.notice.clone().unwrap_or_default();
        assert!(
            notice.contains("whitespace") && notice.contains(r#""7\u{a0}""#),
            "{notice}"
        );
        // The line of blanks after it was skipped, not refused too.
        assert!(notice.starts_with("not looked up: "), "{notice}");
        // Several: counted, the first said.
        update(&mut app, Msg::Paste("9\n..\n\u{7}x\n10\n".into()));
        let notice = app.notice.clone().unwrap_or_default();
        assert!(
            notice.starts_with("not looked up, 2 pasted lines; the first: '.' and '..'"),
            "{notice}"
        );
        assert_eq!(app.rows.len(), 3);
    }

    /// A notice already showing is not counted as a refused pasted line; a refused last
    /// piece (no line end after it) leaves what was typed in the prompt.
    #[test]
    fn a_paste_counts_only_its_own_refusals_and_keeps_what_was_typed() {
        let mut app = app();
        app.notice = Some("the cache file c.sqlite3 is locked by another process".into());
        update(&mut app, Msg::Paste("\n..\n".into()));
        let notice = app.notice.clone().unwrap_or_default();
        assert!(
            notice.starts_with("not looked up: '.' and '..'"),
            "{notice}"
        );
        type_text(&mut app, "12");
        update(&mut app, Msg::Paste("3\u{0}".into()));
        assert_eq!((app.input.as_str(), app.cursor), ("12", 2));
        let notice = app.notice.clone().unwrap_or_default();
        assert!(
            notice.contains("U+0000") && notice.contains("3"),
            "{notice}"
        );
    }

    #[test]
    fn a_very_long_pasted_line_is_typed_at_once() {
        let mut app = app();
        type_text(&mut app, "ab");
        update(&mut app, key(KeyCode::Left));
        let long = "7".repeat(300_000);
        let started = Instant::now();
        update(&mut app, Msg::Paste(long.clone()));
        // Generous: one character at a time took ~30 s for this many.
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(app.input, format!("a{long}b"));
        assert_eq!(app.cursor, 300_001);
    }

    /// Esc then 5, pressed during a sync freeze, are read together as Alt-5: the 5 is typed.
    /// Alt-5 pressed as such, long after any freeze, still types nothing.
    #[test]
    fn esc_and_a_key_read_together_after_a_freeze_are_both_taken() {
        let mut app = app();
        let alt = |c| Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::ALT));
        update(&mut app, alt('5'));
        assert_eq!(app.input, "");
        update(&mut app, Msg::Froze(Duration::from_millis(900)));
        app.now += Duration::from_millis(5);
        update(&mut app, alt('5'));
        assert_eq!(app.input, "5");
        app.now += Duration::from_secs(2);
        update(&mut app, alt('6'));
        assert_eq!(app.input, "5");
    }

    /// Esc then Enter (or Tab, Backspace) read together after a freeze arrive as Alt with
    /// that key: the Esc cancels the selected lookup and the key does what it does alone.
    #[test]
    fn esc_and_enter_read_together_after_a_freeze_cancel_then_submit() {
        let mut app = app();
        type_text(&mut app, "4");
        update(&mut app, key(KeyCode::Enter));
        update(&mut app, Msg::Froze(Duration::from_millis(900)));
        app.now += Duration::from_millis(5);
        type_text(&mut app, "5");
        let effects = update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)),
        );
        assert!(
            matches!(
                effects[..],
                [
                    Effect::Cancel(ReqId(0)),
                    Effect::Lookup { req: ReqId(1), .. }
                ]
            ),
            "{effects:?}"
        );
        // Alt with an arrow is a chord of its own, not an Esc read with a key: nothing is
        // cancelled.
        let effects = update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Left, KeyModifiers::ALT)),
        );
        assert!(effects.is_empty(), "{effects:?}");
        assert!(app.rows[1].is_pending());
    }

    #[test]
    fn ctrl_h_deletes_like_backspace() {
        let mut app = app();
        type_text(&mut app, "abc");
        let ctrl_h = KeyEvent::new(KeyCode::Char('h'), KeyModifiers::CONTROL);
        update(&mut app, Msg::Key(ctrl_h));
        update(&mut app, Msg::Key(ctrl_h));
        assert_eq!((app.input.as_str(), app.cursor), ("a", 1));
        update(&mut app, key(KeyCode::Backspace));
        update(&mut app, Msg::Key(ctrl_h));
        assert_eq!((app.input.as_str(), app.cursor), ("", 0));
    }

    #[test]
    fn empty_enter_does_nothing_and_a_bad_id_is_explained() {
        let mut app = app();
        assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
        type_text(&mut app, "..");
        assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
        assert!(app.rows.is_empty());
        let notice = app.notice.clone().unwrap();
        assert!(notice.contains("not looked up"), "{notice}");
        // The reason comes before the (possibly long) id, so a narrow row keeps it.
        type_text(&mut app, &"x".repeat(300));
        update(&mut app, key(KeyCode::Enter));
        let notice = app.notice.clone().unwrap();
        assert!(
            notice.starts_with("not looked up: the id is 300 bytes long; the limit is 256: \"xxx"),
            "{notice}"
        );
    }

    #[test]
    fn editing_takes_an_emoji_with_a_skin_tone_whole() {
        let mut app = app();
        type_text(&mut app, "1👍🏽2");
        update(&mut app, key(KeyCode::Left));
        update(&mut app, key(KeyCode::Backspace));
        assert_eq!((app.input.as_str(), app.cursor), ("12", 1));
        type_text(&mut app, "👍🏽");
        update(&mut app, key(KeyCode::Left));
        update(&mut app, key(KeyCode::Delete));
        assert_eq!((app.input.as_str(), app.cursor), ("12", 1));
        // Typed before a combining accent, a letter joins it: the cursor goes past both.
        update(&mut app, key(KeyCode::End));
        update(&mut app, ctrl('u'));
        update(&mut app, Msg::Paste("\u{301}".into()));
        update(&mut app, key(KeyCode::Home));
        type_text(&mut app, "e");
        assert_eq!((app.input.as_str(), app.cursor), ("e\u{301}", 3));
        update(&mut app, key(KeyCode::End));
        type_text(&mut app, "12");
        // Ctrl-W takes the word before the cursor, whatever its characters.
        update(&mut app, key(KeyCode::End));
        type_text(&mut app, " 日本 ");
        update(&mut app, ctrl('w'));
        assert_eq!((app.input.as_str(), app.cursor), ("e\u{301}12 ", 6));
    }

    #[test]
    fn editing_moves_the_cursor_and_changes_the_line() {
        let mut app = app();
        type_text(&mut app, "1234");
        update(&mut app, key(KeyCode::Left));
        update(&mut app, key(KeyCode::Left));
        update(&mut app, key(KeyCode::Backspace));
        assert_eq!((app.input.as_str(), app.cursor), ("134", 1));
        update(&mut app, key(KeyCode::Home));
        update(&mut app, key(KeyCode::Char('9')));
        assert_eq!((app.input.as_str(), app.cursor), ("9134", 1));
        update(&mut app, key(KeyCode::Delete));
        assert_eq!(app.input, "934");
        update(&mut app, key(KeyCode::End));
        update(&mut app, key(KeyCode::Right));
        assert_eq!(app.cursor, 3);
        // Multi-byte characters are edited whole.
        type_text(&mut app, "é");
        update(&mut app, key(KeyCode::Backspace));
        assert_eq!(app.input, "934");
        // Ctrl-U clears the line, wherever the cursor is.
        update(&mut app, key(KeyCode::Left));
        update(&mut app, ctrl('u'));
        assert_eq!((app.input.as_str(), app.cursor), ("", 0));
    }

    /// A huge record (a 1 MB value, thousands of fields) gives the pane a bounded amount of
    /// text, which says what it left out, so no frame waits for it to wrap.
    #[test]
    fn the_details_of_a_huge_record_are_bounded_and_say_so() {
        let long =
            serde_json::json!({"name": "big", "bio": "lorem ipsum ".repeat(90_000), "after": 1});
        let lines = texts(&detail_lines(&long));
        assert_eq!(lines[0], "name: big");
        assert!(
            lines[1].starts_with("bio: lorem ipsum"),
            "{}",
            &lines[1][..40]
        );
        assert!(
            lines[1].ends_with(" more characters)"),
            "{}",
            &lines[1][lines[1].len() - 40..]
        );
        assert_eq!(lines[2], "after: 1");

        let many: serde_json::Map<String, serde_json::Value> = (0..50_000)
            .map(|n| (format!("field{n}"), serde_json::Value::from("x".repeat(20))))
            .collect();
        let lines = texts(&detail_lines(&serde_json::Value::Object(many)));
        let chars: usize = lines.iter().map(|l| l.chars().count()).sum();
        assert!(chars < DETAIL_CHARS + VALUE_CHARS + 200, "{chars}");
        let last = lines.last().unwrap();
        assert!(last.contains("more lines not shown here"), "{last}");
        let hidden: usize = last["… ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(hidden + lines.len() - 1, 50_000);
    }
    #[test]
    fn alt_with_a_key_types_nothing() {
        let mut app = app();
        type_text(&mut app, "12");
        update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Char('b'), KeyModifiers::ALT)),
        );
        assert_eq!(app.input, "12");
    }

    #[test]
    fn the_shell_prompt_keys_move_and_delete_words() {
        let mut app = app();
        type_text(&mut app, "12 345  67");
        update(&mut app, ctrl('w'));
        assert_eq!((app.input.as_str(), app.cursor), ("12 345  ", 8));
        update(&mut app, ctrl('w'));
        assert_eq!((app.input.as_str(), app.cursor), ("12 ", 3));
        update(&mut app, ctrl('a'));
        assert_eq!(app.cursor, 0);
        update(&mut app, ctrl('w'));
        assert_eq!((app.input.as_str(), app.cursor), ("12 ", 0));
        update(&mut app, ctrl('e'));
        assert_eq!(app.cursor, 3);
        type_text(&mut app, "é9");
        update(&mut app, ctrl('w'));
        assert_eq!((app.input.as_str(), app.cursor), ("12 ", 3));
    }

    #[test]
    fn q_quits_only_on_an_empty_prompt() {
        let mut app = app();
        type_text(&mut app, "a");
        update(&mut app, key(KeyCode::Char('q')));
        assert_eq!(app.input, "aq");
        assert!(!app.quit);
        update(&mut app, ctrl('u'));
        assert_eq!(
            update(&mut app, key(KeyCode::Char('q'))),
            vec![Effect::Quit]
        );
        assert!(app.quit);
    }

    #[test]
    fn quitting_with_lookups_in_flight_is_immediate() {
        let mut app = app();
        for id in ["1", "2", "3"] {
            type_text(&mut app, id);
            update(&mut app, key(KeyCode::Enter));
        }
        assert_eq!(app.stats.in_flight, 3);
        type_text(&mut app, "4");
        // Ctrl-C quits whatever is typed; the loop cancels everything on Quit.
        assert_eq!(update(&mut app, ctrl('c')), vec![Effect::Quit]);
        assert!(app.quit && app.interrupted);
    }

    #[test]
    fn history_walks_back_and_forward_and_keeps_the_draft() {
        let mut app = app();
        for id in ["1", "2", "2", "3"] {
            type_text(&mut app, id);
            update(&mut app, key(KeyCode::Enter));
        }
        assert_eq!(app.history, ["1", "2", "3"]);
        type_text(&mut app, "dra");
        update(&mut app, key(KeyCode::Up));
        assert_eq!(app.input, "3");
        update(&mut app, key(KeyCode::Up));
        update(&mut app, key(KeyCode::Up));
        update(&mut app, key(KeyCode::Up));
        assert_eq!((app.input.as_str(), app.cursor), ("1", 1));
        update(&mut app, key(KeyCode::Down));
        assert_eq!(app.input, "2");
        update(&mut app, key(KeyCode::Down));
        update(&mut app, key(KeyCode::Down));
        assert_eq!(app.input, "dra");
        update(&mut app, key(KeyCode::Down));
        assert_eq!(app.input, "dra");
    }

    #[test]
    fn an_id_asked_again_while_its_lookup_runs_is_not_sent_twice() {
        let mut app = app();
        let effects = paste(&mut app, "7\n8\n7\n");
        assert_eq!(effects.len(), 2, "{effects:?}");
        assert_eq!(app.rows.len(), 2);
        let notice = app.notice.clone().unwrap_or_default();
        assert!(notice.contains("its lookup is running"), "{notice}");
        // Typed again: its row is selected.
        type_text(&mut app, "7");
        assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
        assert_eq!(app.selected, Some(0));
        // Once it has its answer, asking again looks it up again.
        update(
            &mut app,
            Msg::Done {
                req: ReqId(0),
                outcome: found("Ervin", Source::Api),
            },
        );
        type_text(&mut app, "7");
        assert_eq!(update(&mut app, key(KeyCode::Enter)).len(), 1);
        assert_eq!(app.rows.len(), 3);
    }

    #[test]
    fn a_row_names_the_user_by_a_name_that_says_something() {
        let named = |v: serde_json::Value| summary(&v);
        assert_eq!(named(serde_json::json!({"name": "Ervin"})), "Ervin");
        assert_eq!(
            named(serde_json::json!({"name": " ", "username": "Bret"})),
            "Bret"
        );
        assert_eq!(named(serde_json::json!({"name": null})), "found");
        assert_eq!(named(serde_json::json!({"name": 5})), "5");
        assert_eq!(named(serde_json::json!({"id": 1})), "found");
        assert_eq!(
            named(serde_json::json!({"name": {}, "username": []})),
            "found"
        );
    }

    #[test]
    fn a_result_fills_its_row_and_the_stats() {
        let mut app = app();
        type_text(&mut app, "1");
        update(&mut app, key(KeyCode::Enter));
        type_text(&mut app, "2");
        update(&mut app, key(KeyCode::Enter));
        update(
            &mut app,
            Msg::Done {
                req: ReqId(1),
                outcome: found("Ervin", Source::Cache),
            },
        );
        let Status::Found {
            summary, detail, ..
        } = &app.rows[1].status
        else {
            panic!("{:?}", app.rows[1].status)
        };
        assert_eq!(summary, "Ervin");
        assert_eq!(
            texts(detail),
            ["id: 1", "name: Ervin", "address:", "  city: X"]
        );
        assert!(app.rows[0].is_pending());
        assert_eq!((app.stats.in_flight, app.stats.found), (1, 1));
        assert_eq!(app.stats.cache_hits, 1);
        // A cache hit's 0 ms is no time of the API's: no percentile yet.
        app.prepare_frame();
        assert_eq!(app.stats.percentiles, None);
        update(
            &mut app,
            Msg::Done {
                req: ReqId(0),
                outcome: found("Leanne", Source::Api),
            },
        );
        app.prepare_frame();
        assert_eq!(
            app.stats.percentiles,
            Some((Duration::from_millis(300), Duration::from_millis(300)))
        );
    }

    /// Nearest rank, as batch's summary: the median of two latencies is the lower one, and
    /// p95 of twenty the nineteenth.
    #[test]
    fn percentiles_are_nearest_rank() {
        let mut stats = Stats {
            latencies: vec![508_000, 357_000],
            stale: true,
            ..Stats::default()
        };
        stats.refresh();
        let ms = Duration::from_millis;
        assert_eq!(stats.percentiles, Some((ms(357), ms(508))));
        stats.latencies = (1..=20).map(|i| i * 1000).collect();
        stats.stale = true;
        stats.refresh();
        assert_eq!(stats.percentiles, Some((ms(10), ms(19))));
    }

    #[test]
    fn cancel_then_a_late_result_is_dropped() {
        let mut app = app();
        type_text(&mut app, "7");
        update(&mut app, key(KeyCode::Enter));
        update(&mut app, Msg::Started(ReqId(0)));
        app.now += Duration::from_millis(400);
        assert_eq!(
            update(&mut app, key(KeyCode::Esc)),
            vec![Effect::Cancel(ReqId(0))]
        );
        assert_eq!((app.stats.in_flight, app.stats.cancelled), (0, 1));
        update(
            &mut app,
            Msg::Done {
                req: ReqId(0),
                outcome: found("Late", Source::Api),
            },
        );
        assert!(matches!(
            app.rows[0].status,
            Status::Cancelled { after } if after == Some(Duration::from_millis(400))
        ));
        assert_eq!(app.stats.found, 0);
        // A second Esc has nothing left to cancel.
        assert!(update(&mut app, key(KeyCode::Esc)).is_empty());
        // Results for requests that never existed are ignored too.
        update(
            &mut app,
            Msg::Done {
                req: ReqId(99),
                outcome: found("Ghost", Source::Api),
            },
        );
        assert_eq!(app.rows.len(), 1);
    }

    #[test]
    fn tab_moves_the_selection_that_esc_cancels() {
        let mut app = app();
        for id in ["1", "2"] {
            type_text(&mut app, id);
            update(&mut app, key(KeyCode::Enter));
        }
        update(&mut app, key(KeyCode::BackTab));
        assert_eq!(app.selected, Some(0));
        update(&mut app, key(KeyCode::BackTab));
        assert_eq!(app.selected, Some(0));
        assert_eq!(
            update(&mut app, key(KeyCode::Esc)),
            vec![Effect::Cancel(ReqId(0))]
        );
        update(&mut app, key(KeyCode::Tab));
        update(&mut app, key(KeyCode::Tab));
        assert_eq!(app.selected, Some(1));
    }

    #[test]
    fn ctrl_home_and_ctrl_end_select_the_first_and_last_rows() {
        let mut app = app();
        let ctrl = |code| KeyEvent::new(code, KeyModifiers::CONTROL);
        update(&mut app, Msg::Key(ctrl(KeyCode::Home)));
        assert_eq!(app.selected, None, "no rows, nothing to select");
        for id in ["1", "2", "3"] {
            type_text(&mut app, id);
            update(&mut app, key(KeyCode::Enter));
        }
        type_text(&mut app, "45");
        update(&mut app, Msg::Key(ctrl(KeyCode::Home)));
        assert_eq!(app.selected, Some(0));
        update(&mut app, Msg::Key(ctrl(KeyCode::End)));
        assert_eq!(app.selected, Some(2));
        // The line being typed keeps its cursor; plain Home still moves that.
        assert_eq!((app.input.as_str(), app.cursor), ("45", 2));
        update(&mut app, key(KeyCode::Home));
        assert_eq!((app.selected, app.cursor), (Some(2), 0));
    }

    /// Held back by the loop (the open-file limit), a lookup is queued, and its time against
    /// --timeout runs from when it starts, not from when it was typed.
    #[test]
    fn a_lookup_is_queued_until_the_loop_starts_it_and_its_time_runs_from_then() {
        let mut app = app();
        for id in ["1", "2"] {
            type_text(&mut app, id);
            update(&mut app, key(KeyCode::Enter));
        }
        assert_eq!((app.stats.in_flight, app.stats.queued), (2, 2));
        assert!(matches!(app.rows[0].status, Status::Queued));
        app.now += Duration::from_secs(30);
        update(&mut app, Msg::Started(ReqId(0)));
        assert!(matches!(
            app.rows[0].status,
            Status::Pending { retry: None }
        ));
        assert_eq!(app.rows[0].started, app.now);
        assert_eq!(app.stats.queued, 1);
        // Cancelled while queued: no longer counted, and a late start changes nothing.
        app.selected = Some(1);
        assert_eq!(
            update(&mut app, key(KeyCode::Esc)),
            vec![Effect::Cancel(ReqId(1))]
        );
        assert_eq!((app.stats.in_flight, app.stats.queued), (1, 0));
        update(&mut app, Msg::Started(ReqId(1)));
        assert!(matches!(
            app.rows[1].status,
            Status::Cancelled { after: None }
        ));
        assert_eq!(app.stats.queued, 0);
    }

    #[test]
    fn a_retry_shows_a_countdown_and_the_next_attempt() {
        let mut app = app();
        type_text(&mut app, "5");
        update(&mut app, key(KeyCode::Enter));
        update(&mut app, Msg::Started(ReqId(0)));
        // The second attempt failed: the third comes next.
        let notice = RetryNotice {
            failed_attempt: 2,
            max_attempts: 4,
            delay: Duration::from_millis(2100),
            error: FetchError::new(ErrorKind::ServerError, 2, "server answered 503\u{1b}[2J"),
        };
        update(
            &mut app,
            Msg::Retrying {
                req: ReqId(0),
                notice,
            },
        );
        let Status::Pending { retry: Some(retry) } = &app.rows[0].status else {
            panic!()
        };
        assert_eq!(retry.until, app.now + Duration::from_millis(2100));
        assert_eq!((retry.next_attempt, retry.max_attempts), (3, 4));
        assert!(!retry.reason.contains('\u{1b}'));
        // Not "gave up": it is being retried.
        assert_eq!(retry.reason, "server answered 503\u{fffd}[2J");
    }

    #[test]
    fn errors_and_not_found_are_counted_apart() {
        let mut app = app();
        for id in ["1", "2"] {
            type_text(&mut app, id);
            update(&mut app, key(KeyCode::Enter));
        }
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
                outcome: Err(FetchError::new(ErrorKind::Timeout, 4, "no answer\u{9b}31m")),
            },
        );
        assert!(matches!(app.rows[0].status, Status::NotFound { .. }));
        // The 404 is an answer of the API's, timed; the failure is not.
        assert_eq!(app.stats.latencies.len(), 1);
        let Status::Failed { message, .. } = &app.rows[1].status else {
            panic!()
        };
        assert_eq!(message, "no answer\u{fffd}31m; gave up after 4 attempts");
        assert_eq!((app.stats.not_found, app.stats.errors), (1, 1));
        assert!(!app.animating());
    }

    /// An id submitted in sync mode while a paste's others wait would freeze the screen in
    /// its turn; switched to async, or cancelled before its turn, it never does, and the
    /// title must not keep saying the screen is frozen.
    #[test]
    fn a_queued_sync_id_that_goes_async_or_is_cancelled_leaves_no_freeze_said() {
        let mut app = app();
        update(&mut app, key(KeyCode::F(2)));
        type_text(&mut app, "9");
        update(&mut app, key(KeyCode::Enter));
        assert_eq!(app.frozen_on, Some(ReqId(0)));
        update(&mut app, key(KeyCode::F(2)));
        assert_eq!(app.mode, Mode::Async);
        assert_eq!(app.frozen_on, None);

        update(&mut app, key(KeyCode::F(2)));
        type_text(&mut app, "8");
        update(&mut app, key(KeyCode::Enter));
        assert_eq!(app.frozen_on, Some(ReqId(1)));
        let effects = update(&mut app, key(KeyCode::Esc));
        assert!(
            matches!(effects[..], [Effect::Cancel(ReqId(1))]),
            "{effects:?}"
        );
        assert_eq!(app.frozen_on, None);
    }

    /// Alt with a key means nothing on the prompt: Alt-q does not quit.
    #[test]
    fn alt_q_does_not_quit() {
        let mut app = app();
        let effects = update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::ALT)),
        );
        assert!(effects.is_empty(), "{effects:?}");
        assert!(!app.quit);
    }

    #[test]
    fn f2_toggles_sync_mode_and_a_sync_lookup_freezes_the_screen() {
        let mut app = app();
        update(&mut app, key(KeyCode::F(2)));
        assert_eq!(app.mode, Mode::Sync);
        type_text(&mut app, "3");
        let effects = update(&mut app, key(KeyCode::Enter));
        assert!(matches!(
            effects[..],
            [Effect::Lookup {
                mode: Mode::Sync,
                ..
            }]
        ));
        assert_eq!(app.frozen_on, Some(ReqId(0)));
        update(&mut app, Msg::Froze(Duration::from_millis(650)));
        assert_eq!(app.frozen_on, None);
        assert_eq!(app.meter.last_freeze, Some(Duration::from_millis(650)));
        // A health check timed across the freeze is dropped; the next one counts.
        app.now += Duration::from_millis(5);
        update(&mut app, Msg::Health(Ok(Duration::from_millis(655))));
        assert!(app.health.is_none(), "{:?}", app.health);
        // So is one that timed out across it.
        let timed_out = || Msg::Health(Err(FetchError::new(ErrorKind::Timeout, 1, "no answer")));
        update(&mut app, timed_out());
        assert!(app.health.is_none(), "{:?}", app.health);
        app.now += Duration::from_secs(2);
        update(&mut app, Msg::Health(Ok(Duration::from_millis(3))));
        assert_eq!(
            app.health.as_ref().map(|h| h.result.clone()),
            Some(Ok(Duration::from_millis(3)))
        );
        update(&mut app, key(KeyCode::F(2)));
        assert_eq!(app.mode, Mode::Async);
    }

    #[test]
    fn the_meter_counts_recent_frames_and_the_longest_gap() {
        let mut app = app();
        let t0 = app.now;
        for i in 0..10u64 {
            app.now = t0 + Duration::from_millis(100 * i);
            let gap = (i == 3).then_some(Duration::from_millis(250));
            update(
                &mut app,
                Msg::Frame {
                    gap,
                    input_to_draw: None,
                },
            );
        }
        assert_eq!(app.meter.fps(app.now), 10);
        assert_eq!(
            app.meter.longest_gap(app.now),
            Some(Duration::from_millis(250))
        );
        app.now += Duration::from_secs(10);
        app.prepare_frame();
        assert_eq!(app.meter.fps(app.now), 0);
        assert_eq!(app.meter.longest_gap(app.now), None);
    }

    #[test]
    fn hostile_record_text_is_sanitized_for_the_screen() {
        let mut app = app();
        type_text(&mut app, "1");
        update(&mut app, key(KeyCode::Enter));
        update(
            &mut app,
            Msg::Done {
                req: ReqId(0),
                outcome: found("M\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{9b}\u{202e}x", Source::Api),
            },
        );
        let Status::Found {
            summary, detail, ..
        } = &app.rows[0].status
        else {
            panic!()
        };
        for text in std::iter::once(summary).chain(detail.iter().map(|l| &l.text)) {
            assert!(!text.chars().any(crate::term::is_unsafe), "{text:?}");
        }
    }
}
