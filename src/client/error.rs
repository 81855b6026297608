//! The one error a lookup can end with, classified so callers can branch on it.

use std::fmt;

use serde::Serialize;

/// What went wrong, coarsely: enough to decide what to do next (retry, report, give up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The API answered 404: the user does not exist. Never retried.
    NotFound,
    /// The API answered 429 on every attempt.
    RateLimited,
    /// The API answered 5xx on every attempt.
    ServerError,
    /// No complete answer within `--timeout`, or the server gave up waiting (408).
    Timeout,
    /// Could not connect, or the connection broke before a response came.
    Connection,
    /// The body was cut off or is not JSON.
    BadBody,
    /// The body is larger than `--max-body`.
    TooLarge,
    /// The API refused the request's credentials (401), or a proxy asked for its own (407).
    /// Never retried; it holds for every id, so batch stops after a run of them.
    Unauthorized,
    /// Another 4xx/3xx answer (400, 403, 410, too many redirects …). Never retried: asking
    /// again won't change the answer.
    Rejected,
    /// The lookup was cancelled before it finished.
    Cancelled,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
            ErrorKind::BadBody => "bad_body",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed lookup: its kind, a message a person can act on, and how many attempts were made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FetchError {
    pub kind: ErrorKind,
    pub attempts: u32,
    detail: String,
}

impl FetchError {
    pub fn new(kind: ErrorKind, attempts: u32, detail: impl Into<String>) -> Self {
        FetchError {
            kind,
            attempts,
            detail: detail.into(),
        }
    }

    pub fn cancelled(attempts: u32) -> Self {
        FetchError::new(ErrorKind::Cancelled, attempts, "cancelled")
    }

    /// The message without the attempt count.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.detail, AfterAttempts(self.attempts))
    }
}

/// "; gave up after 3 attempts" when a lookup was tried more than once, nothing otherwise: how every
/// failure message ends, whether it comes from a lookup or from the store.
pub struct AfterAttempts(pub u32);

impl fmt::Display for AfterAttempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 1 {
            write!(f, "; gave up after {} attempts", self.0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_attempts_only_when_there_were_several() {
        let once = FetchError::new(ErrorKind::NotFound, 1, "not found");
        assert_eq!(once.to_string(), "not found");
        let many = FetchError::new(
            ErrorKind::ServerError,
            4,
            "server answered 503 Service Unavailable",
        );
        assert_eq!(
            many.to_string(),
            "server answered 503 Service Unavailable; gave up after 4 attempts"
        );
    }
}
