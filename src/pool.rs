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
//!
//! A configuration reload builds new clients, but their pools need not be
//! new: while [`Reuse::scope`] runs, a pool for the same server with the same
//! settings as a pool still alive takes that pool's connections over, so a
//! reload that changes nothing about a server opens no connection to it.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
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

use crate::worker_local::PerWorker;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct Pool<B> {
    /// Shared with the pools that reuse it (see [`Reuse`]).
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    /// One stack per worker thread (see `worker_local`): a connection's
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
        write!(f, "Pool({})", self.inner.target)
    }
}

/// What makes two pools interchangeable: the server, the settings its
/// connections are made and kept with, and the body type they carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    body: TypeId,
    target: Uri,
    connect_timeout: Duration,
    idle_timeout: Duration,
    workers: usize,
}

/// The live pools of one running server, by settings, for a reload to take
/// over. Holds them weakly: a pool the running configuration no longer uses
/// closes with the last request that used it.
#[derive(Debug, Default)]
pub struct Reuse {
    pools: Mutex<HashMap<Key, Weak<dyn Any + Send + Sync>>>,
}

thread_local! {
    /// The registry that pools made on this thread join; `None` outside
    /// [`Reuse::scope`].
    static SCOPE: RefCell<Option<Arc<Reuse>>> = const { RefCell::new(None) };
}

/// Puts the previous scope back, even if building panicked.
struct ScopeGuard(Option<Arc<Reuse>>);

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        SCOPE.with(|s| *s.borrow_mut() = previous);
    }
}

impl Reuse {
    /// Runs `build`; every [`Pool::new`] it calls on this thread takes over
    /// the live pool with the same [`Key`] if there is one, and is offered
    /// to later scopes otherwise.
    pub fn scope<T>(self: &Arc<Self>, build: impl FnOnce() -> T) -> T {
        let previous = SCOPE.with(|s| s.borrow_mut().replace(self.clone()));
        let _guard = ScopeGuard(previous);
        build()
    }

    /// The live pool for `key`, or the one `make` makes, registered.
    fn get_or_make<B: Send + 'static>(
        &self,
        key: Key,
        make: impl FnOnce() -> Inner<B>,
    ) -> Arc<Inner<B>> {
        let Ok(mut pools) = self.pools.lock() else {
            return Arc::new(make());
        };
        if let Some(live) = pools.get(&key).and_then(Weak::upgrade)
            && let Ok(inner) = live.downcast::<Inner<B>>()
        {
            tracing::debug!(server = %key.target, "reload keeps the pooled connections");
            return inner;
        }
        pools.retain(|_, pool| pool.strong_count() > 0);
        let inner = Arc::new(make());
        let shared: Arc<dyn Any + Send + Sync> = inner.clone();
        pools.insert(key, Arc::downgrade(&shared));
        inner
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
    /// path is the requests' business), connecting within `connect_timeout`.
    /// Inside [`Reuse::scope`], the live pool with the same settings if any.
    pub fn new(
        server: &Uri,
        connect_timeout: Duration,
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
        let key = Key {
            body: TypeId::of::<B>(),
            target: target.clone(),
            connect_timeout,
            idle_timeout,
            workers,
        };
        let make = || Inner {
            stacks: PerWorker::new(workers, || {
                Arc::new(IdleStack {
                    idle: Mutex::new(VecDeque::new()),
                    idle_timeout,
                    sweeping: AtomicBool::new(false),
                })
            }),
            connector: crate::tls::client_connector(connect_timeout),
            target,
            host,
        };
        let inner = match SCOPE.with(|s| s.borrow().clone()) {
            Some(reuse) => reuse.get_or_make(key, make),
            None => Arc::new(make()),
        };
        Self { inner }
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
            .or_insert_with(|| self.inner.host.clone());
        let stack = self.inner.stacks.get();
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
        let mut connector = self.inner.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        let io = connector.call(self.inner.target.clone()).await?;
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
