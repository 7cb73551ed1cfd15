//! HttpConnection one accepted connection: HTTP/1.1 or HTTP/2 as decided by the
//! listener, with every wait bounded.
//!
//! Two bounds, kept by the watchdog loop below rather than by hyper:
//! - a request head (HTTP/1) must arrive within `header_read_timeout` of its
//!   first byte, else the connection is dropped. hyper's own header timer
//!   starts as soon as it waits for the next head, so it would also cut every
//!   idle keep-alive connection at `header_read_timeout`; the wire inspector
//!   knows when a head really starts.
//! - a connection with no request in flight is closed gracefully after
//!   `header_read_timeout` before its first request and `idle_timeout` after
//!   (HTTP/2 gets GOAWAY). The same graceful close runs on shutdown.
//! - a client that holds up our writes and reads less than 1 KiB/s over an
//!   `idle_timeout` window (slow read) is dropped; a plain write timeout
//!   (nginx's `send_timeout`) misses a client that reads a few bytes at a time.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tracing::debug;

use super::activity::{Activity, InFlight, SendRate, idle_limit};
use super::inspect::{InspectedStream, TcpBacked, Verdicts};
use super::{Live, Shared};
use crate::gate::admission::{AddrGuard, ConnAdmission};
use crate::metrics::ConnectionLabels;
use crate::proxy::headers::framing::WireRefusal;
use crate::proxy::tunnel::Tunnelling;
use crate::proxy::{ConnInfo, Counted, ProxyBody};

/// Which protocol to speak, decided before the first byte is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TLS negotiated `http/1.1` (or no ALPN).
    Http1,
    /// TLS negotiated `h2`.
    Http2,
    /// Cleartext: HTTP/1.1, or HTTP/2 with prior knowledge (the connection
    /// preface is defined to be recognisable, RFC 9113 §3.3).
    Cleartext,
}

/// HTTP/2 limits (RFC 9113 §6.5.2; rapid-reset and CONTINUATION-flood bounds).
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
const H2_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
const H1_MAX_BUF: usize = 64 * 1024;
const H1_MAX_HEADERS: usize = 100;

/// The same HTTP/1 settings on hyper's builder and on the auto builder's.
macro_rules! http1_limits {
    ($builder:expr) => {
        $builder
            .timer(TokioTimer::new())
            // Timed by the watchdog from a head's first byte instead (see above).
            .header_read_timeout(None)
            .max_buf_size(H1_MAX_BUF)
            .max_headers(H1_MAX_HEADERS)
    };
}

/// The same HTTP/2 settings on hyper's builder and on the auto builder's.
macro_rules! http2_limits {
    ($builder:expr) => {
        $builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
    };
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A served connection of any of hyper's kinds: runs to its end, or is asked
/// to finish its requests in flight and close.
trait HttpConnection {
    fn poll_serve(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>;
    fn graceful_shutdown(self: Pin<&mut Self>);
}

pin_project! {
    /// One of hyper's connection kinds and how to ask it to finish.
    struct HyperConnection<C> {
        #[pin]
        conn: C,
        shutdown: fn(Pin<&mut C>),
    }
}

impl<C, E> HttpConnection for HyperConnection<C>
where
    C: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    fn poll_serve(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.project().conn.poll(cx).map_err(Into::into)
    }

    fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.project();
        (this.shutdown)(this.conn)
    }
}

/// A connection's place under `limits.max_connections`, and its peer
/// address's under `limits.max_connections_per_address` (none for a trusted
/// proxy): both held until the connection, or a tunnel it opened, ends.
pub struct Place {
    pub permit: OwnedSemaphorePermit,
    pub per_address: Option<AddrGuard>,
}

/// Sets the connection up at once and returns the future that serves it.
/// (Not an `async fn`: its arguments, the socket among them, would be kept
/// in the future for the connection's whole life.) `permit` is the
/// connection's [`Place`].
pub fn serve<I>(
    io: I,
    protocol: Protocol,
    info: ConnInfo,
    live: Live,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    permit: Place,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + TcpBacked + Unpin + Send + 'static,
{
    let limits = live.load().config.limits.clone();
    let labels = ConnectionLabels {
        listener: info.scheme,
        protocol: match protocol {
            Protocol::Http1 => "http/1.1",
            Protocol::Http2 => "h2",
            Protocol::Cleartext => "http/1.1 or h2c",
        },
    };
    let open = shared.metrics.open_connections.get_or_create_owned(&labels);
    open.inc();
    /// The connection's place, and its count in the gauge: given back when
    /// the connection ends, or a tunnel it opened does.
    struct Slot {
        place: Option<Place>,
        gauge: prometheus_client::metrics::gauge::Gauge,
    }
    impl Drop for Slot {
        fn drop(&mut self) {
            // The places first: once the gauge shows the connection gone,
            // its peer may connect again.
            drop(self.place.take());
            self.gauge.dec();
        }
    }
    let slot = Arc::new(Slot {
        place: Some(permit),
        gauge: open,
    });
    let activity = Arc::new(Activity::new());
    // HTTP/1 request heads are checked raw (see `inspect`); HTTP/2 frames its own.
    let verdicts = Verdicts::default();
    let io = InspectedStream::new(io, verdicts.clone(), activity.clone());
    let tunnelling = Tunnelling::new(
        slot.clone(),
        limits.idle_timeout,
        verdicts.switched(),
        shutdown.clone(),
    );
    let admission = ConnAdmission::new(shared.admission.clone());
    // HTTP-01 is answered on the cleartext listener, before routing.
    let acme = shared.acme.clone().filter(|_| info.scheme == "http");
    let service = {
        let activity = activity.clone();
        let info = info.clone();
        service_fn(move |mut req: Request<Incoming>| {
            let info = info.clone();
            let challenge = acme.as_ref().and_then(|a| a.http_challenge(&req));
            // Each request runs on the configuration of the moment it arrived.
            let proxy = live.load().proxy.clone();
            let guard = InFlight::begin(activity.clone());
            // What the gate may buffer for this request (see `gate::admission`).
            req.extensions_mut().insert(admission.clone());
            if req.version() < http::Version::HTTP_2 {
                // An HTTP/1 request without a verdict is refused like a bad one.
                if let Some(refusal) = WireRefusal::for_verdict(verdicts.next()) {
                    req.extensions_mut().insert(refusal);
                }
                if req
                    .headers()
                    .keys()
                    .any(|name| name == http::header::UPGRADE)
                {
                    req.extensions_mut().insert(tunnelling.clone());
                }
            }
            async move {
                // Boxed: hyper keeps a slot of this future's size on every
                // connection, idle or not; boxed, the slot is a pointer and
                // the request's state exists only while it runs.
                let resp = match challenge {
                    // gatekeeper's own answer to the CA: not a request to log.
                    Some(answer) => answer.map(Counted::untold),
                    None => Box::pin(proxy.handle(req, info)).await,
                };
                Ok::<_, Infallible>(resp.map(|body| Tracked {
                    inner: body,
                    _guard: guard,
                }))
            }
        })
    };

    let io = TokioIo::new(io);
    // Where TLS has settled the protocol, hyper's own builders serve it. The
    // auto builder first reads the preface and replays it, which leaves every
    // HTTP/1 connection holding a 16 KiB read buffer instead of 8 KiB.
    let mut conn: Pin<Box<dyn HttpConnection + Send>> = match protocol {
        Protocol::Http1 => {
            let mut h1 = hyper::server::conn::http1::Builder::new();
            http1_limits!(h1);
            Box::pin(HyperConnection {
                conn: h1.serve_connection(io, service).with_upgrades(),
                shutdown: |c| c.graceful_shutdown(),
            })
        }
        Protocol::Http2 => {
            let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            http2_limits!(h2);
            Box::pin(HyperConnection {
                conn: h2.serve_connection(io, service),
                shutdown: |c| c.graceful_shutdown(),
            })
        }
        Protocol::Cleartext => {
            let mut auto = auto::Builder::new(TokioExecutor::new());
            http1_limits!(auto.http1());
            http2_limits!(auto.http2());
            Box::pin(HyperConnection {
                conn: auto
                    .serve_connection_with_upgrades(io, service)
                    .into_owned(),
                shutdown: |c| c.graceful_shutdown(),
            })
        }
    };

    async move {
        let _slot = slot;
        let mut closing = false;
        let mut send_rate = SendRate::new(&activity);
        let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 2)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let idle_for = activity.idle_for();
            let idle_wake =
                idle_limit(&activity, &limits).saturating_sub(idle_for.unwrap_or(Duration::ZERO));
            let head_wake = activity
                .head_for()
                .map(|head| limits.header_read_timeout.saturating_sub(head))
                .unwrap_or(Duration::MAX);
            // Nothing wakes this loop when a request starts or a write stalls, so
            // it also looks in every `tick`: a deadline is late by at most a tick.
            let wake_in = idle_wake
                .min(head_wake)
                .min(tick)
                .max(Duration::from_millis(10));
            tokio::select! {
                result = std::future::poll_fn(|cx| conn.as_mut().poll_serve(cx)) => {
                    if let Err(e) = result {
                        debug!(peer = %info.peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep(wake_in) => {
                    if activity.head_for().is_some_and(|head| head >= limits.header_read_timeout) {
                        debug!(peer = %info.peer, "request head not received in time: dropping the connection");
                        activity.abort();
                        return;
                    }
                    if send_rate.too_slow(&activity, limits.idle_timeout) {
                        debug!(peer = %info.peer, "client reads too slowly: dropping the connection");
                        activity.abort();
                        return;
                    }
                    // Re-read: a request may have been served during the sleep.
                    let limit = idle_limit(&activity, &limits);
                    if !closing && activity.idle_for().is_some_and(|idle| idle >= limit) {
                        debug!(peer = %info.peer, "closing idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                _ = shutdown.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

pin_project! {
    /// A response body that keeps its request counted as in flight.
    struct Tracked {
        #[pin]
        inner: Counted<ProxyBody>,
        _guard: InFlight,
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
