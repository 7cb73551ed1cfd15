//! The gate: proves a GeeTest v4 captcha before a protected request may pass.
//!
//! In order, and stopping at the first refusal: read the body (bounded in size
//! and time), extract the five fields (`fields`), check their shapes and the
//! token's age locally, claim the lot_number in the replay store, ask GeeTest,
//! record the outcome, and hand on the request with the captcha fields removed.
//! `reject` renders refusals. Nothing refused ever reaches the upstream.

pub mod fields;
pub mod reject;
pub mod throttle;

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

use crate::config::{Captcha, Config, OnError, Route};
use crate::geetest::{ValidateClient, Verdict};
use crate::metrics::{KindLabels, Metrics};
use crate::proxy::ProxyBody;
use crate::proxy::body::full;
use crate::proxy::headers::X_GATEKEEPER_CAPTCHA;
use crate::replay::{Claim, LotKey, LotState, ReplayStore, StoreError};
use fields::{FieldError, body_format, check_headers, check_shapes, extract};
pub use reject::Rejection;
use throttle::Throttle;

/// What a decision learned along the way, for its log line.
#[derive(Debug, Default)]
struct Seen {
    lot_number: Option<String>,
    validate_ms: Option<u64>,
}

/// An admitted request's stripped body and query, and the verdict to mark it with.
struct Admitted {
    body: Bytes,
    query: Option<String>,
    verdict: &'static str,
}

/// How far in the future a gen_time may be (clock skew between GeeTest and us).
const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Gate {
    validate: ValidateClient,
    store: Arc<dyn ReplayStore>,
    metrics: Arc<Metrics>,
    throttle: Option<Throttle>,
    max_body: u64,
    body_timeout: Duration,
    max_token_age: Duration,
}

impl Gate {
    pub fn new(config: &Config, store: Arc<dyn ReplayStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            validate: ValidateClient::with_breaker(
                &config.geetest.api_servers,
                config.geetest.timeout,
                config.geetest.breaker_failures,
                config.geetest.breaker_cooldown,
                config.server.workers,
            ),
            store,
            metrics,
            max_body: config.limits.max_body,
            // A gated body is read whole before anything is forwarded; the
            // same bound as for the request head keeps a slow client from
            // holding the gate open.
            body_timeout: config.limits.header_read_timeout,
            max_token_age: config.geetest.max_token_age,
            throttle: config.throttle.as_ref().map(Throttle::new),
        }
    }

    /// Admits the request (stripped of the captcha fields and marked) or
    /// answers the refusal. Every decision is logged and counted once, here.
    pub async fn admit(
        &self,
        route: &Route,
        req: Request<Incoming>,
        client: IpAddr,
    ) -> Result<Request<ProxyBody>, Response<ProxyBody>> {
        let (parts, body) = req.into_parts();
        let mut seen = Seen::default();
        let decision = match self.throttle.as_ref().and_then(|t| t.blocked(client)) {
            // Throttled before the body is read or GeeTest is asked.
            Some(wait) => Err(Rejection {
                retry_after: Some(wait.as_secs().max(1)),
                ..Rejection::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "captcha_throttled",
                    "too many refused captchas from this address, retry later",
                )
            }),
            None => self.decide(route, &parts, body, &mut seen).await,
        };
        if let (Some(throttle), Err(rejection)) = (&self.throttle, &decision)
            && rejection.is_client_fault()
        {
            throttle.charge(client);
        }
        let (outcome, reason) = match &decision {
            Ok(admitted) => (admitted.verdict, ""),
            Err(rejection) => (rejection.code, rejection.reason.as_str()),
        };
        self.metrics.decision(&route.origin, outcome);
        info!(
            route = %route.origin,
            client = %client,
            lot_number = seen.lot_number.as_deref().unwrap_or("-"),
            outcome,
            reason,
            validate_ms = seen.validate_ms,
            "captcha decision"
        );
        match decision {
            Ok(admitted) => Ok(forwardable(parts, admitted)),
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
        seen: &mut Seen,
    ) -> Result<Admitted, Rejection> {
        // Before the body is read: nothing to read if it would be refused.
        check_headers(&parts.headers).map_err(field_rejection)?;
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
        check_shapes(&proof, captcha_id.as_deref()).map_err(field_rejection)?;
        // Shape-checked, so safe to log: it is the proof's public serial number.
        seen.lot_number = Some(proof.lot_number.clone());
        let captcha = select_captcha(route, captcha_id.as_deref())?;
        self.check_age(&proof.gen_time)?;
        let lot = LotKey::from_hex(&proof.lot_number).ok_or_else(|| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                "captcha_malformed",
                "lot_number is not 32 hex characters",
            )
        })?;

        match self.store.claim(lot).await {
            Ok(Claim::Fresh) => {}
            Ok(Claim::Seen(state)) => {
                return Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "captcha_replayed",
                    state.describe(),
                ));
            }
            Err(e) => {
                warn!(error = %e, full = matches!(e, StoreError::Full(_)), "replay store cannot take a claim");
                return Err(unavailable("verification is temporarily unavailable"));
            }
        }

        let started = Instant::now();
        let answer = self
            .validate
            .validate(&captcha.id, &captcha.key, &proof)
            .await;
        let validate_time = started.elapsed();
        Metrics::observe(&self.metrics.validate_seconds, validate_time);
        seen.validate_ms = Some(validate_time.as_millis() as u64);
        let admitted = |verdict| Admitted {
            body,
            query,
            verdict,
        };
        let (state, result) = match answer {
            Ok(Verdict::Pass { .. }) => (LotState::Passed, Ok(admitted("pass"))),
            Ok(Verdict::Fail { reason }) => (
                LotState::Failed,
                Err(Rejection::new(
                    StatusCode::FORBIDDEN,
                    "captcha_failed",
                    reason,
                )),
            ),
            Ok(Verdict::Error { code, msg }) => {
                // A malformed request, possibly attacker-made: a deny, never fail-open.
                warn!(route = %route.origin, code = %code, msg = %msg, "GeeTest refused the validate request");
                let reason = format!("GeeTest error {code}: {msg}");
                (
                    LotState::Failed,
                    Err(Rejection::new(
                        StatusCode::FORBIDDEN,
                        "captcha_rejected",
                        reason,
                    )),
                )
            }
            Err(e) => {
                self.metrics
                    .validate_failures
                    .get_or_create(&KindLabels { kind: e.kind() })
                    .inc();
                warn!(route = %route.origin, error = %e, "GeeTest validate API unreachable");
                match route.on_error {
                    OnError::Allow => (LotState::FailOpen, Ok(admitted("fail-open"))),
                    OnError::Deny => {
                        // The proof was never judged: let the person retry it.
                        if let Err(e) = self.store.release(lot).await {
                            warn!(error = %e, "could not release captcha claim");
                        }
                        return Err(unavailable(
                            "captcha verification is unavailable, please retry",
                        ));
                    }
                }
            }
        };
        // A failed record only weakens replay memory for this lot; the decision stands.
        if let Err(e) = self.store.record(lot, state).await {
            warn!(error = %e, "could not record captcha outcome");
        }
        result
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
        FieldError::Ambiguous(why) => {
            Rejection::new(StatusCode::BAD_REQUEST, "body_ambiguous", why)
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
    Admitted {
        body,
        query,
        verdict,
    }: Admitted,
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
