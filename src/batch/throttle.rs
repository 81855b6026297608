//! Politeness: a fixed rate limit (governor) and an adaptive window of requests on the wire.
//!
//! The window follows TCP's congestion control (AIMD): every answer widens it by `1/window`
//! (one slot per window's worth of good answers), and a 429 or 503 halves what is on the
//! wire, at most once per cool-down so one burst of refusals counts as one signal. It limits
//! attempts on the wire, not lookups: a lookup sleeping out a `Retry-After` holds no slot, so
//! it neither blocks the others nor hides from the limit when it tries again. The `--rate`
//! limit itself stays fixed: it is the user's promise to the API, and the window bounds the
//! rate below it whenever the API pushes back (with a fixed answer time, requests per second
//! = window / answer time, so halving the window halves the rate). Only 429 and 503 are
//! push-back: a 500 or a broken connection says nothing about the pace, and cutting on it
//! would slow a whole run down for one bad record; it does not widen the window either.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client::{AttemptEnd, AttemptGate};

/// How long after one cut the window stays deaf to further refusals: long enough for the
/// requests already on the wire to come back, short enough to react to a real overload.
const COOL_DOWN: Duration = Duration::from_millis(500);

pub struct Throttle {
    state: Mutex<Window>,
    opened: Notify,
    /// The limiter and its burst.
    rate: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    /// One waiter at the rate limit at a time, in the order they came (tokio's mutex is
    /// fair): governor's own waiters race for each free cell and go in no order, and an
    /// interrupted run would leave gaps all over the input. The order they come in is the
    /// input's on one thread while the window is whole; after a cut, or with --threads N,
    /// the window's wake-ups can reorder neighbours, and a retry comes back at the end.
    /// Holds whether the limiter's burst was used up (see [`spend_burst`]).
    rate_turn: tokio::sync::Mutex<bool>,
    attempts: AtomicU64,
    refusals: AtomicU64,
    /// Requests on the wire: admitted past the window and the rate limit, not yet ended.
    sending: AtomicUsize,
}

struct Window {
    size: f64,
    max: f64,
    on_wire: u32,
    last_cut: Option<Instant>,
    cuts: u64,
}

/// A requests-per-second limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

impl Rate {
    /// `100`, `100/s`, `6000/min`, `0.5/s`, `10/h`, `1/day`.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let bad = || {
            format!("--rate '{text}' is not a rate like 100, 100/s, 6000/min, 500/h or 1000/day")
        };
        let (number, per) = text.trim().split_once('/').unwrap_or((text.trim(), "s"));
        let n: f64 = number
            .trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite())
            .ok_or_else(bad)?;
        let seconds = match per.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            "d" | "day" => 86_400.0,
            _ => return Err(bad()),
        };
        let per_second = n / seconds;
        if !per_second.is_finite() || per_second <= 0.0 {
            return Err(format!("--rate '{text}' must be more than zero"));
        }
        // The interval between requests becomes a Duration, which a vanishing rate would
        // overflow; slower than one a day is no rate anyone means.
        if per_second < 1.0 / 86_400.0 {
            return Err(format!(
                "--rate '{text}' is less than one request a day; leave --rate out for no limit"
            ));
        }
        if per_second > 1e9 {
            return Err(format!("--rate '{text}' is more than any API could take"));
        }
        Ok(Rate(per_second))
    }

    /// Per unit of time that shows at least one (0.5/s is 30/min), to three decimals.
    fn per_shown_unit(self) -> (f64, &'static str) {
        let (n, unit) = [(1.0, "s"), (60.0, "min"), (3600.0, "h")]
            .into_iter()
            .map(|(seconds, unit)| (self.0 * seconds, unit))
            .find(|(n, _)| *n >= 1.0)
            .unwrap_or((self.0 * 86_400.0, "day"));
        ((n * 1000.0).round() / 1000.0, unit)
    }

    fn quota(self) -> Option<Quota> {
        // A burst of a twentieth of a second's worth keeps the pacing smooth without making
        // high rates pay for a timer wake-up per request.
        let burst = NonZeroU32::new((self.0 / 20.0).ceil().clamp(1.0, 1e6) as u32)?;
        Quota::with_period(Duration::from_secs_f64(1.0 / self.0)).map(|q| q.allow_burst(burst))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, unit) = self.per_shown_unit();
        write!(f, "{n}/{unit}")
    }
}

/// Uses up all but one cell of the limiter's burst, at the first request: the run starts at
/// the pace asked, one request per interval. Full, the burst went out at once (5 requests at
/// `--rate 100/s`), so a short run beat the rate, and a strict API's first second saw more
/// than it allows. The burst is there to absorb late timer wake-ups, not to be spent at the
/// start. Not when the limiter is made: an idle limiter refills, and the first request can
/// come a while later (the claims of a resumed job, a slow stdin).
fn spend_burst(limiter: &DefaultDirectRateLimiter, burst: NonZeroU32) {
    if let Some(cells) = NonZeroU32::new(burst.get() - 1) {
        // Cannot fail: the burst is at most full, and this asks for less than all of it.
        let _ = limiter.check_n(cells);
    }
}

/// The throttle's account, for the summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThrottleStats {
    /// Requests sent.
    pub attempts: u64,
    /// Answers that were 429 or 503.
    pub refusals: u64,
    /// Times the window was cut.
    pub cuts: u64,
    /// The window at the end.
    pub window: u32,
}

impl Throttle {
    pub fn new(concurrency: u32, rate: Option<Rate>) -> Throttle {
        Throttle {
            state: Mutex::new(Window {
                size: f64::from(concurrency),
                max: f64::from(concurrency),
                on_wire: 0,
                last_cut: None,
                cuts: 0,
            }),
            opened: Notify::new(),
            rate: rate
                .and_then(Rate::quota)
                .map(|quota| (RateLimiter::direct(quota), quota.burst_size())),
            rate_turn: tokio::sync::Mutex::new(false),
            attempts: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            sending: AtomicUsize::new(0),
        }
    }

    /// Requests on the wire now.
    pub fn sending(&self) -> usize {
        self.sending.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> ThrottleStats {
        let w = self.lock();
        ThrottleStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            refusals: self.refusals.load(Ordering::Relaxed),
            cuts: w.cuts,
            window: w.size as u32,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // The window holds plain numbers; a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self) {
        let mut w = self.lock();
        w.on_wire = w.on_wire.saturating_sub(1);
        drop(w);
        self.opened.notify_one();
    }
}

/// A slot on the wire; given back on drop, so a cancelled attempt frees its slot too.
pub struct Slot {
    throttle: Arc<Throttle>,
    /// Past the rate limit too: its request is being sent.
    sending: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.sending {
            self.throttle.sending.fetch_sub(1, Ordering::Relaxed);
        }
        self.throttle.release();
    }
}

impl AttemptGate for Arc<Throttle> {
    type Permit = Slot;

    async fn admit(&self) -> Slot {
        loop {
            // Registered before the check, so a slot freed in between still wakes us.
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            {
                let mut w = self.lock();
                if f64::from(w.on_wire) < w.size.floor().max(1.0) {
                    w.on_wire += 1;
                    break;
                }
            }
            opened.await;
        }
        let mut slot = Slot {
            throttle: self.clone(),
            sending: false,
        };
        if let Some((rate, burst)) = &self.rate {
            let mut burst_spent = self.rate_turn.lock().await;
            if !*burst_spent {
                spend_burst(rate, *burst);
                *burst_spent = true;
            }
            rate.until_ready().await;
        }
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.sending.fetch_add(1, Ordering::Relaxed);
        slot.sending = true;
        slot
    }

    fn attempted(&self, slot: Slot, ended: AttemptEnd) {
        let refused = ended == AttemptEnd::PushedBack;
        let mut w = self.lock();
        let before = w.size.floor();
        if refused {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            if w.last_cut
                .is_none_or(|t| now.duration_since(t) >= COOL_DOWN)
            {
                // Half of what is actually on the wire, as TCP halves its flight size: halving
                // a window the run never filled (a fast API, a --rate) would change nothing.
                w.size = (w.size.min(f64::from(w.on_wire)) / 2.0).max(1.0);
                w.last_cut = Some(now);
                w.cuts += 1;
            }
        } else if ended == AttemptEnd::Answered {
            w.size = (w.size + 1.0 / w.size).min(w.max);
        }
        // A failed attempt (a 500, a timeout) neither widens nor cuts: it says nothing about
        // the pace, but growing on it would reward a gateway's 502s as if they were answers.
        let grew = w.size.floor() > before;
        drop(w);
        drop(slot);
        if grew {
            self.opened.notify_one();
        }
    }
}

/// The throttle as one lookup sees it, noting when its first attempt was let through. A
/// lookup's latency starts there: time queued behind the window or the rate limit is the
/// batch's own pacing, not the API's answer time.
pub struct Timed<'a> {
    throttle: &'a Arc<Throttle>,
    /// Cancelled when the batch stops taking new work: no attempt starts after that.
    stopping: &'a CancellationToken,
    admitted: std::sync::OnceLock<crate::stopped::Stopwatch>,
    /// An attempt was admitted and has not ended.
    on_wire: AtomicBool,
    /// Attempts admitted, as the throttle counts requests.
    attempts: AtomicU32,
    /// Time retries waited for a slot or for `--rate`, in nanoseconds: the batch's own
    /// pacing, no part of the latency (after a 429 halved the window, it made p95 ten
    /// times the API's answer time).
    retries_queued: AtomicU64,
}

impl<'a> Timed<'a> {
    pub fn new(throttle: &'a Arc<Throttle>, stopping: &'a CancellationToken) -> Self {
        Timed {
            throttle,
            stopping,
            admitted: std::sync::OnceLock::new(),
            on_wire: AtomicBool::new(false),
            attempts: AtomicU32::new(0),
            retries_queued: AtomicU64::new(0),
        }
    }

    /// Ends once the batch stops while no attempt of this lookup is on the wire: before its
    /// first is admitted, or between attempts (a retry's wait). The gate's `closed` keeps a
    /// retry whose wait is over at once from starting.
    ///
    /// Raced in a `select!` against the lookup itself, in the same task: while an attempt is
    /// on the wire this returns `Pending` without a waker of its own, and is polled again
    /// whenever the task wakes for the attempt, the end of which always wakes it.
    pub async fn between_attempts(&self) {
        self.stopping.cancelled().await;
        std::future::poll_fn(|_| {
            if self.on_wire.load(Ordering::Relaxed) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    /// Time the process ran since the first attempt was admitted (a stop, Ctrl-Z, is no part
    /// of it, as it is none of `--timeout`'s), less the time retries waited for their turn;
    /// zero if none was.
    pub fn since_admitted(&self) -> Duration {
        let queued = Duration::from_nanos(self.retries_queued.load(Ordering::Relaxed));
        self.admitted
            .get()
            .map_or(Duration::ZERO, crate::stopped::Stopwatch::ran)
            .saturating_sub(queued)
    }

    /// Retries that were sent: every admitted attempt after the first. A retry noted but cut
    /// off in its wait was never sent, so it is none.
    pub fn retries_sent(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed).saturating_sub(1)
    }
}

impl AttemptGate for Timed<'_> {
    type Permit = Slot;

    async fn admit(&self) -> Slot {
        let retry_queued = self
            .admitted
            .get()
            .is_some()
            .then(crate::stopped::Stopwatch::start);
        let slot = self.throttle.admit().await;
        if let Some(queued) = retry_queued {
            let nanos = u64::try_from(queued.ran().as_nanos()).unwrap_or(u64::MAX);
            self.retries_queued.fetch_add(nanos, Ordering::Relaxed);
        }
        // Only the first admission sets it: retries are part of the lookup's latency.
        let _ = self.admitted.set(crate::stopped::Stopwatch::start());
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.on_wire.store(true, Ordering::Relaxed);
        slot
    }

    fn attempted(&self, slot: Slot, ended: AttemptEnd) {
        self.on_wire.store(false, Ordering::Relaxed);
        self.throttle.attempted(slot, ended);
    }

    fn closed(&self) -> bool {
        self.stopping.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_shown_in_a_unit_that_reads_well() {
        let shown = |text: &str| Rate::parse(text).unwrap().to_string();
        assert_eq!(shown("50"), "50/s");
        assert_eq!(shown("100/min"), "1.667/s");
        assert_eq!(shown("30/min"), "30/min");
        assert_eq!(shown("0.5/s"), "30/min");
        assert_eq!(shown("1/h"), "1/h");
        assert_eq!(shown("1/day"), "1/day");
    }

    #[test]
    fn reads_rates_as_people_write_them() {
        assert_eq!(Rate::parse("100"), Ok(Rate(100.0)));
        assert_eq!(Rate::parse("100/s"), Ok(Rate(100.0)));
        assert_eq!(Rate::parse("6000/min"), Ok(Rate(100.0)));
        assert_eq!(Rate::parse("0.5/s"), Ok(Rate(0.5)));
        assert!(Rate::parse("abc").unwrap_err().contains("'abc'"));
        assert!(Rate::parse("0").is_err());
        assert!(Rate::parse("-3/s").is_err());
        assert!(Rate::parse("5/fortnight").is_err());
        // Slow enough to overflow the interval between requests: refused, not a panic.
        assert!(
            Rate::parse("1e-20")
                .unwrap_err()
                .contains("less than one request a day")
        );
        assert_eq!(Rate::parse("1/day"), Ok(Rate(1.0 / 86_400.0)));
        assert_eq!(Rate::parse("2/d"), Ok(Rate(2.0 / 86_400.0)));
        assert!(Rate::parse("1/h").is_ok());
        for bad in ["inf", "NaN", "-inf/s"] {
            let err = Rate::parse(bad).unwrap_err();
            assert!(err.contains("is not a rate like"), "{bad}: {err}");
        }
        for ok in ["1/h", "1e9", "0.0001"] {
            Rate::parse(ok).unwrap().quota().unwrap();
        }
    }

    #[tokio::test]
    async fn refusals_halve_the_window_once_per_cool_down_and_successes_regrow_it() {
        let t = Arc::new(Throttle::new(64, None));
        let mut on_wire = Vec::new();
        for _ in 0..63 {
            on_wire.push(t.admit().await);
        }
        let slot = t.admit().await;
        t.attempted(slot, AttemptEnd::PushedBack);
        assert_eq!(t.stats().window, 32);
        drop(on_wire);
        // A second refusal from the same burst is not a second signal.
        let slot = t.admit().await;
        t.attempted(slot, AttemptEnd::PushedBack);
        assert_eq!(t.stats().window, 32);
        assert_eq!(t.stats().refusals, 2);
        assert_eq!(t.stats().cuts, 1);
        // Additive increase: about one slot per window's worth of good answers.
        for _ in 0..33 {
            let slot = t.admit().await;
            t.attempted(slot, AttemptEnd::Answered);
        }
        assert_eq!(t.stats().window, 33);
        assert_eq!(t.stats().attempts, 98);
        // Failures (500s, timeouts) leave it where it is.
        for _ in 0..100 {
            let slot = t.admit().await;
            t.attempted(slot, AttemptEnd::Failed);
        }
        assert_eq!(t.stats().window, 33);
        assert_eq!(t.stats().cuts, 1);
    }

    #[tokio::test]
    async fn a_cut_halves_what_is_on_the_wire_not_an_unused_window() {
        let t = Arc::new(Throttle::new(1000, None));
        let mut on_wire = Vec::new();
        for _ in 0..9 {
            on_wire.push(t.admit().await);
        }
        let slot = t.admit().await;
        t.attempted(slot, AttemptEnd::PushedBack);
        assert_eq!(t.stats().window, 5);
    }

    #[tokio::test]
    async fn latency_starts_when_the_first_attempt_is_admitted() {
        let t = Arc::new(Throttle::new(1, None));
        let held = t.admit().await;
        let running = CancellationToken::new();
        let timed = Timed::new(&t, &running);
        let waiting = tokio::time::timeout(Duration::from_millis(300), timed.admit()).await;
        assert!(waiting.is_err(), "admitted through a full window");
        assert_eq!(timed.since_admitted(), Duration::ZERO);
        drop(held);
        let slot = timed.admit().await;
        // Well under the 300 ms spent queued, however slow the machine.
        assert!(timed.since_admitted() < Duration::from_millis(300));
        timed.attempted(slot, AttemptEnd::Answered);
        assert_eq!(t.stats().attempts, 2);
    }

    #[tokio::test]
    async fn a_retry_waiting_for_its_turn_adds_nothing_to_the_latency() {
        let t = Arc::new(Throttle::new(1, None));
        let running = CancellationToken::new();
        let timed = Timed::new(&t, &running);
        let first = timed.admit().await;
        timed.attempted(first, AttemptEnd::Failed);
        // Another lookup holds the only slot for 300 ms while the retry waits for it.
        let held = t.admit().await;
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
        });
        let retry = timed.admit().await;
        release.await.unwrap();
        let latency = timed.since_admitted();
        assert!(latency < Duration::from_millis(300), "{latency:?}");
        timed.attempted(retry, AttemptEnd::Answered);
        assert_eq!(timed.retries_sent(), 1);
    }

    #[tokio::test]
    async fn the_rate_holds_from_the_first_request() {
        // 100/s has a burst of 5; from the first request on, the fifth waits four intervals,
        // however long after the throttle was made the first comes (the limiter refills
        // while idle).
        let t = Arc::new(Throttle::new(100, Some(Rate::parse("100/s").unwrap())));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        drop(t.admit().await);
        let first = started.elapsed();
        for _ in 0..4 {
            drop(t.admit().await);
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(39), "5 requests in {took:?}");
        // The first goes at once (a bound no loaded machine reaches).
        assert!(first < Duration::from_secs(1), "{first:?}");
    }

    #[tokio::test]
    async fn never_more_on_the_wire_than_the_window() {
        let t = Arc::new(Throttle::new(2, None));
        let a = t.admit().await;
        let _b = t.admit().await;
        let third = tokio::time::timeout(Duration::from_millis(50), t.admit()).await;
        assert!(third.is_err(), "a third attempt got through a window of 2");
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(5), t.admit()).await;
        assert!(third.is_ok(), "a freed slot must let the next attempt in");
    }
}
