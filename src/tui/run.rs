//! The loop: terminal events, lookup results and background messages in, frames out.
//!
//! Generic over the backend and the input stream, so the same loop runs on a real terminal,
//! on `TestBackend` in a benchmark, or in a scripted demo.
//!
//! Lookups are futures polled by this loop (not spawned tasks): the loop itself decides how
//! much of its thread they get, and with `biased` select a due frame always comes first, so
//! ten thousand answers arriving together delay a frame by one answer's work, not by all of
//! them. Their HTTP connections still run as the client's own tasks.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crossterm::event::{Event as TermEvent, KeyEventKind};
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::app::{App, Effect, Mode, Msg, ReqId, update};
use super::tasks::{self, Blocking};
use super::view::view;
use crate::engine::{Engine, Event, Outcome};
use crate::id::UserId;

/// What the loop needs besides the screen and the input.
#[derive(Clone)]
pub struct Context {
    pub engine: Engine,
    /// The shortest time between two frames.
    pub frame_interval: Duration,
    pub health_every: Duration,
    /// Whether the terminal holds input not read yet (keys pressed during a sync freeze);
    /// `None` where there is no terminal (the headless demo).
    pub unread_input: Option<fn() -> bool>,
    /// What the terminal does while a sync lookup blocks, held until it ends (Ctrl-C sends
    /// SIGINT); `None` where there is no terminal (the headless demo).
    pub while_blocked: Option<fn() -> Box<dyn std::any::Any>>,
    /// Lookups in flight at most (the open-file limit, over HTTP/1.1); the rest wait their
    /// turn in submission order.
    pub max_in_flight: Option<u32>,
    /// Cancelled when something panicked outside the loop (a spawned task, another thread):
    /// the loop ends rather than go on without its part, on a terminal already restored.
    pub panicked: CancellationToken,
}

impl Context {
    pub fn new(engine: Engine) -> Context {
        Context {
            engine,
            // 60 fps: smooth for a bar, and the budget the responsiveness targets assume.
            frame_interval: Duration::from_micros(16_667),
            health_every: Duration::from_secs(2),
            unread_input: None,
            while_blocked: None,
            max_in_flight: None,
            panicked: CancellationToken::new(),
        }
    }
}

/// Every frame the loop drew, for benchmarks and demos that want more than the on-screen meter.
#[derive(Debug, Default, Clone)]
pub struct FrameLog {
    /// When each frame was on the backend.
    pub drawn: Vec<Instant>,
    /// The gap before each frame drawn while an animation ran (see [`Msg::Frame`]).
    pub gaps: Vec<Duration>,
    /// Lookups in flight at each frame.
    pub in_flight: Vec<usize>,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `q`, or the input ended.
    Quit,
    /// Ctrl-C.
    Interrupted,
}

/// Tokio's timers fire on whole milliseconds, rounding up. Waking up to this much early and
/// counting the frame as due keeps frames on time instead of a millisecond late each.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// New lookups handed to `inflight` per turn of the loop. `FuturesUnordered` polls every
/// newly added future before it returns, and none of them finishes on its first poll: ten
/// thousand submitted at once would be one long stall. In batches, a frame waits for at most
/// this many first polls (measured: 2,500 at once held a frame for ~5 ms).
const START_BATCH: usize = 32;

/// New lookups started between two frames. The HTTP/2 connection task encodes every new
/// request's headers in one go, on this same thread; unpaced, a burst of thousands held a
/// frame for several milliseconds. At 60 fps this still starts 30,000 lookups a second.
const STARTS_PER_FRAME: usize = 500;

type Lookup = Pin<Box<dyn Future<Output = (ReqId, Outcome)>>>;

/// Keys pressed during a sync freeze are read before the next queued freeze (the rest of a
/// paste) begins. Right after a freeze they are not always readable from the event stream:
/// crossterm hands them over from its own reader thread (~3 ms here, more on a busy machine).
/// So after a freeze long enough for a key to be pressed in it ([`KEYS_FREEZE`]) the next
/// one waits [`KEYS_GRACE`], and longer while the terminal holds unread input (a step at a
/// time, this long at most); after a short one (a cached id) it begins at once.
const KEYS_AFTER_A_FREEZE: Duration = Duration::from_secs(1);
const KEYS_STEP: Duration = Duration::from_millis(5);
const KEYS_FREEZE: Duration = Duration::from_millis(100);
const KEYS_GRACE: Duration = Duration::from_millis(100);

/// Runs until the user quits. Every lookup still in flight is cancelled on the way out, as is
/// every background task (dropping their futures is the cancellation).
pub async fn run<B, S>(
    terminal: &mut Terminal<B>,
    mut input: S,
    app: &mut App,
    ctx: &Context,
    mut log: Option<&mut FrameLog>,
) -> anyhow::Result<Exit>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
    S: Stream<Item = io::Result<TermEvent>> + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    // What the cache thread would say on stderr, which the screen covers, goes to the notice
    // row instead; the guard takes the route away with the screen.
    let notes = tx.clone();
    crate::console::notes_to_screen(Some(Box::new(move |text| {
        let _ = notes.send(Msg::Note(text));
    })));
    let _notes_on_exit = NotesOnScreen;
    tasks::spawn_clock(tx.clone(), stop.child_token());
    tasks::spawn_health(
        ctx.engine.client().clone(),
        ctx.health_every,
        tx.clone(),
        stop.child_token(),
    );

    let mut state = LoopState {
        tx,
        stop,
        inflight: FuturesUnordered::new(),
        starting: VecDeque::new(),
        started_this_frame: 0,
        tokens: HashMap::new(),
        blocking: None,
        blocking_next: VecDeque::new(),
        next_blocking: Instant::now(),
        thawed: Instant::now(),
        keys_seen: false,
        max_in_flight: ctx.max_in_flight,
        said_held_back: false,
        frame_interval: ctx.frame_interval,
        dirty: true,
        next_frame: Instant::now(),
        last_frame: None,
        oldest_input: None,
    };

    loop {
        // Before a frame is drawn, so that a lookup just submitted shows as started when it
        // has room, not as queued for a frame.
        state.start_some(app);
        let now = Instant::now();
        let wants_frame = state.dirty || app.animating();
        if wants_frame && now + TIMER_SLACK >= state.next_frame {
            state.draw(terminal, app, log.as_deref_mut())?;
            continue;
        }
        if !state.said_held_back && !state.starting.is_empty() && state.at_most_in_flight() {
            // Said once: more lookups than the open-file limit allows sockets for would fail
            // as "Too many open files" and read as the API being down.
            state.said_held_back = true;
            app.notice = Some(format!(
                "{} lookups at a time at most: over HTTP/1.1 each needs a socket, and the \
                 open-file limit allows no more; the rest wait their turn (raise ulimit -n, \
                 or pass --http2 if the API speaks it)",
                state.max_in_flight.unwrap_or_default()
            ));
            state.dirty = true;
        }
        let early = state.next_frame.checked_sub(TIMER_SLACK);
        let deadline = tokio::time::Instant::from_std(early.unwrap_or(state.next_frame));
        tokio::select! {
            // Order matters: a due frame first, then the person typing, then everything else.
            biased;
            () = ctx.panicked.cancelled() => return Err(anyhow::anyhow!(
                "the screen stopped after an internal error (the panic reported above)"
            )),
            () = tokio::time::sleep_until(deadline), if wants_frame => {}
            event = input.next() => match event {
                Some(Ok(event)) => {
                    if let Some(exit) = state.on_terminal_event(terminal, app, ctx, event, log.as_deref_mut())? {
                        return Ok(exit);
                    }
                }
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("cannot read the terminal")),
                None => return Ok(Exit::Quit),
            },
            // A sync lookup submitted, once what was typed before it has been read.
            () = tokio::time::sleep_until(state.next_blocking.into()), if !state.blocking_next.is_empty() => {
                let unread = ctx.unread_input.is_some_and(|unread| unread());
                let waited = state.thawed.elapsed() >= KEYS_AFTER_A_FREEZE;
                if (unread || state.keys_seen) && !waited {
                    state.keys_seen = unread;
                    state.next_blocking = Instant::now() + KEYS_STEP;
                } else if let Some((req, id)) = state.blocking_next.pop_front()
                    && let Some(exit) = state.block_on_lookup(terminal, app, ctx, req, &id, log.as_deref_mut())?
                {
                    return Ok(exit);
                }
            }
            Some(msg) = rx.recv() => {
                app.now = Instant::now();
                update(app, msg);
                state.dirty = true;
            }
            Some((req, outcome)) = state.inflight.next(), if !state.inflight.is_empty() => {
                state.tokens.remove(&req);
                app.now = Instant::now();
                update(app, Msg::Done { req, outcome });
                state.dirty = true;
            }
            // Come round again for the next batch of lookups to start.
            () = std::future::ready(()), if state.may_start() => {}
        }
    }
}

/// Ends the route of [`crate::console::notes_to_screen`] when the loop ends, however it ends.
struct NotesOnScreen;

impl Drop for NotesOnScreen {
    fn drop(&mut self) {
        crate::console::notes_to_screen(None);
    }
}

struct LoopState {
    tx: mpsc::UnboundedSender<Msg>,
    stop: CancellationToken,
    inflight: FuturesUnordered<Lookup>,
    /// Lookups submitted but not yet handed to `inflight`; see [`START_BATCH`].
    starting: VecDeque<(ReqId, Lookup)>,
    started_this_frame: usize,
    tokens: HashMap<ReqId, CancellationToken>,
    blocking: Option<Blocking>,
    /// Sync-mode lookups submitted and not yet run (more than one from a paste).
    blocking_next: VecDeque<(ReqId, UserId)>,
    /// When the next of them may begin; see [`KEYS_AFTER_A_FREEZE`].
    next_blocking: Instant,
    /// When the last sync freeze ended.
    thawed: Instant,
    /// Unread input was seen at the last look: one more step before the next freeze.
    keys_seen: bool,
    /// See [`Context::max_in_flight`].
    max_in_flight: Option<u32>,
    said_held_back: bool,
    frame_interval: Duration,
    dirty: bool,
    /// The earliest moment the next frame may be drawn.
    next_frame: Instant,
    /// When the last frame was drawn, and whether an animation was running then.
    last_frame: Option<(Instant, bool)>,
    /// The first key not yet shown on screen.
    oldest_input: Option<Instant>,
}

impl LoopState {
    fn draw<B>(
        &mut self,
        terminal: &mut Terminal<B>,
        app: &mut App,
        log: Option<&mut FrameLog>,
    ) -> anyhow::Result<()>
    where
        B: Backend,
        B::Error: Send + Sync + 'static,
    {
        app.now = Instant::now();
        app.prepare_frame();
        terminal
            .draw(|frame| view(app, frame))
            .map_err(|e| anyhow::Error::new(e).context("cannot draw on the terminal"))?;
        let drawn = Instant::now();
        let gap = match self.last_frame {
            Some((at, true)) => Some(drawn.saturating_duration_since(at)),
            _ => None,
        };
        let input_to_draw = self
            .oldest_input
            .take()
            .map(|t| drawn.saturating_duration_since(t));
        if let Some(log) = log {
            log.drawn.push(drawn);
            log.gaps.extend(gap);
            log.in_flight.push(app.stats.in_flight);
        }
        app.now = drawn;
        update(app, Msg::Frame { gap, input_to_draw });
        // A long gap (a sync freeze, above all) should be on screen at once, not whenever
        // the next tick happens to draw.
        let stalled = gap.is_some_and(|g| g > 2 * self.frame_interval);
        self.last_frame = Some((drawn, app.animating()));
        // Frames keep to a fixed grid while on time, so timer rounding doesn't add up into a
        // slower rate; after a stall (or idle time) the grid starts again from now.
        let on_grid = self.next_frame + self.frame_interval;
        self.next_frame = if on_grid > drawn {
            on_grid
        } else {
            drawn + self.frame_interval
        };
        self.dirty = stalled;
        self.started_this_frame = 0;
        Ok(())
    }

    fn on_terminal_event<B>(
        &mut self,
        terminal: &mut Terminal<B>,
        app: &mut App,
        ctx: &Context,
        event: TermEvent,
        log: Option<&mut FrameLog>,
    ) -> anyhow::Result<Option<Exit>>
    where
        B: Backend,
        B::Error: Send + Sync + 'static,
    {
        let msg = match event {
            // Draws the whole screen again: after a stop and resume, or anything else that
            // wrote on the terminal behind the screen's back.
            TermEvent::Key(key) if super::is_ctrl(&key, 'l') => {
                // Not `Terminal::clear`, which asks the terminal where its cursor is: the answer
                // comes in on stdin, where the event reader takes it. Cleared by hand, then a
                // blank frame makes ratatui's idea of the screen match it, so the next frame
                // writes every cell.
                terminal
                    .backend_mut()
                    .clear_region(ratatui::backend::ClearType::All)?;
                terminal.draw(|_| {})?;
                self.dirty = true;
                // After a stop (Ctrl-Z, then fg) the time stopped is no frame gap of the
                // screen's, and a health check timed across it timed nothing of the API's.
                self.last_frame = None;
                app.thawed_at = Some(Instant::now());
                return Ok(None);
            }
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => Msg::Key(key),
            TermEvent::Paste(text) => Msg::Paste(text),
            TermEvent::Resize(..) => {
                self.dirty = true;
                return Ok(None);
            }
            _ => return Ok(None),
        };
        let now = Instant::now();
        self.oldest_input.get_or_insert(now);
        app.now = now;
        let effects = update(app, msg);
        self.dirty = true;
        let queued_before = !self.blocking_next.is_empty();
        for effect in effects {
            match effect {
                Effect::Quit => {
                    return Ok(Some(if app.interrupted {
                        Exit::Interrupted
                    } else {
                        Exit::Quit
                    }));
                }
                Effect::Cancel(req) => {
                    if let Some(token) = self.tokens.remove(&req) {
                        token.cancel();
                    }
                    // A lookup not yet begun is not begun at all.
                    self.blocking_next.retain(|(queued, _)| *queued != req);
                    self.starting.retain(|(queued, _)| *queued != req);
                }
                Effect::Lookup {
                    req,
                    id,
                    mode: Mode::Async,
                } => self.queue_lookup(ctx, req, id),
                Effect::QueuedRunAsync => {
                    for (req, id) in std::mem::take(&mut self.blocking_next) {
                        self.queue_lookup(ctx, req, id);
                    }
                }
                Effect::Lookup {
                    req,
                    id,
                    mode: Mode::Sync,
                } => self.blocking_next.push_back((req, id)),
            }
        }
        // The first blocks now, while the key that asked for it is handled, as a sync
        // program would. The rest (the other lines of a paste) wait for the loop, so that
        // what was typed during one freeze (Ctrl-C above all) is read before the next.
        if !queued_before && let Some((req, id)) = self.blocking_next.pop_front() {
            return self.block_on_lookup(terminal, app, ctx, req, &id, log);
        }
        Ok(None)
    }

    fn may_start(&self) -> bool {
        !self.starting.is_empty()
            && self.started_this_frame < STARTS_PER_FRAME
            && !self.at_most_in_flight()
    }

    fn at_most_in_flight(&self) -> bool {
        self.max_in_flight
            .is_some_and(|max| self.inflight.len() >= max as usize)
    }

    fn start_some(&mut self, app: &mut App) {
        for _ in 0..START_BATCH {
            if !self.may_start() {
                return;
            }
            if let Some((req, lookup)) = self.starting.pop_front() {
                self.inflight.push(lookup);
                self.started_this_frame += 1;
                app.now = Instant::now();
                update(app, Msg::Started(req));
                self.dirty = true;
            }
        }
    }

    /// Queues a lookup's future to be polled by the loop (not spawned: see the module's
    /// doc), with its own cancel token and retry notices sent to the loop.
    fn queue_lookup(&mut self, ctx: &Context, req: ReqId, id: UserId) {
        let token = self.stop.child_token();
        self.tokens.insert(req, token.clone());
        let engine = ctx.engine.clone();
        let tx = self.tx.clone();
        self.starting.push_back((
            req,
            Box::pin(async move {
                let mut on_event = |event: Event| {
                    if let Event::Retrying(notice) = event {
                        let _ = tx.send(Msg::Retrying { req, notice });
                    }
                };
                let outcome = engine.lookup(&id, &token, &mut on_event).await;
                (req, outcome)
            }),
        ));
    }

    /// Sync mode: show that the screen is about to freeze, then really freeze it. A signal
    /// that ended the freeze (Ctrl-C among them, on the screen) ends the loop: read as a key
    /// after the freeze, it could come after the next id's freeze had begun.
    fn block_on_lookup<B>(
        &mut self,
        terminal: &mut Terminal<B>,
        app: &mut App,
        ctx: &Context,
        req: ReqId,
        id: &UserId,
        log: Option<&mut FrameLog>,
    ) -> anyhow::Result<Option<Exit>>
    where
        B: Backend,
        B::Error: Send + Sync + 'static,
    {
        app.now = Instant::now();
        update(app, Msg::Started(req));
        // Set here, not only at submit: the other ids of a paste freeze the screen in turn.
        app.frozen_on = Some(req);
        self.draw(terminal, app, log)?;
        if self.blocking.is_none() {
            self.blocking = Some(Blocking::new(&ctx.engine)?);
        }
        let started = Instant::now();
        let (outcome, signalled) = match &self.blocking {
            Some(blocking) => blocking.lookup(id, &self.stop, ctx.while_blocked),
            None => (Err(crate::client::FetchError::cancelled(0)), false),
        };
        let held = started.elapsed();
        self.thawed = Instant::now();
        self.next_blocking = if held >= KEYS_FREEZE {
            self.thawed + KEYS_GRACE
        } else {
            self.thawed
        };
        self.keys_seen = false;
        app.now = Instant::now();
        update(app, Msg::Done { req, outcome });
        update(app, Msg::Froze(held));
        self.dirty = true;
        if signalled {
            app.interrupted = true;
            return Ok(Some(Exit::Interrupted));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, ClientConfig, UrlTemplate};
    use ratatui::backend::TestBackend;

    /// A panic caught outside the loop (a spawned task's, another thread's) cancels the
    /// token; the loop ends with an error instead of drawing on, keys or no keys.
    #[tokio::test]
    async fn the_loop_ends_when_something_panicked() {
        let template = UrlTemplate::parse("http://127.0.0.1:9/users/{id}").unwrap();
        let client = Client::new(ClientConfig::new(template)).unwrap();
        let engine = Engine::new(client, None, Duration::from_secs(60), "test");
        let ctx = Context::new(engine);
        let config = crate::tui::app::Config {
            threads: 1,
            timeout: Duration::from_secs(10),
            mode: crate::tui::app::Mode::Async,
            api: "test".into(),
            demo_users: None,
            color: false,
        };
        let mut app = App::new(config, Instant::now());
        let mut terminal = Terminal::new(TestBackend::new(80, 20)).unwrap();
        ctx.panicked.cancel();
        let ended = tokio::time::timeout(
            Duration::from_secs(30),
            run(
                &mut terminal,
                futures::stream::pending(),
                &mut app,
                &ctx,
                None,
            ),
        )
        .await
        .expect("the loop went on after a panic");
        let error = ended.expect_err("a panic is no way to quit");
        assert!(error.to_string().contains("internal error"), "{error}");
    }
}
