//! The challenge that keeps the request: a browser's navigation to a gated
//! route without a proof is kept here, under a random id, while the person
//! solves the captcha on a page gatekeeper serves; the proof then releases
//! the request exactly as it was first sent.
//!
//! # How the request path uses it (the wiring lives in `proxy`)
//!
//! At startup: [`store_for`] builds the [`KeptStore`] (Redis when the replay
//! store is Redis, so a fleet shares it; memory otherwise), [`Binding::new`]
//! the cookie MAC, [`Pages::new`] the page renderer (its `api_origin` is the
//! GeeTest API's origin, or the simulator's, for the CSP).
//!
//! A gated browser navigation without captcha fields, on a route with
//! `challenge = true`:
//! 1. build a [`KeptRequest`] (method, the target as it would be forwarded,
//!    the headers after hop-by-hop removal, the body read up to
//!    `limits.max_body`) and [`KeptStore::keep`] it. [`KeepError::Full`]
//!    answers 503 with [`KeepError::reason`]; `Unavailable` answers 503 too.
//! 2. answer 403 with `Cache-Control: no-store`, the
//!    [`Pages::challenge`] page's `html` (`text/html; charset=utf-8`), its
//!    `csp` as `Content-Security-Policy`, and [`Binding::set_cookie`].
//!
//! Under [`RESERVED_PREFIX`] (never forwarded upstream):
//! - `GET` [`SCRIPT_PATH`]: [`SCRIPT`] as `text/javascript`, ETag
//!   [`script_etag`] (answer 304 on a matching `If-None-Match`).
//! - `POST` [`RELEASE_PATH`] (urlencoded: [`ID_FIELD`] and the five GeeTest
//!   fields): parse the id with [`ChallengeId::parse`]; refuse with the
//!   [`Pages::expired`] page unless [`Binding::verify`] holds and
//!   [`KeptStore::peek`] finds it; run the gate's checks on the five fields
//!   (on the route the kept request matches); on a
//!   refused proof answer [`Pages::challenge`] again with `retry = true` (the
//!   request stays kept); on a pass [`KeptStore::take`] (single use: `None`
//!   means another release won, so answer the expired page), forward the
//!   request as kept with the pass marker, and add [`Binding::clear_cookie`]
//!   to the upstream's answer.
//!
//! [`KeptStore::size`] feeds the store-size gauge.

mod binding;
mod kept;
mod memory;
mod page;
mod redis;

pub use binding::Binding;
pub use kept::{DecodeError, KeptRequest};
pub use memory::MemoryKeptStore;
pub use page::{Language, Page, Pages, SCRIPT, script_etag};
pub use redis::RedisKeptStore;

use std::fmt;
use std::sync::Arc;

use http::HeaderName;

use crate::config::{ChallengeConfig, ReplayConfig, ReplayStoreKind};
use crate::replay::BoxFuture;

/// Paths under this prefix are gatekeeper's own, never the application's.
pub const RESERVED_PREFIX: &str = "/.gatekeeper/";
/// Where the challenge page's form posts the proof.
pub const RELEASE_PATH: &str = "/.gatekeeper/release";
/// The page's script, served by gatekeeper (no inline script: strict CSP).
pub const SCRIPT_PATH: &str = "/.gatekeeper/challenge.js";
/// The release form's field that carries the [`ChallengeId`].
pub const ID_FIELD: &str = "challenge";

/// Whether the request is a browser's navigation, the only kind answered
/// with the challenge page: `Sec-Fetch-Mode: navigate`, or (for browsers
/// that send no fetch metadata) an `Accept` whose first type is text/html.
/// A script (JSON first in `Accept`, another fetch mode, `X-Requested-With`)
/// keeps the refusal it reads.
pub fn is_navigation(headers: &http::HeaderMap) -> bool {
    let first_accepted = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|accept| accept.split(',').next())
        .map(|first| first.trim().to_ascii_lowercase())
        .unwrap_or_default();
    // Typed names: a `&str` name is parsed again on every lookup.
    const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
    const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
    if headers.contains_key(X_REQUESTED_WITH) || first_accepted.contains("json") {
        return false;
    }
    match headers.get(SEC_FETCH_MODE) {
        Some(mode) => mode.as_bytes().eq_ignore_ascii_case(b"navigate"),
        None => first_accepted.starts_with("text/html"),
    }
}

/// A kept request's id: 128 random bits, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChallengeId([u8; 16]);

impl ChallengeId {
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// Exactly 32 lowercase hex digits, so each id has one spelling (it is a
    /// cookie name and a Redis key).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }

    /// The 32 hex digits, on the stack: they are written into every
    /// challenge page and cookie.
    pub fn hex(&self) -> [u8; 32] {
        let mut text = [0u8; 32];
        // 16 bytes are exactly 32 digits: this cannot fail.
        let _ = hex::encode_to_slice(self.0, &mut text);
        text
    }
}

impl fmt::Display for ChallengeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ChallengeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChallengeId({self})")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// The bounds are reached (or this request alone exceeds the bytes):
    /// nothing live is evicted, the new request is refused.
    #[error("kept-request store is full ({entries} requests, {bytes} bytes kept)")]
    Full { entries: u64, bytes: u64 },
    #[error("kept-request store unavailable: {0}")]
    Unavailable(String),
}

impl KeepError {
    /// The reason a 503 gives the person.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Full { .. } => {
                "too many requests are waiting for a captcha right now; please try again in a few minutes"
            }
            Self::Unavailable(_) => {
                "the captcha check is unavailable right now; please try again later"
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("kept-request store unavailable: {0}")]
    Unavailable(String),
    #[error("kept request unreadable: {0}")]
    Corrupt(#[from] DecodeError),
}

/// Where kept requests wait for their proof. Object-safe so the store can
/// be chosen at run time, as the replay store is.
pub trait KeptStore: Send + Sync + fmt::Debug {
    /// Keeps `request` for the configured TTL under a fresh id.
    fn keep(&self, request: KeptRequest) -> BoxFuture<'_, Result<ChallengeId, KeepError>>;
    /// Removes and returns the request: of concurrent takes, one gets it.
    fn take(&self, id: ChallengeId) -> BoxFuture<'_, Result<Option<KeptRequest>, StoreError>>;
    /// Whether the id is kept and unexpired, without taking it.
    fn exists(&self, id: ChallengeId) -> BoxFuture<'_, Result<bool, StoreError>>;
    /// The request, without taking it (its target decides which route's
    /// checks a release runs).
    fn peek(&self, id: ChallengeId) -> BoxFuture<'_, Result<Option<KeptRequest>, StoreError>>;
    /// Live entries and their bytes, expired ones swept first.
    fn size(&self) -> BoxFuture<'_, Result<(u64, u64), StoreError>>;
}

/// The store the replay settings imply: Redis (same URL, key prefix and
/// command timeout) when replay is shared by a fleet, memory otherwise.
pub fn store_for(
    challenge: &ChallengeConfig,
    replay: &ReplayConfig,
) -> Result<Arc<dyn KeptStore>, StoreError> {
    Ok(match &replay.store {
        ReplayStoreKind::Memory => Arc::new(MemoryKeptStore::new(challenge)),
        ReplayStoreKind::Redis { url } => Arc::new(RedisKeptStore::new(
            url,
            &replay.key_prefix,
            challenge,
            replay.timeout,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_store_follows_the_replay_store() {
        let config = crate::config::parse_str(
            "[server]\nhttp = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[replay]\nstore = \"redis://127.0.0.1:6379\"\nkey_prefix = \"fleet:\"\n",
            std::path::Path::new("gatekeeper.toml"),
        )
        .expect("valid");
        let shared = store_for(&config.challenge, &config.replay).expect("a store");
        assert_eq!(format!("{shared:?}"), "RedisKeptStore(prefix \"fleet:\")");
        let mut replay = config.replay.clone();
        replay.store = ReplayStoreKind::Memory;
        let local = store_for(&config.challenge, &replay).expect("a store");
        assert!(format!("{local:?}").starts_with("MemoryKeptStore"));
        assert_eq!(config.challenge.ttl, Duration::from_secs(600));
    }

    #[test]
    fn only_navigations_are_challenged() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (n, v) in pairs {
                h.append(*n, http::HeaderValue::from_static(v));
            }
            h
        };
        assert!(is_navigation(&headers(&[("sec-fetch-mode", "navigate")])));
        assert!(is_navigation(&headers(&[(
            "accept",
            "text/html,*/*;q=0.8"
        )])));
        assert!(!is_navigation(&headers(&[("accept", "*/*")])));
        assert!(!is_navigation(&headers(&[
            ("accept", "application/json, text/html"),
            ("sec-fetch-mode", "navigate")
        ])));
        assert!(!is_navigation(&headers(&[
            ("accept", "text/html"),
            ("sec-fetch-mode", "cors")
        ])));
        assert!(!is_navigation(&headers(&[
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest")
        ])));
    }

    #[test]
    fn ids_are_random_lowercase_hex_with_one_spelling() {
        let a = ChallengeId::random();
        let text = a.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(ChallengeId::parse(&text), Some(a));
        assert_ne!(a, ChallengeId::random());
        assert_eq!(ChallengeId::parse(&text.to_uppercase()), None);
        assert_eq!(ChallengeId::parse(&text[..31]), None);
        assert_eq!(ChallengeId::parse("+0123456789abcdef0123456789abcde"), None);
    }
}
