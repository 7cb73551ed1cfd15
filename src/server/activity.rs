//! What the connection watchdog reads: a connection's requests in flight,
//! its idle and head-arrival times, and how fast its client takes our
//! writes. The serving code and the wire inspector update it; the watchdog in
//! `connection` judges it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::Limits;

/// The least a client that holds up our writes must read (slow read, as
/// slowhttptest -X does it): 1 KiB/s, averaged over each `idle_timeout`.
const MIN_SEND_RATE: u64 = 1024;

/// Judges, once per `idle_timeout` window, whether a client that blocked our
/// writes read at least `MIN_SEND_RATE`. A window in which writes never
/// blocked (the upstream was slow, or nothing was sent) is never judged.
pub(super) struct SendRate {
    window_start: Instant,
    bytes_at_start: u64,
}

impl SendRate {
    pub(super) fn new(activity: &Activity) -> Self {
        Self {
            window_start: Instant::now(),
            bytes_at_start: activity.bytes_written.load(Ordering::Relaxed),
        }
    }

    pub(super) fn too_slow(&mut self, activity: &Activity, window: Duration) -> bool {
        let elapsed = self.window_start.elapsed();
        if elapsed < window {
            return false;
        }
        let bytes = activity.bytes_written.load(Ordering::Relaxed);
        let sent = bytes.saturating_sub(self.bytes_at_start);
        let blocked = activity.write_blocked.swap(false, Ordering::Relaxed)
            | activity.blocked_now.load(Ordering::Relaxed);
        *self = Self {
            window_start: Instant::now(),
            bytes_at_start: bytes,
        };
        blocked && (sent as f64) < MIN_SEND_RATE as f64 * elapsed.as_secs_f64()
    }
}

/// How long a connection may go without a request in flight: the first
/// request must start within header_read_timeout of accept; after that, a
/// connection may sit idle for idle_timeout.
pub(super) fn idle_limit(activity: &Activity, limits: &Limits) -> Duration {
    if activity.served() > 0 {
        limits.idle_timeout
    } else {
        limits.header_read_timeout
    }
}

/// Requests in flight on one connection, when the last one ended, and
/// whether a request head is arriving.
pub(super) struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    served: AtomicUsize,
    /// Milliseconds since `epoch` at which the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Milliseconds since `epoch` of the first byte of a head not yet
    /// complete; `NO_HEAD` when none is arriving.
    head_since_ms: AtomicU64,
    /// Bytes the client has taken, and whether a write was blocked by it
    /// since the watchdog last looked (see `SendRate`).
    bytes_written: AtomicU64,
    write_blocked: AtomicBool,
    /// A write is waiting on the client right now. (The kernel does not wake
    /// a writer for a few freed bytes, so a slow reader may cause no further
    /// `Pending` for a long time: this stays set until a write succeeds.)
    blocked_now: AtomicBool,
    /// The connection is being dropped for a timeout: reset it.
    aborted: AtomicBool,
}

const NO_HEAD: u64 = u64::MAX;

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(NO_HEAD),
            bytes_written: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            blocked_now: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
        }
    }

    /// A write could not proceed: the client's window is full.
    pub(super) fn write_blocked(&self) {
        self.write_blocked.store(true, Ordering::Relaxed);
        self.blocked_now.store(true, Ordering::Relaxed);
    }

    pub(super) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
    }

    pub(super) fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// The client took `n` bytes.
    pub(super) fn wrote(&self, n: usize) {
        self.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
        self.blocked_now.store(false, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NO_HEAD - 1)
    }

    /// The wire inspector saw the first byte of a request head.
    pub(super) fn head_started(&self) {
        self.head_since_ms.store(self.now_ms(), Ordering::Release);
    }

    /// The head is complete (or inspection stopped).
    pub(super) fn head_done(&self) {
        self.head_since_ms.store(NO_HEAD, Ordering::Release);
    }

    /// How long the current head has been arriving.
    pub(super) fn head_for(&self) -> Option<Duration> {
        let since = self.head_since_ms.load(Ordering::Acquire);
        (since != NO_HEAD).then(|| Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// How long the connection has had no request in flight; `None` while busy.
    pub(super) fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    pub(super) fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

/// Held from the start of a request until its response body is finished or dropped.
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.served.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
