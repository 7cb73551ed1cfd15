//! The gate: proves a GeeTest v4 captcha before a protected request may pass.
//!
//! In order, and stopping at the first refusal: read the body (bounded in size
//! and time), extract the five fields (`fields`), check their shapes and the
//! token's age locally, claim the lot_number in the replay store, ask GeeTest,
//! record the outcome, and hand on the request with the captcha fields removed.
//! `reject` renders refusals. Nothing refused ever reaches the upstream.

pub mod fields;
pub mod reject;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::{info, warn};

use crate::config::{Captcha, Config, OnError, ReplayStoreKind, Route};
use crate::geetest::{ValidateClient, ValidateError, Verdict};
use crate::proxy::ProxyBody;
use crate::proxy::body::full;
use crate::proxy::headers::X_GATEKEEPER_CAPTCHA;
use crate::replay::{
    Claim, FallbackStore, LotKey, LotState, MemoryStore, RedisStore, ReplayStore, StoreError,
};
use fields::{FieldError, body_format, check_shapes, extract};
pub use reject::Rejection;

/// How far in the future a gen_time may be (clock skew between GeeTest and us).
const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Gate {
    validate: ValidateClient,
    store: Arc<dyn ReplayStore>,
    max_body: u64,
    body_timeout: Duration,
    max_token_age: Duration,
}

impl Gate {
    pub fn new(config: &Config) -> Result<Self, String> {
        let replay = &config.replay;
        let local = MemoryStore::new(replay.ttl, replay.max_entries);
        local.spawn_sweeper(Duration::from_secs(10));
        let store: Arc<dyn ReplayStore> = match &replay.store {
            ReplayStoreKind::Memory => local,
            ReplayStoreKind::Redis { url } => {
                let shared = RedisStore::new(url, &replay.key_prefix, replay.ttl, replay.timeout)
                    .map_err(|e| format!("replay store: {e}"))?;
                Arc::new(FallbackStore::new(
                    Arc::new(shared),
                    local,
                    replay.on_store_error,
                ))
            }
        };
        Ok(Self::with_store(config, store))
    }

    pub fn with_store(config: &Config, store: Arc<dyn ReplayStore>) -> Self {
        Self {
            validate: ValidateClient::new(&config.geetest.api_server, config.geetest.timeout),
            store,
            max_body: config.limits.max_body,
            // A gated body is read whole before anything is forwarded; the
            // same bound as for the request head keeps a slow client from
            // holding the gate open.
            body_timeout: config.limits.header_read_timeout,
            max_token_age: config.geetest.max_token_age,
        }
    }

    /// Admits the request (stripped of the captcha fields and marked) or
    /// answers the refusal.
    pub async fn admit(
        &self,
        route: &Route,
        req: Request<Incoming>,
        client: IpAddr,
    ) -> Result<Request<ProxyBody>, Response<ProxyBody>> {
        let (parts, body) = req.into_parts();
        match self.decide(route, &parts, body, client).await {
            Ok((body, query, verdict)) => Ok(forwardable(parts, body, query, verdict)),
            Err(rejection) => Err(rejection.into_response(
                &parts.method,
                &parts.headers,
                route.reject_redirect.as_deref(),
            )),
        }
    }

    async fn decide(
        &self,
        route: &Route,
        parts: &Parts,
        body: Incoming,
        client: IpAddr,
    ) -> Result<(Bytes, Option<String>, &'static str), Rejection> {
        let body = self.read_body(parts, body).await?;
        let format = body_format(parts.headers.get(CONTENT_TYPE), body.is_empty())
            .map_err(field_rejection)?;
        let fields::Extraction {
            proof,
            captcha_id,
            query,
            body,
        } = extract(parts.uri.query(), &format, body)
            .await
            .map_err(field_rejection)?;
        let proof = &proof;
        check_shapes(proof, captcha_id.as_deref()).map_err(field_rejection)?;
        let captcha = select_captcha(route, captcha_id.as_deref())?;
        self.check_age(&proof.gen_time)?;
        let lot = LotKey::from_hex(&proof.lot_number).ok_or_else(|| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                "captcha_malformed",
                "lot_number is not 32 hex characters",
            )
        })?;

        let log = |outcome: &str, reason: &str, validate_ms: Option<u64>| {
            info!(
                route = %route.origin,
                client = %client,
                lot_number = %proof.lot_number,
                captcha = %captcha.name,
                outcome,
                reason,
                validate_ms,
                "captcha decision"
            );
        };

        match self.store.claim(lot).await {
            Ok(Claim::Fresh) => {}
            Ok(Claim::Seen(state)) => {
                log("captcha_replayed", state.describe(), None);
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "captcha_replayed",
                    state.describe(),
                ));
            }
            Err(e) => {
                if matches!(e, StoreError::Full(_)) {
                    warn!(error = %e, "replay store full: refusing new proofs until entries expire");
                }
                log("captcha_unavailable", "replay store unavailable", None);
                return Err(unavailable("verification is temporarily unavailable"));
            }
        }

        let started = Instant::now();
        let answer = self
            .validate
            .validate(&captcha.id, &captcha.key, proof)
            .await;
        let validate_ms = Some(started.elapsed().as_millis() as u64);
        // A failed record only weakens replay memory for this lot; the decision stands.
        let record = |state| async move {
            if let Err(e) = self.store.record(lot, state).await {
                warn!(error = %e, "could not record captcha outcome");
            }
        };
        match answer {
            Ok(Verdict::Pass { .. }) => {
                record(LotState::Passed).await;
                log("pass", "", validate_ms);
                Ok((body, query, "pass"))
            }
            Ok(Verdict::Fail { reason }) => {
                record(LotState::Failed).await;
                log("captcha_failed", &reason, validate_ms);
                Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "captcha_failed",
                    reason,
                ))
            }
            Ok(Verdict::Error { code, msg }) => {
                // A malformed request, possibly attacker-made: a deny, never fail-open.
                record(LotState::Failed).await;
                warn!(route = %route.origin, code = %code, msg = %msg, "GeeTest refused the validate request");
                log("captcha_rejected", &msg, validate_ms);
                Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "captcha_rejected",
                    format!("GeeTest error {code}: {msg}"),
                ))
            }
            Err(e) => {
                self.outage(route, lot, e, (body, query), &log, validate_ms)
                    .await
            }
        }
    }

    /// GeeTest could not be reached: the route's `on_error` decides.
    async fn outage(
        &self,
        route: &Route,
        lot: LotKey,
        error: ValidateError,
        (body, query): (Bytes, Option<String>),
        log: &(dyn Fn(&str, &str, Option<u64>) + Sync),
        validate_ms: Option<u64>,
    ) -> Result<(Bytes, Option<String>, &'static str), Rejection> {
        warn!(route = %route.origin, error = %error, "GeeTest validate API unreachable");
        match route.on_error {
            OnError::Allow => {
                if let Err(e) = self.store.record(lot, LotState::FailOpen).await {
                    warn!(error = %e, "could not record captcha outcome");
                }
                log("fail-open", "GeeTest unreachable", validate_ms);
                Ok((body, query, "fail-open"))
            }
            OnError::Deny => {
                // The proof was never judged: let the person retry it.
                if let Err(e) = self.store.release(lot).await {
                    warn!(error = %e, "could not release captcha claim");
                }
                log("captcha_unavailable", "GeeTest unreachable", validate_ms);
                Err(unavailable(
                    "captcha verification is unavailable, please retry",
                ))
            }
        }
    }

    /// Reads the whole body, refusing beyond `max_body` (413) or `body_timeout` (408).
    async fn read_body(&self, parts: &Parts, body: Incoming) -> Result<Bytes, Rejection> {
        let too_large = || {
            Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {} bytes", self.max_body),
            )
        };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_body) {
            return Err(too_large());
        }
        let limit = usize::try_from(self.max_body).unwrap_or(usize::MAX);
        match tokio::time::timeout(self.body_timeout, Limited::new(body, limit).collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(_)) => Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            )),
            Err(_) => Err(Rejection::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body was not received in time",
            )),
        }
    }

    fn check_age(&self, gen_time: &str) -> Result<(), Rejection> {
        let expired = |why: &str| Rejection::new(StatusCode::FORBIDDEN, "captcha_expired", why);
        let generated = gen_time.parse::<u64>().map_err(|_| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                "captcha_malformed",
                "gen_time is not a number",
            )
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if generated > now.saturating_add(MAX_FUTURE_SKEW.as_secs()) {
            return Err(expired("gen_time is in the future"));
        }
        if now.saturating_sub(generated) > self.max_token_age.as_secs() {
            return Err(expired("the captcha is too old, please solve it again"));
        }
        Ok(())
    }
}

/// The credential for this request: the route's first, or the one whose id
/// the client named. The key always comes from the configuration.
fn select_captcha<'r>(
    route: &'r Route,
    client_id: Option<&str>,
) -> Result<&'r Arc<Captcha>, Rejection> {
    let not_configured = || {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            "captcha_malformed",
            "captcha_id is not configured for this route",
        )
    };
    match client_id {
        None => route.captchas.first().ok_or_else(not_configured),
        Some(id) => route
            .captchas
            .iter()
            .find(|c| c.id.eq_ignore_ascii_case(id))
            .ok_or_else(not_configured),
    }
}

fn field_rejection(e: FieldError) -> Rejection {
    match e {
        FieldError::UnsupportedMediaType(ct) => Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("cannot read captcha fields from {ct}"),
        ),
        FieldError::Missing(names) => Rejection::new(
            StatusCode::FORBIDDEN,
            "captcha_required",
            format!("missing captcha fields: {}", names.join(", ")),
        ),
        FieldError::Malformed(why) => {
            Rejection::new(StatusCode::BAD_REQUEST, "captcha_malformed", why)
        }
    }
}

fn unavailable(reason: &str) -> Rejection {
    Rejection::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "captcha_unavailable",
        reason,
    )
}

/// The request as the upstream will see it: fields gone, length recomputed.
fn forwardable(
    mut parts: Parts,
    body: Bytes,
    query: Option<String>,
    verdict: &'static str,
) -> Request<ProxyBody> {
    if parts.uri.query().is_some() {
        let path = parts.uri.path();
        let target = match &query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        // The stripped query is a subset of a valid one, so this parses; if it
        // ever did not, dropping the query is the safe side (no field leaks).
        parts.uri = Uri::try_from(target)
            .or_else(|_| Uri::try_from(path.to_owned()))
            .unwrap_or_else(|_| Uri::from_static("/"));
    }
    parts.headers.remove(TRANSFER_ENCODING);
    if body.is_empty() && !parts.headers.contains_key(CONTENT_LENGTH) {
        // A bodiless request (GET with the proof in the query) stays bodiless.
    } else {
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    parts
        .headers
        .insert(X_GATEKEEPER_CAPTCHA, HeaderValue::from_static(verdict));
    Request::from_parts(parts, full(body))
}
