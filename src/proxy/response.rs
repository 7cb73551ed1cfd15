//! Gatekeeper's own answers (as opposed to the upstream's), in the proxy's body type.

use http::Response;
use http_body_util::Either;

use super::body::ProxyBody;
use crate::refusal::Refusal;

pub fn refused(refusal: &Refusal) -> Response<ProxyBody> {
    refusal.to_json().map(Either::Right)
}

/// A refusal after which the connection is closed: the request's framing or
/// body went wrong, so nothing after it on the same connection can be trusted.
pub fn refused_closing(refusal: &Refusal) -> Response<ProxyBody> {
    refusal.to_closing_json().map(Either::Right)
}
