//! Injected latency, kept to a fraction of a millisecond.
//!
//! Why not `tokio::time::sleep`: tokio's timer counts whole milliseconds and rounds every
//! deadline up to the next tick, and the driver's `epoll_wait` timeout is rounded up to a
//! millisecond as well, so a 50 ms sleep lasted 50.6–53 ms (51.5 ms on average, one request at
//! a time). It also fires everything due in one tick together, so answers that arrived spread
//! out leave in a burst. For a demo API whose latency is what benchmarks are compared against,
//! that slop (30 ms over twenty 50 ms round trips) was larger than the differences being
//! measured. One thread keeps the deadlines in a heap and waits on a condition variable, whose
//! futex timeout has microsecond resolution. No crate found does this without a file
//! descriptor per sleeper (timerfd), which 10,000 requests in flight would run out of.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub struct Delays {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Queue>,
    changed: Condvar,
}

struct Queue {
    due: BinaryHeap<Reverse<Due>>,
    next: u64,
    closed: bool,
    /// Size at which sleepers that went away (their request dropped) are swept out, so
    /// abandoned waits do not pile up until their deadlines.
    sweep_at: usize,
}

struct Due {
    at: Instant,
    /// Ties on `at` keep their order of arrival.
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue {
            due: BinaryHeap::new(),
            next: 0,
            closed: false,
            sweep_at: MIN_SWEEP,
        }
    }
}

const MIN_SWEEP: usize = 1024;

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Delays {
    /// Starts the timer thread. If it cannot be started, sleeps fall back to tokio's timer.
    pub fn start() -> Delays {
        let shared = Arc::new(Shared::default());
        let for_thread = shared.clone();
        let started = std::thread::Builder::new()
            .name("userfetch-delays".into())
            .spawn(move || run(&for_thread));
        if let Err(e) = started {
            tracing::warn!("demo API: no precise timer thread ({e}); latency is to the ms");
            shared.lock().closed = true;
        }
        Delays { shared }
    }

    /// Waits `delay`, measured from now.
    pub async fn sleep(&self, delay: Duration) {
        // A latency beyond the clock's range (`?latency=500000000000y`) waits on tokio's
        // timer, which saturates, instead of overflowing.
        let Some(at) = Instant::now().checked_add(delay) else {
            return tokio::time::sleep(delay).await;
        };
        let (wake, woken) = oneshot::channel();
        if self.enqueue(at, wake) && woken.await.is_ok() {
            return;
        }
        // No timer thread, or it stopped (the server is shutting down): wait all the same.
        tokio::time::sleep_until(at.into()).await;
    }

    /// False if the timer thread is gone.
    fn enqueue(&self, at: Instant, wake: oneshot::Sender<()>) -> bool {
        let mut q = self.shared.lock();
        if q.closed {
            return false;
        }
        if q.due.len() >= q.sweep_at {
            q.due.retain(|Reverse(d)| !d.wake.is_closed());
            q.sweep_at = (2 * q.due.len()).max(MIN_SWEEP);
        }
        let seq = q.next;
        q.next += 1;
        let earliest = q.due.peek().is_none_or(|Reverse(d)| at < d.at);
        q.due.push(Reverse(Due { at, seq, wake }));
        if earliest {
            self.shared.changed.notify_one();
        }
        true
    }
}

impl Drop for Delays {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_one();
    }
}

fn run(shared: &Shared) {
    let mut fired = Vec::new();
    let mut q = shared.lock();
    loop {
        if q.closed {
            return;
        }
        let now = Instant::now();
        while q.due.peek().is_some_and(|Reverse(d)| d.at <= now) {
            if let Some(Reverse(d)) = q.due.pop() {
                fired.push(d.wake);
            }
        }
        if !fired.is_empty() {
            // Woken outside the lock: each wake may be a system call into the server's runtime.
            drop(q);
            for wake in fired.drain(..) {
                let _ = wake.send(());
            }
            q = shared.lock();
            continue;
        }
        q = match q
            .due
            .peek()
            .map(|Reverse(d)| d.at.saturating_duration_since(now))
        {
            Some(wait) => {
                shared
                    .changed
                    .wait_timeout(q, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => shared.changed.wait(q).unwrap_or_else(|p| p.into_inner()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_each_sleeper_no_earlier_than_asked_and_in_deadline_order() {
        let delays = Arc::new(Delays::start());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, ms) in [120u64, 40, 80, 40].into_iter().enumerate() {
            let delays = delays.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                delays.sleep(Duration::from_millis(ms)).await;
                let took = start.elapsed();
                order.lock().unwrap().push(i);
                took >= Duration::from_millis(ms)
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap(), "a sleeper woke before its deadline");
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.last(), Some(&0), "{order:?}");
        assert_eq!(order[2], 2, "{order:?}");
    }

    #[tokio::test]
    async fn sleepers_that_went_away_are_swept_out() {
        let delays = Delays::start();
        for _ in 0..3 * MIN_SWEEP {
            // Polled once (so it is queued), then dropped, as a cancelled request would be.
            let sleep = delays.sleep(Duration::from_secs(3600));
            tokio::pin!(sleep);
            let _ = futures::poll!(sleep.as_mut());
        }
        let left = delays.shared.lock().due.len();
        assert!(left <= MIN_SWEEP, "{left} abandoned sleepers kept");
    }

    #[tokio::test]
    async fn a_latency_beyond_the_clock_does_not_panic() {
        let delays = Delays::start();
        let sleep = delays.sleep(Duration::MAX);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), sleep)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_closed_timer_still_waits() {
        let delays = Delays::start();
        delays.shared.lock().closed = true;
        let start = Instant::now();
        delays.sleep(Duration::from_millis(30)).await;
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
