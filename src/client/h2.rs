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
use tokio::sync::Mutex;

/// Why a request never got an answer.
pub(super) enum H2Error {
    /// No connection could be opened.
    Connect(String),
    /// The connection or the stream failed before the response head came.
    Send(hyper::Error),
}

pub(super) struct H2 {
    host: String,
    port: u16,
    connect_timeout: Duration,
    /// The one connection; replaced when it closes. A tokio mutex so that thousands of first
    /// requests wait for one handshake instead of each opening a connection.
    sender: Mutex<Option<SendRequest<Empty<Bytes>>>>,
}

impl H2 {
    pub(super) fn new(host: String, port: u16, connect_timeout: Duration) -> H2 {
        H2 {
            host,
            port,
            connect_timeout,
            sender: Mutex::new(None),
        }
    }

    async fn sender(&self) -> Result<SendRequest<Empty<Bytes>>, H2Error> {
        let mut slot = self.sender.lock().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        *slot = None;
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| {
                H2Error::Connect(format!(
                    "no connection within {}",
                    humantime::format_duration(self.connect_timeout)
                ))
            })?
            .map_err(|e| H2Error::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Records are small; a modest window keeps a burst of 10,000 answers from
            // parking megabytes in flow-control buffers.
            .initial_stream_window_size(64 * 1024)
            .initial_connection_window_size(16 * 1024 * 1024)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| H2Error::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("HTTP/2 connection ended: {e}");
            }
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }

    pub(super) async fn send(
        &self,
        request: hyper::Request<Empty<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, H2Error> {
        let mut sender = self.sender().await?;
        sender.send_request(request).await.map_err(H2Error::Send)
    }
}
