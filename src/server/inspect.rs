// Over 400 lines: one byte-level parser of request framing, and its tests of the smuggling cases.
//! The raw request heads of an HTTP/1 connection, checked before hyper
//! normalises them.
//!
//! hyper is lenient where nginx is strict: with both Content-Length and
//! Transfer-Encoding it silently drops Content-Length, and it folds equal
//! duplicate Content-Lengths. By the time a request reaches the service that
//! evidence is gone. This wrapper reads the same bytes hyper reads, parses
//! each request head with httparse (hyper's own parser), follows the body's
//! framing to find the next head, and queues one verdict per request, in wire
//! order; the connection puts each in its request's extensions for the
//! handler to act on. Every head gets one, on every connection, until a
//! WebSocket tunnel really opens (the handler says so): an upgrade the
//! upstream declined leaves an HTTP/1.1 connection like any other. It never
//! changes a byte. It also tells the connection's watchdog when writes are
//! blocked by a client that does not read.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use memchr::memmem;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::Activity;
use crate::proxy::headers::framing::{
    FramingError, check_line_endings, check_raw_head, check_wire_head,
};

/// Longest head inspected; hyper refuses longer ones itself (431).
const MAX_HEAD: usize = 64 * 1024 + 1024;
const MAX_HEADERS: usize = 128;
const MAX_CHUNK_LINE: usize = 4096;

/// Verdicts on request heads, oldest first; shared with the service.
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    queue: Arc<Mutex<VecDeque<Result<(), FramingError>>>>,
    /// Set by the handler when a tunnel opens: what follows is another
    /// protocol's bytes.
    switched: Arc<AtomicBool>,
}

impl Verdicts {
    /// The verdict on the next request hyper delivers; `None` if there is
    /// none (the handler refuses such a request).
    pub fn next(&self) -> Option<Result<(), FramingError>> {
        self.queue.lock().ok()?.pop_front()
    }

    /// The flag that stops inspection, for the handler to set when a tunnel opens.
    pub fn switched(&self) -> Arc<AtomicBool> {
        self.switched.clone()
    }

    fn push(&self, verdict: Result<(), FramingError>) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(verdict);
        }
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Skipping a body of known length.
    Fixed(u64),
    /// Collecting a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data and its CRLF.
    ChunkData(u64),
    /// Collecting the trailer section after the last chunk.
    Trailers(Vec<u8>),
    /// No more requests to inspect on this connection (it is closing, or a
    /// tunnel opened).
    Done,
}

/// The TCP socket under an IO, to abort it (see `InspectedStream`'s `Drop`).
pub trait TcpBacked {
    fn tcp(&self) -> Option<&tokio::net::TcpStream>;
}

impl TcpBacked for tokio::net::TcpStream {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self)
    }
}

impl TcpBacked for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self.get_ref().0)
    }
}

impl TcpBacked for () {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        None
    }
}

/// A connection's byte stream whose request heads are checked as they are read.
pub struct InspectedStream<I: TcpBacked> {
    inner: I,
    state: State,
    verdicts: Verdicts,
    /// Told when a head starts and ends, so its arrival can be timed.
    activity: Option<Arc<Activity>>,
}

impl<I: TcpBacked> Drop for InspectedStream<I> {
    /// A connection dropped for a timeout is reset, not closed: a FIN would
    /// queue behind unsent data that a slow reader never takes, and the
    /// client would see the connection open long after it was given up.
    fn drop(&mut self) {
        if self.activity.as_ref().is_some_and(|a| a.aborted())
            && let Some(tcp) = self.inner.tcp()
        {
            let _ = tcp.set_zero_linger();
        }
    }
}

impl<I: TcpBacked> InspectedStream<I> {
    pub fn new(inner: I, verdicts: Verdicts, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            state: State::Head(Vec::new()),
            verdicts,
            activity: Some(activity),
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (buf, terminator, limit, trailers) = match &mut self.state {
                State::Done => return,
                State::Fixed(n) | State::ChunkData(n) => {
                    let take = usize::try_from(*n).unwrap_or(usize::MAX).min(bytes.len());
                    *n -= take as u64;
                    bytes = &bytes[take..];
                    if *n == 0 {
                        self.state = match self.state {
                            State::ChunkData(_) => State::ChunkSize(Vec::new()),
                            _ => State::Head(Vec::new()),
                        };
                    }
                    continue;
                }
                State::Head(b) => (b, &b"\r\n\r\n"[..], MAX_HEAD, false),
                State::ChunkSize(b) => (b, &b"\r\n"[..], MAX_CHUNK_LINE, false),
                State::Trailers(b) => (b, &b"\r\n\r\n"[..], MAX_HEAD, true),
            };
            let old = buf.len();
            if old == 0
                && !trailers
                && terminator.len() == 4
                && let Some(activity) = &self.activity
            {
                activity.head_started();
            }
            buf.extend_from_slice(bytes);
            // An empty trailer section is a lone CRLF.
            let end = if trailers && buf.starts_with(b"\r\n") {
                Some(2)
            } else {
                let from = old.saturating_sub(terminator.len() - 1);
                memmem::find(&buf[from..], terminator).map(|i| from + i + terminator.len())
            };
            // A head or trailer section ended by bare LFs never shows the
            // CRLF CRLF looked for, though hyper would take it: refuse any
            // bare LF as it arrives, whether or not the element is complete.
            if terminator.len() == 4
                && let Err(e) = check_line_endings(&buf[..end.unwrap_or(buf.len())], old)
            {
                self.stop_with(Err(e));
                return;
            }
            let Some(end) = end else {
                if buf.len() > limit {
                    self.stop_with(Err(FramingError("request head too large")));
                }
                return;
            };
            let element = std::mem::take(buf);
            self.complete(&element[..end]);
            // What this read held beyond the completed element.
            bytes = &bytes[(end - old).min(bytes.len())..];
        }
    }

    /// An element (head, chunk-size line or trailers) is complete.
    fn complete(&mut self, element: &[u8]) {
        self.state = match std::mem::replace(&mut self.state, State::Done) {
            State::Head(_) => self.head(element),
            State::ChunkSize(_) => match httparse::parse_chunk_size(element) {
                Ok(httparse::Status::Complete((_, 0))) => State::Trailers(Vec::new()),
                Ok(httparse::Status::Complete((_, size))) => {
                    State::ChunkData(size.saturating_add(2))
                }
                // hyper refuses the same bytes and closes the connection.
                _ => State::Done,
            },
            State::Trailers(_) => State::Head(Vec::new()),
            other => other,
        };
    }

    fn head(&mut self, head: &[u8]) -> State {
        if let Some(activity) = &self.activity {
            activity.head_done();
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(head);
        let version = req.version.unwrap_or(1);
        match parsed {
            Ok(httparse::Status::Complete(_)) => {}
            // hyper refuses it too (400 or 431); nothing after it is served.
            _ => return self.stopped(Err(FramingError("malformed request head"))),
        }
        let verdict = check_wire_head(version, req.headers).and_then(|()| check_raw_head(head));
        if verdict.is_err() {
            return self.stopped(verdict);
        }
        self.verdicts.push(Ok(()));
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
        };
        // An upgrade request is followed like any other: until the handler
        // says a tunnel opened, the next bytes are the next request.
        if header("transfer-encoding").is_some() {
            return State::ChunkSize(Vec::new());
        }
        let length = header("content-length")
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if length > 0 {
            State::Fixed(length)
        } else {
            State::Head(Vec::new())
        }
    }

    fn stopped(&mut self, verdict: Result<(), FramingError>) -> State {
        if let Some(activity) = &self.activity {
            activity.head_done();
        }
        self.verdicts.push(verdict);
        State::Done
    }

    fn stop_with(&mut self, verdict: Result<(), FramingError>) {
        self.state = self.stopped(verdict);
    }
}

impl<I: AsyncRead + TcpBacked + Unpin> AsyncRead for InspectedStream<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        if !matches!(this.state, State::Done) {
            if this.verdicts.switched.load(Ordering::Acquire) {
                this.state = State::Done;
            } else {
                this.feed(&buf.filled()[before..]);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: TcpBacked> InspectedStream<I> {
    /// Tells the watchdog how much the client takes and when it holds up writes.
    fn track_write(&self, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Some(activity) = &self.activity {
            match &poll {
                Poll::Pending => activity.write_blocked(),
                Poll::Ready(Ok(n)) => activity.wrote(*n),
                Poll::Ready(Err(_)) => {}
            }
        }
        poll
    }
}

impl<I: AsyncWrite + TcpBacked + Unpin> AsyncWrite for InspectedStream<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track_write(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track_write(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(wire: &[&[u8]]) -> Vec<Result<(), FramingError>> {
        let v = Verdicts::default();
        let mut i = InspectedStream {
            inner: (),
            state: State::Head(Vec::new()),
            verdicts: v.clone(),
            activity: None,
        };
        for piece in wire {
            i.feed(piece);
        }
        std::iter::from_fn(|| v.next()).collect()
    }

    #[test]
    fn keep_alive_requests_with_bodies_each_get_a_verdict() {
        let wire = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(verdicts(&[wire]), vec![Ok(()), Ok(()), Ok(())]);
        // The same bytes, one at a time.
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(verdicts(&bytes), vec![Ok(()), Ok(()), Ok(())]);
    }

    #[test]
    fn content_length_with_transfer_encoding_is_caught_in_either_order() {
        let a = verdicts(&[b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"]);
        let b = verdicts(&[b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"]);
        assert!(a[0].is_err() && b[0].is_err());
    }

    #[test]
    fn a_head_with_bare_lf_line_endings_is_refused_even_though_it_never_shows_crlf_crlf() {
        let v = verdicts(&[
            b"POST / HTTP/1.1\nHost: a\nContent-Length: 3\nTransfer-Encoding: chunked\n\n",
        ]);
        assert_eq!(v, vec![Err(FramingError("bare LF line ending"))]);
        // One bare LF among CRLFs, split across reads after its CR-less byte.
        let v = verdicts(&[b"GET / HTTP/1.1\r\nHost: a", b"\nX: b\r\n\r\n"]);
        assert_eq!(v, vec![Err(FramingError("bare LF line ending"))]);
        // A CRLF split across reads is not a bare LF.
        let v = verdicts(&[b"GET / HTTP/1.1\r", b"\nHost: a\r\n\r\n"]);
        assert_eq!(v, vec![Ok(())]);
    }

    #[test]
    fn heads_after_an_upgrade_request_are_still_inspected() {
        let wire = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST /login HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(
            verdicts(&[wire]),
            vec![Ok(()), Err(FramingError("more than one host header"))]
        );
    }

    #[test]
    fn a_content_length_hyper_reads_differently_stops_inspection() {
        // hyper takes `3, 3` as 3; read as 0, the body would look like a head.
        let wire = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            verdicts(&[wire]),
            vec![Err(FramingError("content-length is not a number"))]
        );
    }

    #[test]
    fn a_smuggled_head_inside_a_body_is_not_mistaken_for_a_request() {
        let wire = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n12345GET /y HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(verdicts(&[wire]), vec![Ok(()), Ok(())]);
    }
}
