//! Replay memory: each lot_number's outcome, so a GeeTest proof is used once.
//!
//! The gate claims a lot_number atomically before asking GeeTest (so two
//! concurrent submissions of one proof cannot both be validated), then records
//! the outcome, or releases the claim when the person may retry the same proof.

mod fallback;
mod memory;
mod redis;

pub use fallback::{FallbackStore, OnStoreError};
pub use memory::MemoryStore;
pub use redis::{RedisLink, RedisStore};

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lot_number as 16 bytes (GeeTest's are 32 hex characters). Decoding also
/// folds case, so `ABCD…` cannot replay `abcd…`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LotKey(pub [u8; 16]);

impl LotKey {
    pub fn from_hex(lot_number: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(lot_number, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for LotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LotKey({})", hex::encode(self.0))
    }
}

/// What is remembered about a lot_number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LotState {
    /// Being validated right now by another request.
    InFlight = 0,
    Passed = 1,
    Failed = 2,
    /// Let through while GeeTest could not be reached.
    FailOpen = 3,
}

impl LotState {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Passed,
            2 => Self::Failed,
            3 => Self::FailOpen,
            _ => Self::InFlight,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::InFlight => "this captcha is being verified by another request",
            Self::Passed | Self::FailOpen => "this captcha was already used",
            Self::Failed => "this captcha already failed verification",
        }
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First sight: the caller now owns the lot_number and must record or release it.
    Fresh,
    /// Seen before, with this outcome.
    Seen(LotState),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bound on live entries is reached; evicting a live entry would
    /// reopen a replay, so new claims are refused instead.
    #[error("replay store is full ({0} live entries)")]
    Full(usize),
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
    /// Known unreachable since an earlier failure: refused at once, without
    /// trying, until a background probe finds it back.
    #[error("replay store down: {0} (not tried until it answers again)")]
    Down(String),
}

/// Where outcomes are remembered. Object-safe so stores can be chosen at run time.
pub trait ReplayStore: Send + Sync + fmt::Debug {
    /// Atomically claims `lot` if unseen (or expired); otherwise reports what is known.
    fn claim(&self, lot: LotKey) -> BoxFuture<'_, Result<Claim, StoreError>>;
    /// Records the final outcome of a claimed lot.
    fn record(&self, lot: LotKey, state: LotState) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Forgets a claimed lot so the same proof may be tried again.
    fn release(&self, lot: LotKey) -> BoxFuture<'_, Result<(), StoreError>>;
}
