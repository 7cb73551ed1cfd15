//! From text to a validated [`Config`], collecting every problem on the way.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Uri};
use ipnet::IpNet;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use crate::normal_path::NormalPath;

use super::bounds::{self, Bound};
use super::diagnostic::{ConfigError, Report};
use super::raw::{self, OneOrMany, RawConfig, RawSize};
use super::{
    Captcha, CaptchaKey, Config, EncodedSlash, GeetestConfig, Limits, Methods, OnError,
    OnStoreError, PathMatch, PathRules, ReplayConfig, ReplayStoreKind, Route, ServerConfig,
    ThrottleConfig, TlsFiles, UpstreamConfig,
};

/// Clock skew allowed on top of `max_token_age` when sizing the replay TTL.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_str(&text, path),
        Err(e) => {
            let mut report = Report::new(path, "");
            report.file(format!("cannot read: {e}"));
            Err(report.into_error())
        }
    }
}

/// Validates configuration text; `path` names it in messages and anchors
/// relative paths (certificates, key files).
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut report = Report::new(path, text);
    let table = match DeTable::parse(text) {
        Ok(table) => table,
        Err(e) => {
            report.at(e.span().unwrap_or(0..0), e.message().trim().to_owned());
            return Err(report.into_error());
        }
    };
    unknown_keys(table.get_ref(), &mut report);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            report.at(e.span().unwrap_or(0..0), e.message().trim().to_owned());
            return Err(report.into_error());
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut config = Loader {
        report: &mut report,
        base,
    }
    .config(raw, path);
    config.hash = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())[..8]);
    report.finish(config)
}

/// Parses a duration as `humantime` does (`"250ms"`, `"1h 30m"`), after
/// refusing text with more digits than any sensible duration holds: with
/// those, `humantime` itself can overflow and panic.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if too_many_digits(text) {
        return Err(format!(
            "more than {} digits: use a larger unit",
            bounds::DURATION_DIGITS
        ));
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn too_many_digits(text: &str) -> bool {
    text.chars().filter(char::is_ascii_digit).count() > bounds::DURATION_DIGITS
}

/// A size in bytes as a person would write it: `"1GiB"`, `"512KiB"`, `"10 bytes"`.
fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map_or_else(
            || format!("{bytes} bytes"),
            |(unit, name)| format!("{}{name}", bytes / unit),
        )
}

// ------------------------------------------------------------------ unknown keys

fn unknown_keys(top: &DeTable<'_>, report: &mut Report<'_>) {
    check_keys(top, raw::TOP, "the top level", report);
    for (key, value) in top {
        let sub = match key.get_ref().as_ref() {
            "server" => raw::SERVER,
            "tls" => raw::TLS,
            "upstream" => raw::UPSTREAM,
            "limits" => raw::LIMITS,
            "paths" => raw::PATHS,
            "geetest" => raw::GEETEST,
            "replay" => raw::REPLAY,
            "throttle" => raw::THROTTLE,
            "captcha" => {
                if let DeValue::Table(captchas) = value.get_ref() {
                    for (name, table) in captchas {
                        if let DeValue::Table(t) = table.get_ref() {
                            check_keys(
                                t,
                                raw::CAPTCHA,
                                &format!("[captcha.{}]", name.get_ref()),
                                report,
                            );
                        }
                    }
                }
                continue;
            }
            "route" => {
                if let DeValue::Array(routes) = value.get_ref() {
                    for route in routes {
                        if let DeValue::Table(t) = route.get_ref() {
                            check_keys(t, raw::ROUTE, "[[route]]", report);
                        }
                    }
                }
                continue;
            }
            _ => continue,
        };
        if let DeValue::Table(t) = value.get_ref() {
            check_keys(t, sub, &format!("[{}]", key.get_ref()), report);
        }
    }
}

fn check_keys(table: &DeTable<'_>, known: &[&str], section: &str, report: &mut Report<'_>) {
    for key in table.keys() {
        let name = key.get_ref().as_ref();
        if known.contains(&name) {
            continue;
        }
        let hint = known
            .iter()
            .map(|k| (strsim::damerau_levenshtein(name, k), *k))
            .filter(|(d, k)| *d <= (k.len() / 3).max(2))
            .min()
            .map(|(_, k)| format!("; did you mean \"{k}\"?"))
            .unwrap_or_default();
        report.at(
            key.span(),
            format!("unknown key \"{name}\" in {section}{hint}"),
        );
    }
}

// ------------------------------------------------------------------ values

struct Loader<'r, 'a> {
    report: &'r mut Report<'a>,
    base: PathBuf,
}

impl Loader<'_, '_> {
    fn config(&mut self, raw: RawConfig, path: &Path) -> Config {
        let server = self.server(&raw.server);
        let tls = self.tls(raw.tls.as_ref(), server.https.is_some());
        let upstream = self.upstream(raw.upstream.as_ref());
        let limits = self.limits(&raw.limits);
        let paths = self.paths(&raw.paths);
        let geetest = self.geetest(&raw.geetest);
        let captchas = self.captchas(&raw.captcha);
        let token_age_span = raw.geetest.max_token_age.as_ref().map(Spanned::span);
        let replay = self.replay(&raw.replay, geetest.max_token_age, token_age_span);
        let routes = self.routes(&raw.route, &captchas, geetest.on_error);
        let throttle = self.throttle(raw.throttle.as_ref());
        Config {
            source: path.to_owned(),
            server,
            tls,
            upstream,
            limits,
            paths,
            geetest,
            captchas,
            routes,
            replay,
            throttle,
            hash: String::new(),
        }
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.report.at(span, message);
    }

    fn duration(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(v) = value else { return default };
        let text = v.get_ref();
        let Bound { min, max, why } = bounds::duration(key);
        let range = || {
            format!(
                "{key} must be between {} and {}: {why}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )
        };
        let problem = match parse_duration(text) {
            Ok(d) if d.is_zero() => format!("{key} must be greater than zero"),
            Ok(d) if (min..=max).contains(&d) => return d,
            Ok(_) => format!("{key} = \"{text}\" is out of range: {}", range()),
            Err(e) if too_many_digits(text) => {
                format!("invalid duration \"{text}\" for {key}: {e}; {}", range())
            }
            Err(e) => format!(
                "invalid duration \"{text}\" for {key}: {e} (e.g. \"250ms\", \"5s\", \"15m\")"
            ),
        };
        self.error(v.span(), problem);
        default
    }

    fn size(&mut self, value: Option<&Spanned<RawSize>>, key: &str, default: u64) -> u64 {
        let Some(v) = value else { return default };
        let (parsed, shown) = match v.get_ref() {
            RawSize::Bytes(n) => (u64::try_from(*n).ok(), n.to_string()),
            // bytesize saturates at u64::MAX rather than overflow: still out of range.
            RawSize::Text(t) => (
                t.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()),
                format!("\"{t}\""),
            ),
        };
        let Bound { min, max, why } = bounds::size(key);
        let problem = match parsed {
            Some(n) if (min..=max).contains(&n) => return n,
            Some(n) if n > max => format!(
                "{key} = {shown} is out of range: {key} must be at most {}: {why}",
                format_size(max)
            ),
            _ => format!(
                "{key} must be a positive size like \"1MiB\", \"512KiB\" or a number of bytes"
            ),
        };
        self.error(v.span(), problem);
        default
    }

    fn positive(&mut self, value: Option<&Spanned<i64>>, key: &str, default: usize) -> usize {
        let Some(v) = value else { return default };
        let Bound { min, max, why } = bounds::count(key);
        let problem = match u64::try_from(*v.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => match usize::try_from(n) {
                Ok(n) => return n,
                Err(_) => format!("{key} = {n} does not fit this machine's memory"),
            },
            Ok(n) if n > max => {
                format!("{key} = {n} is out of range: {key} must be between {min} and {max}: {why}")
            }
            _ => format!("{key} must be a positive whole number"),
        };
        self.error(v.span(), problem);
        default
    }

    fn addr(&mut self, value: Option<&Spanned<String>>, key: &str) -> Option<SocketAddr> {
        let v = value?;
        match v.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(v.span(), format!("invalid address \"{}\" for {key} (expected IP:PORT, e.g. \"0.0.0.0:8443\")", v.get_ref()));
                None
            }
        }
    }

    fn one_of<T: Copy>(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(v) = value else { return default };
        match options.iter().find(|(name, _)| *name == v.get_ref()) {
            Some((_, t)) => *t,
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.error(
                    v.span(),
                    format!(
                        "{key} must be one of {}, not \"{}\"",
                        names.join(", "),
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    /// An absolute http(s) URL with nothing after the authority.
    fn base_url(&mut self, v: &Spanned<String>, key: &str) -> Option<Uri> {
        let bad = |why: &str| format!("invalid {key} \"{}\": {why}", v.get_ref());
        let uri: Uri = match v.get_ref().parse() {
            Ok(u) => u,
            Err(e) => {
                self.error(v.span(), bad(&e.to_string()));
                return None;
            }
        };
        let problem = match (
            uri.scheme_str(),
            uri.authority(),
            uri.path_and_query().map(|p| p.as_str()),
        ) {
            (Some("http" | "https"), Some(_), None | Some("/" | "")) => None,
            (Some("http" | "https"), Some(_), Some(_)) => Some("a path or query is not allowed"),
            (Some("http" | "https"), None, _) => Some("a host is required"),
            _ => Some("the scheme must be http or https"),
        };
        match problem {
            Some(why) => {
                self.error(v.span(), bad(why));
                None
            }
            None => Some(uri),
        }
    }

    fn server(&mut self, raw: &raw::RawServer) -> ServerConfig {
        let https = self.addr(raw.https.as_ref(), "server.https");
        let http = self.addr(raw.http.as_ref(), "server.http");
        let admin = self.addr(raw.admin.as_ref(), "server.admin");
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
        let workers = self.positive(raw.workers.as_ref(), "server.workers", cores);
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
            self.report
                .file("[server] needs https or http (or both): there is nothing to listen on");
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

    fn tls(&mut self, raw: Option<&Spanned<raw::RawTls>>, https: bool) -> Option<TlsFiles> {
        let Some(raw) = raw else {
            if https {
                self.report
                    .file("server.https is set but there is no [tls] section with cert and key");
            }
            return None;
        };
        if !https {
            self.error(raw.span(), "[tls] is set but server.https is not");
            return None;
        }
        let (Some(cert), Some(key)) = (&raw.get_ref().cert, &raw.get_ref().key) else {
            self.error(raw.span(), "[tls] needs both cert and key");
            return None;
        };
        let cert_path = self.base.join(cert.get_ref());
        let key_path = self.base.join(key.get_ref());
        match crate::tls::load_pem(&cert_path, &key_path) {
            Ok(_) => Some(TlsFiles {
                cert: cert_path,
                key: key_path,
            }),
            Err(e) => {
                let span = if e.is_key() { key.span() } else { cert.span() };
                self.error(span, e.to_string());
                None
            }
        }
    }

    fn upstream(&mut self, raw: Option<&Spanned<raw::RawUpstream>>) -> UpstreamConfig {
        let mut url = Uri::from_static("http://127.0.0.1");
        match raw.map(|r| (r.span(), &r.get_ref().url)) {
            None => self
                .report
                .file("[upstream] is required, with url = \"http://HOST:PORT\""),
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

    fn limits(&mut self, raw: &raw::RawLimits) -> Limits {
        let max_connections = self.positive(
            raw.max_connections.as_ref(),
            "limits.max_connections",
            10_000,
        );
        // A tenth of all places, and at least 100: a NATed office stays far
        // below either. At or above max_connections it limits nothing.
        let per_address_default = (max_connections / 10).max(100).min(max_connections);
        let max_connections_per_address = self.positive(
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
            max_gated_per_address: self.positive(
                raw.max_gated_per_address.as_ref(),
                "limits.max_gated_per_address",
                // Half the default budget at the default max_body: one
                // address cannot hold all of it.
                128,
            ),
        }
    }

    fn paths(&mut self, raw: &raw::RawPaths) -> PathRules {
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

    fn geetest(&mut self, raw: &raw::RawGeetest) -> GeetestConfig {
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
            self.positive(raw.breaker_failures.as_ref(), "geetest.breaker_failures", 5);
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

    fn throttle(&mut self, raw: Option<&Spanned<raw::RawThrottle>>) -> Option<ThrottleConfig> {
        let raw = raw?.get_ref();
        let per_second = match &raw.rate {
            None => 10.0 / 60.0,
            Some(v) => {
                let parsed = v.get_ref().split_once('/').and_then(|(n, unit)| {
                    let n: f64 = n
                        .trim()
                        .parse()
                        .ok()
                        .filter(|n: &f64| *n > 0.0 && n.is_finite())?;
                    let seconds = match unit.trim() {
                        "s" => 1.0,
                        "m" => 60.0,
                        "h" => 3600.0,
                        _ => return None,
                    };
                    Some(n / seconds)
                });
                let Bound { min, max, why } = bounds::RATE_PER_SECOND;
                match parsed {
                    Some(rate) if (min..=max).contains(&rate) => rate,
                    Some(_) => {
                        self.error(v.span(), format!("throttle.rate = \"{}\" is out of range: throttle.rate must be between 1/h and {max}/s: {why}", v.get_ref()));
                        1.0
                    }
                    None => {
                        self.error(v.span(), format!("invalid throttle.rate \"{}\" (expected N/s, N/m or N/h, e.g. \"10/m\")", v.get_ref()));
                        1.0
                    }
                }
            }
        };
        let burst = self.positive(raw.burst.as_ref(), "throttle.burst", 20);
        Some(ThrottleConfig {
            per_second,
            burst: u32::try_from(burst).unwrap_or(u32::MAX),
            max_clients: self.positive(raw.max_clients.as_ref(), "throttle.max_clients", 100_000),
        })
    }

    fn on_error(&mut self, v: Option<&Spanned<String>>, key: &str, default: OnError) -> OnError {
        self.one_of(
            v,
            key,
            &[("allow", OnError::Allow), ("deny", OnError::Deny)],
            default,
        )
    }

    fn captchas(
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
            let sources = [&c.key, &c.key_env, &c.key_file];
            let given: Vec<&Spanned<String>> = sources.iter().filter_map(|s| s.as_ref()).collect();
            let key = match (given.len(), &c.key, &c.key_env, &c.key_file) {
                (1, Some(k), _, _) => Some((k.span(), k.get_ref().clone())),
                (1, _, Some(var), _) => match std::env::var(var.get_ref()) {
                    Ok(k) if !k.is_empty() => Some((var.span(), k)),
                    _ => {
                        self.error(
                            var.span(),
                            format!(
                                "{section}.key_env: environment variable {} is not set",
                                var.get_ref()
                            ),
                        );
                        None
                    }
                },
                (1, _, _, Some(file)) => {
                    let path = self.base.join(file.get_ref());
                    match std::fs::read_to_string(&path) {
                        Ok(k) => Some((file.span(), k.trim_end().to_owned())),
                        Err(e) => {
                            self.error(
                                file.span(),
                                format!("{section}.key_file: cannot read {}: {e}", path.display()),
                            );
                            None
                        }
                    }
                }
                _ => {
                    self.error(
                        span.clone(),
                        format!("[{section}] needs exactly one of key, key_env, key_file"),
                    );
                    None
                }
            };
            let Some((key_span, key)) = key else { continue };
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
    fn replay(
        &mut self,
        raw: &raw::RawReplay,
        max_token_age: Duration,
        token_age_span: Option<Range<usize>>,
    ) -> ReplayConfig {
        let store = match &raw.store {
            None => ReplayStoreKind::Memory,
            Some(v) if v.get_ref() == "memory" => ReplayStoreKind::Memory,
            Some(v)
                if v.get_ref().starts_with("redis://") || v.get_ref().starts_with("rediss://") =>
            {
                match redis::Client::open(v.get_ref().as_str()) {
                    Ok(_) => ReplayStoreKind::Redis {
                        url: v.get_ref().clone(),
                    },
                    Err(e) => {
                        self.error(v.span(), format!("invalid replay.store URL: {e}"));
                        ReplayStoreKind::Memory
                    }
                }
            }
            Some(v) => {
                self.error(
                    v.span(),
                    "replay.store must be \"memory\" or a redis:// or rediss:// URL",
                );
                ReplayStoreKind::Memory
            }
        };
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
                None => self.report.file(message),
            }
        }
        ReplayConfig {
            store,
            ttl,
            max_entries: self.positive(raw.max_entries.as_ref(), "replay.max_entries", 1_000_000),
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

    fn routes(
        &mut self,
        raw: &[Spanned<raw::RawRoute>],
        captchas: &BTreeMap<String, Arc<Captcha>>,
        default_on_error: OnError,
    ) -> Vec<Route> {
        let mut routes: Vec<(Route, usize)> = Vec::new();
        for table in raw {
            let span = table.span();
            let line = self.report.line_of(span.start);
            let r = table.get_ref();
            let path = match (&r.path, &r.prefix) {
                (Some(p), None) => self.route_path(p).map(PathMatch::Exact),
                (None, Some(p)) => self.route_path(p).map(PathMatch::Prefix),
                _ => {
                    self.error(
                        span.clone(),
                        "[[route]] needs exactly one of path (exact) or prefix",
                    );
                    None
                }
            };
            let host = r.host.as_ref().and_then(|h| self.route_host(h));
            let methods = self.methods(r.methods.as_ref());
            let strict = r.strict.as_ref().is_some_and(|v| *v.get_ref());
            let route_captchas = self.route_captchas(r.captcha.as_ref(), captchas, span.clone());
            let on_error = self.on_error(r.on_error.as_ref(), "route.on_error", default_on_error);
            let reject_redirect = r.reject_redirect.as_ref().and_then(|v| {
                if v.get_ref().starts_with('/') {
                    Some(v.get_ref().clone())
                } else {
                    self.error(
                        v.span(),
                        "reject_redirect must be a path starting with \"/\"",
                    );
                    None
                }
            });
            let Some(path) = path else { continue };
            if route_captchas.is_empty() {
                continue;
            }
            let origin = match (&host, &path) {
                (h, PathMatch::Exact(p)) => format!("{}{p}", h.as_deref().unwrap_or("")),
                (h, PathMatch::Prefix(p)) => format!("{}{p}*", h.as_deref().unwrap_or("")),
            };
            let route = Route {
                path,
                host,
                methods,
                strict,
                captchas: route_captchas,
                on_error,
                reject_redirect,
                origin,
            };
            if let Some((_, other_line)) = routes.iter().find(|(other, _)| overlaps(other, &route))
            {
                self.error(span.clone(), format!("this route overlaps the route on line {other_line} (same path, host and a shared method)"));
                continue;
            }
            routes.push((route, line));
        }
        routes.into_iter().map(|(r, _)| r).collect()
    }

    /// A host name or address without a port: routes match the request's
    /// host without its port, so a route host with one would never match and
    /// its path would go ungated.
    fn route_host(&mut self, v: &Spanned<String>) -> Option<String> {
        match v.get_ref().parse::<http::uri::Authority>() {
            Ok(a) if a.port().is_none() && a.as_str() == a.host() => {
                Some(a.host().to_ascii_lowercase())
            }
            Ok(a) if a.port().is_some() => {
                self.error(
                    v.span(),
                    format!(
                        "route host \"{}\" must not include a port (use \"{}\")",
                        v.get_ref(),
                        a.host()
                    ),
                );
                None
            }
            _ => {
                self.error(v.span(), format!("invalid route host \"{}\"", v.get_ref()));
                None
            }
        }
    }

    /// A route path must be in the normal form requests are routed in, or
    /// it could never match.
    fn route_path(&mut self, v: &Spanned<String>) -> Option<String> {
        let written = v.get_ref();
        match NormalPath::new(written, PathRules::default()) {
            Ok(normal) if *normal.path == **written => Some(written.clone()),
            Ok(normal) => {
                self.error(
                    v.span(),
                    format!(
                        "route path \"{written}\" is not in normal form; requests are routed as \"{}\"",
                        normal.path
                    ),
                );
                None
            }
            Err(e) => {
                self.error(v.span(), format!("route path \"{written}\": {e}"));
                None
            }
        }
    }

    fn methods(&mut self, raw: Option<&Spanned<Vec<Spanned<String>>>>) -> Methods {
        let Some(list) = raw else {
            return Methods::Unsafe;
        };
        if list.get_ref().is_empty() {
            self.error(list.span(), "methods must not be empty");
            return Methods::Unsafe;
        }
        let mut out = Vec::new();
        for m in list.get_ref() {
            let text = m.get_ref();
            let valid =
                !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
            match Method::from_bytes(text.as_bytes()) {
                Ok(method) if valid => out.push(method),
                _ => self.error(
                    m.span(),
                    format!("invalid HTTP method \"{text}\" (use upper case, e.g. \"POST\")"),
                ),
            }
        }
        Methods::Listed(out)
    }

    fn route_captchas(
        &mut self,
        raw: Option<&Spanned<OneOrMany>>,
        captchas: &BTreeMap<String, Arc<Captcha>>,
        route_span: Range<usize>,
    ) -> Vec<Arc<Captcha>> {
        let Some(raw) = raw else {
            return match captchas.len() {
                1 => captchas.values().cloned().collect(),
                0 => {
                    self.error(route_span, "this route needs a GeeTest credential, but there is no [captcha.NAME] section");
                    Vec::new()
                }
                _ => {
                    self.error(
                        route_span,
                        "several [captcha.*] sections exist: name one with captcha = \"NAME\"",
                    );
                    Vec::new()
                }
            };
        };
        let names: Vec<&String> = match raw.get_ref() {
            OneOrMany::One(n) => vec![n],
            OneOrMany::Many(list) => list.iter().collect(),
        };
        if names.is_empty() {
            self.error(raw.span(), "captcha must name at least one [captcha.NAME]");
        }
        let mut out = Vec::new();
        for name in names {
            match captchas.get(name.as_str()) {
                Some(c) => out.push(c.clone()),
                None => {
                    let hint = captchas
                        .keys()
                        .map(|k| (strsim::damerau_levenshtein(name, k), k))
                        .filter(|(d, _)| *d <= 2)
                        .min()
                        .map(|(_, k)| format!("; did you mean \"{k}\"?"))
                        .unwrap_or_default();
                    self.error(
                        raw.span(),
                        format!("unknown captcha \"{name}\" (no [captcha.{name}] section){hint}"),
                    );
                }
            }
        }
        out
    }
}

fn overlaps(a: &Route, b: &Route) -> bool {
    let shared_method = match (&a.methods, &b.methods) {
        (Methods::Listed(x), other) | (other, Methods::Listed(x)) => {
            x.iter().any(|m| other.contains(m))
        }
        (Methods::Unsafe, Methods::Unsafe) => true,
    };
    a.path == b.path && a.host == b.host && shared_method
}
