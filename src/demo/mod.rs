//! `userfetch demo`: the same scripted session run sync and async through the real
//! interactive loop (headless), measured on one clock and drawn as a timeline.
//!
//! Nothing is simulated: the loop, the view, the engine and the HTTP client are the ones the
//! interactive screen uses; only the terminal is a `TestBackend` and the keyboard a script.
//! The demo API runs on its own thread with a fixed latency, so every lookup takes the same
//! time and the two modes differ only in how they wait.

pub mod timeline;

use crate::console::{note, say};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use futures::Stream;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cli::{DemoArgs, GlobalOpts};
use crate::exit::{ExitCode, usage};
use crate::server::{self, ServerConfig};
use crate::session::Session;
use crate::tui::app::{App, Config, Mode, Status};
use crate::tui::run::{self, Context, FrameLog};
use timeline::{Key, Run, Span};

/// The background ticker's period: 10 Hz, fast enough that a freeze visibly eats ticks.
pub const TICK: Duration = Duration::from_millis(100);

/// A wait worth saying ahead of a run.
const LONG_WAIT: Duration = Duration::from_secs(30);

/// The width of the text report when stdout is not a terminal.
const REPORT_WIDTH: usize = 100;

/// Both scenarios, both modes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One lookup while the person keeps typing.
    pub typing: Vec<Run>,
    /// Several lookups submitted back to back.
    pub many: Vec<Run>,
    #[serde(with = "timeline::millis")]
    pub latency: Duration,
    pub lookups: usize,
}

/// The demo API answers after exactly `latency`: any shorter limit fails every lookup.
fn timeout_outlasts(opts: &GlobalOpts, latency: Duration) -> anyhow::Result<()> {
    if opts.timeout <= latency {
        let from = if opts.timeout_from_env {
            " (the value comes from USERFETCH_TIMEOUT)"
        } else {
            ""
        };
        return Err(usage(format!(
            "--timeout {}{from} is not longer than --latency {}: every lookup would time out",
            humantime::format_duration(opts.timeout),
            humantime::format_duration(latency)
        )));
    }
    Ok(())
}

/// Runs both scenarios against a demo API with a fixed `latency`.
pub async fn measure(
    opts: &GlobalOpts,
    latency: Duration,
    lookups: usize,
) -> anyhow::Result<Report> {
    timeout_outlasts(opts, latency)?;
    let api = tokio::task::spawn_blocking(move || {
        server::start_in_thread(ServerConfig {
            latency,
            ..ServerConfig::default()
        })
    })
    .await?
    .context("cannot start the demo API")?;
    let opts = GlobalOpts {
        api: Some(api.url_template()),
        api_in_process: true,
        // A cache would answer the second run's lookups at once and hide the difference.
        no_cache: true,
        ..opts.clone()
    };
    let session = Session::start(&opts).await?;
    // The demo API runs in this process: each lookup over HTTP/1.1 holds both ends of its
    // connections, up to four of its files.
    let ctx = Context {
        max_in_flight: crate::open_files::lookups_at_once(
            session.engine.client().config().http2,
            session.engine.client().config().direct,
        ),
        ..Context::new(session.engine.clone())
    };

    let typing_script = typing(latency);
    let many_script = many(latency, lookups);
    let mut report = Report {
        typing: Vec::new(),
        many: Vec::new(),
        latency,
        lookups,
    };
    for mode in [Mode::Sync, Mode::Async] {
        report
            .typing
            .push(session_run(&ctx, &opts, mode, &typing_script).await?);
    }
    for mode in [Mode::Sync, Mode::Async] {
        report
            .many
            .push(session_run(&ctx, &opts, mode, &many_script).await?);
    }
    session.close().await;
    api.shutdown().await;
    Ok(report)
}

/// What the scripted person does: keys at fixed offsets, then leaving at `end`.
#[derive(Debug, Clone)]
struct Script {
    keys: Vec<(Duration, KeyEvent)>,
    end: Duration,
}

fn press(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// Type an id, press Enter, keep typing while it loads.
fn typing(latency: Duration) -> Script {
    let ms = Duration::from_millis;
    let mut keys = vec![
        (ms(200), press(KeyCode::Char('4'))),
        (ms(300), press(KeyCode::Char('2'))),
        (ms(400), press(KeyCode::Enter)),
    ];
    for (i, c) in "1789".chars().enumerate() {
        keys.push((
            ms(400) + latency.mul_f64((i + 1) as f64 / 5.0),
            press(KeyCode::Char(c)),
        ));
    }
    Script {
        keys,
        end: ms(400) + latency + ms(600),
    }
}

/// The scripted typist's pace when submitting ids back to back.
const KEY_GAP: Duration = Duration::from_millis(10);

/// `n` ids submitted back to back, [`KEY_GAP`] per key.
fn many(latency: Duration, n: usize) -> Script {
    let mut at = Duration::from_millis(200);
    let mut keys = Vec::new();
    for id in 1..=n {
        for c in id
            .to_string()
            .chars()
            .map(KeyCode::Char)
            .chain([KeyCode::Enter])
        {
            keys.push((at, press(c)));
            at += KEY_GAP;
        }
    }
    Script {
        keys,
        end: at + latency + Duration::from_millis(500),
    }
}

/// What to say ahead of a demo that will take [`LONG_WAIT`] or more, and why: the sync run of
/// the second scenario waits out every lookup in turn, and each run of it types its ids at
/// [`KEY_GAP`] a key (1000 ids at 0 ms took 80 s with nothing said).
fn long_run(latency: Duration, lookups: usize) -> Option<String> {
    let typing = typing(latency).end;
    let many = many(latency, lookups);
    let sync_waits = latency.saturating_mul(u32::try_from(lookups).unwrap_or(u32::MAX));
    // The sync run's lookups after the first wait in turn; the async run's wait together.
    let total = (typing + many.end).saturating_mul(2) + sync_waits.saturating_sub(latency);
    if total < LONG_WAIT {
        return None;
    }
    let whole = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    let typed = many.keys.last().map_or(Duration::ZERO, |(at, _)| *at);
    let mut why = Vec::new();
    if typed >= LONG_WAIT / 3 {
        why.push(format!(
            "each run types its {} at {} ms a key",
            crate::console::count(lookups as u64, "id", "ids"),
            KEY_GAP.as_millis()
        ));
    }
    if sync_waits >= LONG_WAIT / 3 {
        why.push(format!(
            "the sync run waits {} for its {}, one after another",
            whole(sync_waits),
            crate::console::count(lookups as u64, "lookup", "lookups")
        ));
    }
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(": {}", why.join(", and "))
    };
    Some(format!(
        "userfetch: the demo takes about {}{why}",
        whole(total)
    ))
}

/// One pass of a script through the interactive loop in one mode.
async fn session_run(
    ctx: &Context,
    opts: &GlobalOpts,
    mode: Mode,
    script: &Script,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut app = App::new(
        Config {
            threads: opts.threads,
            timeout: opts.timeout,
            mode,
            api: "demo API".into(),
            demo_users: Some(crate::server::ServerConfig::default().users),
            color: false,
        },
        start,
    );
    let mut terminal = Terminal::new(TestBackend::new(100, 30))?;
    let mut log = FrameLog::default();
    let keys = Rc::new(RefCell::new(Vec::new()));
    let ticks = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    tokio::spawn(ticker(start, ticks.clone(), stop.clone()));
    let input = scripted(start, script.clone(), keys.clone());
    let ended = run::run(&mut terminal, input, &mut app, ctx, Some(&mut log)).await;
    stop.cancel();
    if ended? == run::Exit::Interrupted {
        return Err(Stopped.into());
    }
    let total = start.elapsed();

    if let Some(why) = no_user(&app, mode) {
        anyhow::bail!(why);
    }
    if let Some(said) = unanswered(&app, mode) {
        note!("{said}");
    }

    let since = |t: Instant| t.saturating_duration_since(start);
    let lookups = app
        .rows
        .iter()
        .filter_map(|row| {
            let latency = match &row.status {
                Status::Found { latency, .. }
                | Status::NotFound { latency }
                | Status::Failed { latency, .. } => *latency,
                Status::Cancelled { after: Some(after) } => *after,
                Status::Cancelled { after: None } => return None,
                Status::Queued | Status::Pending { .. } => return None,
            };
            Some(Span {
                start: since(row.started),
                end: since(row.started) + latency,
            })
        })
        .collect();
    let ticks = ticks.lock().map(|t| t.clone()).unwrap_or_default();
    let keys = keys.borrow().clone();
    Ok(Run {
        label: mode.label().to_lowercase(),
        threads: threads_used(mode),
        total,
        frame_interval: ctx.frame_interval,
        tick_interval: TICK,
        frames: log.drawn.iter().map(|&t| since(t)).collect(),
        keys,
        ticks,
        lookups,
    })
}

/// A run ended by Ctrl-C, SIGTERM or SIGHUP: the demo stops (exit 130).
#[derive(Debug, thiserror::Error)]
#[error("demo interrupted")]
struct Stopped;

/// Lookups still waiting when the script ended (a busy machine: the script gives the
/// lookups their latency and about half a second more), said because the figures leave them out and would
/// read better than the run was.
fn unanswered(app: &App, mode: Mode) -> Option<String> {
    let pending = app.rows.iter().filter(|row| row.is_pending()).count();
    (pending > 0).then(|| {
        format!(
            "userfetch: in the {} run, {} had not answered when the script ended (a busy \
             machine?); the figures leave {} out",
            mode.label().to_lowercase(),
            crate::console::count(pending as u64, "lookup", "lookups"),
            if pending == 1 { "it" } else { "them" }
        )
    })
}

/// Why the run cannot be compared, if a lookup ended without its user: timings of lookups
/// that failed would compare waiting for errors, not for answers. (One still pending when
/// the script ended is left out of the picture, and said: a slow machine, not a failure.)
fn no_user(app: &App, mode: Mode) -> Option<String> {
    let unanswered: Vec<&str> = app
        .rows
        .iter()
        .filter_map(|row| match &row.status {
            Status::Found { .. } | Status::Queued | Status::Pending { .. } => None,
            Status::Failed { message, .. } => Some(message.as_str()),
            Status::NotFound { .. } => Some("not found"),
            Status::Cancelled { .. } => Some("cancelled"),
        })
        .collect();
    let first = unanswered.first()?;
    Some(format!(
        "{} of {} lookups in {} mode got no user, so there is nothing fair to compare: {first}",
        unanswered.len(),
        app.rows.len(),
        mode.label().to_lowercase(),
    ))
}

/// OS threads that ran the interface and its lookups. Async: the runtime's own threads (one by
/// default, the interface's; with `--threads N`, N workers plus the main thread, where
/// `block_on` runs the interface). Sync: those plus the one helper thread the blocking call
/// waits on, since a thread cannot drive the I/O it is blocked on.
fn threads_used(mode: Mode) -> usize {
    let runtime = tokio::runtime::Handle::current();
    let threads = match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => 1,
        _ => runtime.metrics().num_workers() + 1,
    };
    match mode {
        Mode::Async => threads,
        Mode::Sync => threads + 1,
    }
}

/// The keyboard: each key is handed over at its time, or as soon as the loop asks for input
/// again if it was busy then. The moment the loop takes a key is the moment it is handled.
/// The scripted keys, at their times, and Ctrl-C when a signal comes (as the screen reads
/// one). The loop reads its input before it starts the next sync lookup: a signal that ended
/// one sync lookup now ends the run, where the demo's own watch, outside the loop, was not
/// polled again until every queued lookup had been waited out (minutes, with --lookups 1000).
fn scripted(
    start: Instant,
    script: Script,
    handled: Rc<RefCell<Vec<Key>>>,
) -> impl Stream<Item = io::Result<Event>> + Unpin {
    let queue: VecDeque<_> = script.keys.into();
    let signals = crate::signals::Signals::watch().ok();
    Box::pin(futures::stream::unfold(
        (queue, signals),
        move |(mut queue, mut signals)| {
            let handled = handled.clone();
            async move {
                let signalled = async {
                    match signals.as_mut() {
                        Some(signals) => signals.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let next = queue.pop_front();
                let due = next.as_ref().map_or(script.end, |(at, _)| *at);
                tokio::select! {
                    biased;
                    _ = signalled => {
                        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
                        return Some((Ok(Event::Key(ctrl_c)), (queue, signals)));
                    }
                    () = tokio::time::sleep_until((start + due).into()) => {}
                }
                let (at, key) = next?;
                handled.borrow_mut().push(Key {
                    pressed: at,
                    handled: Some(start.elapsed()),
                });
                Some((Ok(Event::Key(key)), (queue, signals)))
            }
        },
    ))
}

/// Background work beside the interface: a 10 Hz tick that runs only when the thread is free.
async fn ticker(start: Instant, ticks: Arc<Mutex<Vec<Duration>>>, stop: CancellationToken) {
    // Due every TICK from the run's start, the grid the missed ticks are counted on: from
    // the first tick run instead, whose own delay set the grid, a later tick run a little
    // less late than the first fell before its due time and was counted missed.
    let mut interval = tokio::time::interval_at(start.into(), TICK);
    // A tick that could not run on time is missed, not made up later in a burst.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if let Ok(mut ticks) = ticks.lock() {
                    ticks.push(start.elapsed());
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// `userfetch demo`.
pub async fn main(opts: &GlobalOpts, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    // Opened before the run, so a path that cannot be written fails at once (exit 2), not
    // after it; like the batch outputs, each appears whole or not at all.
    let open = |path: &Option<std::path::PathBuf>, what| {
        path.as_deref()
            .map(|p| crate::batch::output::AtomicFile::create(p, what))
            .transpose()
    };
    for (option, path) in [("--svg", &args.svg), ("--html", &args.html)] {
        if path.as_deref().is_some_and(|p| p.as_os_str() == "-") {
            return Err(usage(format!(
                "{option} must be a file: the picture is written whole and renamed into place, not to stdout"
            )));
        }
    }
    if let (Some(svg), Some(html)) = (&args.svg, &args.html)
        && crate::batch::same_output(svg, html)
    {
        return Err(usage(
            "--svg and --html name the same file; each picture needs its own",
        ));
    }
    let (svg, html) = (open(&args.svg, "--svg")?, open(&args.html, "--html")?);
    // Ctrl-C, SIGTERM or SIGHUP ends the demo: nothing it measured so far is worth keeping.
    // A signal during a sync lookup first ends that lookup (the blocking wait watches them
    // too), which lets this runtime run again and see it.
    let mut signals = crate::signals::Signals::watch()?;
    // Refused before the run is announced.
    timeout_outlasts(opts, args.latency)?;
    note!(
        // Within 80 columns at any latency below an hour.
        "userfetch: running the session sync and async (demo API, {} latency)…",
        humantime::format_duration(args.latency)
    );
    if let Some(said) = long_run(args.latency, args.lookups.into()) {
        note!("{said}");
    }
    let report = tokio::select! {
        biased;
        _ = signals.recv() => {
            note!("userfetch: demo interrupted");
            return Ok(ExitCode::Interrupted);
        }
        report = measure(opts, args.latency, args.lookups.into()) => match report {
            Err(e) if e.is::<Stopped>() => {
                note!("userfetch: demo interrupted");
                return Ok(ExitCode::Interrupted);
            }
            report => report?,
        },
    };
    let title = format!(
        "userfetch demo: one lookup of {} while typing, then {}",
        humantime::format_duration(args.latency),
        crate::console::count(args.lookups, "lookup", "lookups")
    );
    // The report first, then each picture on its own: one that could not be put in place at
    // the end (its directory gone) lost the report and the other picture of a run that may
    // have taken minutes.
    let printed = print_report(&report, &title, args.json);
    let pictured = scenarios(&report);
    let svg_written = svg.map_or(Ok(()), |file| {
        file.write_all(timeline::render_svg(&pictured).as_bytes())
    });
    let html_written = html.map_or(Ok(()), |file| {
        let page = timeline::render_html(&pictured, &title, &many_summary(&report));
        file.write_all(page.as_bytes())
    });
    let mut errors = [printed, svg_written, html_written]
        .into_iter()
        .filter_map(Result::err);
    if let Some(first) = errors.next() {
        for other in errors {
            note!("userfetch: {}", crate::exit::describe(&other));
        }
        return Err(first);
    }
    Ok(ExitCode::Success)
}

/// The report on stdout: the measures as JSON, or the tables and pictures as text.
fn print_report(report: &Report, title: &str, json: bool) -> anyhow::Result<()> {
    if json {
        let measures: Vec<_> = all_runs(report)
            .iter()
            .map(|r| (r.label.clone(), r.measures()))
            .collect();
        let json = serde_json::json!({ "report": report, "measures": measures });
        say!("{json}")?;
        return Ok(());
    }
    // A saved report reads the same whatever window it was run from, unless COLUMNS says
    // how wide it is to be (a pager, a narrower page).
    let width = std::io::IsTerminal::is_terminal(&std::io::stdout())
        .then(crossterm::terminal::size)
        .and_then(Result::ok)
        .map(|(w, _)| usize::from(w))
        .or_else(|| std::env::var("COLUMNS").ok()?.trim().parse().ok())
        .unwrap_or(REPORT_WIDTH)
        .clamp(40, 160);
    // Prose wrapped to the terminal: it must not wrap mid-word where the terminal cuts it.
    say!("{}\n", textwrap::fill(title, width))?;
    say!("{}", timeline::table_for(&report.typing, width))?;
    say!(
        "{}",
        timeline::render_text(&report.typing, width.saturating_sub(14))
    )?;
    say!("{}", textwrap::fill(&many_summary(report), width))?;
    say!(
        "{}",
        timeline::render_text(&report.many, width.saturating_sub(14))
    )?;
    Ok(())
}

/// Both scenarios, their runs labelled with the scenario, for pictures.
fn scenarios(report: &Report) -> Vec<Vec<Run>> {
    let label = |scenario: &str, runs: &[Run]| -> Vec<Run> {
        runs.iter()
            .map(|r| Run {
                label: format!("{scenario}: {}", r.label),
                ..r.clone()
            })
            .collect()
    };
    vec![
        label("typing", &report.typing),
        label(
            &crate::console::count(report.lookups as u64, "lookup", "lookups"),
            &report.many,
        ),
    ]
}

/// Both scenarios as one list, labelled.
fn all_runs(report: &Report) -> Vec<Run> {
    scenarios(report).concat()
}

/// First submit to last answer, per mode: sync adds the latencies up, async overlaps them.
pub fn busy_time(run: &Run) -> Duration {
    let first = run
        .lookups
        .iter()
        .map(|s| s.start)
        .min()
        .unwrap_or_default();
    let last = run.lookups.iter().map(|s| s.end).max().unwrap_or_default();
    last.saturating_sub(first)
}

fn many_summary(report: &Report) -> String {
    let mut out = format!(
        "{} of {} each, first submit to last answer:\n",
        crate::console::count(report.lookups as u64, "lookup", "lookups"),
        humantime::format_duration(report.latency)
    );
    for run in &report.many {
        out.push_str(&format!(
            "  {:5}  {:>11}  on {} OS thread(s)\n",
            run.label,
            timeline::ms(busy_time(run)),
            run.threads
        ));
    }
    if report.lookups < 2 {
        out.push_str(
            "one lookup has nothing to overlap with: --lookups 2 or more shows the difference.\n",
        );
        return out;
    }
    let busy = |label: &str| {
        report
            .many
            .iter()
            .find(|run| run.label == label)
            .map(busy_time)
    };
    // A wait shorter than typing the next id leaves nothing to overlap: both runs take as
    // long as the typing, and "async overlaps the waits" would be read off equal numbers.
    if let (Some(sync), Some(asynchronous)) = (busy("sync"), busy("async"))
        && asynchronous.as_secs_f64() > 0.8 * sync.as_secs_f64()
    {
        out.push_str(&format!(
            "the waits barely overlapped: the API answered ({}) about as fast as the next id was typed ({} a key and Enter), or faster; a longer --latency shows the difference.\n",
            humantime::format_duration(report.latency),
            humantime::format_duration(KEY_GAP)
        ));
        return out;
    }
    // With --threads N the async run has worker threads too; the overlap is the point either way.
    let one_thread = report
        .many
        .iter()
        .any(|run| run.label == "async" && run.threads == 1);
    out.push_str(if one_thread {
        "async overlaps the waits on one thread: concurrent, not parallel.\n"
    } else {
        "async overlaps the waits: the lookups wait together, not one after another.\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ErrorKind, FetchError};
    use crate::engine::{Found, Source};
    use crate::record::Record;
    use crate::tui::app::{Msg, ReqId, update};

    /// A long demo is said ahead with its length, whether the typing or the sync waits make
    /// it long; a short one says nothing.
    #[test]
    fn a_long_demo_is_said_ahead_with_why() {
        let ms = Duration::from_millis;
        // 3,893 keys at 10 ms in each run of the second scenario, no latency to wait.
        let typed = long_run(Duration::ZERO, 1000).unwrap();
        assert_eq!(
            typed,
            "userfetch: the demo takes about 1m 21s: each run types its 1000 ids at 10 ms a key"
        );
        let waited = long_run(ms(5000), 10).unwrap();
        assert!(
            waited.ends_with(": the sync run waits 50s for its 10 lookups, one after another"),
            "{waited}"
        );
        assert_eq!(long_run(ms(2000), 10), None);
        assert_eq!(long_run(ms(100), 2), None);
    }

    /// A run of the "many" scenario whose lookups were in flight from `start` to `end` (ms).
    fn many_run(label: &str, spans: &[(u64, u64)]) -> Run {
        let ms = Duration::from_millis;
        Run {
            label: label.to_owned(),
            threads: 1,
            total: ms(10_000),
            frame_interval: ms(16),
            tick_interval: TICK,
            frames: Vec::new(),
            keys: Vec::new(),
            ticks: Vec::new(),
            lookups: spans
                .iter()
                .map(|&(start, end)| Span {
                    start: ms(start),
                    end: ms(end),
                })
                .collect(),
        }
    }

    #[test]
    fn the_summary_says_when_the_waits_had_nothing_to_overlap() {
        let report = |sync: Vec<(u64, u64)>, asynchronous: Vec<(u64, u64)>| Report {
            typing: Vec::new(),
            many: vec![many_run("sync", &sync), many_run("async", &asynchronous)],
            latency: Duration::from_millis(20),
            lookups: 2,
        };
        // Waits shorter than typing the next id: the same time either way.
        let short = many_summary(&report(vec![(0, 20), (40, 60)], vec![(0, 20), (40, 60)]));
        assert!(short.contains("the waits barely overlapped"), "{short}");
        assert!(!short.contains("async overlaps the waits"), "{short}");
        // Long waits, typed faster than answered: async overlaps them.
        let long = many_summary(&report(
            vec![(0, 1000), (1000, 2000)],
            vec![(0, 1000), (40, 1040)],
        ));
        assert!(
            long.contains("async overlaps the waits on one thread"),
            "{long}"
        );
        // One lookup: nothing to overlap, whatever the latency.
        let one = many_summary(&Report {
            lookups: 1,
            ..report(vec![(0, 1000)], vec![(0, 1000)])
        });
        assert!(one.contains("one lookup has nothing to overlap"), "{one}");
    }

    /// The pictures' and the JSON's labels say "1 lookup", as the text does.
    #[test]
    fn a_single_lookup_is_labelled_in_the_singular() {
        let report = |lookups| Report {
            typing: Vec::new(),
            many: vec![many_run("sync", &[(0, 20)])],
            latency: Duration::from_millis(20),
            lookups,
        };
        let label = |lookups| all_runs(&report(lookups)).remove(0).label;
        assert_eq!(label(1), "1 lookup: sync");
        assert_eq!(label(2), "2 lookups: sync");
    }

    /// A session with three lookups typed; `ended[i]` is how the i-th ended, if it did.
    fn session(ended: [Option<crate::engine::Outcome>; 3]) -> App {
        let mut app = App::new(Config::default(), Instant::now());
        for (i, outcome) in ended.into_iter().enumerate() {
            // Distinct ids: the same id asked again while its lookup runs is not sent again.
            let id = char::from(b'1' + i as u8);
            for key in [KeyCode::Char(id), KeyCode::Enter] {
                update(&mut app, Msg::Key(press(key)));
            }
            if let Some(outcome) = outcome {
                let req = ReqId(i as u64);
                update(&mut app, Msg::Done { req, outcome });
            }
        }
        app
    }

    fn found() -> Option<crate::engine::Outcome> {
        Some(Ok(Found {
            record: Record::from_body(br#"{"id":1}"#).unwrap(),
            source: Source::Api,
            attempts: 1,
            latency: Duration::from_millis(5),
        }))
    }

    #[test]
    fn lookups_still_waiting_when_the_script_ends_are_said() {
        assert_eq!(
            unanswered(&session([found(), found(), found()]), Mode::Sync),
            None
        );
        assert_eq!(
            unanswered(&session([found(), None, None]), Mode::Async).as_deref(),
            Some(
                "userfetch: in the async run, 2 lookups had not answered when the script ended \
                 (a busy machine?); the figures leave them out"
            )
        );
    }

    #[test]
    fn a_lookup_without_its_user_makes_the_run_incomparable() {
        assert_eq!(
            no_user(&session([found(), found(), None]), Mode::Sync),
            None
        );
        let timed_out = Some(Err(FetchError::new(
            ErrorKind::Timeout,
            1,
            "no answer in 1s",
        )));
        let why = no_user(&session([found(), timed_out, None]), Mode::Async);
        assert_eq!(
            why.as_deref(),
            Some(
                "1 of 3 lookups in async mode got no user, so there is nothing fair to compare: no answer in 1s"
            )
        );
    }
}
