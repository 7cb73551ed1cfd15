//! The sections that are plain settings, one method each: `[server]`,
//! `[upstream]`, `[limits]`, `[paths]`, `[geetest]`, `[captcha.NAME]`,
//! `[replay]` and `[throttle]`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;
use serde_spanned::Spanned;

use super::load::Validator;
use super::raw;
use super::{
    Captcha, CaptchaKey, EncodedSlash, GeetestConfig, Limits, OnError, OnStoreError, PathRules,
    ReplayConfig, ReplayStoreKind, ServerConfig, ThrottleConfig, ThrottleStore, UpstreamConfig,
};

/// Clock skew allowed on top of `max_token_age` when sizing the replay TTL.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

impl Validator<'_, '_> {
    pub(super) fn server(&mut self, raw: &raw::RawServer) -> ServerConfig {
        let https = self.socket_addr(raw.https.as_ref(), "server.https");
        let http = self.socket_addr(raw.http.as_ref(), "server.http");
        let admin = self.socket_addr(raw.admin.as_ref(), "server.admin");
        let shutdown_timeout = self.duration(
            raw.shutdown_timeout.as_ref(),
            "server.shutdown_timeout",
            Duration::from_secs(30),
        );
        let log_level = match &raw.log_level {
            None => "info".to_owned(),
            Some(v) => match tracing_subscriber::EnvFilter::try_new(v.get_ref()) {
                Ok(_) => v.get_ref().clone(),
                Err(e) => {
                    self.error(
                        v.span(),
                        format!("invalid server.log_level \"{}\": {e}", v.get_ref()),
                    );
                    "info".to_owned()
                }
            },
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = self.count(raw.workers.as_ref(), "server.workers", cores);
        let listeners = [
            ("server.https", https),
            ("server.http", http),
            ("server.admin", admin),
        ];
        for (i, (name, addr)) in listeners.iter().enumerate() {
            // Port 0 asks the system for a free port: never a collision.
            let clash = |a: &Option<SocketAddr>| a.is_some_and(|a| a.port() != 0) && a == addr;
            if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| clash(a)) {
                let span = raw
                    .admin
                    .as_ref()
                    .or(raw.http.as_ref())
                    .map(Spanned::span)
                    .unwrap_or(0..0);
                self.error(span, format!("{name} and {other} cannot share an address"));
            }
        }
        if raw.https.is_none() && raw.http.is_none() {
            self.report.whole_file(
                "[server] needs https or http (or both): there is nothing to listen on",
            );
        }
        let mut trusted_proxies = Vec::new();
        for net in raw.trusted_proxies.iter().flat_map(|list| list.get_ref()) {
            let text = net.get_ref();
            match text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)) {
                Ok(n) => trusted_proxies.push(n),
                Err(_) => self.error(net.span(), format!("invalid network \"{text}\" in server.trusted_proxies (expected a CIDR like \"10.0.0.0/8\" or an IP)")),
            }
        }
        ServerConfig {
            https,
            http,
            admin,
            trusted_proxies,
            shutdown_timeout,
            log_level,
            workers,
        }
    }

    pub(super) fn upstream(&mut self, raw: Option<&Spanned<raw::RawUpstream>>) -> UpstreamConfig {
        let mut url = Uri::from_static("http://127.0.0.1");
        match raw.map(|r| (r.span(), &r.get_ref().url)) {
            None => self
                .report
                .whole_file("[upstream] is required, with url = \"http://HOST:PORT\""),
            Some((span, None)) => self.error(span, "[upstream] needs url = \"http://HOST:PORT\""),
            Some((_, Some(u))) => {
                if let Some(parsed) = self.base_url(u, "upstream.url") {
                    url = parsed;
                }
            }
        }
        let raw = raw.map(Spanned::get_ref);
        UpstreamConfig {
            url,
            connect_timeout: self.duration(
                raw.and_then(|r| r.connect_timeout.as_ref()),
                "upstream.connect_timeout",
                Duration::from_secs(2),
            ),
            timeout: self.duration(
                raw.and_then(|r| r.timeout.as_ref()),
                "upstream.timeout",
                Duration::from_secs(60),
            ),
        }
    }

    pub(super) fn limits(&mut self, raw: &raw::RawLimits) -> Limits {
        let max_connections = self.count(
            raw.max_connections.as_ref(),
            "limits.max_connections",
            10_000,
        );
        // A tenth of all places, and at least 100: a NATed office stays far
        // below either. At or above max_connections it limits nothing.
        let per_address_default = (max_connections / 10).max(100).min(max_connections);
        let max_connections_per_address = self.count(
            raw.max_connections_per_address.as_ref(),
            "limits.max_connections_per_address",
            per_address_default,
        );
        if let Some(v) = &raw.max_connections_per_address
            && max_connections_per_address > max_connections
        {
            self.error(
                v.span(),
                format!(
                    "limits.max_connections_per_address = {max_connections_per_address} is more than limits.max_connections = {max_connections}: it would limit nothing"
                ),
            );
        }
        Limits {
            max_body: self.size(raw.max_body.as_ref(), "limits.max_body", 1024 * 1024),
            header_read_timeout: self.duration(
                raw.header_read_timeout.as_ref(),
                "limits.header_read_timeout",
                Duration::from_secs(10),
            ),
            handshake_timeout: self.duration(
                raw.handshake_timeout.as_ref(),
                "limits.handshake_timeout",
                Duration::from_secs(10),
            ),
            idle_timeout: self.duration(
                raw.idle_timeout.as_ref(),
                "limits.idle_timeout",
                Duration::from_secs(60),
            ),
            max_connections,
            body_idle_timeout: self.duration(
                raw.body_idle_timeout.as_ref(),
                "limits.body_idle_timeout",
                Duration::from_secs(60),
            ),
            max_buffered_bodies: self.size(
                raw.max_buffered_bodies.as_ref(),
                "limits.max_buffered_bodies",
                256 * 1024 * 1024,
            ),
            max_connections_per_address,
            max_gated_per_address: self.count(
                raw.max_gated_per_address.as_ref(),
                "limits.max_gated_per_address",
                // Half the default budget at the default max_body: one
                // address cannot hold all of it.
                128,
            ),
        }
    }

    pub(super) fn paths(&mut self, raw: &raw::RawPaths) -> PathRules {
        let mut rules = PathRules::default();
        if let Some(v) = &raw.encoded_slash {
            match v.get_ref().as_str() {
                "reject" => rules.encoded_slash = EncodedSlash::Reject,
                "keep" => rules.encoded_slash = EncodedSlash::Keep,
                other => self.error(
                    v.span(),
                    format!("paths.encoded_slash must be \"reject\" or \"keep\", not \"{other}\""),
                ),
            }
        }
        if let Some(v) = &raw.merge_slashes {
            rules.merge_slashes = *v.get_ref();
        }
        rules
    }

    pub(super) fn geetest(&mut self, raw: &raw::RawGeetest) -> GeetestConfig {
        let mut api_servers = Vec::new();
        match (&raw.api_server, &raw.api_servers) {
            (Some(one), Some(_)) => {
                self.error(
                    one.span(),
                    "give geetest.api_server or geetest.api_servers, not both",
                );
            }
            (Some(one), None) => api_servers.extend(self.base_url(one, "geetest.api_server")),
            (None, Some(list)) => {
                if list.get_ref().is_empty() {
                    self.error(
                        list.span(),
                        "geetest.api_servers must list at least one server",
                    );
                }
                for server in list.get_ref() {
                    api_servers.extend(self.base_url(server, "geetest.api_servers"));
                }
            }
            (None, None) => {}
        }
        if api_servers.is_empty() {
            api_servers.push(Uri::from_static("https://gcaptcha4.geetest.com"));
        }
        let breaker_failures =
            self.count(raw.breaker_failures.as_ref(), "geetest.breaker_failures", 5);
        GeetestConfig {
            api_servers,
            breaker_failures: u32::try_from(breaker_failures).unwrap_or(u32::MAX),
            breaker_cooldown: self.duration(
                raw.breaker_cooldown.as_ref(),
                "geetest.breaker_cooldown",
                Duration::from_secs(10),
            ),
            timeout: self.duration(
                raw.timeout.as_ref(),
                "geetest.timeout",
                Duration::from_secs(3),
            ),
            on_error: self.on_error(raw.on_error.as_ref(), "geetest.on_error", OnError::Allow),
            max_token_age: self.duration(
                raw.max_token_age.as_ref(),
                "geetest.max_token_age",
                Duration::from_secs(600),
            ),
        }
    }

    /// `replay` is the replay store, which `store = "replay"` needs to be Redis.
    pub(super) fn throttle(
        &mut self,
        raw: Option<&Spanned<raw::RawThrottle>>,
        replay: &ReplayStoreKind,
    ) -> Option<ThrottleConfig> {
        let raw = raw?.get_ref();
        let per_second = match &raw.rate {
            None => 10.0 / 60.0,
            Some(v) => self.rate(v, "throttle.rate"),
        };
        let burst = self.count(raw.burst.as_ref(), "throttle.burst", 20);
        Some(ThrottleConfig {
            per_second,
            burst: u32::try_from(burst).unwrap_or(u32::MAX),
            max_clients: self.count(raw.max_clients.as_ref(), "throttle.max_clients", 100_000),
            store: self.throttle_store(raw.store.as_ref(), replay),
        })
    }

    fn throttle_store(
        &mut self,
        value: Option<&Spanned<String>>,
        replay: &ReplayStoreKind,
    ) -> ThrottleStore {
        let Some(v) = value else {
            return ThrottleStore::Memory;
        };
        match v.get_ref().as_str() {
            "replay" if *replay == ReplayStoreKind::Memory => {
                self.error(
                    v.span(),
                    "throttle.store = \"replay\" shares the replay store's Redis, but replay.store is \"memory\": set replay.store to a redis:// URL, or give throttle.store its own",
                );
                ThrottleStore::Memory
            }
            "replay" => ThrottleStore::Replay,
            "memory" => ThrottleStore::Memory,
            s if s.starts_with("redis://") || s.starts_with("rediss://") => {
                match self.replay_store(Some(v), "throttle.store") {
                    ReplayStoreKind::Redis { url } => ThrottleStore::Redis { url },
                    ReplayStoreKind::Memory => ThrottleStore::Memory,
                }
            }
            _ => {
                self.error(
                    v.span(),
                    "throttle.store must be \"memory\", \"replay\" (the replay store's Redis) or a redis:// or rediss:// URL",
                );
                ThrottleStore::Memory
            }
        }
    }

    pub(super) fn captchas(
        &mut self,
        raw: &BTreeMap<String, Spanned<raw::RawCaptcha>>,
    ) -> BTreeMap<String, Arc<Captcha>> {
        let mut out = BTreeMap::new();
        for (name, table) in raw {
            let span = table.span();
            let c = table.get_ref();
            let section = format!("captcha.{name}");
            let id = match &c.id {
                None => {
                    self.error(
                        span.clone(),
                        format!("[{section}] needs id = \"<32 hex characters>\""),
                    );
                    continue;
                }
                Some(id)
                    if id.get_ref().len() != 32
                        || !id.get_ref().bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    self.error(id.span(), format!("{section}.id must be 32 hex characters"));
                    continue;
                }
                Some(id) => id.get_ref().to_ascii_lowercase(),
            };
            let Some((key_span, key)) = self.captcha_key(c, &section, span) else {
                continue;
            };
            // The value is never echoed: it is a secret.
            if key.chars().count() != 32 {
                self.error(
                    key_span,
                    format!("{section}: the captcha key must be 32 characters"),
                );
                continue;
            }
            out.insert(
                name.clone(),
                Arc::new(Captcha {
                    name: name.clone(),
                    id,
                    key: CaptchaKey::new(key),
                }),
            );
        }
        out
    }

    /// `token_age_span` locates `geetest.max_token_age`, which the ttl must
    /// outlive: the error points there when the ttl is not written.
    pub(super) fn replay(
        &mut self,
        raw: &raw::RawReplay,
        max_token_age: Duration,
        token_age_span: Option<Range<usize>>,
    ) -> ReplayConfig {
        let store = self.replay_store(raw.store.as_ref(), "replay.store");
        let ttl = self.duration(raw.ttl.as_ref(), "replay.ttl", Duration::from_secs(900));
        let floor = max_token_age.saturating_add(CLOCK_SKEW);
        if ttl < floor {
            let message = format!(
                "replay.ttl ({}) must be at least geetest.max_token_age + 1m ({}): an entry must outlive every proof the gate still accepts",
                humantime::format_duration(ttl),
                humantime::format_duration(floor)
            );
            match raw.ttl.as_ref().map(Spanned::span).or(token_age_span) {
                Some(span) => self.error(span, message),
                None => self.report.whole_file(message),
            }
        }
        ReplayConfig {
            store,
            ttl,
            max_entries: self.count(raw.max_entries.as_ref(), "replay.max_entries", 1_000_000),
            key_prefix: raw
                .key_prefix
                .as_ref()
                .map_or_else(|| "gatekeeper:".to_owned(), |p| p.get_ref().clone()),
            on_store_error: self.one_of(
                raw.on_store_error.as_ref(),
                "replay.on_store_error",
                &[("local", OnStoreError::Local), ("deny", OnStoreError::Deny)],
                OnStoreError::Local,
            ),
            timeout: self.duration(
                raw.timeout.as_ref(),
                "replay.timeout",
                Duration::from_millis(250),
            ),
        }
    }
}
