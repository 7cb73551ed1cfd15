//! Replay store benchmark: bytes per entry at one million live entries, and
//! claims per second for the memory and the Redis store.
//!
//! cargo bench --bench replay
//! (Redis: GATEKEEPER_BENCH_REDIS=redis://127.0.0.1:6379/0, the default.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatekeeper::replay::{Claim, LotKey, MemoryStore, RedisLink, RedisStore, ReplayStore};

const ENTRIES: usize = 1_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn key(i: u64) -> LotKey {
    // Spread like real UUIDs: a cheap mix of the counter into 16 bytes.
    let a = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = a.rotate_left(29) ^ 0xD6E8_FEB8_6659_FD93;
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    LotKey(out)
}

fn memory_store() {
    let store = MemoryStore::new(Duration::from_secs(900), ENTRIES + 1);
    let before = rss_bytes();
    // (Every fresh claim below is checked, so errors cannot pass for speed.)
    let started = Instant::now();
    for i in 0..ENTRIES as u64 {
        assert!(matches!(store.claim_now(key(i)), Ok(Claim::Fresh)));
    }
    let insert = started.elapsed();
    let after = rss_bytes();
    let per_entry = (after.saturating_sub(before)) as f64 / ENTRIES as f64;
    println!("memory store: {ENTRIES} live entries, {per_entry:.1} bytes/entry (RSS delta)");
    println!(
        "memory store: {:.0} claims/s inserting (1 thread)",
        ENTRIES as f64 / insert.as_secs_f64()
    );
    let started = Instant::now();
    for i in 0..ENTRIES as u64 {
        assert!(matches!(store.claim_now(key(i)), Ok(Claim::Seen(_))));
    }
    println!(
        "memory store: {:.0} claims/s of seen lot_numbers (1 thread)",
        ENTRIES as f64 / started.elapsed().as_secs_f64()
    );
    drop(store);
    // A new store, so every claim is a real insertion.
    let store = MemoryStore::new(Duration::from_secs(900), ENTRIES + 1);
    let threads = 2;
    let per = ENTRIES as u64 / threads;
    let fresh = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (store, fresh) = (store.clone(), &fresh);
            s.spawn(move || {
                for i in 0..per {
                    if matches!(
                        store.claim_now(key(10_000_000 + t * per + i)),
                        Ok(Claim::Fresh)
                    ) {
                        fresh.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let fresh = fresh.into_inner();
    assert_eq!(fresh, per * threads, "every claim was a fresh insertion");
    println!(
        "memory store: {:.0} claims/s inserting ({threads} threads)",
        fresh as f64 / started.elapsed().as_secs_f64()
    );
}

async fn redis_store(url: &str) {
    let store = match RedisLink::new(url, Duration::from_secs(2), "replay store") {
        Ok(link) => Arc::new(RedisStore::new(
            link,
            "gatekeeper-bench:",
            Duration::from_secs(60),
        )),
        Err(e) => {
            println!("redis store: skipped ({e})");
            return;
        }
    };
    if let Err(e) = store.claim(key(u64::MAX)).await {
        println!("redis store: skipped ({e})");
        return;
    }
    let total: u64 = 50_000;
    let in_flight: u64 = 64;
    let started = Instant::now();
    // Keys unique to this run, so every claim is a fresh SET NX.
    let run = u64::from(std::process::id()) << 32;
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut fresh = 0u64;
            let mut i = w;
            while i < total {
                if let Ok(Claim::Fresh) = store.claim(key(run + i)).await {
                    fresh += 1;
                }
                i += in_flight;
            }
            fresh
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        fresh += t.await.unwrap_or(0);
    }
    let elapsed = started.elapsed();
    println!(
        "redis store: {:.0} claims/s ({fresh} of {total} fresh, {in_flight} in flight, one multiplexed connection)",
        fresh as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    memory_store();
    let url = std::env::var("GATEKEEPER_BENCH_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(redis_store(&url)),
        Err(e) => println!("redis store: skipped ({e})"),
    }
}
