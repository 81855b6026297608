//! One run of a batch job: ids claimed, looked up, settled and counted, then the outputs
//! and the summary written ([`finish`]). One lookup, and the set of them in flight, are in
//! [`lookup`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, Claim, Settled};
use crate::client::ErrorKind;
use crate::console::{count, note};
use crate::exit::ExitCode;
use crate::id::UserId;
use crate::signals::{Received, Signals};

mod finish;
mod lookup;

pub(super) use lookup::Ctx;
use lookup::{Answer, CommitFuture, Lookups, Stopping, Tally, Verdict, commit, lookup};

use super::config::Config;
use super::input::{self, Chunk};
use super::output::{self, AtomicFile};
use super::progress::Progress;
use super::streamed::Output;
use super::summary::{Counts, Histogram, Status};
use super::{Format, MAX_WARNINGS};

/// Lookups in a row that failed the same way for every id, after which a run stops: at the
/// connection (a wrong --api, an API that went down), or refused for their credentials (401:
/// a missing or expired token; a proxy's 407). Otherwise every id of a million-line
/// input would be taken through its retries, or sent to be refused. Any other outcome in
/// between (a record, a 404, a 500) starts the count again, so a flaky API is not stopped.
const UNREACHABLE_STOP: u32 = 20;

/// Claims requested ahead of need: some being answered while others are consumed.
const CLAIMS_AHEAD: usize = 4;

/// How long no answer must arrive before waiting answers are committed: longer than the gaps
/// inside a wave of answers, short next to any latency worth batching for.
const ANSWERS_PAUSED: Duration = Duration::from_micros(500);

/// Answers committed at once even while they keep coming. A wave's worth (the concurrency)
/// when that is small; bounded so that a burst of 10,000 answers is stored while it lands,
/// not in one commit after the last of them.
const COMMIT_AT_MOST: usize = 1024;

/// Answers taken in one turn of the run's loop when they are already in (see `fetch`).
const ANSWERS_PER_TURN: usize = 64;

type ClaimFuture = std::pin::Pin<
    Box<
        dyn Future<
                Output = (
                    Vec<(u64, UserId)>,
                    Result<Vec<Claim>, crate::cache::CacheError>,
                ),
            > + Send,
    >,
>;

/// Whether Ctrl-C (or SIGTERM) has been pressed, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// First signal: take no new ids, let lookups in flight finish until the deadline.
    Draining(tokio::time::Instant),
    /// Second signal or grace period over: lookups in flight are cancelled.
    Aborting,
}

/// How fetching ended, for the end of the run to report.
struct Ended {
    /// An error of userfetch's own (the store, a lookup task, the input reader dying).
    fatal: Option<anyhow::Error>,
    /// The input broke off (stdin, found mid-stream).
    input_error: Option<input::InputError>,
    /// The input reader thread ended without saying the input was done.
    reader_died: bool,
    /// Ctrl-C (and SIGTERM, SIGHUP) taken so far.
    received: u32,
}

pub(super) struct Pipeline<'a> {
    config: &'a Config,
    ctx: Arc<Ctx>,
    max_age: Duration,
    progress: Progress,
    counts: Counts,
    /// Valid input lines handled (settled, skipped or duplicate): the progress bar's position.
    handled: u64,
    latencies: Histogram,
    retries: u64,
    warnings: u64,
    /// Lines with a valid id in the input, when it was counted before the run.
    id_lines: Option<u64>,
    /// Lookups in a row that failed with this same kind (connection or unauthorized).
    streak: (ErrorKind, u32),
    /// Lookups that failed because the answer was no JSON record (`bad_body`).
    bad_bodies: u64,
    /// How and why the run stopped for a streak, once it did: an answer landing afterwards
    /// resets the count, not the reason the run ended.
    gave_up: Option<(Status, String)>,
    /// Whether that streak was met once every id had its lookup (see `on_answer`).
    gave_up_all_started: bool,
    /// `--out` holds a file this job did not write (another `--api`'s output, or one made by
    /// hand): replaced only by a run that finishes.
    foreign_out: bool,
}

impl<'a> Pipeline<'a> {
    pub(super) fn new(
        config: &'a Config,
        ctx: Arc<Ctx>,
        max_age: Duration,
        scan: Option<input::Scan>,
    ) -> Self {
        Pipeline {
            config,
            ctx,
            max_age,
            progress: Progress::new(
                scan.as_ref().map(|s| s.ids),
                matches!(config.source, input::Source::Stdin)
                    && std::io::IsTerminal::is_terminal(&std::io::stdin()),
            ),
            id_lines: scan.map(|s| s.ids),
            counts: Counts::default(),
            handled: 0,
            latencies: Histogram::default(),
            retries: 0,
            warnings: 0,
            streak: (ErrorKind::Connection, 0),
            bad_bodies: 0,
            gave_up: None,
            gave_up_all_started: false,
            foreign_out: false,
        }
    }

    /// See [`Pipeline::foreign_out`].
    pub(super) fn keeping_a_foreign_out(mut self, foreign: bool) -> Self {
        self.foreign_out = foreign;
        self
    }

    /// Counts a lookup's end towards a streak of failures every id would meet: when this
    /// one makes [`UNREACHABLE_STOP`] in a row, the status to stop with and why.
    fn gives_up(&mut self, settled: &Settled) -> Option<(Status, String)> {
        let Settled::Failed { kind, message, .. } = settled else {
            self.streak.1 = 0;
            return None;
        };
        let kind = *kind;
        if !matches!(kind, ErrorKind::Connection | ErrorKind::Unauthorized) {
            self.streak.1 = 0;
            return None;
        }
        self.streak = match self.streak {
            (was, n) if was == kind => (kind, n + 1),
            _ => (kind, 1),
        };
        (self.streak.1 == UNREACHABLE_STOP).then(|| match kind {
            ErrorKind::Unauthorized => (
                Status::Refused,
                format!("{UNREACHABLE_STOP} lookups in a row were refused ({message})"),
            ),
            _ => (
                Status::Unreachable,
                format!(
                    "{UNREACHABLE_STOP} lookups in a row failed at the connection, each after its last attempt ({message})"
                ),
            ),
        })
    }

    /// `started`: when the command began, before it read the input's length, asked the API
    /// about HTTP/2 and opened its job.
    pub(super) async fn run(
        mut self,
        started: Instant,
        lines: input::Lines<Box<dyn std::io::Read + Send>>,
        out: AtomicFile,
        failures: Option<AtomicFile>,
        summary_json: Option<AtomicFile>,
        mut signals: Signals,
    ) -> anyhow::Result<ExitCode> {
        // Streamed only when every found record will pass through this run: CSV needs all
        // columns first, and earlier runs' records are only in the store.
        let mut out = match self.config.format {
            Format::Csv => Output::rebuilt(out, "CSV needs every record's columns first"),
            Format::Jsonl if self.ctx.job.earlier_found => {
                Output::rebuilt(out, "earlier runs found records this run will not see")
            }
            Format::Jsonl => Output::stream(out)?,
        };
        let ended = self.fetch(lines, &mut out, &mut signals).await?;
        self.finish(ended, started, out, failures, summary_json, signals)
            .await
    }

    /// Reads, claims, looks up and stores until the input is done and nothing is in flight,
    /// or until the run is stopped.
    async fn fetch(
        &mut self,
        lines: input::Lines<Box<dyn std::io::Read + Send>>,
        out: &mut Output,
        signals: &mut Signals,
    ) -> anyhow::Result<Ended> {
        let (tx, mut rx) = mpsc::channel(8);
        let mut reader = Some(
            input::spawn_reader(lines, self.config.strict, tx)
                .context("cannot start the input reader thread")?,
        );
        // The reader ended without saying the input was done: it died, and what it left
        // unread must not be taken for the end of the input.
        let mut reader_died = false;

        let concurrency = self.config.concurrency as usize;
        let cancel = CancellationToken::new();
        // A child, so that cancelling everything also ends what waits between attempts.
        let stopping = Stopping {
            draining: cancel.child_token(),
            cancel: cancel.clone(),
        };
        // Asked to stop (a first Ctrl-C, too), the run no longer waits for another process's
        // lock on the cache file: what it could not store is left for the next run, and what
        // it did is written out.
        self.ctx
            .cache
            .wait_for_locks_until(stopping.draining.clone());
        let mut ready: VecDeque<(u64, UserId)> = VecDeque::new();
        let mut claims: FuturesOrdered<ClaimFuture> = FuturesOrdered::new();
        let mut tasks = Lookups::new();
        // Answers waiting to be stored: they go in one message once the previous one is
        // committed and the answers pause, so the busier the run, the larger (and cheaper per
        // id) each commit.
        let mut uncommitted: Vec<(cache::Outcome, Tally)> = Vec::new();
        let mut committing: FuturesUnordered<CommitFuture> = FuturesUnordered::new();
        let mut committing_len = 0usize;
        let max_uncommitted = 2 * concurrency.max(1024);
        let commit_at = concurrency.clamp(256, COMMIT_AT_MOST);
        let mut quiet = false;
        let mut last_answer = tokio::time::Instant::now();
        let mut input_done = false;
        let mut input_error: Option<input::InputError> = None;
        let mut fatal: Option<anyhow::Error> = None;
        let mut stop = Stop::Running;
        let mut received = 0u32;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

        loop {
            if stop == Stop::Running {
                // Answers waiting for their commit hold memory, so they hold back new lookups.
                while tasks.len() < concurrency
                    && uncommitted.len() + committing_len < max_uncommitted
                    && let Some((line, id)) = ready.pop_front()
                {
                    tasks.push(lookup(self.ctx.clone(), line, id, stopping.clone()));
                }
            }
            let taking = stop == Stop::Running && !input_done;
            // The cache thread is woken once the answers pause (or a wave's worth waits, or
            // nothing is left in flight), not mid-burst: on a busy core its commit would
            // otherwise run between answers and hold back the next wave's requests.
            if committing.is_empty()
                && !uncommitted.is_empty()
                && (quiet || tasks.is_empty() || uncommitted.len() >= commit_at)
            {
                committing_len = uncommitted.len();
                committing.push(commit(&self.ctx, std::mem::take(&mut uncommitted)));
            }
            quiet = false;
            let await_quiet = committing.is_empty() && !uncommitted.is_empty();
            if !taking && tasks.is_empty() && claims.is_empty() && committing.is_empty() {
                break;
            }
            // Two waves of ids ready: when a whole wave of answers comes back at once, the next
            // wave leaves at once too, without waiting for a claim behind a big commit.
            let want_input = taking && claims.len() < CLAIMS_AHEAD && ready.len() < 2 * concurrency;
            let deadline = match stop {
                Stop::Draining(at) => Some(at),
                _ => None,
            };
            tokio::select! {
                // In order: every branch above the lookups is ready only now and then, so the
                // lookups, polled next to last, are never starved; the pause is polled last so
                // it only fires when nothing else is ready.
                biased;
                chunk = rx.recv(), if want_input => match chunk {
                    Some(Chunk::Ids(ids)) => claims.push_back(self.claim(ids)),
                    Some(Chunk::Invalid { line, problem }) => {
                        self.counts.invalid_lines += 1;
                        self.warn_invalid(line, &problem);
                    }
                    Some(Chunk::Fatal(e)) => {
                        input_error = Some(e);
                        input_done = true;
                    }
                    Some(Chunk::End(_)) => input_done = true,
                    None => {
                        input_done = true;
                        reader_died = true;
                        let why = join_reader(reader.take()).await;
                        fatal.get_or_insert(anyhow::anyhow!(
                            "reading {} stopped before its end ({why}); {} to continue",
                            self.config.source.name(),
                            rerun_hint(self.config.fresh)
                        ));
                    }
                },
                Some((ids, claimed)) = claims.next(), if !claims.is_empty() => match claimed {
                    Ok(claimed) => {
                        for ((line, id), claim) in ids.into_iter().zip(claimed) {
                            self.handled += u64::from(claim != Claim::Fetch);
                            match claim {
                                // Counted when claimed: an id left unfinished is still an id of the input.
                                Claim::Fetch => { self.counts.ids += 1; out.claimed(line); ready.push_back((line, id)) }
                                Claim::Cached => { self.counts.ids += 1; self.counts.cached += 1; out.settled_elsewhere() }
                                Claim::DoneEarlier => { self.counts.ids += 1; self.counts.done_earlier += 1; out.settled_elsewhere() }
                                Claim::Duplicate => self.counts.duplicates += 1,
                            }
                        }
                    }
                    Err(e) => {
                        fatal.get_or_insert(anyhow::Error::new(e).context("cannot claim ids in the cache file"));
                        stop = Stop::Aborting;
                        cancel.cancel();
                    }
                },
                Some((tallies, stored)) = committing.next(), if !committing.is_empty() => {
                    committing_len = 0;
                    match stored {
                        Ok(outcomes) => {
                            tallies.into_iter().for_each(|t| self.count(t));
                            out.committed(outcomes);
                        }
                        Err(e) => {
                            self.counts.unfinished += tallies.len() as u64;
                            fatal.get_or_insert(e);
                            stop = Stop::Aborting;
                            cancel.cancel();
                        }
                    }
                }
                signal = signals.recv() => { received += 1; stop = self.on_signal(received, signal, stop, &stopping, tasks.len()); }
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.progress.warn(&format!(
                        "userfetch: grace period over; cancelling {} in flight",
                        count(tasks.len() as u64, "lookup", "lookups")
                    ));
                    stop = Stop::Aborting;
                    cancel.cancel();
                }
                _ = tick.tick() => {
                    let fetched = self.counts.found + self.counts.not_found + self.counts.failed;
                    self.progress.update(self.handled, fetched, tasks.len(), self.counts.failed);
                }
                Some(joined) = tasks.next(), if !tasks.is_empty() => {
                    // Whether every id of the input has its lookup: a streak met then
                    // spares the API only what has not been sent yet.
                    let all_started = input_done && ready.is_empty() && claims.is_empty();
                    self.on_answer(joined, &mut uncommitted, &mut fatal, &mut stop, &stopping, all_started);
                    // Answers land a socket's worth at a time: those already in take one turn
                    // of this loop, not a pass over every branch above each.
                    for _ in 1..ANSWERS_PER_TURN {
                        let Some(joined) = tasks.next().now_or_never().flatten() else { break };
                        self.on_answer(joined, &mut uncommitted, &mut fatal, &mut stop, &stopping, all_started);
                    }
                    // After the turn, which reads and checks every answer in it: the pause
                    // before a commit counts from the last one.
                    last_answer = tokio::time::Instant::now();
                }
                () = tokio::time::sleep_until(last_answer + ANSWERS_PAUSED), if await_quiet => quiet = true,
            }
            if (input_error.is_some() || reader_died) && stop == Stop::Running {
                // Like a first Ctrl-C: what is in flight finishes and is kept for the rerun.
                stop = self.draining(&stopping);
            }
        }
        self.counts.unfinished += ready.len() as u64;
        self.progress.finish();
        Ok(Ended {
            fatal,
            input_error,
            reader_died,
            received,
        })
    }

    fn claim(&self, ids: Vec<(u64, UserId)>) -> ClaimFuture {
        let ctx = self.ctx.clone();
        let max_age = self.max_age;
        Box::pin(async move {
            let keys = ids
                .iter()
                .map(|(line, id)| (*line, id.as_str().to_owned()))
                .collect();
            let claimed = ctx
                .cache
                .batch_claim(ctx.job, &ctx.namespace, max_age, keys)
                .await;
            (ids, claimed)
        })
    }

    fn count(&mut self, tally: Tally) {
        self.handled += 1;
        self.retries += u64::from(tally.retries);
        self.latencies.record(tally.latency);
        match tally.verdict {
            Verdict::Found => self.counts.found += 1,
            Verdict::NotFound => self.counts.not_found += 1,
            Verdict::Failed => self.counts.failed += 1,
        }
    }

    /// Counts one lookup's end: an outcome to commit, a cancelled lookup, or a lookup task
    /// that failed.
    fn on_answer(
        &mut self,
        joined: Result<Answer, tokio::task::JoinError>,
        uncommitted: &mut Vec<(cache::Outcome, Tally)>,
        fatal: &mut Option<anyhow::Error>,
        stop: &mut Stop,
        stopping: &Stopping,
        all_started: bool,
    ) {
        match joined {
            Ok(Answer::Settle {
                line,
                id,
                verdict,
                settled,
                latency,
                retries,
            }) => {
                if matches!(&settled, Settled::Failed { kind, message, .. }
                    if crate::client::is_web_page(*kind, message))
                {
                    self.bad_bodies += 1;
                }
                if let Some((status, why)) = self.gives_up(&settled)
                    && *stop == Stop::Running
                {
                    if all_started {
                        // Requests on the wire end as they will (cancelling them spared the
                        // API nothing, and how many were cancelled depended on how the
                        // answers fell into turns); lookups still waiting for their turn
                        // (--rate) or a retry are left for a rerun. Whether any were is known
                        // at the end: the run counts as stopped only if so.
                        self.gave_up_all_started = true;
                        stopping.draining.cancel();
                    } else {
                        self.progress.warn(&format!(
                            "userfetch: stopping: {why}; the ids not done are left for a rerun once {}",
                            rerun_once(status)
                        ));
                        *stop = Stop::Aborting;
                        stopping.cancel.cancel();
                    }
                    self.gave_up = Some((status, why));
                }
                let outcome = cache::Outcome {
                    id: id.as_str().to_owned(),
                    line,
                    settled,
                };
                uncommitted.push((
                    outcome,
                    Tally {
                        verdict,
                        latency,
                        retries,
                    },
                ));
            }
            Ok(Answer::Cancelled { retries }) => {
                self.counts.unfinished += 1;
                self.retries += u64::from(retries);
            }
            // A lookup task that panicked (a bug; caught here with --threads N, where
            // lookups are spawned tasks): stop as on any other error of our own,
            // rather than fetch the rest of the input into a run that ends in error.
            Err(e) => {
                fatal.get_or_insert(anyhow::anyhow!("a lookup task failed: {e}"));
                self.counts.unfinished += 1;
                *stop = Stop::Aborting;
                stopping.cancel.cancel();
            }
        }
    }

    /// The first stop: requests on the wire get the grace period to finish.
    fn draining(&self, stopping: &Stopping) -> Stop {
        stopping.draining.cancel();
        let now = tokio::time::Instant::now();
        // --grace is bounded, but the clock's range is the platform's: never panic over it.
        let far = Duration::from_secs(365 * 24 * 60 * 60);
        let at = now
            .checked_add(self.config.grace)
            .or_else(|| now.checked_add(far))
            .unwrap_or(now);
        Stop::Draining(at)
    }

    fn on_signal(
        &self,
        signals: u32,
        signal: Received,
        stop: Stop,
        stopping: &Stopping,
        in_flight: usize,
    ) -> Stop {
        match (signals, stop) {
            // No time to let anything finish: the first Ctrl-C cancels, and says so once.
            (1, Stop::Running) if self.config.grace.is_zero() => {
                self.progress.warn(&format!(
                    "userfetch: stopping: --grace is 0s: cancelling {} in flight; they and the ids not started yet are left to the next run",
                    count(in_flight as u64, "lookup", "lookups"),
                ));
                stopping.draining.cancel();
                stopping.cancel.cancel();
                Stop::Aborting
            }
            (1, Stop::Running) => {
                let on_wire = self.ctx.throttle.sending();
                let waiting = in_flight.saturating_sub(on_wire);
                let finishing = match on_wire {
                    0 => "no request is on the wire".to_owned(),
                    n => format!(
                        "letting {} on the wire finish (up to {})",
                        count(n as u64, "request", "requests"),
                        humantime::format_duration(self.config.grace),
                    ),
                };
                let left = match waiting {
                    0 => "the ids not started yet are".to_owned(),
                    n => format!(
                        "{} waiting for their turn or a retry, and the ids not started yet, are",
                        count(n as u64, "lookup", "lookups"),
                    ),
                };
                self.progress.warn(&format!(
                    "userfetch: stopping: {finishing}; {left} left to the next run; {} to cancel",
                    signal.again(),
                ));
                self.draining(stopping)
            }
            (1 | 2, _) => {
                self.progress.warn(&format!(
                    "userfetch: cancelling {} in flight; writing what is done ({} to quit at once)",
                    count(in_flight as u64, "lookup", "lookups"),
                    signal.again(),
                ));
                stopping.cancel.cancel();
                Stop::Aborting
            }
            _ => quit_now(self.config.fresh),
        }
    }

    fn warn_invalid(&mut self, line: u64, problem: &str) {
        self.warnings += 1;
        if self.warnings <= MAX_WARNINGS {
            self.progress.warn(&format!(
                "userfetch: {}:{line}: skipped: {problem}",
                self.config.source.name()
            ));
        } else if self.warnings == MAX_WARNINGS + 1 {
            self.progress.warn(
                "userfetch: more invalid lines are skipped without a message (the summary counts them)",
            );
        }
    }
}

/// What a run stopped by a streak waits for before a rerun can finish it.
fn rerun_once(status: Status) -> &'static str {
    match status {
        Status::Refused => "the API takes the credentials",
        _ => "connections to the API hold",
    }
}

/// How to finish an interrupted run. Repeated as it was, a `--fresh` run would start over
/// once more; without the flag, the job it started is continued.
fn rerun_hint(fresh: bool) -> &'static str {
    if fresh {
        "run the same command again without --fresh"
    } else {
        "run the same command again"
    }
}

/// Ctrl-C once too often (the third, or the second while writing). Everything settled so far is
/// committed; the output files are the previous ones or complete new ones, and the half-written
/// ones are removed. A rerun rebuilds them.
fn quit_now(fresh: bool) -> ! {
    output::remove_partials();
    note!(
        "userfetch: quitting at once; {} to finish",
        rerun_hint(fresh)
    );
    std::process::exit(ExitCode::Interrupted as i32);
}

/// Why the input reader thread ended early, as far as can be told.
async fn join_reader(reader: Option<std::thread::JoinHandle<()>>) -> String {
    let Some(reader) = reader else {
        return "the input reader was already gone".to_owned();
    };
    // The channel is closed, so the thread is ending; joining it blocks for no longer.
    match tokio::task::spawn_blocking(move || reader.join()).await {
        Ok(Ok(())) => "the input reader ended without finishing".to_owned(),
        Ok(Err(panic)) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            format!("the input reader panicked: {why}")
        }
        Err(e) => format!("the input reader could not be joined: {e}"),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
