//! Turning the global options into a working engine: which API, which client, which cache.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::cache::Cache;
use crate::cli::GlobalOpts;
use crate::client::{Client, ClientConfig, RetryPolicy, UrlTemplate};
use crate::engine::Engine;
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

/// HTTP/2 carries every lookup on one connection, so it is worth it when the API takes at
/// least the lookups in flight at once there: past its limit (100 to 250 streams on many
/// servers) requests would wait for a turn while their `--timeout` runs, where HTTP/1.1 opens
/// a connection for each.
fn speak_http2(offer: Option<u32>, concurrency: u32) -> bool {
    offer.is_some_and(|most| most >= concurrency)
}

/// Whether a proxy is set for http:// URLs, as reqwest reads it: the question about HTTP/2
/// would go around it, straight to the API, and so would the direct HTTP/2 connection.
fn proxy_set() -> bool {
    ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// A ready engine, and the embedded server when there is one (kept alive with the session).
pub struct Session {
    pub engine: Engine,
    pub embedded: Option<ServerHandle>,
}

/// How long a batch waits to learn whether an http:// API speaks HTTP/2 (within
/// `--connect-timeout`) before it takes HTTP/1.1: an answer is a connection and one round trip.
const HTTP2_PROBE_LIMIT: Duration = Duration::from_secs(2);

impl Session {
    /// Validates the options, starts the embedded API if no `--api` was given, opens the cache.
    pub async fn start(opts: &GlobalOpts) -> anyhow::Result<Session> {
        Session::start_with(opts, None).await
    }

    /// [`Session::start`] for many lookups (batch), `concurrency` at once: an http:// API is
    /// asked once whether it speaks cleartext HTTP/2, which carries them all on one
    /// connection, unless `--http1` or `--http2` says which to speak or a proxy is set.
    pub async fn start_for_many(opts: &GlobalOpts, concurrency: u32) -> anyhow::Result<Session> {
        Session::start_with(opts, Some(concurrency)).await
    }

    async fn start_with(opts: &GlobalOpts, many: Option<u32>) -> anyhow::Result<Session> {
        // `USERFETCH_API=` (set but empty) reads as unset, as such variables usually do.
        let api = opts.api.as_deref().filter(|api| !api.trim().is_empty());
        let (template, namespace, embedded) = match api {
            Some(api) => {
                let template = UrlTemplate::parse(api).map_err(|e| {
                    // Set in the environment, the value is not on the command line to look at.
                    let error = anyhow::Error::new(e);
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
                tracing::info!("embedded demo API at {}", handle.base_url());
                (template, EMBEDDED_NAMESPACE.to_owned(), Some(handle))
            }
        };
        let token = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty());
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
            ..ClientConfig::new(template)
        };
        // Built first, so a bad token is said before the cache file is touched.
        let client = Client::new(config.clone())?;
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
        let client = match many {
            Some(concurrency) if !config.http2 && !opts.http1 && !proxy_set() => {
                let limit = HTTP2_PROBE_LIMIT.min(opts.connect_timeout);
                let offer = crate::client::offers_h2c(&config.template, limit).await;
                let http2 = speak_http2(offer, concurrency);
                match offer {
                    Some(_) if http2 => {
                        tracing::info!("the API speaks cleartext HTTP/2: using it (--http1 not to)")
                    }
                    Some(most) => tracing::info!(
                        "the API speaks cleartext HTTP/2 but takes {most} requests at a time on a \
                         connection, fewer than --concurrency {concurrency}: using HTTP/1.1"
                    ),
                    None => tracing::debug!("the API does not speak cleartext HTTP/2"),
                }
                if http2 {
                    Client::new(ClientConfig { http2, ..config })?
                } else {
                    client
                }
            }
            _ => client,
        };
        Ok(Session {
            engine: Engine::new(client, cache, opts.max_age, &namespace),
            embedded,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_only_where_the_api_takes_the_lookups_at_once() {
        assert!(speak_http2(Some(u32::MAX), 10_000));
        assert!(speak_http2(Some(128), 128));
        assert!(
            !speak_http2(Some(128), 500),
            "500 would queue behind 128 streams"
        );
        assert!(!speak_http2(None, 1));
    }
}
