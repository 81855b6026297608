//! Exit codes, and the one place errors become them.

use crate::cache::CacheError;

/// What the process tells its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Every lookup found its user.
    Success = 0,
    /// Some lookup failed or found no user.
    Failure = 1,
    /// Bad usage or input: the command can't start as given.
    Usage = 2,
    /// Stopped by Ctrl-C (128 + SIGINT).
    Interrupted = 130,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// Input the user can fix: a bad id, file or option value. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Context on an error that ended a run already stopped by Ctrl-C (an output that could not
/// be written on the way out): the error is reported, and the exit code stays 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Errors that mean "fix your input or setup" exit with 2; everything else with 1. A cache
/// that cannot be opened is setup the user can fix (another path, --no-cache); a cache that
/// fails while working is not, so it is a failure like any other.
pub fn code_for(error: &anyhow::Error) -> ExitCode {
    // Context, so asked of the error itself: a link of `chain()` shows context as its text.
    if error.downcast_ref::<Interrupted>().is_some() {
        return ExitCode::Interrupted;
    }
    let fixable = error.chain().any(|e| e.is::<UsageError>())
        || matches!(
            CacheError::in_chain(error),
            Some(
                CacheError::Dir { .. }
                    | CacheError::Open { .. }
                    | CacheError::Corrupt { .. }
                    | CacheError::Foreign { .. }
                    | CacheError::ReadOnly { .. }
            )
        );
    if fixable {
        ExitCode::Usage
    } else {
        ExitCode::Failure
    }
}

/// The error and its causes on one line, like `{:#}`, leaving out a cause that adds nothing:
/// our messages often name their cause already, and SQLite's errors repeat themselves after
/// their code ("file is not a database: Error code 26: file is not a database"). Made safe
/// for a terminal: messages quote what they were given (a URL, a file name), which may hold
/// escape sequences.
pub fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        // Whole, or as the text after its code ("Error code 26: file is not a database");
        // a short tail ("80") could match by chance.
        let tail = part.rsplit_once(": ").map_or("", |(_, tail)| tail);
        if part.is_empty() || text.contains(&part) || (tail.len() >= 12 && text.contains(tail)) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    crate::term::sanitize(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_problems_are_usage_but_runtime_store_errors_are_failures() {
        let path = std::path::PathBuf::from("/x/cache.sqlite3");
        let corrupt = CacheError::Corrupt {
            path: path.clone(),
            source: rusqlite::Error::InvalidQuery,
        };
        let busy = CacheError::Sqlite {
            path,
            source: rusqlite::Error::InvalidQuery,
        };
        assert_eq!(code_for(&corrupt.into()), ExitCode::Usage);
        assert_eq!(
            code_for(&anyhow::Error::from(busy).context("storing")),
            ExitCode::Failure
        );
        assert_eq!(code_for(&usage("bad id")), ExitCode::Usage);
        assert_eq!(code_for(&anyhow::anyhow!("boom")), ExitCode::Failure);
        assert_eq!(
            code_for(&usage("disk full").context(Interrupted).context("writing")),
            ExitCode::Interrupted
        );
    }

    #[test]
    fn causes_already_said_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let io = std::io::Error::from_raw_os_error(21);
        let error = anyhow::Error::new(crate::cache::CacheError::Open {
            path: dir.path().to_owned(),
            source: io,
        });
        let text = describe(&error);
        assert_eq!(text.matches("Is a directory").count(), 1, "{text}");
        // A cause that says something new is kept, after its context.
        let error = anyhow::anyhow!("disk on fire").context("cannot write out.jsonl");
        assert_eq!(describe(&error), "cannot write out.jsonl: disk on fire");
        let error = anyhow::anyhow!("port: 80").context("cannot reach h:8080");
        assert_eq!(describe(&error), "cannot reach h:8080: port: 80");
    }

    #[test]
    fn what_an_error_quotes_cannot_drive_the_terminal() {
        let error = anyhow::anyhow!("cannot open the ids file /tmp/a\u{1b}[2Jb");
        let text = describe(&error);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("/tmp/a\u{fffd}[2Jb"), "{text:?}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.txt");
        std::fs::write(&path, "1\n2\n3\n".repeat(200)).unwrap();
        let Err(error) = crate::cache::Cache::open(&path) else {
            panic!("a text file opened as a cache");
        };
        let error = anyhow::Error::new(error);
        let text = describe(&error);
        assert_eq!(text.matches("not a database").count(), 1, "{text}");
        assert!(text.contains("move it aside"), "{text}");
    }
}
