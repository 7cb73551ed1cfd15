//! The request's path through gatekeeper, one stage per file:
//! `headers/framing` refuses ambiguous requests, `target` puts host and path
//! in normal form, `routing` decides whether a request is gated, `crate::gate`
//! proves the captcha, `headers/hop` and `headers/forwarding` rewrite
//! headers, `upstream` forwards over
//! `crate::pool`'s keep-alive connections; `websocket` opens a `tunnel` only
//! for a real WebSocket handshake on both sides.

pub mod body;
mod challenge;
pub mod counted;
pub mod handler;
pub mod headers;
mod request_line;
pub mod response;
mod target;
pub mod tunnel;
pub mod upstream;
pub mod websocket;

pub use body::ProxyBody;
pub use challenge::Challenges;
pub use counted::Counted;
pub use handler::{ConnInfo, Proxy};
