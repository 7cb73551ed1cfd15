//! The challenge that keeps a browser's request, in the request path (the
//! protocol is `crate::challenge`'s): an unproven navigation is kept and
//! answered with the page, and gatekeeper answers its own paths under the
//! reserved prefix itself: the page's script, and the release that runs the
//! gate's checks on the proof and forwards the kept request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, HeaderValue,
    IF_NONE_MATCH, REFERER, SET_COOKIE,
};
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Limited};
use hyper::body::Incoming;

use super::body::{self, ProxyBody};
use super::handler::{AnswerHandling, ConnInfo, LogFields, Proxy};
use super::headers::forwarding::client_addr;
use super::response::{refused, refused_closing};
use crate::challenge::{
    Binding, ChallengeId, ID_FIELD, KeepError, KeptRequest, KeptStore, Language, Page, Pages,
    RELEASE_PATH, SCRIPT, SCRIPT_PATH, script_etag,
};
use crate::config::{Config, Route};
use crate::gate::Decision;
use crate::http_common::{X_REQUEST_ID, frame_passed, whole_body};
use crate::inject;
use crate::metrics::Metrics;
use crate::normal_path::NormalPath;
use crate::refusal::{Audience, Refusal};
use crate::routing::RequestMethods;

/// A release form is an id and five short fields: far below this.
const MAX_RELEASE_BODY: usize = 16 * 1024;

/// The kept-request store and what the pages and cookies need.
#[derive(Debug)]
pub struct Challenges {
    store: Arc<dyn KeptStore>,
    binding: Binding,
    pages: Pages,
    /// `[pages] refusal`, else the default page.
    refusal_page: Option<Arc<str>>,
    /// For the release form's body, as for a gated body.
    body_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Challenges {
    pub fn new(config: &Config, store: Arc<dyn KeptStore>, metrics: Arc<Metrics>) -> Self {
        // The widget talks to GeeTest's API (or the simulator): the page's CSP allows it.
        let api_origin = config
            .geetest
            .api_servers
            .first()
            .map(Uri::to_string)
            .unwrap_or_default();
        Self {
            store,
            binding: Binding::new(
                config.captchas.values().map(|c| c.as_ref()),
                config.challenge.ttl,
            ),
            pages: Pages::new(&config.challenge, &api_origin)
                .prepared_for(config.captchas.values().map(|c| c.id.as_str()))
                .with_expired_template(config.pages.expired.clone()),
            refusal_page: config.pages.refusal.clone(),
            body_timeout: config.limits.header_read_timeout,
            metrics,
        }
    }

    /// Keeps an unproven navigation and answers with the challenge page;
    /// `audience` (read by the gate, with the request id a refusal page
    /// shows) is for the refusal if it cannot be kept.
    pub(super) async fn keep(
        &self,
        route: &Route,
        mut parts: Parts,
        body: Bytes,
        audience: Audience,
        https: bool,
    ) -> Response<ProxyBody> {
        // The release's own id is set when the request is finally forwarded.
        parts.headers.remove(X_REQUEST_ID);
        let lang = Language::from_headers(&parts.headers);
        let kept = KeptRequest {
            method: parts.method,
            target: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            headers: parts.headers,
            body,
        };
        match self.store.keep(kept).await {
            Ok(id) => {
                self.metrics.challenge("shown");
                let captcha_id = route.captchas.first().map_or("", |c| c.id.as_str());
                let page = self.pages.challenge(lang, captcha_id, id, false);
                let mut resp = page_response(StatusCode::FORBIDDEN, page);
                resp.headers_mut()
                    .insert(SET_COOKIE, self.binding.set_cookie(id, https));
                resp
            }
            Err(e) => {
                if matches!(e, KeepError::Full { .. }) {
                    self.metrics.challenge("full");
                }
                tracing::warn!(error = %e, "cannot keep a request for its captcha");
                Refusal::CaptchaUnavailable(e.reason())
                    .to_response(&audience, None, self.refusal_page.as_deref())
                    .map(Either::Right)
            }
        }
    }

    fn expired(
        &self,
        status: StatusCode,
        lang: Language,
        headers: &HeaderMap,
    ) -> Response<ProxyBody> {
        self.metrics.challenge("expired");
        let back = headers
            .get(REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Uri>().ok());
        let back = back
            .as_ref()
            .and_then(Uri::path_and_query)
            .map(|p| p.as_str());
        page_response(status, self.pages.expired(lang, back))
    }
}

impl Proxy {
    /// Answers a path under the reserved prefix; nothing here is forwarded
    /// but a released request.
    pub(super) async fn reserved<'s>(
        &'s self,
        req: Request<Incoming>,
        path: &str,
        conn: &ConnInfo,
        authority: Option<&Authority>,
        log: &mut LogFields<'s>,
    ) -> Response<ProxyBody> {
        match (path, req.method()) {
            (SCRIPT_PATH, &Method::GET | &Method::HEAD) => script(&req, SCRIPT, script_etag()),
            (inject::SCRIPT_PATH, &Method::GET | &Method::HEAD) => {
                script(&req, inject::SCRIPT, inject::script_etag())
            }
            (SCRIPT_PATH | inject::SCRIPT_PATH, _) => not_allowed("GET, HEAD"),
            (RELEASE_PATH, &Method::POST) => self.release(req, conn, authority, log).await,
            (RELEASE_PATH, _) => not_allowed("POST"),
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn release<'s>(
        &'s self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        authority: Option<&Authority>,
        log: &mut LogFields<'s>,
    ) -> Response<ProxyBody> {
        let challenges = &self.challenges;
        let https = conn.scheme == "https";
        let (mut parts, incoming) = req.into_parts();
        let lang = Language::from_headers(&parts.headers);
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = Refusal::BodyTooLarge {
            max_body: MAX_RELEASE_BODY as u64,
        };
        if declared.is_some_and(|len| len > MAX_RELEASE_BODY as u64) {
            return refused_closing(&too_large);
        }
        let read = Limited::new(incoming, MAX_RELEASE_BODY).collect();
        let form = match tokio::time::timeout(challenges.body_timeout, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return refused_closing(&too_large);
            }
            Ok(Err(_)) => return refused_closing(&Refusal::BodyUnreadable),
            Err(_) => return refused_closing(&Refusal::BodyTimeout),
        };
        let id = form_urlencoded::parse(&form)
            .find(|(name, _)| name == ID_FIELD)
            .and_then(|(_, value)| ChallengeId::parse(&value));
        let Some(id) = id else {
            return challenges.expired(StatusCode::GONE, lang, &parts.headers);
        };
        if !challenges.binding.verify(id, &parts.headers, https) {
            return challenges.expired(StatusCode::FORBIDDEN, lang, &parts.headers);
        }
        let kept = match challenges.store.peek(id).await {
            Ok(Some(kept)) => kept,
            Ok(None) => return challenges.expired(StatusCode::GONE, lang, &parts.headers),
            Err(e) => return store_failure(&e),
        };
        let Some(route) = self.route_of(&kept, authority) else {
            // The configuration changed: nothing here gates that request any more.
            return challenges.expired(StatusCode::GONE, lang, &parts.headers);
        };
        log.route = Some(route.origin.as_str());

        // The gate's own checks, on a request whose body is the release form.
        let mut proof = Request::new(whole_body(form));
        *proof.method_mut() = Method::POST;
        *proof.uri_mut() = Uri::from_static(RELEASE_PATH);
        *proof.extensions_mut() = std::mem::take(&mut parts.extensions);
        let headers = proof.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let client = client_addr(conn.peer.ip(), &parts.headers, &self.trusted_proxies);
        let refusal = match Box::pin(self.gate.admit(route, proof, client)).await {
            Decision::Admitted(_) => None,
            Decision::Refused { refusal, .. } | Decision::Unproven { refusal, .. } => Some(refusal),
        };
        if let Some(refusal) = refusal {
            challenges.metrics.challenge("refused");
            if !refusal.is_client_fault() {
                // GeeTest or the store is down, or the address is throttled:
                // said as for any browser; the request stays kept.
                let audience = Audience::of(&Method::GET, &parts.headers);
                let page = challenges.refusal_page.as_deref();
                return refusal
                    .to_response(&audience, None, page)
                    .map(Either::Right);
            }
            let captcha_id = route.captchas.first().map_or("", |c| c.id.as_str());
            let page = challenges.pages.challenge(lang, captcha_id, id, true);
            return page_response(StatusCode::FORBIDDEN, page);
        }

        let kept = match challenges.store.take(id).await {
            Ok(Some(kept)) => kept,
            // Another release of the same id won.
            Ok(None) => return challenges.expired(StatusCode::GONE, lang, &parts.headers),
            Err(e) => return store_failure(&e),
        };
        challenges.metrics.challenge("passed");
        let KeptRequest {
            method,
            target,
            headers,
            body: kept_body,
        } = kept;
        let body_len = kept_body.len();
        // A form the app answers with again (a failed login, say) gets the
        // widget as it would after a plain post.
        let inject = NormalPath::new(target.path(), self.path_rules)
            .ok()
            .and_then(|path| {
                self.injector
                    .page(authority.map(Authority::host), &path)
                    .cloned()
            });
        let mut forwarded = Request::new(body::full(kept_body));
        *forwarded.method_mut() = method;
        *forwarded.uri_mut() = Uri::from(target);
        *forwarded.headers_mut() = headers;
        let headers = forwarded.headers_mut();
        // The body is the one first sent, whole: its length is known.
        frame_passed(headers, body_len, "pass");
        if let Some(request_id) = parts.headers.get(X_REQUEST_ID) {
            headers.insert(X_REQUEST_ID, request_id.clone());
        }
        let mut resp = self
            .forward(
                forwarded,
                conn,
                authority,
                AnswerHandling {
                    upgrade: None,
                    inject: inject.as_ref(),
                },
                Some(route),
                log,
            )
            .await;
        resp.headers_mut()
            .append(SET_COOKIE, Binding::clear_cookie(id, https));
        resp
    }

    /// The gated route the kept request matches, as it would be routed now.
    fn route_of(&self, kept: &KeptRequest, authority: Option<&Authority>) -> Option<&Route> {
        let path = NormalPath::new(kept.target.path(), self.path_rules).ok()?;
        let methods = RequestMethods::new(&kept.method, &kept.headers, kept.target.query()).ok()?;
        self.routes
            .find(authority.map(Authority::host), &path, &methods)
    }
}

/// A script of gatekeeper's own: fixed at build time, so revalidated by its
/// ETag.
fn script(req: &Request<Incoming>, text: &'static str, etag: &'static str) -> Response<ProxyBody> {
    let fresh = req
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let (status, text) = if fresh {
        (StatusCode::NOT_MODIFIED, "")
    } else {
        (StatusCode::OK, text)
    };
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(ETAG, HeaderValue::from_static(etag));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if !fresh {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
    }
    resp
}

fn page_response(status: StatusCode, page: Page) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(page.html));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_SECURITY_POLICY, page.csp);
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn not_allowed(allow: &'static str) -> Response<ProxyBody> {
    let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

fn unavailable(reason: &'static str) -> Response<ProxyBody> {
    refused(&Refusal::CaptchaUnavailable(reason))
}

fn store_failure(e: &crate::challenge::StoreError) -> Response<ProxyBody> {
    tracing::warn!(error = %e, "kept-request store failed");
    unavailable("the captcha check is unavailable right now; please try again later")
}
