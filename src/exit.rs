//! Exit codes, and the one place errors become them.

use crate::cache::CacheError;
use crate::client::TemplateError;

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
    let fixable = error.chain().any(|e| {
        e.is::<UsageError>()
            || e.is::<TemplateError>()
            || matches!(
                e.downcast_ref::<CacheError>(),
                Some(CacheError::Dir { .. } | CacheError::Open { .. } | CacheError::Corrupt { .. })
            )
    });
    if fixable {
        ExitCode::Usage
    } else {
        ExitCode::Failure
    }
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
}
