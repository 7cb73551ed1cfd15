//! The shared kept-request store: a fleet behind a load balancer keeps a
//! request on one instance and releases it on another.
//!
//! Each request is a blob under its own key with `PX ttl`, so Redis frees it
//! on time even if no gatekeeper is left to. The fleet-wide bounds are kept
//! by Lua scripts over an index (a sorted set of ids by expiry, a hash of
//! their sizes, a byte total), each run atomically: `keep` first purges what
//! has expired, then refuses or adds; `take` is a GET-and-DEL that also
//! releases the bytes, so of two concurrent takes exactly one gets the blob.
//! The clock is Redis's own (`TIME`), one for the whole fleet. Every key
//! carries the hash tag `{kept}`, so on Redis Cluster they share one slot.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, ErrorKind, FromRedisValue, RedisError, ServerErrorKind};
use sha1::{Digest, Sha1};

use super::{ChallengeId, KeepError, KeptRequest, KeptStore, StoreError};
use crate::config::ChallengeConfig;
use crate::replay::BoxFuture;

/// Drops expired ids from the index and their bytes from the total.
/// KEYS: index, sizes, total. `replicate_commands` lets a script write after
/// `TIME` on Redis 3.2 to 4 (a no-op from 5 on).
const PURGE: &str = r"
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(expired) do
  local size = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('HDEL', KEYS[2], id)
  redis.call('DECRBY', KEYS[3], size)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local entries = redis.call('ZCARD', KEYS[1])
local bytes = tonumber(redis.call('GET', KEYS[3]) or '0')
";

/// KEYS: index, sizes, total, blob. ARGV: id, blob, ttl ms, max entries,
/// max bytes. Returns {kept (1/0), entries, bytes}.
const KEEP: &str = r"
local size = string.len(ARGV[2])
if entries + 1 > tonumber(ARGV[4]) or bytes + size > tonumber(ARGV[5]) then
  return {0, entries, bytes}
end
if not redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[3], 'NX') then
  return {2, entries, bytes}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], size)
redis.call('INCRBY', KEYS[3], size)
return {1, entries + 1, bytes + size}
";

/// KEYS: index, sizes, total, blob. ARGV: id. Returns the blob or nil.
const TAKE: &str = r"
local blob = redis.call('GET', KEYS[4])
redis.call('DEL', KEYS[4])
local size = redis.call('HGET', KEYS[2], ARGV[1])
if size then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('DECRBY', KEYS[3], size)
end
redis.call('ZREM', KEYS[1], ARGV[1])
return blob
";

/// Returns {entries, bytes}.
const SIZE: &str = "return {entries, bytes}";

/// A script and its SHA-1, for EVALSHA (the text is sent only when Redis
/// does not know it yet).
struct Script {
    text: String,
    sha: String,
}

impl Script {
    fn new(parts: &[&str]) -> Self {
        let text = parts.concat();
        let sha = hex::encode(Sha1::digest(text.as_bytes()));
        Self { text, sha }
    }
}

pub struct RedisKeptStore {
    conn: ConnectionManager,
    timeout: Duration,
    prefix: String,
    ttl_ms: u64,
    max_entries: u64,
    max_bytes: u64,
    keep: Script,
    take: Script,
    size: Script,
}

impl std::fmt::Debug for RedisKeptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisKeptStore(prefix {:?})", self.prefix)
    }
}

impl RedisKeptStore {
    /// Prepares the store without connecting, as the replay store does.
    pub fn new(
        url: &str,
        prefix: &str,
        config: &ChallengeConfig,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            conn,
            timeout,
            prefix: prefix.to_owned(),
            ttl_ms: u64::try_from(config.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            max_entries: config.max_entries as u64,
            max_bytes: config.max_bytes,
            keep: Script::new(&[PURGE, KEEP]),
            take: Script::new(&[TAKE]),
            size: Script::new(&[PURGE, SIZE]),
        })
    }

    fn keys(&self, id: Option<ChallengeId>) -> Vec<String> {
        let p = &self.prefix;
        let mut keys = vec![
            format!("{p}{{kept}}:index"),
            format!("{p}{{kept}}:sizes"),
            format!("{p}{{kept}}:bytes"),
        ];
        if let Some(id) = id {
            keys.push(format!("{p}{{kept}}:{id}"));
        }
        keys
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, String> {
        self.query_raw(cmd).await.map_err(|e| match e {
            Some(e) => e.to_string(),
            None => format!("no answer within {:?}", self.timeout),
        })
    }

    /// The command's answer, or Redis's error (`None`: no answer in time).
    async fn query_raw<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Option<RedisError>> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(result) => result.map_err(Some),
            Err(_) => Err(None),
        }
    }

    async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[&[u8]],
    ) -> Result<T, String> {
        let call = |verb: &str, body: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(body).arg(keys.len()).arg(keys);
            for a in args {
                cmd.arg(*a);
            }
            cmd
        };
        match self.query_raw(&call("EVALSHA", &script.sha)).await {
            Ok(v) => Ok(v),
            Err(Some(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.query(&call("EVAL", &script.text)).await
            }
            Err(Some(e)) => Err(e.to_string()),
            Err(None) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn keep_async(&self, request: KeptRequest) -> Result<ChallengeId, KeepError> {
        let blob = request
            .encode()
            .map_err(|e| KeepError::Unavailable(e.to_string()))?;
        // A 128-bit id collides never in practice; the script's NX makes
        // sure a collision is retried rather than overwriting.
        for _ in 0..3 {
            let id = ChallengeId::random();
            let (id_text, ttl, max_entries, max_bytes) = (
                id.to_string(),
                self.ttl_ms.to_string(),
                self.max_entries.to_string(),
                self.max_bytes.to_string(),
            );
            let args: [&[u8]; 5] = [
                id_text.as_bytes(),
                &blob,
                ttl.as_bytes(),
                max_entries.as_bytes(),
                max_bytes.as_bytes(),
            ];
            let (kept, entries, bytes): (u8, u64, u64) = self
                .eval(&self.keep, &self.keys(Some(id)), &args)
                .await
                .map_err(KeepError::Unavailable)?;
            match kept {
                1 => return Ok(id),
                0 => return Err(KeepError::Full { entries, bytes }),
                _ => continue,
            }
        }
        Err(KeepError::Unavailable("no free id after 3 tries".into()))
    }

    async fn take_async(&self, id: ChallengeId) -> Result<Option<KeptRequest>, StoreError> {
        let blob: Option<Vec<u8>> = self
            .eval(
                &self.take,
                &self.keys(Some(id)),
                &[id.to_string().as_bytes()],
            )
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(blob.map(|b| KeptRequest::decode(&b)).transpose()?)
    }

    async fn exists_async(&self, id: ChallengeId) -> Result<bool, StoreError> {
        let key = self.keys(Some(id)).pop().unwrap_or_default();
        let n: u64 = self
            .query(redis::cmd("EXISTS").arg(key))
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(n == 1)
    }

    async fn peek_async(&self, id: ChallengeId) -> Result<Option<KeptRequest>, StoreError> {
        let key = self.keys(Some(id)).pop().unwrap_or_default();
        let blob: Option<Vec<u8>> = self
            .query(redis::cmd("GET").arg(key))
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(blob.map(|b| KeptRequest::decode(&b)).transpose()?)
    }

    async fn size_async(&self) -> Result<(u64, u64), StoreError> {
        self.eval(&self.size, &self.keys(None), &[])
            .await
            .map_err(StoreError::Unavailable)
    }
}

impl KeptStore for RedisKeptStore {
    fn keep(&self, request: KeptRequest) -> BoxFuture<'_, Result<ChallengeId, KeepError>> {
        Box::pin(self.keep_async(request))
    }

    fn take(&self, id: ChallengeId) -> BoxFuture<'_, Result<Option<KeptRequest>, StoreError>> {
        Box::pin(self.take_async(id))
    }

    fn exists(&self, id: ChallengeId) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.exists_async(id))
    }

    fn peek(&self, id: ChallengeId) -> BoxFuture<'_, Result<Option<KeptRequest>, StoreError>> {
        Box::pin(self.peek_async(id))
    }

    fn size(&self) -> BoxFuture<'_, Result<(u64, u64), StoreError>> {
        Box::pin(self.size_async())
    }
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
