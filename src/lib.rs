//! gatekeeper: a TLS-terminating reverse proxy that proves a GeeTest CAPTCHA v4
//! before an unmodified upstream application sees a protected request.
//!
//! (Crate docs describing the request path are written once the stages exist.)

pub mod config;
pub mod gate;
pub mod geetest;
pub mod sim;
pub mod tls;
