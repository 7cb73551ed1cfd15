//! The shared store: one Redis (or Redis-compatible) server for a fleet of
//! gatekeepers, so a proof used on one instance is refused on every other.
//!
//! A claim is one round trip, `SET key 0 NX PX ttl`; only a replay costs a
//! second (`GET`, to say what became of the first use). Each command touches
//! one key, so the store works unchanged on Redis Cluster. The connection
//! manager multiplexes all requests over one connection and reconnects after
//! Redis restarts; every command is bounded by `timeout`.
//!
//! A breaker keeps an outage cheap: the first command that finds Redis
//! unreachable (refused, dropped, or no answer within `timeout`) marks it
//! down, and from then on every command fails at once with
//! [`StoreError::Down`] instead of waiting for the connection manager's
//! reconnect, so the `on_store_error` policy decides in microseconds. A
//! background probe sends `PING` every [`PROBE_INTERVAL`]; the first answer
//! closes the breaker, so claims go to Redis again well within a second of
//! it returning. A Redis that answers with an error (a full or read-only
//! server) is reachable: its errors fail the command but do not open the
//! breaker. The breaker and connection are a [`RedisLink`], which the
//! throttle shares when it keeps its buckets in the same Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, ScriptInvocation, Value};
use tokio::runtime::Handle;
use tracing::{info, warn};

use super::{BoxFuture, Claim, LotKey, LotState, ReplayStore, StoreError};

/// How often a down Redis is asked whether it is back.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);

pub struct RedisStore {
    link: RedisLink,
    prefix: String,
    ttl_ms: u64,
}

/// One Redis server behind its breaker: a multiplexed connection that
/// reconnects, each command bounded by `timeout`. Cloned by everything that
/// shares the server (the replay store, the throttle), so they share one
/// connection and one breaker.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

/// What the probe shares with the link; the probe holds it weakly and ends
/// when every clone of the link is dropped.
struct Inner {
    conn: ConnectionManager,
    timeout: Duration,
    /// The URL without credentials, for messages.
    display: String,
    /// What the server is for, in messages ("replay store").
    role: &'static str,
    /// The breaker: set while Redis is known unreachable.
    down: AtomicBool,
    /// Where the probe runs: the runtime the link was built on, which lives
    /// as long as the server (a request's worker runtime may not).
    runtime: Option<Handle>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisStore({})", self.link.inner.display)
    }
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisLink({})", self.inner.display)
    }
}

impl RedisLink {
    /// Prepares the link without connecting: gatekeeper starts even while
    /// Redis is down, and connects on first use.
    pub fn new(url: &str, timeout: Duration, role: &'static str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let display = redacted(url);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                timeout,
                display,
                role,
                down: AtomicBool::new(false),
                runtime: Handle::try_current().ok(),
            }),
        })
    }

    /// Whether the breaker is open (Redis known unreachable).
    pub fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::Acquire)
    }

    /// Sends `cmd`, or fails at once while the breaker is open.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.guarded(async {
            let mut conn = self.inner.conn.clone();
            cmd.query_async::<T>(&mut conn).await
        })
        .await
    }

    /// Runs a script (`EVALSHA`, loading it once if Redis lacks it), or fails
    /// at once while the breaker is open.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.guarded(async {
            let mut conn = self.inner.conn.clone();
            script.invoke_async::<T>(&mut conn).await
        })
        .await
    }

    async fn guarded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let inner = &self.inner;
        if inner.down.load(Ordering::Acquire) {
            return Err(StoreError::Down(inner.display.clone()));
        }
        match inner.bounded(call).await {
            Ok(v) => Ok(v),
            Err(Failure::Unreachable(message)) => {
                Inner::trip(&self.inner, &message);
                Err(StoreError::Unavailable(message))
            }
            Err(Failure::Refused(message)) => Err(StoreError::Unavailable(message)),
        }
    }
}

impl RedisStore {
    pub fn new(link: RedisLink, prefix: &str, ttl: Duration) -> Self {
        Self {
            link,
            prefix: prefix.to_owned(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
        }
    }

    /// Whether the breaker is open (Redis known unreachable).
    pub fn is_down(&self) -> bool {
        self.link.is_down()
    }

    fn key(&self, lot: LotKey) -> String {
        format!("{}lot:{}", self.prefix, hex::encode(lot.0))
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.link.run(cmd).await
    }
    async fn claim_async(&self, lot: LotKey) -> Result<Claim, StoreError> {
        let key = self.key(lot);
        let set = redis::cmd("SET")
            .arg(&key)
            .arg(LotState::InFlight as u8)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms)
            .clone();
        match self.run::<Value>(&set).await? {
            Value::Okay => Ok(Claim::Fresh),
            _ => {
                let state: Option<u8> = self.run(redis::cmd("GET").arg(&key)).await?;
                // Expired between the two commands: still refuse; the proof was seen.
                Ok(Claim::Seen(LotState::from_u8(
                    state.unwrap_or(LotState::Passed as u8),
                )))
            }
        }
    }

    async fn record_async(&self, lot: LotKey, state: LotState) -> Result<(), StoreError> {
        let cmd = redis::cmd("SET")
            .arg(self.key(lot))
            .arg(state as u8)
            .arg("PX")
            .arg(self.ttl_ms)
            .clone();
        self.run::<Value>(&cmd).await.map(drop)
    }

    async fn release_async(&self, lot: LotKey) -> Result<(), StoreError> {
        self.run::<Value>(redis::cmd("DEL").arg(self.key(lot)))
            .await
            .map(drop)
    }
}

impl ReplayStore for RedisStore {
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

/// Why a command failed.
enum Failure {
    /// No connection, a dropped one, or no answer in time: open the breaker.
    Unreachable(String),
    /// Redis answered with an error: it is up.
    Refused(String),
}

impl Inner {
    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if unreachable(&e) => {
                Err(Failure::Unreachable(format!("{}: {e}", self.display)))
            }
            Ok(Err(e)) => Err(Failure::Refused(format!("{}: {e}", self.display))),
            Err(_) => Err(Failure::Unreachable(format!(
                "{}: no answer within {:?}",
                self.display, self.timeout
            ))),
        }
    }

    async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let ping = redis::cmd("PING");
        self.bounded(ping.query_async::<Value>(&mut conn))
            .await
            .is_ok()
    }

    /// Opens the breaker; the caller that opens it starts the probe.
    fn trip(this: &Arc<Self>, why: &str) {
        if this.down.swap(true, Ordering::AcqRel) {
            return;
        }
        warn!(error = %why, "{} unreachable: failing at once until it answers again", this.role);
        let probe = Self::probe(Arc::downgrade(this));
        match this.runtime.as_ref() {
            Some(runtime) => drop(runtime.spawn(probe)),
            None => drop(tokio::spawn(probe)),
        }
    }

    /// Pings until Redis answers, then closes the breaker. A second ping right
    /// after a failed one waits for the reconnect the first one started, so
    /// each round is one fresh connection attempt.
    async fn probe(this: Weak<Self>) {
        let since = Instant::now();
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            let Some(inner) = this.upgrade() else { return };
            let up = inner.ping().await || inner.ping().await;
            if up {
                inner.down.store(false, Ordering::Release);
                info!(
                    store = %inner.display,
                    down_ms = since.elapsed().as_millis() as u64,
                    "{} reachable again", inner.role
                );
                return;
            }
        }
    }
}

/// Errors that say Redis cannot be reached (as opposed to a reply that is an
/// error, which proves it can).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// `redis://user:secret@host:6379/0` → `redis://host:6379/0`.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}{}", &url[..scheme_end + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_removed_from_the_displayed_url() {
        assert_eq!(super::redacted("redis://u:p@h:6379/0"), "redis://h:6379/0");
        assert_eq!(super::redacted("rediss://h:6380"), "rediss://h:6380");
    }
}
