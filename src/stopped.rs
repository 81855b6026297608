//! How long the process has spent stopped: Ctrl-Z (on the screen, or a batch in a shell's
//! foreground), `kill -STOP`, or anything else that kept it from running. A lookup's
//! `--timeout` does not run meanwhile: its answer may have come in the meantime, unread, and
//! the time the person spent elsewhere is no fault of the API's.
//!
//! Counted by a thread that wakes every [`BEAT`] and takes a gap of over [`STOPPED`] between
//! two wakes for a stop: no signal says when a `kill -STOP` began, and a stop the program
//! takes itself (the screen's Ctrl-Z) is counted the same way. Starvation that long (a
//! machine loaded far beyond its cores) counts too, rightly: the process could not read an
//! answer then either.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BEAT: Duration = Duration::from_millis(100);
const STOPPED: Duration = Duration::from_secs(1);

/// Nanoseconds stopped, counted by the watch: 584 years fit in a u64.
static COUNTED: AtomicU64 = AtomicU64::new(0);
/// The watch's last wake, in nanoseconds since [`origin`].
static LAST_BEAT: AtomicU64 = AtomicU64::new(0);

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Starts the watch once. Without a thread (none could be started) nothing is counted, and
/// timeouts run through stops as they did before.
fn watch() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let origin = origin();
        // From here, not from the thread's first turn: a stop before the thread runs at all
        // is a stop too.
        let mut before = origin.elapsed();
        LAST_BEAT.store(nanos(before), Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("userfetch-stops".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(BEAT);
                    let after = origin.elapsed();
                    let gap = after.saturating_sub(before);
                    if gap > STOPPED {
                        // Counted before the beat moves on: a reader in between counts the
                        // stop twice (a deadline a little later), never not at all.
                        COUNTED.fetch_add(nanos(gap - BEAT), Ordering::SeqCst);
                    }
                    LAST_BEAT.store(nanos(after), Ordering::SeqCst);
                    before = after;
                }
            });
        if let Err(e) = spawned {
            tracing::debug!("no thread to count stops: {e}");
        }
    });
}

/// The time spent stopped since the watch started, a stop that has just ended included even
/// before the watch has woken from it (the reader may run first when the process resumes).
fn total() -> Duration {
    let beat = LAST_BEAT.load(Ordering::SeqCst);
    let counted = COUNTED.load(Ordering::SeqCst);
    let since_beat = origin()
        .elapsed()
        .saturating_sub(Duration::from_nanos(beat));
    let ongoing = if since_beat > STOPPED {
        since_beat - BEAT
    } else {
        Duration::ZERO
    };
    Duration::from_nanos(counted) + ongoing
}

/// A moment, and the time the process has spent stopped since.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    pub started: Instant,
    counted_before: Duration,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        watch();
        Stopwatch {
            started: Instant::now(),
            // Running now, so no stop is under way: what the watch counted is enough.
            counted_before: Duration::from_nanos(COUNTED.load(Ordering::SeqCst)),
        }
    }

    /// The time spent stopped since the start. It can fall back a little once the watch
    /// wakes from a stop (its count replacing an estimate): compare with `>`.
    pub fn stopped(&self) -> Duration {
        total().saturating_sub(self.counted_before)
    }
}
