//! The batch store: what makes `userfetch batch` resumable and exactly-once.
//!
//! A job is one output file for one API. Each distinct input id is claimed before it is fetched
//! and gets one row once it is settled (found, not found, failed); a found id's body lives in
//! `records`, written in the same transaction. Claiming happens on the cache thread, the one
//! thread that owns the file, in input order, so the table (plus the small set of ids in
//! flight) is the duplicate filter: no set of all ids has to fit in memory, and no race lets an
//! id through twice. Output files are rebuilt from these rows, which is why a process killed at
//! any instant loses nothing and repeats nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{Cache, CacheError, Command, clone_error, now_ms};
use crate::client::ErrorKind;
use crate::record::Record;

pub(super) const BATCH_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batch_jobs (
    job       INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    runs      INTEGER NOT NULL,
    fresh_ms  INTEGER,
    out_file INTEGER,
    UNIQUE (namespace, key)
);
CREATE TABLE IF NOT EXISTS batch_outcomes (
    job      INTEGER NOT NULL,
    id       TEXT NOT NULL,
    line     INTEGER NOT NULL,
    run      INTEGER NOT NULL,
    state    INTEGER NOT NULL,
    kind     TEXT,
    message  TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batch_discarded (
    job INTEGER PRIMARY KEY
);
";

/// Columns `batch_jobs` gained over time, with their definitions for files made before.
/// Adding a column is cheap, and older versions of userfetch ignore it. A job from before
/// `out_file` has it unknown (NULL): its `--out` is taken to be its own, as before.
const ADDED_COLUMNS: [(&str, &str); 2] = [("fresh_ms", "INTEGER"), ("out_file", "INTEGER")];

pub(super) fn add_missing_columns(conn: &Connection) -> Result<(), rusqlite::Error> {
    for (column, definition) in ADDED_COLUMNS {
        let has = || {
            conn.prepare(&format!("SELECT {column} FROM batch_jobs LIMIT 0"))
                .is_ok()
        };
        if has() {
            continue;
        }
        match conn.execute_batch(&format!(
            "ALTER TABLE batch_jobs ADD COLUMN {column} {definition}"
        )) {
            // Another process opening the file may have added it first.
            Err(_) if has() => {}
            other => other?,
        }
    }
    Ok(())
}

const STATE_FOUND: i64 = 1;
const STATE_NOT_FOUND: i64 = 2;
const STATE_FAILED: i64 = 3;

/// One run of one job. `run` grows by one each time the job is opened, which tells an id
/// decided by this run (a duplicate in the input) from one decided by an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchJob {
    pub job: i64,
    pub run: i64,
    /// Whether earlier runs left found ids (after `--fresh`, never): then the output holds
    /// records this run may never see, and must be rebuilt from the store.
    pub earlier_found: bool,
    /// When `--fresh` started this job over (ms since the epoch): a run that continues it
    /// takes no record fetched before then from the cache, or the start-over would be lost.
    pub fresh_ms: Option<i64>,
    /// Whether the cache held any record of this API when the run opened the job. When it
    /// held none, no id can be found fresh in it, and claiming skips that lookup: a record
    /// stored since is either this run's own (its id is then settled or in flight, so a
    /// duplicate) or another process's, which at worst is fetched once more. On a first
    /// run that lookup was one of the two per id.
    pub records_before: bool,
    /// Which file at `--out` a run of this job (or of the one `--fresh` replaced) last put in
    /// place, as the fingerprint `batch::out_fingerprint` makes of it: [`NEVER_WRITTEN`]
    /// until one has, `None` for a job from before this was kept. Another file there is
    /// somebody else's (another `--api`'s output, one made or edited by hand): replaced only
    /// by a run that finishes. See [`BatchJob::owns_out`].
    pub out_file: Option<i64>,
}

/// `batch_jobs.out_file` of a job that has not put its `--out` in place yet.
pub const NEVER_WRITTEN: i64 = 0;

impl BatchJob {
    /// Whether the file at `--out`, with fingerprint `file` (`None`: no file), is this job's
    /// own.
    pub fn owns_out(&self, file: Option<u64>) -> bool {
        owns_out(self.out_file, file)
    }
}

/// See [`BatchJob::owns_out`]; for [`FoundJob`] too.
pub fn owns_out(recorded: Option<i64>, file: Option<u64>) -> bool {
    match (recorded, file) {
        // A job from before the fingerprint was kept: its file is taken to be its own.
        (None, _) | (_, None) => true,
        (Some(recorded), Some(file)) => recorded == file as i64,
    }
}

/// A job as [`BatchReader::find_job`] finds it (see [`BatchJob`] for the fields).
#[derive(Debug, Clone, Copy)]
pub struct FoundJob {
    pub job: i64,
    pub fresh_ms: Option<i64>,
    pub out_file: Option<i64>,
}

/// What to do with an id read from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nobody has an answer yet: fetch it, then settle it.
    Fetch,
    /// A fresh record was in the cache; the id is already settled as found.
    Cached,
    /// An earlier run found it or learned it does not exist.
    DoneEarlier,
    /// This run has already seen it.
    Duplicate,
}

/// An id's final outcome, as stored.
#[derive(Debug, Clone)]
pub enum Settled {
    Found(Record),
    NotFound {
        message: String,
        attempts: u32,
    },
    Failed {
        kind: ErrorKind,
        message: String,
        attempts: u32,
    },
}

/// An id claimed for fetching, its input line (the output order), and how it ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub line: u64,
    pub settled: Settled,
}

type Answer<T> = oneshot::Sender<Result<T, rusqlite::Error>>;

pub(super) enum BatchCommand {
    Open {
        namespace: String,
        key: String,
        fresh: bool,
        reply: Answer<BatchJob>,
    },
    Claim {
        job: BatchJob,
        namespace: String,
        max_age: Duration,
        ids: Vec<(u64, String)>,
        reply: Answer<Vec<Claim>>,
    },
    Settle {
        job: BatchJob,
        namespace: String,
        outcomes: Vec<Outcome>,
        ack: Answer<Vec<Outcome>>,
    },
    /// A run put the job's `--out` in place, as the file with this fingerprint.
    WroteOut {
        job: i64,
        file: i64,
        ack: Answer<()>,
    },
}

impl BatchCommand {
    /// Answers a command that never ran with why.
    pub(super) fn refuse(self, e: &rusqlite::Error) {
        // A caller that has gone away needs no answer.
        match self {
            BatchCommand::Open { reply, .. } => drop(reply.send(Err(clone_error(e)))),
            BatchCommand::Claim { reply, .. } => drop(reply.send(Err(clone_error(e)))),
            BatchCommand::Settle { ack, .. } => drop(ack.send(Err(clone_error(e)))),
            BatchCommand::WroteOut { ack, .. } => drop(ack.send(Err(clone_error(e)))),
        }
    }
}

pub(super) enum BatchReply {
    Open(Answer<BatchJob>, Result<BatchJob, rusqlite::Error>),
    Claim(Answer<Vec<Claim>>, Result<Vec<Claim>, rusqlite::Error>),
    Settle(Answer<Vec<Outcome>>, Result<Vec<Outcome>, rusqlite::Error>),
    WroteOut(Answer<()>, Result<(), rusqlite::Error>),
}

impl BatchReply {
    pub(super) fn error(&self) -> Option<&rusqlite::Error> {
        match self {
            BatchReply::Open(_, r) => r.as_ref().err(),
            BatchReply::Claim(_, r) => r.as_ref().err(),
            BatchReply::Settle(_, r) => r.as_ref().err(),
            BatchReply::WroteOut(_, r) => r.as_ref().err(),
        }
    }

    /// Nothing in a transaction holds if its commit failed, so then every waiter hears that.
    pub(super) fn send(self, commit: &Result<(), rusqlite::Error>) {
        fn after<T>(
            commit: &Result<(), rusqlite::Error>,
            r: Result<T, rusqlite::Error>,
        ) -> Result<T, rusqlite::Error> {
            match commit {
                Err(e) => Err(clone_error(e)),
                Ok(()) => r,
            }
        }
        match self {
            BatchReply::Open(tx, r) => {
                let _ = tx.send(after(commit, r));
            }
            BatchReply::Claim(tx, r) => {
                let _ = tx.send(after(commit, r));
            }
            BatchReply::Settle(tx, r) => {
                let _ = tx.send(after(commit, r));
            }
            BatchReply::WroteOut(tx, r) => {
                let _ = tx.send(after(commit, r));
            }
        }
    }
}

pub(super) fn run_batch_command(
    tx: &rusqlite::Transaction<'_>,
    command: BatchCommand,
    now: i64,
    claimed: &mut Claimed,
) -> BatchReply {
    match command {
        BatchCommand::Open {
            namespace,
            key,
            fresh,
            reply,
        } => BatchReply::Open(reply, open_job(tx, &namespace, &key, fresh, now)),
        BatchCommand::Claim {
            job,
            namespace,
            max_age,
            ids,
            reply,
        } => {
            let fresh = job
                .records_before
                .then(|| Fresh::at(now, max_age, job.fresh_ms))
                .flatten();
            BatchReply::Claim(reply, claim(tx, job, &namespace, fresh, &ids, claimed))
        }
        BatchCommand::Settle {
            job,
            namespace,
            outcomes,
            ack,
        } => {
            let result = Writes::prepare(tx).and_then(|mut writes| {
                outcomes.iter().try_for_each(|o| {
                    claimed.of(job).ids.remove(o.id.as_str());
                    writes.settle(job, &namespace, o, now)
                })
            });
            BatchReply::Settle(ack, result.map(|()| outcomes))
        }
        BatchCommand::WroteOut { job, file, ack } => BatchReply::WroteOut(
            ack,
            tx.execute(
                "UPDATE batch_jobs SET out_file = ?2 WHERE job = ?1",
                params![job, file],
            )
            .map(drop),
        ),
    }
}

fn open_job(
    tx: &rusqlite::Transaction<'_>,
    namespace: &str,
    key: &str,
    fresh: bool,
    now: i64,
) -> Result<BatchJob, rusqlite::Error> {
    let existing: Option<i64> = tx
        .query_row(
            "SELECT job FROM batch_jobs WHERE namespace = ?1 AND key = ?2",
            params![namespace, key],
            |row| row.get(0),
        )
        .optional()?;
    let (job, run, fresh_ms, out_file) = match existing {
        Some(job) if !fresh => {
            let (run, fresh_ms, out_file) = tx.query_row(
                "UPDATE batch_jobs SET runs = runs + 1 WHERE job = ?1
                 RETURNING runs, fresh_ms, out_file",
                params![job],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
            (job, run, fresh_ms, out_file)
        }
        discarded => {
            // The same command starting over: the file there is still its own.
            let out_file: Option<i64> = match discarded {
                Some(old) => tx.query_row(
                    "SELECT out_file FROM batch_jobs WHERE job = ?1",
                    params![old],
                    |row| row.get(0),
                )?,
                None => Some(NEVER_WRITTEN),
            };
            // Starting over is a new job under the same key. The old job's outcomes are
            // deleted later, a few at a time while the cache is idle (`sweep`): deleting
            // them here held up the run's start, for millions of ids in one huge transaction.
            if let Some(old) = discarded {
                tx.execute("DELETE FROM batch_jobs WHERE job = ?1", params![old])?;
                tx.execute(
                    "INSERT OR IGNORE INTO batch_discarded (job) VALUES (?1)",
                    params![old],
                )?;
            }
            // Above every id still in use, outcomes of discarded jobs included: SQLite would
            // reuse a deleted job's id, and with it that job's leftover rows.
            let job = tx.query_row(
                "SELECT 1 + max(
                     (SELECT ifnull(max(job), 0) FROM batch_jobs),
                     (SELECT ifnull(max(job), 0) FROM batch_discarded),
                     (SELECT ifnull(max(job), 0) FROM batch_outcomes))",
                [],
                |row| row.get(0),
            )?;
            let fresh_ms = fresh.then_some(now);
            tx.execute(
                "INSERT INTO batch_jobs (job, namespace, key, runs, fresh_ms, out_file)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5)",
                params![job, namespace, key, fresh_ms, out_file],
            )?;
            (job, 1, fresh_ms, out_file)
        }
    };
    let earlier_found = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM batch_outcomes WHERE job = ?1 AND state = ?2)",
        params![job, STATE_FOUND],
        |row| row.get(0),
    )?;
    let records_before = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM records WHERE namespace = ?1)",
        params![namespace],
        |row| row.get(0),
    )?;
    Ok(BatchJob {
        job,
        run,
        earlier_found,
        fresh_ms,
        records_before,
        out_file,
    })
}

/// Outcomes of discarded jobs deleted per transaction: small enough that a command arriving
/// meanwhile waits a fraction of a millisecond.
const SWEEP_ROWS: i64 = 256;

/// How long the cache thread waits for a command before sweeping the next rows.
pub(super) const SWEEP_PAUSE: Duration = Duration::from_millis(2);

/// Deletes some outcomes of a discarded job; false once there is nothing left to delete.
pub(super) fn sweep(conn: &mut Connection) -> Result<bool, rusqlite::Error> {
    // Looked for without the write lock first: nearly always there is nothing to sweep, and
    // every process opening the cache asks.
    let any: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM batch_discarded)", [], |row| {
        row.get(0)
    })?;
    if !any {
        return Ok(false);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let Some(job) = tx
        .query_row("SELECT job FROM batch_discarded LIMIT 1", [], |row| {
            row.get::<_, i64>(0)
        })
        .optional()?
    else {
        return Ok(false);
    };
    let deleted = tx.execute(
        "DELETE FROM batch_outcomes WHERE job = ?1 AND id IN
             (SELECT id FROM batch_outcomes WHERE job = ?1 LIMIT ?2)",
        params![job, SWEEP_ROWS],
    )?;
    if deleted == 0 {
        tx.execute("DELETE FROM batch_discarded WHERE job = ?1", params![job])?;
    }
    tx.commit()?;
    Ok(true)
}

/// Ids claimed by a run of a job and not yet settled. They live here, on the cache thread,
/// rather than as rows: claims and settlements pass through this one thread in order, so a
/// set is as race-free as a table, and an id costs one write (when it settles) instead of two.
/// Bounded by what is in flight. A killed run loses the set, which is right: nothing of those
/// ids was stored, so the rerun fetches them.
#[derive(Default)]
pub(super) struct Claimed {
    job: i64,
    run: i64,
    /// foldhash rather than SipHash: ids come from the user's own input file, and a set
    /// bounded by what is in flight has no flooding to fear.
    ids: foldhash::HashSet<Box<str>>,
    /// On a job's first run, every id it claimed: the job can have no outcome row but theirs,
    /// so an id the filter has never seen is not looked up (one of the two lookups per id,
    /// the other being the fresh record). A false positive only costs that lookup. Fixed
    /// at 2 MiB, so memory stays flat: for 200,000 ids nearly none is a false positive,
    /// for 2 million a few in a hundred, and only past ~10 million do most ids need the
    /// lookup again.
    seen: Option<fastbloom::BloomFilter>,
}

/// 2^24 bits (2 MiB) and 4 hashes: see [`Claimed::seen`].
const SEEN_FILTER_BITS: usize = 1 << 24;
const SEEN_FILTER_HASHES: u32 = 4;

impl Claimed {
    fn of(&mut self, job: BatchJob) -> &mut Claimed {
        if (self.job, self.run) != (job.job, job.run) {
            *self = Claimed {
                job: job.job,
                run: job.run,
                ids: Default::default(),
                // A first run is one that created the job (`open_job`), so no earlier run
                // left rows.
                seen: (job.run == 1).then(|| {
                    fastbloom::BloomFilter::with_num_bits(SEEN_FILTER_BITS)
                        .hashes(SEEN_FILTER_HASHES)
                }),
            };
        }
        self
    }

    fn will_have_outcome(&mut self, id: &str) {
        if let Some(seen) = &mut self.seen {
            seen.insert(id);
        }
    }

    /// Whether the job may hold an outcome of `id`.
    fn may_have_outcome(&self, id: &str) -> bool {
        self.seen.as_ref().is_none_or(|seen| seen.contains(id))
    }
}

fn claim(
    tx: &rusqlite::Transaction<'_>,
    job: BatchJob,
    namespace: &str,
    fresh_at: Option<Fresh>,
    ids: &[(u64, String)],
    claimed: &mut Claimed,
) -> Result<Vec<Claim>, rusqlite::Error> {
    let mut existing =
        tx.prepare_cached("SELECT run, state FROM batch_outcomes WHERE job = ?1 AND id = ?2")?;
    let mut fresh = tx.prepare_cached(FRESH_RECORD)?;
    // The line too: the output is in input order, and the input may have changed since.
    let mut touch = tx.prepare_cached(
        "UPDATE batch_outcomes SET run = ?3, line = ?4 WHERE job = ?1 AND id = ?2",
    )?;
    let mut put_outcome = tx.prepare_cached(PUT_OUTCOME)?;
    let claimed = claimed.of(job);
    let mut claims = Vec::with_capacity(ids.len());
    for (line, id) in ids {
        if claimed.ids.contains(id.as_str()) {
            claims.push(Claim::Duplicate);
            continue;
        }
        let seen: Option<(i64, i64)> = if claimed.may_have_outcome(id) {
            existing
                .query_row(params![job.job, id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?
        } else {
            None
        };
        let claim = match seen {
            Some((run, _)) if run == job.run => Claim::Duplicate,
            Some((_, STATE_FOUND | STATE_NOT_FOUND)) => {
                // Marked as seen by this run, so a second copy further down counts as a duplicate.
                touch.execute(params![job.job, id, job.run, *line as i64])?;
                Claim::DoneEarlier
            }
            // New, or failed in an earlier run (worth another try).
            Some(_) | None => {
                let cached = match fresh_at {
                    Some(at) => fresh.exists(params![namespace, id, at.after, at.now])?,
                    None => false,
                };
                claimed.will_have_outcome(id);
                if cached {
                    let found = Stored::found(job, *line);
                    store_outcome(&mut put_outcome, id, &found)?;
                    Claim::Cached
                } else {
                    claimed.ids.insert(id.as_str().into());
                    Claim::Fetch
                }
            }
        };
        claims.push(claim);
    }
    Ok(claims)
}

/// When a record must have been fetched to count as fresh (see [`FRESH_RECORD`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fresh {
    /// The fetch time a record must be younger than.
    after: i64,
    now: i64,
}

impl Fresh {
    /// Fresh at `now`: within `max_age`, and not before `fresh_ms` (when `--fresh` started
    /// the job over). `None` when none can be (`--max-age 0`, a `--fresh` run), so none is
    /// looked up.
    fn at(now: i64, max_age: Duration, fresh_ms: Option<i64>) -> Option<Fresh> {
        let by_age = (!max_age.is_zero())
            .then(|| now.saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX)))?;
        let after = fresh_ms.map_or(by_age, |start| by_age.max(start.saturating_sub(1)));
        Some(Fresh { after, now })
    }
}

/// Strictly younger than the limit, so `--max-age 0` always fetches; and not stamped after
/// `?4`, now: such a record was stored before the clock was set back, and its age is unknown.
const FRESH_RECORD: &str = "SELECT 1 FROM records WHERE namespace = ?1 AND id = ?2 AND fetched_ms > ?3 AND fetched_ms <= ?4";

pub(super) const PUT_RECORD: &str = "INSERT INTO records (namespace, id, body, fetched_ms) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (namespace, id) DO UPDATE SET body = excluded.body, fetched_ms = excluded.fetched_ms";

const PUT_OUTCOME: &str =
    "INSERT INTO batch_outcomes (job, id, line, run, state, kind, message, attempts)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (job, id) DO UPDATE SET line = excluded.line, run = excluded.run,
         state = excluded.state, kind = excluded.kind, message = excluded.message,
         attempts = excluded.attempts";

/// One `batch_outcomes` row, as written.
struct Stored<'a> {
    job: BatchJob,
    line: u64,
    state: i64,
    kind: Option<&'a str>,
    message: Option<&'a str>,
    attempts: u32,
}

impl Stored<'_> {
    fn found(job: BatchJob, line: u64) -> Self {
        Stored {
            job,
            line,
            state: STATE_FOUND,
            kind: None,
            message: None,
            attempts: 0,
        }
    }
}

fn store_outcome(
    put: &mut rusqlite::CachedStatement<'_>,
    id: &str,
    row: &Stored<'_>,
) -> Result<(), rusqlite::Error> {
    put.execute(params![
        row.job.job,
        id,
        row.line as i64,
        row.job.run,
        row.state,
        row.kind,
        row.message,
        row.attempts
    ])
    .map(drop)
}

/// The writes that settle ids, prepared once per batch of outcomes: taking a statement from
/// rusqlite's cache hashes its whole SQL text (and again when it goes back), which per id
/// cost more than binding it.
struct Writes<'tx> {
    record: rusqlite::CachedStatement<'tx>,
    outcome: rusqlite::CachedStatement<'tx>,
}

impl<'tx> Writes<'tx> {
    fn prepare(tx: &'tx rusqlite::Transaction<'_>) -> Result<Self, rusqlite::Error> {
        Ok(Writes {
            record: tx.prepare_cached(PUT_RECORD)?,
            outcome: tx.prepare_cached(PUT_OUTCOME)?,
        })
    }

    fn settle(
        &mut self,
        job: BatchJob,
        namespace: &str,
        outcome: &Outcome,
        now: i64,
    ) -> Result<(), rusqlite::Error> {
        let (id, line) = (outcome.id.as_str(), outcome.line);
        let row = match &outcome.settled {
            Settled::Found(record) => {
                self.record
                    .execute(params![namespace, id, record.as_json(), now])?;
                Stored::found(job, line)
            }
            Settled::NotFound { message, attempts } => Stored {
                job,
                line,
                state: STATE_NOT_FOUND,
                kind: Some(ErrorKind::NotFound.as_str()),
                message: Some(message),
                attempts: *attempts,
            },
            Settled::Failed {
                kind,
                message,
                attempts,
            } => Stored {
                job,
                line,
                state: STATE_FAILED,
                kind: Some(kind.as_str()),
                message: Some(message),
                attempts: *attempts,
            },
        };
        store_outcome(&mut self.outcome, id, &row)
    }
}

impl Cache {
    /// Opens (or creates) the job for `key` within `namespace` and starts a new run of it.
    /// `fresh` forgets every outcome of earlier runs.
    pub async fn batch_open(
        &self,
        namespace: &str,
        key: &str,
        fresh: bool,
    ) -> Result<BatchJob, CacheError> {
        self.batch_call(|reply| BatchCommand::Open {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            fresh,
            reply,
        })
        .await
    }

    /// Remembers that a run of `job` put its `--out` in place, as the file with fingerprint
    /// `file`.
    pub async fn batch_wrote_out(&self, job: BatchJob, file: u64) -> Result<(), CacheError> {
        // SQLite integers are signed; the bits are kept as they are.
        let file = file as i64;
        self.batch_call(|ack| BatchCommand::WroteOut {
            job: job.job,
            file,
            ack,
        })
        .await
    }

    /// Decides, for each `(line, id)` in input order, whether it still needs fetching. Ids to
    /// fetch are held by this run until settled; ids answered from the cache are settled (and
    /// committed) before the answer comes back.
    pub async fn batch_claim(
        &self,
        job: BatchJob,
        namespace: &str,
        max_age: Duration,
        ids: Vec<(u64, String)>,
    ) -> Result<Vec<Claim>, CacheError> {
        self.batch_call(|reply| BatchCommand::Claim {
            job,
            namespace: namespace.to_owned(),
            max_age,
            ids,
            reply,
        })
        .await
    }

    /// Stores the outcomes of ids claimed for fetching; once they are committed, hands them
    /// back (records and all, for whoever writes them out next). Many at a time: each message
    /// wakes the cache thread, which costs more than the insert.
    pub async fn batch_settle(
        &self,
        job: BatchJob,
        namespace: &str,
        outcomes: Vec<Outcome>,
    ) -> Result<Vec<Outcome>, CacheError> {
        self.batch_call(|ack| BatchCommand::Settle {
            job,
            namespace: namespace.to_owned(),
            outcomes,
            ack,
        })
        .await
    }

    async fn batch_call<T>(
        &self,
        make: impl FnOnce(Answer<T>) -> BatchCommand,
    ) -> Result<T, CacheError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Batch(make(reply)))?;
        rx.await
            .map_err(|_| CacheError::Gone)?
            .map_err(|source| self.sqlite(source))
    }
}

/// A failed or not-found id as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRow {
    pub id: String,
    pub not_found: bool,
    pub kind: String,
    pub message: String,
    pub attempts: u32,
}

/// A read-only view of batch outcomes, for rebuilding output files. Its own connection (WAL
/// lets it read while the cache thread writes); blocking, so use it off the async runtime.
pub struct BatchReader {
    conn: Connection,
    path: PathBuf,
}

impl BatchReader {
    pub fn open(path: &Path) -> Result<BatchReader, CacheError> {
        // The run that calls this has just used the file, so a failure here is the file
        // going away or the disk failing (exit 1), or damage in pages the run had not read
        // (exit 2: move the file aside, as with damage found when it was opened).
        let failed = |source| super::sqlite_error(path, source);
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(failed)?;
        conn.busy_timeout(super::BUSY_FOR).map_err(failed)?;
        Ok(BatchReader {
            conn,
            path: path.to_owned(),
        })
    }

    fn sqlite(&self, source: rusqlite::Error) -> CacheError {
        super::sqlite_error(&self.path, source)
    }

    /// Makes every read that follows see one snapshot, in one read transaction. Without it
    /// each read opens and closes a transaction of its own, with the file locks and WAL
    /// checks that takes: a dry run of 10 million ids spent 15 s in the kernel on them.
    pub fn snapshot(&self) -> Result<(), CacheError> {
        self.conn.execute_batch("BEGIN").map_err(|e| self.sqlite(e))
    }

    /// Reads the file's schema: the first read, where a file that is no database says so.
    /// Whether the file holds the batch tables: a database with no tables yet (one no run
    /// has used) holds no job either.
    pub fn holds_jobs(&self) -> Result<bool, CacheError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'batch_jobs')",
                [],
                |row| row.get(0),
            )
            .map_err(|e| self.sqlite(e))
    }

    /// The job for `key`, if a run of it ever started, and when `--fresh` last started it
    /// over (see [`BatchJob::fresh_ms`]).
    pub fn find_job(&self, namespace: &str, key: &str) -> Result<Option<FoundJob>, CacheError> {
        self.conn
            .query_row(
                "SELECT job, fresh_ms, out_file FROM batch_jobs WHERE namespace = ?1 AND key = ?2",
                params![namespace, key],
                |row| {
                    Ok(FoundJob {
                        job: row.get(0)?,
                        fresh_ms: row.get(1)?,
                        out_file: row.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// Found ids of the job that no run since `run` has seen: after a run that read its whole
    /// input, the records its output holds for ids not in that input.
    pub fn found_before(&self, job: i64, run: i64) -> Result<u64, CacheError> {
        self.settled_before(job, run, STATE_FOUND, STATE_FOUND)
    }

    /// Ids not found or failed by earlier runs of `job` and not seen by run `run`: what the
    /// failures file holds beyond this run's input.
    pub fn unfound_before(&self, job: i64, run: i64) -> Result<u64, CacheError> {
        self.settled_before(job, run, STATE_NOT_FOUND, STATE_FAILED)
    }

    fn settled_before(&self, job: i64, run: i64, state: i64, or: i64) -> Result<u64, CacheError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM batch_outcomes
                 WHERE job = ?1 AND state IN (?2, ?3) AND run < ?4",
                params![job, state, or, run],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n.unsigned_abs())
            .map_err(|e| self.sqlite(e))
    }

    /// Whether an earlier run settled `id` for good (found or not found).
    pub fn is_done(&self, job: i64, id: &str) -> Result<bool, CacheError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state FROM batch_outcomes WHERE job = ?1 AND id = ?2")
            .map_err(|e| self.sqlite(e))?;
        let state: Option<i64> = stmt
            .query_row(params![job, id], |row| row.get(0))
            .optional()
            .map_err(|e| self.sqlite(e))?;
        Ok(matches!(state, Some(STATE_FOUND | STATE_NOT_FOUND)))
    }

    /// Whether a record of `id` younger than `max_age` (and fetched since `fresh_ms`, when
    /// `--fresh` started the job over then) is stored: what a run would take from the cache
    /// instead of fetching (the same test as claiming does).
    pub fn is_cached(
        &self,
        namespace: &str,
        id: &str,
        max_age: Duration,
        fresh_ms: Option<i64>,
    ) -> Result<bool, CacheError> {
        let Some(at) = Fresh::at(now_ms(), max_age, fresh_ms) else {
            return Ok(false);
        };
        let mut stmt = self
            .conn
            .prepare_cached(FRESH_RECORD)
            .map_err(|e| self.sqlite(e))?;
        stmt.exists(params![namespace, id, at.after, at.now])
            .map_err(|e| self.sqlite(e))
    }

    /// Every found record of the job, in input order: ids only earlier runs saw first (in the
    /// order they were last seen), then the last run's in its input's order. Line numbers of
    /// different inputs cannot be compared, so the run comes first. `each` gets the id and
    /// the JSON text.
    pub fn each_found(
        &self,
        job: i64,
        namespace: &str,
        mut each: impl FnMut(&str, &str) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        // Ids first, sorted, then each body by key: the sort then handles a few bytes
        // per id rather than whole records (SQLite sorts in a bounded buffer and spills to a
        // temporary file, so memory stays flat for any job size), and no index on the line has
        // to be kept up to date while the run writes.
        let mut ids = self
            .conn
            .prepare(
                "SELECT id FROM batch_outcomes WHERE job = ?1 AND state = ?2 ORDER BY run, line",
            )
            .map_err(|e| self.sqlite(e))?;
        let mut body = self
            .conn
            .prepare("SELECT body FROM records WHERE namespace = ?1 AND id = ?2")
            .map_err(|e| self.sqlite(e))?;
        let mut rows = ids
            .query(params![job, STATE_FOUND])
            .map_err(|e| self.sqlite(e))?;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let id = row
                .get_ref(0)
                .and_then(|v| Ok(v.as_str()?))
                .map_err(|e| self.sqlite(e))?;
            let mut found = body
                .query(params![namespace, id])
                .map_err(|e| self.sqlite(e))?;
            // Settled as found means the body was stored in the same transaction.
            let Some(record) = found.next().map_err(|e| self.sqlite(e))? else {
                anyhow::bail!("the cache file has lost the record for id {id}; run with --fresh");
            };
            let text = record
                .get_ref(0)
                .and_then(|v| Ok(v.as_str()?))
                .map_err(|e| self.sqlite(e))?;
            each(id, text)?;
            count += 1;
        }
        Ok(count)
    }

    /// Every not-found and failed id of the job, in input order.
    pub fn each_failure(
        &self,
        job: i64,
        each: impl FnMut(FailureRow) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        self.failure_rows(job, STATE_NOT_FOUND, None, -1, each)
    }

    /// The first `n` failed ids of the job (not-found ones left out), in input order.
    /// The first `n` ids that failed in `run` of `job`, in input order: a job's earlier runs
    /// may have failed ids this run's input no longer holds.
    pub fn first_failed(&self, job: BatchJob, n: u32) -> anyhow::Result<Vec<FailureRow>> {
        let mut rows = Vec::new();
        self.failure_rows(job.job, STATE_FAILED, Some(job.run), n.into(), |row| {
            rows.push(row);
            Ok(())
        })?;
        Ok(rows)
    }

    /// Failed rows, and those in state `also`, of one run or all, up to `limit` (-1: all).
    fn failure_rows(
        &self,
        job: i64,
        also: i64,
        run: Option<i64>,
        limit: i64,
        mut each: impl FnMut(FailureRow) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, state, kind, message, attempts FROM batch_outcomes
                 WHERE job = ?1 AND state IN (?2, ?3) AND (?5 IS NULL OR run = ?5)
                 ORDER BY run, line LIMIT ?4",
            )
            .map_err(|e| self.sqlite(e))?;
        let mut rows = stmt
            .query(params![job, also, STATE_FAILED, limit, run])
            .map_err(|e| self.sqlite(e))?;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let read = || -> Result<FailureRow, rusqlite::Error> {
                Ok(FailureRow {
                    id: row.get(0)?,
                    not_found: row.get::<_, i64>(1)? == STATE_NOT_FOUND,
                    kind: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    message: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    attempts: row.get(4)?,
                })
            };
            each(read().map_err(|e| self.sqlite(e))?)?;
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> Record {
        Record::from_body(format!(r#"{{"id":{n}}}"#).as_bytes()).unwrap()
    }

    fn lines(ids: &[&str]) -> Vec<(u64, String)> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| (i as u64 + 1, (*id).to_owned()))
            .collect()
    }

    fn found(id: &str, line: u64) -> Outcome {
        Outcome {
            id: id.to_owned(),
            line,
            settled: Settled::Found(record(line as u32)),
        }
    }

    #[tokio::test]
    async fn batch_claims_filter_duplicates_and_resume_where_a_killed_run_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let hour = Duration::from_secs(3600);
        let cache = Cache::open(&path).unwrap();
        let run1 = cache.batch_open("api", "/out.jsonl", false).await.unwrap();
        let claims = cache
            .batch_claim(run1, "api", hour, lines(&["a", "b", "a"]))
            .await
            .unwrap();
        assert_eq!(claims, [Claim::Fetch, Claim::Fetch, Claim::Duplicate]);
        cache
            .batch_settle(run1, "api", vec![found("a", 1)])
            .await
            .unwrap();
        // "b" was claimed but never settled: the process dies here.
        drop(cache);

        let cache = Cache::open(&path).unwrap();
        let run2 = cache.batch_open("api", "/out.jsonl", false).await.unwrap();
        assert_eq!((run2.job, run2.run), (run1.job, run1.run + 1));
        assert!(!run1.earlier_found);
        assert!(run2.earlier_found, "run 1 found a");
        let claims = cache
            .batch_claim(run2, "api", hour, lines(&["a", "b", "c", "a"]))
            .await
            .unwrap();
        assert_eq!(
            claims,
            [
                Claim::DoneEarlier,
                Claim::Fetch,
                Claim::Fetch,
                Claim::Duplicate
            ]
        );
        let failed = Outcome {
            id: "b".into(),
            line: 2,
            settled: Settled::Failed {
                kind: ErrorKind::Timeout,
                message: "slow".into(),
                attempts: 4,
            },
        };
        cache
            .batch_settle(run2, "api", vec![failed, found("c", 3)])
            .await
            .unwrap();

        // Failed ids are tried again by the next run; a fresh cached record needs no request.
        cache.put_durable("api", "z", record(26)).await.unwrap();
        let run3 = cache.batch_open("api", "/out.jsonl", false).await.unwrap();
        let claims = cache
            .batch_claim(run3, "api", hour, lines(&["b", "z"]))
            .await
            .unwrap();
        assert_eq!(claims, [Claim::Fetch, Claim::Cached]);

        // Another job (another output file) shares the records but not the progress.
        let other = cache
            .batch_open("api", "/other.jsonl", false)
            .await
            .unwrap();
        assert_ne!(other.job, run1.job);
        let claims = cache
            .batch_claim(other, "api", Duration::ZERO, lines(&["a"]))
            .await
            .unwrap();
        assert_eq!(claims, [Claim::Fetch]);
        cache.flush().await.unwrap();

        let reader = BatchReader::open(&path).unwrap();
        let mut order = Vec::new();
        let n = reader
            .each_found(run1.job, "api", |id, _| {
                order.push(id.to_owned());
                Ok(())
            })
            .unwrap();
        // By the run that last saw each id, then by line: "z" came from the third run's input.
        assert_eq!(
            (n, order),
            (3, vec!["a".to_owned(), "c".into(), "z".into()])
        );
        assert!(reader.is_done(run1.job, "a").unwrap());
        assert!(!reader.is_done(run1.job, "b").unwrap());
    }

    #[tokio::test]
    async fn on_a_first_run_an_id_settled_or_cached_earlier_in_the_run_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c.sqlite3")).unwrap();
        let hour = Duration::from_secs(3600);
        cache.put_durable("api", "r", record(18)).await.unwrap();
        let run = cache.batch_open("api", "/out.jsonl", false).await.unwrap();
        assert_eq!(run.run, 1);
        assert!(run.records_before);
        let claims = cache
            .batch_claim(run, "api", hour, lines(&["a", "r"]))
            .await
            .unwrap();
        assert_eq!(claims, [Claim::Fetch, Claim::Cached]);
        cache
            .batch_settle(run, "api", vec![found("a", 1)])
            .await
            .unwrap();
        // Neither is in flight any more: only the job's rows (found through the filter of
        // ids this run claimed) tell that they were seen.
        let claims = cache
            .batch_claim(run, "api", hour, lines(&["a", "r", "b"]))
            .await
            .unwrap();
        assert_eq!(claims, [Claim::Duplicate, Claim::Duplicate, Claim::Fetch]);

        // No record of this API before its job opened: none is looked up, and the job's
        // own records still make duplicates.
        let other = cache
            .batch_open("other-api", "/o.jsonl", false)
            .await
            .unwrap();
        assert!(!other.records_before);
        let claims = cache
            .batch_claim(other, "other-api", hour, lines(&["a"]))
            .await
            .unwrap();
        assert_eq!(claims, [Claim::Fetch]);
        cache
            .batch_settle(other, "other-api", vec![found("a", 1)])
            .await
            .unwrap();
        let claims = cache
            .batch_claim(other, "other-api", hour, lines(&["a"]))
            .await
            .unwrap();
        assert_eq!(claims, [Claim::Duplicate]);
    }

    #[tokio::test]
    async fn a_cached_record_stamped_after_now_is_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let day = Duration::from_secs(86_400);
        let cache = Cache::open(&path).unwrap();
        cache.put_durable("api", "a", record(1)).await.unwrap();
        cache.put_durable("api", "b", record(2)).await.unwrap();
        // Stored an hour "ahead" (the clock has been set back since): its age is unknown.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE records SET fetched_ms = fetched_ms + 3600000 WHERE id = 'b'",
                [],
            )
            .unwrap();
        let reader = BatchReader::open(&path).unwrap();
        assert!(reader.is_cached("api", "a", day, None).unwrap());
        assert!(!reader.is_cached("api", "b", day, None).unwrap());
        let run = cache.batch_open("api", "/out.jsonl", false).await.unwrap();
        let claims = cache
            .batch_claim(run, "api", day, lines(&["a", "b"]))
            .await
            .unwrap();
        assert_eq!(claims, [Claim::Cached, Claim::Fetch]);
    }

    #[tokio::test]
    async fn a_fresh_start_is_a_new_job_whose_old_rows_are_swept_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let cache = Cache::open(&path).unwrap();
        let run1 = cache.batch_open("api", "k", false).await.unwrap();
        let many: Vec<Outcome> = (1..=3000).map(|n| found(&n.to_string(), n)).collect();
        cache.batch_settle(run1, "api", many).await.unwrap();
        let other = cache.batch_open("api", "other", false).await.unwrap();
        let again = cache.batch_open("api", "k", true).await.unwrap();
        assert_ne!(again.job, run1.job);
        assert_ne!(again.job, other.job);
        assert_eq!(again.run, 1);
        // A job opened while the old rows are still there never takes the old job's id.
        let third = cache.batch_open("api", "third", false).await.unwrap();
        assert!(![run1.job, other.job, again.job].contains(&third.job));
        // Live jobs' rows, which the sweep must leave alone.
        for job in [other, again] {
            let kept: Vec<Outcome> = (1..=300).map(|n| found(&n.to_string(), n)).collect();
            cache.batch_settle(job, "api", kept).await.unwrap();
        }
        let db = Connection::open(&path).unwrap();
        let rows = |job: i64| -> i64 {
            db.query_row(
                "SELECT count(*) FROM batch_outcomes WHERE job = ?1",
                [job],
                |row| row.get(0),
            )
            .unwrap()
        };
        let discarded = || -> i64 {
            db.query_row("SELECT count(*) FROM batch_discarded", [], |row| row.get(0))
                .unwrap()
        };
        // The job's mark goes after its last rows, in a transaction of its own: both are
        // waited for.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while (rows(run1.job) > 0 || discarded() > 0) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            rows(run1.job),
            0,
            "the discarded job's outcomes are deleted"
        );
        assert_eq!(
            (rows(other.job), rows(again.job)),
            (300, 300),
            "live jobs keep theirs"
        );
        assert_eq!(discarded(), 0);
    }

    #[tokio::test]
    async fn fresh_forgets_the_progress_of_earlier_runs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c.sqlite3")).unwrap();
        let run1 = cache.batch_open("api", "k", false).await.unwrap();
        cache
            .batch_claim(run1, "api", Duration::ZERO, lines(&["a"]))
            .await
            .unwrap();
        cache
            .batch_settle(run1, "api", vec![found("a", 1)])
            .await
            .unwrap();
        let again = cache.batch_open("api", "k", true).await.unwrap();
        assert!(!again.earlier_found, "--fresh forgot what run 1 found");
        let claims = cache
            .batch_claim(again, "api", Duration::ZERO, lines(&["a"]))
            .await
            .unwrap();
        assert_eq!(claims, [Claim::Fetch]);
    }

    #[tokio::test]
    async fn a_file_from_before_fresh_was_remembered_gains_the_columns_and_keeps_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE batch_jobs (
                     job INTEGER PRIMARY KEY, namespace TEXT NOT NULL, key TEXT NOT NULL,
                     runs INTEGER NOT NULL, UNIQUE (namespace, key));
                 INSERT INTO batch_jobs VALUES (7, 'api', 'k', 2);",
            )
            .unwrap();
        }
        let cache = Cache::open(&path).unwrap();
        let job = cache.batch_open("api", "k", false).await.unwrap();
        assert_eq!((job.job, job.run, job.fresh_ms), (7, 3, None));
        // A job from before the file was kept takes the file at --out for its own, also
        // when started over; a new job owns none until it writes one, then only that one.
        assert!(job.owns_out(Some(123)));
        let fresh = cache.batch_open("api", "k", true).await.unwrap();
        assert!(fresh.fresh_ms.is_some());
        assert!(fresh.owns_out(Some(123)));
        let new = cache.batch_open("api", "other", false).await.unwrap();
        assert!(!new.owns_out(Some(123)));
        assert!(new.owns_out(None), "no file: nothing to keep");
        cache.batch_wrote_out(new, 123).await.unwrap();
        let again = cache.batch_open("api", "other", false).await.unwrap();
        assert!(again.owns_out(Some(123)));
        assert!(!again.owns_out(Some(124)), "replaced since by another");
        // A second process opening the same file finds the column already there.
        drop(Cache::open(&path).unwrap());
    }
}
