//! The one body type that flows through the proxy in both directions: a
//! streamed hyper body, or bytes gatekeeper holds (a gated request after
//! stripping, or an answer of its own).

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

pub type ProxyBody = Either<Incoming, Full<Bytes>>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Either::Right(Full::new(bytes.into()))
}

pub fn empty() -> ProxyBody {
    Either::Right(Full::new(Bytes::new()))
}
