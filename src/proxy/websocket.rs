//! WebSocket upgrades (RFC 6455): which requests may ask for one, and which
//! upstream answers open a tunnel (`super::tunnel`).
//!
//! Once a tunnel is open its bytes are nobody's HTTP: the gate never sees
//! them. An application endpoint that answers `101` to anything (or with a
//! made-up `Sec-WebSocket-Accept`) would otherwise receive, unchecked,
//! whatever the client writes next, a `POST /login` included. So a tunnel
//! opens only when both sides completed a real WebSocket handshake: the
//! client's request is well formed (§4.1, checked with the rest of the
//! request's shape in `headers::framing`) and the upstream's `101` proves it
//! read that request's key (§4.2.2). Any other `101` is a 502 and the
//! connection closes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{
    CONNECTION, CONTENT_LENGTH, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Method, Request, Response, Version};
use hyper::upgrade::OnUpgrade;
use sha1::{Digest, Sha1};

use super::headers::framing::FramingError;
use super::headers::hop::has_token;
use super::tunnel::Tunnelling;

/// RFC 6455 §1.3: appended to the client's key to make the accept value.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether a request asks to switch protocols at all: an `Upgrade` header,
/// or `upgrade` among the `Connection` tokens. Either is enough for some
/// server to try, so either must pass `check_handshake`.
pub fn asks_for_upgrade(headers: &HeaderMap) -> bool {
    // Most requests carry neither name: a scan of the names first.
    headers
        .keys()
        .any(|name| name == UPGRADE || name == CONNECTION)
        && (headers.contains_key(UPGRADE) || has_token(headers, &CONNECTION, "upgrade"))
}

/// A client's opening handshake as RFC 6455 §4.1 and §4.2.1 require it:
/// HTTP/1.1, GET, `Upgrade: websocket`, `Connection` naming `upgrade`,
/// `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key` that is 16 bytes in
/// base64. It carries no body: what follows it belongs to the tunnel.
pub fn check_handshake(
    version: Version,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), FramingError> {
    if version != Version::HTTP_11 {
        return Err(FramingError("an upgrade needs HTTP/1.1"));
    }
    if method != Method::GET {
        return Err(FramingError("a websocket upgrade must be a GET"));
    }
    if !single(headers, &UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        return Err(FramingError("only websocket upgrades are supported"));
    }
    if !has_token(headers, &CONNECTION, "upgrade") {
        return Err(FramingError("an upgrade needs connection: upgrade"));
    }
    let version_13 =
        single(headers, &SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes().trim_ascii() == b"13");
    if !version_13 {
        return Err(FramingError("sec-websocket-version must be 13"));
    }
    if !single(headers, &SEC_WEBSOCKET_KEY).is_some_and(valid_key) {
        return Err(FramingError("sec-websocket-key must be 16 bytes in base64"));
    }
    let has_body = headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().trim_ascii() != b"0");
    if has_body {
        return Err(FramingError("a websocket upgrade has no body"));
    }
    Ok(())
}

/// The header's value if it appears exactly once.
fn single<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

fn valid_key(key: &HeaderValue) -> bool {
    let key = key.as_bytes().trim_ascii();
    // 16 bytes are 24 base64 characters, padding included.
    key.len() == 24
        && STANDARD
            .decode(key)
            .is_ok_and(|decoded| decoded.len() == 16)
}

/// The `Sec-WebSocket-Accept` that answers `key` (RFC 6455 §4.2.2 step 5.4):
/// base64 of the SHA-1 of the key followed by the GUID.
pub fn accept_for(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.trim_ascii());
    sha1.update(GUID);
    STANDARD.encode(sha1.finalize())
}

/// Marks a message as the WebSocket upgrade, after hop-by-hop stripping.
pub fn mark_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

/// A well-formed WebSocket upgrade request waiting for the upstream's answer.
#[derive(Debug)]
pub struct Pending {
    client: OnUpgrade,
    /// The `Sec-WebSocket-Accept` the upstream must answer with.
    accept: String,
    tunnelling: Tunnelling,
}

impl Pending {
    /// Takes what a tunnel needs from a request that passed
    /// `check_handshake`; `None` if it asks for no upgrade (or, on HTTP/2,
    /// cannot have one).
    pub fn take<B>(req: &mut Request<B>) -> Option<Self> {
        let tunnelling = req.extensions_mut().remove::<Tunnelling>()?;
        if !asks_for_upgrade(req.headers()) {
            return None;
        }
        let accept = accept_for(req.headers().get(SEC_WEBSOCKET_KEY)?.as_bytes());
        Some(Self {
            client: hyper::upgrade::on(req),
            accept,
            tunnelling,
        })
    }
}

/// Opens the tunnel if `resp`, a `101`, completes the client's handshake:
/// `Upgrade: websocket`, `Connection: upgrade` and the accept value for the
/// client's key. Otherwise the reason for the 502.
pub fn open<B>(pending: Option<Pending>, resp: &mut Response<B>) -> Result<(), &'static str> {
    let Some(pending) = pending else {
        return Err("the application switched protocols unasked");
    };
    let headers = resp.headers();
    let upgrade =
        single(headers, &UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !upgrade || !has_token(headers, &CONNECTION, "upgrade") {
        return Err("the application switched to something other than websocket");
    }
    let accepted = single(headers, &SEC_WEBSOCKET_ACCEPT)
        .is_some_and(|v| v.as_bytes().trim_ascii() == pending.accept.as_bytes());
    if !accepted {
        return Err("the application's websocket handshake is invalid");
    }
    let upstream = hyper::upgrade::on(resp);
    pending.tunnelling.open(pending.client, upstream);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    const GOOD: &[(&str, &str)] = &[
        ("host", "a"),
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    fn without(name: &str) -> HeaderMap {
        let pairs: Vec<_> = GOOD.iter().copied().filter(|(n, _)| *n != name).collect();
        handshake(&pairs)
    }

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = without(name);
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn the_rfc_example_handshake_passes_and_its_accept_matches() {
        assert!(check_handshake(Version::HTTP_11, &Method::GET, &handshake(GOOD)).is_ok());
        // RFC 6455 §1.3.
        assert_eq!(
            accept_for(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn each_missing_or_wrong_part_of_the_handshake_is_refused() {
        let bad = [
            without("upgrade"),
            without("connection"),
            without("sec-websocket-version"),
            without("sec-websocket-key"),
            with("upgrade", "h2c"),
            with("upgrade", "websocket, h2c"),
            with("connection", "keep-alive"),
            with("sec-websocket-version", "8"),
            // 15 and 17 bytes, not base64, unpadded.
            with("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAA"),
            with("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAAA="),
            with("sec-websocket-key", "not base64 at all!!!!!=="),
            with("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA"),
            with("content-length", "5"),
            with("transfer-encoding", "chunked"),
        ];
        for h in &bad {
            assert!(
                check_handshake(Version::HTTP_11, &Method::GET, h).is_err(),
                "{h:?}"
            );
        }
        let mut twice = handshake(GOOD);
        twice.append(
            "sec-websocket-key",
            HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA=="),
        );
        assert!(check_handshake(Version::HTTP_11, &Method::GET, &twice).is_err());
        let good = handshake(GOOD);
        assert!(check_handshake(Version::HTTP_10, &Method::GET, &good).is_err());
        assert!(check_handshake(Version::HTTP_2, &Method::GET, &good).is_err());
        assert!(check_handshake(Version::HTTP_11, &Method::POST, &good).is_err());
    }

    #[test]
    fn either_upgrade_or_connection_upgrade_counts_as_asking() {
        assert!(asks_for_upgrade(&handshake(&[("upgrade", "foo")])));
        assert!(asks_for_upgrade(&handshake(&[(
            "connection",
            "close, Upgrade"
        )])));
        assert!(!asks_for_upgrade(&handshake(&[(
            "connection",
            "keep-alive"
        )])));
    }

    #[test]
    fn a_101_opens_nothing_without_the_matching_accept() {
        let mut resp = Response::new(());
        *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        assert!(open(None, &mut resp).is_err());
    }
}
