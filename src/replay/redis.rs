//! The shared store: one Redis (or Redis-compatible) server for a fleet of
//! gatekeepers, so a proof used on one instance is refused on every other.
//!
//! A claim is one round trip, `SET key 0 NX PX ttl`; only a replay costs a
//! second (`GET`, to say what became of the first use). Each command touches
//! one key, so the store works unchanged on Redis Cluster. The connection
//! manager multiplexes all requests over one connection and reconnects after
//! Redis restarts; every command is bounded by `timeout`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Value};

use super::{BoxFuture, Claim, LotKey, LotState, ReplayStore, StoreError};

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    timeout: Duration,
    /// The URL without credentials, for messages.
    display: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisStore({})", self.display)
    }
}

impl RedisStore {
    /// Prepares the store without connecting: gatekeeper starts even while
    /// Redis is down, and connects on first use.
    pub fn new(
        url: &str,
        prefix: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
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
            conn,
            prefix: prefix.to_owned(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            timeout,
            display,
        })
    }

    fn key(&self, lot: LotKey) -> String {
        format!("{}lot:{}", self.prefix, hex::encode(lot.0))
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(&self.display, &e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{}: no answer within {:?}",
                self.display, self.timeout
            ))),
        }
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

fn unavailable(display: &str, e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("{display}: {e}"))
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
