//! The gate: proves a GeeTest v4 captcha before a protected request may pass.
//!
//! In order, and stopping at the first refusal: take the client address's
//! place for a gated request and the connection's place for a buffered body
//! (`admission`), read the body (bounded in size and time, and reserved from
//! the process-wide body budget: `body`), extract the five fields (`fields`),
//! check their shapes and the token's age locally, claim the lot_number in
//! the replay store, ask GeeTest, record the outcome, and hand on the request
//! with the captcha fields removed. The gate returns a `Decision`; the proxy
//! renders a refusal. Nothing refused ever reaches the upstream.
//! From the claim on, the work runs on a task of its own (`validation`), so a
//! client that goes away mid-validation leaves no claim in flight: its claim
//! is settled by the rule documented there, and its decision is logged and
//! counted with outcome `cancelled` (`report`: one line per decision).

pub mod admission;
mod body;
pub mod fields;
mod report;
#[cfg(test)]
mod tests;
pub mod throttle;
mod validation;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http_body::Body;
use tokio::sync::oneshot;

use crate::config::{Captcha, CaptchaKey, Config, Route, ThrottleStore};
use crate::geetest::{Proof, ValidateClient, ValidateError, Verdict};
use crate::http_common::HeldBody;
use crate::metrics::Metrics;
use crate::refusal::{Audience, Refusal};
use crate::replay::{LotKey, RedisLink, ReplayStore};
use admission::ConnAdmission;
use body::{Held, forwardable};
use fields::{FieldError, body_format, check_headers, check_shapes, extract};
use report::{LogFields, report_decision};
use throttle::Throttle;
use validation::Validation;

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
pub enum Decision {
    /// Stripped of the captcha fields and marked: to be forwarded.
    Admitted(Request<HeldBody>),
    /// To be answered, in the form its `audience` reads.
    Refused {
        refusal: Refusal,
        audience: Audience,
    },
    /// No captcha field at all: refused as `refusal` says, unless the proxy
    /// keeps the request for the challenge page. `parts` and the whole
    /// `body` (read within `max_body` and the body budget) are handed back.
    Unproven {
        parts: Parts,
        body: Bytes,
        refusal: Refusal,
        audience: Audience,
    },
}

/// Why a request was not admitted: a refusal, or no proof at all (with the
/// body that was read, for the challenge to keep).
enum NotAdmitted {
    Refused(Refusal),
    Unproven(Bytes),
}

impl From<Refusal> for NotAdmitted {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

impl NotAdmitted {
    fn refusal(&self) -> Refusal {
        match self {
            Self::Refused(refusal) => refusal.clone(),
            Self::Unproven(_) => unproven_refusal(),
        }
    }
}

/// Today's answer to a request without any captcha field.
fn unproven_refusal() -> Refusal {
    Refusal::CaptchaRequired {
        missing: fields::CAPTCHA_FIELDS[..4].to_vec(),
    }
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
    /// `throttle_link`: the Redis of `throttle.store`, connected at start;
    /// without it the throttle keeps its buckets in memory.
    pub fn new(
        config: &Config,
        store: Arc<dyn ReplayStore>,
        throttle_link: Option<&RedisLink>,
        metrics: Arc<Metrics>,
    ) -> Self {
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
        let throttle = config.throttle.as_ref().map(|t| match throttle_link {
            Some(link) if t.store != ThrottleStore::Memory => Throttle::shared(
                t,
                link.clone(),
                &config.replay.key_prefix,
                config.replay.on_store_error,
                metrics.throttle_store_errors.clone(),
            ),
            _ => Throttle::new(t),
        });
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
        let mut log = LogFields::default();
        let blocked = match &self.throttle {
            Some(throttle) => throttle.blocked(client).await,
            None => Ok(None),
        };
        let decision = match blocked {
            // Throttled before the body is read or GeeTest is asked.
            Ok(Some(wait)) => Err(NotAdmitted::Refused(Refusal::Throttled {
                retry_after: wait.as_secs().max(1),
            })),
            Err(refusal) => Err(NotAdmitted::Refused(refusal)),
            Ok(None) => self.decide(route, &parts, body, client, &mut log).await,
        };
        let refusal = decision.as_ref().err().map(NotAdmitted::refusal);
        if let (Some(throttle), Some(refusal)) = (&self.throttle, &refusal)
            && refusal.is_client_fault()
        {
            // Before the answer, so the client's next request sees it.
            throttle.charge(client).await;
        }
        let (outcome, reason) = match (&refusal, &decision) {
            (Some(refusal), _) => (refusal.code(), refusal.reason()),
            (None, Ok(admitted)) => (admitted.verdict, Default::default()),
            // Every Err carries a refusal.
            (None, Err(_)) => ("-", Default::default()),
        };
        report_decision(
            &self.metrics,
            &route.origin,
            client,
            log.lot_number.as_deref(),
            outcome,
            &reason,
            log.validate_ms,
        );
        // Read only for a refusal: it is answered in the form its audience reads.
        let audience = || Audience::of(&parts.method, &parts.headers);
        match decision {
            Ok(admitted) => Decision::Admitted(forwardable(parts, admitted)),
            Err(NotAdmitted::Unproven(body)) => Decision::Unproven {
                audience: audience(),
                parts,
                body,
                refusal: unproven_refusal(),
            },
            Err(NotAdmitted::Refused(refusal)) => Decision::Refused {
                refusal,
                audience: audience(),
            },
        }
    }

    async fn decide<B: Body<Data = Bytes>>(
        &self,
        route: &Route,
        parts: &Parts,
        body: B,
        client: IpAddr,
        log: &mut LogFields,
    ) -> Result<Admitted, NotAdmitted> {
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
        } = match extract(parts.uri.query(), &format, body.clone()).await {
            Ok(extraction) => extraction,
            // Handed back whole, without its reservation: a kept request
            // counts against the kept-request store's bounds instead.
            Err(FieldError::NoneGiven) => return Err(NotAdmitted::Unproven(body)),
            Err(e) => return Err(field_refusal(e).into()),
        };
        check_shapes(&proof, captcha_id.as_deref()).map_err(field_refusal)?;
        // Shape-checked, so safe to log: it is the proof's public serial number.
        log.lot_number = Some(proof.lot_number.clone());
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
        // Boxed, the task holds a pointer: spawning moves the future through
        // several calls, and this one (the validate exchange) is kilobytes.
        tokio::spawn(Box::pin(validation.run(tx)));
        let settled = rx
            .await
            .map_err(|_| Refusal::CaptchaUnavailable("verification is temporarily unavailable"))?;
        log.validate_ms = settled.validate_ms;
        Ok(settled.result.map(|verdict| Admitted {
            body,
            held,
            query,
            verdict,
        })?)
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

fn field_refusal(e: FieldError) -> Refusal {
    match e {
        FieldError::UnsupportedMediaType(ct) => Refusal::UnsupportedMediaType(ct),
        FieldError::Missing(missing) => Refusal::CaptchaRequired { missing },
        FieldError::NoneGiven => unproven_refusal(),
        FieldError::Malformed(why) => Refusal::CaptchaMalformed(why.into()),
        FieldError::Ambiguous(why) => Refusal::BodyAmbiguous(why),
    }
}
