//! The SQLite cache: records by (API, id) with the time they were fetched.
//!
//! One dedicated OS thread owns the connection, so SQLite never blocks the async runtime's
//! thread. Requests reach it over a channel; whatever has queued up while it worked is run in
//! one transaction, which turns a thousand small inserts into one commit.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::record::Record;

mod batch;

use batch::{
    BATCH_SCHEMA, BatchCommand, BatchReply, Claimed, PUT_RECORD, SWEEP_PAUSE, add_missing_columns,
    run_batch_command, sweep,
};
pub use batch::{
    BatchJob, BatchReader, Claim, FailureRow, FoundJob, NEVER_WRITTEN, Outcome, Settled, owns_out,
};

/// Most requests run in one transaction; bounds how long a reader waits behind writes.
const MAX_BATCH: usize = 4096;

/// The page size of a new cache file.
const PAGE_SIZE: i64 = 8192;

/// What the WAL file is cut back to when a checkpoint lets it start over.
const WAL_SIZE_LIMIT: i64 = 16 << 20;

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("cannot create the cache directory {}: {source} (--cache PATH puts the cache file elsewhere; get and the screen also run with --no-cache)", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the cache file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the cache file {} is not a usable SQLite database ({source}); move it aside, or use --cache PATH for another file",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{} is an SQLite database but not a userfetch cache (it holds {what}); it was left as it was: use --cache PATH for another file",
        path.display()
    )]
    Foreign { path: PathBuf, what: String },
    #[error(
        "cannot write the cache file {} ({source}); check that it and its directory are writable, or use --cache PATH for another file",
        path.display()
    )]
    ReadOnly {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cache {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the cache file {} is locked by another process (waited {}); try again once it is done, or use --cache PATH",
        path.display(),
        humantime::format_duration(*waited)
    )]
    Busy { path: PathBuf, waited: Duration },
    #[error("the cache stopped working (its thread ended)")]
    Gone,
}

/// A record found in the cache.
#[derive(Debug, Clone)]
pub struct Cached {
    pub record: Record,
    pub age: Duration,
}

enum Command {
    Get {
        namespace: String,
        id: String,
        max_age: Duration,
        reply: oneshot::Sender<Result<Option<Cached>, rusqlite::Error>>,
    },
    Put {
        namespace: String,
        id: String,
        record: Record,
        /// Told once the record is committed; `None` when the caller doesn't need to wait.
        ack: Option<oneshot::Sender<Result<(), rusqlite::Error>>>,
    },
    Flush {
        reply: oneshot::Sender<()>,
    },
    /// Commit what is queued before it, close the file, end the thread.
    Close {
        reply: oneshot::Sender<()>,
    },
    /// Batch progress: see the `batch store` section below.
    Batch(BatchCommand),
}

/// A handle to the cache; cheap to clone. The thread ends once every handle is dropped and
/// the queue is drained.
#[derive(Clone)]
pub struct Cache {
    tx: mpsc::Sender<Command>,
    path: PathBuf,
    /// Once cancelled, a batch stops waiting for another process's lock (see `serve`).
    give_up: GiveUp,
}

type GiveUp = std::sync::Arc<std::sync::Mutex<Option<tokio_util::sync::CancellationToken>>>;

impl Cache {
    /// The default location: `$XDG_CACHE_HOME/userfetch/cache.sqlite3`.
    pub fn default_path() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("userfetch").join("cache.sqlite3"))
    }

    /// Makes the directory of the [default](Cache::default_path) cache file (mode 0700) on
    /// first use. Not for a path the user gave: a typo there would quietly build a tree and
    /// start an empty cache, as if every earlier run's progress were gone.
    pub fn make_default_dir(path: &Path) -> Result<(), CacheError> {
        match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| CacheError::Dir {
                    path: dir.to_owned(),
                    source,
                }),
            None => Ok(()),
        }
    }

    /// The error [`Cache::open`] gives for a path whose directory is missing, for a dry run
    /// to give it too without opening anything.
    pub fn check_dir(path: &Path) -> Result<(), CacheError> {
        match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) if matches!(dir.try_exists(), Ok(false)) => Err(no_directory(path)),
            _ => Ok(()),
        }
    }

    /// Opens (or creates, mode 0600) the cache file and starts its thread; its directory must
    /// exist. Blocking: call it before the runtime starts or from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<Cache, CacheError> {
        // Created here rather than by SQLite so the mode is 0600 from the first instant;
        // SQLite gives its -wal and -shm files the database file's mode.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => no_directory(path),
                _ => CacheError::Open {
                    path: path.to_owned(),
                    source,
                },
            })?;
        // Reading a pipe would wait forever, and /dev/null reads as a new, empty file.
        if file.metadata().is_ok_and(|m| !m.is_file()) {
            return Err(CacheError::Open {
                path: path.to_owned(),
                source: std::io::Error::other("not a regular file"),
            });
        }
        // Someone else's file (`--cache ids.txt`) is refused before anything about it changes.
        if !looks_like_sqlite(&file) {
            return Err(CacheError::Corrupt {
                path: path.to_owned(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
                    Some("file is not a database".into()),
                ),
            });
        }
        // Another program's database (`--cache app.db`) is refused before anything about it
        // changes: its mode, its journal mode, tables added to it.
        if file.metadata().is_ok_and(|m| m.len() > 0) {
            check_is_a_cache(path)?;
        }
        // A file made by something else (or an older version) may be readable by others;
        // records can be personal data, so tighten it rather than trust it. Before SQLite
        // opens it: its -wal and -shm files are created with the database file's mode.
        if let Ok(meta) = file.metadata()
            && meta.permissions().mode() & 0o077 != 0
        {
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
        }
        drop(file);
        let conn = open_connection(path)?;
        let (tx, rx) = mpsc::channel();
        let thread_path = path.to_owned();
        let give_up = GiveUp::default();
        let thread_give_up = give_up.clone();
        std::thread::Builder::new()
            .name("userfetch-cache".into())
            .spawn(move || serve(conn, rx, &thread_path, &thread_give_up))
            .map_err(|source| CacheError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Cache {
            tx,
            path: path.to_owned(),
            give_up,
        })
    }

    /// Batch commands wait for another process's write lock only until `token` is cancelled
    /// (a run asked to stop): then they are refused, and what was not stored is left for
    /// the next run.
    pub fn wait_for_locks_until(&self, token: tokio_util::sync::CancellationToken) {
        *self
            .give_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A record for `id` fetched no longer than `max_age` ago.
    pub async fn get(
        &self,
        namespace: &str,
        id: &str,
        max_age: Duration,
    ) -> Result<Option<Cached>, CacheError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Get {
            namespace: namespace.to_owned(),
            id: id.to_owned(),
            max_age,
            reply,
        })?;
        rx.await
            .map_err(|_| CacheError::Gone)?
            .map_err(|source| self.sqlite(source))
    }

    /// Queues a record for storing and returns at once.
    pub fn put(&self, namespace: &str, id: &str, record: Record) -> Result<(), CacheError> {
        self.send(Command::Put {
            namespace: namespace.to_owned(),
            id: id.to_owned(),
            record,
            ack: None,
        })
    }

    /// Stores a record and waits until it is committed.
    pub async fn put_durable(
        &self,
        namespace: &str,
        id: &str,
        record: Record,
    ) -> Result<(), CacheError> {
        let (ack, rx) = oneshot::channel();
        self.send(Command::Put {
            namespace: namespace.to_owned(),
            id: id.to_owned(),
            record,
            ack: Some(ack),
        })?;
        rx.await
            .map_err(|_| CacheError::Gone)?
            .map_err(|source| self.sqlite(source))
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<(), CacheError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Flush { reply })?;
        rx.await.map_err(|_| CacheError::Gone)
    }

    /// Commits everything queued before this call and closes the file. Handles still around
    /// afterwards get [`CacheError::Gone`].
    pub async fn close(&self) -> Result<(), CacheError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Close { reply })?;
        rx.await.map_err(|_| CacheError::Gone)
    }

    fn send(&self, command: Command) -> Result<(), CacheError> {
        self.tx.send(command).map_err(|_| CacheError::Gone)
    }

    fn sqlite(&self, source: rusqlite::Error) -> CacheError {
        sqlite_error(&self.path, source)
    }
}

/// An empty file (new) or one that starts with SQLite's header. Anything else is left alone;
/// SQLite itself would say the same when first reading it, but only after the chmod above.
fn looks_like_sqlite(mut file: &std::fs::File) -> bool {
    use std::io::Read;
    let mut header = [0u8; 16];
    match file.read(&mut header) {
        Ok(0) => true,
        Ok(n) => b"SQLite format 3\0".starts_with(&header[..n]),
        Err(_) => true, // let SQLite report it
    }
}

/// Refuses an existing SQLite file that is not a userfetch cache, reading it without writing
/// (a read-only connection, so not even a journal mode changes). A file with a `records`
/// table in our shape is one (whatever else it holds, so that a later version may add
/// tables); so is a database with no tables yet, or only the batch tables.
pub fn check_is_a_cache(path: &Path) -> Result<(), CacheError> {
    let failed = |source: rusqlite::Error| {
        if is_busy(&source) {
            sqlite_error(path, source)
        } else {
            setup_error(path, source)
        }
    };
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match immutable_uri(path) {
        Some(uri) => Connection::open_with_flags(uri, flags | rusqlite::OpenFlags::SQLITE_OPEN_URI),
        None => Connection::open_with_flags(path, flags),
    }
    .map_err(failed)?;
    conn.busy_timeout(BUSY_FOR).map_err(failed)?;
    match foreign_schema(&conn).map_err(failed)? {
        None => Ok(()),
        Some(what) => Err(CacheError::Foreign {
            path: path.to_owned(),
            what,
        }),
    }
}

/// A database in WAL mode whose `-wal` file is gone (closed cleanly) is whole in its main
/// file; a plain read-only connection would still create `-wal` and `-shm` beside it, and
/// could not remove them. Opened as immutable it is only read. `None` for any other file.
fn immutable_uri(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if Path::new(&wal).exists() {
        return None;
    }
    // Bytes 18 and 19 of the header are 2 in WAL mode.
    let mut versions = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|f| f.read_exact_at(&mut versions, 18))
        .ok()?;
    if versions != [2, 2] {
        return None;
    }
    const IN_URI: &percent_encoding::AsciiSet =
        &percent_encoding::CONTROLS.add(b'%').add(b'?').add(b'#');
    let path = path.to_str()?;
    Some(format!(
        "file:{}?immutable=1",
        percent_encoding::utf8_percent_encode(path, IN_URI)
    ))
}

/// An error while setting a file up: one that cannot be written is no fault of its content.
fn setup_error(path: &Path, source: rusqlite::Error) -> CacheError {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) => {
            CacheError::ReadOnly {
                path: path.to_owned(),
                source,
            }
        }
        _ => CacheError::Corrupt {
            path: path.to_owned(),
            source,
        },
    }
}

/// What in the schema says it is not a userfetch cache, for the error message; `None` if it
/// is one.
pub(super) fn foreign_schema(conn: &Connection) -> Result<Option<String>, rusqlite::Error> {
    let mut columns = conn.prepare("SELECT name FROM pragma_table_info('records')")?;
    let columns: Vec<String> = columns
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if !columns.is_empty() {
        let ours = ["namespace", "id", "body", "fetched_ms"];
        return Ok((!ours.iter().all(|c| columns.iter().any(|have| have == c)))
            .then(|| "a table 'records' with other columns than a cache's".into()));
    }
    let mut tables = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view')
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let tables: Vec<String> = tables
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    // No tables yet (a new file), or the batch tables alone (a file whose set-up stopped part
    // way).
    if tables.iter().all(|t| {
        matches!(
            t.as_str(),
            "batch_jobs" | "batch_outcomes" | "batch_discarded"
        )
    }) {
        return Ok(None);
    }
    // Quoted as they are: the error's text is made safe for a terminal where it is shown.
    let mut shown: Vec<String> = tables.iter().take(3).map(|n| format!("'{n}'")).collect();
    if tables.len() > shown.len() {
        shown.push(format!("{} more", tables.len() - shown.len()));
    }
    let noun = if tables.len() == 1 { "table" } else { "tables" };
    Ok(Some(format!(
        "the {noun} {}, and no table 'records'",
        shown.join(", ")
    )))
}

/// How long a statement waits for another process's lock on the file, and opening for other
/// processes setting the same file up.
const BUSY_FOR: Duration = Duration::from_secs(5);

/// How long each try waits once a batch is waiting out another process's lock.
const WAIT_STEP: Duration = Duration::from_millis(250);

/// [`set_up_connection`], again while the file is busy. Processes starting at once on a new
/// file race to switch it to WAL and create the tables, and SQLite answers the loser
/// SQLITE_BUSY at once rather than wait (a writer whose snapshot went stale could otherwise
/// deadlock); both steps are idempotent, so trying again is safe.
fn no_directory(path: &Path) -> CacheError {
    CacheError::Open {
        path: path.to_owned(),
        source: std::io::Error::other("its directory does not exist"),
    }
}

fn open_connection(path: &Path) -> Result<Connection, CacheError> {
    let started = std::time::Instant::now();
    loop {
        match set_up_connection(path) {
            Err(CacheError::Corrupt { source, .. }) if is_busy(&source) => {
                if started.elapsed() >= BUSY_FOR {
                    return Err(CacheError::Busy {
                        path: path.to_owned(),
                        waited: BUSY_FOR,
                    });
                }
                std::thread::sleep(Duration::from_millis(fastrand::u64(2..=20)));
            }
            other => return other,
        }
    }
}

/// A locked file is named as such: "database is locked" alone reads like a fault in it; and
/// one that cannot be written (its directory read-only) as that, not as a broken file.
pub(super) fn sqlite_error(path: &Path, source: rusqlite::Error) -> CacheError {
    if is_busy(&source) {
        CacheError::Busy {
            path: path.to_owned(),
            waited: BUSY_FOR,
        }
    } else if source.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) {
        CacheError::ReadOnly {
            path: path.to_owned(),
            source,
        }
    } else {
        CacheError::Sqlite {
            path: path.to_owned(),
            source,
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn set_up_connection(path: &Path) -> Result<Connection, CacheError> {
    let corrupt = |source| setup_error(path, source);
    let conn = Connection::open(path).map_err(corrupt)?;
    conn.busy_timeout(BUSY_FOR).map_err(corrupt)?;
    // Takes effect only for a file not created yet (an existing one keeps its size), so it
    // must come before anything that writes. Records are ~0.5 KB: with 8 KiB pages SQLite
    // makes half the write and read calls of 4 KiB ones for the same records (each WAL frame
    // is two writes, each checkpointed page a read and a write), which made a 200,000-id
    // batch ~4 % faster.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(corrupt)?;
    // The first statement that reads the file is where a non-database shows itself.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(corrupt)?;
    // WAL + NORMAL survives a killed process (what resumable batches need); only a power
    // cut can lose the last commits, and a cache can refetch those.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(corrupt)?;
    // The log is reused, not shrunk, after each checkpoint: one large transaction (a batch
    // committing thousands of big records at once) would otherwise leave a WAL of that size
    // next to the file for good. Above the ~8 MB the automatic checkpoint (every 1,000 pages
    // of 8 KiB) lets it reach in normal use, so that it is not cut back after every one.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(corrupt)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS records (
             namespace  TEXT NOT NULL,
             id         TEXT NOT NULL,
             body       TEXT NOT NULL,
             fetched_ms INTEGER NOT NULL,
             PRIMARY KEY (namespace, id)
         ) WITHOUT ROWID;",
    )
    .map_err(corrupt)?;
    conn.execute_batch(BATCH_SCHEMA).map_err(corrupt)?;
    add_missing_columns(&conn).map_err(corrupt)?;
    Ok(conn)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The cache thread: take whatever is queued, run it in one transaction, answer, repeat.
fn serve(mut conn: Connection, rx: mpsc::Receiver<Command>, path: &Path, give_up: &GiveUp) {
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
    // Since when another process's lock has held up batch commands, so the wait is said
    // once, and its end too.
    let mut waiting_since: Option<Instant> = None;
    // Whether a record from `get` or the screen was refused for another process's lock.
    // Until one gets through again, records are tried without waiting: each wait held the
    // command's exit 5 s more, and a record not cached is only fetched again next time.
    let mut puts_locked_out = false;
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
                            tracing::debug!("cache {}: deleting old outcomes: {e}", path.display());
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
            // Records from `get` or the screen, which give up on a lock rather than wait.
            let records = !batch_commands && batch.iter().any(|c| matches!(c, Command::Put { .. }));
            let patient = close.is_none() && batch_commands && !given_up();
            let no_wait = puts_locked_out && !batch_commands;
            if records {
                answer_lookups_first(&mut conn, &mut batch, path);
            }
            if no_wait && let Err(e) = conn.busy_timeout(Duration::ZERO) {
                tracing::debug!("cache {}: {e}", path.display());
            }
            let ran = run_batch(&mut conn, &mut batch, &mut claimed, patient);
            if no_wait && let Err(e) = conn.busy_timeout(BUSY_FOR) {
                tracing::debug!("cache {}: {e}", path.display());
            }
            match (&ran, records) {
                (Err(e), true) if is_busy(e) && !puts_locked_out => {
                    puts_locked_out = true;
                    crate::console::note_above_progress(format_args!(
                        // The path last: on the screen's notice row a long one is what
                        // gets cut, not what is wrong.
                        "userfetch: the cache file is locked by another process; records fetched meanwhile are not stored in it ({})",
                        path.display()
                    ));
                }
                (Ok(()), true) if puts_locked_out => {
                    puts_locked_out = false;
                    crate::console::note_above_progress(format_args!(
                        "userfetch: the cache file is free again; records are stored in it again ({})",
                        path.display()
                    ));
                }
                _ => {}
            }
            match ran {
                // Left in `batch`: only a failed start of the transaction does that.
                Err(e) if patient && is_busy(&e) && !batch.is_empty() => {
                    if waiting_since.is_none() {
                        // Short tries from now on, so a stop or a close is seen at once.
                        if let Err(e) = conn.busy_timeout(WAIT_STEP) {
                            tracing::debug!("cache {}: {e}", path.display());
                        }
                        crate::console::note_above_progress(format_args!(
                            "userfetch: the cache file {} is locked by another process; waiting until it is free",
                            path.display()
                        ));
                        waiting_since = Some(Instant::now());
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
                    tracing::debug!("cache {}: {e}", path.display());
                    break;
                }
                Ok(()) => {
                    // Batch commands took the write lock: it is free again.
                    if let Some(since) = waiting_since.take_if(|_| batch_commands) {
                        if let Err(e) = conn.busy_timeout(BUSY_FOR) {
                            tracing::debug!("cache {}: {e}", path.display());
                        }
                        crate::console::note_above_progress(format_args!(
                            "userfetch: the cache file {} is free again after {}; going on",
                            path.display(),
                            // The first busy timeout passed before the wait was noticed.
                            humantime::format_duration(Duration::from_secs(
                                (since.elapsed() + BUSY_FOR).as_secs()
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
            // Without a checkpoint: folding the WAL into the file here (and waiting for its
            // fsync) took 5-10 ms at the end of every command, against 1-2 ms for the next
            // open to read the log back. Committed data is safe in the WAL either way; a copy
            // of the cache must take the -wal file with it, as with any SQLite database in
            // WAL mode. Closing, rather than exiting under the thread, means the process never
            // ends while SQLite is writing.
            if let Err(e) = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true) {
                tracing::debug!("cache {}: closing with a checkpoint: {e}", path.display());
            }
            if let Err((_, e)) = conn.close() {
                tracing::warn!("closing the cache {}: {e}", path.display());
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
fn answer_lookups_first(conn: &mut Connection, batch: &mut Vec<Command>, path: &Path) {
    if !batch.iter().any(|c| matches!(c, Command::Get { .. })) {
        return;
    }
    let (mut reads, rest) = std::mem::take(batch)
        .into_iter()
        .partition(|c| matches!(c, Command::Get { .. }));
    *batch = rest;
    // Reads only: no claims to keep.
    if let Err(e) = run_batch(conn, &mut reads, &mut Claimed::default(), false) {
        tracing::debug!("cache {}: {e}", path.display());
    }
}

/// Runs the queued commands in one transaction. When the write lock stays taken past the
/// busy timeout and `patient`, the commands are left in `batch` for another try.
fn run_batch(
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
                                let age = Duration::from_millis(
                                    now.saturating_sub(fetched).max(0) as u64
                                );
                                (age <= max_age).then(|| Cached {
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
            Reply::Put(None, Err(e)) => tracing::warn!("cache: storing a record failed: {e}"),
            Reply::Put(None, Ok(())) => {}
            Reply::Flush(tx) => {
                let _ = tx.send(());
            }
            Reply::Batch(reply) => reply.send(&outcome),
        }
    }
    outcome
}

/// Answers a command that never ran with why.
fn refuse(command: Command, e: &rusqlite::Error) {
    match command {
        Command::Get { reply, .. } => {
            let _ = reply.send(Err(clone_error(e)));
        }
        Command::Put { ack: Some(ack), .. } => {
            let _ = ack.send(Err(clone_error(e)));
        }
        Command::Put { ack: None, .. } if is_busy(e) => {}
        Command::Put { ack: None, .. } => tracing::warn!("cache: storing a record failed: {e}"),
        Command::Flush { reply } | Command::Close { reply } => {
            let _ = reply.send(());
        }
        Command::Batch(command) => command.refuse(e),
    }
}

enum Reply {
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
fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Another process's connection holding the file's write lock until rolled back.
    fn hold_the_write_lock(path: &Path) -> Connection {
        let holder = Connection::open(path).unwrap();
        holder
            .execute_batch("BEGIN IMMEDIATE; CREATE TABLE held (x);")
            .unwrap();
        holder
    }
    use std::os::unix::fs::PermissionsExt;

    fn record(n: u32) -> Record {
        Record::from_body(format!(r#"{{"id":{n}}}"#).as_bytes()).unwrap()
    }

    /// Several processes starting at once on a cache file that does not exist yet (parallel
    /// jobs on a fresh machine): each must get a working cache, none a "locked" refusal.
    #[test]
    fn many_opening_a_new_file_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..40 {
            let path = dir.path().join(format!("c{round}.sqlite3"));
            let opened: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || open_connection(&path).map(drop))
                })
                .collect();
            for handle in opened {
                if let Err(e) = handle.join().unwrap() {
                    panic!("round {round}: {e}");
                }
            }
        }
    }

    #[tokio::test]
    async fn stores_and_finds_records_per_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c.sqlite3")).unwrap();
        cache.put_durable("api-a", "1", record(1)).await.unwrap();
        let hit = cache
            .get("api-a", "1", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hit.record.as_json(), r#"{"id":1}"#);
        assert!(
            cache
                .get("api-b", "1", Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            cache
                .get("api-a", "2", Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
    }

    /// Another process holding the write lock (a `sqlite3` shell left in a transaction, a
    /// batch committing) does not hold up a lookup: WAL lets readers read meanwhile.
    #[tokio::test]
    async fn lookups_read_while_another_process_holds_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let cache = Cache::open(&path).unwrap();
        cache.put_durable("a", "1", record(1)).await.unwrap();
        let holder = hold_the_write_lock(&path);
        let hit = cache.get("a", "1", Duration::from_secs(60)).await.unwrap();
        assert_eq!(hit.unwrap().record.as_json(), r#"{"id":1}"#);
        holder.execute_batch("ROLLBACK").unwrap();
    }

    /// Another process holding the write lock costs `get` one busy timeout, not one per
    /// transaction of records: after the first refusal the next records do not wait, and
    /// once the lock is free they are stored again.
    #[tokio::test]
    async fn records_refused_for_a_lock_make_later_ones_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let cache = Cache::open(&path).unwrap();
        cache.put_durable("a", "0", record(0)).await.unwrap();
        let holder = hold_the_write_lock(&path);
        let started = std::time::Instant::now();
        cache.put("a", "1", record(1)).unwrap();
        // Queued while the first waits out the lock: its own transaction comes next.
        tokio::time::sleep(Duration::from_millis(200)).await;
        cache.put("a", "2", record(2)).unwrap();
        cache.flush().await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= BUSY_FOR && waited < BUSY_FOR + BUSY_FOR / 2,
            "waited {waited:?}"
        );
        holder.execute_batch("ROLLBACK").unwrap();
        cache.put_durable("a", "3", record(3)).await.unwrap();
        let hour = Duration::from_secs(3600);
        assert!(cache.get("a", "1", hour).await.unwrap().is_none());
        assert!(cache.get("a", "3", hour).await.unwrap().is_some());
    }

    #[test]
    fn lookups_queued_with_records_are_answered_under_another_process_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let mut conn = open_connection(&path).unwrap();
        conn.execute(PUT_RECORD, params!["a", "1", r#"{"id":1}"#, now_ms()])
            .unwrap();
        let holder = hold_the_write_lock(&path);
        let (reply, mut found) = oneshot::channel();
        let mut batch = vec![
            Command::Put {
                namespace: "a".into(),
                id: "2".into(),
                record: record(2),
                ack: None,
            },
            Command::Get {
                namespace: "a".into(),
                id: "1".into(),
                max_age: Duration::from_secs(60),
                reply,
            },
        ];
        let started = std::time::Instant::now();
        answer_lookups_first(&mut conn, &mut batch, &path);
        assert!(
            started.elapsed() < BUSY_FOR,
            "the lookup waited for the lock"
        );
        let hit = found.try_recv().unwrap().unwrap().unwrap();
        assert_eq!(hit.record.as_json(), r#"{"id":1}"#);
        assert!(matches!(batch.as_slice(), [Command::Put { .. }]));
        holder.execute_batch("ROLLBACK").unwrap();
    }

    #[tokio::test]
    async fn old_records_are_not_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c.sqlite3")).unwrap();
        cache.put_durable("a", "1", record(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            cache
                .get("a", "1", Duration::from_millis(5))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            cache
                .get("a", "1", Duration::from_secs(5))
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn queued_puts_survive_a_reopen_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let cache = Cache::open(&path).unwrap();
        for n in 0..500 {
            cache.put("a", &n.to_string(), record(n)).unwrap();
        }
        cache.flush().await.unwrap();
        drop(cache);
        let again = Cache::open(&path).unwrap();
        assert!(
            again
                .get("a", "499", Duration::from_secs(60))
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn closing_stores_what_is_queued_and_ends_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let cache = Cache::open(&path).unwrap();
        let other = cache.clone();
        for n in 0..500 {
            cache.put("a", &n.to_string(), record(n)).unwrap();
        }
        cache.close().await.unwrap();
        assert!(matches!(other.flush().await, Err(CacheError::Gone)));
        let again = Cache::open(&path).unwrap();
        for n in ["0", "250", "499"] {
            let found = again.get("a", n, Duration::from_secs(60));
            assert!(found.await.unwrap().is_some(), "record {n}");
        }
    }

    #[tokio::test]
    async fn the_log_shrinks_back_after_a_large_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let wal = dir.path().join("c.sqlite3-wal");
        let cache = Cache::open(&path).unwrap();
        let job = cache.batch_open("a", "/out.jsonl", false).await.unwrap();
        let pad = "x".repeat(4000);
        let big: Vec<Outcome> = (0..9000)
            .map(|n| Outcome {
                id: n.to_string(),
                line: n + 1,
                settled: Settled::Found(
                    Record::from_body(format!(r#"{{"id":{n},"pad":"{pad}"}}"#).as_bytes()).unwrap(),
                ),
            })
            .collect();
        // One settlement is one transaction: ~36 MB of log.
        cache.batch_settle(job, "a", big).await.unwrap();
        let peak = std::fs::metadata(&wal).unwrap().len();
        assert!(
            peak > 2 * WAL_SIZE_LIMIT as u64,
            "the WAL held {peak} bytes"
        );
        // That commit was checkpointed; the next one starts the log over and cuts it back.
        cache.put_durable("a", "last", record(1)).await.unwrap();
        let after = std::fs::metadata(&wal).unwrap().len();
        assert!(
            after <= WAL_SIZE_LIMIT as u64,
            "the WAL still holds {after} bytes"
        );
    }

    #[tokio::test]
    async fn a_new_file_gets_8_kib_pages_and_an_old_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |path: &Path| -> i64 {
            Connection::open(path)
                .unwrap()
                .query_row("PRAGMA page_size", [], |row| row.get(0))
                .unwrap()
        };
        let new = dir.path().join("new.sqlite3");
        let cache = Cache::open(&new).unwrap();
        cache.put_durable("a", "1", record(1)).await.unwrap();
        drop(cache);
        assert_eq!(page_size(&new), PAGE_SIZE);

        // A file made with 4 KiB pages (as every cache was before) is used as it is.
        let old = dir.path().join("old.sqlite3");
        let conn = Connection::open(&old).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 4096;
             CREATE TABLE records (namespace TEXT NOT NULL, id TEXT NOT NULL,
                 body TEXT NOT NULL, fetched_ms INTEGER NOT NULL,
                 PRIMARY KEY (namespace, id)) WITHOUT ROWID;",
        )
        .unwrap();
        drop(conn);
        let cache = Cache::open(&old).unwrap();
        cache.put_durable("a", "1", record(1)).await.unwrap();
        assert!(
            cache
                .get("a", "1", Duration::from_secs(60))
                .await
                .unwrap()
                .is_some()
        );
        drop(cache);
        assert_eq!(page_size(&old), 4096);
    }

    #[test]
    fn a_write_refused_as_read_only_is_named_so_not_as_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        drop(Connection::open(&path).unwrap());
        // What SQLite answers when the file or its directory cannot be written.
        let refused =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap()
                .execute_batch("CREATE TABLE t (x)")
                .unwrap_err();
        let error = sqlite_error(&path, refused);
        assert!(matches!(error, CacheError::ReadOnly { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot write the cache file {}", path.display()))
        );
        let code = crate::exit::code_for(&anyhow::Error::new(error));
        assert_eq!(code, crate::exit::ExitCode::Usage);
    }

    #[test]
    fn file_and_directory_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("c.sqlite3");
        Cache::make_default_dir(&path).unwrap();
        let _cache = Cache::open(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn an_existing_world_readable_file_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _cache = Cache::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_device_or_a_pipe_is_not_a_cache() {
        let err = Cache::open(Path::new("/dev/null")).err().unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success(), "mkfifo");
        let err = Cache::open(&fifo).err().unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_sqlite_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.txt");
        std::fs::write(&path, b"1\n2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Cache::open(&path),
            Err(CacheError::Corrupt { .. })
        ));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        std::fs::write(&path, vec![b'z'; 8192]).unwrap();
        let err = Cache::open(&path).err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, CacheError::Corrupt { .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            vec![b'z'; 8192],
            "the file must be left as it was"
        );
    }
}
