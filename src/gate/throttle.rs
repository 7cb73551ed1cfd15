//! Per-client throttle of refused proofs: a token bucket per client address.
//!
//! Each refusal a client earns (missing, malformed, expired, replayed or
//! failed proof) takes a token; tokens come back at `per_second`. A client
//! with no token left gets 429 and `Retry-After` before any body is read or
//! GeeTest is called.
//!
//! By default the buckets are this instance's ([`LocalThrottle`]). Memory is
//! bounded by `max_clients`: full buckets (idle clients) are swept, and
//! beyond the bound new clients are not tracked.
//!
//! With `store` naming a Redis, the fleet shares one bucket per address
//! ([`FleetBuckets`]): the same bucket, kept as a GCRA "theoretical arrival
//! time" in one key per address, read or charged by one Lua script (one
//! round trip, atomic, on Redis's clock so the instances' clocks do not
//! matter). A key expires when its bucket is full again, so Redis holds only
//! the addresses that were refused recently. When Redis cannot be reached,
//! the replay store's `on_store_error` decides: `local` falls back to this
//! instance's buckets (which every charge also updates, so an outage does
//! not forgive this instance's recent refusals), `deny` answers 503.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use prometheus_client::metrics::counter::Counter;
use tracing::{debug, warn};

use crate::config::{OnStoreError, ThrottleConfig};
use crate::refusal::Refusal;
use crate::replay::{RedisLink, StoreError};

/// The throttle the gate asks: this instance's buckets, or the fleet's.
#[derive(Debug)]
pub struct Throttle {
    local: LocalThrottle,
    fleet: Option<FleetBuckets>,
}

impl Throttle {
    /// This instance's buckets only.
    pub fn new(config: &ThrottleConfig) -> Self {
        Self {
            local: LocalThrottle::new(config),
            fleet: None,
        }
    }

    /// Buckets shared through `link`, under `prefix`; `policy` says what to
    /// do while Redis cannot be reached, `errors` counts those failures.
    pub fn shared(
        config: &ThrottleConfig,
        link: RedisLink,
        prefix: &str,
        policy: OnStoreError,
        errors: Counter,
    ) -> Self {
        Self {
            local: LocalThrottle::new(config),
            fleet: Some(FleetBuckets {
                link,
                script: redis::Script::new(GCRA),
                prefix: format!("{prefix}throttle:"),
                ms_per_token: 1000.0 / config.per_second,
                burst: config.burst,
                policy,
                errors,
            }),
        }
    }

    /// `Ok(Some(wait))` when `client` has no refusal left: how long until it
    /// has one. `Err` when the fleet's buckets cannot be read and
    /// `on_store_error` is `deny`.
    pub async fn blocked(&self, client: IpAddr) -> Result<Option<Duration>, Refusal> {
        let Some(fleet) = &self.fleet else {
            return Ok(self.local.blocked(client));
        };
        match fleet.call(client, false).await {
            Ok(wait) => Ok(wait),
            Err(e) if fleet.fall_back("check", &e) => Ok(self.local.blocked(client)),
            Err(_) => Err(Refusal::CaptchaUnavailable(
                "verification is temporarily unavailable",
            )),
        }
    }

    /// Takes one token from `client` for a refusal.
    pub async fn charge(&self, client: IpAddr) {
        let Some(fleet) = &self.fleet else {
            return self.local.charge(client);
        };
        if fleet.policy == OnStoreError::Local {
            self.local.charge(client);
        }
        if let Err(e) = fleet.call(client, true).await {
            fleet.fall_back("charge", &e);
        }
    }
}

/// The fleet's buckets in Redis.
#[derive(Debug)]
struct FleetBuckets {
    link: RedisLink,
    script: redis::Script,
    prefix: String,
    ms_per_token: f64,
    burst: u32,
    policy: OnStoreError,
    errors: Counter,
}

/// The bucket as GCRA: the key holds the time (ms, Redis's clock) at which
/// the bucket is full again, `tat`; it holds `burst - (tat - now) / interval`
/// tokens. ARGV: ms per token, burst, "1" to take a token. Returns the wait
/// in ms until one token is there (0: not blocked). Taking never goes below
/// zero tokens, as in memory, so a throttled client is not pushed further.
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if ARGV[3] == '1' then
  tat = math.min(tat + interval, now + burst * interval)
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
end
return math.max(0, math.ceil(tat - now - (burst - 1) * interval))
";

impl FleetBuckets {
    async fn call(&self, client: IpAddr, charge: bool) -> Result<Option<Duration>, StoreError> {
        let mut invocation = self.script.key(format!("{}{client}", self.prefix));
        invocation
            .arg(self.ms_per_token)
            .arg(self.burst)
            .arg(u8::from(charge));
        let wait_ms: u64 = self.link.invoke(&invocation).await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }

    /// Counts and logs a failure, and says whether to go on locally. While
    /// Redis is known down the outage was warned once by the link.
    fn fall_back(&self, op: &'static str, e: &StoreError) -> bool {
        self.errors.inc();
        let local = self.policy == OnStoreError::Local;
        let fallback = if local { "local" } else { "deny" };
        if matches!(e, StoreError::Down(_)) {
            debug!(op, error = %e, fallback, "throttle store down");
        } else {
            crate::logging::throttled!(
                warn!(op, error = %e, fallback, "throttle store unavailable")
            );
        }
        local
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

/// This instance's buckets.
#[derive(Debug)]
pub struct LocalThrottle {
    buckets: DashMap<IpAddr, Bucket>,
    len: AtomicUsize,
    per_ms: f64,
    burst: f64,
    max_clients: usize,
    epoch: Instant,
    last_sweep_ms: AtomicU64,
}

impl LocalThrottle {
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

    fn throttle(per_second: f64, burst: u32, max_clients: usize) -> LocalThrottle {
        LocalThrottle::new(&ThrottleConfig {
            per_second,
            burst,
            max_clients,
            store: crate::config::ThrottleStore::Memory,
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
    fn advance(t: &mut LocalThrottle, by: Duration) {
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
