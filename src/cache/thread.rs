//! The cache thread: whatever requests have queued run in one transaction, lookups first,
//! and a file another process holds locked is waited for in steps a stop can cut short.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::batch::{
    BatchCommand, BatchReply, Claimed, PUT_RECORD, SWEEP_PAUSE, run_batch_command, sweep,
};
use super::file::{BUSY_FOR, is_busy};
use super::{Cached, Command, GiveUp, now_ms};
use crate::record::Record;
use crate::term;

/// Most requests run in one transaction; bounds how long a reader waits behind writes.
pub(super) const MAX_BATCH: usize = 4096;

/// How long each try waits while a batch waits out another process's lock.
pub(super) const WAIT_STEP: Duration = Duration::from_millis(250);

/// How long a batch waits for another process's lock before it says so: commits of another
/// run sharing the file hold it for less, even on a loaded machine.
const SAY_WAIT_AFTER: Duration = Duration::from_secs(2);

/// The cache thread: take whatever is queued, run it in one transaction, answer, repeat.
pub(super) fn serve(
    mut conn: Connection,
    rx: mpsc::Receiver<Command>,
    path: &Path,
    give_up: &GiveUp,
) {
    let given_up = || {
        give_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|token| token.is_cancelled())
    };
    let mut batch = Vec::with_capacity(64);
    let mut claimed = Claimed::default();
    // Whether discarded jobs may have rows left to delete (`sweep`); looked for whenever
    // nothing else is queued.
    let mut sweeping = true;
    // Since when another process's lock has held up batch commands, and whether that was
    // said (once it lasts [`SAY_WAIT_AFTER`]), so the wait is said once, and its end too.
    let mut waiting_since: Option<Instant> = None;
    let mut wait_said = false;
    // The busy timeout set on the connection, so it is only changed when it has to be.
    let mut busy_for = BUSY_FOR;
    // Whether a record from `get` or the screen was refused for another process's lock.
    // Until one gets through again, records are tried without waiting: each wait held the
    // command's exit 5 s more, and a record not cached is only fetched again next time.
    let mut puts_locked_out = false;
    // Whether records from `get` or the screen failed to be stored for another reason (the
    // disk full): said once. Not "again" when one is stored after all: on a nearly full disk
    // small commits fit between failed large ones, and the two lines would alternate.
    let mut puts_failing = false;
    // Whether `get` or the screen stored records here: its close then folds the log into
    // the file.
    let mut stored = false;
    loop {
        let next = if sweeping {
            // A pause between sweeps, so another process sharing the file (whose busy handler
            // retries only every few milliseconds) gets the write lock too, and this process's
            // own commands find the thread free.
            match rx.recv_timeout(SWEEP_PAUSE) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    sweeping = match sweep(&mut conn) {
                        Ok(more) => more,
                        // Another process is writing: try again after the next pause.
                        Err(e)
                            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
                        {
                            true
                        }
                        // Left for the next process that opens the file.
                        Err(e) => {
                            tracing::debug!(
                                "cache {}: deleting old outcomes: {e}",
                                term::path(path)
                            );
                            false
                        }
                    };
                    continue;
                }
                other => other.ok(),
            }
        } else {
            rx.recv().ok()
        };
        let Some(first) = next else {
            break;
        };
        let mut close = None;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Close { reply } => close = Some(reply),
                command => {
                    // A fresh start discards a job: there is sweeping to do again.
                    sweeping |= matches!(
                        command,
                        Command::Batch(BatchCommand::Open { fresh: true, .. })
                    );
                    batch.push(command);
                    if batch.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
            }
        }
        // When another process holds the write lock past the busy timeout (a `sqlite3` shell
        // left in a transaction), a batch run, perhaps hours in, waits for it rather than
        // stop; `get` and the screen give up after the timeout, and so does a closing cache
        // or a batch run asked to stop.
        while !batch.is_empty() {
            let batch_commands = batch.iter().any(|c| matches!(c, Command::Batch(_)));
            stored |= batch.iter().any(|c| matches!(c, Command::Put { .. }));
            // Records from `get` or the screen, which give up on a lock rather than wait.
            let records = !batch_commands && batch.iter().any(|c| matches!(c, Command::Put { .. }));
            let patient = close.is_none() && batch_commands && !given_up();
            let no_wait = puts_locked_out && !batch_commands;
            if records {
                answer_lookups_first(&mut conn, &mut batch, path);
            }
            // A patient batch waits in short steps from the first: between them it sees a
            // close or a stop (a Ctrl-C), which inside one long busy timeout waited up to 5 s.
            let wanted = if no_wait {
                Duration::ZERO
            } else if batch_commands && (patient || given_up() || waiting_since.is_some()) {
                // Also once the run is asked to stop (or closes) while a lock holds, or
                // before one is taken: each command then takes one step, not 5 s, before
                // it is refused.
                WAIT_STEP
            } else {
                BUSY_FOR
            };
            if wanted != busy_for {
                match conn.busy_timeout(wanted) {
                    Ok(()) => busy_for = wanted,
                    Err(e) => tracing::debug!("cache {}: {e}", term::path(path)),
                }
            }
            let ran = run_batch(&mut conn, &mut batch, &mut claimed, patient);
            match (&ran, records) {
                (Err(e), true) if is_busy(e) && !puts_locked_out => {
                    puts_locked_out = true;
                    crate::console::note_above_progress(format_args!(
                        // The path last: on the screen's notice row a long one is what
                        // gets cut, not what is wrong.
                        "userfetch: the cache file is locked by another process; records fetched meanwhile are not stored in it ({})",
                        term::path(path)
                    ));
                }
                (Err(e), true) if !is_busy(e) && !puts_failing => {
                    puts_failing = true;
                    crate::console::note_above_progress(format_args!(
                        "userfetch: cannot store records in the cache file ({e}); records fetched \
                         meanwhile are not stored in it ({})",
                        term::path(path)
                    ));
                }
                (Ok(()), true) if puts_locked_out => {
                    puts_locked_out = false;
                    crate::console::note_above_progress(format_args!(
                        "userfetch: the cache file is free again; records are stored in it again ({})",
                        term::path(path)
                    ));
                }
                _ => {}
            }
            match ran {
                // Left in `batch`: only a failed start of the transaction does that.
                Err(e) if patient && is_busy(&e) && !batch.is_empty() => {
                    // The first step has passed by the time its error is seen.
                    let since = *waiting_since.get_or_insert_with(|| {
                        Instant::now()
                            .checked_sub(WAIT_STEP)
                            .unwrap_or_else(Instant::now)
                    });
                    if !wait_said && since.elapsed() >= SAY_WAIT_AFTER {
                        wait_said = true;
                        crate::console::note_above_progress(format_args!(
                            "userfetch: the cache file {} is locked by another process; waiting until it is free",
                            term::path(path)
                        ));
                    }
                    // What is sent meanwhile waits too; closing, or the run being asked to
                    // stop, ends the wait: what waits is refused with the lock named.
                    while let Ok(command) = rx.try_recv() {
                        match command {
                            Command::Close { reply } => close = Some(reply),
                            command => batch.push(command),
                        }
                    }
                    if close.is_some() || given_up() {
                        batch.drain(..).for_each(|command| refuse(command, &e));
                    }
                }
                // Every caller heard it.
                Err(e) => {
                    tracing::debug!("cache {}: {e}", term::path(path));
                    if !is_busy(&e) {
                        // The wait, if one was under way, is over; a later one is said anew.
                        waiting_since = None;
                        wait_said = false;
                    }
                    break;
                }
                Ok(()) => {
                    // Batch commands took the write lock: it is free again.
                    if let Some(since) = waiting_since.take_if(|_| batch_commands)
                        && std::mem::take(&mut wait_said)
                    {
                        crate::console::note_above_progress(format_args!(
                            "userfetch: the cache file {} is free again after {}; going on",
                            term::path(path),
                            humantime::format_duration(Duration::from_secs(
                                since.elapsed().as_secs()
                            ))
                        ));
                    }
                    break;
                }
            }
        }
        // Commands the failed transaction never reached are dropped, which answers each of
        // them with an error instead of leaving its caller waiting for the next command.
        batch.clear();
        if let Some(reply) = close {
            // Folding the log into the file after `get` or the screen stored records:
            // otherwise the file alone lacked them, even its tables (below the 8 MB at
            // which SQLite folds the log by itself), for a user who copied or moved it
            // without its -wal file; ~1 ms for a command that stored something. Not after a
            // batch run: there the checkpoint and its fsyncs took 5-10 ms, 1 % of a
            // 10,000-id run of a second (scenario B, whose target is that second), and the
            // README says to copy the -wal file too. Closing, rather than exiting under the
            // thread, means the process never ends while SQLite is writing.
            if !stored
                && let Err(e) = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            {
                tracing::debug!("cache {}: closing with a checkpoint: {e}", term::path(path));
            }
            if let Err((_, e)) = conn.close() {
                tracing::warn!("closing the cache {}: {e}", term::path(path));
            }
            let _ = reply.send(());
            return;
        }
    }
}

/// Answers the lookups among `batch` in a read transaction of their own, leaving the rest.
/// In the write transaction of the records queued with them they would wait out another
/// process's lock with the records (or fail at once, once records no longer wait), where WAL
/// lets them read under it.
pub(super) fn answer_lookups_first(conn: &mut Connection, batch: &mut Vec<Command>, path: &Path) {
    if !batch.iter().any(|c| matches!(c, Command::Get { .. })) {
        return;
    }
    let (mut reads, rest) = std::mem::take(batch)
        .into_iter()
        .partition(|c| matches!(c, Command::Get { .. }));
    *batch = rest;
    // Reads only: no claims to keep.
    if let Err(e) = run_batch(conn, &mut reads, &mut Claimed::default(), false) {
        tracing::debug!("cache {}: {e}", term::path(path));
    }
}

/// Runs the queued commands in one transaction. When the write lock stays taken past the
/// busy timeout and `patient`, the commands are left in `batch` for another try.
pub(super) fn run_batch(
    conn: &mut Connection,
    batch: &mut Vec<Command>,
    claimed: &mut Claimed,
    patient: bool,
) -> Result<(), rusqlite::Error> {
    let mut replies = Vec::with_capacity(batch.len());
    // Commands not reached, when the transaction fails, are answered with its error.
    let mut queue = std::mem::replace(batch, Vec::with_capacity(64)).into_iter();
    // Immediate: take the write lock up front. A deferred transaction that reads and then
    // writes fails with SQLITE_BUSY_SNAPSHOT, past any busy timeout, when another process
    // (a second userfetch) committed in between. Lookups alone only read, which WAL lets
    // them do while another process holds the write lock.
    let reads_only = queue
        .as_slice()
        .iter()
        .all(|c| matches!(c, Command::Get { .. } | Command::Flush { .. }));
    let behavior = if reads_only {
        rusqlite::TransactionBehavior::Deferred
    } else {
        rusqlite::TransactionBehavior::Immediate
    };
    let tx = match conn.transaction_with_behavior(behavior) {
        Ok(tx) => tx,
        Err(e) if patient && is_busy(&e) => {
            batch.extend(queue);
            return Err(e);
        }
        // Another process held the write lock past the busy timeout: every waiting caller
        // hears that, rather than that the cache thread is gone.
        Err(e) => {
            queue.for_each(|command| refuse(command, &e));
            return Err(e);
        }
    };
    let outcome = (|| {
        {
            let mut get = tx.prepare_cached(
                "SELECT body, fetched_ms FROM records WHERE namespace = ?1 AND id = ?2",
            )?;
            let mut put = tx.prepare_cached(PUT_RECORD)?;
            let now = now_ms();
            for command in queue.by_ref() {
                match command {
                    Command::Get {
                        namespace,
                        id,
                        max_age,
                        reply,
                    } => {
                        let row = get
                            .query_row(params![namespace, id], |row| {
                                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                            })
                            .optional();
                        let found = row.map(|row| {
                            row.and_then(|(body, fetched)| {
                                // Strictly younger, as a batch reads it, so `--max-age 0`
                                // always fetches. A record stamped after now (the clock
                                // was set back since) has no age to trust: not fresh.
                                let age = u64::try_from(now.checked_sub(fetched)?).ok()?;
                                let age = Duration::from_millis(age);
                                (age < max_age).then(|| Cached {
                                    record: Record::from_trusted(body),
                                    age,
                                })
                            })
                        });
                        replies.push(Reply::Get(reply, found));
                    }
                    Command::Put {
                        namespace,
                        id,
                        record,
                        ack,
                    } => {
                        let result = put
                            .execute(params![namespace, id, record.as_json(), now])
                            .map(drop);
                        replies.push(Reply::Put(ack, result));
                    }
                    // `serve` keeps Close for itself; answered like a flush if one got here.
                    Command::Flush { reply } | Command::Close { reply } => {
                        replies.push(Reply::Flush(reply))
                    }
                    // A command that fails part way (one outcome of many refused) takes the
                    // whole transaction with it, and every command in it hears why: its
                    // caller counts none of its writes stored, and neither do the others'.
                    // Only a batch run sends these, and it stops at such an error anyway.
                    // (A savepoint per command, to keep the others' writes, copied every
                    // page each command touched: ~4 % of a 200,000-id run.)
                    Command::Batch(command) => {
                        let reply = run_batch_command(&tx, command, now, claimed);
                        let failed = reply.error().map(clone_error);
                        replies.push(Reply::Batch(reply));
                        if let Some(e) = failed {
                            return Err(e);
                        }
                    }
                }
            }
        }
        tx.commit()
    })();
    if let Err(e) = &outcome {
        queue.for_each(|command| refuse(command, e));
    }
    // Answers go out only after the commit, so "stored" always means "on disk".
    for reply in replies {
        match reply {
            Reply::Get(tx, found) => {
                let _ = tx.send(found);
            }
            Reply::Put(Some(ack), result) => {
                let _ = ack.send(match (&outcome, result) {
                    (Err(e), _) => Err(clone_error(e)),
                    (Ok(()), r) => r,
                });
            }
            // A lock held by another process is said once, by `serve`.
            Reply::Put(None, Err(e)) if is_busy(&e) => {}
            Reply::Put(None, Err(e)) => put_failed(&e),
            Reply::Put(None, Ok(())) => {}
            Reply::Flush(tx) => {
                let _ = tx.send(());
            }
            Reply::Batch(reply) => reply.send(&outcome),
        }
    }
    outcome
}

/// A record from `get` or the screen that could not be stored: each kind of failure said
/// once, then only at `-vv` (a damaged cache failed 83 of 3,000 records, each with the same
/// line).
fn put_failed(e: &rusqlite::Error) {
    if crate::console::first_time(format!("store: {e}")) {
        tracing::warn!(
            "cache: storing a record failed: {e} (the same failure for other records is not said)"
        );
    } else {
        tracing::debug!("cache: storing a record failed: {e}");
    }
}

/// Answers a command that never ran with why.
pub(super) fn refuse(command: Command, e: &rusqlite::Error) {
    match command {
        Command::Get { reply, .. } => {
            let _ = reply.send(Err(clone_error(e)));
        }
        Command::Put { ack: Some(ack), .. } => {
            let _ = ack.send(Err(clone_error(e)));
        }
        Command::Put { ack: None, .. } if is_busy(e) => {}
        // The transaction never started: the cache thread's loop says that once.
        Command::Put { ack: None, .. } => tracing::debug!("cache: storing a record failed: {e}"),
        Command::Flush { reply } | Command::Close { reply } => {
            let _ = reply.send(());
        }
        Command::Batch(command) => command.refuse(e),
    }
}

pub(super) enum Reply {
    Get(
        oneshot::Sender<Result<Option<Cached>, rusqlite::Error>>,
        Result<Option<Cached>, rusqlite::Error>,
    ),
    Put(
        Option<oneshot::Sender<Result<(), rusqlite::Error>>>,
        Result<(), rusqlite::Error>,
    ),
    Flush(oneshot::Sender<()>),
    Batch(BatchReply),
}

/// rusqlite errors aren't `Clone`; a failed commit is reported to every waiting writer.
pub(super) fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}
