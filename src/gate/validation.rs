//! From the claim on: the lot_number's claim, GeeTest's verdict and the
//! recorded outcome, on a task of their own.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::warn;

use super::Validate;
use super::report::report_decision;
use super::throttle::Throttle;
use crate::config::{Captcha, OnError};
use crate::geetest::{Proof, Verdict};
use crate::metrics::{KindLabels, Metrics};
use crate::refusal::Refusal;
use crate::replay::{Claim, LotKey, LotState, ReplayStore, StoreError};

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
pub(super) struct Validation<V> {
    pub(super) validate: Arc<V>,
    pub(super) store: Arc<dyn ReplayStore>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) throttle: Option<Arc<Throttle>>,
    pub(super) captcha: Arc<Captcha>,
    pub(super) proof: Proof,
    pub(super) lot: LotKey,
    pub(super) route: String,
    pub(super) on_error: OnError,
    pub(super) client: IpAddr,
}

/// What the validation hands back to the request waiting for it.
pub(super) struct Settled {
    pub(super) result: Result<&'static str, Refusal>,
    pub(super) validate_ms: Option<u64>,
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
    pub(super) async fn run(self, tx: oneshot::Sender<Settled>) {
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
            self.report_cancelled(settle, &settled).await;
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
            Ok(Verdict::Pass) => (Settle::Record(LotState::Passed), Ok("pass")),
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
        self.report_cancelled(settle, &settled).await;
    }

    async fn report_cancelled(&self, settle: Settle, settled: &Settled) {
        if let (Some(throttle), Err(refusal)) = (&self.throttle, &settled.result)
            && refusal.is_client_fault()
        {
            throttle.charge(self.client).await;
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
        report_decision(
            &self.metrics,
            &self.route,
            self.client,
            Some(&self.proof.lot_number),
            "cancelled",
            &reason,
            settled.validate_ms,
        );
    }
}
