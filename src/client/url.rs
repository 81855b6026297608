//! The URL template (`http://host/users/{id}`) and how an id goes into it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use thiserror::Error;
use url::Url;

use crate::id::UserId;

/// Everything but RFC 3986's unreserved characters is encoded, so an id can never add a path
/// segment (`/`), start a query (`?`) or fragment (`#`), or smuggle an escape (`%`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const PLACEHOLDER: &str = "{id}";

/// A checked URL template: exactly one `{id}`, inside the path of an http(s) URL.
#[derive(Debug, Clone)]
pub struct UrlTemplate {
    template: String,
    prefix: String,
    suffix: String,
    origin: Url,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("the API URL template '{0}' must contain {{id}} exactly once (found it {1} times)")]
    Placeholder(String, usize),
    #[error("the API URL template '{0}' is not a valid URL: {1}")]
    Invalid(String, String),
    #[error("the API URL template '{0}' must start with http:// or https://")]
    Scheme(String),
    #[error("the API URL template '{0}' names no scheme: write http://{0} (or https://)")]
    NoScheme(String),
    /// Not quoted back: the message would print the password.
    #[error(
        "the API URL template holds a user name or password; pass credentials in USERFETCH_TOKEN instead"
    )]
    Credentials,
    #[error("in the API URL template '{0}', {{id}} must be part of the path")]
    NotInPath(String),
    #[error("the API URL template '{0}' names no host: it must start http://HOST or https://HOST")]
    NoHost(String),
}

/// What to write for an IPv6 address a template names without brackets
/// (`http://::1:8080/…`, which the URL parser reads as an empty host): `[::1]:8080`, or both
/// readings when the last group could be a port or part of the address. `None` when the host
/// is no IPv6 address either way (an IPv4 typo keeps the parser's own words).
fn bare_ipv6(template: &str) -> Option<String> {
    let host = template.split_once("://")?.1.split('/').next()?;
    let is_address = |text: &str| text.parse::<std::net::Ipv6Addr>().is_ok();
    let with_port = host.rsplit_once(':').filter(|(address, port)| {
        !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok()
            && is_address(address)
    });
    match (is_address(host), with_port) {
        (true, Some((address, port))) => Some(format!(
            "[{address}]:{port} (or [{host}] if that is the whole address)"
        )),
        (true, None) => Some(format!("[{host}]")),
        (false, Some((address, port))) => Some(format!("[{address}]:{port}")),
        (false, None) => None,
    }
}

/// Whether the host comes right after `scheme://`, as written. A URL parser following the
/// WHATWG rules, as reqwest's does, skips any number of slashes there: `http:///users/{id}`
/// (the host left out) would be read as the host `users`, and fail as a lookup of that name.
fn host_follows_slashes(template: &str) -> bool {
    let rest = template.split_once(':').map_or("", |(_, rest)| rest);
    rest.strip_prefix("//")
        .and_then(|host| host.chars().next())
        .is_some_and(|c| !matches!(c, '/' | '\\'))
}

impl UrlTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let count = template.matches(PLACEHOLDER).count();
        let Some((prefix, suffix)) = template.split_once(PLACEHOLDER).filter(|_| count == 1) else {
            return Err(TemplateError::Placeholder(template.to_owned(), count));
        };
        // A marker that survives URL parsing unchanged tells us where the id lands.
        const MARKER: &str = "userfetch-id-marker";
        // Without `scheme://`, the URL crate reads `127.0.0.1:8080/…` as relative and
        // `localhost:8080/…` as the scheme `localhost`: both are a host written bare.
        // A host: a name with a dot or a port, an IPv6 address, or localhost (`users/{id}`
        // is a relative path, not a host).
        let written_bare = !template.contains("://") && {
            let host = template.split('/').next().unwrap_or_default();
            host.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                && (host.contains(['.', ':', '[']) || host.eq_ignore_ascii_case("localhost"))
        };
        let probe = Url::parse(&format!("{prefix}{MARKER}{suffix}")).map_err(|e| {
            if written_bare {
                TemplateError::NoScheme(template.to_owned())
            } else if let Some(written) = bare_ipv6(template) {
                TemplateError::Invalid(
                    template.to_owned(),
                    format!("an IPv6 address goes in brackets: {written}"),
                )
            } else {
                TemplateError::Invalid(template.to_owned(), e.to_string())
            }
        })?;
        if !matches!(probe.scheme(), "http" | "https") {
            return Err(if written_bare {
                TemplateError::NoScheme(template.to_owned())
            } else {
                TemplateError::Scheme(template.to_owned())
            });
        }
        if !host_follows_slashes(template) {
            let after_scheme = template.split_once(':').map_or("", |(_, rest)| rest);
            return Err(if after_scheme.starts_with('\\') {
                TemplateError::Invalid(
                    template.to_owned(),
                    "write the slashes after the scheme as //, not \\\\".to_owned(),
                )
            } else {
                TemplateError::NoHost(template.to_owned())
            });
        }
        // Credentials in a URL end up in logs, error messages, --dry-run output and `ps`.
        if !probe.username().is_empty() || probe.password().is_some() {
            return Err(TemplateError::Credentials);
        }
        // The URL is built from its parsed, normalised form (spaces trimmed or escaped, dot
        // segments resolved), as reqwest would send it: the direct HTTP/2 path sends the text
        // as it is, and both must ask for the same resource.
        let Some((prefix, suffix)) = probe.as_str().split_once(MARKER) else {
            return Err(TemplateError::Invalid(
                template.to_owned(),
                "a '..' segment after {id} removes it from the path".to_owned(),
            ));
        };
        if !probe.path().contains(MARKER) || suffix.contains(MARKER) {
            return Err(TemplateError::NotInPath(template.to_owned()));
        }
        let mut origin = probe.clone();
        origin.set_path("/");
        origin.set_query(None);
        origin.set_fragment(None);
        Ok(UrlTemplate {
            template: template.to_owned(),
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            origin,
        })
    }

    /// The URL for one id, with the id as a single percent-encoded path segment.
    pub fn url_for(&self, id: &UserId) -> String {
        let encoded = utf8_percent_encode(id.as_str(), SEGMENT);
        let mut url =
            String::with_capacity(self.prefix.len() + id.as_str().len() + self.suffix.len());
        url.push_str(&self.prefix);
        url.extend(encoded);
        url.push_str(&self.suffix);
        url
    }

    /// The template as the user gave it; also the cache's namespace, so records from two APIs
    /// never mix. Not the normalised form: caches and batch jobs made before URLs were
    /// normalised are keyed by this text.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// `scheme://host:port/`, where the health check goes.
    pub fn origin(&self) -> &Url {
        &self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn builds_the_url_for_a_plain_id() {
        let t = UrlTemplate::parse("http://127.0.0.1:8080/users/{id}").unwrap();
        assert_eq!(t.url_for(&id("42")), "http://127.0.0.1:8080/users/42");
        assert_eq!(t.origin().as_str(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn keeps_the_query_after_the_id() {
        let t = UrlTemplate::parse("http://h/api/users/{id}?fields=all").unwrap();
        assert_eq!(t.url_for(&id("7")), "http://h/api/users/7?fields=all");
    }

    #[test]
    fn hostile_ids_stay_one_path_segment() {
        let t = UrlTemplate::parse("http://h/users/{id}").unwrap();
        for (raw, want) in [
            ("a/b", "a%2Fb"),
            ("1?x=y", "1%3Fx%3Dy"),
            ("#", "%23"),
            ("%2e%2e", "%252e%252e"),
            ("a b", "a%20b"),
            ("ü", "%C3%BC"),
            ("...", "..."),
        ] {
            let url = t.url_for(&id(raw));
            assert_eq!(url, format!("http://h/users/{want}"));
            let parsed = Url::parse(&url).unwrap();
            assert_eq!(parsed.path_segments().unwrap().count(), 2, "{raw}");
            assert_eq!(parsed.query(), None, "{raw}");
            assert_eq!(parsed.fragment(), None, "{raw}");
        }
    }

    #[test]
    fn urls_are_built_from_the_normalised_template() {
        for (template, want) in [
            (" http://h/users/{id} ", "http://h/users/7"),
            ("http://h/./users/{id}", "http://h/users/7"),
            ("http://h/a/../users/{id}", "http://h/users/7"),
            ("HTTP://H:80/users/{id}?a=b c", "http://h/users/7?a=b%20c"),
        ] {
            let t = UrlTemplate::parse(template).unwrap();
            assert_eq!(t.url_for(&id("7")), want, "{template}");
            assert_eq!(t.as_str(), template, "the template is still shown as given");
        }
    }

    #[test]
    fn a_dot_segment_that_swallows_the_id_is_named() {
        let err = UrlTemplate::parse("http://h/users/{id}/../2").unwrap_err();
        assert!(err.to_string().contains("'..' segment"), "{err}");
    }

    #[test]
    fn rejects_credentials_in_the_url() {
        for t in ["http://user:pass@h/{id}", "https://user@h/{id}"] {
            assert!(
                matches!(UrlTemplate::parse(t), Err(TemplateError::Credentials)),
                "{t}"
            );
        }
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(matches!(
            UrlTemplate::parse("http://h/users/"),
            Err(TemplateError::Placeholder(_, 0))
        ));
        assert!(matches!(
            UrlTemplate::parse("http://h/{id}/{id}"),
            Err(TemplateError::Placeholder(_, 2))
        ));
        assert!(matches!(
            UrlTemplate::parse("ftp://h/{id}"),
            Err(TemplateError::Scheme(_))
        ));
        assert!(matches!(
            UrlTemplate::parse("not a url {id}"),
            Err(TemplateError::Invalid(..))
        ));
        // An IPv6 address without its brackets is said to need them.
        for (bare, written) in [
            (
                "http://::1:8080/users/{id}",
                "[::1]:8080 (or [::1:8080] if that is the whole address)",
            ),
            ("http://fe80::1/users/{id}", "[fe80::1]"),
            (
                "http://fe80:0:0:0:0:0:0:1:8080/users/{id}",
                "[fe80:0:0:0:0:0:0:1]:8080",
            ),
            ("http://::ffff:1.2.3.4/users/{id}", "[::ffff:1.2.3.4]"),
        ] {
            assert_eq!(
                UrlTemplate::parse(bare).err(),
                Some(TemplateError::Invalid(
                    bare.to_owned(),
                    format!("an IPv6 address goes in brackets: {written}")
                )),
                "{bare}"
            );
        }
        // No IPv6 address either way: the parser's own words, no hint about brackets.
        for typo in [
            "http://127.0.0.1:8080:/users/{id}",
            "http://a:b:c/users/{id}",
            "http://10.0.0.1:80:80/users/{id}",
        ] {
            let error = UrlTemplate::parse(typo).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| !e.contains("brackets")),
                "{typo}: {error:?}"
            );
        }
        assert!(UrlTemplate::parse("http://[::1]:8080/users/{id}").is_ok());
        // A relative path is no bare host.
        for relative in ["users/{id}", "api/users/{id}"] {
            assert!(
                matches!(
                    UrlTemplate::parse(relative),
                    Err(TemplateError::Invalid(..))
                ),
                "{relative}"
            );
        }
        // A host written without its scheme, however the URL crate reads it.
        for bare in [
            "127.0.0.1:8080/users/{id}",
            "localhost:8080/users/{id}",
            "api.example.com/users/{id}",
            "[::1]:8080/users/{id}",
            "localhost/users/{id}",
        ] {
            let err = UrlTemplate::parse(bare).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "the API URL template '{bare}' names no scheme: write http://{bare} (or https://)"
                )
            );
        }
        assert!(matches!(
            UrlTemplate::parse("http://{id}/users"),
            Err(TemplateError::Invalid(..) | TemplateError::NotInPath(_))
        ));
        assert!(matches!(
            UrlTemplate::parse("http://h/users?id={id}"),
            Err(TemplateError::NotInPath(_))
        ));
    }

    /// A URL parser takes `http:///users/{id}` for the host `users`: the host left out is
    /// said as such, not found out as a failed lookup of that name.
    #[test]
    fn a_template_without_a_host_is_refused() {
        for template in [
            "http:///users/{id}",
            "http:users/{id}",
            "https:/api.example.com/{id}",
        ] {
            let err = UrlTemplate::parse(template).unwrap_err();
            assert_eq!(
                err,
                TemplateError::NoHost(template.to_owned()),
                "{template}"
            );
            assert!(err.to_string().contains("names no host"), "{err}");
        }
        // Backslashes name the host to a URL parser, but are said to be written as slashes.
        let err = UrlTemplate::parse("http:\\\\h/{id}").unwrap_err();
        assert!(err.to_string().contains("as //, not \\\\"), "{err}");
        for template in ["HTTP://h/{id}", " http://h/{id}", "https://[::1]:8/u/{id}"] {
            assert!(UrlTemplate::parse(template).is_ok(), "{template}");
        }
    }
}
