//! How long the process has spent stopped (Ctrl-Z on the screen, then `fg`). A lookup's
//! `--timeout` does not run while stopped: its answer may have come meanwhile, unread, and the
//! time the person spent elsewhere is no fault of the API's.
//!
//! Only stops the program takes itself are counted: a `kill -STOP` from outside cannot be
//! caught, and the moment it began is not known.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds: 584 years fit in a u64.
static STOPPED_NANOS: AtomicU64 = AtomicU64::new(0);

/// The time spent stopped since the process started.
pub fn total() -> Duration {
    Duration::from_nanos(STOPPED_NANOS.load(Ordering::Relaxed))
}

/// Stops the process the way `run` does, and counts the time until it runs again.
pub fn while_stopped(run: impl FnOnce()) {
    let before = Instant::now();
    run();
    let nanos = u64::try_from(before.elapsed().as_nanos()).unwrap_or(u64::MAX);
    STOPPED_NANOS.fetch_add(nanos, Ordering::Relaxed);
}

/// A moment, and the time the process has spent stopped since.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    pub started: Instant,
    stopped_before: Duration,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch {
            started: Instant::now(),
            stopped_before: total(),
        }
    }

    /// The time spent stopped since the start.
    pub fn stopped(&self) -> Duration {
        total().saturating_sub(self.stopped_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopwatch_counts_the_stops_since_its_start() {
        // Short: other tests' lookups running meanwhile get this much longer.
        let watch = Stopwatch::start();
        while_stopped(|| std::thread::sleep(Duration::from_millis(20)));
        let stopped = watch.stopped();
        assert!(
            stopped >= Duration::from_millis(20) && stopped < Duration::from_secs(60),
            "{stopped:?}"
        );
        // A stopwatch started after the stop saw none of it.
        assert_eq!(Stopwatch::start().stopped(), Duration::ZERO);
    }
}
