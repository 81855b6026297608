//! Opening the cache file: what is refused before SQLite touches it, how a connection is set
//! up, and how SQLite's errors name the file.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::CacheError;
use super::batch::{BATCH_SCHEMA, add_missing_columns};

/// The page size of a new cache file.
pub(super) const PAGE_SIZE: i64 = 8192;

/// What the WAL file is cut back to when a checkpoint lets it start over.
pub(super) const WAL_SIZE_LIMIT: i64 = 16 << 20;

/// The first 16 bytes of every SQLite database file.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// An empty file (new) or one that starts with SQLite's header. Anything else is left alone;
/// SQLite itself would say the same when first reading it, but only after `Cache::open`
/// has tightened the file's mode.
pub(super) fn looks_like_sqlite(mut file: &std::fs::File) -> bool {
    use std::io::Read;
    let mut header = [0u8; 16];
    match file.read(&mut header) {
        Ok(0) => true,
        Ok(n) => SQLITE_HEADER.starts_with(&header[..n]),
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
pub(super) fn immutable_uri(path: &Path) -> Option<String> {
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
pub(super) fn setup_error(path: &Path, source: rusqlite::Error) -> CacheError {
    match source.sqlite_error_code() {
        // A new file on a full disk read as a damaged one, with advice to move it aside.
        Some(rusqlite::ErrorCode::DiskFull) => CacheError::Full {
            path: path.to_owned(),
            source,
        },
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
        if !ours.iter().all(|c| columns.iter().any(|have| have == c)) {
            return Ok(Some(
                "a table 'records' with other columns than a cache's".into(),
            ));
        }
        // Records are stored by (namespace, id): without that key every store fails.
        let mut key =
            conn.prepare("SELECT name FROM pragma_table_info('records') WHERE pk > 0 ORDER BY pk")?;
        let key: Vec<String> = key
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        return Ok((key != ["namespace", "id"])
            .then(|| "a table 'records' keyed otherwise than a cache's".into()));
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
pub(super) const BUSY_FOR: Duration = Duration::from_secs(5);

/// [`set_up_connection`], again while the file is busy. Processes starting at once on a new
/// file race to switch it to WAL and create the tables, and SQLite answers the loser
/// SQLITE_BUSY at once rather than wait (a writer whose snapshot went stale could otherwise
/// deadlock); both steps are idempotent, so trying again is safe.
pub(super) fn no_directory(path: &Path) -> CacheError {
    CacheError::Open {
        path: path.to_owned(),
        source: std::io::Error::other("its directory does not exist"),
    }
}

pub(super) fn open_connection(path: &Path) -> Result<Connection, CacheError> {
    let started = std::time::Instant::now();
    loop {
        match set_up_connection(path) {
            Err(CacheError::Corrupt { source, .. }) if is_busy(&source) => {
                if started.elapsed() >= BUSY_FOR {
                    return Err(CacheError::Busy {
                        path: path.to_owned(),
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
        }
    } else if source.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) {
        CacheError::ReadOnly {
            path: path.to_owned(),
            source,
        }
    } else if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        CacheError::Full {
            path: path.to_owned(),
            source,
        }
    } else if matches!(
        source.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    ) {
        // Damage past the pages read when the file was opened: the same file as one found
        // damaged then, and the same remedy (no rerun gets past it).
        CacheError::Corrupt {
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

pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

pub(super) fn set_up_connection(path: &Path) -> Result<Connection, CacheError> {
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
