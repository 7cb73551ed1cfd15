//! The gate's decisions, driven without sockets: a memory replay store and
//! a scripted stand-in for GeeTest.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};

use super::*;
use crate::config::{Methods, OnError, PathMatch};
use crate::http_common::X_GATEKEEPER_CAPTCHA;
use crate::replay::MemoryStore;

const CAPTCHA_ID: &str = "647f5ed2ed8acb4be36784e01556bb71";
const LOT: &str = "4dc3cfc2cdff448cad8d13107198d473";
const MAX_BODY: u64 = 1024;
const MAX_TOKEN_AGE: Duration = Duration::from_secs(300);

/// Answers every proof with what `answer` makes, and counts the calls.
#[derive(Debug)]
struct Scripted {
    answer: fn() -> Result<Verdict, ValidateError>,
    calls: Arc<AtomicUsize>,
}

impl Validate for Scripted {
    fn validate(
        &self,
        _captcha_id: &str,
        _key: &CaptchaKey,
        _proof: &Proof,
    ) -> impl Future<Output = Result<Verdict, ValidateError>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready((self.answer)())
    }
}

fn pass() -> Result<Verdict, ValidateError> {
    Ok(Verdict::Pass)
}

fn unreachable() -> Result<Verdict, ValidateError> {
    Err(ValidateError::Timeout)
}

fn gate(answer: fn() -> Result<Verdict, ValidateError>) -> (Gate<Scripted>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let limits = GateLimits {
        max_body: MAX_BODY,
        body_timeout: Duration::from_secs(5),
        max_token_age: MAX_TOKEN_AGE,
    };
    let validate = Scripted {
        answer,
        calls: calls.clone(),
    };
    let store = MemoryStore::new(Duration::from_secs(600), 1000);
    let gate = Gate::with_validate(validate, limits, None, store, Arc::new(Metrics::new()));
    (gate, calls)
}

fn route(on_error: OnError) -> Route {
    Route {
        path: PathMatch::Prefix("/".into()),
        host: None,
        methods: Methods::Unsafe,
        strict: false,
        captchas: vec![Arc::new(Captcha {
            name: "test".into(),
            id: CAPTCHA_ID.into(),
            key: CaptchaKey::new("k".repeat(32)),
        })],
        on_error,
        reject_redirect: None,
        challenge: true,
        origin: "/*".into(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn proof_fields(lot_number: &str, gen_time: u64) -> String {
    format!(
        "lot_number={lot_number}&captcha_output=fPhM8e-Y_Qe7r9Ag0DfG3A%3D%3D&pass_token={}&gen_time={gen_time}",
        "a".repeat(64)
    )
}

fn form_post(body: String) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri("/submit")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}

async fn decide(gate: &Gate<Scripted>, route: &Route, req: Request<Full<Bytes>>) -> Decision {
    gate.admit(route, req, IpAddr::from([192, 0, 2, 7])).await
}

fn refusal(decision: Decision) -> Refusal {
    match decision {
        Decision::Refused { refusal, .. } | Decision::Unproven { refusal, .. } => refusal,
        Decision::Admitted(req) => panic!("admitted: {req:?}"),
    }
}

#[tokio::test]
async fn a_passed_proof_is_admitted_stripped_and_marked() {
    let (gate, calls) = gate(pass);
    let body = format!("name=ada&{}&note=hi", proof_fields(LOT, now()));
    let req = form_post(body);
    let Decision::Admitted(req) = decide(&gate, &route(OnError::Deny), req).await else {
        panic!("refused");
    };
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(req.headers()[&X_GATEKEEPER_CAPTCHA], "pass");
    assert_eq!(req.headers()[CONTENT_LENGTH], "16");
    let body = req
        .into_body()
        .collect()
        .await
        .expect("a held body")
        .to_bytes();
    assert_eq!(&body[..], b"name=ada&note=hi");
}

#[tokio::test]
async fn a_proof_in_the_query_is_stripped_from_it() {
    let (gate, _) = gate(pass);
    let target = format!("/search?q=rust&{}", proof_fields(LOT, now()));
    let req = Request::builder()
        .method(Method::POST)
        .uri(target)
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let Decision::Admitted(req) = decide(&gate, &route(OnError::Deny), req).await else {
        panic!("refused");
    };
    assert_eq!(req.uri(), "/search?q=rust");
    assert!(!req.headers().contains_key(CONTENT_LENGTH));
}

#[tokio::test]
async fn missing_fields_are_named_and_geetest_is_not_asked() {
    let (gate, calls) = gate(pass);
    let req = form_post(format!("name=ada&lot_number={LOT}"));
    let refusal = refusal(decide(&gate, &route(OnError::Deny), req).await);
    assert_eq!(
        refusal,
        Refusal::CaptchaRequired {
            missing: vec!["captcha_output", "pass_token", "gen_time"]
        }
    );
    assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_badly_shaped_proof_is_malformed_and_geetest_is_not_asked() {
    let (gate, calls) = gate(pass);
    let req = form_post(proof_fields("not-a-lot-number", now()));
    let refusal = refusal(decide(&gate, &route(OnError::Deny), req).await);
    assert_eq!(refusal.code(), "captcha_malformed");
    assert_eq!(refusal.reason(), "lot_number is not 32 hex characters");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_proof_older_than_max_token_age_is_expired() {
    let (gate, calls) = gate(pass);
    let generated = now() - MAX_TOKEN_AGE.as_secs() - 10;
    let req = form_post(proof_fields(LOT, generated));
    let refusal = refusal(decide(&gate, &route(OnError::Deny), req).await);
    assert_eq!(
        refusal,
        Refusal::CaptchaExpired("the captcha is too old, please solve it again")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_proof_is_admitted_once_and_refused_as_a_replay_after() {
    let (gate, calls) = gate(pass);
    let route = route(OnError::Deny);
    let first = decide(&gate, &route, form_post(proof_fields(LOT, now()))).await;
    assert!(matches!(first, Decision::Admitted(_)));
    let second = decide(&gate, &route, form_post(proof_fields(LOT, now()))).await;
    assert_eq!(refusal(second).code(), "captcha_replayed");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unreachable_geetest_refuses_with_on_error_deny_and_frees_the_proof() {
    let (gate, calls) = gate(unreachable);
    let route = route(OnError::Deny);
    for _ in 0..2 {
        let req = form_post(proof_fields(LOT, now()));
        let refusal = refusal(decide(&gate, &route, req).await);
        assert_eq!(refusal.code(), "captcha_unavailable");
        assert_eq!(refusal.retry_after(), Some(5));
    }
    // Released, not spent: the same proof was judged again.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_geetest_admits_fail_open_with_on_error_allow() {
    let (gate, _) = gate(unreachable);
    let req = form_post(proof_fields(LOT, now()));
    let Decision::Admitted(req) = decide(&gate, &route(OnError::Allow), req).await else {
        panic!("refused");
    };
    assert_eq!(req.headers()[&X_GATEKEEPER_CAPTCHA], "fail-open");
}

#[tokio::test]
async fn a_geetest_error_answer_is_refused_even_with_on_error_allow() {
    let (gate, _) = gate(|| {
        Ok(Verdict::Error {
            code: "-50101".into(),
            msg: "illegal sign".into(),
        })
    });
    let req = form_post(proof_fields(LOT, now()));
    let refusal = refusal(decide(&gate, &route(OnError::Allow), req).await);
    assert_eq!(refusal.code(), "captcha_rejected");
    assert_eq!(refusal.reason(), "GeeTest error -50101: illegal sign");
}

#[tokio::test]
async fn a_body_over_max_body_is_refused_whether_declared_or_not() {
    let (gate, calls) = gate(pass);
    let route = route(OnError::Deny);
    let big = format!(
        "{}&pad={}",
        proof_fields(LOT, now()),
        "x".repeat(MAX_BODY as usize)
    );
    let declared = form_post(big.clone());
    let undeclared = Request::builder()
        .method(Method::POST)
        .uri("/submit")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(big)))
        .expect("a valid request");
    for req in [declared, undeclared] {
        let refusal = refusal(decide(&gate, &route, req).await);
        assert_eq!(refusal, Refusal::BodyTooLarge { max_body: MAX_BODY });
        assert_eq!(refusal.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn no_proof_at_all_hands_the_body_back_and_a_partial_one_is_refused() {
    let (gate, calls) = gate(pass);
    let decision = decide(
        &gate,
        &route(OnError::Deny),
        form_post("name=ada&x=%2F".into()),
    )
    .await;
    let Decision::Unproven { body, refusal, .. } = decision else {
        panic!("not unproven: {decision:?}");
    };
    assert_eq!(&body[..], b"name=ada&x=%2F");
    assert_eq!(
        refusal.reason(),
        "missing captcha fields: lot_number, captcha_output, pass_token, gen_time"
    );
    let partial = form_post("name=ada&lot_number=".into());
    let decision = decide(&gate, &route(OnError::Deny), partial).await;
    assert!(matches!(
        decision,
        Decision::Refused {
            refusal: Refusal::CaptchaRequired { .. },
            ..
        }
    ));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}
