//! Request framing checks, stricter than hyper's defaults, in the manner of nginx.
//!
//! Ambiguous message framing is how request smuggling starts (RFC 9112 §6.3,
//! §11.2): two parsers disagree about where a request ends. hyper refuses
//! malformed lines and differing Content-Length values itself; the rules here
//! refuse the shapes it tolerates. They run on the raw head (see
//! `server::inspect`), because hyper normalises exactly the evidence needed.
//! Every refusal closes the connection: after an ambiguous request, nothing
//! further on it can be trusted.

use http::header::UPGRADE;
use http::{HeaderMap, Method};

use super::hop::has_token;

/// Why a request's framing or shape was refused (the reason sent to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingError(pub &'static str);

/// Checks the header lines of an HTTP/1.`minor` request head, as received.
pub fn check_wire_head(minor: u8, headers: &[httparse::Header<'_>]) -> Result<(), FramingError> {
    fn named<'h>(
        headers: &'h [httparse::Header<'h>],
        name: &'static str,
    ) -> impl Iterator<Item = &'h httparse::Header<'h>> {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    }
    let te: Vec<&[u8]> = named(headers, "transfer-encoding")
        .map(|h| h.value)
        .collect();
    let cl = named(headers, "content-length").count();
    if !te.is_empty() {
        if minor == 0 {
            return Err(FramingError("transfer-encoding is not allowed in HTTP/1.0"));
        }
        if cl > 0 {
            return Err(FramingError("both content-length and transfer-encoding"));
        }
        if te.len() != 1 || !te[0].trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(FramingError("transfer-encoding other than exactly chunked"));
        }
    }
    if cl > 1 {
        return Err(FramingError("more than one content-length"));
    }
    match named(headers, "host").count() {
        0 if minor == 1 => Err(FramingError("missing host header")),
        0 | 1 => Ok(()),
        _ => Err(FramingError("more than one host header")),
    }
}

/// Checks what the parsed headers no longer show: httparse trims trailing
/// white space, so `Transfer-Encoding: chunked<TAB>` parses as `chunked`,
/// while nginx refuses it (501). A tab anywhere in a Transfer-Encoding line
/// is refused here.
pub fn check_raw_head(head: &[u8]) -> Result<(), FramingError> {
    let te_line_with_tab = head.split(|b| *b == b'\n').any(|line| {
        line.len() > 18
            && line[..18].eq_ignore_ascii_case(b"transfer-encoding:")
            && line.contains(&b'\t')
    });
    if te_line_with_tab {
        return Err(FramingError("transfer-encoding with a tab"));
    }
    Ok(())
}

/// Checks what a request asks of the proxy, whatever its HTTP version.
pub fn check_request(method: &Method, headers: &HeaderMap) -> Result<(), FramingError> {
    if method == Method::CONNECT {
        return Err(FramingError("CONNECT is not supported"));
    }
    if headers.contains_key(UPGRADE) && !is_websocket_upgrade(headers) {
        return Err(FramingError("only websocket upgrades are supported"));
    }
    Ok(())
}

/// `Upgrade: websocket` with `Connection: upgrade` (RFC 6455 §4.1).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(UPGRADE).iter().count() == 1
        && headers
            .get(UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && has_token(headers, &http::header::CONNECTION, "upgrade")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(minor: u8, pairs: &[(&'static str, &'static str)]) -> Result<(), FramingError> {
        let headers: Vec<httparse::Header<'_>> = pairs
            .iter()
            .map(|(name, value)| httparse::Header {
                name,
                value: value.as_bytes(),
            })
            .collect();
        check_wire_head(minor, &headers)
    }

    #[test]
    fn plain_chunked_and_plain_length_pass() {
        assert!(check(1, &[("Host", "a"), ("Transfer-Encoding", "chunked")]).is_ok());
        assert!(check(1, &[("Host", "a"), ("transfer-encoding", "Chunked")]).is_ok());
        assert!(check(1, &[("Host", "a"), ("Content-Length", "5")]).is_ok());
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let h = ("Host", "a");
        assert!(
            check(
                1,
                &[h, ("Transfer-Encoding", "chunked"), ("Content-Length", "5")]
            )
            .is_err()
        );
        assert!(
            check(
                1,
                &[h, ("Content-Length", "5"), ("Transfer-Encoding", "chunked")]
            )
            .is_err()
        );
        assert!(check(1, &[h, ("Transfer-Encoding", "chunked, chunked")]).is_err());
        assert!(
            check(
                1,
                &[
                    h,
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked")
                ]
            )
            .is_err()
        );
        assert!(check(1, &[h, ("Transfer-Encoding", "gzip, chunked")]).is_err());
        assert!(check(1, &[h, ("Transfer-Encoding", "gzip")]).is_err());
        assert!(check(1, &[h, ("Content-Length", "5"), ("Content-Length", "5")]).is_err());
        assert!(check(0, &[h, ("Transfer-Encoding", "chunked")]).is_err());
    }

    #[test]
    fn a_tab_in_transfer_encoding_is_refused_but_a_trailing_space_is_not() {
        assert!(
            check_raw_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n")
                .is_err()
        );
        assert!(
            check_raw_head(b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:\tchunked\r\n\r\n")
                .is_err()
        );
        assert!(
            check_raw_head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n")
                .is_ok()
        );
        assert!(check_raw_head(b"POST / HTTP/1.1\r\nHost: a\r\nX-Note: a\tb\r\n\r\n").is_ok());
    }

    #[test]
    fn host_must_be_single_and_present_in_http11() {
        assert!(check(1, &[("Host", "a"), ("host", "b")]).is_err());
        assert!(check(1, &[]).is_err());
        assert!(check(0, &[]).is_ok());
    }

    #[test]
    fn only_websocket_upgrades_pass() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert(
            "connection",
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        assert!(check_request(&Method::GET, &h).is_err());
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(check_request(&Method::GET, &h).is_ok());
        assert!(check_request(&Method::CONNECT, &HeaderMap::new()).is_err());
    }
}
