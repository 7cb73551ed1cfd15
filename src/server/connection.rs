//! Serving one accepted connection: HTTP/1.1 or HTTP/2 as decided by the
//! listener, with every wait bounded.
//!
//! hyper bounds the wait for a request head (`header_read_timeout`, which only
//! runs because a timer is set). What hyper does not bound is a connection with
//! no request in flight, before the first request or between keep-alive
//! requests: the watchdog here closes it gracefully after `idle_timeout`
//! (HTTP/2 gets GOAWAY). The same graceful close runs on shutdown.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::debug;

use super::inspect::{Inspected, Verdicts};
use super::{Live, Shared};
use crate::metrics::ConnectionLabels;
use crate::proxy::{ConnInfo, ProxyBody};

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

pub async fn serve<I>(
    io: I,
    protocol: Protocol,
    info: ConnInfo,
    live: Live,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
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
    struct Closed(prometheus_client::metrics::gauge::Gauge);
    impl Drop for Closed {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let _closed = Closed(open);
    let activity = Arc::new(Activity::new());
    // HTTP/1 request heads are checked raw (see `inspect`); HTTP/2 frames its own.
    let verdicts = Verdicts::default();
    let io = Inspected::new(io, verdicts.clone());
    let service = {
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            // Each request runs on the configuration of the moment it arrived.
            let proxy = live.load().proxy.clone();
            let guard = InFlight::begin(activity.clone());
            let wire = (req.version() < http::Version::HTTP_2)
                .then(|| verdicts.next())
                .flatten();
            async move {
                let resp = proxy.handle(req, info, wire).await;
                Ok::<_, Infallible>(resp.map(|body| Tracked {
                    inner: body,
                    _guard: guard,
                }))
            }
        })
    };

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(H1_MAX_BUF)
        .max_headers(H1_MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS);
    let builder = match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
        Protocol::Cleartext => builder,
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);

    // The first request must start within header_read_timeout of accept.
    let mut idle_limit = limits.header_read_timeout;
    let mut closing = false;
    loop {
        let idle_for = activity.idle_for();
        let wake_in = idle_limit.saturating_sub(idle_for.unwrap_or(Duration::ZERO));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(peer = %info.peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(wake_in.max(Duration::from_millis(10))), if !closing => {
                if activity.idle_for().is_some_and(|idle| idle >= idle_limit) {
                    debug!(peer = %info.peer, "closing idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                if activity.served() > 0 {
                    idle_limit = limits.idle_timeout;
                }
            }
            _ = shutdown.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    served: AtomicUsize,
    /// Milliseconds since `epoch` at which the connection last became idle.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// How long the connection has had no request in flight; `None` while busy.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

/// Held from the start of a request until its response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.served.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.epoch.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(now, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// A response body that keeps its request counted as in flight.
    struct Tracked {
        #[pin]
        inner: ProxyBody,
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
