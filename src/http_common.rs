//! HTTP pieces the gate and the proxy both use, kept below both so that
//! neither imports the other for them: the body of bytes gatekeeper holds,
//! and the header that marks a request as gated.

use bytes::Bytes;
use http_body_util::Full;

/// Set on every gated request the upstream receives; a client-sent copy is
/// always removed, on every route, so the upstream can trust it.
pub const X_GATEKEEPER_CAPTCHA: http::HeaderName =
    http::HeaderName::from_static("x-gatekeeper-captcha");

/// Passed upstream and logged with every line of the request.
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A body gatekeeper holds whole: a gated request after stripping, or an
/// answer of its own.
pub type HeldBody = Full<Bytes>;

pub fn whole_body(bytes: impl Into<Bytes>) -> HeldBody {
    Full::new(bytes.into())
}

/// Frames a request whose whole body gatekeeper holds, and marks it passed
/// with `verdict`: the body's exact length replaces any chunked framing, and
/// a bodiless request without a Content-Length stays bodiless. Used for an
/// admitted gated request and for a kept request when it is released.
pub fn frame_passed(headers: &mut http::HeaderMap, body_len: usize, verdict: &'static str) {
    use http::header::{CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
    headers.remove(TRANSFER_ENCODING);
    if body_len > 0 || headers.contains_key(CONTENT_LENGTH) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
    }
    headers.insert(X_GATEKEEPER_CAPTCHA, HeaderValue::from_static(verdict));
}

/// `scheme://host[:port]`, lowercase, without user info or path.
pub fn origin_of(uri: &http::Uri) -> Option<String> {
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    let host = uri.host()?.to_ascii_lowercase();
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
    {
        return None;
    }
    Some(match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}
