//! Gatekeeper's own answers (as opposed to the upstream's).

use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::body::{ProxyBody, full};

/// `{"error": code, "reason": reason}` with the given status. Never cached.
pub fn json_error(status: StatusCode, code: &str, reason: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": code, "reason": reason }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A refusal after which the connection is closed: the request's framing was
/// ambiguous, so nothing after it on the same connection can be trusted.
pub fn closing_error(status: StatusCode, code: &str, reason: &str) -> Response<ProxyBody> {
    let mut resp = json_error(status, code, reason);
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}
