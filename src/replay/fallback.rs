//! `on_store_error`: what happens when the shared store cannot be reached.
//!
//! With `Local`, every outcome is also mirrored in this instance's memory
//! store, and while Redis is unreachable claims are decided there, so the
//! instance keeps refusing what it has seen. With `Deny`, the error reaches
//! the gate, which answers 503 `captcha_unavailable`.
//!
//! What `Local` guarantees, and what it does not:
//!
//! - This instance never forwards one proof twice, outage or not: every
//!   outcome is in its memory for the replay ttl, and a claim that Redis
//!   calls fresh but this instance knows is refused (and written to Redis).
//! - During an outage the instances do not see each other's outcomes: a
//!   proof may be used once on each instance in that window. Each fallback is
//!   counted (`gatekeeper_replay_store_errors_total`).
//! - When Redis answers again, the outcomes decided here during the outage
//!   are written to it in the background (every [`WRITE_BACK_INTERVAL`] until
//!   done, at most [`MAX_BACKLOG`] of them), so from then on every instance
//!   refuses them too. A proof used on two instances during the outage stays
//!   used twice; one reused on another instance after Redis returns but
//!   before the write-back reaches it is the remaining window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use super::{BoxFuture, Claim, LotKey, LotState, MemoryStore, ReplayStore, StoreError};

/// How often outcomes decided during an outage are offered to Redis again.
pub const WRITE_BACK_INTERVAL: Duration = Duration::from_millis(200);
/// Outcomes kept for the write-back (16 bytes each); beyond it they are
/// still refused here, but not written back.
pub const MAX_BACKLOG: usize = 1_000_000;
/// Outcomes written back at once.
const WRITE_BACK_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Local,
    Deny,
}

#[derive(Debug)]
pub struct FallbackStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<dyn ReplayStore>,
    local: Arc<MemoryStore>,
    policy: OnStoreError,
    /// Shared-store failures (the `gatekeeper_replay_store_errors_total` metric).
    errors: Counter,
    /// Lots whose outcome Redis has not heard of: recorded here while it was
    /// unreachable.
    backlog: Mutex<Vec<LotKey>>,
    /// Set while a write-back task runs.
    writing_back: AtomicBool,
    /// Where the write-back runs: the runtime the store was built on.
    runtime: Option<Handle>,
}

impl FallbackStore {
    pub fn new(
        shared: Arc<dyn ReplayStore>,
        local: Arc<MemoryStore>,
        policy: OnStoreError,
        errors: Counter,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                local,
                policy,
                errors,
                backlog: Mutex::new(Vec::new()),
                writing_back: AtomicBool::new(false),
                runtime: Handle::try_current().ok(),
            }),
        }
    }

    async fn claim_async(&self, lot: LotKey) -> Result<Claim, StoreError> {
        let inner = &self.inner;
        match inner.shared.claim(lot).await {
            // Fresh to Redis but decided here during an outage: still a replay.
            Ok(Claim::Fresh) => match inner.local.peek(lot).filter(|s| *s != LotState::InFlight) {
                Some(state) => {
                    let _ = inner.shared.record(lot, state).await;
                    Ok(Claim::Seen(state))
                }
                None => Ok(Claim::Fresh),
            },
            Ok(seen) => Ok(seen),
            Err(e) if inner.fall_back("claim", &e) => inner.local.claim_now(lot),
            Err(e) => Err(e),
        }
    }

    async fn record_async(&self, lot: LotKey, state: LotState) -> Result<(), StoreError> {
        let inner = &self.inner;
        if inner.policy == OnStoreError::Local {
            inner.local.put(lot, state);
        }
        match inner.shared.record(lot, state).await {
            Ok(()) => Ok(()),
            Err(e) if inner.fall_back("record", &e) => {
                Inner::remember(&self.inner, lot);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn release_async(&self, lot: LotKey) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.local.release_now(lot);
        match inner.shared.release(lot).await {
            Err(e) if !inner.fall_back("release", &e) => Err(e),
            _ => Ok(()),
        }
    }
}

impl Inner {
    /// Counts and logs a shared-store failure, and says whether to go on locally.
    /// While the store is known down every request fails over at once: those
    /// are logged at debug, the outage itself is warned once by the store.
    fn fall_back(&self, op: &'static str, e: &StoreError) -> bool {
        self.errors.inc();
        let local = self.policy == OnStoreError::Local;
        let fallback = if local { "local" } else { "deny" };
        if matches!(e, StoreError::Down(_)) {
            debug!(op, error = %e, fallback, "replay store down");
        } else {
            crate::logging::throttled!(warn!(op, error = %e, fallback, "replay store unavailable"));
        }
        local
    }

    /// Keeps `lot` for the write-back and makes sure one is running.
    fn remember(this: &Arc<Self>, lot: LotKey) {
        let Ok(mut backlog) = this.backlog.lock() else {
            return;
        };
        if backlog.len() >= MAX_BACKLOG {
            return;
        }
        if backlog.len() + 1 == MAX_BACKLOG {
            warn!(
                max = MAX_BACKLOG,
                "replay store outage backlog full: later outcomes are refused here but not written back"
            );
        }
        backlog.push(lot);
        drop(backlog);
        if !this.writing_back.swap(true, Ordering::AcqRel) {
            let task = Self::write_back(Arc::downgrade(this));
            match this.runtime.as_ref() {
                Some(runtime) => drop(runtime.spawn(task)),
                None => drop(tokio::spawn(task)),
            }
        }
    }

    /// Offers the backlog to the shared store until it takes all of it. While
    /// the store is down only one outcome is tried per round, and fails at once.
    async fn write_back(this: Weak<Self>) {
        let mut written = 0usize;
        loop {
            tokio::time::sleep(WRITE_BACK_INTERVAL).await;
            let Some(inner) = this.upgrade() else { return };
            let first = inner.backlog.lock().ok().and_then(|b| b.last().copied());
            if let Some(lot) = first
                && !inner.write_one(lot).await
            {
                continue;
            }
            let batch = match inner.backlog.lock() {
                Ok(mut backlog) => std::mem::take(&mut *backlog),
                Err(_) => return,
            };
            let mut failed = Vec::new();
            for chunk in batch.chunks(WRITE_BACK_CONCURRENCY) {
                let done =
                    futures_util::future::join_all(chunk.iter().map(|lot| inner.write_one(*lot)))
                        .await;
                for (lot, ok) in chunk.iter().zip(done) {
                    if ok {
                        written += 1;
                    } else {
                        failed.push(*lot);
                    }
                }
            }
            if !failed.is_empty() {
                if let Ok(mut backlog) = inner.backlog.lock() {
                    backlog.extend(failed);
                }
                continue;
            }
            // Nothing left: stop, unless an outcome arrived meanwhile.
            inner.writing_back.store(false, Ordering::Release);
            let more = inner.backlog.lock().is_ok_and(|b| !b.is_empty());
            if !more || inner.writing_back.swap(true, Ordering::AcqRel) {
                if written > 0 {
                    info!(
                        written,
                        "outcomes decided during the replay store outage are written back"
                    );
                }
                return;
            }
        }
    }

    /// Writes what this instance knows of `lot` to the shared store; false
    /// when the store did not take it. A lot released since (the proof may be
    /// tried again) needs nothing.
    async fn write_one(&self, lot: LotKey) -> bool {
        match self.local.peek(lot).filter(|s| *s != LotState::InFlight) {
            Some(state) => self.shared.record(lot, state).await.is_ok(),
            None => true,
        }
    }
}

impl ReplayStore for FallbackStore {
    fn claim(&self, lot: LotKey) -> BoxFuture<'_, Result<Claim, StoreError>> {
        Box::pin(self.claim_async(lot))
    }

    fn record(&self, lot: LotKey, state: LotState) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.record_async(lot, state))
    }

    fn release(&self, lot: LotKey) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.release_async(lot))
    }
}
