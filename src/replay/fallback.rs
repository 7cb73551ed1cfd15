//! `on_store_error`: what happens when the shared store cannot be reached.
//!
//! With `Local`, every outcome is also mirrored in this instance's memory
//! store, and while Redis is unreachable claims are decided there, so the
//! instance keeps refusing what it has seen (replays across instances are
//! possible in that window; each fallback is logged and counted). With `Deny`,
//! the error reaches the gate, which answers 503 `captcha_unavailable`.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tracing::warn;

use super::{BoxFuture, Claim, LotKey, LotState, MemoryStore, ReplayStore, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Local,
    Deny,
}

#[derive(Debug)]
pub struct FallbackStore {
    shared: Arc<dyn ReplayStore>,
    local: Arc<MemoryStore>,
    policy: OnStoreError,
    /// Shared-store failures (the `gatekeeper_replay_store_errors_total` metric).
    errors: Counter,
}

impl FallbackStore {
    pub fn new(
        shared: Arc<dyn ReplayStore>,
        local: Arc<MemoryStore>,
        policy: OnStoreError,
        errors: Counter,
    ) -> Self {
        Self {
            shared,
            local,
            policy,
            errors,
        }
    }

    /// Counts and logs a shared-store failure, and says whether to go on locally.
    fn fall_back(&self, op: &'static str, e: &StoreError) -> bool {
        self.errors.inc();
        let local = self.policy == OnStoreError::Local;
        crate::logging::throttled!(
            warn!(op, error = %e, fallback = if local { "local" } else { "deny" }, "replay store unavailable")
        );
        local
    }

    async fn claim_async(&self, lot: LotKey) -> Result<Claim, StoreError> {
        match self.shared.claim(lot).await {
            // Fresh to Redis but decided here during an outage: still a replay.
            Ok(Claim::Fresh) => match self.local.peek(lot).filter(|s| *s != LotState::InFlight) {
                Some(state) => {
                    let _ = self.shared.record(lot, state).await;
                    Ok(Claim::Seen(state))
                }
                None => Ok(Claim::Fresh),
            },
            Ok(seen) => Ok(seen),
            Err(e) if self.fall_back("claim", &e) => self.local.claim_now(lot),
            Err(e) => Err(e),
        }
    }

    async fn record_async(&self, lot: LotKey, state: LotState) -> Result<(), StoreError> {
        if self.policy == OnStoreError::Local {
            self.local.put(lot, state);
        }
        match self.shared.record(lot, state).await {
            Err(e) if !self.fall_back("record", &e) => Err(e),
            _ => Ok(()),
        }
    }

    async fn release_async(&self, lot: LotKey) -> Result<(), StoreError> {
        self.local.release_now(lot);
        match self.shared.release(lot).await {
            Err(e) if !self.fall_back("release", &e) => Err(e),
            _ => Ok(()),
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
