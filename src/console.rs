//! Lines for the process's stdout and stderr that never panic.
//!
//! `println!` and `eprintln!` panic when the write fails, which is what a closed pipe does
//! (`userfetch batch ids.txt 2>&1 | head -1`): a batch whose work is already committed would
//! end in a panic and exit 101 instead of its documented code. Messages on stderr are dropped
//! when stderr is gone (there is nowhere left to say anything); a closed stdout ends the
//! command quietly, as the reader asked for no more.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// Set while the interactive screen is drawn on the terminal stderr also goes to.
static SCREEN_ON_STDERR: AtomicBool = AtomicBool::new(false);

/// Says whether the screen is up on stderr's terminal, where log lines would land in the
/// middle of it.
pub fn screen_on_stderr(up: bool) {
    SCREEN_ON_STDERR.store(up, Ordering::Relaxed);
}

/// Where lines from other threads go while the screen covers stderr: its notice row.
type ScreenNotes = Box<dyn Fn(String) + Send>;
static SCREEN_NOTES: Mutex<Option<ScreenNotes>> = Mutex::new(None);

/// Says where [`note_above_progress`] lines go while the screen covers stderr (`None`:
/// nowhere, once the screen is gone).
pub fn notes_to_screen(show: Option<ScreenNotes>) {
    *SCREEN_NOTES.lock().unwrap_or_else(PoisonError::into_inner) = show;
}

/// The progress bar or spinner drawn on stderr, if any: log lines are written above it.
static PROGRESS: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Says which bar is drawn on stderr now (`None` once it is gone), so that log lines lift it
/// instead of being written over it.
pub fn progress_on_stderr(bar: Option<indicatif::ProgressBar>) {
    *PROGRESS.lock().unwrap_or_else(PoisonError::into_inner) = bar;
}

/// Where log lines go: stderr, above the progress bar if one is drawn, except while the
/// screen covers it (dropped then; `-v` is refused with the screen unless stderr goes
/// elsewhere).
pub fn log_writer() -> Box<dyn Write> {
    if SCREEN_ON_STDERR.load(Ordering::Relaxed) {
        Box::new(io::sink())
    } else {
        Box::new(AboveProgress(Vec::new()))
    }
}

/// One log event, held until it is complete and then written with the bar lifted: written
/// straight to stderr, it landed after the bar's last frame, which stayed on screen.
struct AboveProgress(Vec<u8>);

impl Write for AboveProgress {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for AboveProgress {
    fn drop(&mut self) {
        // A log line's fields can hold an API's text (a 500's body in a retry's error): made
        // safe here, for every line, rather than at each place that logs.
        let text = String::from_utf8_lossy(&self.0);
        write_above_progress(crate::term::sanitize_message(&text).as_bytes());
    }
}

fn write_above_progress(text: &[u8]) {
    let write = || {
        let _ = io::stderr().lock().write_all(text);
    };
    // Cloned out of the lock: the bar takes its own while it is lifted.
    let bar = PROGRESS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// One line on stderr from a thread that does not draw the progress bar (the cache's),
/// written above the bar if one is drawn; while the screen covers stderr, handed to it.
pub fn note_above_progress(args: fmt::Arguments<'_>) {
    if !SCREEN_ON_STDERR.load(Ordering::Relaxed) {
        write_above_progress(format!("{}\n", safe(args)).as_bytes());
    } else if let Some(show) = SCREEN_NOTES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        show(safe(args).into_owned());
    }
}

/// The reader of stdout went away (`| head -1`): the end of the output, not a failure.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

/// Whether `what` is new to this process: the first failure of a kind is said, its repeats
/// (every id on a damaged page of the cache, say) are left to `-vv`, while a different one
/// later is said too.
pub fn first_time(what: String) -> bool {
    static SEEN: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
        std::sync::Mutex::new(None);
    SEEN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(Default::default)
        .insert(what)
}

/// One line on stderr, made safe for a terminal; lost if stderr cannot take it.
pub fn write_note(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{}", safe(args));
}

/// One line on stdout, made safe for a terminal. A closed stdout is [`StdoutClosed`], which
/// the caller passes up to end the command; other write errors say what failed.
pub fn write_line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    stdout_result(writeln!(out, "{}", safe(args)).and_then(|()| out.flush()))
}

/// Lines quote paths, URLs and ids as given, any of which can hold an escape sequence.
fn safe(args: fmt::Arguments<'_>) -> Cow<'static, str> {
    match args.as_str() {
        Some(text) => crate::term::sanitize_message(text),
        None => Cow::Owned(crate::term::sanitize_message(&args.to_string()).into_owned()),
    }
}

/// Bytes on stdout, with the same errors as [`write_line`].
pub fn write_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    stdout_result(out.write_all(bytes).and_then(|()| out.flush()))
}

fn stdout_result(written: io::Result<()>) -> anyhow::Result<()> {
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// "1 request", "2 requests": a number and its noun, for messages.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `eprintln!` that drops the line instead of panicking when stderr is closed.
macro_rules! note {
    ($($arg:tt)*) => { $crate::console::write_note(format_args!($($arg)*)) };
}

/// `println!` that returns an error instead of panicking; a closed stdout is [`StdoutClosed`].
macro_rules! say {
    ($($arg:tt)*) => { $crate::console::write_line(format_args!($($arg)*)) };
}

pub(crate) use {note, say};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_new_once_and_another_is_new_too() {
        assert!(first_time("console test: disk full".into()));
        assert!(!first_time("console test: disk full".into()));
        assert!(first_time("console test: malformed".into()));
    }
}
