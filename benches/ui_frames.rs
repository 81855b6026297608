//! The interactive screen's loop, headless, under load: 10,000 lookups in flight against the
//! demo API at 1 s latency, on one thread, with keys typed throughout.
//!
//! Reports frame gaps (between frames while something animates), key-to-frame latency (from
//! the moment a key is handed to the loop until a frame that includes it is drawn), and CPU
//! while idle. Linux only (CPU time comes from /proc).
//!
//!     cargo bench --bench ui_frames              # HTTP/2 to the demo API (one connection)
//!     cargo bench --bench ui_frames -- --http1   # one connection per lookup
//!     cargo bench --bench ui_frames -- --threads 2   # connections on worker threads
//!
//! Idle CPU is measured from 4 s (HTTP/1.1: 20 s) after the last key of the burst, for 10 s.
//! The demo API runs on its own thread and is not counted in the UI thread's CPU figures.

use std::io;
use std::time::{Duration, Instant};

use clap::Parser;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use futures::channel::mpsc::{UnboundedSender, unbounded};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use userfetch::cli::Cli;
use userfetch::server::{self, ServerConfig};
use userfetch::session::Session;
use userfetch::tui::app::{App, Config};
use userfetch::tui::run::{self, Context, FrameLog};

const LOOKUPS: u64 = 10_000;
const LATENCY: Duration = Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    let http1 = std::env::args().any(|a| a == "--http1");
    let threads: u16 = std::env::args()
        .skip_while(|a| a != "--threads")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    // Over HTTP/1.1 opening 10,000 connections from one thread takes several seconds; the idle
    // measurement must start after the last answer.
    let settle = Duration::from_secs(if http1 { 20 } else { 4 });
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let api = server::start_in_thread(ServerConfig {
        latency: LATENCY,
        users: LOOKUPS,
        ..ServerConfig::default()
    })?;
    // The same runtimes `userfetch --threads N` builds; with more than one thread the loop stays
    // on this thread (block_on) and the HTTP connections move to the workers.
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.into())
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(async {
        let mut args = vec![
            "userfetch".to_owned(),
            "--no-cache".to_owned(),
            "--api".to_owned(),
            api.url_template(),
        ];
        if !http1 {
            args.push("--http2".to_owned());
        }
        let opts = Cli::parse_from(args).global;
        let session = Session::start(&opts).await?;
        let ctx = Context::new(session.engine.clone());
        let mut app = App::new(
            Config {
                threads,
                timeout: opts.timeout,
                ..Config::default()
            },
            Instant::now(),
        );
        let mut terminal = Terminal::new(TestBackend::new(120, 40))?;
        let (keys, events) = unbounded::<io::Result<Event>>();
        let mut log = FrameLog::default();
        let (ended, script) = tokio::join!(
            run::run(&mut terminal, events, &mut app, &ctx, Some(&mut log)),
            drive(keys, settle),
        );
        ended?;
        anyhow::Ok((app, log, script))
    })?;
    let (app, log, script) = report;
    print_report(
        &app,
        &log,
        &script,
        if http1 { "HTTP/1.1" } else { "HTTP/2" },
        threads,
    );
    runtime.shutdown_background();
    api.shutdown_blocking();
    Ok(())
}

fn key(code: KeyCode) -> io::Result<Event> {
    Ok(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

/// What the script did and when, to match against the frames afterwards.
#[derive(Default)]
struct Script {
    submitted: Option<(Instant, Instant)>,
    loaded_keys: Vec<Instant>,
    idle_keys: Vec<Instant>,
    idle_cpu: Option<(Duration, Duration, Duration)>,
    /// (on a CPU, waiting for a CPU) for this thread over the loaded phase.
    loaded_sched: Option<(Duration, Duration)>,
}

async fn drive(keys: UnboundedSender<io::Result<Event>>, settle: Duration) -> Script {
    let mut script = Script::default();
    let send = |event| {
        let _ = keys.unbounded_send(event);
    };
    // Let the first frames and the first health check happen.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Ten thousand ids typed and submitted as fast as the loop takes them.
    let sched0 = schedstat();
    let start = Instant::now();
    for id in 1..=LOOKUPS {
        for c in id.to_string().chars() {
            send(key(KeyCode::Char(c)));
        }
        send(key(KeyCode::Enter));
        // Hand the thread back now and then, as a person's keyboard would.
        if id % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    script.submitted = Some((start, Instant::now()));

    // Typing while they are in flight and while they land.
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        script.loaded_keys.push(Instant::now());
        send(key(KeyCode::Char('x')));
    }
    send(Ok(Event::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    ))));
    let sched1 = schedstat();
    script.loaded_sched = Some((
        sched1.0.saturating_sub(sched0.0),
        sched1.1.saturating_sub(sched0.1),
    ));

    // Let everything finish, then measure idle: only the clock and health check run.
    tokio::time::sleep(settle).await;
    let (process0, thread0) = cpu_times();
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (process1, thread1) = cpu_times();
    script.idle_cpu = Some((
        idle_start.elapsed(),
        process1.saturating_sub(process0),
        thread1.saturating_sub(thread0),
    ));

    // Typing when idle.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        script.idle_keys.push(Instant::now());
        send(key(KeyCode::Char('y')));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(Ok(Event::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    ))));
    script
}

/// (on a CPU, waiting on the run queue) for this thread, from the kernel's scheduler
/// statistics: time spent waiting is time the machine gave to other processes.
fn schedstat() -> (Duration, Duration) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0));
    let run = fields.next().unwrap_or(0);
    let wait = fields.next().unwrap_or(0);
    (Duration::from_nanos(run), Duration::from_nanos(wait))
}

/// (whole process, this thread) CPU time from /proc.
fn cpu_times() -> (Duration, Duration) {
    fn read(path: &str) -> Duration {
        let Ok(stat) = std::fs::read_to_string(path) else {
            return Duration::ZERO;
        };
        // Fields after the command name (which may hold spaces) start at the last ')'.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        // USER_HZ is 100 on every Linux this runs on.
        Duration::from_millis(ticks * 10)
    }
    (read("/proc/self/stat"), read("/proc/thread-self/stat"))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn describe(label: &str, mut values: Vec<Duration>) {
    values.sort_unstable();
    println!(
        "{label:<34} n={:<6} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        values.len(),
        percentile(&values, 0.5).as_secs_f64() * 1e3,
        percentile(&values, 0.99).as_secs_f64() * 1e3,
        values.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

/// For each key, the time until the first frame drawn after it was sent.
fn key_to_frame(keys: &[Instant], drawn: &[Instant]) -> Vec<Duration> {
    keys.iter()
        .filter_map(|k| {
            let i = drawn.partition_point(|d| d < k);
            drawn.get(i).map(|d| d.duration_since(*k))
        })
        .collect()
}

fn print_report(app: &App, log: &FrameLog, script: &Script, protocol: &str, threads: u16) {
    println!(
        "userfetch interactive UI, headless: {LOOKUPS} lookups, demo API latency {LATENCY:?}, {protocol}, {threads} runtime thread(s)"
    );
    if let Some((start, end)) = script.submitted {
        println!(
            "submitted {LOOKUPS} lookups by keyboard in {:.0} ms",
            end.duration_since(start).as_secs_f64() * 1e3
        );
    }
    println!(
        "peak in flight {}; found {}, not found {}, errors {}",
        log.in_flight.iter().max().copied().unwrap_or(0),
        app.stats.found,
        app.stats.not_found,
        app.stats.errors
    );
    if let Some((start, _)) = script.submitted {
        let busy: Vec<Instant> = log
            .drawn
            .iter()
            .zip(&log.in_flight)
            .filter(|(d, n)| **n > 0 && **d >= start)
            .map(|(d, _)| *d)
            .collect();
        let gaps: Vec<Duration> = busy.windows(2).map(|w| w[1] - w[0]).collect();
        let span = busy
            .last()
            .zip(busy.first())
            .map_or(Duration::ZERO, |(l, f)| *l - *f);
        println!(
            "frames while lookups were in flight: {} over {:.2} s ({:.1} fps)",
            busy.len(),
            span.as_secs_f64(),
            busy.len() as f64 / span.as_secs_f64().max(1e-9)
        );
        describe("frame gap (lookups in flight)", gaps.clone());
        // Where the worst gaps fell: time since the burst began, and lookups in flight.
        let mut worst: Vec<(Duration, Instant)> =
            busy.windows(2).map(|w| (w[1] - w[0], w[1])).collect();
        worst.sort_unstable_by_key(|w| std::cmp::Reverse(w.0));
        let at: Vec<String> = worst
            .iter()
            .take(5)
            .map(|(gap, end)| {
                let i = log.drawn.partition_point(|d| d < end);
                format!(
                    "{:.1} ms at +{} ms ({} in flight)",
                    gap.as_secs_f64() * 1e3,
                    end.duration_since(start).as_millis(),
                    log.in_flight.get(i).copied().unwrap_or(0)
                )
            })
            .collect();
        println!("worst gaps: {}", at.join(", "));
    }
    describe("frame gap (all animation frames)", log.gaps.clone());
    describe(
        "key-to-frame (10k in flight)",
        key_to_frame(&script.loaded_keys, &log.drawn),
    );
    describe(
        "key-to-frame (idle)",
        key_to_frame(&script.idle_keys, &log.drawn),
    );
    if let Some((run, wait)) = script.loaded_sched {
        println!(
            "UI thread over the loaded phase (~2.6 s): {:.0} ms on a CPU, {:.1} ms runnable but waiting for one (other processes)",
            run.as_secs_f64() * 1e3,
            wait.as_secs_f64() * 1e3
        );
    }
    if let Some((wall, process, thread)) = script.idle_cpu {
        println!(
            "idle CPU over {:.1} s: UI thread {:.2} % of a core, whole process {:.2} % (includes the demo API)",
            wall.as_secs_f64(),
            thread.as_secs_f64() / wall.as_secs_f64() * 100.0,
            process.as_secs_f64() / wall.as_secs_f64() * 100.0,
        );
    }
}
