// Long: one registration per metric, each with its help text.
//! Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! Every label value is bounded: routes come from the config, methods outside
//! the standard set are reported as `OTHER`, statuses are three digits, and
//! outcomes and error kinds are fixed words. A client cannot grow this memory.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gatekeeper_requests_total` | counter | route, method, status |
//! | `gatekeeper_request_duration_seconds` | histogram | route |
//! | `gatekeeper_gate_decisions_total` | counter | route, outcome |
//! | `gatekeeper_validate_duration_seconds` | histogram | |
//! | `gatekeeper_validate_failures_total` | counter | kind |
//! | `gatekeeper_upstream_duration_seconds` | histogram | |
//! | `gatekeeper_upstream_errors_total` | counter | kind |
//! | `gatekeeper_replay_entries` | gauge | |
//! | `gatekeeper_replay_store_errors_total` | counter | |
//! | `gatekeeper_throttle_store_errors_total` | counter | |
//! | `gatekeeper_acme_orders_total` | counter | result |
//! | `gatekeeper_open_connections` | gauge | listener, protocol |
//! | `gatekeeper_tls_handshake_failures_total` | counter | |
//! | `gatekeeper_config_reloads_total` | counter | result |
//! | `gatekeeper_config_info` | gauge (1) | hash |
//! | `gatekeeper_buffered_body_bytes` | gauge | |
//! | `gatekeeper_challenges_total` | counter | outcome |
//! | `gatekeeper_kept_requests` | gauge | |
//! | `gatekeeper_injections_total` | counter | outcome |
//! | `gatekeeper_kept_request_bytes` | gauge | |
//! | `gatekeeper_connections_refused_total` | counter | kind |
//! | `gatekeeper_build_info` | gauge (1) | version, commit |
//! | `gatekeeper_config_last_reload_success_timestamp_seconds` | gauge | |
//! | `process_*` (CPU, memory, threads, fds, start time) | | |

mod process;

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Borrowed for ungated requests ("-"): most requests allocate nothing here.
    pub route: Cow<'static, str>,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Borrowed for ungated requests ("-").
    pub route: Cow<'static, str>,
}

/// Builds each route's latency histogram: 1 ms to ~16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub route: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub listener: &'static str,
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabels {
    pub hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub validate_seconds: Histogram,
    pub validate_failures: Family<KindLabels, Counter>,
    pub upstream_seconds: Histogram,
    pub upstream_errors: Family<KindLabels, Counter>,
    pub replay_entries: Gauge,
    pub replay_store_errors: Counter,
    pub throttle_store_errors: Counter,
    pub acme_orders: Family<ResultLabels, Counter>,
    pub open_connections: Family<ConnectionLabels, Gauge>,
    pub tls_handshake_failures: Counter,
    pub reloads: Family<ResultLabels, Counter>,
    pub config_info: Family<HashLabels, Gauge>,
    /// Bytes of gated bodies reserved from `limits.max_buffered_bodies`.
    pub buffered_body_bytes: Gauge,
    pub connections_refused: Family<KindLabels, Counter>,
    /// Challenge pages shown, proofs passed or refused on release, ids
    /// expired (or unbound), and keeps refused because the store was full.
    pub challenges: Family<OutcomeLabels, Counter>,
    pub injections: Family<OutcomeLabels, Counter>,
    /// The kept-request store's size, set whenever it changes here.
    pub kept_requests: Gauge,
    pub kept_request_bytes: Gauge,
    pub build_info: Family<BuildLabels, Gauge>,
    /// Seconds since the epoch of the start, then of each successful reload.
    pub last_reload_success: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // process_* carry no prefix, as in every Prometheus client library.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("gatekeeper");
        let m = Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            decisions: Family::default(),
            validate_seconds: latency_histogram(),
            validate_failures: Family::default(),
            upstream_seconds: latency_histogram(),
            upstream_errors: Family::default(),
            replay_entries: Gauge::default(),
            replay_store_errors: Counter::default(),
            throttle_store_errors: Counter::default(),
            acme_orders: Family::default(),
            open_connections: Family::default(),
            tls_handshake_failures: Counter::default(),
            reloads: Family::default(),
            config_info: Family::default(),
            buffered_body_bytes: Gauge::default(),
            connections_refused: Family::default(),
            challenges: Family::default(),
            injections: Family::default(),
            kept_requests: Gauge::default(),
            kept_request_bytes: Gauge::default(),
            build_info: Family::default(),
            last_reload_success: Gauge::default(),
            registry: Registry::default(),
        };
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("GATEKEEPER_COMMIT"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: version and git commit (value 1)",
            m.build_info.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (start or reload), in seconds since the epoch",
            m.last_reload_success.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by route (\"-\" when ungated), method and status",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to its answer's head, by route (\"-\" when ungated)",
            m.request_seconds.clone(),
        );
        registry.register(
            "gate_decisions",
            "Gate decisions by route and outcome (pass, fail-open, cancelled, or the refusal's error code)",
            m.decisions.clone(),
        );
        registry.register(
            "validate_duration_seconds",
            "Time for GeeTest's validate API to answer",
            m.validate_seconds.clone(),
        );
        registry.register(
            "validate_failures",
            "Validate calls that got no verdict, by kind (timeout, transport, status, unparsable)",
            m.validate_failures.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time until the upstream's response head",
            m.upstream_seconds.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures by kind (timeout, unreachable)",
            m.upstream_errors.clone(),
        );
        registry.register(
            "replay_entries",
            "lot_numbers held in this instance's memory store",
            m.replay_entries.clone(),
        );
        registry.register(
            "replay_store_errors",
            "Operations the shared (Redis) replay store failed",
            m.replay_store_errors.clone(),
        );
        registry.register(
            "throttle_store_errors",
            "Operations the shared (Redis) throttle store failed",
            m.throttle_store_errors.clone(),
        );
        registry.register(
            "acme_orders",
            "ACME certificate orders ([tls.acme]) by result",
            m.acme_orders.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open, by listener and protocol",
            m.open_connections.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result (success, failure)",
            m.reloads.clone(),
        );
        registry.register(
            "config_info",
            "The loaded configuration's hash (value 1)",
            m.config_info.clone(),
        );
        registry.register(
            "buffered_body_bytes",
            "Bytes of gated request bodies held against limits.max_buffered_bodies",
            m.buffered_body_bytes.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at accept, by kind (per_address)",
            m.connections_refused.clone(),
        );
        registry.register(
            "challenges",
            "Challenges by outcome (shown, passed, refused, expired, full)",
            m.challenges.clone(),
        );
        registry.register(
            "injections",
            "Pages of the app rewritten by [[inject]], by outcome (injected; unmatched: no form matched; skipped: compressed or not text that can be rewritten; bailed_out: passed through from a tag too large)",
            m.injections.clone(),
        );
        registry.register(
            "kept_requests",
            "Requests kept for their captcha",
            m.kept_requests.clone(),
        );
        registry.register(
            "kept_request_bytes",
            "Bytes of the requests kept for their captcha",
            m.kept_request_bytes.clone(),
        );
        Self {
            registry: root,
            ..m
        }
    }

    /// The text exposition (OpenMetrics), as served at `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn request(&self, route: Option<&str>, method: &Method, status: u16, took: Duration) {
        let route = route.map_or(Cow::Borrowed("-"), |r| Cow::Owned(r.to_owned()));
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        let labels = RequestLabels {
            route,
            method: method_label(method),
            status,
        };
        self.requests.get_or_create(&labels).inc();
    }

    pub fn challenge(&self, outcome: &'static str) {
        self.challenges
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn injection(&self, outcome: &'static str) {
        self.injections
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn decision(&self, route: &str, outcome: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                route: route.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Records a configuration taken: its hash, and the time.
    pub fn set_config_hash(&self, hash: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_reload_success.set(now.as_secs_f64());
        self.config_info.clear();
        self.config_info
            .get_or_create(&HashLabels {
                hash: hash.to_owned(),
            })
            .set(1);
    }

    pub fn observe(histogram: &Histogram, elapsed: Duration) {
        histogram.observe(elapsed.as_secs_f64());
    }
}

/// Methods outside the standard set share one label, so clients cannot
/// create label values.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_metric_is_exposed_and_methods_are_bounded() {
        let m = Metrics::new();
        m.request(
            None,
            &Method::from_bytes(b"BREW").expect("method"),
            200,
            Duration::from_millis(3),
        );
        m.decision("/login", "pass");
        // Families appear once they have a sample.
        m.validate_failures
            .get_or_create(&KindLabels { kind: "timeout" })
            .inc();
        m.upstream_errors
            .get_or_create(&KindLabels { kind: "timeout" })
            .inc();
        m.open_connections
            .get_or_create(&ConnectionLabels {
                listener: "https",
                protocol: "h2",
            })
            .inc();
        m.reloads
            .get_or_create(&ResultLabels { result: "success" })
            .inc();
        m.set_config_hash("abc");
        m.connections_refused
            .get_or_create(&KindLabels {
                kind: "per_address",
            })
            .inc();
        let text = m.render();
        let build = format!(
            r#"gatekeeper_build_info{{version="{}",commit="{}"}} 1"#,
            env!("CARGO_PKG_VERSION"),
            env!("GATEKEEPER_COMMIT")
        );
        assert!(text.contains(&build), "{text}");
        let reloaded = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("gatekeeper_config_last_reload_success_timestamp_seconds ")
            })
            .and_then(|v| v.parse::<f64>().ok());
        assert!(reloaded.is_some_and(|t| t > 1.7e9), "{text}");
        // CPU time may still read 0 in a fresh process; the rest cannot.
        #[cfg(target_os = "linux")]
        for (name, least) in [
            ("process_cpu_seconds_total", 0.0),
            ("process_resident_memory_bytes", 1.0),
            ("process_open_fds", 1.0),
            ("process_start_time_seconds", 1.7e9),
        ] {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse::<f64>().ok());
            assert!(
                value.is_some_and(|v| v >= least),
                "{name} missing or too small:\n{text}"
            );
        }
        assert!(
            text.contains(r#"gatekeeper_requests_total{route="-",method="OTHER",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gatekeeper_gate_decisions_total{route="/login",outcome="pass"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gatekeeper_request_duration_seconds_bucket{le="0.004",route="-"} 1"#)
                || text.contains(
                    r#"gatekeeper_request_duration_seconds_bucket{route="-",le="0.004"} 1"#
                ),
            "{text}"
        );
        for name in [
            "validate_duration_seconds",
            "validate_failures",
            "upstream_duration_seconds",
            "upstream_errors",
            "replay_entries",
            "replay_store_errors",
            "throttle_store_errors",
            "open_connections",
            "tls_handshake_failures",
            "config_reloads",
            "config_info",
            "buffered_body_bytes",
            "connections_refused",
            "build_info",
            "config_last_reload_success_timestamp_seconds",
        ] {
            assert!(
                text.contains(&format!("# HELP gatekeeper_{name}")),
                "{name} missing:\n{text}"
            );
        }
    }
}
