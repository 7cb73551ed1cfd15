//! One request, start to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{ACCEPT, HOST, HeaderValue, REFERER, USER_AGENT};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::Either;
use hyper::body::Incoming;
use ipnet::IpNet;
use tracing::{Instrument, debug, info_span, warn};

use super::body::ProxyBody;
use super::challenge::Challenges;
use super::counted::{Counted, Tallied, Tally};
use super::headers::drop_underscored;
use super::headers::forwarding::{client_addr, is_trusted, peer_header, set_forwarding_headers};
use super::headers::framing;
use super::headers::hop::strip_hop_by_hop;
use super::request_line::RequestLine;
use super::response::refused_closing;
use super::target::{Target, canonical_target, join_cookies};
use super::upstream::{Upstream, UpstreamError};
use super::websocket::{self, mark_websocket_upgrade};
use crate::challenge::{KeptStore, RESERVED_PREFIX, is_navigation};
use crate::config::{Config, Route};
use crate::gate::{Decision, Gate};
use crate::http_common::{X_GATEKEEPER_CAPTCHA, X_REQUEST_ID, origin_of};
use crate::inject::{InjectPage, Injector};
use crate::metrics::{KindLabels, Metrics};
use crate::normal_path::PathRules;
use crate::refusal::{Audience, Refusal};
use crate::routing::RouteTable;

/// What the connection knows about where a request came from.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The scheme the client used to reach gatekeeper: `"https"` or `"http"`.
    pub scheme: &'static str,
    /// The peer's address as X-Forwarded-For text.
    peer_header: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, scheme: &'static str) -> Self {
        Self {
            peer,
            scheme,
            peer_header: peer_header(peer.ip()),
        }
    }
}

/// Everything a request needs, built once per loaded configuration.
#[derive(Debug)]
pub struct Proxy {
    pub(super) routes: RouteTable,
    pub(super) path_rules: PathRules,
    upstream: Upstream,
    pub(super) gate: Gate,
    pub(super) challenges: Challenges,
    pub(super) injector: Injector,
    pub(super) trusted_proxies: Vec<IpNet>,
    /// `[pages] refusal`, else the default page.
    refusal_page: Option<Arc<str>>,
    metrics: Arc<Metrics>,
}

/// What may happen to the app's answer besides streaming it back: a
/// WebSocket both sides agreed to, or an `[[inject]]` page's rewrite.
#[derive(Default)]
pub(super) struct AnswerHandling<'a> {
    pub(super) upgrade: Option<websocket::Pending>,
    pub(super) inject: Option<&'a Arc<InjectPage>>,
}

/// What a request learned along the way, for its log line and metrics.
#[derive(Default)]
pub(super) struct LogFields<'a> {
    pub(super) route: Option<&'a str>,
    upstream_ms: Option<u64>,
    /// The bytes of the request body read, by the gate or for the upstream.
    uploaded: Option<Tally>,
}

impl Proxy {
    pub fn new(
        config: &Config,
        gate: Gate,
        kept: Arc<dyn KeptStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            challenges: Challenges::new(config, kept, metrics.clone()),
            injector: Injector::new(
                config,
                config.geetest.api_servers.first().and_then(origin_of),
                metrics.clone(),
            ),
            routes: RouteTable::new(config.routes.clone()),
            path_rules: config.paths,
            upstream: Upstream::new(
                &config.upstream,
                config.limits.idle_timeout,
                config.limits.body_idle_timeout,
                config.server.workers,
            ),
            gate,
            trusted_proxies: config.server.trusted_proxies.clone(),
            refusal_page: config.pages.refusal.clone(),
            metrics,
        }
    }

    /// Answers one request; never fails (every failure is an HTTP answer).
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<Counted<ProxyBody>> {
        let started = Instant::now();
        let request_id = self.request_id(&req, &conn);
        // The upstream gets the same id the logs carry.
        req.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        let span = info_span!("request", id = %request_id.to_str().unwrap_or("-"));
        async move {
            let method = req.method().clone();
            // For the log line; a Uri and header values clone by reference count.
            let uri = req.uri().clone();
            let version = req.version();
            let host = req.headers().get(HOST).cloned();
            let user_agent = req.headers().get(USER_AGENT).cloned();
            // A declared length, for a body nothing reads (a refused request).
            let bytes_in = req.body().size_hint().exact();
            let mut log = LogFields::default();
            let resp = match framing::judge(&mut req) {
                Ok(()) => self.route_and_forward(req, &conn, &mut log).await,
                Err(e) => refused_closing(&Refusal::BadRequest(e.0.into())),
            };
            // HTTP/2 would send gatekeeper's own answer's body to a HEAD.
            let resp = if method == Method::HEAD {
                resp.map(|body| match body {
                    Either::Right(_) => super::body::empty(),
                    streamed => streamed,
                })
            } else {
                resp
            };
            let status = resp.status().as_u16();
            self.metrics
                .request(log.route, &method, status, started.elapsed());
            let line = RequestLine {
                request_id,
                method,
                host,
                uri,
                version,
                status,
                route: log.route.map(str::to_owned),
                bytes_in,
                uploaded: log.uploaded,
                upstream_ms: log.upstream_ms,
                started,
                peer: conn.peer.ip(),
                user_agent,
                span: tracing::Span::current(),
            };
            // Logged when the answer's body has ended, or the client left:
            // only then are the bytes each way known.
            resp.map(|body| Counted::new(body, line))
        }
        .instrument(span)
        .await
    }

    /// A trusted proxy's `X-Request-Id` is kept (if it is a sane token);
    /// otherwise a new one is made.
    fn request_id<B>(&self, req: &Request<B>, conn: &ConnInfo) -> HeaderValue {
        let trusted = is_trusted(conn.peer.ip(), &self.trusted_proxies);
        let given = req.headers().get(&X_REQUEST_ID).filter(|v| {
            trusted
                && (1..=128).contains(&v.len())
                && v.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
        match given {
            Some(v) => v.clone(),
            None => {
                let id: [u8; 16] = rand::random();
                let mut text = [0u8; 32];
                // Hex digits are always a valid header value.
                hex::encode_to_slice(id, &mut text)
                    .ok()
                    .and_then(|()| HeaderValue::from_bytes(&text).ok())
                    .unwrap_or_else(|| HeaderValue::from_static("-"))
            }
        }
    }

    async fn route_and_forward<'s>(
        &'s self,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
        log: &mut LogFields<'s>,
    ) -> Response<ProxyBody> {
        drop_underscored(req.headers_mut());
        let Target {
            authority,
            path,
            methods,
            normalised_uri,
        } = match canonical_target(&mut req, self.path_rules) {
            Ok(target) => target,
            Err(reason) => return refused_closing(&Refusal::BadRequest(reason.into())),
        };
        if path.path.starts_with(RESERVED_PREFIX) {
            let reserved = path.path.to_string();
            return self
                .reserved(req, &reserved, conn, authority.as_ref(), log)
                .await;
        }
        let route = self
            .routes
            .find(authority.as_ref().map(Authority::host), &path, &methods);
        log.route = route.map(|r| r.origin.as_str());
        let inject = self
            .injector
            .page(authority.as_ref().map(Authority::host), &path);
        if let Some(normal) = normalised_uri {
            *req.uri_mut() = normal;
        }
        if req.version() == Version::HTTP_2 {
            join_cookies(req.headers_mut());
        }

        // Only gatekeeper states this header, on every route.
        req.headers_mut().remove(X_GATEKEEPER_CAPTCHA);
        // A gated request is forwarded without its upgrade.
        let upgrade = websocket::Pending::take(&mut req).filter(|_| route.is_none());
        // The client's hop-by-hop headers go before gatekeeper adds its own.
        strip_hop_by_hop(req.headers_mut());

        let req = match route {
            Some(route) => {
                let client = client_addr(conn.peer.ip(), req.headers(), &self.trusted_proxies);
                let tally = log.uploaded.insert(Tally::default()).clone();
                let req = req.map(|body| Tallied::new(body, tally));
                // Boxed: the gate's state is large, and unboxed it would make every
                // request's future (moved into place per request) as large.
                match Box::pin(self.gate.admit(route, req, client)).await {
                    Decision::Admitted(admitted) => admitted.map(Either::Right),
                    Decision::Unproven {
                        parts,
                        body,
                        refusal: _,
                        audience,
                    } if route.challenge && is_navigation(&parts.headers) => {
                        let https = conn.scheme == "https";
                        return self
                            .challenges
                            .keep(route, parts, body, audience, https)
                            .await;
                    }
                    Decision::Refused { refusal, audience }
                    | Decision::Unproven {
                        refusal, audience, ..
                    } => {
                        let redirect = route.reject_redirect.as_deref();
                        let page = self.refusal_page.as_deref();
                        return refusal
                            .to_response(&audience, redirect, page)
                            .map(Either::Right);
                    }
                }
            }
            None => {
                let tally = log.uploaded.insert(Tally::default()).clone();
                req.map(|body| super::body::streamed(body, tally))
            }
        };
        let answer = AnswerHandling { upgrade, inject };
        self.forward(req, conn, authority.as_ref(), answer, route, log)
            .await
    }

    /// Sends a request on, as any forwarded request is (X-Forwarded-*, an
    /// upgrade only if both sides agree), and streams the answer back.
    pub(super) async fn forward<'s>(
        &'s self,
        mut req: Request<ProxyBody>,
        conn: &ConnInfo,
        authority: Option<&Authority>,
        answer: AnswerHandling<'_>,
        route: Option<&'s Route>,
        log: &mut LogFields<'s>,
    ) -> Response<ProxyBody> {
        let AnswerHandling { upgrade, inject } = answer;
        self.rewrite_request_headers(&mut req, conn, authority, upgrade.is_some());
        // Only an injected page's method is needed after the request is sent.
        let inject = inject.map(|page| {
            page.ask_whole(req.headers_mut());
            (page, req.method().clone())
        });
        // What a page for a person needs, should the app fail: shared
        // header values, cloned by reference count.
        let asked = Asked {
            method: req.method().clone(),
            accept: req.headers().get(ACCEPT).cloned(),
            referer: req.headers().get(REFERER).cloned(),
            request_id: req.headers().get(X_REQUEST_ID).cloned(),
        };
        let upstream_started = Instant::now();
        let result = self.upstream.send(req).await;
        let upstream_time = upstream_started.elapsed();
        Metrics::observe(&self.metrics.upstream_seconds, upstream_time);
        log.upstream_ms = Some(upstream_time.as_millis() as u64);
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                if e.is_upstream_fault() {
                    self.metrics
                        .upstream_errors
                        .get_or_create(&KindLabels { kind: e.kind() })
                        .inc();
                }
                return self.upstream_failure(e, route, asked, authority);
            }
        };

        // Any other answer leaves the connection HTTP/1.1, inspected as before.
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switched && let Err(reason) = websocket::open(upgrade, &mut resp) {
            self.metrics
                .upstream_errors
                .get_or_create(&KindLabels {
                    kind: "bad_upgrade",
                })
                .inc();
            warn!(
                route = log.route.unwrap_or("-"),
                reason, "upstream switched protocols without a websocket handshake"
            );
            return refused_closing(&Refusal::UpstreamBadUpgrade(reason));
        }
        strip_hop_by_hop(resp.headers_mut());
        if switched {
            mark_websocket_upgrade(resp.headers_mut());
            return resp.map(ProxyBody::Left);
        }
        let status = resp.status();
        let rewriter =
            inject.and_then(|(page, method)| page.rewriter(&method, status, resp.headers_mut()));
        match rewriter {
            Some(rewriter) => resp.map(|body| ProxyBody::Left(body.rewritten(rewriter))),
            None => resp.map(ProxyBody::Left),
        }
    }

    fn rewrite_request_headers(
        &self,
        req: &mut Request<ProxyBody>,
        conn: &ConnInfo,
        authority: Option<&Authority>,
        websocket: bool,
    ) {
        let headers = req.headers_mut();
        if websocket {
            mark_websocket_upgrade(headers);
        }
        // Usually the Host header itself, shared rather than copied.
        let authority = authority.and_then(|a| match headers.get(HOST) {
            Some(v) if v.as_bytes() == a.as_str().as_bytes() => Some(v.clone()),
            _ => HeaderValue::from_str(a.as_str()).ok(),
        });
        set_forwarding_headers(
            headers,
            conn.peer.ip(),
            &conn.peer_header,
            &self.trusted_proxies,
            conn.scheme,
            authority.clone(),
        );
        // HTTP/2 carries the host in :authority; the upstream speaks HTTP/1.1
        // and gets it as Host (RFC 9113 §8.3.1). An HTTP/1 Host is kept as sent.
        if !headers.contains_key(HOST)
            && let Some(v) = authority
        {
            headers.insert(HOST, v);
        }
    }
}

/// The parts of a forwarded request its failure page needs.
struct Asked {
    method: Method,
    accept: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
}

impl Proxy {
    /// The app failed: a person gets the page (the operator's, if any), a
    /// program the JSON, as for any refusal. A client's own body failing is
    /// answered on a connection that then closes.
    fn upstream_failure(
        &self,
        e: UpstreamError,
        route: Option<&Route>,
        asked: Asked,
        authority: Option<&Authority>,
    ) -> Response<ProxyBody> {
        let route = route.map(|r| r.origin.as_str()).unwrap_or("-");
        let refusal = match e {
            UpstreamError::Timeout(_) => {
                crate::logging::throttled!(warn!(route, error = %e, "upstream timeout"));
                Refusal::UpstreamTimeout
            }
            UpstreamError::Unreachable(_) => {
                crate::logging::throttled!(warn!(route, error = %e, "upstream unreachable"));
                Refusal::UpstreamUnavailable
            }
            // The client's faults: nothing more of this connection can be read.
            UpstreamError::ClientBody => {
                debug!(route, "client's request body could not be read");
                return refused_closing(&Refusal::BodyUnreadable);
            }
            UpstreamError::BodyStalled(_) => {
                debug!(route, "client's request body stalled");
                return refused_closing(&Refusal::BodyTimeout);
            }
        };
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (ACCEPT, asked.accept),
            (REFERER, asked.referer),
            (X_REQUEST_ID, asked.request_id),
        ] {
            if let Some(value) = value {
                headers.insert(name, value);
            }
        }
        if let Some(host) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            headers.insert(HOST, host);
        }
        let audience = Audience::of(&asked.method, &headers);
        refusal
            .to_response(&audience, None, self.refusal_page.as_deref())
            .map(Either::Right)
    }
}
