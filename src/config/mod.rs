//! Configuration: the validated, runtime form of `gatekeeper.toml`.
//!
//! `raw.rs` mirrors the file with serde (every key spanned); `load.rs` turns it
//! into the types below with `TryFrom`-style validation, so an invalid file is
//! refused, with `FILE:LINE:COL`, before anything listens. The checks, in the
//! order `load.rs` runs them: `unknown_keys.rs` (keys `raw.rs` does not know),
//! then per section `sections.rs`, `external.rs` (what a value names outside
//! the file: PEM files, captcha keys, the Redis URL), `pages.rs` (page
//! templates) and `routes.rs`, all built
//! on `values.rs` (one value, within its range from `bounds.rs`).

mod bounds;
mod challenge;
mod diagnostic;
mod external;
mod inject;
mod load;
mod pages;
mod raw;
mod routes;
mod sections;
mod summary;
#[cfg(test)]
mod test_config;
mod unknown_keys;
mod values;

pub use challenge::DEFAULT_WIDGET_URL;
pub use diagnostic::{ConfigError, Diagnostic};
pub use load::{Externals, load_file, load_file_with, parse_str, parse_str_with};
pub use pages::TEMPLATE_PLACEHOLDERS;
pub use values::parse_duration;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Uri};

pub use crate::geetest::CaptchaKey;
use ipnet::IpNet;

/// A fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from (for messages and reloads).
    pub source: PathBuf,
    pub server: ServerConfig,
    /// Present exactly when `server.https` is set.
    pub tls: Option<TlsFiles>,
    /// `[tls.acme]`: certificates obtained and renewed by gatekeeper,
    /// instead of `tls` files.
    pub acme: Option<AcmeConfig>,
    pub upstream: UpstreamConfig,
    pub limits: Limits,
    /// How request paths are normalised before routing and forwarding.
    pub paths: PathRules,
    pub geetest: GeetestConfig,
    /// Named GeeTest credentials, by name (`[captcha.NAME]`).
    pub captchas: BTreeMap<String, Arc<Captcha>>,
    /// In file order. Matching precedence is decided by `routing`, not by order.
    pub routes: Vec<Route>,
    pub replay: ReplayConfig,
    /// Per-client throttle of refused proofs; `None` when `[throttle]` is absent.
    pub throttle: Option<ThrottleConfig>,
    /// The challenge page that keeps a browser's request (`[challenge]`).
    pub challenge: ChallengeConfig,
    /// Forms of the app's own pages that get the widget (`[[inject]]`).
    pub injects: Vec<InjectRule>,
    /// The operator's own pages (`[pages]`).
    pub pages: PagesConfig,
    /// SHA-256 of the file's text (hex, first 16 characters): which config is loaded.
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub https: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// The admin listener (metrics, health); never on a public listener.
    pub admin: Option<SocketAddr>,
    /// Peers whose `X-Forwarded-For` (and `X-Request-Id`) is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// How long requests in flight may take to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// A tracing filter (`info`, `gatekeeper=debug,info`); `RUST_LOG` wins.
    pub log_level: String,
    /// Threads serving connections, each with its own runtime
    /// (default: one per core).
    pub workers: usize,
}

/// Paths as written in the file, resolved against the config file's directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[tls.acme]`: an ACME (RFC 8555) account and certificate for `domains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    pub domains: Vec<String>,
    /// `mailto:` URLs.
    pub contact: Vec<String>,
    /// The directory URL (Let's Encrypt production by default).
    pub directory: String,
    /// Account and certificate, kept across restarts (files 0600).
    pub cache: PathBuf,
    /// PEM roots to trust for the directory instead of the web PKI.
    pub ca_roots: Option<PathBuf>,
    pub challenge: AcmeChallenge,
}

/// How the CA checks that we hold the domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// RFC 8737, on the HTTPS listener.
    TlsAlpn01,
    /// On the cleartext listener (which must be reachable on port 80).
    Http01,
}

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `http://host:port` or `https://host:port`, no path or query.
    pub url: Uri,
    pub connect_timeout: Duration,
    /// Until the upstream's response head arrives.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body buffered on gated routes, in bytes.
    pub max_body: u64,
    pub header_read_timeout: Duration,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// The longest pause in a request body streamed to the upstream.
    pub body_idle_timeout: Duration,
    /// All gated bodies buffered at once, in bytes, beyond each body's
    /// small allowance (see `gate::admission`): 503 beyond.
    pub max_buffered_bodies: u64,
    /// Open connections from one peer address (trusted proxies exempt);
    /// more are closed at accept.
    pub max_connections_per_address: usize,
    /// Gated requests in flight from one client address (behind trusted
    /// proxies, the `X-Forwarded-For` client): 429 beyond.
    pub max_gated_per_address: usize,
}

#[derive(Debug, Clone)]
pub struct GeetestConfig {
    /// Base URLs of the validate API, tried in order on transport failure,
    /// e.g. `https://gcaptcha4.geetest.com`. Never empty.
    pub api_servers: Vec<Uri>,
    /// Consecutive failures after which a server's circuit opens.
    pub breaker_failures: u32,
    /// How long an open circuit skips its server before one probe.
    pub breaker_cooldown: Duration,
    pub timeout: Duration,
    pub on_error: OnError,
    pub max_token_age: Duration,
}

/// What to do when GeeTest cannot be reached (transport failure, timeout,
/// non-200, unparsable answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// GeeTest's own policy: let the request through, marked `fail-open`.
    Allow,
    /// Answer 503 `captcha_unavailable`.
    Deny,
}

/// One named GeeTest credential.
#[derive(Debug)]
pub struct Captcha {
    pub name: String,
    /// 32 lowercase hex characters.
    pub id: String,
    pub key: CaptchaKey,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub path: PathMatch,
    /// Lowercase host without port, when the route is bound to one.
    pub host: Option<String>,
    pub methods: Methods,
    /// Match the path exactly as written (case, trailing slash and
    /// `;parameters` count) instead of leniently.
    pub strict: bool,
    /// Credentials accepted on this route; never empty. The first is used
    /// when the client sends no `captcha_id`.
    pub captchas: Vec<Arc<Captcha>>,
    pub on_error: OnError,
    /// Browser form posts that are refused get `303 See Other` here.
    pub reject_redirect: Option<String>,
    /// A browser's navigation without a proof gets the challenge page that
    /// keeps its request, rather than the plain 403.
    pub challenge: bool,
    /// A short label for logs and metrics: `[host]/path` or `[host]/prefix*`.
    pub origin: String,
}

/// The methods a route gates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// Exactly these (HEAD counts as GET when matching).
    Listed(Vec<Method>),
    /// Every method but GET, HEAD and OPTIONS: the default.
    Unsafe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub store: ReplayStoreKind,
    /// How long a lot_number's outcome is remembered.
    pub ttl: Duration,
    /// Bound on the memory store (also the local fallback of a Redis store).
    pub max_entries: usize,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// When Redis cannot be reached within `timeout`.
    pub on_store_error: OnStoreError,
    /// Bound on each Redis command, connection included.
    pub timeout: Duration,
}

/// `[challenge]`: where and how long a browser's request waits for its proof.
#[derive(Debug, Clone)]
pub struct ChallengeConfig {
    /// How long a kept request waits for its proof.
    pub ttl: Duration,
    /// Bounds of the kept-request store.
    pub max_entries: usize,
    pub max_bytes: u64,
    /// The widget script: GeeTest's `gt4.js`, or the simulator's stand-in.
    pub widget_url: Uri,
    /// The page template's text, read at load (placeholders checked).
    pub template: Option<Arc<str>>,
}

/// `[[inject]]`: the app's pages at `route`'s path (any method: a form
/// re-rendered after a failed post gets the widget too) have the widget put
/// into the forms `form` selects. `route.captchas` holds the one credential
/// the widget uses; `route.methods` is not used.
#[derive(Debug, Clone)]
pub struct InjectRule {
    pub route: Route,
    pub form: lol_html::Selector,
    /// The selector as written, for logs.
    pub form_text: String,
}

impl AsRef<Route> for InjectRule {
    fn as_ref(&self) -> &Route {
        &self.route
    }
}

/// `[pages]`: templates read at load, their placeholders checked.
#[derive(Debug, Clone, Default)]
pub struct PagesConfig {
    /// Every refusal page a browser is shown.
    pub refusal: Option<Arc<str>>,
    /// The page for a kept request that expired or is unknown.
    pub expired: Option<Arc<str>>,
}

/// A token bucket per client address, charged by each refused proof.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Refusals forgiven per second (the bucket's refill rate).
    pub per_second: f64,
    /// Refusals allowed in a burst (the bucket's size).
    pub burst: u32,
    /// Client addresses tracked at most (bounds memory).
    pub max_clients: usize,
    /// Where the buckets live.
    pub store: ThrottleStore,
}

/// `throttle.store`: this instance's memory, or a Redis the fleet shares
/// (with the replay store's `key_prefix`, `timeout` and `on_store_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottleStore {
    Memory,
    /// `"replay"`: the replay store's Redis, over its connection.
    Replay,
    /// Its own `redis://` or `rediss://` URL (may hold credentials).
    Redis {
        url: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayStoreKind {
    Memory,
    /// `redis://` or `rediss://` (TLS) URL; may hold credentials, so it is
    /// never printed as is.
    Redis {
        url: String,
    },
}

pub use crate::normal_path::{EncodedSlash, PathRules};
pub use crate::replay::OnStoreError;
