//! An open WebSocket tunnel: bytes copied both ways, nobody's HTTP, until
//! either side closes, it idles out, or gatekeeper shuts down. Opened only
//! by `websocket::open`, after both sides completed the handshake.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tracing::debug;

/// What a tunnel takes over from its HTTP/1 connection, whose serving ends
/// when hyper hands the socket to the tunnel. The connection puts it in the
/// extensions of each request that asks for an upgrade.
#[derive(Clone)]
pub struct Tunnelling {
    /// The connection's place under `limits.max_connections` (and in the
    /// open-connections gauge), held until the tunnel ends.
    slot: Arc<dyn Any + Send + Sync>,
    /// No byte either way for this long closes both sides.
    idle_timeout: Duration,
    /// Set when the tunnel opens: the wire inspector stops reading HTTP.
    switched: Arc<AtomicBool>,
    /// Fires on shutdown: the tunnel closes rather than hold up the drain.
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Tunnelling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnelling")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Tunnelling {
    pub fn new(
        slot: Arc<dyn Any + Send + Sync>,
        idle_timeout: Duration,
        switched: Arc<AtomicBool>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            slot,
            idle_timeout,
            switched,
            shutdown,
        }
    }

    /// Both sides completed the handshake: the wire inspector stops reading
    /// HTTP, and the bytes are copied on a task of their own.
    pub(super) fn open(self, client: OnUpgrade, upstream: OnUpgrade) {
        self.switched.store(true, Ordering::Release);
        tokio::spawn(tunnel(client, upstream, self));
    }
}

/// Copies bytes both ways once both sides have switched protocols, until
/// either side closes, no byte has moved for the idle timeout, or gatekeeper
/// shuts down. Both sides close, and the connection's slot is given back,
/// when it returns.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, tunnelling: Tunnelling) {
    let Tunnelling {
        slot: _slot,
        idle_timeout,
        mut shutdown,
        ..
    } = tunnelling;
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            debug!(error = %e, "websocket upgrade did not complete");
            return;
        }
    };
    let clock = Arc::new(Clock::new());
    let mut client = Watched {
        inner: TokioIo::new(client),
        clock: clock.clone(),
    };
    let mut upstream = Watched {
        inner: TokioIo::new(upstream),
        clock: clock.clone(),
    };
    let mut copy = std::pin::pin!(tokio::io::copy_bidirectional(&mut client, &mut upstream));
    loop {
        let idle = clock.idle_for();
        if idle >= idle_timeout {
            debug!("idle websocket tunnel closed");
            break;
        }
        tokio::select! {
            result = copy.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "websocket tunnel closed with an error");
                }
                break;
            }
            () = tokio::time::sleep(idle_timeout - idle) => {}
            _ = shutdown.changed() => {
                debug!("websocket tunnel closed for shutdown");
                break;
            }
        }
    }
}

/// When a byte last arrived from either side of a tunnel.
struct Clock {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn moved(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed)),
        )
    }
}

/// One side of a tunnel, telling the clock when bytes arrive.
struct Watched<T> {
    inner: T,
    clock: Arc<Clock>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.moved();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
