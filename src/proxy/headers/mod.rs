//! Header rules applied on the way through, one concern per file.

pub mod forwarding;
pub mod framing;
pub mod hop;

/// Set on every gated request the upstream receives; a client-sent copy is
/// always removed, on every route, so the upstream can trust it.
pub const X_GATEKEEPER_CAPTCHA: http::HeaderName =
    http::HeaderName::from_static("x-gatekeeper-captcha");
