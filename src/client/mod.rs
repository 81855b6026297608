//! The HTTP client: one `reqwest::Client` per process, retries, timeouts, a body cap, and a
//! classified error for every way a lookup can fail.

mod error;
mod failure;
mod h2;
mod proxy;
mod retry;
mod tls;
mod url;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};

pub use error::{AfterAttempts, ErrorKind, FetchError};
pub use proxy::{proxy_for, proxy_variable_problems};
pub use retry::{RetryPolicy, parse_retry_after};
pub use url::{TemplateError, UrlTemplate};

use failure::{AttemptFailure, SAID_BYTES, SAID_WAIT, Token, drain, status_failure};
use tls::{Roots, connect_hint, in_words};

use crate::id::UserId;
use crate::record::Record;

/// Sent with every request, the health check's too.
const USER_AGENT: &str = concat!("userfetch/", env!("CARGO_PKG_VERSION"));

/// Everything that shapes how requests are made; built once from the command line.
#[derive(Clone)]
pub struct ClientConfig {
    pub template: UrlTemplate,
    /// Limit for one whole attempt: connect, headers and body.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Largest body accepted, in bytes.
    pub max_body: u64,
    /// Bearer token; sent to the API's own host only.
    pub token: Option<String>,
    /// Speak HTTP/2 without negotiation (h2c). One connection then carries every request,
    /// which is what lets ten thousand lookups be in flight without ten thousand sockets.
    pub http2: bool,
    /// Never through a proxy: a demo API in this process (the embedded one, the demo's)
    /// listens on loopback, where a proxy (on another machine, often) cannot reach it.
    pub direct: bool,
}

/// Written by hand so the token can never reach a log line through `{:?}`.
impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("template", &self.template)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .field("max_body", &self.max_body)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("http2", &self.http2)
            .field("direct", &self.direct)
            .finish()
    }
}

impl ClientConfig {
    pub fn new(template: UrlTemplate) -> Self {
        ClientConfig {
            template,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            max_body: 1024 * 1024,
            token: None,
            http2: false,
            direct: false,
        }
    }
}

/// A successful fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub record: Record,
    pub attempts: u32,
}

/// Told to the caller before each wait between attempts, so a UI can say
/// "retrying in 2.1 s (attempt 2/4)".
#[derive(Debug, Clone)]
pub struct RetryNotice {
    /// The attempt that failed (1-based).
    pub failed_attempt: u32,
    pub max_attempts: u32,
    pub delay: Duration,
    pub error: FetchError,
}

/// Paces attempts and hears how each went. The batch's rate limit and adaptive throttle plug in
/// here, so a retry waits its turn like a first attempt does.
pub trait AttemptGate: Sync {
    /// Held while one attempt is on the wire.
    type Permit: Send;
    /// Waits until another attempt may start.
    fn admit(&self) -> impl std::future::Future<Output = Self::Permit> + Send;
    /// Told once the attempt's answer (or error) is in.
    fn attempted(&self, permit: Self::Permit, ended: AttemptEnd);
    /// True once no further attempt may start (a batch stopping): the lookup ends as
    /// cancelled instead. Asked before each attempt.
    fn closed(&self) -> bool {
        false
    }
}

/// How one attempt ended, as far as pacing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// A usable answer: a record, or a 404.
    Answered,
    /// The API asked for less: 429 Too Many Requests or 503 Service Unavailable.
    PushedBack,
    /// Anything else (other 5xx, timeouts, broken connections, bad bodies): a fault of this
    /// request or the network, not a statement about the pace.
    Failed,
}

/// Lets every attempt through at once.
pub struct Ungated;

impl AttemptGate for Ungated {
    type Permit = ();
    async fn admit(&self) {}
    fn attempted(&self, (): (), _: AttemptEnd) {}
}

/// What one request got: a record, or where the API sent it instead.
enum Hop {
    Record(Record),
    Redirect(String),
}

/// Redirects followed within one attempt: a loop must not eat the timeout.
const MAX_REDIRECTS: usize = 5;

/// Where a redirect points, for the statuses that redirect a GET (as browsers and reqwest
/// follow them). Other 3xx answers (300, 304, a 3xx without Location) are failures.
fn redirect_location(status: StatusCode, headers: &reqwest::header::HeaderMap) -> Option<String> {
    let redirects = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
    let location = headers.get(reqwest::header::LOCATION)?.to_str().ok()?;
    redirects.then(|| location.to_owned())
}

/// What an API said when asked whether it speaks cleartext HTTP/2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H2c {
    /// It does, taking `streams` requests at once on a connection (`u32::MAX`: no limit said).
    Speaks { streams: u32 },
    /// It answered as something else (HTTP/1.1) or closed; or it is an https:// API, where
    /// TLS settles the protocol.
    DoesNot,
    /// No connection could be made (refused, no such host): why.
    Unreachable(String),
    /// Nothing came within the time allowed.
    NoAnswer,
}

/// Asks the API behind `template` once, within `limit` of the time the process runs,
/// whether it speaks cleartext HTTP/2 (see [`h2::offers_h2c`]).
pub async fn offers_h2c(template: &UrlTemplate, limit: Duration) -> H2c {
    match h2c_target(template.origin()) {
        Some((host, port)) => h2::offers_h2c(host, port, limit).await,
        None => H2c::DoesNot,
    }
}

/// Where cleartext HTTP/2 would connect for an http:// origin: its host, an IPv6 address
/// without brackets, and its port. None for https://, where TLS settles the protocol.
fn h2c_target(origin: &::url::Url) -> Option<(&str, u16)> {
    match (origin.scheme(), origin.host_str()) {
        ("http", Some(host)) => Some((
            host.trim_start_matches('[').trim_end_matches(']'),
            origin.port_or_known_default().unwrap_or(80),
        )),
        _ => None,
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Whether `http` speaks HTTP/2 without asking (`--http2` with an http:// API).
    prior_knowledge: bool,
    /// For redirects to another origin when `http` speaks HTTP/2 without asking: the API's
    /// answer to the HTTP/2 question says nothing of another host (an HTTP/1.1-only one
    /// failed with "frame with invalid size"). Made at the first such redirect. Its sockets
    /// are not in the open-file budget, which counts one connection under HTTP/2.
    other_origins: Arc<std::sync::OnceLock<Result<reqwest::Client, String>>>,
    config: Arc<ClientConfig>,
    auth: Option<HeaderValue>,
    /// Direct HTTP/2 for `--http2` with an `http://` API (see [`h2`]).
    h2: Option<Arc<h2::H2>>,
    /// Redirects followed: each is one more request at the server within the same attempt.
    redirects: Arc<AtomicU64>,
    /// What an https:// certificate is checked against, for what a refusal says.
    roots: Roots,
}

impl Client {
    pub fn new(config: ClientConfig) -> anyhow::Result<Client> {
        let redirects = Arc::new(AtomicU64::new(0));
        let roots = Roots::for_config(&config);
        // Prior knowledge is for cleartext (h2c) only; over TLS, ALPN lets the server choose,
        // so an https API that speaks only HTTP/1.1 still works with --http2.
        let prior_knowledge = config.http2 && config.template.origin().scheme() == "http";
        let http = http_client(&config, roots, prior_knowledge)?;
        let auth = match &config.token {
            Some(token) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        crate::exit::usage(
                            "USERFETCH_TOKEN contains characters not allowed in an HTTP header",
                        )
                    })?;
                // Keeps the value out of Debug output, and so out of any log line.
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let h2 = h2c_target(config.template.origin())
            .filter(|_| config.http2)
            .map(|(host, port)| {
                Arc::new(h2::H2::new(host.to_owned(), port, config.connect_timeout))
            });
        Ok(Client {
            http,
            prior_knowledge,
            other_origins: Arc::new(std::sync::OnceLock::new()),
            roots,
            config: Arc::new(config),
            auth,
            h2,
            redirects,
        })
    }

    /// Requests made to follow redirects, over the client's life. An attempt that is
    /// redirected is one attempt but two requests (or more) at the server.
    pub fn redirects_followed(&self) -> u64 {
        self.redirects.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The client for a request to the API's origin (`same_origin`) or another one.
    fn http_for(&self, same_origin: bool) -> Result<&reqwest::Client, AttemptFailure> {
        if same_origin || !self.prior_knowledge {
            return Ok(&self.http);
        }
        self.other_origins
            .get_or_init(|| {
                http_client(&self.config, self.roots, false).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| AttemptFailure::fatal(ErrorKind::Connection, e.clone()))
    }

    /// The proxy a request to `url` goes through: none for an API in this process.
    pub fn proxy_for(&self, url: &::url::Url) -> Option<String> {
        (!self.config.direct).then(|| proxy_for(url)).flatten()
    }

    /// The proxy, when an answer with `status` to `url` is its asking for credentials: the
    /// API was never asked. Over https:// a proxy's refusal ends the CONNECT (a connect
    /// error), so a 407 that comes as an answer there is the API's own.
    fn proxy_asking_for_credentials(&self, status: StatusCode, url: &::url::Url) -> Option<String> {
        (status == StatusCode::PROXY_AUTHENTICATION_REQUIRED && url.scheme() == "http")
            .then(|| self.proxy_for(url))
            .flatten()
    }

    /// Why the CA certificates named in the environment cannot be used, when they replace
    /// the system's store for this https:// API; for the session to say once (a client is
    /// also built while the screen is up).
    pub fn unusable_ca_certificates(&self) -> Option<String> {
        (self.roots == Roots::WithNamed)
            .then(Roots::unusable_named)
            .flatten()
            .map(|why| {
                format!(
                    "{why} (the system's certificate store is not read while SSL_CERT_FILE or SSL_CERT_DIR is set)"
                )
            })
    }

    /// An answer that is no record: the failure it is, quoting what the API said there
    /// without the token.
    fn status_failure(
        &self,
        status: StatusCode,
        retry_after: Option<&HeaderValue>,
        token: Token,
        body: &[u8],
    ) -> AttemptFailure {
        status_failure(
            status,
            retry_after,
            token,
            body,
            self.config.token.as_deref(),
        )
    }

    /// Fetches one user, retrying what may succeed on another try. `on_retry` hears about
    /// each wait before it starts.
    pub async fn fetch(
        &self,
        id: &UserId,
        on_retry: &mut (dyn FnMut(&RetryNotice) + Send),
    ) -> Result<Fetched, FetchError> {
        self.fetch_gated(id, on_retry, &Ungated).await
    }

    /// [`Client::fetch`], with every attempt admitted by `gate`.
    pub async fn fetch_gated<G: AttemptGate>(
        &self,
        id: &UserId,
        on_retry: &mut (dyn FnMut(&RetryNotice) + Send),
        gate: &G,
    ) -> Result<Fetched, FetchError> {
        let url = self.config.template.url_for(id);
        let policy = &self.config.retry;
        let max_attempts = policy.max_attempts();
        let mut attempt = 0;
        // Counted from the first attempt's start, not from when it began waiting its turn.
        let mut first_started = None;
        loop {
            if gate.closed() {
                return Err(FetchError::cancelled(attempt));
            }
            attempt += 1;
            let permit = gate.admit().await;
            // Time stopped (Ctrl-Z) is none of --retry-max-time's, as it is none of
            // --timeout's.
            let started = *first_started.get_or_insert_with(crate::stopped::Stopwatch::start);
            let result = self.attempt(&url).await;
            match &result {
                Ok(_) => tracing::debug!(%id, attempt, %url, "answered with a record"),
                Err(f) => tracing::debug!(%id, attempt, %url, "{}", f.detail),
            }
            let ended = match &result {
                Ok(_) => AttemptEnd::Answered,
                Err(f) if f.kind == ErrorKind::NotFound => AttemptEnd::Answered,
                Err(f) if f.pushed_back => AttemptEnd::PushedBack,
                Err(_) => AttemptEnd::Failed,
            };
            gate.attempted(permit, ended);
            let failure = match result {
                Ok(record) => {
                    return Ok(Fetched {
                        record,
                        attempts: attempt,
                    });
                }
                Err(failure) => failure,
            };
            let error = FetchError::new(failure.kind, attempt, failure.detail);
            if !failure.retryable || attempt >= max_attempts {
                return Err(error);
            }
            let delay = if failure.pushed_back {
                policy.delay_pushed_back(attempt, failure.retry_after, fastrand::f64())
            } else {
                policy.delay(attempt, failure.retry_after, fastrand::f64())
            };
            if !policy.in_time(started.ran(), delay) {
                // Reads on with the attempt count: "…: server answered 429; gave up after 2 attempts".
                // The API's own ask, when it made one: what took the next retry past the limit.
                let asked = failure
                    .retry_after
                    .map(|wait| asked_to_wait(wait, policy.max_wait))
                    .unwrap_or_default();
                let why = format!(
                    "retries stopped at --retry-max-time ({}{asked}): {}",
                    humantime::format_duration(policy.max_time),
                    error.detail()
                );
                return Err(FetchError::new(error.kind, attempt, why));
            }
            // The detail alone: the error's "; gave up after N attempts" is for the last one.
            tracing::info!(%id, attempt, delay = %format!("{:.1?}", delay), error = %error.detail(), "retrying");
            on_retry(&RetryNotice {
                failed_attempt: attempt,
                max_attempts,
                delay,
                error,
            });
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, url: &str) -> Result<Record, AttemptFailure> {
        // One deadline for the whole attempt, redirects included, moved on by any time the
        // process spent stopped meanwhile (Ctrl-Z): the answer may be waiting, unread.
        let watch = crate::stopped::Stopwatch::start();
        let mut stopped = Duration::ZERO;
        loop {
            let attempt = std::pin::pin!(self.attempt_following(url));
            match crate::stopped::within_since(watch, self.config.timeout, attempt).await {
                // reqwest's connect limit cannot be told about stops: one that a stop used
                // up is no attempt of the API's, and the attempt starts again, within the
                // same deadline.
                Some(Err(failure)) if failure.connect_timed_out => {
                    let since = watch.stopped();
                    if since <= stopped {
                        return Err(failure);
                    }
                    stopped = since;
                }
                Some(result) => return result,
                None => return Err(self.timed_out()),
            }
        }
    }

    /// Redirects are followed here, not inside reqwest, so that both transports follow the
    /// same ones the same way, and an error names the host that failed (a reqwest error
    /// after a redirect carries the original URL).
    async fn attempt_following(&self, url: &str) -> Result<Record, AttemptFailure> {
        let first = match &self.h2 {
            Some(h2) => self.attempt_h2(h2, url).await?,
            // Boxed so that its large future is not part of every attempt's state (the direct
            // HTTP/2 path rarely needs it, and each lookup's future is moved when it is spawned).
            None => Box::pin(self.attempt_reqwest(url, true)).await?,
        };
        let mut location = match first {
            Hop::Record(record) => return Ok(record),
            Hop::Redirect(location) => location,
        };
        let invalid = |e: ::url::ParseError| {
            AttemptFailure::fatal(
                ErrorKind::Rejected,
                format!("the API redirected to an invalid location ({e})"),
            )
        };
        let mut current = ::url::Url::parse(url).map_err(invalid)?;
        for _ in 0..MAX_REDIRECTS {
            let target = current.join(&location).map_err(invalid)?;
            if !matches!(target.scheme(), "http" | "https") {
                return Err(AttemptFailure::fatal(
                    ErrorKind::Rejected,
                    format!(
                        "the API redirected to a {}: URL; only http and https are followed",
                        target.scheme()
                    ),
                ));
            }
            if current.scheme() == "https" && target.scheme() != "https" {
                return Err(AttemptFailure::fatal(
                    ErrorKind::Rejected,
                    "the API redirected from https to http; not following it",
                ));
            }
            // The token is the API's credential: another host (a CDN, a login page) must not
            // see it.
            let same_origin = target.origin() == self.config.template.origin().origin();
            self.redirects.fetch_add(1, Ordering::Relaxed);
            let hop = Box::pin(self.attempt_reqwest(target.as_str(), same_origin))
                .await
                .map_err(|failure| failure.after_redirect(&target, self.config.token.as_deref()))?;
            match hop {
                Hop::Record(record) => return Ok(record),
                Hop::Redirect(next) => (current, location) = (target, next),
            }
        }
        Err(AttemptFailure::fatal(
            ErrorKind::Rejected,
            format!("the API redirected more than {MAX_REDIRECTS} times in a row"),
        ))
    }

    /// `same_origin`: whether `url` is on the API's origin, which alone sees the token and
    /// is spoken to in HTTP/2 without asking.
    async fn attempt_reqwest(&self, url: &str, same_origin: bool) -> Result<Hop, AttemptFailure> {
        let mut request = self.http_for(same_origin)?.get(url);
        if let Some(auth) = self.auth.as_ref().filter(|_| same_origin) {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let mut response = request.send().await.map_err(|e| self.classify(&e, 0))?;
        let status = response.status();
        if let Some(location) = redirect_location(status, response.headers()) {
            drain(&mut response).await;
            return Ok(Hop::Redirect(location));
        }
        if let Some(proxy) = self.proxy_asking_for_credentials(status, response.url()) {
            return Err(AttemptFailure::fatal(
                ErrorKind::Unauthorized,
                format!(
                    "the proxy {proxy} answered {status}: check the user and password in the \
                     proxy variable (http://USER:PASSWORD@HOST:PORT)"
                ),
            ));
        }
        if !status.is_success() {
            let token = self.token_use(same_origin);
            let retry_after = response.headers().get(RETRY_AFTER).cloned();
            let body = drain(&mut response).await;
            let mut failure = self.status_failure(status, retry_after.as_ref(), token, &body);
            // A proxy's own 502 or 504 (it could not reach the API) reads like the API's:
            // where one carries the request, the answer may be its.
            if status.is_server_error()
                && response.url().scheme() == "http"
                && let Some(proxy) = self.proxy_for(response.url())
            {
                failure
                    .detail
                    .push_str(&format!(" (through the proxy {proxy})"));
            }
            return Err(failure);
        }
        refuse_encoded(response.headers())?;
        let mut body = self.body_buffer(response.content_length())?;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.classify(&e, body.len()))?
        {
            self.append_capped(&mut body, &chunk)?;
        }
        parse_record(&body).map(Hop::Record)
    }

    /// The buffer for a body of `declared` length, refused at once if that is over
    /// `--max-body`. The declared length is the server's claim: it sizes the first 64 KiB only.
    fn body_buffer(&self, declared: Option<u64>) -> Result<Vec<u8>, AttemptFailure> {
        let max = self.config.max_body;
        if declared.is_some_and(|len| len > max) {
            return Err(self.too_large());
        }
        Ok(Vec::with_capacity(
            declared.unwrap_or(1024).min(max).min(64 * 1024) as usize,
        ))
    }

    /// Appends a chunk unless that would take the body over `--max-body`.
    fn append_capped(&self, body: &mut Vec<u8>, chunk: &[u8]) -> Result<(), AttemptFailure> {
        if (body.len() + chunk.len()) as u64 > self.config.max_body {
            return Err(self.too_large());
        }
        body.extend_from_slice(chunk);
        Ok(())
    }

    /// One request over the direct HTTP/2 connection.
    async fn attempt_h2(&self, h2: &h2::H2, url: &str) -> Result<Hop, AttemptFailure> {
        use http_body_util::BodyExt;
        let uri: hyper::Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| {
            AttemptFailure::fatal(ErrorKind::Rejected, e.to_string())
        })?;
        let request = || {
            let mut request = hyper::Request::new(http_body_util::Empty::new());
            *request.uri_mut() = uri.clone();
            let headers = request.headers_mut();
            headers.insert(
                reqwest::header::USER_AGENT,
                HeaderValue::from_static(USER_AGENT),
            );
            if let Some(auth) = &self.auth {
                headers.insert(AUTHORIZATION, auth.clone());
            }
            request
        };
        let response = h2.send(request).await.map_err(|e| {
            let host = self.host();
            match e {
                h2::H2Error::Connect(why) => AttemptFailure::transient(
                    ErrorKind::Connection,
                    format!("cannot connect to {host}{why}"),
                ),
                h2::H2Error::Send(e) => AttemptFailure::transient(
                    ErrorKind::Connection,
                    // The hint inside the brackets, so the attempt count that follows
                    // ("…; gave up after 4 attempts") does not read as part of it.
                    format!(
                        "the connection to {host} failed before an answer came ({}{})",
                        innermost(&e),
                        if h2.has_answered() || h2::sent_by_server(&e) {
                            ""
                        } else {
                            "; if the API does not speak cleartext HTTP/2, use --http1 (without --http2)"
                        }
                    ),
                ),
            }
        })?;
        let status = response.status();
        if let Some(location) = redirect_location(status, response.headers()) {
            return Ok(Hop::Redirect(location));
        }
        if !status.is_success() {
            let token = self.token_use(true);
            let retry_after = response.headers().get(RETRY_AFTER).cloned();
            // The start of the error body only (the stream is reset when it is dropped), and
            // only what comes at once: a body that trickles must not turn a 503 and its
            // Retry-After into a timeout.
            let mut said = Vec::new();
            let mut incoming = response.into_body();
            let read = async {
                while said.len() < SAID_BYTES {
                    match incoming.frame().await {
                        Some(Ok(frame)) => {
                            if let Ok(chunk) = frame.into_data() {
                                said.extend_from_slice(&chunk);
                            }
                        }
                        Some(Err(_)) | None => break,
                    }
                }
            };
            let _ = tokio::time::timeout(SAID_WAIT, read).await;
            return Err(self.status_failure(status, retry_after.as_ref(), token, &said));
        }
        refuse_encoded(response.headers())?;
        let length = response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = self.body_buffer(length)?;
        let mut incoming = response.into_body();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                AttemptFailure::transient(
                    ErrorKind::BadBody,
                    format!(
                        "the response body was cut off after {} bytes ({})",
                        body.len(),
                        innermost(&e)
                    ),
                )
            })?;
            if let Ok(chunk) = frame.into_data() {
                self.append_capped(&mut body, &chunk)?;
            }
        }
        parse_record(&body).map(Hop::Record)
    }

    /// What became of the token on a request that `may_see` it or not.
    fn token_use(&self, may_see: bool) -> Token {
        match (&self.auth, may_see) {
            // Another origin would not get the token even if one were set.
            (_, false) => Token::Withheld,
            (None, true) => Token::NotSet,
            (Some(_), true) => Token::Sent,
        }
    }

    fn timed_out(&self) -> AttemptFailure {
        AttemptFailure::transient(
            ErrorKind::Timeout,
            format!(
                "no complete answer within {} (raise it with --timeout)",
                humantime::format_duration(self.config.timeout)
            ),
        )
    }

    fn too_large(&self) -> AttemptFailure {
        AttemptFailure::fatal(
            ErrorKind::TooLarge,
            format!(
                "the response is larger than the limit of {} (raise it with --max-body)",
                crate::values::size(self.config.max_body)
            ),
        )
    }

    fn classify(&self, e: &reqwest::Error, body_so_far: usize) -> AttemptFailure {
        // The host that failed, which after a redirect is not the API's own; and the proxy
        // in between, if one is set for it (refused or not answering, it is the proxy a
        // connection failed to reach, not the API).
        let host = e.url().map_or_else(
            || self.host(),
            |url| {
                let host = host_port(url);
                match e.is_connect().then(|| self.proxy_for(url)).flatten() {
                    Some(proxy) => format!("{host} through the proxy {proxy}"),
                    None => host,
                }
            },
        );
        // A connect timeout is both a timeout and a connect error; it is the connect limit
        // that the user would raise.
        if e.is_connect() && e.is_timeout() {
            return AttemptFailure {
                connect_timed_out: true,
                ..AttemptFailure::transient(
                    ErrorKind::Connection,
                    format!(
                        "cannot connect to {host} within {} (raise it with --connect-timeout)",
                        humantime::format_duration(self.config.connect_timeout)
                    ),
                )
            };
        }
        if e.is_timeout() {
            return self.timed_out();
        }
        if e.is_body() || e.is_decode() {
            return AttemptFailure::transient(
                ErrorKind::BadBody,
                format!(
                    "the response body was cut off after {body_so_far} bytes ({})",
                    innermost(e)
                ),
            );
        }
        if e.is_connect() {
            let cause = innermost(e);
            let (hint, retryable) = connect_hint(&cause, self.roots);
            // A proxy refusing the tunnel (CONNECT, for an https:// API) for want of
            // credentials refuses every id, as its 407 to an http:// request does.
            let kind = if cause.contains("proxy authorization required") {
                ErrorKind::Unauthorized
            } else {
                ErrorKind::Connection
            };
            let failure = AttemptFailure::fatal(
                kind,
                format!("cannot connect to {host} ({}){hint}", in_words(&cause)),
            );
            return AttemptFailure {
                retryable,
                ..failure
            };
        }
        let cause = innermost(e);
        // An answer that is no HTTP/1.1 at all reads to hyper as a bad version: a server
        // speaking only cleartext HTTP/2 (its SETTINGS frame), or no HTTP server (TLS on the
        // port, SSH). Asking again gets the same. --http2 is named only where it could help:
        // an http:// URL reached directly.
        if cause.contains("invalid HTTP version parsed") {
            let http2_could = e
                .url()
                .is_some_and(|url| url.scheme() == "http" && self.proxy_for(url).is_none());
            return AttemptFailure::fatal(
                ErrorKind::Connection,
                format!(
                    "the connection to {host} failed before an answer came ({cause}: not an \
                     HTTP/1.1 answer{})",
                    if http2_could {
                        "; a server speaking TLS (is the API https://?) or only HTTP/2 (--http2 \
                         reaches it) answers so"
                    } else {
                        ""
                    }
                ),
            );
        }
        AttemptFailure::transient(
            ErrorKind::Connection,
            format!("the connection to {host} failed before an answer came ({cause})"),
        )
    }

    /// One request to the API's `/health`, for the UI's background check: its latency, or why
    /// it failed. Any HTTP answer counts as reachable (most APIs have no `/health`, and a 404
    /// still proves the server is up); only transport failures count as down, and a proxy's
    /// own answers (407, and 502 or 504: it could not reach the API). The token is not
    /// sent: a health probe needs no authority. Not retried: the next check is the retry.
    pub async fn health(&self) -> Result<Duration, FetchError> {
        let url = self
            .config
            .template
            .origin()
            .join("health")
            .map_err(|e| FetchError::new(ErrorKind::Rejected, 1, e.to_string()))?;
        let started = Instant::now();
        // Bounded like an attempt: an API that accepts and never answers would otherwise
        // leave the screen's header on its last state for good.
        let response = crate::stopped::within(self.config.timeout, self.http.get(url).send())
            .await
            .ok_or_else(|| self.timed_out().into_error(1))?
            .map_err(|e| self.classify(&e, 0).into_error(1))?;
        // Any answer is the API's, except a proxy's asking for credentials, or saying it
        // could not reach the API (502, 504: an http:// request through a proxy).
        if let Some(proxy) = self.proxy_asking_for_credentials(response.status(), response.url()) {
            return Err(FetchError::new(
                ErrorKind::Unauthorized,
                1,
                format!("the proxy {proxy} asks for credentials (407)"),
            ));
        }
        let status = response.status();
        if matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
        ) && response.url().scheme() == "http"
            && let Some(proxy) = self.proxy_for(response.url())
        {
            return Err(FetchError::new(
                ErrorKind::Connection,
                1,
                format!("the proxy {proxy} could not reach the API ({status})"),
            ));
        }
        drop(response);
        Ok(started.elapsed())
    }

    fn host(&self) -> String {
        host_port(self.config.template.origin())
    }
}

/// What the API's Retry-After asked, for the line that says retries stopped: in whole
/// seconds rounded up (an HTTP date read a moment later is a little under what the server
/// meant), nothing for a wait already over, and the cap `--max-retry-wait` put on it.
fn asked_to_wait(wait: Duration, max_wait: Duration) -> String {
    const DAY: u64 = 24 * 60 * 60;
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    let asked = match secs {
        0 => return String::new(),
        s if s > DAY => "more than a day".to_owned(),
        s => humantime::format_duration(Duration::from_secs(s)).to_string(),
    };
    let capped = if wait > max_wait {
        format!(
            ", capped at {} by --max-retry-wait",
            humantime::format_duration(max_wait)
        )
    } else {
        String::new()
    };
    format!("; the API asked to wait {asked}{capped}")
}

/// The reqwest client for `config`, speaking HTTP/2 without asking when `prior_knowledge`.
fn http_client(
    config: &ClientConfig,
    roots: Roots,
    prior_knowledge: bool,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        // No `.timeout`: `attempt` keeps its own deadline, which a stop does not use up.
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30))
        // Followed by `attempt_following`, the same way for both transports.
        .redirect(reqwest::redirect::Policy::none())
        // Reading the system's certificate store costs every start a few milliseconds
        // (~140 PEM certificates parsed); an http:// API needs it only for a redirect to
        // https://, where the built-in Mozilla roots still apply.
        .tls_built_in_native_certs(roots != Roots::Alone);
    if prior_knowledge {
        builder = builder.http2_prior_knowledge();
    }
    if config.direct {
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))
}

/// How the failure of a compressed body starts: a `bad_body` that is no web page, which the
/// "is the template a web page's?" hints leave out.
const ENCODED_BODY: &str = "the answer is encoded";

/// Whether a failure is an answer that was no JSON record, as a web page's (a wrong path, a
/// login page) is: a `bad_body` other than a body sent compressed, which says so itself.
pub fn is_web_page(kind: ErrorKind, detail: &str) -> bool {
    kind == ErrorKind::BadBody && !detail.starts_with(ENCODED_BODY)
}

/// What a whole run against a named API says when its answers point at the template rather
/// than the API: not one id found and every answer a 404 (more often a wrong path than an
/// API without these users), or every answer a web page. `None` once anything was found or
/// failed otherwise, or with fewer than two such answers.
pub fn template_hint(
    found: u64,
    not_found: u64,
    web_pages: u64,
    other_failures: u64,
) -> Option<&'static str> {
    if found > 0 || other_failures > 0 {
        return None;
    }
    match (not_found, web_pages) {
        (2.., 0) => Some("not one id was found: is the path in the --api template the API's?"),
        (0, 2..) => Some(
            "not one answer was a JSON record: is the --api template the API's, and not a web page's?",
        ),
        _ => None,
    }
}

/// A body sent compressed though no `Accept-Encoding` asked for it (gzip, say): said as such,
/// where it read "not valid JSON (expected value at line 1 column 1)".
fn refuse_encoded(headers: &reqwest::header::HeaderMap) -> Result<(), AttemptFailure> {
    let Some(encoding) = headers.get(reqwest::header::CONTENT_ENCODING) else {
        return Ok(());
    };
    let encoding = String::from_utf8_lossy(encoding.as_bytes());
    // Only the codings that compress: a server that labels plain JSON oddly
    // (`Content-Encoding: UTF-8`) sent a body that may well parse.
    const COMPRESSED: [&str; 7] = [
        "gzip",
        "x-gzip",
        "deflate",
        "br",
        "zstd",
        "compress",
        "x-compress",
    ];
    if !encoding.split(',').any(|coding| {
        COMPRESSED
            .iter()
            .any(|c| coding.trim().eq_ignore_ascii_case(c))
    }) {
        return Ok(());
    }
    Err(AttemptFailure::fatal(
        ErrorKind::BadBody,
        format!(
            "{ENCODED_BODY} ({}), though userfetch asks for none: the server ignores that it \
             sent no Accept-Encoding",
            crate::term::quote(&format!("Content-Encoding: {encoding}"))
        ),
    ))
}

/// `host:port`, as error messages name a server.
fn host_port(url: &::url::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("?"),
        url.port_or_known_default().unwrap_or(0)
    )
}

fn parse_record(body: &[u8]) -> Result<Record, AttemptFailure> {
    Record::from_body(body).map_err(|e| AttemptFailure::fatal(ErrorKind::BadBody, e.to_string()))
}

/// The innermost message of an error chain: "connection refused" says more than
/// "error sending request for url (…)".
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Said only of a run where nothing was found and nothing failed otherwise, with two
    /// or more answers all of one kind: 404s, or web pages.
    #[test]
    fn the_template_is_questioned_only_when_every_answer_points_at_it() {
        let not_found = Some("not one id was found: is the path in the --api template the API's?");
        let web = Some(
            "not one answer was a JSON record: is the --api template the API's, and not a web page's?",
        );
        // (found, not found, web pages, other failures)
        for (counts, said) in [
            ((0, 2, 0, 0), not_found),
            ((0, 0, 2, 0), web),
            ((0, 2, 1, 0), None),
            ((0, 1, 1, 0), None),
            ((0, 1, 0, 0), None),
            ((0, 0, 1, 0), None),
            ((1, 5, 0, 0), None),
            ((0, 5, 0, 1), None),
            ((0, 0, 5, 1), None),
        ] {
            let (found, nf, web_pages, other) = counts;
            assert_eq!(
                template_hint(found, nf, web_pages, other),
                said,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn the_wait_the_api_asked_for_is_said_rounded_up_and_with_its_cap() {
        let secs = Duration::from_secs;
        assert_eq!(
            asked_to_wait(secs(2), secs(30)),
            "; the API asked to wait 2s"
        );
        // An HTTP date read a moment after the server wrote it.
        assert_eq!(
            asked_to_wait(Duration::from_millis(1_400), secs(30)),
            "; the API asked to wait 2s"
        );
        assert_eq!(asked_to_wait(Duration::ZERO, secs(30)), "");
        assert_eq!(
            asked_to_wait(secs(3600), secs(30)),
            "; the API asked to wait 1h, capped at 30s by --max-retry-wait"
        );
        assert_eq!(
            asked_to_wait(Duration::MAX, secs(30)),
            "; the API asked to wait more than a day, capped at 30s by --max-retry-wait"
        );
    }
}
