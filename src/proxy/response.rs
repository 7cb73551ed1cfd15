//! Gatekeeper's own answers (as opposed to the upstream's).

use http::header::{CONNECTION, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Either;

use super::body::ProxyBody;
use crate::http_common;

/// `{"error": code, "reason": reason}` with the given status. Never cached.
pub fn json_error(status: StatusCode, code: &str, reason: &str) -> Response<ProxyBody> {
    http_common::json_error(status, code, reason).map(Either::Right)
}

/// A refusal after which the connection is closed: the request's framing was
/// ambiguous, so nothing after it on the same connection can be trusted.
pub fn closing_error(status: StatusCode, code: &str, reason: &str) -> Response<ProxyBody> {
    let mut resp = json_error(status, code, reason);
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}
