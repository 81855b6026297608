//! How long the process has spent stopped: Ctrl-Z (on the screen, or a batch in a shell's
//! foreground) or `kill -STOP`, then `fg` or `kill -CONT`. A lookup's `--timeout` does not run
//! meanwhile: its answer may have come in the meantime, unread, and the time the person spent
//! elsewhere is no fault of the API's.
//!
//! No signal says when a stop began (SIGSTOP cannot be caught), so a thread wakes every
//! [`BEAT`], and a gap of over [`STOPPED`] between two wakes is a stop if SIGCONT came in it.
//! The signal is what tells a stop from a busy machine: a thread starved of CPU wakes late
//! too, while the runtime's threads may well be reading answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

const BEAT: Duration = Duration::from_millis(100);
const STOPPED: Duration = Duration::from_secs(1);
/// How long the watch waits, having woken late, for SIGCONT's handler: it runs on whichever
/// thread the kernel picks, which may come back after the watch's own thread.
const HANDLER_GRACE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
struct Count {
    /// The stops counted so far.
    counted: Duration,
    /// The watch's last wake.
    beat: Instant,
}

/// `None` until the watch runs, and for good if it cannot (no thread, SIGCONT not
/// watchable): then nothing is counted and timeouts run through stops.
static COUNT: Mutex<Option<Count>> = Mutex::new(None);
/// Set by SIGCONT's handler, taken by the watch (and looked at by readers) at each wake.
static CONTINUED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Only ever replaced whole, so a panic elsewhere cannot leave it half-written.
fn count() -> MutexGuard<'static, Option<Count>> {
    COUNT.lock().unwrap_or_else(PoisonError::into_inner)
}

fn continued() -> bool {
    CONTINUED.get().is_some_and(|c| c.load(Ordering::SeqCst))
}

/// Starts the watch once.
fn watch() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(libc::SIGCONT, flag.clone()) {
            tracing::debug!("cannot watch SIGCONT, so stops are not counted: {e}");
            return;
        }
        let _ = CONTINUED.set(flag.clone());
        // From here, not from the thread's first turn: a stop before it runs is a stop too.
        *count() = Some(Count {
            counted: Duration::ZERO,
            beat: Instant::now(),
        });
        let spawned = std::thread::Builder::new()
            .name("userfetch-stops".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(BEAT);
                    let now = Instant::now();
                    let mut late = count().is_some_and(|c| now - c.beat > STOPPED);
                    if late && !flag.load(Ordering::SeqCst) {
                        std::thread::sleep(HANDLER_GRACE);
                    }
                    let mut guard = count();
                    let Some(c) = guard.as_mut() else { return };
                    // Taken at every wake: a SIGCONT to a running process says nothing about
                    // a later gap.
                    late &= flag.swap(false, Ordering::SeqCst);
                    if late {
                        c.counted += now - c.beat - BEAT;
                    }
                    c.beat = now;
                }
            });
        if let Err(e) = spawned {
            *count() = None;
            tracing::debug!("no thread to count stops: {e}");
        }
    });
}

/// The time spent stopped so far, a stop that has just ended included before the watch has
/// woken from it (a reader may run first when the process resumes). One lock, so the count
/// and the moment it goes with are read together.
///
/// `assume_stopped`: a gap under way counts whether or not SIGCONT's handler has run yet.
fn total(now: Instant, assume_stopped: bool) -> Duration {
    match *count() {
        None => Duration::ZERO,
        Some(c) => {
            let since_beat = now.saturating_duration_since(c.beat);
            let ongoing = if since_beat > STOPPED && (assume_stopped || continued()) {
                since_beat - BEAT
            } else {
                Duration::ZERO
            };
            c.counted + ongoing
        }
    }
}

/// Whether the watch has not woken for longer than a stop takes to count: the process may
/// just have been resumed.
fn unsettled() -> bool {
    count().is_some_and(|c| c.beat.elapsed() > STOPPED)
}

/// A moment, and the time the process has spent stopped since.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    pub started: Instant,
    stopped_before: Duration,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        watch();
        let started = Instant::now();
        Stopwatch {
            started,
            // A gap under way is taken for a stop: if it is one (the handler may not have
            // run yet on another thread), it began before this start and is none of this
            // stopwatch's; if not, `stopped` reads zero the less.
            stopped_before: total(started, true),
        }
    }

    /// The time spent stopped since the start. It can fall back a little once the watch
    /// wakes from a stop (its count replacing an estimate): compare with `>`.
    pub fn stopped(&self) -> Duration {
        total(Instant::now(), false).saturating_sub(self.stopped_before)
    }

    /// The time the process ran since the start: what a lookup's latency is, so that it
    /// agrees with `--timeout`, which does not count stops either.
    pub fn ran(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.stopped())
    }
}

/// `future`, given `limit` of the time the process runs: a stop moves the limit on. `None`
/// when the limit passed first.
pub async fn within<F: std::future::Future>(limit: Duration, future: F) -> Option<F::Output> {
    let watch = Stopwatch::start();
    let mut future = std::pin::pin!(future);
    let mut stopped = Duration::ZERO;
    loop {
        let deadline = watch.started + limit + stopped;
        match tokio::time::timeout_at(deadline.into(), &mut future).await {
            Ok(output) => return Some(output),
            Err(_) => {
                let mut since = watch.stopped();
                if since <= stopped && unsettled() {
                    // Just resumed, perhaps, with SIGCONT's handler yet to run on another
                    // thread: decided once the watch has woken and looked.
                    tokio::time::sleep(BEAT + HANDLER_GRACE).await;
                    since = watch.stopped();
                }
                if since <= stopped {
                    return None;
                }
                stopped = since;
            }
        }
    }
}
