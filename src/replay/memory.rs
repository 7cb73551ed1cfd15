//! The in-process store: a sharded map of 16-byte keys to a state and an expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::{BoxFuture, Claim, LotKey, LotState, ReplayStore, StoreError};

/// Kept small on purpose: 16-byte key plus this 8-byte value per lot_number.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Seconds since the store's epoch; u32 lasts 136 years.
    expires_at: u32,
    state: u8,
}

#[derive(Debug)]
pub struct MemoryStore {
    map: DashMap<LotKey, Slot>,
    /// Entries in the map, expired or not, kept beside the map because
    /// `DashMap::len` locks every shard.
    len: AtomicUsize,
    max_entries: usize,
    ttl: Duration,
    epoch: Instant,
    /// When the last sweep ran (seconds since `epoch`), to rate-limit sweeps
    /// forced by a full store.
    last_sweep: AtomicU32,
}

impl MemoryStore {
    pub fn new(ttl: Duration, max_entries: usize) -> Arc<Self> {
        Arc::new(Self {
            map: DashMap::new(),
            len: AtomicUsize::new(0),
            max_entries,
            ttl,
            epoch: Instant::now(),
            last_sweep: AtomicU32::new(0),
        })
    }

    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn expiry(&self) -> u32 {
        let ttl = u32::try_from(self.ttl.as_secs()).unwrap_or(u32::MAX);
        self.now().saturating_add(ttl.max(1))
    }

    /// Number of entries held (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn claim_now(&self, lot: LotKey) -> Result<Claim, StoreError> {
        let now = self.now();
        // At the bound, expired entries may still be counted: sweep them
        // first, at most once a second so refusals stay cheap under attack.
        if self.len.load(Ordering::Relaxed) >= self.max_entries {
            let last = self.last_sweep.load(Ordering::Relaxed);
            if now > last
                && self
                    .last_sweep
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                self.sweep();
            }
        }
        match self.map.entry(lot) {
            Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                if slot.expires_at > now {
                    return Ok(Claim::Seen(LotState::from_u8(slot.state)));
                }
                *slot = Slot {
                    expires_at: self.expiry(),
                    state: LotState::InFlight as u8,
                };
                Ok(Claim::Fresh)
            }
            Entry::Vacant(e) => {
                if self.len.load(Ordering::Relaxed) >= self.max_entries {
                    return Err(StoreError::Full(self.max_entries));
                }
                self.len.fetch_add(1, Ordering::Relaxed);
                e.insert(Slot {
                    expires_at: self.expiry(),
                    state: LotState::InFlight as u8,
                });
                Ok(Claim::Fresh)
            }
        }
    }

    pub fn record_now(&self, lot: LotKey, state: LotState) {
        let expires_at = self.expiry();
        if let Some(mut slot) = self.map.get_mut(&lot) {
            *slot = Slot {
                expires_at,
                state: state as u8,
            };
        }
    }

    /// The unexpired state of `lot`, if known.
    pub fn peek(&self, lot: LotKey) -> Option<LotState> {
        let now = self.now();
        self.map
            .get(&lot)
            .filter(|slot| slot.expires_at > now)
            .map(|slot| LotState::from_u8(slot.state))
    }

    /// Records `state` whether or not `lot` was claimed here (a mirror of a
    /// shared store's outcome). Returns false when the store is full.
    pub fn put(&self, lot: LotKey, state: LotState) -> bool {
        let slot = Slot {
            expires_at: self.expiry(),
            state: state as u8,
        };
        match self.map.entry(lot) {
            Entry::Occupied(mut e) => {
                *e.get_mut() = slot;
                true
            }
            Entry::Vacant(e) => {
                if self.len.load(Ordering::Relaxed) >= self.max_entries {
                    return false;
                }
                self.len.fetch_add(1, Ordering::Relaxed);
                e.insert(slot);
                true
            }
        }
    }

    pub fn release_now(&self, lot: LotKey) {
        if self.map.remove(&lot).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops expired entries, one shard lock at a time (no global pause).
    /// Returns how many were removed.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        self.last_sweep.store(now, Ordering::Relaxed);
        let removed = AtomicUsize::new(0);
        self.map.retain(|_, slot| {
            let keep = slot.expires_at > now;
            if !keep {
                removed.fetch_add(1, Ordering::Relaxed);
            }
            keep
        });
        let removed = removed.into_inner();
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Sweeps periodically for as long as the store is alive.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(store) => {
                        store.sweep();
                    }
                    None => return,
                }
            }
        });
    }
}

impl ReplayStore for MemoryStore {
    fn claim(&self, lot: LotKey) -> BoxFuture<'_, Result<Claim, StoreError>> {
        let result = self.claim_now(lot);
        Box::pin(async move { result })
    }

    fn record(&self, lot: LotKey, state: LotState) -> BoxFuture<'_, Result<(), StoreError>> {
        self.record_now(lot, state);
        Box::pin(async { Ok(()) })
    }

    fn release(&self, lot: LotKey) -> BoxFuture<'_, Result<(), StoreError>> {
        self.release_now(lot);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> LotKey {
        LotKey([n; 16])
    }

    #[test]
    fn second_claim_sees_in_flight_then_recorded_outcome() {
        let store = MemoryStore::new(Duration::from_secs(60), 10);
        assert_eq!(store.claim_now(key(1)).ok(), Some(Claim::Fresh));
        assert_eq!(
            store.claim_now(key(1)).ok(),
            Some(Claim::Seen(LotState::InFlight))
        );
        store.record_now(key(1), LotState::Passed);
        assert_eq!(
            store.claim_now(key(1)).ok(),
            Some(Claim::Seen(LotState::Passed))
        );
    }

    #[test]
    fn released_claim_can_be_claimed_again() {
        let store = MemoryStore::new(Duration::from_secs(60), 10);
        assert_eq!(store.claim_now(key(2)).ok(), Some(Claim::Fresh));
        store.release_now(key(2));
        assert_eq!(store.claim_now(key(2)).ok(), Some(Claim::Fresh));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn full_store_refuses_new_claims_but_never_evicts() {
        let store = MemoryStore::new(Duration::from_secs(60), 2);
        assert!(store.claim_now(key(1)).is_ok());
        assert!(store.claim_now(key(2)).is_ok());
        assert!(matches!(store.claim_now(key(3)), Err(StoreError::Full(2))));
        assert_eq!(
            store.claim_now(key(1)).ok(),
            Some(Claim::Seen(LotState::InFlight))
        );
    }

    /// Moves the store's clock `by` forward, as if that much time had passed.
    fn advance(store: &mut Arc<MemoryStore>, by: Duration) {
        let store = Arc::get_mut(store).expect("the test holds the only handle");
        store.epoch = store.epoch.checked_sub(by).expect("the clock starts later");
    }

    #[test]
    fn expired_entries_can_be_claimed_again_and_are_swept() {
        let mut store = MemoryStore::new(Duration::from_secs(1), 10);
        assert_eq!(store.claim_now(key(7)).ok(), Some(Claim::Fresh));
        assert_eq!(store.claim_now(key(8)).ok(), Some(Claim::Fresh));
        store.record_now(key(7), LotState::Passed);
        assert_eq!(store.peek(key(7)), Some(LotState::Passed));
        advance(&mut store, Duration::from_millis(2100));
        assert_eq!(store.peek(key(7)), None);
        assert_eq!(
            store.claim_now(key(7)).ok(),
            Some(Claim::Fresh),
            "an expired lot is fresh again"
        );
        assert_eq!(store.sweep(), 1, "only the expired, unclaimed lot is swept");
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_full_store_sweeps_expired_entries_before_refusing() {
        let mut store = MemoryStore::new(Duration::from_secs(1), 2);
        assert!(store.claim_now(key(1)).is_ok());
        assert!(store.claim_now(key(2)).is_ok());
        assert!(matches!(store.claim_now(key(3)), Err(StoreError::Full(2))));
        advance(&mut store, Duration::from_millis(2100));
        assert_eq!(
            store.claim_now(key(3)).ok(),
            Some(Claim::Fresh),
            "expired entries made room"
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn concurrent_claims_of_one_lot_have_exactly_one_winner() {
        let store = MemoryStore::new(Duration::from_secs(60), 10);
        let winners = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    if store.claim_now(key(9)).ok() == Some(Claim::Fresh) {
                        winners.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(winners.into_inner(), 1);
    }

    #[test]
    fn lot_key_folds_hex_case() {
        assert_eq!(
            LotKey::from_hex("4DC3CFC2CDFF448CAD8D13107198D473"),
            LotKey::from_hex("4dc3cfc2cdff448cad8d13107198d473")
        );
        assert!(LotKey::from_hex("4dc3").is_none());
    }
}
