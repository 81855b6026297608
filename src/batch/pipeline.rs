//! One run of a batch job: ids claimed, looked up, settled and counted, then the outputs
//! and the summary written.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, BatchJob, BatchReader, Cache, Claim, Settled};
use crate::client::{Client, ErrorKind};
use crate::console::{count, note};
use crate::exit::{ExitCode, Interrupted, usage};
use crate::id::UserId;
use crate::signals::{Received, Signals};

use super::config::Config;
use super::input::{self, Chunk};
use super::output::{self, AtomicFile};
use super::progress::Progress;
use super::streamed::Output;
use super::summary::{Counts, FileReport, Histogram, Status, Summary};
use super::throttle::{self, Throttle};
use super::{Format, MAX_WARNINGS};

/// Lookups in a row whose every attempt failed at the connection, after which a run stops:
/// a wrong --api, or an API that went down, would otherwise take every id of a million-line
/// input through its retries, one connection refused after another. Any other outcome in
/// between (a record, a 404, a 500) starts the count again, so a flaky API is not stopped.
const UNREACHABLE_STOP: u32 = 20;

/// Failed ids shown on stderr when there is no `--failures` file to list them.
const FAILED_SHOWN: u32 = 5;

/// Claims requested ahead of need: some being answered while others are consumed.
const CLAIMS_AHEAD: usize = 4;

/// How long no answer must arrive before waiting answers are committed: longer than the gaps
/// inside a wave of answers, short next to any latency worth batching for.
const ANSWERS_PAUSED: Duration = Duration::from_micros(500);

/// Answers committed at once even while they keep coming. A wave's worth (the concurrency)
/// when that is small; bounded so that a burst of 10,000 answers is stored while it lands,
/// not in one commit after the last of them.
const COMMIT_AT_MOST: usize = 1024;

/// What every lookup task shares.
pub(super) struct Ctx {
    pub(super) client: Client,
    pub(super) cache: Cache,
    pub(super) job: BatchJob,
    pub(super) namespace: Arc<str>,
    pub(super) throttle: Arc<Throttle>,
}

/// How one lookup ended, as its task reports it.
enum Answer {
    /// An outcome to store.
    Settle {
        line: u64,
        id: UserId,
        kind: Outcome,
        settled: Settled,
        latency: Duration,
        retries: u32,
    },
    /// Cancelled by a second Ctrl-C or the end of the grace period: left for the next run.
    /// Its retries are not counted: a retry is noted before its backoff, so one cancelled
    /// in that wait was never sent. Its requests are (the throttle counts those sent).
    Cancelled,
}

/// What the summary needs of one answer once it is committed.
struct Tally {
    kind: Outcome,
    latency: Duration,
    retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Found,
    NotFound,
    Failed,
}

/// `stopping` is the first Ctrl-C, `cancel` the second (or the grace period's end).
async fn lookup(ctx: Arc<Ctx>, line: u64, id: UserId, stop: Stopping) -> Answer {
    let mut retries = 0u32;
    let mut on_retry = |_: &crate::client::RetryNotice| retries += 1;
    let gate = throttle::Timed::new(&ctx.throttle, &stop.draining);
    let fetched = tokio::select! {
        // The lookup first, so that an attempt that has just ended is seen as ended below.
        biased;
        fetched = ctx.client.fetch_gated(&id, &mut on_retry, &gate) => Some(fetched),
        () = stop.cancel.cancelled() => None,
        // Only requests on the wire get the grace period: a lookup still waiting for its turn
        // (the window, --rate) or sleeping before a retry is left for the next run at once.
        () = gate.between_attempts() => None,
    };
    let latency = gate.since_admitted();
    let (kind, settled) = match fetched {
        None => return Answer::Cancelled,
        Some(Ok(f)) => (Outcome::Found, Settled::Found(f.record)),
        Some(Err(e)) if e.kind == ErrorKind::Cancelled => return Answer::Cancelled,
        Some(Err(e)) if e.kind == ErrorKind::NotFound => (
            Outcome::NotFound,
            Settled::NotFound {
                message: e.detail().to_owned(),
                attempts: e.attempts,
            },
        ),
        Some(Err(e)) => (
            Outcome::Failed,
            Settled::Failed {
                kind: e.kind.as_str(),
                message: e.detail().to_owned(),
                attempts: e.attempts,
            },
        ),
    };
    Answer::Settle {
        line,
        id,
        kind,
        settled,
        latency,
        retries,
    }
}

/// Stores answers, many per message (each message wakes the cache thread, which costs more
/// than the insert). Runs outside the lookups' concurrency slots, so the next lookups start
/// while the cache thread commits, and is never cancelled: an answer that came back is kept.
fn commit(ctx: &Arc<Ctx>, answers: Vec<(cache::Outcome, Tally)>) -> CommitFuture {
    let ctx = ctx.clone();
    Box::pin(async move {
        let (outcomes, tallies): (Vec<_>, Vec<_>) = answers.into_iter().unzip();
        let result = ctx
            .cache
            .batch_settle(ctx.job, &ctx.namespace, outcomes)
            .await
            .context("cannot record outcomes in the cache file");
        (tallies, result)
    })
}

/// What `write_outputs` put in place (`--out`, `--failures`), and why not the rest.
type Written = (
    Option<FileReport>,
    Option<FileReport>,
    Option<anyhow::Error>,
);

type CommitFuture = std::pin::Pin<
    Box<dyn Future<Output = (Vec<Tally>, anyhow::Result<Vec<cache::Outcome>>)> + Send>,
>;

/// The lookups in flight. On the default single-threaded runtime they are polled in place:
/// a spawned task per id would only add scheduling work (and copy each future once more) with
/// no second thread to run on. With `--threads N` they are spawned so the threads share them.
enum Lookups {
    Local(FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Answer> + Send>>>),
    Spawned(JoinSet<Answer>),
}

impl Lookups {
    fn new() -> Lookups {
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => Lookups::Local(FuturesUnordered::new()),
            _ => Lookups::Spawned(JoinSet::new()),
        }
    }

    fn push(&mut self, lookup: impl Future<Output = Answer> + Send + 'static) {
        match self {
            Lookups::Local(set) => set.push(Box::pin(lookup)),
            Lookups::Spawned(set) => {
                set.spawn(lookup);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Lookups::Local(set) => set.len(),
            Lookups::Spawned(set) => set.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn next(&mut self) -> Option<Result<Answer, tokio::task::JoinError>> {
        match self {
            Lookups::Local(set) => set.next().await.map(Ok),
            Lookups::Spawned(set) => set.join_next().await,
        }
    }
}

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

/// What lookups are told when the run stops.
#[derive(Clone)]
struct Stopping {
    /// Stop between attempts (the first Ctrl-C, an input error).
    draining: CancellationToken,
    /// Stop at once (a second Ctrl-C, the grace period over, a fatal error).
    cancel: CancellationToken,
}

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
    /// Lookups in a row whose attempts all failed at the connection.
    unreachable: u32,
    /// Why the run stopped for that, once it did: an answer landing afterwards resets the
    /// count, not the reason the run ended.
    gave_up: Option<String>,
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
            progress: Progress::new(scan.as_ref().map(|s| s.ids)),
            id_lines: scan.map(|s| s.ids),
            counts: Counts::default(),
            handled: 0,
            latencies: Histogram::default(),
            retries: 0,
            warnings: 0,
            unreachable: 0,
            gave_up: None,
            foreign_out: false,
        }
    }

    /// See [`Pipeline::foreign_out`].
    pub(super) fn keeping_a_foreign_out(mut self, foreign: bool) -> Self {
        self.foreign_out = foreign;
        self
    }

    /// Counts a lookup's end towards "the API cannot be reached": true when this one makes
    /// [`UNREACHABLE_STOP`] lookups in a row that failed at the connection.
    fn gives_up_on_reaching(&mut self, settled: &Settled) -> bool {
        match settled {
            Settled::Failed { kind, .. } if *kind == ErrorKind::Connection.as_str() => {
                self.unreachable += 1;
                self.unreachable == UNREACHABLE_STOP
            }
            _ => {
                self.unreachable = 0;
                false
            }
        }
    }

    /// `started`: when the run began, before it opened its job (which may wait for
    /// another process's lock on the cache file).
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
                    self.progress.update(self.handled, tasks.len(), self.counts.failed);
                }
                Some(joined) = tasks.next(), if !tasks.is_empty() => match joined {
                    Ok(Answer::Settle { line, id, kind, settled, latency, retries }) => {
                        last_answer = tokio::time::Instant::now();
                        if self.gives_up_on_reaching(&settled) && stop == Stop::Running {
                            let why = match &settled {
                                Settled::Failed { message, .. } => format!("{UNREACHABLE_STOP} lookups in a row failed at the connection, each after all its attempts ({message})"),
                                _ => format!("{UNREACHABLE_STOP} lookups in a row failed at the connection"),
                            };
                            self.progress.warn(&format!(
                                "userfetch: stopping: {why}; the ids not done are left for a rerun once the API can be reached"
                            ));
                            self.gave_up = Some(why);
                            stop = Stop::Aborting;
                            cancel.cancel();
                        }
                        let outcome = cache::Outcome { id: id.as_str().to_owned(), line, settled };
                        uncommitted.push((outcome, Tally { kind, latency, retries }));
                    }
                    Ok(Answer::Cancelled) => self.counts.unfinished += 1,
                    // A lookup task that panicked (a bug; caught here with --threads N, where
                    // lookups are spawned tasks): stop as on any other error of our own,
                    // rather than fetch the rest of the input into a run that ends in error.
                    Err(e) => {
                        fatal.get_or_insert(anyhow::anyhow!("a lookup task failed: {e}"));
                        self.counts.unfinished += 1;
                        stop = Stop::Aborting;
                        cancel.cancel();
                    }
                },
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

    /// Writes the outputs and the summary of a run that has stopped fetching, and tells how
    /// it ended.
    async fn finish(
        self,
        ended: Ended,
        started: Instant,
        out: Output,
        failures: Option<AtomicFile>,
        summary_json: Option<AtomicFile>,
        mut signals: Signals,
    ) -> anyhow::Result<ExitCode> {
        let Ended {
            fatal,
            input_error,
            reader_died,
            mut received,
        } = ended;
        // An error after a stop was asked for (the last outcomes refused by a cache locked
        // by another process) is said, but the run was interrupted, as with an output that
        // cannot be written then: exit 130.
        let mut status = if input_error.is_some() || reader_died {
            Status::InputError
        } else if fatal.is_some() && received == 0 {
            Status::Error
        } else if self.gave_up.is_some() {
            Status::Unreachable
        } else if received > 0 {
            Status::Interrupted
        } else {
            Status::Complete
        };
        // Output files are only replaced when the input was readable: after an input error
        // the previous files stay as they were. An interrupted run writes what is done even
        // when its last outcomes could not be stored (a cache locked by another process):
        // what was committed before is there to read.
        let fetched = started.elapsed();
        let (out_report, failures_report, write_error) = match (&fatal, status) {
            // Its records would replace another job's with a part of this one's: kept in the
            // store instead, for the rerun.
            (_, Status::Interrupted | Status::Unreachable) if self.foreign_out => {
                let failures = match &self.config.failures {
                    Some(f) => format!(" (and {})", f.display()),
                    None => String::new(),
                };
                note!(
                    "userfetch: {}{failures} left as it was: this run did not finish, and the file \
                     is not this command's output; the same command again continues from what this run fetched",
                    self.config.out.display()
                );
                (None, None, None)
            }
            (None, Status::Complete | Status::Unreachable) | (_, Status::Interrupted) => {
                // Writing a big output takes a while; Ctrl-C still gets an answer meanwhile.
                tracing::debug!("writing the outputs");
                let writing = self.write_outputs(out, failures);
                tokio::pin!(writing);
                let mut while_writing = 0u32;
                let written = loop {
                    let signal = tokio::select! {
                        // A failed write (a full disk) still leaves the run's summary to tell;
                        // the error follows it.
                        written = &mut writing => break written,
                        signal = signals.recv() => signal,
                    };
                    received += 1;
                    while_writing += 1;
                    // The message promises that the next Ctrl-C quits, whatever came before.
                    if received >= 3 || while_writing >= 2 {
                        quit_now(self.config.fresh);
                    }
                    self.progress.warn(&format!(
                        "userfetch: writing the output from what is done; {} to quit at once",
                        signal.again()
                    ));
                };
                // Asked to stop, even if there was nothing left to stop: exit 130 as for
                // any Ctrl-C, and the summary says so.
                if while_writing > 0 {
                    status = Status::Interrupted;
                }
                written
            }
            _ => (None, None, None),
        };
        // What the next run compares the file there with, to tell whether it is still
        // this job's.
        if out_report.is_some()
            && let Ok(file) = std::fs::metadata(&self.config.out)
            && let Err(e) = self
                .ctx
                .cache
                .batch_wrote_out(self.ctx.job, super::out_fingerprint(&file))
                .await
        {
            // The next run then says the file is not its own, and keeps it if interrupted.
            tracing::debug!("cannot record that --out was written: {e}");
        }
        tracing::info!(
            "lookups took {:?}, writing the output {:?}",
            fetched,
            started.elapsed() - fetched
        );
        // An interrupted run stays "interrupted": a rerun is what it needs either way.
        let status = match (&write_error, status) {
            (Some(_), Status::Complete) => Status::OutputError,
            _ => status,
        };
        let stopped_by_error = fatal.is_some();
        let error = fatal
            .or(write_error)
            .or_else(|| input_error.map(|e| usage(e.to_string())));
        let reason = error
            .as_ref()
            .map(crate::exit::describe)
            .or_else(|| self.gave_up.clone());
        let summary = self.summary(
            status,
            reason,
            started.elapsed(),
            out_report,
            failures_report,
        );
        if !stopped_by_error && self.config.failures.is_none() && self.counts.failed > 0 {
            self.show_first_failed().await;
        }
        if let (Status::Complete, Some(out)) = (status, &summary.out)
            && self.ctx.job.earlier_found
        {
            self.say_what_earlier_runs_left(&out.path).await;
        }
        // An input that fails before its first id (empty stdin) gets its one error line only.
        if status != Status::InputError || self.handled + self.counts.unfinished > 0 {
            note!("{}", summary.render(rerun_hint(self.config.fresh)));
        }
        let summary_error = summary_json.and_then(|file| summary.write_json(file).err());
        let error = match (error, summary_error) {
            (Some(e), Some(unwritten)) => {
                // Said too, not lost behind the error that ended the run.
                note!("userfetch: {unwritten:#}");
                Some(e)
            }
            (e, unwritten) => e.or(unwritten),
        };
        if let Some(e) = error {
            // Reported either way; an interrupted run still exits 130, which is what a
            // script asks about.
            return Err(match status {
                Status::Interrupted => e.context(Interrupted),
                _ => e,
            });
        }
        Ok(match status {
            Status::Interrupted => ExitCode::Interrupted,
            _ if self.counts.failed > 0 => ExitCode::Failure,
            _ => ExitCode::Success,
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
        match tally.kind {
            Outcome::Found => self.counts.found += 1,
            Outcome::NotFound => self.counts.not_found += 1,
            Outcome::Failed => self.counts.failed += 1,
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
                self.progress.warn(&format!(
                    "userfetch: stopping: letting {} on the wire finish (up to {}); {} waiting for their turn or a retry, and the ids not started yet, are left to the next run; {} to cancel",
                    count(on_wire as u64, "request", "requests"),
                    humantime::format_duration(self.config.grace),
                    count(waiting as u64, "lookup", "lookups"),
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

    /// The output of an `--out` collects what every run into it found, so a run over a
    /// different input writes the earlier input's records too: said, as it surprises.
    async fn say_what_earlier_runs_left(&self, out: &str) {
        let job = self.ctx.job;
        let earlier = self
            .read_back(move |reader| Ok(reader.found_before(job.job, job.run)?))
            .await;
        if let Some(n) = earlier.filter(|&n| n > 0) {
            self.progress.warn(&format!(
                "userfetch: {out} also holds {} that earlier runs into it found for ids not in this input (--fresh starts the output over)",
                count(n, "record", "records")
            ));
        }
    }

    /// A read of the store for a message after the run, off the runtime. A message is not worth
    /// failing the run over: when the read fails, it is logged and `None`.
    async fn read_back<T: Send + 'static>(
        &self,
        read: impl FnOnce(&BatchReader) -> anyhow::Result<T> + Send + 'static,
    ) -> Option<T> {
        let path = self.ctx.cache.path().to_owned();
        let read = tokio::task::spawn_blocking(move || read(&BatchReader::open(&path)?)).await;
        match read {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                tracing::debug!("cannot read the cache file back: {e:#}");
                None
            }
            Err(e) => {
                tracing::debug!("cannot read the cache file back: {e}");
                None
            }
        }
    }

    /// Without `--failures`, which ids failed and why would be said nowhere: the first few are
    /// shown, and where the rest can be found.
    async fn show_first_failed(&self) {
        let job = self.ctx.job;
        let Some(rows) = self
            .read_back(move |reader| reader.first_failed(job, FAILED_SHOWN))
            .await
        else {
            return;
        };
        for row in &rows {
            // As `get` says it: the count only when the lookup was tried more than once.
            self.progress.warn(&format!(
                "userfetch: user {}: {}{}",
                row.id,
                row.message,
                crate::client::AfterAttempts(row.attempts)
            ));
        }
        let more = self.counts.failed.saturating_sub(rows.len() as u64);
        let rest = if more > 0 {
            format!("{more} more failed; ")
        } else {
            String::new()
        };
        self.progress.warn(&format!(
            "userfetch: {rest}--failures FILE lists every failed and not-found id with its error"
        ));
    }

    /// The reports of the files put in place, and why the rest could not be: `--out` may be
    /// in place when `--failures` fails, and the summary should still name it.
    async fn write_outputs(&self, out: Output, failures: Option<AtomicFile>) -> Written {
        if let Err(e) = self.ctx.cache.flush().await {
            return (None, None, Some(e.into()));
        }
        let path = self.ctx.cache.path().to_owned();
        let job = self.ctx.job.job;
        let namespace = self.ctx.namespace.clone();
        let format = self.config.format;
        let out_path = self.config.out.display().to_string();
        let written = tokio::task::spawn_blocking(move || -> Written {
            // Opened only by what reads the store: a streamed --out without --failures never does.
            let records = match out.finish(|file| {
                output::write_found(&BatchReader::open(&path)?, job, &namespace, format, file)
            }) {
                Ok(records) => records,
                Err(e) => return (None, None, Some(e)),
            };
            let out = Some(FileReport {
                path: out_path,
                records,
            });
            let Some(f) = failures else {
                return (out, None, None);
            };
            let shown = f.path().display().to_string();
            match BatchReader::open(&path)
                .map_err(anyhow::Error::from)
                .and_then(|reader| output::write_failures(&reader, job, f))
            {
                Ok(records) => (
                    out,
                    Some(FileReport {
                        path: shown,
                        records,
                    }),
                    None,
                ),
                Err(e) => (out, None, Some(e)),
            }
        })
        .await;
        written.unwrap_or_else(|e| (None, None, Some(e.into())))
    }

    fn summary(
        &self,
        status: Status,
        reason: Option<String>,
        elapsed: Duration,
        out: Option<FileReport>,
        failures: Option<FileReport>,
    ) -> Summary {
        let t = self.ctx.throttle.stats();
        let c = &self.counts;
        let settled = c.found + c.not_found + c.failed + c.cached + c.done_earlier;
        let secs = elapsed.as_secs_f64();
        Summary {
            status,
            reason,
            counts: c.clone(),
            // Every line read was claimed (claims in flight are awaited before the run
            // ends), as an id or as a duplicate.
            not_read: self
                .id_lines
                .map(|lines| lines.saturating_sub(c.ids + c.duplicates)),
            elapsed_s: (secs * 1000.0).round() / 1000.0,
            ids_per_s: if secs > 0.0 {
                (settled as f64 / secs).round()
            } else {
                0.0
            },
            requests: t.attempts + self.ctx.client.redirects_followed(),
            retries: self.retries,
            latency_ms: Summary::latency(&self.latencies),
            throttled_answers: t.refusals,
            throttle_events: t.cuts,
            out,
            failures,
        }
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
