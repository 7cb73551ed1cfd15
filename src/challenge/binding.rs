//! The cookie that binds a kept request to the browser that sent it: its
//! value is a MAC of the id, so another client that learns the id cannot
//! release the request, and `SameSite=Strict` keeps another site from
//! driving the release endpoint with the person's cookie.
//!
//! The id is one 16-byte block, and the MAC is that block encrypted with
//! AES-256 under a secret derived from the captcha keys. For messages of one
//! fixed block, a block cipher is a pseudorandom function and so a MAC with a
//! 128-bit tag; with AES-NI it costs a few dozen instructions, where HMAC-SHA256
//! cost two SHA-256 blocks (about 7,000 instructions on a CPU without SHA-NI)
//! with every challenge page.

use std::time::Duration;

use aes::Aes256;
use aes::cipher::{BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::ChallengeId;
use crate::config::Captcha;

type HmacSha256 = Hmac<Sha256>;

/// Separates this use of the captcha keys from any other (v1 was HMAC-SHA256
/// of the id, whose cookies v2 does not accept).
const CONTEXT: &[u8] = b"gatekeeper challenge binding v2";

#[derive(Clone)]
pub struct Binding {
    /// AES-256 keyed with the derived secret (its round keys expanded once).
    cipher: Aes256,
    max_age: u64,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Binding([redacted])")
    }
}

impl Binding {
    /// The secret is derived from every configured captcha (name, id and
    /// key), not drawn at random: every instance of a fleet that shares the
    /// config computes the same MAC, so a request kept by one instance can
    /// be released through another. Changing a key voids pending cookies.
    pub fn new<'a>(captchas: impl IntoIterator<Item = &'a Captcha>, ttl: Duration) -> Self {
        let mut sorted: Vec<&Captcha> = captchas.into_iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        // HMAC takes keys of any length: this cannot fail.
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(CONTEXT).unwrap_or_else(|_| unreachable!());
        for c in sorted {
            // Lengths first, so no two lists of keys feed the same bytes.
            for part in [c.name.as_bytes(), c.id.as_bytes(), c.key.expose()] {
                mac.update(&(part.len() as u64).to_be_bytes());
                mac.update(part);
            }
        }
        Self {
            cipher: Aes256::new(&mac.finalize().into_bytes()),
            max_age: ttl.as_secs().max(1),
        }
    }

    /// `__Host-` on HTTPS (only the exact host, over TLS, path /); a browser
    /// refuses such a cookie over cleartext, so plain HTTP uses the bare name.
    pub fn cookie_name(id: ChallengeId, https: bool) -> String {
        let mut name = String::with_capacity(COOKIE_NAME_LEN);
        push_cookie_name(&mut name, id, https);
        name
    }

    fn tag(&self, id: ChallengeId) -> [u8; 16] {
        let mut block = id.0.into();
        self.cipher.encrypt_block(&mut block);
        block.into()
    }

    /// The cookie to set with the challenge page.
    pub fn set_cookie(&self, id: ChallengeId, https: bool) -> HeaderValue {
        let mut value = [0u8; 32];
        // 16 bytes of MAC are 32 hex digits: this cannot fail.
        let value = match hex::encode_to_slice(self.tag(id), &mut value) {
            Ok(()) => std::str::from_utf8(&value).unwrap_or_default(),
            Err(_) => "",
        };
        cookie(id, https, value, self.max_age)
    }

    /// The cookie that clears it, once the request is released.
    pub fn clear_cookie(id: ChallengeId, https: bool) -> HeaderValue {
        cookie(id, https, "", 0)
    }

    /// Whether the request carries this id's cookie with the right MAC
    /// (compared in constant time). Every `Cookie` header is read: HTTP/2
    /// may split cookies into several.
    pub fn verify(&self, id: ChallengeId, headers: &HeaderMap, https: bool) -> bool {
        let name = Self::cookie_name(id, https);
        let value = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.trim());
        let mut tag = [0u8; 16];
        match value {
            Some(v) if hex::decode_to_slice(v, &mut tag).is_ok() => self.tag(id).ct_eq(&tag).into(),
            _ => false,
        }
    }
}

/// `__Host-gatekeeper-` and 32 hex digits.
const COOKIE_NAME_LEN: usize = 7 + 11 + 32;

fn push_cookie_name(out: &mut String, id: ChallengeId, https: bool) {
    if https {
        out.push_str("__Host-");
    }
    out.push_str("gatekeeper-");
    out.push_str(std::str::from_utf8(&id.hex()).unwrap_or_default());
}

/// Built by pushes, not `format!`: one is set with every challenge page.
fn cookie(id: ChallengeId, https: bool, value: &str, max_age: u64) -> HeaderValue {
    let mut text = String::with_capacity(COOKIE_NAME_LEN + value.len() + 80);
    push_cookie_name(&mut text, id, https);
    text.push('=');
    text.push_str(value);
    text.push_str("; Path=/; Max-Age=");
    text.push_str(itoa::Buffer::new().format(max_age));
    text.push_str("; HttpOnly; SameSite=Strict");
    if https {
        text.push_str("; Secure");
    }
    // Hex, digits and fixed ASCII only: always a valid header value.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CaptchaKey;

    fn captcha(name: &str, key: &str) -> Captcha {
        Captcha {
            name: name.into(),
            id: "0123456789abcdef0123456789abcdef".into(),
            key: CaptchaKey::new(key.into()),
        }
    }

    fn binding(key: &str) -> Binding {
        Binding::new([&captcha("main", key)], Duration::from_secs(600))
    }

    /// `name=value` of a `Set-Cookie`, without its attributes.
    fn cookie_pair(set: &HeaderValue) -> &str {
        set.to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("a pair")
    }

    /// The request a browser sends back with the cookie `set` gave it.
    fn request_with(set: &HeaderValue) -> HeaderMap {
        let pair = cookie_pair(set);
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("theme=dark"));
        headers.append(
            COOKIE,
            HeaderValue::try_from(format!("other=1; {pair}")).expect("valid"),
        );
        headers
    }

    #[test]
    fn the_cookie_is_host_only_and_strict_on_https() {
        let b = binding("k".repeat(32).as_str());
        let id = ChallengeId::parse("00112233445566778899aabbccddeeff").expect("valid");
        let set = b.set_cookie(id, true);
        let text = set.to_str().expect("ascii");
        assert!(
            text.starts_with("__Host-gatekeeper-00112233445566778899aabbccddeeff="),
            "{text}"
        );
        for attr in [
            "; Secure",
            "; Path=/",
            "; HttpOnly",
            "; SameSite=Strict",
            "; Max-Age=600",
        ] {
            assert!(text.contains(attr), "{attr} missing: {text}");
        }
        assert!(!text.contains("Domain"), "{text}");
        let plain = b.set_cookie(id, false);
        let plain = plain.to_str().expect("ascii");
        assert!(plain.starts_with("gatekeeper-0011"), "{plain}");
        assert!(!plain.contains("Secure"), "{plain}");
        let clear = Binding::clear_cookie(id, true);
        let clear = clear.to_str().expect("ascii");
        assert!(clear.starts_with("__Host-gatekeeper-0011") && clear.contains("Max-Age=0"));
    }

    #[test]
    fn only_the_right_mac_for_this_id_verifies() {
        let b = binding(&"k".repeat(32));
        let id = ChallengeId::random();
        let headers = request_with(&b.set_cookie(id, true));
        assert!(b.verify(id, &headers, true));
        assert!(
            !b.verify(id, &headers, false),
            "the name depends on the scheme"
        );
        assert!(
            !b.verify(ChallengeId::random(), &headers, true),
            "another id"
        );
        assert!(!b.verify(id, &HeaderMap::new(), true), "no cookie");

        let fleet_peer = Binding::new([&captcha("main", &"k".repeat(32))], Duration::from_secs(1));
        assert!(
            fleet_peer.verify(id, &headers, true),
            "same config, same MAC"
        );
        assert!(
            !binding(&"j".repeat(32)).verify(id, &headers, true),
            "another key"
        );

        let other = ChallengeId::random();
        let stolen = request_with(&b.set_cookie(other, true));
        let text = stolen
            .get_all(COOKIE)
            .iter()
            .nth(1)
            .expect("two")
            .to_str()
            .expect("ascii");
        let swapped = text.replace(&other.to_string(), &id.to_string());
        let mut forged = HeaderMap::new();
        forged.insert(COOKIE, HeaderValue::try_from(swapped).expect("valid"));
        assert!(
            !b.verify(id, &forged, true),
            "a MAC of one id does not release another"
        );
        // Every byte of the tag counts: its last digit changed is refused.
        let set = b.set_cookie(id, true);
        let pair = cookie_pair(&set);
        assert_eq!(pair.len(), "__Host-gatekeeper-=".len() + 32 + 32, "{pair}");
        let last = if pair.ends_with('0') { '1' } else { '0' };
        let flipped = format!("{}{last}", &pair[..pair.len() - 1]);
        let mut flipped_headers = HeaderMap::new();
        flipped_headers.insert(COOKIE, HeaderValue::try_from(flipped).expect("valid"));
        assert!(!b.verify(id, &flipped_headers, true), "one digit changed");
        let mut garbage = HeaderMap::new();
        garbage.insert(
            COOKIE,
            HeaderValue::try_from(format!("__Host-gatekeeper-{id}=zz")).expect("valid"),
        );
        assert!(!b.verify(id, &garbage, true));
    }

    #[test]
    fn debug_hides_the_secret() {
        assert_eq!(
            format!("{:?}", binding(&"k".repeat(32))),
            "Binding([redacted])"
        );
    }
}
