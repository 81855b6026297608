//! The SQLite cache: records by (API, id) with the time they were fetched.
//!
//! One dedicated OS thread owns the connection, so SQLite never blocks the async runtime's
//! thread. Requests reach it over a channel; whatever has queued up while it worked is run in
//! one transaction, which turns a thousand small inserts into one commit.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::sync::oneshot;

use crate::record::Record;

mod batch;
mod file;
mod thread;

use batch::BatchCommand;
pub use batch::{
    BatchJob, BatchReader, Claim, FailureRow, FoundJob, NEVER_WRITTEN, Outcome, Settled, owns_out,
};
use file::{BUSY_FOR, looks_like_sqlite, no_directory, open_connection, sqlite_error};
pub use file::{SQLITE_HEADER, check_is_a_cache};
use thread::{clone_error, serve};

#[derive(Debug, Error)]
pub enum CacheError {
    #[error(
        "cannot create the cache directory {}: {source} (--cache PATH puts the cache file elsewhere; get and the screen also run with --no-cache)",
        crate::term::path(path)
    )]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot open the cache file {}: {source} (--cache PATH names another file; get and the screen also run with --no-cache)",
        crate::term::path(path)
    )]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the cache file {} is not a usable SQLite database ({source}); if it is a damaged userfetch cache, move it aside (a new one is made); if not, --cache PATH names another file",
        crate::term::path(path)
    )]
    Corrupt {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{} is an SQLite database but not a userfetch cache (it holds {what}); it was left as it was: use --cache PATH for another file",
        crate::term::path(path)
    )]
    Foreign { path: PathBuf, what: String },
    #[error(
        "cannot write the cache file {} ({source}); check that it and its directory are writable, or use --cache PATH for another file",
        crate::term::path(path)
    )]
    ReadOnly {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// No space left on the cache file's disk (or the file at SQLite's size limit): nothing
    /// wrong with the file, and what was committed before is kept.
    #[error(
        "no space left for the cache file {} ({source}): free some space, then run the same command again",
        crate::term::path(path)
    )]
    Full {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cache {}: {source}", crate::term::path(path))]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// After a wait: 5 s for `get` and the screen, a step of a batch run asked to stop.
    #[error(
        "the cache file {} is locked by another process; try again once it is done, or use --cache PATH",
        crate::term::path(path)
    )]
    Busy { path: PathBuf },
    #[error("the cache stopped working (its thread ended)")]
    Gone,
}

impl CacheError {
    /// The cache's error in `error`'s chain, under whatever context was added to it.
    pub fn in_chain(error: &anyhow::Error) -> Option<&CacheError> {
        error.chain().find_map(|e| e.downcast_ref::<CacheError>())
    }
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
    /// Batch progress: see the batch store (`cache/batch.rs`).
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
        // An empty file (made by `touch`, say) becomes the cache as a new one would, private:
        // records can be personal data. Before SQLite opens it: its -wal and -shm files are
        // created with the database file's mode. A database already there keeps the mode its
        // owner gave it: a cache shared with a group (0660) lost that to every command, and
        // one made read-only (0444) was made writable again.
        if let Ok(meta) = file.metadata()
            && meta.len() == 0
            && meta.permissions().mode() & 0o077 != 0
        {
            // Said, not fatal: the file is the user's own, and the cache still works.
            if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
                tracing::warn!(
                    "cannot make the cache file {} private (mode 0600): {e}",
                    crate::term::path(path)
                );
            }
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

    /// A record for `id` fetched less than `max_age` ago (so none at `max_age` 0), and not
    /// stamped after now.
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

    use super::batch::PUT_RECORD;
    use super::file::{PAGE_SIZE, WAL_SIZE_LIMIT};
    use super::thread::answer_lookups_first;
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
    async fn a_record_stamped_after_now_is_not_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let cache = Cache::open(&path).unwrap();
        cache.put_durable("a", "1", record(1)).await.unwrap();
        // Stored an hour "ahead": the clock has been set back since.
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE records SET fetched_ms = fetched_ms + 3600000", [])
            .unwrap();
        let day = Duration::from_secs(86_400);
        assert!(cache.get("a", "1", day).await.unwrap().is_none());
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

    /// A command that stored records leaves them in the file itself as it closes, not only
    /// in its -wal log: a copy of the file alone (what a user moving it takes) has them.
    #[tokio::test]
    async fn a_close_after_storing_leaves_the_records_in_the_file_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let cache = Cache::open(&path).unwrap();
        cache.put("a", "1", record(1)).unwrap();
        cache.close().await.unwrap();
        let copy = dir.path().join("copy.sqlite3");
        std::fs::copy(&path, &copy).unwrap();
        let stored: i64 = Connection::open(&copy)
            .unwrap()
            .query_row("SELECT count(*) FROM records", [], |row| row.get(0))
            .unwrap();
        assert_eq!(stored, 1);
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
    fn an_empty_world_readable_file_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _cache = Cache::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// A cache its owner shares with a group keeps that mode: every command made it 0600
    /// again, and the group's next command was refused.
    #[test]
    fn an_existing_cache_keeps_the_mode_its_owner_gave_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        drop(Cache::open(&path).unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        let _cache = Cache::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
    }

    #[test]
    fn a_device_or_a_pipe_is_not_a_cache() {
        let err = Cache::open(Path::new("/dev/null")).err().unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // What to do about it, as a permission denied would say too.
        assert!(
            err.to_string().ends_with(
                "(--cache PATH names another file; get and the screen also run with --no-cache)"
            ),
            "{err}"
        );
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
