//! Against the real Redis on 127.0.0.1:6379, each test under its own key
//! prefix. They are `#[ignore]`d (a plain `cargo nextest run` reports them
//! skipped); `--run-ignored all`, as CI runs, fails them without a Redis.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::challenge::kept::sample;

const URL: &str = "redis://127.0.0.1:6379";

fn need_redis() {
    let up = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().expect("an address"),
        Duration::from_secs(1),
    )
    .is_ok();
    assert!(
        up,
        "needs Redis on 127.0.0.1:6379 (scripts/setup installs it)"
    );
}

fn config(ttl: Duration, max_entries: usize, max_bytes: u64) -> ChallengeConfig {
    ChallengeConfig {
        ttl,
        max_entries,
        max_bytes,
        widget_url: http::Uri::from_static("https://static.geetest.com/v4/gt4.js"),
        template: None,
    }
}

fn prefix(test: &str) -> String {
    format!("gatekeeper-test:{test}:{}:", ChallengeId::random())
}

fn store(prefix: &str, config: &ChallengeConfig) -> RedisKeptStore {
    RedisKeptStore::new(URL, prefix, config, Duration::from_secs(2)).expect("a valid URL")
}

/// Removes the index keys a test left (blobs expire by themselves).
async fn clean(store: &RedisKeptStore) {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(store.keys(None));
    let _: Result<u64, _> = store.query(&cmd).await;
}

#[ignore = "needs Redis on 127.0.0.1:6379 (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn one_instance_keeps_another_takes_once() {
    need_redis();
    let p = prefix("two-instances");
    let config = config(Duration::from_secs(60), 10, 1 << 20);
    let (a, b) = (store(&p, &config), store(&p, &config));
    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let kept = sample(&body);
    let id = a.keep(kept.clone()).await.expect("room");
    assert!(
        b.exists(id).await.expect("redis"),
        "the other instance sees it"
    );
    assert_eq!(b.size().await.expect("redis").0, 1);
    assert_eq!(
        b.take(id).await.expect("redis"),
        Some(kept),
        "byte for byte"
    );
    assert_eq!(a.take(id).await.expect("redis"), None, "single use");
    assert!(!a.exists(id).await.expect("redis"));
    assert_eq!(a.size().await.expect("redis"), (0, 0), "its bytes released");
    clean(&a).await;
}

#[ignore = "needs Redis on 127.0.0.1:6379 (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn concurrent_takes_have_one_winner() {
    need_redis();
    let p = prefix("concurrent");
    let config = config(Duration::from_secs(60), 10, 1 << 20);
    let keeper = store(&p, &config);
    let id = keeper.keep(sample(b"once")).await.expect("room");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let taker = Arc::new(store(&p, &config));
        tasks.push(tokio::spawn(async move { taker.take(id).await }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.expect("no panic").expect("redis").is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(keeper.size().await.expect("redis"), (0, 0));
    clean(&keeper).await;
}

#[ignore = "needs Redis on 127.0.0.1:6379 (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn fleet_wide_bounds_refuse_and_never_evict() {
    need_redis();
    let p = prefix("bounds");
    let config = config(Duration::from_secs(60), 2, 1 << 20);
    let (a, b) = (store(&p, &config), store(&p, &config));
    let first = a.keep(sample(b"1")).await.expect("room");
    b.keep(sample(b"2")).await.expect("room");
    let blob_len = sample(b"3").encode().expect("encodes").len() as u64;
    match a.keep(sample(b"3")).await {
        Err(KeepError::Full { entries, bytes }) => {
            assert_eq!((entries, bytes), (2, 2 * blob_len));
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(
        b.exists(first).await.expect("redis"),
        "nothing live evicted"
    );
    b.take(first).await.expect("redis");
    a.keep(sample(b"3")).await.expect("a take made room");
    clean(&a).await;

    let p = prefix("bytes");
    let small = config_bytes(3 * blob_len + 10);
    let c = store(&p, &small);
    c.keep(sample(&[0; 10])).await.expect("room");
    assert!(matches!(
        c.keep(sample(&[0; 4000])).await,
        Err(KeepError::Full { entries: 1, .. })
    ));
    c.keep(sample(&[0; 10])).await.expect("a small one fits");
    clean(&c).await;
}

fn config_bytes(max_bytes: u64) -> ChallengeConfig {
    config(Duration::from_secs(60), 100, max_bytes)
}

#[ignore = "needs Redis on 127.0.0.1:6379 (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn expired_requests_are_gone_and_free_their_room() {
    need_redis();
    let p = prefix("ttl");
    let s = store(&p, &config(Duration::from_millis(300), 1, 1 << 20));
    let id = s.keep(sample(b"old")).await.expect("room");
    assert!(matches!(
        s.keep(sample(b"x")).await,
        Err(KeepError::Full { .. })
    ));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(!s.exists(id).await.expect("redis"));
    assert_eq!(s.size().await.expect("redis"), (0, 0), "purged, bytes too");
    let fresh = s.keep(sample(b"new")).await.expect("room again");
    assert_eq!(s.take(id).await.expect("redis"), None);
    assert!(s.take(fresh).await.expect("redis").is_some());
    clean(&s).await;
}

#[ignore = "needs Redis on 127.0.0.1:6379 (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn a_corrupt_blob_is_an_error() {
    need_redis();
    let p = prefix("corrupt");
    let s = store(&p, &config(Duration::from_secs(60), 10, 1 << 20));
    let id = s.keep(sample(b"fine")).await.expect("room");
    let key = s.keys(Some(id)).pop().expect("the blob key");
    let mut set = redis::cmd("SET");
    set.arg(&key).arg(&b"\x01\xff\xff\xff"[..]).arg("KEEPTTL");
    let _: () = s.query(&set).await.expect("redis");
    assert!(matches!(s.take(id).await, Err(StoreError::Corrupt(_))));
    assert_eq!(s.size().await.expect("redis"), (0, 0), "taken all the same");
    clean(&s).await;
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable() {
    let s = RedisKeptStore::new(
        "redis://127.0.0.1:1",
        "x:",
        &config(Duration::from_secs(60), 1, 1 << 20),
        Duration::from_millis(300),
    )
    .expect("a valid URL");
    assert!(matches!(
        s.keep(sample(b"x")).await,
        Err(KeepError::Unavailable(_))
    ));
    assert!(matches!(
        s.take(ChallengeId::random()).await,
        Err(StoreError::Unavailable(_))
    ));
}
