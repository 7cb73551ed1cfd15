//! Listeners: accept, bound, hand each connection to `connection::serve`.
//!
//! `max_connections` is one semaphore over all public listeners; a permit is
//! taken before `accept`, so excess clients wait in the kernel's backlog
//! instead of costing memory here.

pub mod connection;
mod inspect;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::{Config, Limits};
use crate::gate::Gate;
use crate::proxy::{ConnInfo, Proxy};
use connection::Protocol;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Gate(String),
}

/// A started gatekeeper: its bound addresses and a handle to stop it.
#[derive(Debug)]
pub struct RunningServer {
    pub https_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    connections: Arc<Semaphore>,
    max_connections: u32,
}

impl RunningServer {
    /// Stops accepting, closes idle connections, lets requests in flight
    /// finish for at most `grace`, then returns.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        let drained =
            tokio::time::timeout(grace, self.connections.acquire_many(self.max_connections)).await;
        if drained.is_err() {
            warn!("shutdown grace period ended with connections still open");
        }
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self, grace: Duration) {
        wait_for_signal().await;
        info!("shutting down");
        self.shutdown(grace).await;
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Binds every listener in `config` and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let tls = match &config.tls {
        Some(files) => Some(tls::server_config(&files.cert, &files.key).map_err(StartError::Tls)?),
        None => None,
    };
    let gate = Gate::new(&config).map_err(StartError::Gate)?;
    let proxy = Arc::new(Proxy::new(&config, gate));
    let max_connections = u32::try_from(config.limits.max_connections).unwrap_or(u32::MAX);
    let connections = Arc::new(Semaphore::new(max_connections as usize));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let mut https_addr = None;
    if let (Some(addr), Some(tls)) = (config.server.https, tls) {
        let listener = bind(addr).await?;
        https_addr = Some(
            listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?,
        );
        info!(addr = %https_addr.unwrap_or(addr), "listening (https: h2, http/1.1)");
        let ctx = AcceptContext {
            proxy: proxy.clone(),
            limits: config.limits.clone(),
            connections: connections.clone(),
            shutdown: shutdown_rx.clone(),
        };
        tasks.spawn(accept_loop(listener, Some(TlsAcceptor::from(tls)), ctx));
    }
    let mut http_addr = None;
    if let Some(addr) = config.server.http {
        let listener = bind(addr).await?;
        http_addr = Some(
            listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?,
        );
        info!(addr = %http_addr.unwrap_or(addr), "listening (http: http/1.1, h2 prior knowledge)");
        let ctx = AcceptContext {
            proxy,
            limits: config.limits.clone(),
            connections: connections.clone(),
            shutdown: shutdown_rx,
        };
        tasks.spawn(accept_loop(listener, None, ctx));
    }
    info!(upstream = %config.upstream.url, routes = config.routes.len(), "gatekeeper started");
    Ok(RunningServer {
        https_addr,
        http_addr,
        shutdown,
        tasks,
        connections,
        max_connections,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

struct AcceptContext {
    proxy: Arc<Proxy>,
    limits: Limits,
    connections: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, mut ctx: AcceptContext) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        let permit = tokio::select! {
            permit = ctx.connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = ctx.shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = ctx.shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo { peer, scheme };
        let proxy = ctx.proxy.clone();
        let limits = ctx.limits.clone();
        let shutdown = ctx.shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => serve_tls(stream, acceptor, info, proxy, limits, shutdown).await,
                None => {
                    connection::serve(stream, Protocol::Cleartext, info, proxy, limits, shutdown)
                        .await
                }
            }
        });
    }
}

async fn serve_tls(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    info: ConnInfo,
    proxy: Arc<Proxy>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(peer = %info.peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(peer = %info.peer, "TLS handshake timed out");
            return;
        }
    };
    // The protocol comes from ALPN, never from sniffing bytes.
    let protocol = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    connection::serve(tls, protocol, info, proxy, limits, shutdown).await;
}
