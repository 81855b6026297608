//! Output files, rebuilt from the store: found records as JSONL or CSV, failures as JSONL.
//!
//! Nothing is appended while lookups run. When a run ends (or is interrupted), every settled
//! outcome of the job is read back from SQLite in input order and written to a temporary file
//! beside the target, which is then renamed over it. So a file is always either the previous
//! complete version or the new one, and it holds each id exactly once because the store does.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::cache::{BatchReader, FailureRow};
use crate::cli::Format;
use crate::console::note;
use crate::exit::usage;

/// A file that appears complete or not at all. The temporary file is created up front, so an
/// unwritable destination is found before anything is fetched; it is removed unless committed.
pub struct AtomicFile {
    /// As the user gave it, for messages.
    path: PathBuf,
    /// What is replaced: `path`, or the file a link at `path` points to.
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

/// What [`AtomicFile::checked`] found: the file to replace, what is there now, and the
/// temporary file's path.
struct Checked {
    target: PathBuf,
    existing: Option<std::fs::Metadata>,
    tmp: PathBuf,
}

impl AtomicFile {
    /// Whether `path` could be written as an output, touching nothing (a dry run's check):
    /// the temporary file is neither made nor locked, so a run writing it is no obstacle.
    pub fn check(path: &Path, what: &str) -> anyhow::Result<()> {
        let Checked { tmp, .. } = AtomicFile::checked(path, what)?;
        let refused = |why: String| usage(format!("cannot write {what} {}: {why}", path.display()));
        may_write_in(dir_of(&tmp)).map_err(|e| refused(e.to_string()))?;
        // One left there is judged as a run would judge it, without opening it.
        if let Ok(meta) = std::fs::symlink_metadata(&tmp)
            && let Some(why) = partial_refusal(&meta)
        {
            return Err(refused(format!(
                "its temporary file {} {why}; remove it",
                tmp.display()
            )));
        }
        Ok(())
    }

    /// Whether another run is writing `path` now (it holds the lock on its temporary file),
    /// asked without writing anything: a shared lock is tried on the file opened to read.
    pub fn being_written(path: &Path) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(Checked { tmp, .. }) = AtomicFile::checked(path, "") else {
            return false;
        };
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&tmp)
            .is_ok_and(|file| {
                matches!(
                    file.try_lock_shared(),
                    Err(std::fs::TryLockError::WouldBlock)
                )
            })
    }

    /// `what` names the option in messages (`--out`).
    pub fn create(path: &Path, what: &str) -> anyhow::Result<AtomicFile> {
        let Checked {
            target,
            existing,
            tmp,
        } = AtomicFile::checked(path, what)?;
        let shown = path.display();
        let file =
            open_partial(&tmp).map_err(|e| usage(format!("cannot write {what} {shown}: {e}")))?;
        // Two runs writing one output would write one temporary file at once. The store keeps
        // their outcomes apart, but the file would be garbled: the second run waits its turn.
        // Locked before it is emptied, so a running export is never cut short.
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(usage(format!(
                    "{what} {shown}: another userfetch run is writing that file; wait for it to finish"
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(usage(format!("cannot lock {what} {shown}: {e}")));
            }
        }
        // Ours from here on (the lock is held), so ours to remove if the process quits at once.
        partials().push(tmp.clone());
        file.set_len(0)
            .map_err(|e| usage(format!("cannot write {what} {shown}: {e}")))?;
        // The new version keeps the old one's permissions (a file made private stays so). A
        // new one is writable by its owner whatever the umask: one made read-only here would
        // be refused by the next run, as the user's own read-only file is.
        let permissions = match existing {
            Some(meta) => Some(meta.permissions()),
            None => file
                .metadata()
                .ok()
                .filter(|meta| meta.permissions().mode() & 0o200 == 0)
                .map(|meta| std::fs::Permissions::from_mode(meta.permissions().mode() | 0o200)),
        };
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)
                .map_err(|e| usage(format!("cannot write {what} {shown}: {e}")))?;
        }
        Ok(AtomicFile {
            path: path.to_owned(),
            target,
            tmp,
            file: Some(file),
        })
    }

    fn checked(path: &Path, what: &str) -> anyhow::Result<Checked> {
        let shown = path.display();
        // `file_name()` ignores a trailing slash; `out/` names a directory, existing or not.
        let names_dir = |p: &Path| p.as_os_str().as_encoded_bytes().ends_with(b"/");
        if path.is_dir() {
            return Err(usage(format!("{what} {shown} is a directory")));
        }
        if names_dir(path) {
            return Err(usage(format!(
                "{what} {shown} ends in '/', which names a directory, not a file"
            )));
        }
        // A link is followed to the file it points to: replacing the link would leave that
        // file stale. First, so that a planted one is refused as such, before the kernel
        // (with `fs.protected_symlinks`) refuses to read through it.
        let target =
            resolve_links(path).map_err(|e| usage(format!("cannot follow {what} {shown}: {e}")))?;
        if let Some(why) = no_directory(dir_of(&target)) {
            return Err(usage(format!("cannot write {what} {shown}: {why}")));
        }
        // The file is replaced by renaming a new one over it, so anything that is not a
        // regular file (/dev/null, a pipe, /dev/stdout) is refused: renaming over it would
        // replace the device itself. Asked of the kernel, which follows every kind of link.
        let existing = match std::fs::metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // Not "nothing there": the checks below would be skipped for what is.
            Err(e) => return Err(usage(format!("cannot read {what} {shown}: {e}"))),
        };
        if existing.as_ref().is_some_and(|m| !m.is_file()) {
            return Err(usage(format!(
                "{what} {shown} is not a regular file; the output is written whole and renamed into place, which needs one"
            )));
        }
        // Renaming over a file needs no write permission on it, so a file made read-only
        // would be replaced without a word: its mark is taken as the owner's "keep this",
        // as `rm` asks before removing one.
        if existing
            .as_ref()
            .is_some_and(|m| m.permissions().readonly())
        {
            return Err(usage(format!(
                "{what} {shown} is read-only; make it writable (chmod u+w) to have it replaced, or choose another file"
            )));
        }
        // A cache (this run's is refused by name before; this is another's, or a copy) would
        // go with every earlier run's progress, for a record file that can be made again.
        if existing.is_some()
            && let Some(kind) = sqlite_file(path)
        {
            return Err(usage(format!(
                "{what} {shown} is {kind} (a userfetch cache?), which an output would replace; choose another file"
            )));
        }
        if names_dir(&target) {
            return Err(usage(format!("{what} {shown} links to a directory")));
        }
        let name = target
            .file_name()
            .ok_or_else(|| usage(format!("{what} {shown} does not name a file")))?;
        let dir = dir_of(&target);
        // In a sticky directory (/tmp) only a file's owner (or the directory's) may rename
        // over it: said now, not as "Operation not permitted" once everything is fetched.
        if let Some(meta) = &existing
            && owned_by_another_in_a_sticky_dir(meta, dir, euid())
        {
            return Err(usage(format!(
                "{what} {shown} belongs to another user, in a directory where only a file's \
                 owner may replace it (sticky, as /tmp is); choose another name"
            )));
        }
        // Fixed name: a run killed before it could clean up leaves one stray file, which
        // the next run reuses, rather than one per run.
        let tmp = dir.join(partial_name(name));
        Ok(Checked {
            target,
            existing,
            tmp,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn writer(&mut self) -> anyhow::Result<BufWriter<File>> {
        let file = self
            .file
            .take()
            .context("internal: output file written twice")?;
        Ok(BufWriter::with_capacity(256 * 1024, file))
    }

    /// Writes `bytes` as the whole content and puts it in place.
    pub fn write_all(mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let shown = crate::term::path(&self.path);
        let mut w = self.writer()?;
        w.write_all(bytes)
            .with_context(|| format!("cannot write {shown}"))?;
        self.commit(w)
    }

    /// Puts the written content in place. No fsync: the store is what must survive a crash
    /// (SQLite commits it), and the file is derived from it, so after a power cut a rerun
    /// rebuilds it; syncing 100 MB of output would cost more than the whole fetch.
    pub(super) fn commit(mut self, writer: BufWriter<File>) -> anyhow::Result<()> {
        let shown = crate::term::path(&self.path);
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {shown}"))?;
        std::fs::rename(&self.tmp, &self.target)
            .with_context(|| format!("cannot put {shown} in place"))?;
        forget_partial(&self.tmp);
        self.tmp = PathBuf::new();
        Ok(())
    }
}

/// The longest file name most file systems take (ext4, XFS, Btrfs, tmpfs).
const NAME_MAX: usize = 255;

const PARTIAL: &str = ".userfetch-partial";

/// `.NAME.userfetch-partial`, beside the output. A name too long for that keeps its start
/// and gets a hash of the whole in place of the rest, so that any name the file system takes
/// for the output can be written, and two long names that start alike do not share one.
fn partial_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    let mut partial = std::ffi::OsString::from(".");
    if 1 + bytes.len() + PARTIAL.len() <= NAME_MAX {
        partial.push(name);
    } else {
        let hash = format!("-{:016x}", fnv1a(bytes));
        let mut keep = NAME_MAX - 1 - hash.len() - PARTIAL.len();
        // Not inside a UTF-8 character: some file systems take only UTF-8 names.
        while keep > 0 && bytes.get(keep).is_some_and(|b| b & 0xC0 == 0x80) {
            keep -= 1;
        }
        partial.push(std::ffi::OsStr::from_bytes(&bytes[..keep]));
        partial.push(hash);
    }
    partial.push(PARTIAL);
    partial
}

/// FNV-1a, 64 bits. By hand, as the partial name must stay the same from one build to the
/// next (a killed run's file is found again by it), which std's hasher does not promise,
/// and no crate is worth it for eight lines.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Opens the temporary file, made if need be. Its name is fixed, so in a directory others
/// may write to, anything could be waiting there: a symbolic link (writing through it would
/// overwrite the file it points to, and the rename would put the link where the output
/// goes), a FIFO (opening it blocks until a reader comes, and no signal ends that wait), or
/// another user's file, or a hard link to a file. One made here is ours by construction;
/// one found (a killed run's) is written only if it is a regular file of this user's with
/// no other name. Neither way follows a link or waits on a FIFO.
fn open_partial(tmp: &Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let named = || format!("its temporary file {}", tmp.display());
    let open = |new: bool| {
        OpenOptions::new()
            .write(true)
            .create_new(new)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(tmp)
    };
    let refused = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::ELOOP) => format!(
            "{} is a symbolic link; remove it (userfetch writes the output there, then renames it into place)",
            named()
        ),
        // A FIFO with no reader, opened without blocking.
        Some(libc::ENXIO) => format!("{} is not a regular file; remove it", named()),
        Some(libc::EISDIR) => format!("{} is a directory; remove it", named()),
        _ => format!("{}: {e}", named()),
    };
    let file = match open(true) {
        Ok(file) => return Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => open(false).map_err(refused)?,
        Err(e) => return Err(refused(e)),
    };
    let meta = file.metadata().map_err(|e| format!("{}: {e}", named()))?;
    match partial_refusal(&meta) {
        None => Ok(file),
        Some(why) => Err(format!("{} {why}; remove it", named())),
    }
}

/// Why a temporary file found beside an output must not be written, from its metadata
/// (as `lstat` gives it: a link is itself); `None` when it may.
fn partial_refusal(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    if meta.file_type().is_symlink() {
        Some("is a symbolic link")
    } else if meta.is_dir() {
        Some("is a directory")
    } else if !meta.is_file() {
        Some("is not a regular file")
    } else if meta.uid() != euid() {
        Some("belongs to another user")
    } else if meta.nlink() > 1 {
        Some("has another name (a hard link)")
    } else {
        None
    }
}

/// `path` with symbolic links followed, including one whose target does not exist yet.
pub(super) fn resolve_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut path = path.to_owned();
    // Bounded like the kernel's own limit on links in a chain.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                refuse_planted_link(&path, &meta)?;
                let link = std::fs::read_link(&path)?;
                path = match path.parent() {
                    Some(dir) => dir.join(link),
                    None => link,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// The directory `path` is in (`.` for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Why `dir` cannot hold an output, when it is not there or no directory: said as such,
/// rather than as what opening the temporary file in it answers ("its temporary file
/// nodir/.o.jsonl.userfetch-partial: No such file or directory").
fn no_directory(dir: &Path) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("its directory {} does not exist", dir.display()))
        }
        // A file where a directory should be, somewhere up the path: named, rather than
        // the path below it (`ids.txt/a` for `ids.txt/a/o.jsonl`).
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            let file = dir
                .ancestors()
                .skip(1)
                .find(|up| std::fs::metadata(up).is_ok_and(|meta| !meta.is_dir()))
                .unwrap_or(dir);
            Some(format!("{} is not a directory", file.display()))
        }
        // Anything else (no permission to look) is said where the file is opened.
        Err(_) => None,
    }
}

/// Whether this process may make a file in `dir`, asked of the kernel as the process's
/// effective user (what creating the temporary file would need), without making one.
fn may_write_in(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path that outlives the call; faccessat(2) only reads it.
    let answer = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            dir.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if answer == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether `file`, in `dir`, may not be replaced by user `me` for the sticky bit: another
/// user's file in a sticky directory that is not `me`'s either (root may).
fn owned_by_another_in_a_sticky_dir(file: &std::fs::Metadata, dir: &Path, me: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    me != 0
        && file.uid() != me
        && std::fs::metadata(dir).is_ok_and(|d| d.mode() & libc::S_ISVTX != 0 && d.uid() != me)
}

/// The user this process acts as, whose files it may write.
fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// A link another user made in a shared directory (sticky and writable by all, as /tmp) is
/// not followed, as the kernel does not follow it for opening (`fs.protected_symlinks`):
/// followed, it would have a run replace any file of the runner's it points to. The kernel's
/// rule: the link's owner must be the one following it or the directory's owner.
fn refuse_planted_link(link: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() == euid() {
        return Ok(());
    }
    let dir = std::fs::metadata(dir_of(link))?;
    let shared = dir.mode() & 0o1002 == 0o1002;
    if shared && meta.uid() != dir.uid() {
        return Err(std::io::Error::other(
            "it is a symbolic link another user made in a shared directory, which is not followed",
        ));
    }
    Ok(())
}

impl AtomicFile {
    /// Empties what `writer` wrote so far and takes the file back, to be written anew. What
    /// the writer still buffers is dropped unwritten: it may be what failed to write.
    pub(super) fn restart(&mut self, writer: BufWriter<File>) -> anyhow::Result<()> {
        let shown = crate::term::path(&self.path);
        let (mut file, _unwritten) = writer.into_parts();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .with_context(|| format!("cannot write {shown}"))?;
        self.file = Some(file);
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
            forget_partial(&self.tmp);
        }
    }
}

/// Temporary files this process is writing: [`remove_partials`] deletes them when it quits
/// at once, since `std::process::exit` runs no destructor.
static PARTIALS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn partials() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PARTIALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn forget_partial(tmp: &Path) {
    partials().retain(|p| p != tmp);
}

/// Deletes the temporary files of outputs not yet in place; the outputs keep their last
/// complete version. For a process about to exit without unwinding.
pub fn remove_partials() {
    for tmp in partials().drain(..) {
        let _ = std::fs::remove_file(tmp);
    }
}

/// Writes every found record of the job to `out`; returns how many.
pub fn write_found(
    reader: &BatchReader,
    job: i64,
    namespace: &str,
    format: Format,
    mut out: AtomicFile,
) -> anyhow::Result<u64> {
    let shown = crate::term::path(out.path());
    let mut w = out.writer()?;
    let count = match format {
        Format::Jsonl => reader.each_found(job, namespace, |_, body| {
            write_jsonl(&mut w, body)?;
            Ok(())
        }),
        Format::Csv => write_csv(reader, job, namespace, &mut w),
    }
    .with_context(|| format!("cannot write {shown}"))?;
    out.commit(w)?;
    Ok(count)
}

/// One record as one JSONL line: the one way both routes to `--out` (streamed as the run
/// goes, rebuilt from the store) write it, so they cannot differ. C1 controls, bidi
/// overrides and line separators in its strings are written as `\uXXXX`, which means the
/// same JSON: raw, they act on a terminal that shows the file, and U+2028 and U+0085 split
/// the line for readers such as Python's `splitlines`.
pub(super) fn write_jsonl(w: &mut impl Write, json: &str) -> std::io::Result<()> {
    crate::record::write_json_escaped(w, json)?;
    w.write_all(b"\n")
}

/// Two passes over the store: the first collects the columns (the union of every record's
/// fields, in first-seen order), the second writes rows. Memory holds the column names only.
fn write_csv(
    reader: &BatchReader,
    job: i64,
    namespace: &str,
    w: &mut BufWriter<File>,
) -> anyhow::Result<u64> {
    // Both passes read one snapshot: another process sharing the cache (a `get`, a batch
    // against the same API) may rewrite a record between them, and a field the first pass
    // never saw would have no column in the second.
    reader.snapshot()?;
    let mut columns: Vec<String> = Vec::new();
    let mut known: HashSet<String> = HashSet::new();
    let mut cells = Vec::new();
    let mut doubled = false;
    reader.each_found(job, namespace, |id, body| {
        cells.clear();
        flatten(&parse(id, body)?, &mut String::new(), &mut cells);
        // A parsed object holds one value per key (the last): said, like a clash below.
        if !doubled
            && let Some(key) = crate::duplicate_keys::first(body)
        {
            note!(
                "userfetch: record {}: an object holds the key {} twice; the CSV keeps its last value (JSONL keeps the record as sent; later ones are not reported)",
                crate::term::quote(id),
                crate::term::quote(&key)
            );
            doubled = true;
        }
        for (name, _) in cells.drain(..) {
            if known.insert(name.clone()) {
                columns.push(name);
            }
        }
        Ok(())
    })?;
    let index: std::collections::HashMap<&str, usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut csv = csv::Writer::from_writer(w);
    // No record, no columns: an empty file, not a header of one nameless column.
    if !columns.is_empty() {
        csv.write_record(&columns)?;
    }
    let mut row = vec![String::new(); columns.len()];
    let mut filled = vec![false; columns.len()];
    let mut clashed = false;
    let count = reader.each_found(job, namespace, |id, body| {
        row.iter_mut().for_each(String::clear);
        filled.iter_mut().for_each(|f| *f = false);
        cells.clear();
        flatten(&parse(id, body)?, &mut String::new(), &mut cells);
        for (name, value) in cells.drain(..) {
            // Every name was seen in the first pass: the store cannot change in between.
            let Some(&i) = index.get(name.as_str()) else {
                continue;
            };
            // `{"a.b": 1, "a": {"b": 2}}` has two fields named `a.b` once flattened; a cell
            // holds one, and losing the other silently would be worse than saying so.
            if filled[i] {
                if !clashed {
                    note!(
                        "userfetch: record {}: two fields flatten to the CSV column {}; the CSV keeps the first (JSONL keeps both; later clashes are not reported)",
                        crate::term::quote(id),
                        crate::term::quote(&name)
                    );
                    clashed = true;
                }
                continue;
            }
            row[i] = value;
            filled[i] = true;
        }
        // With no columns a row would be written as `""`, which a reader takes for a
        // header, then a record, of one nameless column.
        if !row.is_empty() {
            csv.write_record(&row)?;
        }
        Ok(())
    })?;
    csv.flush()?;
    if columns.is_empty() && count > 0 {
        note!(
            "userfetch: {} found: not one holds a field, so the CSV has no column to put them in (JSONL keeps them)",
            crate::console::count(count, "record", "records")
        );
        // What the file holds, as the summary says it.
        return Ok(0);
    }
    Ok(count)
}

fn parse(id: &str, body: &str) -> anyhow::Result<Value> {
    serde_json::from_str(body).with_context(|| format!("the stored record for id {id} is not JSON"))
}

/// Column name and cell text for every leaf. Objects nest with dots; arrays stay whole as JSON
/// text (a list has no fixed columns); strings are written raw, numbers and booleans as JSON,
/// null as an empty cell. An empty record has no fields, and so an empty row (it used to get
/// a made-up `value` column holding `{}`, merged with other records' own `value` field); an
/// empty object inside a record is a field of its own, `{}`. A value that is not an object
/// (no record is: the client refuses them) gets the single column `value`.
pub fn flatten(value: &Value, prefix: &mut String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => fields(map, true, prefix, out),
        leaf => out.push(("value".to_owned(), cell(leaf))),
    }
}

/// An object's leaves under `prefix`. A key may be empty too: the dot goes by depth, not by
/// what the prefix holds, so `{"": {"a": 1}}` is `.a`, not `a`, and `{"": 1}` is ``, not
/// `value`.
fn fields(
    map: &serde_json::Map<String, Value>,
    top: bool,
    prefix: &mut String,
    out: &mut Vec<(String, String)>,
) {
    for (key, child) in map {
        let len = prefix.len();
        if !top {
            prefix.push('.');
        }
        prefix.push_str(key);
        match child {
            Value::Object(inner) if !inner.is_empty() => fields(inner, false, prefix, out),
            leaf => out.push((prefix.clone(), cell(leaf))),
        }
        prefix.truncate(len);
    }
}

fn cell(leaf: &Value) -> String {
    match leaf {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line of the failures file (see `schema/batch-failure.schema.json`).
#[derive(Serialize)]
struct FailureLine<'a> {
    id: &'a str,
    outcome: &'a str,
    error: &'a str,
    message: &'a str,
    attempts: u32,
}

/// Writes every not-found and failed id of the job; returns how many.
pub fn write_failures(reader: &BatchReader, job: i64, mut out: AtomicFile) -> anyhow::Result<u64> {
    let shown = crate::term::path(out.path());
    let mut w = out.writer()?;
    let count = reader
        .each_failure(job, |row: FailureRow| {
            let line = FailureLine {
                id: &row.id,
                outcome: if row.not_found { "not_found" } else { "failed" },
                error: &row.kind,
                message: &row.message,
                attempts: row.attempts,
            };
            // The message can quote the API's error answer: its C1 controls and bidi
            // overrides are written as `\uXXXX`, meaning the same, so `cat` shows them safely.
            let text = serde_json::to_string(&line)?;
            crate::record::write_json_escaped(&mut w, &text)?;
            w.write_all(b"\n")?;
            Ok(())
        })
        .with_context(|| format!("cannot write {shown}"))?;
    out.commit(w)?;
    Ok(count)
}

/// What SQLite file `path` is, by its first bytes: a database, or the log or journal that
/// holds a database's latest commits (replacing one loses them). Unreadable counts as none:
/// the checks that follow, or the write, say what is wrong with it.
fn sqlite_file(path: &Path) -> Option<&'static str> {
    use std::io::Read;
    let mut header = [0u8; 16];
    File::open(path)
        .and_then(|mut file| file.read_exact(&mut header))
        .ok()?;
    match header {
        _ if &header == crate::cache::SQLITE_HEADER => Some("a SQLite database"),
        [0x37, 0x7f, 0x06, 0x82 | 0x83, ..] => Some("a SQLite database's write-ahead log"),
        [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7, ..] => Some("a SQLite database's journal"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_nested_objects_into_dotted_columns() {
        let v: Value = serde_json::from_str(
            r#"{"id":7,"name":"Ada","address":{"city":"X","geo":{"lat":"1.5"}},"tags":["a","b"],"gone":null,"ok":true,"empty":{}}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        flatten(&v, &mut String::new(), &mut out);
        let got: Vec<(&str, &str)> = out.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("id", "7"),
                ("name", "Ada"),
                ("address.city", "X"),
                ("address.geo.lat", "1.5"),
                ("tags", r#"["a","b"]"#),
                ("gone", ""),
                ("ok", "true"),
                ("empty", "{}"),
            ]
        );
        let mut out = Vec::new();
        flatten(&Value::from(3), &mut String::new(), &mut out);
        assert_eq!(out, vec![("value".to_owned(), "3".to_owned())]);
        let mut out = Vec::new();
        flatten(&serde_json::json!({}), &mut String::new(), &mut out);
        assert_eq!(out, vec![]);

        // Empty keys are names of their own, not "value" and not a field of the level above.
        let v =
            serde_json::json!({"": "e", "value": "v", "a": {"": 5}, "b": {"": {"c": 1}}, "c": 2});
        let mut out = Vec::new();
        flatten(&v, &mut String::new(), &mut out);
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["", "value", "a.", "b..c", "c"]);
    }

    #[test]
    fn numbers_keep_their_value_in_cells() {
        // As a float, the first became 1.2345678901234568e29 and the last failed to parse.
        let v: Value = serde_json::from_str(
            r#"{"big":123456789012345678901234567890,"f":0.10,"e":1e5,"huge":1e400}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        flatten(&v, &mut String::new(), &mut out);
        let cells: Vec<&str> = out.iter().map(|(_, cell)| cell.as_str()).collect();
        assert_eq!(
            cells,
            ["123456789012345678901234567890", "0.10", "1e+5", "1e+400"]
        );
    }

    #[tokio::test]
    async fn fields_that_flatten_to_one_column_keep_the_first() {
        use crate::cache::{Cache, Outcome, Settled};
        use crate::record::Record;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let cache = Cache::open(&path).unwrap();
        let job = cache.batch_open("api", "k", false).await.unwrap();
        let record = Record::from_body(br#"{"a.b":1,"a":{"b":2},"c":3}"#).unwrap();
        let outcome = Outcome {
            id: "1".into(),
            line: 1,
            settled: Settled::Found(record),
        };
        cache.batch_settle(job, "api", vec![outcome]).await.unwrap();
        cache.close().await.unwrap();
        let reader = BatchReader::open(&path).unwrap();
        let out = dir.path().join("out.csv");
        let file = AtomicFile::create(&out, "--out").unwrap();
        write_found(&reader, job.job, "api", Format::Csv, file).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a.b,c\n1,3\n");
    }

    #[test]
    fn an_uncommitted_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let f = AtomicFile::create(&path, "--out").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn anything_but_a_plain_file_of_ours_at_the_temporary_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.jsonl");
        let tmp = dir.path().join(".o.jsonl.userfetch-partial");
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "keep me").unwrap();
        let refused = |why: &str| {
            let err = AtomicFile::create(&out, "--out").err().unwrap().to_string();
            assert!(
                err.contains("its temporary file") && err.contains(why),
                "{why}: {err}"
            );
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
            assert!(!out.exists(), "{why}");
        };
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        refused("is a symbolic link");
        std::fs::remove_file(&tmp).unwrap();
        std::fs::hard_link(&victim, &tmp).unwrap();
        refused("has another name");
        std::fs::remove_file(&tmp).unwrap();
        // Opening a FIFO for writing would block until a reader came.
        let made = std::process::Command::new("mkfifo").arg(&tmp).status();
        assert!(made.unwrap().success(), "mkfifo");
        refused("is not a regular file");
        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir(&tmp).unwrap();
        refused(".o.jsonl.userfetch-partial");
        std::fs::remove_dir(&tmp).unwrap();
        // A stray one of ours, left by a killed run, is reused.
        std::fs::write(&tmp, "half a line").unwrap();
        let file = AtomicFile::create(&out, "--out").unwrap();
        file.write_all(b"whole\n").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "whole\n");
    }

    /// Needs root, to make a link another user owns; elsewhere it checks only that a link
    /// of one's own in such a directory is followed.
    #[test]
    fn another_users_file_in_a_sticky_directory_is_known_unreplaceable() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("report.jsonl");
        std::fs::write(&file, "theirs").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let owner = meta.uid();
        let other = owner.wrapping_add(1000);
        // Not sticky: anyone who may write the directory may replace the file.
        assert!(!owned_by_another_in_a_sticky_dir(&meta, dir.path(), other));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(owned_by_another_in_a_sticky_dir(&meta, dir.path(), other));
        // The file's owner may, and so may the directory's (here the same user), and root.
        assert!(!owned_by_another_in_a_sticky_dir(&meta, dir.path(), owner));
        assert!(!owned_by_another_in_a_sticky_dir(&meta, dir.path(), 0));
    }

    #[test]
    fn a_link_another_user_planted_in_a_shared_directory_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "keep me").unwrap();
        let out = shared.join("report.jsonl");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        if euid() == 0 {
            std::os::unix::fs::lchown(&out, Some(65534), Some(65534)).unwrap();
            let err = AtomicFile::create(&out, "--out").err().unwrap().to_string();
            assert!(
                err.contains("another user made in a shared directory"),
                "{err}"
            );
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
            std::os::unix::fs::lchown(&out, Some(0), Some(0)).unwrap();
        }
        let file = AtomicFile::create(&out, "--out").unwrap();
        file.write_all(b"x\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "x\n");
    }

    #[test]
    fn a_name_as_long_as_the_file_system_takes_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for len in [236, 237, 255] {
            let name = format!("{}.jsonl", "a".repeat(len - 6));
            let out = dir.path().join(&name);
            let file = AtomicFile::create(&out, "--out").unwrap();
            file.write_all(b"x\n").unwrap();
            assert_eq!(std::fs::read_to_string(&out).unwrap(), "x\n", "{len}");
        }
        // A long name of two-byte characters is cut between characters, not inside one.
        let name = format!("{}.jsonl", "é".repeat(120));
        let partial = partial_name(std::ffi::OsStr::new(&name));
        assert!(partial.to_str().is_some(), "{partial:?}");
        assert!(partial.len() <= NAME_MAX);
        let file = AtomicFile::create(&dir.path().join(&name), "--out").unwrap();
        file.write_all(b"x\n").unwrap();
        // Two long names alike at the start get temporary files of their own.
        let long = |last: char| format!("{}{last}.jsonl", "b".repeat(248));
        let first = AtomicFile::create(&dir.path().join(long('1')), "--out").unwrap();
        let second = AtomicFile::create(&dir.path().join(long('2')), "--out");
        assert!(second.is_ok(), "{:?}", second.err());
        drop(first);
    }

    #[test]
    fn a_read_only_output_is_refused_and_left_as_it_was() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keep.svg");
        std::fs::write(&path, "precious").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let err = AtomicFile::create(&path, "--svg")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--svg") && err.contains("is read-only"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        // A file only its owner may write is no read-only one.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(AtomicFile::create(&path, "--svg").is_ok());
    }

    #[test]
    fn a_second_writer_of_the_same_output_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let first = AtomicFile::create(&path, "--out").unwrap();
        let err = AtomicFile::create(&path, "--out").err().unwrap();
        assert!(
            err.to_string()
                .contains("another userfetch run is writing that file"),
            "{err}"
        );
        drop(first);
        assert!(AtomicFile::create(&path, "--out").is_ok());
    }

    #[test]
    fn unwritable_and_directory_targets_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = AtomicFile::create(dir.path(), "--out").err().unwrap();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let err = AtomicFile::create(&dir.path().join("no/such/dir/out.jsonl"), "--out")
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("cannot write --out"), "{err}");
        assert_eq!(crate::exit::code_for(&err), crate::exit::ExitCode::Usage);
    }

    /// Said of the directory, in a run and in a dry run alike, not as what opening the
    /// temporary file there answered.
    #[test]
    fn a_missing_directory_or_a_file_in_its_place_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nodir");
        let file = dir.path().join("ids.txt");
        std::fs::write(&file, "1\n").unwrap();
        let cases = [
            (
                missing.join("o.jsonl"),
                format!("its directory {} does not exist", missing.display()),
            ),
            (
                file.join("o.jsonl"),
                format!("{} is not a directory", file.display()),
            ),
            (
                file.join("a/o.jsonl"),
                format!("{} is not a directory", file.display()),
            ),
        ];
        for (path, why) in cases {
            let wanted = format!("cannot write --out {}: {why}", path.display());
            let err = AtomicFile::create(&path, "--out").err().unwrap();
            assert_eq!(err.to_string(), wanted);
            assert_eq!(crate::exit::code_for(&err), crate::exit::ExitCode::Usage);
            let err = AtomicFile::check(&path, "--out").unwrap_err();
            assert_eq!(err.to_string(), wanted);
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "a file was made"
        );
    }
}
