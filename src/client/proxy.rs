//! Which proxy the HTTP library sends a request through, read from the environment as it
//! reads it, and what is wrong with the proxy variables it would drop without a word.

use hyper_util::client::proxy::matcher::Matcher;

/// The proxy a request to `url` goes through, if any, read from the environment
/// (`http_proxy`, `https_proxy`, `all_proxy`, `NO_PROXY`, …) by the same matcher reqwest
/// uses, and shown without its credentials. Only reqwest's transport uses it: the direct
/// HTTP/2 connection and the question about HTTP/2 would go around it.
pub fn proxy_for(url: &::url::Url) -> Option<String> {
    let uri: hyper::Uri = url.as_str().parse().ok()?;
    let matcher = Matcher::from_system();
    let proxy = matcher.intercept(&uri)?;
    let proxy = proxy.uri();
    Some(match (proxy.scheme_str(), proxy.host()) {
        (Some(scheme), Some(host)) => match proxy.port_u16() {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        },
        _ => "a proxy".to_owned(),
    })
}

/// What is wrong with the proxy variables, as reqwest reads them (hyper-util's matcher):
/// of `HTTP_PROXY` and `http_proxy` (and the `HTTPS_`, `ALL_` pairs) the first one set is
/// the one read, and a value that is no proxy URL (`::bad::`, `ftp://…`) is dropped without
/// a word, the other of the pair unread. Each problem as a line to say; values are not
/// quoted (they may hold a password).
pub fn proxy_variable_problems() -> Vec<String> {
    let Ok(somewhere) = "http://example.com/".parse::<hyper::Uri>() else {
        return Vec::new();
    };
    let usable = |value: &str| {
        Matcher::builder()
            .all(value.to_owned())
            .build()
            .intercept(&somewhere)
            .is_some()
    };
    const PAIRS: [(&str, &str); 4] = [
        ("HTTP_PROXY", "http_proxy"),
        ("HTTPS_PROXY", "https_proxy"),
        ("ALL_PROXY", "all_proxy"),
        ("NO_PROXY", "no_proxy"),
    ];
    // Under CGI (REQUEST_METHOD set) none is read: HTTP_PROXY could come from a request's
    // `Proxy:` header (httpoxy).
    if std::env::var_os("REQUEST_METHOD").is_some() {
        return match PAIRS
            .iter()
            .flat_map(|(first, second)| [first, second])
            .find(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
        {
            Some(name) => vec![format!(
                "REQUEST_METHOD is set (as under CGI), so {name} and every other proxy variable \
                 is not read"
            )],
            None => Vec::new(),
        };
    }
    let mut problems = Vec::new();
    for (first, second) in PAIRS {
        // The one read, and the other when it is set to something it would have said.
        let ((name, value), shadowed) = match (std::env::var(first), std::env::var(second)) {
            (Ok(value), other) => (
                (first, value),
                other.is_ok_and(|v| !v.is_empty()).then_some(second),
            ),
            (Err(_), Ok(value)) => ((second, value), None),
            (Err(_), Err(_)) => continue,
        };
        if value.trim().is_empty() {
            if let Some(other) = shadowed {
                problems.push(format!(
                    "{name} is set but empty, so {other} is not read (it is read only when \
                     {name} is unset)"
                ));
            }
        } else if first == "NO_PROXY" {
            continue;
        } else if !usable(&value) {
            problems.push(match shadowed {
                Some(other) => format!(
                    "{name} holds no usable proxy URL (http://HOST:PORT): it is ignored, and so \
                     is {other}, read only when {name} is unset"
                ),
                None => {
                    format!("{name} holds no usable proxy URL (http://HOST:PORT): it is ignored")
                }
            });
        } else if let Some(default) = port_out_of_range(&value) {
            problems.push(format!(
                "{name} names a port that is no port (1 to 65535): the proxy is asked on port \
                 {default} instead"
            ));
        }
    }
    problems
}

/// When a proxy URL's port is written but is no port (`http://proxy:99999`, `:0`), the port
/// the proxy is asked on instead: the URL is read without it, so its scheme's default (80,
/// or 443 for https://), where something else may answer.
fn port_out_of_range(value: &str) -> Option<u16> {
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let uri = with_scheme.parse::<hyper::Uri>().ok()?;
    let authority = uri.authority()?;
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, host_port)| host_port);
    // After an IPv6 address's brackets, or after the host name.
    let after_host = match host_port.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(_, after)| after),
        None => host_port.find(':').map_or("", |at| &host_port[at..]),
    };
    let port = after_host.strip_prefix(':').unwrap_or("");
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    (!port.is_empty() && !port.parse::<u16>().is_ok_and(|p| p > 0)).then_some(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_that_is_no_port_is_seen_wherever_it_is_written() {
        for (bad, default) in [
            ("http://127.0.0.1:99999", 80),
            ("http://u:p@proxy.example:65536/", 80),
            ("proxy.example:123456", 80),
            ("http://[::1]:70000", 80),
            ("http://proxy.example:0", 80),
            ("https://proxy.example:99999", 443),
        ] {
            assert_eq!(port_out_of_range(bad), Some(default), "{bad}");
        }
        for fine in [
            "http://127.0.0.1:3128",
            "http://proxy.example",
            "proxy.example:8080",
            "http://[::1]:8080",
            "http://[::1]",
            "http://u:p@proxy.example:1/",
            "::bad::",
        ] {
            assert_eq!(port_out_of_range(fine), None, "{fine}");
        }
    }
}
