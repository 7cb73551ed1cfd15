//! `sign_token`: proves to GeeTest that the request comes from the key holder.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The 32-character captcha key, and the HMAC keyed with it once. Keying
/// hashes the key's inner and outer pads, two of the four SHA-256 blocks a
/// sign_token costs; each token starts from a copy of that state and hashes
/// only the other two. Its `Debug` never shows the key, so it cannot reach a
/// log by accident.
#[derive(Clone)]
pub struct CaptchaKey {
    key: String,
    mac: Hmac<Sha256>,
}

impl CaptchaKey {
    pub fn new(key: String) -> Self {
        let mac = keyed(key.as_bytes());
        Self { key, mac }
    }

    /// The key's bytes as written (GeeTest does NOT hex-decode it).
    pub fn expose(&self) -> &[u8] {
        self.key.as_bytes()
    }

    /// The sign_token of `lot_number` under this key.
    pub fn sign(&self, lot_number: &str) -> String {
        finish(self.mac.clone(), lot_number)
    }
}

impl PartialEq for CaptchaKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for CaptchaKey {}

impl fmt::Debug for CaptchaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaptchaKey([redacted])")
    }
}

/// `sign_token` for a key used once (the simulator's check).
pub fn sign_token(key: &[u8], lot_number: &str) -> String {
    finish(keyed(key), lot_number)
}

/// HMAC-SHA256 keyed with the captcha key's bytes as written (GeeTest does
/// not hex-decode it).
fn keyed(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// Lowercase hex of the HMAC over the lot_number's bytes.
fn finish(mut mac: Hmac<Sha256>, lot_number: &str) -> String {
    mac.update(lot_number.as_bytes());
    // Written into a buffer whole: `hex::encode` collects char by char.
    let mut hex = [0u8; 64];
    match hex::encode_to_slice(mac.finalize().into_bytes(), &mut hex) {
        Ok(()) => String::from_utf8_lossy(&hex).into_owned(),
        Err(_) => unreachable!("a SHA-256 digest is 32 bytes, 64 in hex"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "b09a7aafbfd83f73b35a9b530d0337bf";
    const LOT: &str = "4dc3cfc2cdff448cad8d13107198d473";
    const TOKEN: &str = "c99f3aa68104bdcd085f372dc6556a17a5a830a1a3d25125fb0010466977f3d8";

    #[test]
    fn matches_the_documented_test_vector() {
        assert_eq!(sign_token(KEY.as_bytes(), LOT), TOKEN);
    }

    #[test]
    fn a_key_signs_each_lot_number_from_its_own_fresh_state() {
        let key = CaptchaKey::new(KEY.into());
        let zeros = "0".repeat(32);
        let other = key.sign(&zeros);
        assert_eq!(key.sign(LOT), TOKEN, "an earlier token leaves no trace");
        assert_eq!(key.sign(LOT), TOKEN);
        assert_eq!(other, sign_token(KEY.as_bytes(), &zeros));
        assert_ne!(other, TOKEN);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", CaptchaKey::new(KEY.into()));
        assert!(!shown.contains(KEY), "{shown}");
    }
}
