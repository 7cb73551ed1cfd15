//! The gate: proves a GeeTest v4 captcha before a protected request may pass.
//!
//! In order, and stopping at the first refusal: take the client address's
//! place for a gated request and the connection's place for a buffered body
//! (`admission`), read the body (bounded in size and time, and reserved from
//! the process-wide body budget), extract the five fields (`fields`), check
//! their shapes and the token's age locally, claim the lot_number in the replay store, ask GeeTest,
//! record the outcome, and hand on the request with the captcha fields removed.
//! Nothing refused ever reaches the upstream.
//! From the claim on, the work runs on a task of its own (`Validation`), so a
//! client that goes away mid-validation leaves no claim in flight: its claim
//! is settled by the rule documented there, and its decision is logged and
//! counted with outcome `cancelled`.

pub mod admission;
pub mod fields;
#[cfg(test)]
mod tests;
pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TRANSFER_ENCODING};
use http::request::Parts;
use http::{Request, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tracing::{info, warn};

use crate::config::{Captcha, CaptchaKey, Config, OnError, Route};
use crate::geetest::{Proof, ValidateClient, ValidateError, Verdict};
use crate::http_common::{HeldBody, X_GATEKEEPER_CAPTCHA, whole_body};
use crate::metrics::{KindLabels, Metrics};
use crate::refusal::{Audience, Refusal};
use crate::replay::{Claim, LotKey, LotState, ReplayStore, StoreError};
use admission::{ConnAdmission, FREE_PER_BODY, Reservation};
use fields::{FieldError, body_format, check_headers, check_shapes, extract};
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
    /// The body's places, held until the upstream is done with its bytes.
    held: Held,
    query: Option<String>,
    verdict: &'static str,
}

/// How far in the future a gen_time may be (clock skew between GeeTest and us).
const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);

/// GeeTest's judgement of a proof: the validate API, or a stand-in in tests.
pub trait Validate: std::fmt::Debug + Send + Sync + 'static {
    fn validate(
        &self,
        captcha_id: &str,
        key: &CaptchaKey,
        proof: &Proof,
    ) -> impl Future<Output = Result<Verdict, ValidateError>> + Send;
}

impl Validate for ValidateClient {
    fn validate(
        &self,
        captcha_id: &str,
        key: &CaptchaKey,
        proof: &Proof,
    ) -> impl Future<Output = Result<Verdict, ValidateError>> + Send {
        ValidateClient::validate(self, captcha_id, key, proof)
    }
}

/// The gate's bounds, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    pub max_body: u64,
    pub body_timeout: Duration,
    pub max_token_age: Duration,
}

/// What the gate decided about one gated request.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per gated request and unpacked at once; a box would only add an allocation"
)]
pub enum Decision {
    /// Stripped of the captcha fields and marked: to be forwarded.
    Admitted(Request<HeldBody>),
    /// To be answered, in the form its `audience` reads.
    Refused {
        refusal: Refusal,
        audience: Audience,
    },
}

#[derive(Debug)]
pub struct Gate<V = ValidateClient> {
    validate: Arc<V>,
    store: Arc<dyn ReplayStore>,
    metrics: Arc<Metrics>,
    throttle: Option<Arc<Throttle>>,
    max_body: u64,
    body_timeout: Duration,
    max_token_age: Duration,
}

impl Gate {
    pub fn new(config: &Config, store: Arc<dyn ReplayStore>, metrics: Arc<Metrics>) -> Self {
        let validate = ValidateClient::with_breaker(
            &config.geetest.api_servers,
            config.geetest.timeout,
            config.geetest.breaker_failures,
            config.geetest.breaker_cooldown,
            config.server.workers,
        );
        let limits = GateLimits {
            max_body: config.limits.max_body,
            // A gated body is read whole before anything is forwarded; the
            // same bound as for the request head keeps a slow client from
            // holding the gate open.
            body_timeout: config.limits.header_read_timeout,
            max_token_age: config.geetest.max_token_age,
        };
        let throttle = config.throttle.as_ref().map(Throttle::new);
        Self::with_validate(validate, limits, throttle, store, metrics)
    }
}

impl<V: Validate> Gate<V> {
    pub fn with_validate(
        validate: V,
        limits: GateLimits,
        throttle: Option<Throttle>,
        store: Arc<dyn ReplayStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            validate: Arc::new(validate),
            store,
            metrics,
            throttle: throttle.map(Arc::new),
            max_body: limits.max_body,
            body_timeout: limits.body_timeout,
            max_token_age: limits.max_token_age,
        }
    }

    /// Admits the request (stripped of the captcha fields and marked) or
    /// refuses it. Every decision is logged and counted once, here.
    pub async fn admit<B: Body<Data = Bytes>>(
        &self,
        route: &Route,
        req: Request<B>,
        client: IpAddr,
    ) -> Decision {
        let (parts, body) = req.into_parts();
        let mut seen = Seen::default();
        let decision = match self.throttle.as_ref().and_then(|t| t.blocked(client)) {
            // Throttled before the body is read or GeeTest is asked.
            Some(wait) => Err(Refusal::Throttled {
                retry_after: wait.as_secs().max(1),
            }),
            None => self.decide(route, &parts, body, client, &mut seen).await,
        };
        if let (Some(throttle), Err(refusal)) = (&self.throttle, &decision)
            && refusal.is_client_fault()
        {
            throttle.charge(client);
        }
        let (outcome, reason) = match &decision {
            Ok(admitted) => (admitted.verdict, Default::default()),
            Err(refusal) => (refusal.code(), refusal.reason()),
        };
        self.metrics.decision(&route.origin, outcome);
        log_decision(
            &route.origin,
            client,
            seen.lot_number.as_deref(),
            outcome,
            &reason,
            seen.validate_ms,
        );
        match decision {
            Ok(admitted) => Decision::Admitted(forwardable(parts, admitted)),
            Err(refusal) => Decision::Refused {
                refusal,
                audience: Audience::of(&parts.method, &parts.headers),
            },
        }
    }

    async fn decide<B: Body<Data = Bytes>>(
        &self,
        route: &Route,
        parts: &Parts,
        body: B,
        client: IpAddr,
        seen: &mut Seen,
    ) -> Result<Admitted, Refusal> {
        // Before the body is read: nothing to read if it would be refused.
        check_headers(&parts.headers).map_err(field_refusal)?;
        let admission = parts.extensions.get::<ConnAdmission>();
        // Held until the decision: one address cannot hold every buffer and
        // validate call, whatever its number of connections.
        let _gated = match admission {
            Some(a) => Some(a.shared.gated.enter(client).ok_or(Refusal::TooManyGated)?),
            None => None,
        };
        let (body, held) = self.read_body(parts, body, admission).await?;
        let format =
            body_format(parts.headers.get(CONTENT_TYPE), body.is_empty()).map_err(field_refusal)?;
        let fields::Extraction {
            proof,
            captcha_id,
            query,
            body,
        } = extract(parts.uri.query(), &format, body)
            .await
            .map_err(field_refusal)?;
        check_shapes(&proof, captcha_id.as_deref()).map_err(field_refusal)?;
        // Shape-checked, so safe to log: it is the proof's public serial number.
        seen.lot_number = Some(proof.lot_number.clone());
        let captcha = select_captcha(route, captcha_id.as_deref())?;
        self.check_age(&proof.gen_time)?;
        let lot = LotKey::from_hex(&proof.lot_number).ok_or(Refusal::CaptchaMalformed(
            "lot_number is not 32 hex characters".into(),
        ))?;

        let validation = Validation {
            validate: self.validate.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            throttle: self.throttle.clone(),
            captcha: captcha.clone(),
            proof,
            lot,
            route: route.origin.clone(),
            on_error: route.on_error,
            client,
        };
        // From the claim on, the rest runs on its own task, so a client that
        // goes away cannot leave the lot_number claimed or drop the pooled
        // validate connection mid-request; see `Validation`.
        let (tx, rx) = oneshot::channel();
        tokio::spawn(validation.run(tx));
        let settled = rx
            .await
            .map_err(|_| Refusal::CaptchaUnavailable("verification is temporarily unavailable"))?;
        seen.validate_ms = settled.validate_ms;
        settled.result.map(|verdict| Admitted {
            body,
            held,
            query,
            verdict,
        })
    }

    /// Reads the whole body, refusing beyond `max_body` (413), beyond the
    /// body budget (503) or `body_timeout` (408). Waiting for one of the
    /// connection's places to buffer counts against `body_timeout`. Without
    /// `admission` (a request that did not come through a listener), nothing
    /// is reserved.
    async fn read_body<B: Body<Data = Bytes>>(
        &self,
        parts: &Parts,
        body: B,
        admission: Option<&ConnAdmission>,
    ) -> Result<(Bytes, Held), Refusal> {
        let too_large = || Refusal::BodyTooLarge {
            max_body: self.max_body,
        };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_body) {
            return Err(too_large());
        }
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let place = match admission {
            Some(a) => {
                match tokio::time::timeout_at(deadline, a.bodies.clone().acquire_owned()).await {
                    Ok(Ok(place)) => Some(place),
                    Ok(Err(_)) => {
                        return Err(Refusal::CaptchaUnavailable("the connection is closing"));
                    }
                    Err(_) => return Err(Refusal::BodyTimeout),
                }
            }
            None => None,
        };
        let mut reservation = admission.map(|a| a.shared.budget.reservation());
        // Bytes beyond a body's free allowance are reserved before they are
        // read: all at once by Content-Length, else as they arrive.
        let reserve = |len: u64, reservation: &mut Option<Reservation>| match reservation {
            Some(r) => {
                let owed = len.saturating_sub(FREE_PER_BODY).saturating_sub(r.bytes());
                owed == 0 || r.grow(owed)
            }
            None => true,
        };
        if let Some(len) = declared
            && !reserve(len, &mut reservation)
        {
            return Err(Refusal::BodyBudgetExhausted);
        }
        // Within max_body, so it fits in memory.
        let capacity = usize::try_from(declared.unwrap_or(0)).unwrap_or(0);
        let read = async {
            let mut body = std::pin::pin!(body);
            // Copied out of hyper's buffers: what is held is exactly what was reserved.
            let mut buf = BytesMut::with_capacity(capacity);
            while let Some(frame) = body.as_mut().frame().await {
                let frame = frame.map_err(|_| Refusal::BodyUnreadable)?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let len = (buf.len() + data.len()) as u64;
                if len > self.max_body {
                    return Err(too_large());
                }
                if !reserve(len, &mut reservation) {
                    return Err(Refusal::BodyBudgetExhausted);
                }
                buf.extend_from_slice(&data);
            }
            Ok(buf.freeze())
        };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(bytes)) => Ok((bytes, Held { reservation, place })),
            Ok(Err(refusal)) => Err(refusal),
            Err(_) => Err(Refusal::BodyTimeout),
        }
    }

    fn check_age(&self, gen_time: &str) -> Result<(), Refusal> {
        let generated = gen_time
            .parse::<u64>()
            .map_err(|_| Refusal::CaptchaMalformed("gen_time is not a number".into()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if generated > now.saturating_add(MAX_FUTURE_SKEW.as_secs()) {
            return Err(Refusal::CaptchaExpired("gen_time is in the future"));
        }
        if now.saturating_sub(generated) > self.max_token_age.as_secs() {
            return Err(Refusal::CaptchaExpired(
                "the captcha is too old, please solve it again",
            ));
        }
        Ok(())
    }
}

/// The credential for this request: the route's first, or the one whose id
/// the client named. The key always comes from the configuration.
fn select_captcha<'r>(
    route: &'r Route,
    client_id: Option<&str>,
) -> Result<&'r Arc<Captcha>, Refusal> {
    let not_configured =
        || Refusal::CaptchaMalformed("captcha_id is not configured for this route".into());
    match client_id {
        None => route.captchas.first().ok_or_else(not_configured),
        Some(id) => route
            .captchas
            .iter()
            .find(|c| c.id.eq_ignore_ascii_case(id))
            .ok_or_else(not_configured),
    }
}

fn log_decision(
    route: &str,
    client: IpAddr,
    lot_number: Option<&str>,
    outcome: &str,
    reason: &str,
    validate_ms: Option<u64>,
) {
    info!(
        route,
        client = %client,
        lot_number = lot_number.unwrap_or("-"),
        outcome,
        reason,
        validate_ms,
        "captcha decision"
    );
}

/// A shape-checked proof's claim, GeeTest's verdict and the recorded
/// outcome, run on a task of its own so that it always ends: the validate
/// call is bounded by the geetest timeout, and its pooled connection goes
/// back to the pool instead of being dropped mid-request.
///
/// If the request was abandoned (the client went away) before the verdict
/// was delivered, nothing was forwarded, and the claim is settled by this
/// rule:
/// - GeeTest said fail, or answered with an error: recorded as failed, like
///   any failure (a replay is refused, the client's throttle is charged);
/// - GeeTest said pass, or could not be reached: the claim is released, so
///   the person may retry the same proof and GeeTest judges it again.
///
/// Either way the decision is logged and counted with outcome `cancelled`.
struct Validation<V> {
    validate: Arc<V>,
    store: Arc<dyn ReplayStore>,
    metrics: Arc<Metrics>,
    throttle: Option<Arc<Throttle>>,
    captcha: Arc<Captcha>,
    proof: Proof,
    lot: LotKey,
    route: String,
    on_error: OnError,
    client: IpAddr,
}

/// What the validation hands back to the request waiting for it.
struct Settled {
    result: Result<&'static str, Refusal>,
    validate_ms: Option<u64>,
}

/// What becomes of a claimed lot_number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Nothing was claimed (a replay, or the store refused the claim).
    Unclaimed,
    Record(LotState),
    Release,
}

impl<V: Validate> Validation<V> {
    async fn run(self, tx: oneshot::Sender<Settled>) {
        let (settle, settled) = self.judge().await;
        if tx.is_closed() {
            self.abandoned(settle, settled).await;
            return;
        }
        self.apply(settle).await;
        if let Err(settled) = tx.send(settled) {
            // Abandoned after all: the outcome was recorded but nothing was
            // forwarded, so a pass is released after the fact.
            if matches!(
                settle,
                Settle::Record(LotState::Passed | LotState::FailOpen)
            ) {
                self.release().await;
            }
            self.report_cancelled(settle, &settled);
        }
    }

    /// Claims the lot_number and asks GeeTest; settles nothing yet.
    async fn judge(&self) -> (Settle, Settled) {
        let refused = |refusal| {
            (
                Settle::Unclaimed,
                Settled {
                    result: Err(refusal),
                    validate_ms: None,
                },
            )
        };
        match self.store.claim(self.lot).await {
            Ok(Claim::Fresh) => {}
            Ok(Claim::Seen(state)) => {
                return refused(Refusal::CaptchaReplayed(state.describe()));
            }
            Err(e) => {
                crate::logging::throttled!(
                    warn!(error = %e, full = matches!(e, StoreError::Full(_)), "replay store cannot take a claim")
                );
                return refused(Refusal::CaptchaUnavailable(
                    "verification is temporarily unavailable",
                ));
            }
        }

        let started = Instant::now();
        let answer = self
            .validate
            .validate(&self.captcha.id, &self.captcha.key, &self.proof)
            .await;
        let validate_time = started.elapsed();
        Metrics::observe(&self.metrics.validate_seconds, validate_time);
        let validate_ms = Some(validate_time.as_millis() as u64);
        let (settle, result) = match answer {
            Ok(Verdict::Pass { .. }) => (Settle::Record(LotState::Passed), Ok("pass")),
            Ok(Verdict::Fail { reason }) => (
                Settle::Record(LotState::Failed),
                Err(Refusal::CaptchaFailed(reason)),
            ),
            Ok(Verdict::Error { code, msg }) => {
                // A malformed request, possibly attacker-made: a deny, never fail-open.
                crate::logging::throttled!(
                    warn!(route = %self.route, code = %code, msg = %msg, "GeeTest refused the validate request")
                );
                (
                    Settle::Record(LotState::Failed),
                    Err(Refusal::CaptchaRejected { code, msg }),
                )
            }
            Err(e) => {
                self.metrics
                    .validate_failures
                    .get_or_create(&KindLabels { kind: e.kind() })
                    .inc();
                crate::logging::throttled!(
                    warn!(route = %self.route, error = %e, "GeeTest validate API unreachable")
                );
                match self.on_error {
                    OnError::Allow => (Settle::Record(LotState::FailOpen), Ok("fail-open")),
                    // The proof was never judged: let the person retry it.
                    OnError::Deny => (
                        Settle::Release,
                        Err(Refusal::CaptchaUnavailable(
                            "captcha verification is unavailable, please retry",
                        )),
                    ),
                }
            }
        };
        (
            settle,
            Settled {
                result,
                validate_ms,
            },
        )
    }

    async fn apply(&self, settle: Settle) {
        match settle {
            Settle::Unclaimed => {}
            // A failed record only weakens replay memory for this lot; the decision stands.
            Settle::Record(state) => {
                if let Err(e) = self.store.record(self.lot, state).await {
                    crate::logging::throttled!(
                        warn!(error = %e, "could not record captcha outcome")
                    );
                }
            }
            Settle::Release => self.release().await,
        }
    }

    async fn release(&self) {
        if let Err(e) = self.store.release(self.lot).await {
            crate::logging::throttled!(warn!(error = %e, "could not release captcha claim"));
        }
    }

    /// The client went away before the verdict was delivered.
    async fn abandoned(&self, settle: Settle, settled: Settled) {
        let settle = match settle {
            Settle::Record(LotState::Failed) | Settle::Unclaimed => settle,
            Settle::Record(_) | Settle::Release => Settle::Release,
        };
        self.apply(settle).await;
        self.report_cancelled(settle, &settled);
    }

    fn report_cancelled(&self, settle: Settle, settled: &Settled) {
        if let (Some(throttle), Err(refusal)) = (&self.throttle, &settled.result)
            && refusal.is_client_fault()
        {
            throttle.charge(self.client);
        }
        let verdict = match &settled.result {
            Ok(verdict) => verdict,
            Err(refusal) => refusal.code(),
        };
        let reason = format!(
            "the client went away during verification ({verdict}); {}",
            match settle {
                Settle::Record(LotState::Failed) => "the proof is spent",
                Settle::Unclaimed => "nothing was claimed",
                _ => "the claim was released",
            }
        );
        self.metrics.decision(&self.route, "cancelled");
        log_decision(
            &self.route,
            self.client,
            Some(&self.proof.lot_number),
            "cancelled",
            &reason,
            settled.validate_ms,
        );
    }
}

fn field_refusal(e: FieldError) -> Refusal {
    match e {
        FieldError::UnsupportedMediaType(ct) => Refusal::UnsupportedMediaType(ct),
        FieldError::Missing(missing) => Refusal::CaptchaRequired { missing },
        FieldError::Malformed(why) => Refusal::CaptchaMalformed(why.into()),
        FieldError::Ambiguous(why) => Refusal::BodyAmbiguous(why),
    }
}

/// What a buffered body holds while its bytes exist: its reservation from
/// the budget, and its connection's place to buffer one (see `admission`).
struct Held {
    reservation: Option<Reservation>,
    place: Option<OwnedSemaphorePermit>,
}

/// The forwarded body's bytes, holding their places until the upstream is
/// done with them (the last reference drops).
fn holding(body: Bytes, held: Held) -> Bytes {
    struct Owner {
        body: Bytes,
        _held: Held,
    }
    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            &self.body
        }
    }
    if held.reservation.is_none() && held.place.is_none() {
        return body;
    }
    Bytes::from_owner(Owner { body, _held: held })
}

/// The request as the upstream will see it: fields gone, length recomputed.
fn forwardable(
    mut parts: Parts,
    Admitted {
        body,
        held,
        query,
        verdict,
    }: Admitted,
) -> Request<HeldBody> {
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
    Request::from_parts(parts, whole_body(holding(body, held)))
}
