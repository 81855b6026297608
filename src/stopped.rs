//! How long the process has spent stopped: Ctrl-Z (on the screen, or a batch in a shell's
//! foreground) or `kill -STOP`, then `fg` or `kill -CONT`. A lookup's `--timeout` does not run
//! meanwhile: its answer may have come in the meantime, unread, and the time the person spent
//! elsewhere is no fault of the API's.
//!
//! No signal says when a stop began (SIGSTOP cannot be caught), so a thread wakes every
//! [`BEAT`], and a gap of over [`STOPPED`] between two wakes is a stop if SIGCONT came in it.
//! The signal is what tells a stop from a busy machine: a thread starved of CPU wakes late
//! too, while the runtime's threads may well be reading answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

const BEAT: Duration = Duration::from_millis(100);
const STOPPED: Duration = Duration::from_secs(1);
/// How long the watch waits, having woken late, for SIGCONT's handler: it runs on whichever
/// thread the kernel picks, which may come back after the watch's own thread.
const HANDLER_GRACE: Duration = Duration::from_millis(20);
/// How long a late wake without SIGCONT stays a stop to count should the handler still run:
/// on a loaded machine the thread the kernel picked can come back well after the grace.
const HANDLER_LATE: Duration = Duration::from_secs(1);

/// The watch's state, written by its thread alone and read by any: the stops counted so far
/// and the watch's last wake (in nanoseconds since [`origin`]), under a sequence number that
/// is odd while they are written, so a reader takes the two together or tries again. Written
/// by hand (a seqlock) rather than put behind a Mutex: every lookup reads it a few times, and
/// with the lock 200,000 lookups cost 1.8 % more instructions.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);
static COUNTED: AtomicU64 = AtomicU64::new(0);
static LAST_BEAT: AtomicU64 = AtomicU64::new(0);
/// False until the watch runs, and for good if it cannot (no thread, SIGCONT not watchable):
/// then nothing is counted and timeouts run through stops.
static RUNNING: AtomicBool = AtomicBool::new(false);
/// Set by SIGCONT's handler, taken by the watch (and looked at by readers) at each wake.
static CONTINUED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn publish(counted: Duration, beat: Instant) {
    SEQUENCE.fetch_add(1, Ordering::SeqCst);
    COUNTED.store(nanos(counted), Ordering::SeqCst);
    LAST_BEAT.store(
        nanos(beat.saturating_duration_since(origin())),
        Ordering::SeqCst,
    );
    SEQUENCE.fetch_add(1, Ordering::SeqCst);
}

/// The stops counted so far and the watch's last wake, in nanoseconds since [`origin`];
/// `None` without a watch.
fn read() -> Option<(u64, u64)> {
    if !RUNNING.load(Ordering::SeqCst) {
        return None;
    }
    loop {
        let before = SEQUENCE.load(Ordering::SeqCst);
        if before.is_multiple_of(2) {
            let counted = COUNTED.load(Ordering::SeqCst);
            let beat = LAST_BEAT.load(Ordering::SeqCst);
            if SEQUENCE.load(Ordering::SeqCst) == before {
                return Some((counted, beat));
            }
        }
        // The watch is writing: on a core of its own for a few instructions, or preempted
        // on this one, where spinning would keep it from finishing.
        std::thread::yield_now();
    }
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
        let mut beat = Instant::now();
        let mut counted = Duration::ZERO;
        publish(counted, beat);
        RUNNING.store(true, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("userfetch-stops".into())
            .spawn(move || {
                // A late wake whose SIGCONT had not come yet: the gap, and when it ended.
                let mut unconfirmed: Option<(Duration, Instant)> = None;
                loop {
                    std::thread::sleep(BEAT);
                    let now = Instant::now();
                    let late = now - beat > STOPPED;
                    if late && !flag.load(Ordering::SeqCst) {
                        std::thread::sleep(HANDLER_GRACE);
                    }
                    // Taken at every wake: a SIGCONT to a running process says nothing about
                    // a later gap, only about a late wake just before it.
                    let continued = flag.swap(false, Ordering::SeqCst);
                    if late {
                        let gap = now - beat - BEAT;
                        if continued {
                            counted += gap;
                            unconfirmed = None;
                        } else {
                            unconfirmed = Some((gap, now));
                        }
                    } else if let Some((gap, ended)) = unconfirmed {
                        if continued {
                            counted += gap;
                            unconfirmed = None;
                        } else if now - ended > HANDLER_LATE {
                            // A busy machine, then: no stop.
                            unconfirmed = None;
                        }
                    }
                    beat = now;
                    publish(counted, beat);
                }
            });
        if let Err(e) = spawned {
            RUNNING.store(false, Ordering::SeqCst);
            tracing::debug!("no thread to count stops: {e}");
        }
    });
}

/// The time spent stopped so far, a stop that has just ended included before the watch has
/// woken from it (a reader may run first when the process resumes). The count and the moment
/// it goes with are read together.
///
/// `assume_stopped`: a gap under way counts whether or not SIGCONT's handler has run yet.
fn total(now: u64, assume_stopped: bool) -> Duration {
    match read() {
        None => Duration::ZERO,
        Some((counted, beat)) => {
            let since_beat = now.saturating_sub(beat);
            let ongoing = if since_beat > nanos(STOPPED) && (assume_stopped || continued()) {
                since_beat - nanos(BEAT)
            } else {
                0
            };
            Duration::from_nanos(counted.saturating_add(ongoing))
        }
    }
}

/// Now, in nanoseconds since [`origin`]: each lookup reads the time stopped a few times, and
/// arithmetic on `Instant`s costs more than on integers.
fn now() -> u64 {
    nanos(origin().elapsed())
}

/// Whether the watch has not woken for longer than a stop takes to count: the process may
/// just have been resumed.
fn unsettled() -> bool {
    read().is_some_and(|(_, beat)| nanos(origin().elapsed()).saturating_sub(beat) > nanos(STOPPED))
}

/// A moment, and the time the process has spent stopped since.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    pub started: Instant,
    /// `started`, in nanoseconds since [`origin`].
    at: u64,
    stopped_before: Duration,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        watch();
        let started = Instant::now();
        let at = nanos(started.saturating_duration_since(origin()));
        Stopwatch {
            started,
            at,
            // A gap under way is taken for a stop: if it is one (the handler may not have
            // run yet on another thread), it began before this start and is none of this
            // stopwatch's; if not, `stopped` reads zero the less.
            stopped_before: total(at, true),
        }
    }

    /// The time spent stopped since the start. It can fall back a little once the watch
    /// wakes from a stop (its count replacing an estimate): compare with `>`.
    pub fn stopped(&self) -> Duration {
        total(now(), false).saturating_sub(self.stopped_before)
    }

    /// The time the process ran since the start: what a lookup's latency is, so that it
    /// agrees with `--timeout`, which does not count stops either.
    pub fn ran(&self) -> Duration {
        let now = now();
        let stopped = total(now, false).saturating_sub(self.stopped_before);
        Duration::from_nanos(now.saturating_sub(self.at)).saturating_sub(stopped)
    }
}

/// Turns of the runtime [`last_look`] gives an expired future: enough for an answer waiting
/// in the socket to pass from the connection's task to the lookup's (one turn polls the
/// socket, the next the tasks it woke), few enough to cost nothing when none came.
const LAST_LOOK_TURNS: usize = 4;

/// The deadline passed: one last look, over a few turns of the runtime, at whether the answer
/// came all the same. When the thread was held past the deadline (the screen's sync lookup
/// blocks the thread the async lookups run on), an answer that came in time lies unread in
/// the socket, and the expired timer was woken first: it was a false timeout, and a retry.
async fn last_look<F: std::future::Future>(mut future: std::pin::Pin<&mut F>) -> Option<F::Output> {
    for _ in 0..LAST_LOOK_TURNS {
        // Deferred by tokio until its I/O driver has been polled: the socket is read first.
        // (On a runtime's `block_on` thread the turns follow at once; worker threads read
        // the sockets meanwhile.)
        tokio::task::yield_now().await;
        // Unconstrained: lookups are polled within one task, whose cooperative budget a
        // freeze's hundreds of expired lookups use up, and a look past it sees nothing.
        let look = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx)));
        let polled = tokio::task::unconstrained(look).await;
        if let Poll::Ready(output) = polled {
            return Some(output);
        }
    }
    None
}

/// `future`, given `limit` of the time the process runs: a stop moves the limit on. `None`
/// when the limit passed first, and the answer had not come in the meantime (see
/// [`last_look`]).
pub async fn within<F: std::future::Future>(limit: Duration, future: F) -> Option<F::Output> {
    within_since(Stopwatch::start(), limit, std::pin::pin!(future)).await
}

/// [`within`], the limit counted from `watch`'s start, for a future pinned by the caller
/// (a lookup's is large, and each move of it a copy).
pub async fn within_since<F: std::future::Future>(
    watch: Stopwatch,
    limit: Duration,
    mut future: std::pin::Pin<&mut F>,
) -> Option<F::Output> {
    let mut stopped = Duration::ZERO;
    loop {
        let deadline = watch.started + limit + stopped;
        match tokio::time::timeout_at(deadline.into(), future.as_mut()).await {
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
                    return last_look(future.as_mut()).await;
                }
                stopped = since;
            }
        }
    }
}
