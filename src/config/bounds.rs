//! The range every number in the file must fall in, and why.
//!
//! Each value is bounded where it is read, so nothing downstream ever meets a
//! duration, size or count it cannot add, multiply or sleep on: a value out
//! of range is a `FILE:LINE:COL` error from `gatekeeper check`, never a panic
//! at start or on reload. A key missing from these tables still gets a
//! generic range that is safe for every use in this crate.

use std::time::Duration;

/// An inclusive range, and the reason for it (shown in the error).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound<T> {
    pub min: T,
    pub max: T,
    pub why: &'static str,
}

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
const MONTH: Duration = Duration::from_secs(30 * 86_400);

const fn wait(max: Duration, why: &'static str) -> Bound<Duration> {
    // Timers count whole milliseconds: a shorter wait is no wait at all.
    Bound { min: MS, max, why }
}

/// The range of a duration key (`section.key`).
pub(super) fn duration(key: &str) -> Bound<Duration> {
    match key {
        "server.shutdown_timeout" => wait(HOUR, "a drain longer than that is a stuck shutdown"),
        "upstream.connect_timeout" => wait(
            5 * MINUTE,
            "a request waits for the connection, and one not made in minutes is not coming",
        ),
        "upstream.timeout" => wait(HOUR, "a request holds a connection while it waits"),
        "limits.header_read_timeout" | "limits.handshake_timeout" | "limits.idle_timeout" => {
            wait(HOUR, "a slow or idle client holds a connection this long")
        }
        "limits.body_idle_timeout" => wait(HOUR, "a stalled upload holds a connection this long"),
        "geetest.timeout" => wait(MINUTE, "the visitor's request waits for GeeTest's answer"),
        "geetest.breaker_cooldown" => wait(HOUR, "a recovered server stays unused this long"),
        "geetest.max_token_age" => Bound {
            min: SEC,
            max: DAY,
            why: "gen_time counts whole seconds, and a GeeTest proof lives minutes, not days",
        },
        "replay.ttl" => Bound {
            min: SEC,
            max: MONTH,
            why: "the store counts whole seconds and keeps every lot_number this long",
        },
        "challenge.ttl" => Bound {
            min: SEC,
            max: DAY,
            why: "a kept request (its body too) is held this long waiting for its proof",
        },
        "replay.timeout" => wait(MINUTE, "the visitor's request waits for Redis"),
        _ => wait(MONTH, "no wait in gatekeeper needs more"),
    }
}

const GIB: u64 = 1024 * 1024 * 1024;

/// The range of a size key, in bytes.
pub(super) fn size(key: &str) -> Bound<u64> {
    let (max, why) = match key {
        "limits.max_body" => (
            GIB,
            "a gated body is held in memory while its fields are read",
        ),
        "limits.max_buffered_bodies" => (
            256 * GIB,
            "every gated body in flight is held in memory at once",
        ),
        "challenge.max_bytes" => (
            256 * GIB,
            "every kept request is held in memory (or Redis) until released or expired",
        ),
        _ => (GIB, "it is held in memory"),
    };
    Bound { min: 1, max, why }
}

const fn count_to(max: u64, why: &'static str) -> Bound<u64> {
    Bound { min: 1, max, why }
}

/// The range of a whole-number key.
pub(super) fn count(key: &str) -> Bound<u64> {
    match key {
        "server.workers" => count_to(
            1024,
            "each worker is a thread with its own runtime and pools",
        ),
        "limits.max_connections" => count_to(
            1_000_000,
            "each connection holds a file descriptor and buffers",
        ),
        "limits.max_connections_per_address" => {
            count_to(1_000_000, "it cannot be more than limits.max_connections")
        }
        "limits.max_gated_per_address" => count_to(
            100_000,
            "each gated request in flight may buffer a body and hold a validate call",
        ),
        "geetest.breaker_failures" => count_to(
            10_000,
            "a breaker that needs more never opens during an outage",
        ),
        "replay.max_entries" => count_to(100_000_000, "every entry is kept in memory"),
        "challenge.max_entries" => count_to(
            10_000_000,
            "every kept request is held in memory (or Redis) until released or expired",
        ),
        "throttle.burst" => count_to(1_000_000, "a larger burst throttles nothing"),
        "throttle.max_clients" => count_to(10_000_000, "every client's bucket is kept in memory"),
        _ => count_to(u64::from(u32::MAX), "no count in gatekeeper needs more"),
    }
}

/// `throttle.rate`, in refusals forgiven per second: from 1/h to 1000000/s.
pub(super) const RATE_PER_SECOND: Bound<f64> = Bound {
    min: 1.0 / 3600.0,
    max: 1_000_000.0,
    why: "slower blocks a client for hours (Retry-After), faster throttles nothing",
};

/// Digits a duration may hold in all. With at most 11, the largest value
/// `humantime` can build (every digit a 9, every unit a year) stays far below
/// `u64::MAX` seconds, so it never reaches its own unchecked overflow, which
/// panics (`"18446744073709551615s 1000ms"`). No duration within the bounds
/// above needs more than 10 digits (`"2592000000ms"` is 30 days).
pub(super) const DURATION_DIGITS: usize = 11;
