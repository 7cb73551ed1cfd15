//! One listening socket and its accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::connection::{self, Place, Protocol};
use super::workers::Workers;
use super::{Live, Shared, StartError, admin};
use crate::metrics::KindLabels;
use crate::proxy::ConnInfo;
use crate::proxy::headers::forwarding::is_trusted;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Https,
    Http,
    Admin,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Https => "https",
            Role::Http => "http",
            Role::Admin => "admin",
        }
    }
}

/// What an accept loop needs.
pub struct Context {
    pub live: Live,
    pub shared: Arc<Shared>,
    pub connections: Arc<Semaphore>,
    pub drain: watch::Receiver<bool>,
    pub workers: Workers,
}

#[derive(Debug)]
pub struct Listener {
    /// The address as configured (port 0 stays 0), to notice changes.
    pub configured: SocketAddr,
    pub bound: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Listener {
    pub async fn bind(role: Role, addr: SocketAddr, ctx: Context) -> Result<Self, StartError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let bound = tcp
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let (stop, stop_rx) = watch::channel(false);
        match role {
            Role::Admin => {
                info!(addr = %bound, "listening (admin: /metrics, /healthz, /readyz)");
                tokio::spawn(admin::accept_loop(tcp, ctx.shared, stop_rx));
            }
            Role::Https => {
                info!(addr = %bound, "listening (https: h2, http/1.1)");
                tokio::spawn(accept_loop(tcp, role, ctx, stop_rx));
            }
            Role::Http => {
                info!(addr = %bound, "listening (http: http/1.1, h2 prior knowledge)");
                tokio::spawn(accept_loop(tcp, role, ctx, stop_rx));
            }
        }
        Ok(Self {
            configured: addr,
            bound,
            stop,
        })
    }

    /// Stops accepting; the socket closes. Open connections are not touched.
    pub fn stop(self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(tcp: TcpListener, role: Role, ctx: Context, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        // One address may hold only so many connections; a trusted proxy
        // carries many clients and is exempt. Over the limit, the connection
        // is closed at once, before it can wait for a place.
        let peer_ip = peer.ip().to_canonical();
        let per_address = if is_trusted(peer_ip, &ctx.live.load().config.server.trusted_proxies) {
            None
        } else {
            match ctx.shared.admission.connections.enter(peer_ip) {
                Some(guard) => Some(guard),
                None => {
                    ctx.shared
                        .metrics
                        .connections_refused
                        .get_or_create(&KindLabels {
                            kind: "per_address",
                        })
                        .inc();
                    debug!(peer = %peer, "too many connections from this address: closed");
                    drop(stream);
                    continue;
                }
            }
        };
        // At the limit, this connection waits unserved and the loop stops
        // accepting: the rest wait in the kernel's backlog, costing nothing here.
        let permit = tokio::select! {
            permit = ctx.connections.clone().acquire_owned() => match permit {
                Ok(permit) => Place { permit, per_address },
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        // The socket moves to the chosen worker's reactor (see `workers`).
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(peer = %peer, error = %e, "cannot hand the connection to a worker");
                continue;
            }
        };
        let info = ConnInfo::new(peer, role.label());
        let (live, shared, drain) = (ctx.live.clone(), ctx.shared.clone(), ctx.drain.clone());
        ctx.workers.spawn(async move {
            let Ok(stream) = TcpStream::from_std(stream) else {
                return;
            };
            // The permit moves into the connection: a WebSocket tunnel keeps
            // it after hyper lets the socket go.
            match role {
                Role::Https => serve_tls(stream, info, live, shared, drain, permit).await,
                _ => {
                    let protocol = Protocol::Cleartext;
                    connection::serve(stream, protocol, info, live, shared, drain, permit).await
                }
            }
        });
    }
}

async fn serve_tls(
    stream: TcpStream,
    info: ConnInfo,
    live: Live,
    shared: Arc<Shared>,
    drain: watch::Receiver<bool>,
    permit: Place,
) {
    // The certificate of the moment: a renewal applies from the next handshake.
    let (tls, timeout) = {
        let generation = live.load();
        (
            generation.tls.clone(),
            generation.config.limits.handshake_timeout,
        )
    };
    let Some(tls) = tls else { return };
    let failed = |why: &dyn std::fmt::Display| {
        debug!(peer = %info.peer, error = %why, "TLS handshake failed");
        shared.metrics.tls_handshake_failures.inc();
    };
    // Boxed: the handshake's state is only needed until it completes, and
    // would otherwise size every connection's task for its whole life.
    let handshake = Box::pin(TlsAcceptor::from(tls).accept(stream));
    // The stream is moved into the connection within this match: a local
    // still in scope at the `.await` below would keep a copy of its size
    // (over a kilobyte) in this future for the connection's whole life.
    let serving = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls)) => {
            // The protocol comes from ALPN, never from sniffing bytes.
            let protocol = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                // A TLS-ALPN-01 validation: the handshake was the answer
                // (RFC 8737 §3), nothing is served on it.
                Some(super::acme::ACME_TLS_ALPN) => return,
                _ => Protocol::Http1,
            };
            connection::serve(tls, protocol, info, live, shared, drain, permit)
        }
        Ok(Err(e)) => return failed(&e),
        Err(_) => return failed(&"timed out"),
    };
    serving.await;
}
