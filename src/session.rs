//! Turning the global options into a working engine: which API, which client, which cache.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::cache::Cache;
use crate::cli::GlobalOpts;
use crate::client::{Client, ClientConfig, H2c, RetryPolicy, UrlTemplate};
use crate::engine::Engine;
use crate::exit::usage;
use crate::server::{self, ServerConfig, ServerHandle};

/// The environment variable the API token is read from. Never an option: argv is visible to
/// every user of the machine through `ps`.
pub const TOKEN_VAR: &str = "USERFETCH_TOKEN";

/// The cache namespace for the embedded API, whose port changes every run.
const EMBEDDED_NAMESPACE: &str = "embedded-demo-api";

/// Latency of the embedded demo API: hundreds of milliseconds, jittered, like a real API on
/// a bad day, so the difference between blocking and not blocking is there to see.
pub const EMBEDDED_LATENCY: Duration = Duration::from_millis(300);
pub const EMBEDDED_JITTER: Duration = Duration::from_millis(400);

/// The cache file the options name, `None` with `--no-cache`.
pub fn cache_path(opts: &GlobalOpts) -> anyhow::Result<Option<PathBuf>> {
    if opts.no_cache {
        return Ok(None);
    }
    match &opts.cache {
        Some(path) => Ok(Some(path.clone())),
        None => Cache::default_path()
            .context("no cache directory is known for this user; pass --cache PATH or --no-cache")
            .map(Some),
    }
}

/// A ready engine, and the embedded server when there is one (kept alive with the session).
pub struct Session {
    pub engine: Engine,
    pub embedded: Option<ServerHandle>,
    /// How many requests at once the API takes on its HTTP/2 connection, when batch asked
    /// and it answered that it speaks HTTP/2.
    pub http2_streams: Option<u32>,
    /// What became of batch's question about HTTP/2 when no answer came: "could not be
    /// reached (why)" (refused, no such host) or "did not answer within …". The protocol is
    /// then a guess, and the dry run says so.
    pub unreached: Option<String>,
}

/// How long a batch waits to learn whether an http:// API speaks HTTP/2 before it takes
/// HTTP/1.1: an answer is a connection and one round trip.
const HTTP2_PROBE_LIMIT: Duration = Duration::from_secs(2);

/// [`HTTP2_PROBE_LIMIT`], or less when the options allow an attempt less: asking takes a
/// connection and a round trip, which neither `--connect-timeout` nor `--timeout` would wait
/// out longer for a lookup.
fn probe_limit(opts: &GlobalOpts) -> Duration {
    HTTP2_PROBE_LIMIT
        .min(opts.connect_timeout)
        .min(opts.timeout)
}

/// What became of the question about HTTP/2 when no answer came (see `Session::unreached`).
fn unanswered(answer: &H2c, limit: Duration) -> Option<String> {
    match answer {
        H2c::Unreachable(why) => Some(format!("could not be reached ({why})")),
        H2c::NoAnswer => Some(format!(
            "did not answer within {}",
            humantime::format_duration(limit)
        )),
        H2c::Speaks { .. } | H2c::DoesNot => None,
    }
}

impl Session {
    /// Validates the options, starts the embedded API if no `--api` was given, opens the cache.
    pub async fn start(opts: &GlobalOpts) -> anyhow::Result<Session> {
        Session::start_with(opts, false).await
    }

    /// [`Session::start`] for many lookups (batch): an http:// API is asked once whether it
    /// speaks cleartext HTTP/2, which carries them all on one connection, unless `--http1` or
    /// `--http2` says which to speak or a proxy is set. [`Session::http2_streams`] says how
    /// many it takes at once.
    pub async fn start_for_many(opts: &GlobalOpts) -> anyhow::Result<Session> {
        Session::start_with(opts, true).await
    }

    async fn start_with(opts: &GlobalOpts, ask_http2: bool) -> anyhow::Result<Session> {
        // `USERFETCH_API=` (set but empty) reads as unset, as such variables usually do.
        let api = opts.api.as_deref().filter(|api| !api.trim().is_empty());
        let (template, namespace, embedded) = match api {
            Some(api) => {
                let template = UrlTemplate::parse(api).map_err(|e| {
                    // Set in the environment, the value is not on the command line to look at.
                    let error = usage(e.to_string());
                    if std::env::var("USERFETCH_API").is_ok_and(|v| v == api) {
                        error.context("in USERFETCH_API")
                    } else {
                        error
                    }
                })?;
                let namespace = template.as_str().to_owned();
                (template, namespace, None)
            }
            None => {
                let config = ServerConfig {
                    latency: EMBEDDED_LATENCY,
                    jitter: EMBEDDED_JITTER,
                    ..ServerConfig::default()
                };
                let handle = tokio::task::spawn_blocking(move || server::start_in_thread(config))
                    .await?
                    .context("cannot start the embedded demo API")?;
                let template = UrlTemplate::parse(&handle.url_template())?;
                (template, EMBEDDED_NAMESPACE.to_owned(), Some(handle))
            }
        };
        // A demo API in this process is reached directly, whatever proxy is set.
        let in_process = embedded.is_some() || opts.api_in_process;
        // Said, not left to reqwest, which drops such a value without a word: the user
        // meant requests to go through a proxy. The value is not shown: it may hold a password.
        if !in_process {
            for problem in crate::client::proxy_variable_problems() {
                crate::console::note!("userfetch: {problem}");
            }
        }
        // A SOCKS proxy is read as one, but this build does not speak SOCKS: every lookup
        // failed at the connection, each through all its retries. Refused once instead, not
        // ignored: the user meant the requests to go through it.
        if let Some(proxy) = (!in_process)
            .then(|| crate::client::proxy_for(template.origin()))
            .flatten()
            .filter(|proxy| proxy.starts_with("socks"))
        {
            return Err(usage(format!(
                "the API's requests would go through the SOCKS proxy {proxy} (set in the \
                 environment), and userfetch speaks to HTTP proxies only (http:// or https://): \
                 set an HTTP proxy, or add the API's host to NO_PROXY"
            )));
        }
        // The proxy is read for an http:// API only: an https:// one speaks HTTP/2 (when
        // agreed) through it.
        let proxy = (!in_process && template.origin().scheme() == "http")
            .then(|| crate::client::proxy_for(template.origin()))
            .flatten();
        if let Some(proxy) = proxy.as_ref().filter(|_| opts.http2) {
            return Err(usage(format!(
                "--http2 speaks to the API directly, but its requests go through the proxy \
                 {proxy} (set in the environment): leave --http2 (and USERFETCH_HTTP2) out to \
                 go through the proxy over HTTP/1.1, or add the API's host to NO_PROXY"
            )));
        }
        // Trimmed: a token never starts or ends with whitespace, but one read from a file
        // (`USERFETCH_TOKEN="$(cat token)"` keeps a CRLF's CR) often does, and would be sent so.
        let token = std::env::var(TOKEN_VAR)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        let config = ClientConfig {
            timeout: opts.timeout,
            connect_timeout: opts.connect_timeout,
            retry: RetryPolicy {
                retries: opts.retries,
                max_wait: opts.max_retry_wait,
                max_time: opts.retry_max_time,
                ..RetryPolicy::default()
            },
            max_body: opts.max_body,
            token,
            // The embedded API is known to speak cleartext HTTP/2, and one multiplexed
            // connection beats thousands of sockets when many lookups are in flight.
            http2: opts.http2 || (embedded.is_some() && !opts.http1),
            direct: in_process,
            ..ClientConfig::new(template)
        };
        // Built first, so a bad token is said before the cache file is touched.
        let client = Client::new(config.clone())?;
        // Said here, before any screen is up, and once per run.
        if let Some(why) = client.unusable_ca_certificates() {
            crate::console::note!("userfetch: {why}");
        }
        // Opened before the API is asked anything: a bad --cache is said at once.
        let cache = match cache_path(opts)? {
            None => None,
            Some(path) => {
                let default = opts.cache.is_none();
                Some(
                    tokio::task::spawn_blocking(move || {
                        if default {
                            Cache::make_default_dir(&path)?;
                        }
                        Cache::open(&path)
                    })
                    .await??,
                )
            }
        };
        let mut unreached = None;
        let (client, http2_streams) = if !ask_http2 {
            (client, None)
        } else if opts.http1 {
            tracing::info!("speaking HTTP/1.1 to the API (--http1)");
            (client, None)
        } else if config.http2 {
            if config.template.origin().scheme() == "http" {
                tracing::info!("speaking cleartext HTTP/2 to the API");
            }
            // Asked for (or the embedded API): still asked, for how many requests at once
            // the API takes on the connection.
            let limit = probe_limit(opts);
            let answer = crate::client::offers_h2c(&config.template, limit).await;
            unreached = unanswered(&answer, limit);
            match answer {
                H2c::Speaks { streams } => (client, Some(streams)),
                _ => (client, None),
            }
        } else if config.template.origin().scheme() != "http" {
            (client, None)
        } else if let Some(proxy) = proxy {
            tracing::info!(
                "the API is reached through the proxy {proxy}: speaking HTTP/1.1 through it, \
                 not asking about HTTP/2"
            );
            (client, None)
        } else {
            let limit = probe_limit(opts);
            let answer = crate::client::offers_h2c(&config.template, limit).await;
            unreached = unanswered(&answer, limit);
            match answer {
                H2c::Speaks { streams } => {
                    tracing::info!("the API speaks cleartext HTTP/2: using it (--http1 not to)");
                    let http2 = Client::new(ClientConfig {
                        http2: true,
                        ..config
                    })?;
                    (http2, Some(streams))
                }
                H2c::DoesNot => {
                    tracing::info!("the API speaks HTTP/1.1, not cleartext HTTP/2: using HTTP/1.1");
                    (client, None)
                }
                H2c::Unreachable(why) => {
                    tracing::info!(
                        "the API could not be reached to ask whether it speaks HTTP/2 ({}): \
                         using HTTP/1.1",
                        crate::term::sanitize(&why)
                    );
                    (client, None)
                }
                H2c::NoAnswer => {
                    tracing::info!(
                        "the API did not answer within {} whether it speaks HTTP/2: using HTTP/1.1",
                        humantime::format_duration(limit)
                    );
                    (client, None)
                }
            }
        };
        Ok(Session {
            engine: Engine::new(client, cache, opts.max_age, &namespace),
            embedded,
            http2_streams,
            unreached,
        })
    }

    /// One line for stderr saying where lookups go, when that isn't obvious.
    pub fn announce(&self) -> Option<String> {
        self.embedded.as_ref().map(|h| {
            format!(
                "userfetch: no --api given; using the embedded demo API at {} ({}–{} ms latency)",
                h.base_url(),
                EMBEDDED_LATENCY.as_millis(),
                (EMBEDDED_LATENCY + EMBEDDED_JITTER).as_millis()
            )
        })
    }

    /// Closes the cache (everything queued is stored first) and stops the embedded server.
    pub async fn close(self) {
        self.engine.close().await;
        if let Some(server) = self.embedded {
            server.shutdown().await;
        }
    }
}
