//! The HTTP client: one `reqwest::Client` per process, retries, timeouts, a body cap, and a
//! classified error for every way a lookup can fail.

mod error;
mod h2;
mod retry;
mod url;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};

pub use error::{AfterAttempts, ErrorKind, FetchError};
pub use retry::{RetryPolicy, parse_retry_after};
pub use url::{TemplateError, UrlTemplate};

use crate::id::UserId;
use crate::record::Record;

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

/// Why one attempt failed, and whether another could succeed.
struct AttemptFailure {
    kind: ErrorKind,
    detail: String,
    retryable: bool,
    retry_after: Option<Duration>,
    /// 429 or 503: the API's own request to slow down.
    pushed_back: bool,
    /// No connection within `--connect-timeout`.
    connect_timed_out: bool,
}

impl AttemptFailure {
    fn fatal(kind: ErrorKind, detail: impl Into<String>) -> Self {
        AttemptFailure {
            kind,
            detail: detail.into(),
            retryable: false,
            retry_after: None,
            pushed_back: false,
            connect_timed_out: false,
        }
    }

    fn transient(kind: ErrorKind, detail: impl Into<String>) -> Self {
        AttemptFailure {
            retryable: true,
            ..AttemptFailure::fatal(kind, detail)
        }
    }

    /// A failure at a redirect's target, said as such: it would read as the API's own, and
    /// the hint about the API's scheme would point at the wrong URL.
    fn after_redirect(mut self, target: &::url::Url) -> Self {
        // Not started again for a stop: that would ask the first hop again, one request
        // more at the API than the attempts say.
        self.connect_timed_out = false;
        let detail = self
            .detail
            .replace(NOT_TLS_HINT, "; the server does not seem to speak TLS");
        self.detail = format!(
            "after a redirect to {}: {detail}",
            crate::term::fit(target.as_str(), 100)
        );
        self
    }
}

/// rustls' words for a handshake answered with something that is not TLS: most often a
/// plain-HTTP server behind an https:// template.
const NOT_TLS_HINT: &str = "; the server does not seem to speak TLS: is the API http://?";

/// Which certificates an https:// API's certificate was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roots {
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
    fn for_config(config: &ClientConfig) -> Roots {
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
    fn unusable_named() -> Option<String> {
        if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
            let shown = std::path::Path::new(&file).display().to_string();
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
                    dir.display()
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

/// What a connect error's innermost cause adds for the user, and whether another attempt
/// could help. Neither a refused certificate nor a server that does not speak TLS changes
/// its mind when asked again. rustls says why a certificate was refused in its own enum
/// names; only an unknown issuer is a question of which roots are trusted (an expired
/// certificate or one for another name is not mended by adding a CA).
fn connect_hint(cause: &str, roots: Roots) -> (&'static str, bool) {
    if cause.contains("InvalidContentType") {
        return (NOT_TLS_HINT, false);
    }
    if !cause.contains("invalid peer certificate") {
        return ("", true);
    }
    let hint = if cause.contains("CaUsedAsEndEntity") {
        "; the server presents a CA certificate as its own (as a self-signed one made with \
         `openssl req -x509` is): it needs a certificate issued by a CA"
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
                 userfetch (this system's store is read only when --api is https://)"
            }
        }
    } else {
        "; the server's TLS certificate was refused"
    };
    (hint, false)
}

/// What an API said when asked whether it speaks cleartext HTTP/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2c {
    /// It does, taking `streams` requests at once on a connection (`u32::MAX`: no limit said).
    Speaks { streams: u32 },
    /// It answered as something else (HTTP/1.1), closed, or refused the connection; or it
    /// is an https:// API, where TLS settles the protocol.
    DoesNot,
    /// Nothing came within the time allowed.
    NoAnswer,
}

/// Asks the API behind `template` once, within `limit` of the time the process runs,
/// whether it speaks cleartext HTTP/2 (see [`h2::offers_h2c`]).
pub async fn offers_h2c(template: &UrlTemplate, limit: Duration) -> H2c {
    let origin = template.origin();
    match (origin.scheme(), origin.host_str()) {
        ("http", Some(host)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = origin.port_or_known_default().unwrap_or(80);
            h2::offers_h2c(host, port, limit).await
        }
        _ => H2c::DoesNot,
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
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
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("userfetch/", env!("CARGO_PKG_VERSION")))
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
        // Prior knowledge is for cleartext (h2c) only; over TLS, ALPN lets the server choose,
        // so an https API that speaks only HTTP/1.1 still works with --http2.
        if config.http2 && config.template.origin().scheme() == "http" {
            builder = builder.http2_prior_knowledge();
        }
        let http = builder
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
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
        let origin = config.template.origin();
        let h2 = match (config.http2, origin.scheme(), origin.host_str()) {
            (true, "http", Some(host)) => Some(Arc::new(h2::H2::new(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                origin.port_or_known_default().unwrap_or(80),
                config.connect_timeout,
            ))),
            _ => None,
        };
        Ok(Client {
            http,
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
                // Reads on with the attempt count: "…: server answered 429 after 2 attempts".
                let why = format!(
                    "retries stopped at --retry-max-time ({}): {}",
                    humantime::format_duration(policy.max_time),
                    error.detail()
                );
                return Err(FetchError::new(error.kind, attempt, why));
            }
            tracing::info!(%id, attempt, ?delay, %error, "retrying");
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
            let with_token = target.origin() == self.config.template.origin().origin();
            self.redirects.fetch_add(1, Ordering::Relaxed);
            let hop = Box::pin(self.attempt_reqwest(target.as_str(), with_token))
                .await
                .map_err(|failure| failure.after_redirect(&target))?;
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

    /// `with_token`: whether `url` may see the token (false for another origin).
    async fn attempt_reqwest(&self, url: &str, with_token: bool) -> Result<Hop, AttemptFailure> {
        let mut request = self.http.get(url);
        if let Some(auth) = self.auth.as_ref().filter(|_| with_token) {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let mut response = request.send().await.map_err(|e| self.classify(&e, 0))?;
        let status = response.status();
        if let Some(location) = redirect_location(status, response.headers()) {
            drain(&mut response).await;
            return Ok(Hop::Redirect(location));
        }
        if !status.is_success() {
            let token = self.token_use(with_token);
            let retry_after = response.headers().get(RETRY_AFTER).cloned();
            let body = drain(&mut response).await;
            return Err(self.status_failure(status, retry_after.as_ref(), token, &body));
        }
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
                HeaderValue::from_static(concat!("userfetch/", env!("CARGO_PKG_VERSION"))),
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
                    format!("cannot connect to {host} ({why})"),
                ),
                h2::H2Error::Send(e) => AttemptFailure::transient(
                    ErrorKind::Connection,
                    // The hint inside the brackets, so the attempt count that follows
                    // ("… after 4 attempts") does not read as part of it.
                    format!(
                        "the connection to {host} failed before an answer came ({}{})",
                        innermost(&e),
                        if h2.has_answered() || h2::sent_by_server(&e) {
                            ""
                        } else {
                            "; if the API does not speak cleartext HTTP/2, pass --http1"
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
                "the response is larger than the {} byte limit (raise it with --max-body)",
                self.config.max_body
            ),
        )
    }

    fn classify(&self, e: &reqwest::Error, body_so_far: usize) -> AttemptFailure {
        // The host that failed, which after a redirect is not the API's own.
        let host = e.url().map_or_else(|| self.host(), host_port);
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
            return AttemptFailure::transient(
                ErrorKind::Timeout,
                format!(
                    "no complete answer within {} (raise it with --timeout)",
                    humantime::format_duration(self.config.timeout)
                ),
            );
        }
        if e.is_body() || e.is_decode() {
            return AttemptFailure::transient(
                ErrorKind::BadBody,
                format!(
                    "the response body was cut off after {body_so_far} bytes ({})",
                    root_cause(e)
                ),
            );
        }
        if e.is_connect() {
            let cause = root_cause(e);
            let (hint, retryable) = connect_hint(&cause, self.roots);
            let failure = AttemptFailure::fatal(
                ErrorKind::Connection,
                format!("cannot connect to {host} ({cause}){hint}"),
            );
            return AttemptFailure {
                retryable,
                ..failure
            };
        }
        AttemptFailure::transient(
            ErrorKind::Connection,
            format!(
                "the connection to {host} failed before an answer came ({})",
                root_cause(e)
            ),
        )
    }

    /// One request to the API's `/health`, for the UI's background check: its latency, or why
    /// it failed. Any HTTP answer counts as reachable (most APIs have no `/health`, and a 404
    /// still proves the server is up); only transport failures count as down. The token is not
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
            .ok_or_else(|| {
                let f = self.timed_out();
                FetchError::new(f.kind, 1, f.detail)
            })?
            .map_err(|e| {
                let f = self.classify(&e, 0);
                FetchError::new(f.kind, 1, f.detail)
            })?;
        drop(response);
        Ok(started.elapsed())
    }

    fn host(&self) -> String {
        host_port(self.config.template.origin())
    }
}

/// `host:port`, as error messages name a server.
fn host_port(url: &::url::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("?"),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// Reads a body nobody needs (a 404's, a redirect's) to its end, so that the HTTP/1.1
/// connection goes back to the pool: dropped unread, it is closed, and a batch of mostly
/// unknown ids opened a connection per id. A body over 64 KiB is not worth the wait; errors
/// only cost the connection. The attempt's deadline still bounds the wait. Returns the
/// body's first [`SAID_BYTES`], for an error's message.
async fn drain(response: &mut reqwest::Response) -> Vec<u8> {
    let mut said = Vec::new();
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
    said
}

/// How much of an error answer's body is read for its message: enough for a JSON error with
/// a long message to parse whole.
const SAID_BYTES: usize = 16 * 1024;
/// How much of it the message quotes, in terminal columns, before the mark of a cut.
const SAID_COLUMNS: usize = 200;
/// How long an error body gets to arrive over HTTP/2, where nothing else needs it read.
const SAID_WAIT: Duration = Duration::from_millis(200);

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
    }
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() || line.starts_with('<') {
        return None;
    }
    // Cut by the columns it takes on a terminal (200 CJK characters are 400): the text kept,
    // and the mark saying it was cut.
    Some(crate::term::fit(&line, SAID_COLUMNS + 1))
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

fn parse_record(body: &[u8]) -> Result<Record, AttemptFailure> {
    Record::from_body(body).map_err(|e| AttemptFailure::fatal(ErrorKind::BadBody, e.to_string()))
}

/// Whether a request carried `USERFETCH_TOKEN`, for what a 401 or 403 suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Sent,
    NotSet,
    /// Never sent there: the request went to another origin after a redirect.
    Withheld,
}

/// `body`: the start of the answer's body, quoted in the message when it says something,
/// without `secret` (see [`said`]).
fn status_failure(
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
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => AttemptFailure::fatal(
            ErrorKind::Rejected,
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

/// The innermost message of an error chain: "connection refused" says more than
/// "error sending request for url (…)".
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn root_cause(e: &reqwest::Error) -> String {
    innermost(e)
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
                "invalid peer certificate: Expired",
                WithSystem,
                "was refused",
            ),
        ] {
            let (hint, retryable) = connect_hint(cause, roots);
            assert!(hint.contains(says), "{cause}: {hint}");
            assert!(!retryable, "{cause}");
        }
        // A CA file cannot mend an expired certificate or a CA posing as a server.
        for cause in ["Expired", "Other(OtherError(CaUsedAsEndEntity))"] {
            let hint = connect_hint(&format!("invalid peer certificate: {cause}"), WithSystem).0;
            assert!(!hint.contains("SSL_CERT_FILE"), "{hint}");
        }
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
