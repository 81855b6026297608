//! The demo API's sockets, made to batch small answers into few writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that does not offer vectored writes.
///
/// Why: the `h2` crate writes a DATA frame bigger than 256 bytes with a `writev` of its own
/// when the transport supports vectored writes, and copies frames of up to 1 KiB into its
/// buffer when it does not. A user's JSON is about 500 bytes, so over HTTP/2 every answer cost
/// one system call (measured: 50,000 `writev` for 50,000 answers), which made the one-core demo
/// API, not the client, what batch benchmarks measured. Without vectored writes, the answers
/// that are ready together leave in one write. HTTP/1.1 then also copies the body behind the
/// head, which is one write per answer either way.
pub struct Unvectored(pub TcpStream);

impl AsyncRead for Unvectored {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

// `poll_write_vectored` and `is_write_vectored` keep their defaults: that is the point.
impl AsyncWrite for Unvectored {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
