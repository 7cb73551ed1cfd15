//! Per-client throttle of refused proofs: a token bucket per client address.
//!
//! Each refusal a client earns (missing, malformed, expired, replayed or
//! failed proof) takes a token; tokens come back at `per_second`. A client
//! with no token left gets 429 and `Retry-After` before any body is read or
//! GeeTest is called. Memory is bounded by `max_clients`: full buckets (idle
//! clients) are swept, and beyond the bound new clients are not tracked.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tracing::warn;

use crate::config::ThrottleConfig;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

#[derive(Debug)]
pub struct Throttle {
    buckets: DashMap<IpAddr, Bucket>,
    len: AtomicUsize,
    per_ms: f64,
    burst: f64,
    max_clients: usize,
    epoch: Instant,
    last_sweep_ms: AtomicU64,
}

impl Throttle {
    pub fn new(config: &ThrottleConfig) -> Self {
        Self {
            buckets: DashMap::new(),
            len: AtomicUsize::new(0),
            per_ms: config.per_second / 1000.0,
            burst: f64::from(config.burst),
            max_clients: config.max_clients,
            epoch: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn refilled(&self, b: Bucket, now: u64) -> f64 {
        (b.tokens + (now.saturating_sub(b.updated_ms)) as f64 * self.per_ms).min(self.burst)
    }

    /// `Some(wait)` when `client` has no refusal left: how long until it has one.
    pub fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let now = self.now_ms();
        let bucket = *self.buckets.get(&client)?;
        let tokens = self.refilled(bucket, now);
        if tokens >= 1.0 {
            return None;
        }
        let wait_ms = ((1.0 - tokens) / self.per_ms).ceil();
        Some(Duration::from_millis(wait_ms as u64))
    }

    /// Takes one token from `client` for a refusal.
    pub fn charge(&self, client: IpAddr) {
        let now = self.now_ms();
        if self.len.load(Ordering::Relaxed) >= self.max_clients {
            self.sweep_at_most_every_second(now);
        }
        match self.buckets.entry(client) {
            Entry::Occupied(mut e) => {
                let tokens = self.refilled(*e.get(), now);
                *e.get_mut() = Bucket {
                    tokens: (tokens - 1.0).max(0.0),
                    updated_ms: now,
                };
            }
            Entry::Vacant(e) => {
                if self.len.load(Ordering::Relaxed) >= self.max_clients {
                    crate::logging::throttled!(warn!(
                        max_clients = self.max_clients,
                        "throttle table full: new clients are not tracked"
                    ));
                    return;
                }
                self.len.fetch_add(1, Ordering::Relaxed);
                e.insert(Bucket {
                    tokens: self.burst - 1.0,
                    updated_ms: now,
                });
            }
        }
    }

    /// Forgets clients whose bucket has refilled: they cost nothing to recreate.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let before = self.buckets.len();
        self.buckets
            .retain(|_, b| self.refilled(*b, now) < self.burst);
        let removed = before.saturating_sub(self.buckets.len());
        self.len.store(self.buckets.len(), Ordering::Relaxed);
        removed
    }

    fn sweep_at_most_every_second(&self, now: u64) {
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep();
        }
    }

    pub fn tracked(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_second: f64, burst: u32, max_clients: usize) -> Throttle {
        Throttle::new(&ThrottleConfig {
            per_second,
            burst,
            max_clients,
        })
    }

    #[test]
    fn a_client_is_blocked_after_its_burst_and_others_are_not() {
        let t = throttle(0.001, 3, 10);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(t.blocked(a).is_none());
            t.charge(a);
        }
        let wait = t.blocked(a).expect("blocked after the burst");
        assert!(wait > Duration::from_secs(100), "{wait:?}");
        assert!(t.blocked(b).is_none());
    }

    /// Moves the throttle's clock `by` forward, as if that much time had passed.
    fn advance(t: &mut Throttle, by: Duration) {
        t.epoch = t.epoch.checked_sub(by).expect("the clock starts later");
    }

    #[test]
    fn tokens_come_back_over_time() {
        let mut t = throttle(50.0, 1, 10);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        t.charge(a);
        assert!(t.blocked(a).is_some());
        advance(&mut t, Duration::from_millis(60));
        assert!(t.blocked(a).is_none());
    }

    #[test]
    fn memory_is_bounded_by_max_clients() {
        let t = throttle(0.001, 5, 100);
        for i in 0..1000u32 {
            t.charge(IpAddr::from(i.to_be_bytes()));
        }
        assert!(t.tracked() <= 100, "{}", t.tracked());
    }
}
