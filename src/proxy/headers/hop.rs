//! Hop-by-hop header removal.
//!
//! RFC 9110 §7.6.1: a proxy MUST remove the `Connection` header and every field
//! it names before forwarding, and the fields defined as connection-specific
//! (RFC 9110 §7.6.1, RFC 9112 §9.6 and §6.1, RFC 9110 §7.8 and §11.7): Keep-Alive,
//! Proxy-Connection, TE (except a lone `trailers`), Trailer, Transfer-Encoding,
//! Upgrade, Proxy-Authenticate and Proxy-Authorization. Applied to requests and
//! responses alike.
//!
//! A `Connection` token never removes a header the message's meaning or
//! gatekeeper's word to the app rests on (see [`PROTECTED`]): a client could
//! otherwise send `Connection: X-Gatekeeper-Captcha` and strip the marker the
//! gate sets, or `Connection: Content-Length` and change the framing. nginx
//! likewise ignores what `Connection` names.

use http::HeaderMap;
use http::header::{self, Entry, HeaderName, HeaderValue};

static HOP_BY_HOP: [HeaderName; 7] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// End-to-end headers that `Connection` cannot name away.
static PROTECTED: [HeaderName; 9] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    crate::http_common::X_GATEKEEPER_CAPTCHA,
    crate::http_common::X_REQUEST_ID,
    super::forwarding::X_FORWARDED_FOR,
    super::forwarding::X_FORWARDED_PROTO,
    super::forwarding::X_FORWARDED_HOST,
    header::FORWARDED,
];

/// Removes `Connection`, every header it names (but the protected ones), and
/// the fixed hop-by-hop set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them, or only `Connection: keep-alive`: one
    // pass over the names present costs less than a hashed lookup for each
    // of the nine.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if let Entry::Occupied(connection) = headers.entry(header::CONNECTION) {
        let values: Vec<HeaderValue> = connection.remove_entry_mult().1.collect();
        // Removing by `&str` parses each name on the stack; a token that is
        // not a valid name names nothing.
        for token in values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let token = token.trim();
            if !PROTECTED
                .iter()
                .any(|p| p.as_str().eq_ignore_ascii_case(token))
            {
                headers.remove(token);
            }
        }
        if !headers.keys().any(is_hop_by_hop) {
            return;
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // TE: only `trailers` is meaningful end to end (RFC 9110 §10.1.4, RFC 9113 §8.2.2).
    if let Some(te) = headers.get(header::TE) {
        let only_trailers = headers.get_all(header::TE).iter().count() == 1
            && te.as_bytes().eq_ignore_ascii_case(b"trailers");
        if !only_trailers {
            headers.remove(header::TE);
        }
    }
}

/// `Connection`, `TE` or one of the fixed set: the names `strip_hop_by_hop`
/// acts on before looking at what `Connection` names.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION || name == header::TE || HOP_BY_HOP.contains(name)
}

/// True when the header's comma-separated tokens include `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fixed_hop_by_hop_header_alone_is_removed() {
        for name in HOP_BY_HOP.iter().chain([&header::TE]) {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("gzip"));
            h.insert("x-kept", HeaderValue::from_static("yes"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} survived: {h:?}");
        }
    }

    #[test]
    fn connection_named_headers_and_fixed_set_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret , keep-alive"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn connection_cannot_name_away_protected_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static(
                "X-Gatekeeper-Captcha, x-request-id, Content-Type, content-length, Host, X-Forwarded-For, x-other",
            ),
        );
        for name in &PROTECTED {
            h.insert(name.clone(), HeaderValue::from_static("kept"));
        }
        h.insert("x-other", HeaderValue::from_static("gone"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), PROTECTED.len(), "{h:?}");
        assert!(h.get("x-other").is_none());
    }

    #[test]
    fn te_trailers_survives_but_other_te_does_not() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h[header::TE], "trailers");
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::TE).is_none());
    }
}
