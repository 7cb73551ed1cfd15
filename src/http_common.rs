//! HTTP pieces the gate and the proxy both use, kept below both so that
//! neither imports the other for them: the body of bytes gatekeeper holds,
//! and the header that marks a request as gated.

use bytes::Bytes;
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
