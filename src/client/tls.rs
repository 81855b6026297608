//! Which certificates an https:// API is checked against, and what a refused handshake
//! tells the user.

use super::ClientConfig;

/// rustls' words for a handshake answered with something that is not TLS: most often a
/// plain-HTTP server behind an https:// template.
pub(super) const NOT_TLS_HINT: &str =
    "; the server does not seem to speak TLS: is the API http://?";

/// Which certificates an https:// API's certificate was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Roots {
    /// The Mozilla roots built in, and this system's store (an https:// API).
    WithSystem,
    /// The built-in roots and the files `SSL_CERT_FILE` / `SSL_CERT_DIR` name, which replace
    /// the system's store.
    WithNamed,
    /// The built-in roots alone: an http:// API redirected to https://.
    Alone,
}

impl Roots {
    /// Read from the environment as rustls-native-certs reads it (which decides whether the
    /// system's store is read): `SSL_CERT_FILE` counts when set, even empty; `SSL_CERT_DIR`
    /// is a list whose empty entries are dropped.
    pub(super) fn for_config(config: &ClientConfig) -> Roots {
        if config.template.origin().scheme() != "https" {
            Roots::Alone
        } else if std::env::var_os("SSL_CERT_FILE").is_some() || !named_dirs().is_empty() {
            Roots::WithNamed
        } else {
            Roots::WithSystem
        }
    }

    /// Why the CA certificates `SSL_CERT_FILE` or `SSL_CERT_DIR` name cannot be used, if so:
    /// the store they replace is not read, and nothing else would say why every https
    /// lookup then fails.
    pub(super) fn unusable_named() -> Option<String> {
        if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
            let shown = crate::term::path(std::path::Path::new(&file));
            match std::fs::read(&file) {
                Err(e) => return Some(format!("SSL_CERT_FILE={shown} cannot be read ({e})")),
                Ok(pem) if memchr::memmem::find(&pem, b"-----BEGIN CERTIFICATE-----").is_none() => {
                    return Some(format!("SSL_CERT_FILE={shown} holds no PEM certificate"));
                }
                Ok(_) => {}
            }
        }
        named_dirs()
            .into_iter()
            .find(|dir| !dir.is_dir())
            .map(|dir| {
                format!(
                    "SSL_CERT_DIR names {}, which is not a directory",
                    crate::term::path(&dir)
                )
            })
    }
}

/// `SSL_CERT_DIR`'s entries (`dir1:dir2`, as OpenSSL reads it), the empty ones dropped.
fn named_dirs() -> Vec<std::path::PathBuf> {
    std::env::var_os("SSL_CERT_DIR")
        .map(|dirs| {
            std::env::split_paths(&dirs)
                .filter(|dir| !dir.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A connect error's innermost cause as the user reads it. rustls says some of its reasons
/// for refusing a certificate in its own enum's names (`UnknownIssuer`,
/// `Other(OtherError(CaUsedAsEndEntity))`) and the names a certificate is for as
/// `DnsName("…")`, and says expiry in seconds: those are put in words; any other cause is
/// kept as it is.
pub(super) fn in_words(cause: &str) -> std::borrow::Cow<'_, str> {
    let Some(reason) = cause.strip_prefix("invalid peer certificate: ") else {
        return cause.into();
    };
    let words = match reason {
        "UnknownIssuer" => "unknown issuer",
        "BadSignature" => "bad signature",
        "Other(OtherError(CaUsedAsEndEntity))" => "a CA certificate",
        "Expired" => "expired",
        "NotValidYet" => "not valid yet",
        "Revoked" => "revoked",
        "BadEncoding" => "malformed",
        "NotValidForName" => "not valid for the API's host name",
        "InvalidPurpose" => "not meant for a server",
        "UnhandledCriticalExtension" => "a critical extension userfetch cannot check",
        other => {
            if let Some(ago) = seconds_in(other, "certificate expired", " seconds ago)") {
                return format!("TLS certificate refused: expired {} ago", roughly(ago)).into();
            }
            if let Some(ahead) =
                seconds_in(other, "certificate not valid yet", " seconds in future)")
            {
                return format!(
                    "TLS certificate refused: not valid for another {} (is this machine's \
                     clock right?)",
                    roughly(ahead)
                )
                .into();
            }
            let mut text = other.to_owned();
            // `DnsName("api.example")` → `api.example`.
            while let Some(start) = text.find("DnsName(\"") {
                let name_at = start + "DnsName(\"".len();
                let Some(len) = text[name_at..].find("\")") else {
                    break;
                };
                let name = text[name_at..name_at + len].to_owned();
                text.replace_range(start..name_at + len + 2, &name);
            }
            return format!("TLS certificate refused: {text}").into();
        }
    };
    format!("TLS certificate refused: {words}").into()
}

/// The count of seconds rustls ends a reason of that `start` with (`… (217804589 seconds
/// ago)`).
fn seconds_in(reason: &str, start: &str, ending: &str) -> Option<u64> {
    let head = reason.strip_prefix(start)?.strip_suffix(ending)?;
    head[head.rfind('(')? + 1..].parse().ok()
}

/// Seconds as a person reads a span of time: in its largest unit (`6 years`, `3 days`).
fn roughly(secs: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (365 * 86_400, "year"),
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let (size, unit) = UNITS
        .into_iter()
        .find(|&(size, _)| secs >= size)
        .unwrap_or((1, "second"));
    let n = secs / size;
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// What a connect error's innermost cause adds for the user, and whether another attempt
/// could help. Neither a refused certificate nor a server that does not speak TLS changes
/// its mind when asked again. rustls says why a certificate was refused in its own enum
/// names; only an unknown issuer is a question of which roots are trusted (an expired
/// certificate or one for another name is not mended by adding a CA).
pub(super) fn connect_hint(cause: &str, roots: Roots) -> (&'static str, bool) {
    if cause.contains("InvalidContentType") {
        return (NOT_TLS_HINT, false);
    }
    // The proxy refused the tunnel for want of credentials: asking again gets the same.
    if cause.contains("proxy authorization required") {
        return (
            "; check the user and password in the proxy variable (http://USER:PASSWORD@HOST:PORT)",
            false,
        );
    }
    if !cause.contains("invalid peer certificate") {
        return ("", true);
    }
    let hint = if cause.contains("CaUsedAsEndEntity") {
        "; the server presents a CA certificate as its own (as a self-signed one made with \
         `openssl req -x509` is): it needs one issued by a CA, or a self-signed one that is no \
         CA (`-addext basicConstraints=critical,CA:FALSE`) named by SSL_CERT_FILE"
    } else if cause.contains("UnknownIssuer") {
        match roots {
            Roots::WithSystem => {
                "; the server's TLS certificate does not chain to a root userfetch trusts (the \
                 Mozilla roots built into it and this system's certificate store; \
                 SSL_CERT_FILE=ca.pem names a file of CA certificates to use instead of the \
                 system's store)"
            }
            Roots::WithNamed => {
                "; the server's TLS certificate does not chain to the Mozilla roots built into \
                 userfetch or to the CA certificates SSL_CERT_FILE / SSL_CERT_DIR name (which \
                 replace this system's store)"
            }
            Roots::Alone => {
                "; the server's TLS certificate does not chain to the Mozilla roots built into \
                 userfetch (this system's store, and the CA certificates SSL_CERT_FILE or \
                 SSL_CERT_DIR name, are read only when --api is https://: put the https:// URL \
                 the API redirects to in --api)"
            }
        }
    } else if cause.contains("BadSignature") {
        "; its signature does not match the key of the trusted certificate named as its \
         issuer (re-issued or self-signed under a trusted name?); SSL_CERT_FILE=cert.pem \
         names the certificates to trust"
    } else {
        ""
    };
    (hint, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untrusted_certificate_is_explained_and_not_retried() {
        use Roots::*;
        for (cause, roots, says) in [
            (
                "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
                WithNamed,
                "presents a CA certificate as its own",
            ),
            (
                "invalid peer certificate: UnknownIssuer",
                WithSystem,
                "SSL_CERT_FILE=ca.pem",
            ),
            (
                "invalid peer certificate: UnknownIssuer",
                WithNamed,
                "replace this system",
            ),
            (
                "invalid peer certificate: UnknownIssuer",
                Alone,
                "only when --api is https://",
            ),
            (
                "invalid peer certificate: BadSignature",
                WithSystem,
                "SSL_CERT_FILE=cert.pem names",
            ),
            ("invalid peer certificate: Expired", WithSystem, ""),
        ] {
            let (hint, retryable) = connect_hint(cause, roots);
            assert!(hint.contains(says), "{cause}: {hint}");
            assert!(!retryable, "{cause}");
        }
        // A CA file cannot mend an expired certificate.
        let hint = connect_hint("invalid peer certificate: Expired", WithSystem).0;
        assert!(!hint.contains("SSL_CERT_FILE"), "{hint}");
        // A CA posing as a server is mended by a certificate that is no CA, self-signed or not.
        let hint = connect_hint(
            "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
            WithSystem,
        )
        .0;
        assert!(
            hint.contains("basicConstraints=critical,CA:FALSE"),
            "{hint}"
        );
        // Speaking TLS to a plain-HTTP server fails the same way every time.
        let (hint, retryable) = connect_hint(
            "received corrupt message of type InvalidContentType",
            WithSystem,
        );
        assert_eq!(hint, NOT_TLS_HINT);
        assert!(!retryable);
        assert_eq!(
            connect_hint("Connection refused (os error 111)", WithSystem),
            ("", true)
        );
        let (hint, retryable) =
            connect_hint("tunnel error: proxy authorization required", WithSystem);
        assert!(hint.contains("USER:PASSWORD"), "{hint}");
        assert!(!retryable);
    }

    /// rustls's enum names and `DnsName("…")` are not what a user should have to read.
    #[test]
    fn a_refused_certificate_is_said_in_words() {
        for (cause, said) in [
            (
                "invalid peer certificate: UnknownIssuer",
                "TLS certificate refused: unknown issuer",
            ),
            (
                "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
                "TLS certificate refused: a CA certificate",
            ),
            (
                "invalid peer certificate: BadSignature",
                "TLS certificate refused: bad signature",
            ),
            (
                "invalid peer certificate: certificate not valid for name \"localhost\"; \
                 certificate is only valid for DnsName(\"a.example\") or DnsName(\"b.example\")",
                "TLS certificate refused: certificate not valid for name \"localhost\"; \
                 certificate is only valid for a.example or b.example",
            ),
            (
                "invalid peer certificate: certificate expired: verification time 1795727789 \
                 (UNIX), but certificate is not valid after 1577923200 (217804589 seconds ago)",
                "TLS certificate refused: expired 6 years ago",
            ),
            (
                "invalid peer certificate: certificate not valid yet: verification time 100 \
                 (UNIX), but certificate is not valid before 190000 (189900 seconds in future)",
                "TLS certificate refused: not valid for another 2 days (is this machine's clock \
                 right?)",
            ),
            (
                "Connection refused (os error 111)",
                "Connection refused (os error 111)",
            ),
        ] {
            assert_eq!(in_words(cause), said);
        }
    }
}
