//! gatekeeper: a TLS-terminating reverse proxy that proves a GeeTest CAPTCHA v4
//! before an unmodified upstream application sees a protected request.
//!
//! A request travels through these modules, in this order:
//!
//! 1. [`server`] accepts the connection and places it on one of the per-core
//!    worker runtimes ([`server::workers`]), where it stays: TLS via rustls,
//!    protocol chosen by ALPN, every wait bounded, each request handed to
//!    the proxy.
//! 2. [`proxy::handler`] refuses ambiguous framing
//!    ([`proxy::headers::framing`]) and asks [`routing`] whether a
//!    `[[route]]` in `gatekeeper.toml` protects the request.
//! 3. For a protected request, [`gate`] reads the body, extracts the GeeTest
//!    fields ([`gate::fields`]), checks them locally, claims the lot_number in
//!    the [`replay`] store, asks GeeTest ([`geetest`]) and strips the fields.
//!    It returns a decision; the handler answers a [`refusal`], which never
//!    reaches the upstream.
//! 4. Headers are rewritten ([`proxy::headers::hop`],
//!    [`proxy::headers::forwarding`]) and [`proxy::upstream`] forwards over
//!    keep-alive connections from [`pool`]; bodies stream both ways.
//!
//! [`challenge`] keeps a browser's request that came without a proof while
//! the person solves the captcha on gatekeeper's own page, then releases it.
//!
//! [`config`] turns the TOML file into validated types before anything
//! listens; [`sim`] is an offline GeeTest for development and tests, and
//! [`demo`] runs the whole product offline in one process.

pub mod challenge;
pub mod config;
pub mod control;
pub mod demo;
pub mod gate;
pub mod geetest;
pub mod http_common;
pub mod inject;
pub mod logging;
pub mod metrics;
pub mod normal_path;
pub mod pool;
pub mod proxy;
pub mod refusal;
pub mod replay;
pub mod routing;
pub mod server;
pub mod sim;
pub mod tls;
pub mod worker_local;
