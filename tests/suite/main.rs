//! The integration tests, one binary with a module per area (built and
//! linked once). Each module's tests are named after it, e.g. `gate::…`:
//! `cargo nextest run -E 'test(/^gate::/)'` runs one area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod acme;
mod canonical;
mod challenge;
mod cli;
mod config;
mod demo;
mod demo_browser;
mod failing_geetest;
mod fields_props;
mod gate;
mod geetest_sim;
mod h2_floods;
mod hostile;
mod inject;
mod operations;
mod pages;
mod proxy;
mod replay_redis;
mod secrets;
mod streaming;
mod throttle_redis;
mod upstream_pool;
