//! One lookup of a batch run, and the set of them in flight: what a lookup shares with the
//! others, how it ends, and how its answer is committed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, BatchJob, Cache, Settled};
use crate::client::{Client, ErrorKind};
use crate::id::UserId;

use super::super::throttle::{self, Throttle};

/// What every lookup task shares.
pub(in crate::batch) struct Ctx {
    pub(in crate::batch) client: Client,
    pub(in crate::batch) cache: Cache,
    pub(in crate::batch) job: BatchJob,
    pub(in crate::batch) namespace: Arc<str>,
    pub(in crate::batch) throttle: Arc<Throttle>,
    /// Whether the API is the embedded demo API (no `--api` given): the summary says so.
    pub(in crate::batch) embedded: bool,
}

/// How one lookup ended, as its task reports it.
pub(super) enum Answer {
    /// An outcome to store.
    Settle {
        line: u64,
        id: UserId,
        verdict: Verdict,
        settled: Settled,
        latency: Duration,
        retries: u32,
    },
    /// Cancelled by a stop: left for the next run. Its retries count as its requests do,
    /// those sent.
    Cancelled { retries: u32 },
}

/// What the summary needs of one answer once it is committed.
pub(super) struct Tally {
    pub(super) verdict: Verdict,
    pub(super) latency: Duration,
    pub(super) retries: u32,
}

/// Which count an answer goes to (its `Settled` goes to the store, with its record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Found,
    NotFound,
    Failed,
}

/// `stopping` is the first Ctrl-C, `cancel` the second (or the grace period's end).
pub(super) async fn lookup(ctx: Arc<Ctx>, line: u64, id: UserId, stop: Stopping) -> Answer {
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
    let cancelled = || Answer::Cancelled {
        retries: gate.retries_sent(),
    };
    let (verdict, settled) = match fetched {
        None => return cancelled(),
        Some(Ok(f)) => (Verdict::Found, Settled::Found(f.record)),
        Some(Err(e)) if e.kind == ErrorKind::Cancelled => return cancelled(),
        Some(Err(e)) if e.kind == ErrorKind::NotFound => (
            Verdict::NotFound,
            Settled::NotFound {
                message: e.detail().to_owned(),
                attempts: e.attempts,
            },
        ),
        Some(Err(e)) => (
            Verdict::Failed,
            Settled::Failed {
                kind: e.kind,
                message: e.detail().to_owned(),
                attempts: e.attempts,
            },
        ),
    };
    Answer::Settle {
        line,
        id,
        verdict,
        settled,
        latency,
        retries,
    }
}

/// Stores answers, many per message (each message wakes the cache thread, which costs more
/// than the insert). Runs outside the lookups' concurrency slots, so the next lookups start
/// while the cache thread commits, and is never cancelled: an answer that came back is kept.
pub(super) fn commit(ctx: &Arc<Ctx>, answers: Vec<(cache::Outcome, Tally)>) -> CommitFuture {
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

pub(super) type CommitFuture = std::pin::Pin<
    Box<dyn Future<Output = (Vec<Tally>, anyhow::Result<Vec<cache::Outcome>>)> + Send>,
>;

/// The lookups in flight. On the default single-threaded runtime they are polled in place:
/// a spawned task per id would only add scheduling work (and copy each future once more) with
/// no second thread to run on. With `--threads N` they are spawned so the threads share them.
pub(super) enum Lookups {
    Local(FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Answer> + Send>>>),
    Spawned(JoinSet<Answer>),
}

impl Lookups {
    pub(super) fn new() -> Lookups {
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => Lookups::Local(FuturesUnordered::new()),
            _ => Lookups::Spawned(JoinSet::new()),
        }
    }

    pub(super) fn push(&mut self, lookup: impl Future<Output = Answer> + Send + 'static) {
        match self {
            Lookups::Local(set) => set.push(Box::pin(lookup)),
            Lookups::Spawned(set) => {
                set.spawn(lookup);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Lookups::Local(set) => set.len(),
            Lookups::Spawned(set) => set.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) async fn next(&mut self) -> Option<Result<Answer, tokio::task::JoinError>> {
        match self {
            Lookups::Local(set) => set.next().await.map(Ok),
            Lookups::Spawned(set) => set.join_next().await,
        }
    }
}

/// What lookups are told when the run stops.
#[derive(Clone)]
pub(super) struct Stopping {
    /// Stop between attempts (the first Ctrl-C, an input error).
    pub(super) draining: CancellationToken,
    /// Stop at once (a second Ctrl-C, the grace period over, a fatal error).
    pub(super) cancel: CancellationToken,
}
