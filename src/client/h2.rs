//! Cleartext HTTP/2 straight on hyper's connection: one TCP connection, no pool.
//!
//! Used for `--http2` with an `http://` API. reqwest over HTTP/2 keeps about 11 KB of
//! per-request state in its client and hyper-util's pool; with 10,000 lookups in flight that
//! was 122 MB and 15 µs of CPU per request, against 34 MB and 6.5 µs on hyper's connection
//! directly (measured on this workload, see docs/PERFORMANCE.md). Whatever needs reqwest's
//! extras (following a redirect) falls back to reqwest for that attempt.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// Why a request never got an answer.
pub(super) enum H2Error {
    /// No connection could be opened: how, said after "cannot connect to HOST" (" within 5s
    /// (raise it …)", " (Connection refused …)"), as over HTTP/1.1.
    Connect(String),
    /// The connection or the stream failed before the response head came.
    Send(hyper::Error),
}

/// A request the server never processed is sent again at once, and is no attempt: one
/// refused before it left (the connection had closed), one the server turned away with a
/// graceful GOAWAY whose last stream id is below it (RFC 9113 §6.8: such requests "can be
/// safely retried"), both on a fresh connection, and one whose stream it reset with
/// REFUSED_STREAM, on the same. Servers that recycle connections every N requests
/// (nginx's `keepalive_requests`, 1,000 by default) do this to every stream in flight at
/// that moment. Bounded, so a server that closes every connection still ends in an error.
const RESENDS: u32 = 3;

/// How often an idle or busy connection is pinged, and how long the answer may take. Without
/// it a connection whose peer vanished (no FIN, no RST) is only noticed when every request on
/// it has timed out, and the next attempts would queue on it again.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the server at `host:port` speaks cleartext HTTP/2 (h2c with prior knowledge), and
/// if so how many requests it takes at once on a connection. Sends the client preface and an
/// empty SETTINGS frame and reads the first frame back: an HTTP/2 server answers with its own
/// SETTINGS frame at once, an HTTP/1.1 server with an error page, or by closing. Written by
/// hand: hyper's handshake does not wait for the server's first frame, so a server that does
/// not speak HTTP/2 shows only when requests fail, and hyper keeps its settings to itself.
pub(super) async fn offers_h2c(host: &str, port: u16, limit: Duration) -> super::H2c {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The preface, then SETTINGS: length 0, type 4, no flags, stream 0.
    const HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    // More than any real SETTINGS frame (6 bytes a setting, a few settings).
    const MOST: usize = 1024;
    const MAX_CONCURRENT_STREAMS: u16 = 3;
    // The answer's streams limit; `None` for anything but HTTP/2's SETTINGS.
    async fn ask(stream: &mut TcpStream) -> Option<u32> {
        stream.write_all(HELLO).await.ok()?;
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.ok()?;
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let settings = head[3] == 4 && head[5..] == [0, 0, 0, 0];
        if !settings || length > MOST || length % 6 != 0 {
            return None;
        }
        let mut payload = vec![0u8; length];
        stream.read_exact(&mut payload).await.ok()?;
        let streams = payload
            .chunks_exact(6)
            .filter(|s| u16::from_be_bytes([s[0], s[1]]) == MAX_CONCURRENT_STREAMS)
            .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
            .next_back();
        // A limit of 0 lets no request through at all: as good as no HTTP/2.
        streams.map_or(Some(u32::MAX), |n| (n > 0).then_some(n))
    }
    let probe = async {
        let mut stream = match TcpStream::connect((host, port)).await {
            Ok(stream) => stream,
            Err(e) => return Err(e.to_string()),
        };
        Ok(ask(&mut stream).await)
    };
    match crate::stopped::within(limit, probe).await {
        Some(Ok(Some(streams))) => super::H2c::Speaks { streams },
        Some(Ok(None)) => super::H2c::DoesNot,
        Some(Err(why)) => super::H2c::Unreachable(why),
        None => super::H2c::NoAnswer,
    }
}

/// A connection's request handle and its generation.
type Current = (u64, SendRequest<Empty<Bytes>>);

pub(super) struct H2 {
    host: String,
    port: u16,
    connect_timeout: Duration,
    /// The one connection and its generation; replaced when it closes. The generation lets a
    /// failed request drop the connection it used without dropping a newer one another
    /// request already opened. Held only to copy or replace the handle, never across an await.
    current: std::sync::Mutex<Option<Current>>,
    /// Held while a connection is opened, so that thousands of first requests wait for one
    /// handshake instead of each opening a connection; holds why the last attempt failed.
    connecting: tokio::sync::Mutex<Option<String>>,
    /// Connection attempts finished. A request that waited while one was made shares its
    /// failure rather than try again in turn: against a host that drops connection attempts,
    /// each would wait out --connect-timeout after the one before, and the last ones would
    /// run out of their attempt's time and fail as timeouts.
    attempts: std::sync::atomic::AtomicU64,
    generation: std::sync::atomic::AtomicU64,
    /// Whether any request has had an answer over HTTP/2 from this server.
    answered: std::sync::atomic::AtomicBool,
}

impl H2 {
    pub(super) fn new(host: String, port: u16, connect_timeout: Duration) -> H2 {
        H2 {
            host,
            port,
            connect_timeout,
            current: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
            attempts: std::sync::atomic::AtomicU64::new(0),
            generation: std::sync::atomic::AtomicU64::new(0),
            answered: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// False until a response comes: a server that only speaks HTTP/1.1 fails every request
    /// sent this way, and never answers one.
    pub(super) fn has_answered(&self) -> bool {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn sender(&self) -> Result<Current, H2Error> {
        match self.open_sender() {
            Some(current) => Ok(current),
            // Boxed: opening a connection is rare, and its state would otherwise be part of
            // (and copied with) every request's future.
            None => Box::pin(self.connect()).await,
        }
    }

    fn open_sender(&self) -> Option<Current> {
        self.slot()
            .as_ref()
            .filter(|(_, s)| !s.is_closed())
            .map(|(generation, sender)| (*generation, sender.clone()))
    }

    /// A panic elsewhere while the lock was held cannot leave the slot half-written (it is
    /// only ever replaced whole), so a poisoned lock is still good.
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn connect(&self) -> Result<Current, H2Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let seen = self.attempts.load(Relaxed);
        let mut last_failure = self.connecting.lock().await;
        // Another request may have opened one while this one waited, or failed to.
        if let Some(current) = self.open_sender() {
            return Ok(current);
        }
        if self.attempts.load(Relaxed) != seen
            && let Some(why) = last_failure.as_ref()
        {
            return Err(H2Error::Connect(why.clone()));
        }
        let opened = self.open().await;
        *last_failure = match &opened {
            Err(H2Error::Connect(why)) => Some(why.clone()),
            _ => None,
        };
        self.attempts.fetch_add(1, Relaxed);
        opened
    }

    async fn open(&self) -> Result<Current, H2Error> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = crate::stopped::within(self.connect_timeout, connect)
            .await
            .ok_or_else(|| {
                H2Error::Connect(format!(
                    " within {} (raise it with --connect-timeout)",
                    humantime::format_duration(self.connect_timeout)
                ))
            })?
            .map_err(|e| H2Error::Connect(format!(" ({e})")))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Records are small; a modest window keeps a burst of 10,000 answers from
            // parking megabytes in flow-control buffers.
            .initial_stream_window_size(64 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            // Between waves of a batch the connection may sit idle; it must still be known
            // alive when the next wave is sent on it.
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| H2Error::Connect(format!(" ({e})")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("HTTP/2 connection ended: {e}");
            }
        });
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.slot() = Some((generation, sender.clone()));
        Ok((generation, sender))
    }

    /// Drops the connection of `generation` if it is still the current one, so the next
    /// request opens a new connection instead of failing on a broken one.
    fn forget(&self, generation: u64) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }

    /// Sends the request `build` makes, again (built anew) when the connection turned it
    /// away unprocessed. Built per send rather than cloned: h2 takes a request by value, and
    /// a copy per request kept for a rare resend cost a header map each time.
    pub(super) async fn send(
        &self,
        build: impl Fn() -> hyper::Request<Empty<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, H2Error> {
        let mut resends = 0;
        loop {
            let (generation, mut sender) = self.sender().await?;
            match sender.send_request(build()).await {
                Ok(response) => {
                    self.answered
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(response);
                }
                Err(e) => {
                    let refused = refused(&e);
                    let unprocessed = e.is_canceled() || turned_away(&e) || refused;
                    // A closed sender or a request that never left means the connection is
                    // gone, not just this stream: stop handing it out. A refused stream
                    // leaves the connection as it was.
                    if (unprocessed && !refused) || sender.is_closed() {
                        self.forget(generation);
                    }
                    if unprocessed && resends < RESENDS {
                        resends += 1;
                        tracing::debug!(
                            "HTTP/2 request refused before it was sent ({e}); resending"
                        );
                        continue;
                    }
                    return Err(H2Error::Send(e));
                }
            }
        }
    }
}

/// Whether the failure was a frame the server sent (a reset or a GOAWAY): proof that it
/// speaks HTTP/2, whatever else went wrong.
pub(super) fn sent_by_server(e: &hyper::Error) -> bool {
    h2_error(e).is_some_and(h2::Error::is_remote)
}

fn h2_error(e: &hyper::Error) -> Option<&h2::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        source = err.source();
    }
    None
}

/// Whether the server said, with a graceful GOAWAY (NO_ERROR), that it never processed this
/// stream: h2 fails the streams above the GOAWAY's last stream id, and any opened after it,
/// with that frame. A GOAWAY with an error code also fails streams the server may have
/// processed, so only NO_ERROR counts. (A server that closes the connection before finishing
/// the streams it kept makes those fail the same way; they are GETs, so asking again is safe,
/// but the server then counts one request more than the attempts.)
fn turned_away(e: &hyper::Error) -> bool {
    h2_error(e).is_some_and(|h2| {
        h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR)
    })
}

/// Whether the server reset the stream with REFUSED_STREAM, which says it did no work on it
/// (RFC 9113 §8.7): a server with a low limit on streams at once does that to the ones a
/// client opened before its SETTINGS arrived.
fn refused(e: &hyper::Error) -> bool {
    h2_error(e).is_some_and(|h2| {
        h2.is_reset() && h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A listener on a free port whose every connection goes to `serve` (with how many came
    /// before it); returns the port and how many connections it accepted.
    async fn accepting<F, Fut>(serve: F) -> (u16, Arc<AtomicU32>)
    where
        F: Fn(tokio::net::TcpStream, u32) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU32::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let nth = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, nth));
            }
        });
        (port, accepted)
    }

    /// hyper's HTTP/2 server answering `{}` to everything; `on_request` hears each request.
    fn answer_json(
        stream: tokio::net::TcpStream,
        on_request: impl Fn() + Clone + Send + 'static,
    ) -> impl std::future::Future<Output = Result<(), hyper::Error>> {
        let service = hyper::service::service_fn(move |_req| {
            on_request();
            async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    Bytes::from_static(b"{}"),
                )))
            }
        });
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
    }

    /// A cleartext HTTP/2 server that answers one request per connection and then drops the
    /// connection without a word.
    async fn one_request_per_connection() -> (u16, Arc<AtomicU32>) {
        accepting(|stream, _| async move {
            let answered = Arc::new(tokio::sync::Notify::new());
            let notify = answered.clone();
            tokio::select! {
                _ = answer_json(stream, move || notify.notify_one()) => {}
                () = async {
                    answered.notified().await;
                    // Time for the answer to leave before the connection is dropped.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } => {}
            }
        })
        .await
    }

    fn request(port: u16) -> hyper::Request<Empty<Bytes>> {
        hyper::Request::get(format!("http://127.0.0.1:{port}/users/1"))
            .body(Empty::new())
            .unwrap()
    }

    #[tokio::test]
    async fn a_dropped_connection_is_replaced_for_the_next_request() {
        let (port, accepted) = one_request_per_connection().await;
        let h2 = H2::new("127.0.0.1".into(), port, Duration::from_secs(5));
        // Pauses around the moment the server drops the connection: the next request meets
        // it alive, closing, or already closed. One already on the wire when it drops fails
        // (an attempt, retried above this layer), but the one after must not meet it again.
        let mut failed_before = false;
        for (round, pause_ms) in [0u64, 20, 40, 50, 60, 80, 200, 45, 55, 200]
            .iter()
            .enumerate()
        {
            match h2.send(|| request(port)).await {
                Ok(_) => failed_before = false,
                Err(H2Error::Send(e)) => {
                    assert!(!failed_before, "request {round} failed again: {e}");
                    failed_before = true;
                }
                Err(H2Error::Connect(e)) => panic!("request {round}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
        }
        assert!(h2.send(|| request(port)).await.is_ok());
        assert!(accepted.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn requests_sent_together_before_any_connection_share_one() {
        let (port, accepted) =
            accepting(|stream, _| async move { drop(answer_json(stream, || {}).await) }).await;
        let h2 = Arc::new(H2::new("127.0.0.1".into(), port, Duration::from_secs(5)));
        let sends: Vec<_> = (0..200)
            .map(|_| {
                let h2 = h2.clone();
                tokio::spawn(async move { h2.send(|| request(port)).await.is_ok() })
            })
            .collect();
        for send in sends {
            assert!(send.await.unwrap(), "a request failed");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one handshake for all");
    }

    /// The first connection gets a hand-written HTTP/2 server: it waits for three requests,
    /// answers the first, and sends GOAWAY(last stream 1, NO_ERROR): streams 3 and 5 were not
    /// processed. Later connections are served by hyper. Returns the port and how many
    /// connections were accepted.
    async fn recycles_after_one_request() -> (u16, Arc<AtomicU32>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        accepting(|mut stream, nth| async move {
            if nth > 0 {
                let _ = answer_json(stream, || {}).await;
                return;
            }
            let mut preface = [0u8; 24];
            stream.read_exact(&mut preface).await.unwrap();
            stream.write_all(&frame(4, 0, 0, &[])).await.unwrap(); // SETTINGS
            let mut requests = 0;
            while requests < 3 {
                let mut head = [0u8; 9];
                stream.read_exact(&mut head).await.unwrap();
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                stream.read_exact(&mut payload).await.unwrap();
                match head[3] {
                    1 => requests += 1, // HEADERS
                    4 if head[4] & 1 == 0 => stream.write_all(&frame(4, 1, 0, &[])).await.unwrap(),
                    _ => {}
                }
            }
            let mut reply = frame(1, 4, 1, &[0x88]); // HEADERS :status 200, END_HEADERS
            reply.extend(frame(0, 1, 1, b"{}")); // DATA, END_STREAM
            reply.extend(frame(7, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0])); // GOAWAY 1 NO_ERROR
            stream.write_all(&reply).await.unwrap();
            // Open a while longer, as a server finishing its last stream would be.
            tokio::time::sleep(Duration::from_secs(1)).await;
        })
        .await
    }

    /// One HTTP/2 frame, for the hand-written servers below.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    /// A hand-written HTTP/2 server that resets the first stream with REFUSED_STREAM and
    /// answers the next; returns the port and how many connections were accepted.
    async fn refuses_the_first_stream() -> (u16, Arc<AtomicU32>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        accepting(|mut stream, _| async move {
            let mut preface = [0u8; 24];
            stream.read_exact(&mut preface).await.unwrap();
            stream.write_all(&frame(4, 0, 0, &[])).await.unwrap(); // SETTINGS
            let mut streams = 0;
            loop {
                let mut head = [0u8; 9];
                if stream.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                stream.read_exact(&mut payload).await.unwrap();
                let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                match head[3] {
                    1 if streams == 0 => {
                        streams += 1;
                        // RST_STREAM, REFUSED_STREAM (7).
                        let reset = frame(3, 0, id, &[0, 0, 0, 7]);
                        stream.write_all(&reset).await.unwrap();
                    }
                    1 => {
                        let mut reply = frame(1, 4, id, &[0x88]); // :status 200
                        reply.extend(frame(0, 1, id, b"{}"));
                        stream.write_all(&reply).await.unwrap();
                    }
                    4 if head[4] & 1 == 0 => stream.write_all(&frame(4, 1, 0, &[])).await.unwrap(),
                    _ => {}
                }
            }
        })
        .await
    }

    #[tokio::test]
    async fn a_refused_stream_is_sent_again_on_the_same_connection() {
        let (port, accepted) = refuses_the_first_stream().await;
        let h2 = H2::new("127.0.0.1".into(), port, Duration::from_secs(5));
        match h2.send(|| request(port)).await {
            Ok(response) => assert_eq!(response.status(), 200),
            Err(H2Error::Send(e)) => panic!("failed: {e}"),
            Err(H2Error::Connect(e)) => panic!("{e}"),
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the same connection");
    }

    #[tokio::test]
    async fn requests_turned_away_by_a_graceful_goaway_go_again_on_a_new_connection() {
        let (port, accepted) = recycles_after_one_request().await;
        let h2 = H2::new("127.0.0.1".into(), port, Duration::from_secs(5));
        let (a, b, c) = tokio::join!(
            h2.send(|| request(port)),
            h2.send(|| request(port)),
            h2.send(|| request(port))
        );
        for (i, answer) in [a, b, c].into_iter().enumerate() {
            match answer {
                Ok(response) => assert_eq!(response.status(), 200, "request {i}"),
                Err(H2Error::Send(e)) => panic!("request {i} failed: {e}"),
                Err(H2Error::Connect(e)) => panic!("request {i}: {e}"),
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "one new connection");
    }
}
