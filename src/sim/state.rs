//! The simulator's state and its GeeTest logic, free of HTTP.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::geetest::sign_token;

/// How the simulator answers `/validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// Waits, then answers normally.
    Slow(Duration),
    /// Every proof fails (`result: fail`, `pass_token error`).
    Fail,
    /// Every request is refused (`status: error`, -50000).
    Error,
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// HTTP 500.
    Http500,
    /// Closes the connection without answering.
    Drop,
}

/// Five fields, exactly as the widget's `getValidate()` yields them.
#[derive(Debug, Clone, Serialize)]
pub struct MintedProof {
    pub lot_number: String,
    pub captcha_output: String,
    pub pass_token: String,
    pub gen_time: String,
    pub captcha_id: String,
}

/// One `/validate` the simulator answered (no secrets kept).
#[derive(Debug, Clone, Serialize)]
pub struct ValidateRecord {
    pub method: String,
    pub captcha_id_in_query: Option<String>,
    pub lot_number: String,
    pub sign_token_ok: bool,
    pub content_type: Option<String>,
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SimStats {
    pub validations: u64,
    pub connections: u64,
    /// The most recent validations, oldest first.
    pub records: Vec<ValidateRecord>,
}

const MAX_RECORDS: usize = 1000;
const MAX_USED: usize = 1_000_000;

pub struct Simulator {
    keys: HashMap<String, String>,
    proof_lifetime: Duration,
    /// lot_number → unix second after which it may be forgotten.
    used: DashMap<String, u64>,
    mode: AtomicU8,
    delay_ms: AtomicU64,
    validations: AtomicU64,
    pub(super) connections: AtomicU64,
    records: Mutex<VecDeque<ValidateRecord>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("captcha_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hmac_hex(key: &[u8], parts: &[&str]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for p in parts {
        mac.update(p.as_bytes());
        mac.update(b"|");
    }
    hex::encode(mac.finalize().into_bytes())
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// GeeTest's error answer.
fn error(code: &str, msg: &str) -> Value {
    json!({"status": "error", "code": code, "msg": msg, "desc": {"type": "defined error"}})
}

fn fail(reason: &str, lot_number: &str) -> Value {
    json!({"status": "success", "result": "fail", "reason": reason,
           "captcha_args": {"lot_number": lot_number}})
}

impl Simulator {
    pub fn new(credentials: Vec<(String, String)>) -> Arc<Self> {
        Self::with_lifetime(credentials, Duration::from_secs(600))
    }

    pub fn with_lifetime(
        credentials: Vec<(String, String)>,
        proof_lifetime: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            keys: credentials
                .into_iter()
                .map(|(id, key)| (id.to_ascii_lowercase(), key))
                .collect(),
            proof_lifetime,
            used: DashMap::new(),
            mode: AtomicU8::new(0),
            delay_ms: AtomicU64::new(0),
            validations: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            records: Mutex::new(VecDeque::new()),
        })
    }

    pub fn captcha_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The pass_token the simulator issues for these fields: derived, so
    /// verifying it needs no memory of what was minted.
    fn pass_token(key: &str, lot_number: &str, captcha_output: &str, gen_time: &str) -> String {
        hmac_hex(
            key.as_bytes(),
            &["pass_token", lot_number, captcha_output, gen_time],
        )
    }

    pub fn mint(&self, captcha_id: &str) -> Option<MintedProof> {
        let captcha_id = captcha_id.to_ascii_lowercase();
        let key = self.keys.get(&captcha_id)?;
        let mut rng = rand::rng();
        let mut lot = [0u8; 16];
        rng.fill_bytes(&mut lot);
        // UUIDv4 layout, as GeeTest's lot_numbers decode.
        lot[6] = (lot[6] & 0x0f) | 0x40;
        lot[8] = (lot[8] & 0x3f) | 0x80;
        let lot_number = hex::encode(lot);
        let mut output = [0u8; 96];
        rng.fill_bytes(&mut output);
        let captcha_output = base64::engine::general_purpose::URL_SAFE.encode(output);
        let gen_time = now().to_string();
        let pass_token = Self::pass_token(key, &lot_number, &captcha_output, &gen_time);
        Some(MintedProof {
            lot_number,
            captcha_output,
            pass_token,
            gen_time,
            captcha_id,
        })
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        let (mode, delay) = match b {
            Behaviour::Normal => (0, 0),
            Behaviour::Slow(d) => (1, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Behaviour::Fail => (2, 0),
            Behaviour::Error => (3, 0),
            Behaviour::Garbage => (4, 0),
            Behaviour::Http500 => (5, 0),
            Behaviour::Drop => (6, 0),
        };
        self.delay_ms.store(delay, Ordering::Relaxed);
        self.mode.store(mode, Ordering::Relaxed);
    }

    pub fn behaviour(&self) -> Behaviour {
        match self.mode.load(Ordering::Relaxed) {
            1 => Behaviour::Slow(Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))),
            2 => Behaviour::Fail,
            3 => Behaviour::Error,
            4 => Behaviour::Garbage,
            5 => Behaviour::Http500,
            6 => Behaviour::Drop,
            _ => Behaviour::Normal,
        }
    }

    pub fn stats(&self) -> SimStats {
        let records = self
            .records
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        SimStats {
            validations: self.validations.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            records,
        }
    }

    /// GeeTest's secondary validation, in the order observed against the live
    /// service: captcha_id, gen_time, lot_number, sign_token, pass_token, then
    /// single use and expiry.
    pub(super) fn validate(
        &self,
        params: &HashMap<String, String>,
        record: &mut ValidateRecord,
    ) -> Value {
        self.validations.fetch_add(1, Ordering::Relaxed);
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        let (captcha_id, lot_number, gen_time) =
            (get("captcha_id"), get("lot_number"), get("gen_time"));
        record.lot_number = lot_number.chars().take(64).collect();

        if self.behaviour() == Behaviour::Fail {
            return fail("pass_token error", lot_number);
        }
        if self.behaviour() == Behaviour::Error {
            return error("-50000", "runtime error");
        }
        if captcha_id.is_empty() {
            return error("-50101", "not captcha_id");
        }
        if !is_hex32(captcha_id) {
            return error("-50102", "illegal captcha_id");
        }
        let Some(key) = self.keys.get(&captcha_id.to_ascii_lowercase()) else {
            return error("-50103", "not captcha");
        };
        let Ok(generated) = gen_time.parse::<u64>() else {
            return error("-50005", "illegal gen_time");
        };
        if lot_number.is_empty() {
            return error("-50302", "not lot_number");
        }
        if !is_hex32(lot_number) {
            return error("-50303", "illegal lot_number");
        }
        record.sign_token_ok = get("sign_token") == sign_token(key.as_bytes(), lot_number);
        if !record.sign_token_ok {
            return fail("sign_token error", lot_number);
        }
        let expected = Self::pass_token(key, lot_number, get("captcha_output"), gen_time);
        if get("pass_token") != expected {
            return fail("pass_token error", lot_number);
        }
        let now = now();
        if now.saturating_sub(generated) > self.proof_lifetime.as_secs() {
            return fail("pass_token expire", lot_number);
        }
        // Single use: GeeTest does not document it; the simulator refuses a
        // second validation of a proof the way an expired one is refused.
        if self.used.len() >= MAX_USED {
            self.used.retain(|_, until| *until > now);
        }
        let first_use = self
            .used
            .insert(
                lot_number.to_ascii_lowercase(),
                generated.saturating_add(self.proof_lifetime.as_secs()),
            )
            .is_none();
        if !first_use {
            return fail("pass_token expire", lot_number);
        }
        json!({
            "status": "success",
            "result": "success",
            "reason": "",
            "captcha_args": {
                "used_type": "slide",
                "user_ip": "127.0.0.1",
                "lot_number": lot_number,
                "scene": "simulator",
                "referer": "",
            }
        })
    }

    pub(super) fn remember(&self, record: ValidateRecord) {
        if let Ok(mut r) = self.records.lock() {
            if r.len() >= MAX_RECORDS {
                r.pop_front();
            }
            r.push_back(record);
        }
    }
}
