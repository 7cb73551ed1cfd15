//! The in-process kept-request store: one lock around a map and an expiry
//! index. Every call first drops what has expired, so expired requests
//! never count against the bounds and are freed without a sweeper task.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{ChallengeId, KeepError, KeptRequest, KeptStore, StoreError};
use crate::config::ChallengeConfig;
use crate::replay::BoxFuture;

#[derive(Debug)]
pub struct MemoryKeptStore {
    state: Mutex<State>,
    ttl: Duration,
    max_entries: u64,
    max_bytes: u64,
    /// The store's clock starts here; tests move it back to age entries.
    epoch: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// foldhash, not SipHash: a flood of challenges hashes ids on every keep
    /// and expiry, and the ids are random bits drawn here, not a client's.
    entries: HashMap<ChallengeId, Entry, foldhash::fast::RandomState>,
    /// (expires at in ms since `epoch`, id) in the order kept, which is
    /// expiry order (one TTL, a monotonic clock). A taken entry's item stays
    /// until its time comes and is then skipped: no search on take.
    expiries: VecDeque<(u64, ChallengeId)>,
    bytes: u64,
}

#[derive(Debug)]
struct Entry {
    /// The request encoded as for Redis, in one allocation of its own: a
    /// request as hyper parsed it shares its connection's read buffer
    /// (header values and body are slices of it), which keeping it would
    /// pin for the TTL, several KiB per kept request beyond its weight.
    blob: Box<[u8]>,
    weight: u64,
    expires_at: u64,
}

impl State {
    fn purge(&mut self, now: u64) {
        while let Some(&(at, id)) = self.expiries.front() {
            if at > now {
                break;
            }
            self.expiries.pop_front();
            // Only the entry this item was made for: ids are random, but
            // an id drawn again after a take is a new entry.
            if self.entries.get(&id).is_some_and(|e| e.expires_at == at) {
                self.remove(id);
            }
        }
    }

    fn remove(&mut self, id: ChallengeId) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.bytes = self.bytes.saturating_sub(entry.weight);
        Some(entry)
    }
}

impl MemoryKeptStore {
    pub fn new(config: &ChallengeConfig) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ttl: config.ttl,
            max_entries: config.max_entries as u64,
            max_bytes: config.max_bytes,
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The state with expired entries dropped. A panic elsewhere while the
    /// lock was held leaves the maps consistent (each change is one call),
    /// so a poisoned lock is used as is.
    fn live(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.purge(self.now());
        state
    }

    pub fn keep_now(&self, request: KeptRequest) -> Result<ChallengeId, KeepError> {
        let weight = request.weight();
        let blob = request
            .encode()
            .map_err(|e| KeepError::Unavailable(e.to_string()))?
            .into_boxed_slice();
        drop(request);
        let mut state = self.live();
        let entries = state.entries.len() as u64;
        if entries >= self.max_entries || state.bytes.saturating_add(weight) > self.max_bytes {
            return Err(KeepError::Full {
                entries,
                bytes: state.bytes,
            });
        }
        let mut id = ChallengeId::random();
        while state.entries.contains_key(&id) {
            id = ChallengeId::random();
        }
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let expires_at = self.now().saturating_add(ttl_ms);
        state.expiries.push_back((expires_at, id));
        state.bytes += weight;
        state.entries.insert(
            id,
            Entry {
                blob,
                weight,
                expires_at,
            },
        );
        Ok(id)
    }

    pub fn take_now(&self, id: ChallengeId) -> Option<KeptRequest> {
        let entry = self.live().remove(id)?;
        // Encoded here from a valid request: decoding cannot fail.
        KeptRequest::decode(&entry.blob).ok()
    }

    pub fn exists_now(&self, id: ChallengeId) -> bool {
        self.live().entries.contains_key(&id)
    }

    pub fn peek_now(&self, id: ChallengeId) -> Option<KeptRequest> {
        let blob = self.live().entries.get(&id)?.blob.clone();
        KeptRequest::decode(&blob).ok()
    }

    pub fn size_now(&self) -> (u64, u64) {
        let state = self.live();
        (state.entries.len() as u64, state.bytes)
    }
}

impl KeptStore for MemoryKeptStore {
    fn keep(&self, request: KeptRequest) -> BoxFuture<'_, Result<ChallengeId, KeepError>> {
        let result = self.keep_now(request);
        Box::pin(async move { result })
    }

    fn take(&self, id: ChallengeId) -> BoxFuture<'_, Result<Option<KeptRequest>, StoreError>> {
        let result = self.take_now(id);
        Box::pin(async move { Ok(result) })
    }

    fn exists(&self, id: ChallengeId) -> BoxFuture<'_, Result<bool, StoreError>> {
        let result = self.exists_now(id);
        Box::pin(async move { Ok(result) })
    }

    fn peek(&self, id: ChallengeId) -> BoxFuture<'_, Result<Option<KeptRequest>, StoreError>> {
        let result = self.peek_now(id);
        Box::pin(async move { Ok(result) })
    }

    fn size(&self) -> BoxFuture<'_, Result<(u64, u64), StoreError>> {
        let result = self.size_now();
        Box::pin(async move { Ok(result) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::kept::sample;

    fn store(ttl_secs: u64, max_entries: usize, max_bytes: u64) -> MemoryKeptStore {
        MemoryKeptStore::new(&ChallengeConfig {
            ttl: Duration::from_secs(ttl_secs),
            max_entries,
            max_bytes,
            widget_url: http::Uri::from_static("https://example.com/gt4.js"),
            template: None,
        })
    }

    /// Moves the store's clock `by` forward, as if that much time had passed.
    fn advance(store: &mut MemoryKeptStore, by: Duration) {
        store.epoch = store.epoch.checked_sub(by).expect("the clock starts later");
    }

    #[test]
    fn a_kept_request_is_taken_once() {
        let s = store(60, 10, 1 << 20);
        let kept = sample(b"name=ann");
        let id = s.keep_now(kept.clone()).expect("room");
        assert!(s.exists_now(id));
        assert!(s.exists_now(id), "exists does not take");
        assert_eq!(s.take_now(id), Some(kept));
        assert_eq!(s.take_now(id), None);
        assert!(!s.exists_now(id));
        assert_eq!(s.size_now(), (0, 0));
        assert_eq!(s.take_now(ChallengeId::random()), None);
    }

    #[test]
    fn bounds_refuse_and_never_evict() {
        let s = store(60, 2, 1 << 20);
        let a = s.keep_now(sample(b"a")).expect("room");
        s.keep_now(sample(b"b")).expect("room");
        let one = sample(b"b").weight();
        assert!(matches!(
            s.keep_now(sample(b"c")),
            Err(KeepError::Full { entries: 2, bytes }) if bytes == 2 * one
        ));
        assert!(s.exists_now(a), "nothing live was evicted");
        assert!(s.take_now(a).is_some());
        s.keep_now(sample(b"c")).expect("a take makes room");

        let s = store(60, 10, 3000);
        s.keep_now(sample(&[0; 1500])).expect("room");
        assert!(
            matches!(
                s.keep_now(sample(&[0; 1500])),
                Err(KeepError::Full { entries: 1, .. })
            ),
            "the byte bound counts the first body"
        );
        s.keep_now(sample(&[0; 100])).expect("a smaller one fits");
        assert!(matches!(
            s.keep_now(sample(&[0; 4000])),
            Err(KeepError::Full { .. })
        ));
    }

    #[test]
    fn expired_requests_are_gone_and_free_their_room() {
        let mut s = store(10, 1, 1 << 20);
        let id = s.keep_now(sample(b"old")).expect("room");
        advance(&mut s, Duration::from_millis(9_900));
        assert!(s.exists_now(id), "not yet expired");
        assert!(matches!(
            s.keep_now(sample(b"new")),
            Err(KeepError::Full { .. })
        ));
        advance(&mut s, Duration::from_millis(200));
        assert!(!s.exists_now(id));
        assert_eq!(s.size_now(), (0, 0), "the expired entry no longer counts");
        let fresh = s.keep_now(sample(b"new")).expect("room again");
        assert_eq!(s.take_now(id), None);
        assert!(s.take_now(fresh).is_some());
    }

    #[test]
    fn concurrent_takes_have_one_winner() {
        let s = store(60, 10, 1 << 20);
        let id = s.keep_now(sample(b"x")).expect("room");
        let winners = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    if s.take_now(id).is_some() {
                        winners.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(winners.into_inner(), 1);
    }
}
