//! The file as written: every value spanned so a problem can be located.
//! Unknown keys are found separately (`load::unknown_keys`), so that one run
//! reports all of them along with every bad value.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

type S<T> = Option<Spanned<T>>;

/// The known keys of each table, for unknown-key errors and suggestions.
pub(super) const TOP: &[&str] = &[
    "server", "tls", "upstream", "limits", "paths", "geetest", "captcha", "replay", "throttle",
    "route",
];
pub(super) const SERVER: &[&str] = &[
    "https",
    "http",
    "admin",
    "trusted_proxies",
    "shutdown_timeout",
    "log_level",
    "workers",
];
pub(super) const TLS: &[&str] = &["cert", "key"];
pub(super) const UPSTREAM: &[&str] = &["url", "connect_timeout", "timeout"];
pub(super) const LIMITS: &[&str] = &[
    "max_body",
    "header_read_timeout",
    "handshake_timeout",
    "idle_timeout",
    "max_connections",
    "body_idle_timeout",
    "max_buffered_bodies",
    "max_connections_per_address",
    "max_gated_per_address",
];
pub(super) const PATHS: &[&str] = &["encoded_slash", "merge_slashes"];
pub(super) const GEETEST: &[&str] = &[
    "api_server",
    "api_servers",
    "timeout",
    "on_error",
    "max_token_age",
    "breaker_failures",
    "breaker_cooldown",
];
pub(super) const THROTTLE: &[&str] = &["rate", "burst", "max_clients"];
pub(super) const CAPTCHA: &[&str] = &["id", "key", "key_env", "key_file"];
pub(super) const REPLAY: &[&str] = &[
    "store",
    "ttl",
    "max_entries",
    "key_prefix",
    "on_store_error",
    "timeout",
];
pub(super) const ROUTE: &[&str] = &[
    "path",
    "prefix",
    "host",
    "methods",
    "captcha",
    "on_error",
    "reject_redirect",
    "strict",
];

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub tls: S<RawTls>,
    pub upstream: S<RawUpstream>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub paths: RawPaths,
    #[serde(default)]
    pub geetest: RawGeetest,
    #[serde(default)]
    pub captcha: BTreeMap<String, Spanned<RawCaptcha>>,
    #[serde(default)]
    pub replay: RawReplay,
    pub throttle: S<RawThrottle>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawThrottle {
    /// "N/s", "N/m" or "N/h": refused proofs forgiven per unit of time.
    pub rate: S<String>,
    pub burst: S<i64>,
    pub max_clients: S<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawServer {
    pub https: S<String>,
    pub http: S<String>,
    pub admin: S<String>,
    pub trusted_proxies: S<Vec<Spanned<String>>>,
    pub shutdown_timeout: S<String>,
    pub log_level: S<String>,
    pub workers: S<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTls {
    pub cert: S<String>,
    pub key: S<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawUpstream {
    pub url: S<String>,
    pub connect_timeout: S<String>,
    pub timeout: S<String>,
}

/// A size: `"1MiB"` or a number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLimits {
    pub max_body: S<RawSize>,
    pub header_read_timeout: S<String>,
    pub handshake_timeout: S<String>,
    pub idle_timeout: S<String>,
    pub max_connections: S<i64>,
    pub body_idle_timeout: S<String>,
    pub max_buffered_bodies: S<RawSize>,
    pub max_connections_per_address: S<i64>,
    pub max_gated_per_address: S<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawPaths {
    pub encoded_slash: S<String>,
    pub merge_slashes: S<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawGeetest {
    pub api_server: S<String>,
    pub api_servers: S<Vec<Spanned<String>>>,
    pub breaker_failures: S<i64>,
    pub breaker_cooldown: S<String>,
    pub timeout: S<String>,
    pub on_error: S<String>,
    pub max_token_age: S<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCaptcha {
    pub id: S<String>,
    pub key: S<String>,
    pub key_env: S<String>,
    pub key_file: S<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawReplay {
    pub store: S<String>,
    pub ttl: S<String>,
    pub max_entries: S<i64>,
    pub key_prefix: S<String>,
    pub on_store_error: S<String>,
    pub timeout: S<String>,
}

/// `captcha = "login"` or `captcha = ["login", "signup"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRoute {
    pub path: S<String>,
    pub prefix: S<String>,
    pub host: S<String>,
    pub methods: S<Vec<Spanned<String>>>,
    pub captcha: S<OneOrMany>,
    pub on_error: S<String>,
    pub reject_redirect: S<String>,
    pub strict: S<bool>,
}
