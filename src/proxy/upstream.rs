//! The forwarder: requests to the upstream application over pooled keep-alive
//! connections.
//!
//! Two clocks, one per party: while the client's body is being sent, only
//! the client is waited on (`limits.body_idle_timeout` between two of its
//! reads, however long the whole upload takes); once it is sent, the
//! upstream has `upstream.timeout` to answer. An upload the client breaks
//! (a malformed chunk, a reset) is the client's fault, not the upstream's.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::body::{ProxyBody, Streamed};
use crate::config::UpstreamConfig;
use crate::pool::{BoxError, Pool};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No response head within `upstream.timeout` of the body's end → 504.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// Could not connect, or the connection broke → 502.
    #[error("upstream unreachable: {0}")]
    Unreachable(#[source] BoxError),
    /// The client's body could not be read (malformed framing, reset) → 400.
    #[error("the client's request body could not be read")]
    ClientBody,
    /// The client paused its body longer than `limits.body_idle_timeout` → 408.
    #[error("the client's request body stalled for {0:?}")]
    BodyStalled(Duration),
}

impl UpstreamError {
    /// A fixed word for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::ClientBody => "client_body",
            Self::BodyStalled(_) => "body_stalled",
        }
    }

    /// Whether the upstream is to blame (counted as an upstream error).
    pub fn is_upstream_fault(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Unreachable(_))
    }
}

#[derive(Debug)]
pub struct Upstream {
    pool: Pool<Upload>,
    timeout: Duration,
    body_idle_timeout: Duration,
}

impl Upstream {
    /// `pool_idle` bounds how long an unused pooled connection is kept;
    /// `workers` is how many worker threads will call it (one pool each).
    pub fn new(
        config: &UpstreamConfig,
        pool_idle: Duration,
        body_idle_timeout: Duration,
        workers: usize,
    ) -> Self {
        Self {
            pool: Pool::new(&config.url, config.connect_timeout, pool_idle, workers),
            timeout: config.timeout,
            body_idle_timeout,
        }
    }

    /// Sends `req` (whose URI may be absolute, as HTTP/2 gives it) to the
    /// upstream, keeping its headers as given. The response body streams;
    /// only the upload's pauses and the wait for the head are timed.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Streamed>, UpstreamError> {
        // The upstream gets origin-form (RFC 9112 §3.2.1).
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(path);
        }
        // The upstream leg is HTTP/1.1 whatever the client spoke.
        *req.version_mut() = Version::HTTP_11;
        if req.body().is_end_stream() {
            // No body to send (GET, HEAD): only the upstream is waited on.
            let req = req.map(|body| Upload::new(body, self.body_idle_timeout, None));
            return match tokio::time::timeout(self.timeout, self.pool.send(req)).await {
                Ok(Ok((resp, lease))) => Ok(resp.map(|body| Streamed::leased(body, lease))),
                Ok(Err(e)) => Err(UpstreamError::Unreachable(e)),
                Err(_) => Err(UpstreamError::Timeout(self.timeout)),
            };
        }
        let progress = Arc::new(Progress::default());
        let req = req.map(|body| Upload::new(body, self.body_idle_timeout, Some(progress.clone())));
        let mut send = pin!(self.pool.send(req));
        // The upstream may answer before the body is all sent (a 413, say).
        let sent = async {
            tokio::select! {
                result = &mut send => Some(result),
                () = progress.sent() => None,
            }
        };
        let result = match sent.await {
            Some(result) => result,
            None => match tokio::time::timeout(self.timeout, send).await {
                Ok(result) => result,
                Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
            },
        };
        match result {
            Ok((resp, lease)) => Ok(resp.map(|body| Streamed::leased(body, lease))),
            Err(e) => Err(match progress.get() {
                Progress::CLIENT_FAULT => UpstreamError::ClientBody,
                Progress::STALLED => UpstreamError::BodyStalled(self.body_idle_timeout),
                _ => UpstreamError::Unreachable(e),
            }),
        }
    }
}

/// How far a request body has gone, shared by the body and the forwarder:
/// 0 while it is being sent, then one of the states below.
#[derive(Debug, Default)]
struct Progress {
    state: AtomicU8,
    changed: Notify,
}

impl Progress {
    const SENT: u8 = 1;
    const CLIENT_FAULT: u8 = 2;
    const STALLED: u8 = 3;

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.changed.notify_one();
    }

    fn get(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Resolves once the body is all sent; never if it fails (the send then
    /// fails too).
    async fn sent(&self) {
        loop {
            let changed = self.changed.notified();
            if self.get() == Self::SENT {
                return;
            }
            changed.await;
        }
    }
}

pin_project! {
    /// A request body on its way upstream: reports its end, tells a client's
    /// fault from the upstream's, and bounds each pause of the client.
    pub struct Upload {
        #[pin]
        inner: ProxyBody,
        // Armed when hyper first waits on the client after a frame, so time
        // spent waiting on the upstream (which stops polling) never counts;
        // made on the first wait, so a body that never waits costs nothing.
        stall: Option<Pin<Box<Sleep>>>,
        idle: Duration,
        waiting: bool,
        // `None` for a body with nothing to send.
        progress: Option<Arc<Progress>>,
    }
}

impl Upload {
    fn new(inner: ProxyBody, idle: Duration, progress: Option<Arc<Progress>>) -> Self {
        Self {
            inner,
            stall: None,
            idle,
            waiting: false,
            progress,
        }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let set = |state| {
            if let Some(progress) = this.progress.as_ref() {
                progress.set(state);
            }
        };
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => {
                if !*this.waiting {
                    *this.waiting = true;
                    let deadline = Instant::now()
                        .checked_add(*this.idle)
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
                    match this.stall.as_mut() {
                        Some(stall) => stall.as_mut().reset(deadline),
                        None => *this.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                if let Some(stall) = this.stall.as_mut() {
                    ready!(stall.as_mut().poll(cx));
                }
                set(Progress::STALLED);
                Poll::Ready(Some(Err("request body stalled".into())))
            }
            Poll::Ready(frame) => {
                *this.waiting = false;
                match &frame {
                    Some(Err(_)) => set(Progress::CLIENT_FAULT),
                    None => set(Progress::SENT),
                    Some(Ok(_)) if this.inner.is_end_stream() => set(Progress::SENT),
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
