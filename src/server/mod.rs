//! The demo API: deterministic fake users over HTTP, with latency and fault injection.
//!
//! Served by hyper-util's auto builder rather than `axum::serve`, for two reasons measured on
//! this workload: it speaks HTTP/1.1 and cleartext HTTP/2 on one port, and it lets us raise
//! HTTP/2's concurrent-stream limit (hyper's default of 200 silently queues the rest, which
//! turned a 1 s benchmark into 50 s). axum still does the routing.

mod delay;
mod faults;
mod socket;
mod users;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use faults::{
    Fault, FaultCounter, FaultRate, RequestParams, check_shares as check_fault_shares,
};

/// How the demo API behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Users `1..=users` exist; every other id is a 404.
    pub users: u64,
    /// Added to every `/users` request before it is answered.
    pub latency: Duration,
    /// A random extra delay from zero up to this, on top of `latency`.
    pub jitter: Duration,
    /// Server-wide faults and the share of `/users` requests each one hits.
    pub faults: Vec<FaultRate>,
    /// What 429 answers put in `Retry-After`.
    pub retry_after: Duration,
    /// The pause between bytes of a `drip` body.
    pub drip_interval: Duration,
    /// Size of an `oversize` body.
    pub oversize_bytes: usize,
    /// Keep a log of every request (host, path, Authorization) for tests to inspect. Off by
    /// default: a benchmark server must not grow with every request.
    pub record_requests: bool,
    /// Say each request (method, path, status, the fault injected, how long it took) at
    /// `-v`: `serve` run as a test double for another client, whose author compares what it
    /// saw with what the server did. Off for the API started inside `get` or the screen,
    /// whose `-v` is about the lookups.
    pub log_requests: bool,
    /// How long a new connection may take to send its first request's head (either
    /// protocol), and an HTTP/1.1 connection to stay idle between requests. A client that
    /// connects and stalls would otherwise hold its socket and task for as long as the
    /// server runs. Longer than clients keep idle connections (userfetch 30 s), so that a
    /// client does not send on a connection the server is closing.
    pub head_timeout: Duration,
    /// Requests at once on one HTTP/2 connection. hyper's default is 200, past which
    /// requests queue silently; 100,000 lets one connection carry any `--concurrency`.
    /// Lower, it stands for the many servers that keep to 100–250.
    pub http2_streams: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            users: 10_000,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            faults: Vec::new(),
            retry_after: Duration::from_secs(1),
            drip_interval: Duration::from_millis(50),
            oversize_bytes: 8 * 1024 * 1024,
            record_requests: false,
            log_requests: false,
            head_timeout: Duration::from_secs(60),
            http2_streams: 100_000,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub host: Option<String>,
    pub path_and_query: String,
    pub authorization: Option<String>,
    /// Sent over HTTP/2 rather than HTTP/1.x.
    pub http2: bool,
}

/// What the server counted; tests assert on it rather than trusting the client's account.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    user_requests: AtomicU64,
    faults: AtomicU64,
    log: Mutex<Vec<LoggedRequest>>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Every request, any path.
    pub requests: u64,
    /// Requests to `/users/…`.
    pub user_requests: u64,
    /// Requests answered with an injected fault.
    pub faults: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            user_requests: self.user_requests.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
        }
    }

    /// The request log (empty unless `record_requests` is on).
    pub fn log(&self) -> Vec<LoggedRequest> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct State {
    config: ServerConfig,
    addr: SocketAddr,
    stats: Arc<Stats>,
    counter: FaultCounter,
    bodies: users::Bodies,
    delays: delay::Delays,
    /// Set once the server stops taking connections: a request dropped after it was cut
    /// short by the server, not given up by its client.
    stopping: std::sync::atomic::AtomicBool,
}

/// A running demo API. Dropping it leaves the server running until its runtime stops; call
/// [`ServerHandle::shutdown`] to stop it and wait.
pub struct ServerHandle {
    addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    runner: Runner,
}

enum Runner {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL template a client uses to reach this server.
    pub fn url_template(&self) -> String {
        format!("http://{}/users/{{id}}", self.addr)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops accepting, gives open connections a moment to finish, and waits.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        match self.runner {
            Runner::Task(task) => {
                let _ = task.await;
            }
            Runner::Thread(thread) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
    }

    /// Like [`ServerHandle::shutdown`], for callers outside any runtime (tests, mostly).
    pub fn shutdown_blocking(self) {
        self.shutdown.cancel();
        match self.runner {
            Runner::Task(task) => task.abort(),
            Runner::Thread(thread) => {
                let _ = thread.join();
            }
        }
    }
}

/// Starts the server on a thread of its own, with its own single-threaded runtime.
///
/// The embedded API plays an *external* service: it must keep answering while the caller's
/// thread is blocked (the interactive screen's sync mode blocks it on purpose), and its work
/// must not be counted as the caller's. Blocking until the socket is bound.
pub fn start_in_thread(config: ServerConfig) -> std::io::Result<ServerHandle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("userfetch-demo-api".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                match start(config).await {
                    Ok(handle) => {
                        let stop = handle.shutdown.clone();
                        let _ = tx.send(Ok((handle.addr, handle.stats.clone(), stop.clone())));
                        stop.cancelled().await;
                        handle.shutdown().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
    let (addr, stats, shutdown) = rx
        .recv()
        .map_err(|_| std::io::Error::other("the demo API thread ended before it started"))??;
    Ok(ServerHandle {
        addr,
        stats,
        shutdown,
        runner: Runner::Thread(thread),
    })
}

/// Where a client on this machine reaches a server bound to `bound`: an unspecified address
/// (`--bind 0.0.0.0` or `::`) takes connections on every address but is none to connect to,
/// so the URL printed and redirected to names the loopback address of its family.
fn reachable(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, bound.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, bound.port()))
        }
        _ => bound,
    }
}

/// Binds and starts serving in the background on the current runtime.
pub async fn start(config: ServerConfig) -> std::io::Result<ServerHandle> {
    let bodies = users::Bodies::new(config.users);
    let listener = TcpListener::bind(config.addr).await?;
    let addr = reachable(listener.local_addr()?);
    let stats = Arc::new(Stats::default());
    let state = Arc::new(State {
        config,
        addr,
        stats: stats.clone(),
        counter: FaultCounter::default(),
        bodies,
        delays: delay::Delays::start(),
        stopping: std::sync::atomic::AtomicBool::new(false),
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(listener, state, shutdown.clone()));
    Ok(ServerHandle {
        addr,
        stats,
        shutdown,
        runner: Runner::Task(task),
    })
}

async fn run(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    let router = router(state.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(Some(state.config.http2_streams));
    let head_timeout = state.config.head_timeout;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Whether accepting fails: said once when it starts, not at every retry (a burst out of
    // file descriptors printed hundreds of lines).
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                failing = false;
                stream
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("demo API: accept failed: {e}");
                    failing = true;
                }
                // Out of file descriptors, usually: back off instead of spinning, as
                // mini-redis's accept loop does.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // The first request's head must come within the limit, whatever the protocol:
            // hyper's HTTP/1.1 head timer starts only once it has told HTTP/1.1 from HTTP/2,
            // which waits without a limit for the bytes that tell (a stalled half of
            // HTTP/2's preface, say), and HTTP/2 itself has none. After it, HTTP/1.1
            // connections idle between requests are hyper's to time out.
            let asked = Arc::new(tokio::sync::Notify::new());
            let first = asked.clone();
            let service = hyper::service::service_fn(move |req| {
                first.notify_one();
                handle(state.clone(), router.clone(), req)
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(socket::Unvectored(stream)), service);
            let mut conn = std::pin::pin!(watcher.watch(conn));
            tokio::select! {
                _ = &mut conn => return,
                () = asked.notified() => {}
                // Dropped unanswered: the socket closes.
                () = tokio::time::sleep(head_timeout) => return,
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    state.stopping.store(true, Ordering::Relaxed);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}

/// Returned from the service to make hyper drop the connection without answering.
#[derive(Debug)]
struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injected: connection closed")
    }
}

impl std::error::Error for CloseConnection {}

/// The fault chosen for one `/users` request, handed to the route handler.
#[derive(Clone)]
struct Decision {
    fault: Option<Fault>,
    params: RequestParams,
}

async fn handle(
    state: Arc<State>,
    router: Router,
    req: Request<Incoming>,
) -> Result<Response<Body>, CloseConnection> {
    if !(state.config.log_requests && tracing::enabled!(tracing::Level::INFO)) {
        return answer(state, router, req, &mut None).await;
    }
    let mut log = RequestLog {
        state: state.clone(),
        started: std::time::Instant::now(),
        method: req.method().clone(),
        target: req
            .uri()
            .path_and_query()
            .map_or_else(String::new, |p| p.to_string()),
        fault: None,
        said: false,
    };
    let answered = answer(state, router, req, &mut log.fault).await;
    log.said = true;
    let (method, target, took) = (&log.method, &log.target, log.started.elapsed());
    let fault = log.fault_said();
    match &answered {
        // To the answer's head: a body sent slowly (drip) takes longer.
        Ok(response) => tracing::info!(
            "{method} {target} {}{fault} in {took:.1?}",
            response.status().as_u16()
        ),
        Err(_) => tracing::info!("{method} {target} closed without an answer{fault} in {took:.1?}"),
    }
    answered
}

/// One request as `serve -v` says it. Dropped unsaid, the request was given up by the client
/// (a timeout in a latency) before its answer, which is what a client author testing their
/// timeouts wants to see, or cut short as the server stopped: said which.
struct RequestLog {
    state: Arc<State>,
    started: std::time::Instant,
    method: axum::http::Method,
    target: String,
    fault: Option<Fault>,
    said: bool,
}

impl RequestLog {
    fn fault_said(&self) -> String {
        self.fault
            .map_or(String::new(), |f| format!(" (fault {})", f.name()))
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if !self.said {
            let by = if self.state.stopping.load(Ordering::Relaxed) {
                "cut short as the server stopped"
            } else {
                "given up by the client"
            };
            tracing::info!(
                "{} {} {by}{} after {:.1?}",
                self.method,
                self.target,
                self.fault_said(),
                self.started.elapsed()
            );
        }
    }
}

/// `chosen` is told the fault injected, if any.
async fn answer(
    state: Arc<State>,
    router: Router,
    mut req: Request<Incoming>,
    chosen: &mut Option<Fault>,
) -> Result<Response<Body>, CloseConnection> {
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    if state.config.record_requests {
        let entry = LoggedRequest {
            host: request_host(req.headers(), req.uri()),
            path_and_query: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            authorization: header_text(req.headers(), header::AUTHORIZATION),
            http2: req.version() == axum::http::Version::HTTP_2,
        };
        state
            .stats
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
    }
    if req.uri().path().starts_with("/users/") {
        state.stats.user_requests.fetch_add(1, Ordering::Relaxed);
        let params = match RequestParams::parse(req.uri().query()) {
            Ok(p) => p,
            Err(e) => return Ok(error_response(StatusCode::BAD_REQUEST, &e)),
        };
        let prior = if params.fault_times.is_some() {
            // Path and query only: over HTTP/2 the URI also carries scheme and host, and a
            // URL asked over both protocols is one URL.
            let key = req.uri().path_and_query().map_or("", |pq| pq.as_str());
            state.counter.bump(key)
        } else {
            0
        };
        let fault = faults::decide(&params, &state.config.faults, prior, fastrand::f64())
            .filter(|f| !f.alters_the_body() || known_user(&state, req.uri().path()));
        let latency = params.latency.unwrap_or(state.config.latency)
            + params
                .jitter
                .unwrap_or(state.config.jitter)
                .mul_f64(fastrand::f64());
        if !latency.is_zero() {
            state.delays.sleep(latency).await;
        }
        if fault.is_some() {
            state.stats.faults.fetch_add(1, Ordering::Relaxed);
        }
        *chosen = fault;
        if fault == Some(Fault::Close) {
            return Err(CloseConnection);
        }
        req.extensions_mut().insert(Decision { fault, params });
    }
    match router.oneshot(req).await {
        Ok(response) => Ok(response),
        Err(never) => match never {},
    }
}

/// Whether `path` asks for a user the API has, with the id decoded as the handler decodes
/// it (`/users/%31` is user 1).
fn known_user(state: &State, path: &str) -> bool {
    path.strip_prefix("/users/")
        .and_then(|id| percent_encoding::percent_decode_str(id).decode_utf8().ok())
        .and_then(|id| user_number(&id, state.config.users))
        .is_some()
}

/// The user an id names: a whole number from 1 to `users`, written as such. "007" and "+7"
/// are other ids, and not found: answering them with user 7 would put one user in a batch's
/// output twice, under two ids.
fn user_number(id: &str, users: u64) -> Option<u64> {
    let canonical = id.bytes().all(|b| b.is_ascii_digit()) && !id.starts_with('0');
    canonical
        .then(|| id.parse::<u64>().ok())
        .flatten()
        .filter(|n| (1..=users).contains(n))
}

/// The host a request was sent to: the Host header (HTTP/1.1) or the URI's authority (HTTP/2,
/// which carries it as `:authority`).
fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    header_text(headers, header::HOST).or_else(|| uri.authority().map(|a| a.to_string()))
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/users/{id}", get(user))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .with_state(state)
}

async fn health(AxState(state): AxState<Arc<State>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "users": state.config.users }))
}

async fn stats(AxState(state): AxState<Arc<State>>) -> Json<StatsSnapshot> {
    Json(state.stats.snapshot())
}

fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    json_response(status, Body::from(body))
}

fn json_response(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn user(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
    decision: Option<Extension<Decision>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response<Body> {
    let Extension(decision) = decision.unwrap_or(Extension(Decision {
        fault: None,
        params: RequestParams::default(),
    }));
    let known = user_number(&id, state.config.users);
    let retry_after = decision
        .params
        .retry_after
        .unwrap_or(state.config.retry_after);
    match decision.fault {
        None => {}
        Some(Fault::Status500) => {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "injected fault");
        }
        Some(Fault::Status503) => {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "injected fault");
        }
        Some(Fault::RateLimit) => {
            let mut r = error_response(StatusCode::TOO_MANY_REQUESTS, "slow down");
            // Whole seconds, rounded up, as the header requires.
            let secs = retry_after.as_millis().div_ceil(1000);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
            return r;
        }
        Some(Fault::RateLimitDate) => {
            let mut r = error_response(StatusCode::TOO_MANY_REQUESTS, "slow down");
            // Rounded up to the whole second, as the seconds form is: a date cut down would
            // ask for less than --retry-after (for under a second, a date already past).
            let at = (SystemTime::now() + retry_after)
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(SystemTime::UNIX_EPOCH, |since| {
                    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
                    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
                });
            let date = httpdate::fmt_http_date(at);
            if let Ok(v) = HeaderValue::from_str(&date) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Some(Fault::Redirect | Fault::RedirectOtherHost) => {
            let host = match (decision.fault, request_host(&headers, &uri)) {
                (Some(Fault::RedirectOtherHost), Some(h))
                    if h.to_ascii_lowercase().starts_with("localhost") =>
                {
                    format!("127.0.0.1:{}", state.addr.port())
                }
                (Some(Fault::RedirectOtherHost), _) => format!("localhost:{}", state.addr.port()),
                (_, Some(h)) => h,
                (_, None) => state.addr.to_string(),
            };
            let location = format!(
                "http://{host}/users/{}{}",
                encode_segment(&id),
                query_without_faults(uri.query())
            );
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return r;
        }
        Some(Fault::Oversize) => return oversize(known.unwrap_or(1), state.config.oversize_bytes),
        Some(Fault::Malformed) => {
            return json_response(
                StatusCode::OK,
                Body::from(r#"{"id": 1, "name": "Leanne Gra"#),
            );
        }
        Some(Fault::Close) => {} // handled before routing
        Some(Fault::Hostile) => {
            let body =
                serde_json::to_vec(&users::hostile_user(known.unwrap_or(1))).unwrap_or_default();
            return json_response(StatusCode::OK, Body::from(body));
        }
        Some(Fault::Truncate | Fault::Drip) => {
            let body = state.bodies.get(known.unwrap_or(1));
            let len = body.len();
            let stream_body = if decision.fault == Some(Fault::Truncate) {
                let half = body.slice(..len / 2);
                // The pause lets the headers and the first half go out before the failure;
                // otherwise hyper sees the error first and sends nothing at all.
                let cut = futures::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(std::io::Error::other("fault injected: body truncated"))
                });
                Body::from_stream(futures::stream::iter([Ok(half)]).chain(cut))
            } else {
                let interval = state.config.drip_interval;
                Body::from_stream(futures::stream::unfold(0usize, move |i| {
                    let body = body.clone();
                    async move {
                        if i >= body.len() {
                            return None;
                        }
                        tokio::time::sleep(interval).await;
                        Some((Ok::<_, Infallible>(body.slice(i..i + 1)), i + 1))
                    }
                }))
            };
            let mut r = json_response(StatusCode::OK, stream_body);
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            return r;
        }
    }
    match known {
        Some(n) => json_response(StatusCode::OK, Body::from(state.bodies.get(n))),
        None => error_response(StatusCode::NOT_FOUND, "user not found"),
    }
}

/// A valid JSON object of about `size` bytes, streamed in chunks without a length so the
/// client can only stop it by counting.
fn oversize(id: u64, size: usize) -> Response<Body> {
    const CHUNK: usize = 64 * 1024;
    let head = Bytes::from(format!(r#"{{"id":{id},"padding":""#));
    let filler = Bytes::from(vec![b'x'; CHUNK]);
    let chunks = size / CHUNK;
    let stream = futures::stream::iter(
        std::iter::once(head)
            .chain(std::iter::repeat_n(filler, chunks))
            .chain(std::iter::once(Bytes::from_static(b"\"}")))
            .map(Ok::<_, Infallible>),
    );
    json_response(StatusCode::OK, Body::from_stream(stream))
}

fn encode_segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The request's query minus the fault parameters, so a redirect target answers normally;
/// everything else (latency, retry_after, the client's own parameters) is kept as sent.
fn query_without_faults(query: Option<&str>) -> String {
    // Each pair kept as written (`x` stays `x`, not `x=`), judged by its decoded name.
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_some_and(|(key, _)| !RequestParams::is_fault_param(&key))
        })
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_bind_is_reached_on_loopback() {
        let reached = |bound: &str| reachable(bound.parse().unwrap()).to_string();
        assert_eq!(reached("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(reached("[::]:8080"), "[::1]:8080");
        assert_eq!(reached("192.0.2.7:80"), "192.0.2.7:80");
        assert_eq!(reached("[::1]:80"), "[::1]:80");
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_client_that_stalls_before_its_request_is_whole_is_dropped() {
        let server = start(ServerConfig {
            head_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        })
        .await
        .unwrap();
        let complete = b"GET /users/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        for head in [
            &b""[..],
            &complete[..20],
            &complete[..complete.len() - 2],
            &preface[..10],
            &preface[..],
        ] {
            let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
            stream.write_all(head).await.unwrap();
            let mut answer = Vec::new();
            // Generous against the 0.3 s limit; without a limit the read never ends.
            let read =
                tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                    .await;
            assert!(read.is_ok(), "still open after 10 s, having sent {head:?}");
        }
        // Once a request has come, the limit is off: an answer slower than it still comes.
        let slow = b"GET /users/1?latency=1s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        for request in [&complete[..], &slow[..]] {
            let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
            stream.write_all(request).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
    }

    /// The raw answer to one HTTP/1.1 GET of `target` with `host` as its Host header.
    async fn ask(server: &ServerHandle, target: &str, host: &str) -> String {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    fn header<'a>(answer: &'a str, name: &str) -> &'a str {
        answer
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {answer}"))
    }

    /// The date form asks for at least --retry-after, as the seconds form does: cut down to
    /// the second, `retry_after=300ms` was mostly a date already past.
    #[tokio::test]
    async fn a_retry_after_date_is_never_sooner_than_asked() {
        let server = start(ServerConfig::default()).await.unwrap();
        for _ in 0..3 {
            let asked = SystemTime::now();
            let answer = ask(&server, "/users/1?fault=429-date&retry_after=300ms", "x").await;
            let at = httpdate::parse_http_date(header(&answer, "retry-after")).unwrap();
            assert!(at >= asked + Duration::from_millis(300), "{answer}");
        }
    }

    /// A redirect fault sends the client on with the query it came with, fault parameters
    /// left out: nothing else dropped or rounded.
    #[tokio::test]
    async fn a_redirect_keeps_the_query_but_the_faults() {
        let server = start(ServerConfig::default()).await.unwrap();
        let answer = ask(
            &server,
            "/users/1?fault=redirect&fault_rate=1&fields=all&latency=999us&retry_after=2s&x&y=%20",
            "x",
        )
        .await;
        assert_eq!(
            header(&answer, "location"),
            "http://x/users/1?fields=all&latency=999us&retry_after=2s&x&y=%20"
        );
        // Host names are case-blind: LOCALHOST is not another host than localhost.
        let answer = ask(&server, "/users/1?fault=redirect-other-host", "LOCALHOST:9").await;
        let port = server.addr().port();
        assert_eq!(
            header(&answer, "location"),
            format!("http://127.0.0.1:{port}/users/1")
        );
    }

    /// `/users/%31` is user 1 to the handler, and so to the faults that alter a user's body.
    #[tokio::test]
    async fn a_percent_encoded_id_meets_the_body_faults() {
        let server = start(ServerConfig::default()).await.unwrap();
        let answer = ask(&server, "/users/%31?fault=hostile", "x").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(server.stats().faults.load(Ordering::Relaxed), 1, "{answer}");
    }

    #[tokio::test]
    async fn a_duration_past_100_years_in_a_request_is_refused_not_a_panic() {
        let server = start(ServerConfig::default()).await.unwrap();
        let most = "18446744073709551615s";
        for query in [
            format!("latency={most}&jitter={most}"),
            format!("fault=429-date&retry_after={most}"),
            format!("fault=429&retry_after={most}999ms"),
        ] {
            let request =
                format!("GET /users/1?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 400"), "{query}: {answer}");
            assert!(answer.contains("100 years"), "{query}: {answer}");
        }
    }
}
