//! The file as written: every value spanned so a problem can be located.
//! Unknown keys are found separately (`unknown_keys.rs`), so that one run
//! reports all of them along with every bad value.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

/// A key that may be absent; when present, with where it was written.
type OptSpanned<T> = Option<Spanned<T>>;

/// The known keys of each table, for unknown-key errors and suggestions.
pub(super) const TOP: &[&str] = &[
    "server",
    "tls",
    "upstream",
    "limits",
    "paths",
    "geetest",
    "captcha",
    "replay",
    "throttle",
    "route",
    "challenge",
    "inject",
    "pages",
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
pub(super) const TLS: &[&str] = &["cert", "key", "acme"];
pub(super) const ACME: &[&str] = &[
    "domains",
    "contact",
    "directory",
    "cache",
    "ca_roots",
    "challenge",
];
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
pub(super) const THROTTLE: &[&str] = &["rate", "burst", "max_clients", "store"];
pub(super) const CAPTCHA: &[&str] = &["id", "key", "key_env", "key_file"];
pub(super) const REPLAY: &[&str] = &[
    "store",
    "ttl",
    "max_entries",
    "key_prefix",
    "on_store_error",
    "timeout",
];
pub(super) const CHALLENGE: &[&str] =
    &["ttl", "max_entries", "max_bytes", "widget_url", "template"];
pub(super) const INJECT: &[&str] = &["path", "prefix", "host", "form", "captcha"];
pub(super) const PAGES: &[&str] = &["refusal", "expired"];
pub(super) const ROUTE: &[&str] = &[
    "challenge",
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
    pub tls: OptSpanned<RawTls>,
    pub upstream: OptSpanned<RawUpstream>,
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
    pub throttle: OptSpanned<RawThrottle>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub challenge: RawChallenge,
    #[serde(default)]
    pub inject: Vec<Spanned<RawInject>>,
    #[serde(default)]
    pub pages: RawPages,
}

/// `[[inject]]`: the widget goes into a form of the app's own pages.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawInject {
    pub path: OptSpanned<String>,
    pub prefix: OptSpanned<String>,
    pub host: OptSpanned<String>,
    pub form: OptSpanned<String>,
    pub captcha: OptSpanned<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawPages {
    pub refusal: OptSpanned<String>,
    pub expired: OptSpanned<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawChallenge {
    pub ttl: OptSpanned<String>,
    pub max_entries: OptSpanned<i64>,
    pub max_bytes: OptSpanned<RawSize>,
    pub widget_url: OptSpanned<String>,
    pub template: OptSpanned<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawThrottle {
    /// "N/s", "N/m" or "N/h": refused proofs forgiven per unit of time.
    pub rate: OptSpanned<String>,
    pub burst: OptSpanned<i64>,
    pub max_clients: OptSpanned<i64>,
    /// "memory", "replay" or a redis:// URL.
    pub store: OptSpanned<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawServer {
    pub https: OptSpanned<String>,
    pub http: OptSpanned<String>,
    pub admin: OptSpanned<String>,
    pub trusted_proxies: OptSpanned<Vec<Spanned<String>>>,
    pub shutdown_timeout: OptSpanned<String>,
    pub log_level: OptSpanned<String>,
    pub workers: OptSpanned<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTls {
    pub cert: OptSpanned<String>,
    pub key: OptSpanned<String>,
    pub acme: OptSpanned<RawAcme>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAcme {
    pub domains: OptSpanned<Vec<Spanned<String>>>,
    pub contact: OptSpanned<String>,
    pub directory: OptSpanned<String>,
    pub cache: OptSpanned<String>,
    pub ca_roots: OptSpanned<String>,
    pub challenge: OptSpanned<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawUpstream {
    pub url: OptSpanned<String>,
    pub connect_timeout: OptSpanned<String>,
    pub timeout: OptSpanned<String>,
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
    pub max_body: OptSpanned<RawSize>,
    pub header_read_timeout: OptSpanned<String>,
    pub handshake_timeout: OptSpanned<String>,
    pub idle_timeout: OptSpanned<String>,
    pub max_connections: OptSpanned<i64>,
    pub body_idle_timeout: OptSpanned<String>,
    pub max_buffered_bodies: OptSpanned<RawSize>,
    pub max_connections_per_address: OptSpanned<i64>,
    pub max_gated_per_address: OptSpanned<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawPaths {
    pub encoded_slash: OptSpanned<String>,
    pub merge_slashes: OptSpanned<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawGeetest {
    pub api_server: OptSpanned<String>,
    pub api_servers: OptSpanned<Vec<Spanned<String>>>,
    pub breaker_failures: OptSpanned<i64>,
    pub breaker_cooldown: OptSpanned<String>,
    pub timeout: OptSpanned<String>,
    pub on_error: OptSpanned<String>,
    pub max_token_age: OptSpanned<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCaptcha {
    pub id: OptSpanned<String>,
    pub key: OptSpanned<String>,
    pub key_env: OptSpanned<String>,
    pub key_file: OptSpanned<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawReplay {
    pub store: OptSpanned<String>,
    pub ttl: OptSpanned<String>,
    pub max_entries: OptSpanned<i64>,
    pub key_prefix: OptSpanned<String>,
    pub on_store_error: OptSpanned<String>,
    pub timeout: OptSpanned<String>,
}

/// `captcha = "login"` or `captcha = ["login", "signup"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum CaptchaNames {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRoute {
    pub path: OptSpanned<String>,
    pub prefix: OptSpanned<String>,
    pub host: OptSpanned<String>,
    pub methods: OptSpanned<Vec<Spanned<String>>>,
    pub captcha: OptSpanned<CaptchaNames>,
    pub on_error: OptSpanned<String>,
    pub reject_redirect: OptSpanned<String>,
    pub strict: OptSpanned<bool>,
    pub challenge: OptSpanned<bool>,
}
