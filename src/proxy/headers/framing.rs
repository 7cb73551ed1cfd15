//! Request framing checks, stricter than hyper's defaults, in the manner of nginx.
//!
//! Ambiguous message framing is how request smuggling starts (RFC 9112 §6.3,
//! §11.2): two parsers disagree about where a request ends. hyper refuses
//! malformed lines and differing Content-Length values itself; the rules here
//! refuse the shapes it tolerates. They run on the raw head (see
//! `server::inspect`), because hyper normalises exactly the evidence needed.
//! Every refusal closes the connection: after an ambiguous request, nothing
//! further on it can be trusted.

use http::{HeaderMap, Method, Request, Version};

use crate::proxy::websocket;

/// Why a request's framing or shape was refused (the reason sent to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingError(pub &'static str);

/// The wire inspector's refusal of an HTTP/1 request's raw head, carried in
/// the request's extensions from the connection to the handler. Only a
/// refusal travels (an extension costs two allocations per request): the
/// connection attaches one to every HTTP/1 request whose head was refused or
/// not inspected at all, so no head passes unchecked.
#[derive(Debug, Clone, Copy)]
pub struct WireRefusal(pub FramingError);

impl WireRefusal {
    /// What an HTTP/1 request must carry for the inspector's verdict on its
    /// head: nothing when it passed, the refusal otherwise, and a refusal
    /// too when there was no verdict (fail closed).
    pub fn for_verdict(verdict: Option<Result<(), FramingError>>) -> Option<Self> {
        match verdict {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(Self(e)),
            None => Some(Self(FramingError("request head not inspected"))),
        }
    }
}

/// The one decision on a request's framing and shape: the wire inspector's
/// refusal, if any, then `check_request`.
pub fn judge<B>(req: &mut Request<B>) -> Result<(), FramingError> {
    if req.version() < Version::HTTP_2
        && let Some(WireRefusal(e)) = req.extensions_mut().remove::<WireRefusal>()
    {
        return Err(e);
    }
    check_request(req.version(), req.method(), req.headers())
}

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
    // hyper also takes `5, 5` and the inspector must follow the body exactly as
    // hyper does to find the next head: only plain digits are accepted.
    if let Some(h) = named(headers, "content-length").next() {
        let value = h.value.trim_ascii();
        if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
            return Err(FramingError("content-length is not a number"));
        }
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

/// Refuses a bare LF (a line ending without its CR) in `head[from..]`; the
/// byte before `from`, if any, is looked at as the CR. RFC 9112 §2.2 lets a
/// recipient take a bare LF as a line ending or not: hyper does, other
/// parsers do not, so such a head could be two different requests.
pub fn check_line_endings(head: &[u8], from: usize) -> Result<(), FramingError> {
    let bare = memchr::memchr_iter(b'\n', head.get(from..).unwrap_or_default())
        .any(|i| from + i == 0 || head[from + i - 1] != b'\r');
    if bare {
        return Err(FramingError("bare LF line ending"));
    }
    Ok(())
}

/// Checks what a request asks of the proxy, whatever its HTTP version: no
/// CONNECT, and no upgrade but a well-formed WebSocket handshake.
pub fn check_request(
    version: Version,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), FramingError> {
    if method == Method::CONNECT {
        return Err(FramingError("CONNECT is not supported"));
    }
    if websocket::asks_for_upgrade(headers) {
        websocket::check_handshake(version, method, headers)?;
    }
    Ok(())
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
    fn a_line_ending_without_its_cr_is_refused_wherever_it_is() {
        let good = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(check_line_endings(good, 0).is_ok());
        assert!(check_line_endings(b"GET / HTTP/1.1\nHost: a\n\n", 0).is_err());
        assert!(check_line_endings(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 0).is_err());
        assert!(check_line_endings(b"\nGET / HTTP/1.1\r\n", 0).is_err());
        // The CR before `from` counts; a bare LF before `from` is not looked at.
        assert!(check_line_endings(good, 15).is_ok());
        assert!(check_line_endings(b"a\nb\r\n", 2).is_ok());
        assert!(check_line_endings(b"a\r\nb\n", 3).is_err());
    }

    #[test]
    fn content_length_must_be_plain_digits() {
        assert!(check(1, &[("Host", "a"), ("Content-Length", " 12 ")]).is_ok());
        for bad in [
            "5, 5",
            "+5",
            "-1",
            "0x10",
            "",
            "5 5",
            "123456789012345678901",
        ] {
            assert!(
                check(1, &[("Host", "a"), ("Content-Length", bad)]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn host_must_be_single_and_present_in_http11() {
        assert!(check(1, &[("Host", "a"), ("host", "b")]).is_err());
        assert!(check(1, &[]).is_err());
        assert!(check(0, &[]).is_ok());
    }

    #[test]
    fn only_websocket_upgrades_pass() {
        let v = Version::HTTP_11;
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert(
            "connection",
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        assert!(check_request(v, &Method::GET, &h).is_err());
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert!(check_request(v, &Method::GET, &h).is_ok());
        assert!(check_request(v, &Method::CONNECT, &HeaderMap::new()).is_err());
    }

    #[test]
    fn an_http1_request_without_a_wire_verdict_fails_closed() {
        assert!(WireRefusal::for_verdict(Some(Ok(()))).is_none());
        assert!(WireRefusal::for_verdict(None).is_some());
        let refused = WireRefusal::for_verdict(Some(Err(FramingError("x"))));
        let mut req = Request::get("/").body(()).unwrap_or_default();
        req.extensions_mut().insert(refused.expect("a refusal"));
        assert_eq!(judge(&mut req), Err(FramingError("x")));
        let mut req = Request::get("/").body(()).unwrap_or_default();
        assert!(judge(&mut req).is_ok());
    }
}
