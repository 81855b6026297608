//! Why one attempt failed: the classification of an answer that is no record, and what the
//! API's error body says, quoted short and without the token.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderValue;

use super::tls::NOT_TLS_HINT;
use super::{ErrorKind, FetchError, parse_retry_after};

/// Why one attempt failed, and whether another could succeed.
pub(super) struct AttemptFailure {
    pub(super) kind: ErrorKind,
    pub(super) detail: String,
    pub(super) retryable: bool,
    pub(super) retry_after: Option<Duration>,
    /// 429 or 503: the API's own request to slow down.
    pub(super) pushed_back: bool,
    /// No connection within `--connect-timeout`.
    pub(super) connect_timed_out: bool,
}

impl AttemptFailure {
    /// The error a lookup ends with after `attempts` attempts, this the last.
    pub(super) fn into_error(self, attempts: u32) -> FetchError {
        FetchError::new(self.kind, attempts, self.detail)
    }

    pub(super) fn fatal(kind: ErrorKind, detail: impl Into<String>) -> Self {
        AttemptFailure {
            kind,
            detail: detail.into(),
            retryable: false,
            retry_after: None,
            pushed_back: false,
            connect_timed_out: false,
        }
    }

    pub(super) fn transient(kind: ErrorKind, detail: impl Into<String>) -> Self {
        AttemptFailure {
            retryable: true,
            ..AttemptFailure::fatal(kind, detail)
        }
    }

    /// A failure at a redirect's target, said as such: it would read as the API's own, and
    /// the hint about the API's scheme would point at the wrong URL.
    /// `secret`: the token, never shown, though the API may have put it in the target.
    pub(super) fn after_redirect(mut self, target: &::url::Url, secret: Option<&str>) -> Self {
        // Not started again for a stop: that would ask the first hop again, one request
        // more at the API than the attempts say.
        self.connect_timed_out = false;
        let mut detail = self
            .detail
            .replace(NOT_TLS_HINT, "; the server does not seem to speak TLS");
        // The target's own failure names its host, where the API may have put the token
        // too (lowercased by the URL parser).
        if let Some(secret) = secret {
            detail = mask_any_case(&detail, secret);
        }
        self.detail = format!(
            "after a redirect to {}: {detail}",
            crate::term::fit(&shown_target(target, secret), 100)
        );
        self
    }
}

/// `text` with every copy of `secret` masked, whatever the case of its ASCII letters.
fn mask_any_case(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    // ASCII lowercasing keeps every byte where it was, so positions found in the lowered
    // text are positions in `text`, on character boundaries (a match starts and ends where
    // the secret's characters do).
    let lowered = text.to_ascii_lowercase();
    let wanted = secret.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(at) = lowered[from..].find(&wanted) {
        out.push_str(&text[from..from + at]);
        out.push_str("***");
        from += at + wanted.len();
    }
    out.push_str(&text[from..]);
    out
}

/// A redirect's target as an error shows it: without the credentials, query or fragment
/// the API may have put there (a password, the token, a signed link's signature), and
/// only its origin where the path still holds the token.
fn shown_target(target: &::url::Url, secret: Option<&str>) -> String {
    let mut shown = target.clone();
    // Only a URL that cannot have them refuses these, and then it has none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    let shown = shown.to_string();
    let Some(secret) = secret.filter(|secret| still_holds(&shown, secret)) else {
        return shown;
    };
    let origin = target.origin().ascii_serialization();
    if still_holds(&origin, secret) {
        "another host".to_owned()
    } else {
        origin
    }
}

/// Reads a body nobody needs (a 404's, a redirect's) to its end, so that the HTTP/1.1
/// connection goes back to the pool: dropped unread, it is closed, and a batch of mostly
/// unknown ids opened a connection per id. A body over 64 KiB, or one still arriving after
/// [`SAID_WAIT`], is not worth the wait; errors only cost the connection. Returns the body's
/// first [`SAID_BYTES`], for an error's message.
pub(super) async fn drain(response: &mut reqwest::Response) -> Vec<u8> {
    let mut said = Vec::new();
    let read_all = async {
        let mut read = 0;
        while read <= 64 * 1024 {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = SAID_BYTES.saturating_sub(said.len());
                    said.extend_from_slice(&chunk[..room.min(chunk.len())]);
                }
                Ok(None) | Err(_) => break,
            }
        }
    };
    // Bounded apart from the attempt's deadline: a body that trickles (or promises more
    // than it sends) would otherwise turn a 404 into a timeout, retried, and a 503 into one
    // without its Retry-After.
    let _ = tokio::time::timeout(SAID_WAIT, read_all).await;
    said
}

/// How much of an error answer's body is read for its message: enough for a JSON error with
/// a long message to parse whole.
pub(super) const SAID_BYTES: usize = 16 * 1024;
/// How much of it the message quotes, in terminal columns, before the mark of a cut.
const SAID_COLUMNS: usize = 200;
/// How long an error body gets to arrive: its status is the answer, and the body only a
/// message.
pub(super) const SAID_WAIT: Duration = Duration::from_millis(200);

/// What an error answer's body says, as one short line: `unknown fault 'x'` tells more than
/// `400 Bad Request`. Nothing for an empty body, `{}`, or an HTML page (markup, not a
/// message). `secret` (the token) is never quoted: some APIs echo the credential they refused.
fn said(body: &[u8], secret: Option<&str>) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let parsed = serde_json::from_str::<serde_json::Value>(&text).ok();
    // `{}`, `[]`, `{"message": null}`: JSON that holds nothing to say.
    let says_nothing = |v: &serde_json::Value| match v {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.trim().is_empty(),
        serde_json::Value::Object(o) => o.values().all(|v| {
            v.is_null()
                || v == ""
                || v.as_object().is_some_and(|o| o.is_empty())
                || v.as_array().is_some_and(|a| a.is_empty())
        }),
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    };
    // `{"error": {"message": null}}`, as some APIs nest it, says as little.
    let nested_says_nothing = |v: &serde_json::Value| {
        v.as_object().is_some_and(|o| o.len() == 1)
            && v.get("error")
                .is_some_and(|e| e.is_object() && says_nothing(e))
    };
    if parsed
        .as_ref()
        .is_some_and(|v| says_nothing(v) || nested_says_nothing(v))
    {
        return None;
    }
    // An API's JSON error names its message; quoted as text, the braces and quotes say
    // nothing. A body cut at SAID_BYTES is no whole JSON value and is quoted as it stands.
    let message = parsed.and_then(|value| {
        // `{"error": {"message": …}}` as some APIs nest it, too.
        let nested = value.get("error").filter(|e| e.is_object());
        [&value]
            .into_iter()
            .chain(nested)
            .flat_map(|v| ["message", "error", "detail", "title"].map(|key| v.get(key)))
            .find_map(|field| {
                field?
                    .as_str()
                    .filter(|text| !text.trim().is_empty())
                    .map(str::to_owned)
            })
    });
    let mut text = message.map_or(text, Into::into);
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        // A token this short would turn up inside ordinary words ("bad" holds "a"), and the
        // places it was masked would show it: the text is not quoted at all.
        if secret.chars().count() < 8 && text.contains(secret) {
            return None;
        }
        text = redact(&text, secret).into();
        // Echoed in another form (in another case, or percent-encoded as in a quoted URL):
        // not found where it stands, so the text is not quoted at all.
        if still_holds(&text, secret) {
            return None;
        }
    }
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() || line.starts_with('<') {
        return None;
    }
    // Cut by the columns it takes on a terminal (200 CJK characters are 400): the text kept,
    // and the mark saying it was cut.
    Some(crate::term::fit(&line, SAID_COLUMNS + 1))
}

/// Whether `text` holds `secret` in letters of another case or percent-encoded.
fn still_holds(text: &str, secret: &str) -> bool {
    let secret = secret.to_lowercase();
    let decoded = percent_encoding::percent_decode_str(text).decode_utf8_lossy();
    [text, &decoded]
        .iter()
        .any(|form| form.to_lowercase().contains(&secret))
}

/// `text` with `secret` as `***`: whole, JSON-escaped (`\/` in a base64 token), or cut
/// short at the end of a body read only in part (its first 4 bytes or more there, and a
/// character the cut split, which reads as U+FFFD).
fn redact(text: &str, secret: &str) -> String {
    let mut text = text.replace(secret, "***");
    let escaped = secret.replace('/', "\\/");
    if escaped != secret {
        text = text.replace(&escaped, "***");
    }
    let kept = text.trim_end_matches(crate::term::REPLACEMENT).len();
    let cut = (4..secret.len())
        .rev()
        .filter(|&n| secret.is_char_boundary(n))
        .find(|&n| text[..kept].ends_with(&secret[..n]));
    if let Some(n) = cut {
        text.truncate(kept - n);
        text.push_str("***");
    }
    text
}

/// Whether a request carried `USERFETCH_TOKEN`, for what a 401 or 403 suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    Sent,
    NotSet,
    /// Never sent there: the request went to another origin after a redirect.
    Withheld,
}

/// `body`: the start of the answer's body, quoted in the message when it says something,
/// without `secret` (see [`said`]).
pub(super) fn status_failure(
    status: StatusCode,
    retry_after: Option<&HeaderValue>,
    token: Token,
    body: &[u8],
    secret: Option<&str>,
) -> AttemptFailure {
    let mut shown = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    if let Some(said) = said(body, secret) {
        shown = format!("{shown}, saying \"{said}\"");
    }
    let retry_after = retry_after
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    match status {
        StatusCode::NOT_FOUND => {
            AttemptFailure::fatal(ErrorKind::NotFound, "not found (the API answered 404)")
        }
        StatusCode::TOO_MANY_REQUESTS => AttemptFailure {
            retry_after,
            pushed_back: true,
            ..AttemptFailure::transient(
                ErrorKind::RateLimited,
                format!("rate limited: server answered {shown}"),
            )
        },
        s if s.is_server_error() => AttemptFailure {
            retry_after,
            pushed_back: s == StatusCode::SERVICE_UNAVAILABLE,
            ..AttemptFailure::transient(ErrorKind::ServerError, format!("server answered {shown}"))
        },
        // The server gave up waiting for the request: asking again may well work.
        StatusCode::REQUEST_TIMEOUT => AttemptFailure {
            retry_after,
            ..AttemptFailure::transient(ErrorKind::Timeout, format!("server answered {shown}"))
        },
        // 401 is about the credentials, whoever is asked for; 403 often about one record (a
        // private user), so only 401 is `unauthorized`, which stops a batch after a streak:
        // a rerun would meet its private users in a row and never finish.
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => AttemptFailure::fatal(
            if status == StatusCode::UNAUTHORIZED {
                ErrorKind::Unauthorized
            } else {
                ErrorKind::Rejected
            },
            match token {
                Token::Sent => format!("server answered {shown}; check USERFETCH_TOKEN"),
                Token::NotSet => {
                    format!(
                        "server answered {shown}; if the API needs a token, set USERFETCH_TOKEN"
                    )
                }
                Token::Withheld => format!(
                    "server answered {shown} after a redirect to another origin (host, port or scheme), which USERFETCH_TOKEN is never sent to"
                ),
            },
        ),
        _ => AttemptFailure::fatal(ErrorKind::Rejected, format!("server answered {shown}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token the API put in a redirect's host name (lowercased there by the URL parser)
    /// is neither named nor left in what failed at that host.
    #[test]
    fn a_redirect_to_a_host_named_after_the_token_names_no_host() {
        let target = ::url::Url::parse("http://SeCrEt123.invalid/users/1").unwrap();
        let failure = AttemptFailure::fatal(
            ErrorKind::Connection,
            "cannot connect to secret123.invalid:80 (no such host)",
        )
        .after_redirect(&target, Some("SeCrEt123"));
        assert_eq!(
            failure.detail,
            "after a redirect to another host: cannot connect to ***.invalid:80 (no such host)"
        );
    }

    #[test]
    fn a_secret_is_masked_in_any_case() {
        assert_eq!(
            mask_any_case(
                "cannot connect to secret123.invalid:80 (SECRET123)",
                "SeCrEt123"
            ),
            "cannot connect to ***.invalid:80 (***)"
        );
        assert_eq!(mask_any_case("héllo wörld", "WÖ"), "héllo wörld");
        assert_eq!(mask_any_case("nothing", ""), "nothing");
    }

    #[test]
    fn the_token_is_redacted_whole_escaped_or_cut_short() {
        let token = "ab/cd+ef==";
        assert_eq!(
            redact("bad token: Bearer ab/cd+ef==.", token),
            "bad token: Bearer ***."
        );
        assert_eq!(redact(r#"{"t":"ab\/cd+ef=="}"#, token), r#"{"t":"***"}"#);
        assert_eq!(redact("echo: Bearer ab/cd", token), "echo: Bearer ***");
        // Three characters could be anything.
        assert_eq!(redact("echo: ab/", token), "echo: ab/");
        // A cut inside a character of a non-ASCII token, read as U+FFFD.
        assert_eq!(redact("echo: ääää\u{fffd}", "ääääöööö"), "echo: ***");
        // A replacement character of the API's own stays when no token is cut there.
        assert_eq!(redact("odd \u{fffd}", "ääääöööö"), "odd \u{fffd}");
    }

    #[test]
    fn a_token_echoed_in_another_form_is_not_quoted() {
        let token = "Secret+Tok/en=";
        for echoed in [
            "bad token secret+tok/en=",
            "bad token SECRET+TOK/EN=",
            "see /auth?t=Secret%2BTok%2Fen%3D",
            "see /auth?t=Secret%2BTok/en%3D",
        ] {
            assert_eq!(said(echoed.as_bytes(), Some(token)), None, "{echoed}");
        }
        // Found as it was sent, it is masked and the rest quoted.
        assert_eq!(
            said(b"bad token Secret+Tok/en=", Some(token)),
            Some("bad token ***".into())
        );
    }

    #[test]
    fn an_error_body_is_quoted_short_and_on_one_line() {
        assert_eq!(
            said(b"  no such\n user \t", None),
            Some("no such user".into())
        );
        assert_eq!(
            said(br#"{"error": "quota used up", "code": 7}"#, None),
            Some("quota used up".into())
        );
        assert_eq!(said(br#"{"code": 7}"#, None), Some(r#"{"code": 7}"#.into()));
        assert_eq!(
            said(br#"{"error": {"code": 5, "message": "nested msg"}}"#, None),
            Some("nested msg".into())
        );
        let long = format!(r#"{{"message": "{}"}}"#, "x".repeat(5000));
        assert_eq!(
            said(long.as_bytes(), None),
            Some(format!("{}…", "x".repeat(SAID_COLUMNS)))
        );
        assert_eq!(said(b"<html><body>Bad Gateway</body></html>", None), None);
        assert_eq!(said(b" \n ", None), None);
        let long = said("é".repeat(300).as_bytes(), None).unwrap();
        assert_eq!(long, format!("{}…", "é".repeat(SAID_COLUMNS)));
        // Wide characters take two columns each.
        let wide = said("語".repeat(300).as_bytes(), None).unwrap();
        assert_eq!(wide, format!("{}…", "語".repeat(SAID_COLUMNS / 2)));
        // Nothing to quote in an empty object or list, or in empty fields.
        assert_eq!(said(b"{}", None), None);
        assert_eq!(said(b" [ ] ", None), None);
        assert_eq!(said(br#"{"message": null}"#, None), None);
        assert_eq!(said(br#"{"message": {}, "detail": null}"#, None), None);
        assert_eq!(said(br#"{"error": {"message": null}}"#, None), None);
        // An empty message hides no other.
        assert_eq!(
            said(br#"{"message": "", "error": "quota exceeded"}"#, None),
            Some("quota exceeded".into())
        );
        // A short token is not masked letter by letter: the text is not quoted.
        assert_eq!(said(br#"{"message": "bad token a"}"#, Some("a")), None);
        assert_eq!(
            said(br#"{"message": "bad token"}"#, Some("a")),
            None,
            "'bad' holds the token"
        );
        assert_eq!(said(br#"{"message": "no"}"#, Some("zz")), Some("no".into()));
        // The token, echoed back by the API that refused it, is not repeated.
        assert_eq!(
            said(
                br#"{"message": "bad token: Bearer sekrit123"}"#,
                Some("sekrit123")
            ),
            Some("bad token: Bearer ***".into())
        );
    }
}
