//! Keep-alive HTTP/1.1 connections to one server (the upstream, or a GeeTest
//! validate server): a stack of idle ones per worker.
//!
//! Each of gatekeeper's clients talks HTTP/1.1 to one known server, so it
//! needs much less than hyper-util's general pooled client (any host, HTTP/2,
//! keyed pools) and skips what that costs on every request: a hashed pool
//! key, a checkout future racing a lazy connect, and a task spawned to wait
//! until the connection is idle again. Here a request takes the most recently
//! used idle connection of its worker (or opens one), and whoever reads the
//! response body gives the connection back when the body has ended (see
//! [`Lease`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::header::{HOST, HeaderValue};
use http::{Request, Response, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use crate::server::workers::PerWorker;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct Pool<B> {
    /// One stack per worker thread (see `server::workers`): a connection's
    /// task runs on the worker that opened it, and only that worker uses it.
    stacks: PerWorker<Arc<IdleStack<B>>>,
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority` of the server, what the connector dials.
    target: Uri,
    /// The Host a request without one gets.
    host: HeaderValue,
}

impl<B> std::fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({})", self.target)
    }
}

/// A worker's idle connections, most recently used last.
struct IdleStack<B> {
    idle: Mutex<VecDeque<Idle<B>>>,
    /// An idle connection older than this is closed, not used.
    idle_timeout: Duration,
    /// Whether the task that closes expired connections runs.
    sweeping: AtomicBool,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> Idle<B> {
    /// Still open at the server's end and not idle past `timeout`.
    fn usable(&self, timeout: Duration) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < timeout
    }
}

/// A connection lent to one request, to be given back (`release`) once its
/// response body has ended. Dropped instead (the body was abandoned or
/// failed), the connection closes: hyper could not reuse it anyway.
pub struct Lease<B> {
    sender: SendRequest<B>,
    stack: Arc<IdleStack<B>>,
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A pool for the server `server` names (its scheme and authority; any
    /// path is the requests' business).
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        server: &Uri,
        idle_timeout: Duration,
        workers: usize,
    ) -> Self {
        // The configuration accepts only absolute http(s) URLs; the fallbacks
        // are never taken.
        let authority = server.authority().map_or("localhost", |a| a.as_str());
        let target = Uri::builder()
            .scheme(server.scheme_str().unwrap_or("http"))
            .authority(authority)
            .path_and_query("/")
            .build()
            .unwrap_or_else(|_| server.clone());
        let host = HeaderValue::from_str(authority)
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Self {
            stacks: PerWorker::new(workers, || {
                Arc::new(IdleStack {
                    idle: Mutex::new(VecDeque::new()),
                    idle_timeout,
                    sweeping: AtomicBool::new(false),
                })
            }),
            connector,
            target,
            host,
        }
    }

    /// Sends `req` (origin-form; given the server's Host if it has none) on an
    /// idle connection, or on a new one. A request that an idle connection could not take
    /// (it closed meanwhile) is sent on the next; one that was written and
    /// then failed is not sent again. A body that is already over (HEAD,
    /// 204, 304) gives its connection back at once: `None`.
    pub async fn send(
        &self,
        mut req: Request<B>,
    ) -> Result<(Response<Incoming>, Option<Lease<B>>), BoxError> {
        req.headers_mut()
            .entry(HOST)
            .or_insert_with(|| self.host.clone());
        let stack = self.stacks.get();
        let (resp, sender) = loop {
            let Some(mut sender) = stack.take() else {
                // Boxed: connecting is rare, and its state would otherwise make
                // every request's future larger.
                let mut sender = Box::pin(self.connect(stack)).await?;
                break (sender.send_request(req).await?, sender);
            };
            match sender.try_send_request(req).await {
                Ok(resp) => break (resp, sender),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        };
        let lease = Lease {
            sender,
            stack: stack.clone(),
        };
        if resp.body().is_end_stream() {
            lease.release();
            return Ok((resp, None));
        }
        Ok((resp, Some(lease)))
    }

    async fn connect(&self, stack: &Arc<IdleStack<B>>) -> Result<SendRequest<B>, BoxError> {
        // Only a stack that has had a connection has anything to sweep.
        stack.start_sweeping();
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        let io = connector.call(self.target.clone()).await?;
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        // On this worker, like the client connection that asked for it.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl<B: Send + 'static> IdleStack<B> {
    /// The most recently used live connection; expired ones met on the way
    /// are closed.
    fn take(&self) -> Option<SendRequest<B>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(candidate) = idle.pop_back() {
            if candidate.usable(self.idle_timeout) {
                return Some(candidate.sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<B>) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Drops connections idle for longer than the timeout, which closes
    /// them, and those the upstream closed.
    fn sweep(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|i| i.usable(self.idle_timeout));
        }
    }

    /// Starts, once, a task on this worker that sweeps every idle timeout, so
    /// that connections left after a busy spell close even if no request
    /// comes. It ends with the pool (after a configuration reload).
    fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let stack: Weak<Self> = Arc::downgrade(self);
        let every = self.idle_timeout.max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match stack.upgrade() {
                    Some(stack) => stack.sweep(),
                    None => return,
                }
            }
        });
    }
}

impl<B: Send + 'static> Lease<B> {
    /// Gives the connection back: at once if hyper is ready for the next
    /// request on it (it usually is by the time the body's last bytes are
    /// read), otherwise once it is.
    pub fn release(mut self) {
        if self.sender.is_ready() {
            self.stack.put(self.sender);
        } else if !self.sender.is_closed() {
            tokio::spawn(async move {
                if self.sender.ready().await.is_ok() {
                    self.stack.put(self.sender);
                }
            });
        }
    }
}
