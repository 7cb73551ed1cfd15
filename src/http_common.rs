//! HTTP pieces the gate and the proxy both use, kept below both so that
//! neither imports the other for them: the body of bytes gatekeeper holds,
//! its JSON error answer, and the header that marks a request as gated.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// Set on every gated request the upstream receives; a client-sent copy is
/// always removed, on every route, so the upstream can trust it.
pub const X_GATEKEEPER_CAPTCHA: http::HeaderName =
    http::HeaderName::from_static("x-gatekeeper-captcha");

/// A body gatekeeper holds whole: a gated request after stripping, or an
/// answer of its own.
pub type HeldBody = Full<Bytes>;

pub fn whole_body(bytes: impl Into<Bytes>) -> HeldBody {
    Full::new(bytes.into())
}

/// `{"error": code, "reason": reason}` with the given status. Never cached.
pub fn json_error(status: StatusCode, code: &str, reason: &str) -> Response<HeldBody> {
    let body = serde_json::json!({ "error": code, "reason": reason }).to_string();
    let mut resp = Response::new(whole_body(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
