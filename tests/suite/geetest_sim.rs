//! The simulator speaks GeeTest's documented validate API, and the validate
//! client reads every kind of answer, over real sockets.

use std::time::Duration;

use crate::common::*;
use gatekeeper::config::CaptchaKey;
use gatekeeper::geetest::{ValidateClient, ValidateError, Verdict, sign_token};
use gatekeeper::sim::Behaviour;

async fn client(sim: &Sim, timeout: Duration) -> ValidateClient {
    ValidateClient::new(&[sim.url().parse().unwrap()], timeout)
}

/// Sends raw form parameters to /validate and returns the JSON answer.
async fn raw_validate(sim: &Sim, method: &str, query: &str, body: &str) -> serde_json::Value {
    let wire = format!(
        "{method} /validate?{query} HTTP/1.1\r\nHost: sim\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let raw = raw_exchange(sim.addr, wire.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        raw.starts_with("HTTP/1.1 200 OK"),
        "GeeTest always answers 200: {raw}"
    );
    let json = raw.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn a_minted_proof_passes_once_and_then_expires() {
    let sim = Sim::start().await;
    let c = client(&sim, Duration::from_secs(2)).await;
    let p = sim.mint(CAPTCHA_ID).proof();
    assert!(matches!(
        c.validate(CAPTCHA_ID, &captcha_key(), &p).await,
        Ok(Verdict::Pass)
    ));
    assert_eq!(
        c.validate(CAPTCHA_ID, &captcha_key(), &p).await.unwrap(),
        Verdict::Fail {
            reason: "pass_token expire".into()
        }
    );
}

#[tokio::test]
async fn a_wrong_key_is_a_sign_token_error_and_a_forged_pass_token_a_pass_token_error() {
    let sim = Sim::start().await;
    let c = client(&sim, Duration::from_secs(2)).await;
    let p = sim.mint(CAPTCHA_ID).proof();
    let wrong = CaptchaKey::new(OTHER_KEY.to_owned());
    assert_eq!(
        c.validate(CAPTCHA_ID, &wrong, &p).await.unwrap(),
        Verdict::Fail {
            reason: "sign_token error".into()
        }
    );
    let mut forged = p.clone();
    forged.pass_token = "ab".repeat(32);
    assert_eq!(
        c.validate(CAPTCHA_ID, &captcha_key(), &forged)
            .await
            .unwrap(),
        Verdict::Fail {
            reason: "pass_token error".into()
        }
    );
    // Neither consumed the proof.
    assert!(matches!(
        c.validate(CAPTCHA_ID, &captcha_key(), &p).await,
        Ok(Verdict::Pass)
    ));
}

#[tokio::test]
async fn checks_run_in_the_documented_order() {
    let sim = Sim::start().await;
    let p = sim.mint(CAPTCHA_ID);
    let sign = sign_token(CAPTCHA_KEY.as_bytes(), &p.lot_number);
    // Missing captcha_id comes first, whatever else is wrong.
    let a = raw_validate(&sim, "POST", "", "gen_time=abc&sign_token=x").await;
    assert_eq!(
        (a["status"].as_str(), a["code"].as_str()),
        (Some("error"), Some("-50101"))
    );
    let a = raw_validate(&sim, "POST", "captcha_id=nothex", "").await;
    assert_eq!(a["code"], "-50102");
    let a = raw_validate(&sim, "POST", &format!("captcha_id={}", "f".repeat(32)), "").await;
    assert_eq!(a["code"], "-50103");
    let a = raw_validate(
        &sim,
        "POST",
        &format!("captcha_id={CAPTCHA_ID}"),
        "gen_time=abc",
    )
    .await;
    assert_eq!(
        (a["code"].as_str(), a["msg"].as_str()),
        (Some("-50005"), Some("illegal gen_time"))
    );
    // A bad signature fails even with an empty pass_token.
    let body = format!(
        "lot_number={}&gen_time={}&sign_token=bad&pass_token=",
        p.lot_number, p.gen_time
    );
    let a = raw_validate(&sim, "POST", &format!("captcha_id={CAPTCHA_ID}"), &body).await;
    assert_eq!(
        (a["result"].as_str(), a["reason"].as_str()),
        (Some("fail"), Some("sign_token error"))
    );
    let body = format!(
        "lot_number={}&gen_time={}&sign_token={sign}&pass_token=00",
        p.lot_number, p.gen_time
    );
    let a = raw_validate(&sim, "POST", &format!("captcha_id={CAPTCHA_ID}"), &body).await;
    assert_eq!(a["reason"], "pass_token error");
}

#[tokio::test]
async fn get_with_query_parameters_and_percent_encoded_forms_both_work() {
    let sim = Sim::start().await;
    let p = sim.mint(CAPTCHA_ID);
    let sign = sign_token(CAPTCHA_KEY.as_bytes(), &p.lot_number);
    let params = form_urlencoded::Serializer::new(String::new())
        .append_pair("captcha_id", CAPTCHA_ID)
        .append_pair("lot_number", &p.lot_number)
        .append_pair("captcha_output", &p.captcha_output)
        .append_pair("pass_token", &p.pass_token)
        .append_pair("gen_time", &p.gen_time)
        .append_pair("sign_token", &sign)
        .finish();
    let a = raw_validate(&sim, "GET", &params, "").await;
    assert_eq!(a["result"], "success", "{a}");
    assert_eq!(
        a["captcha_args"]["lot_number"],
        p.lot_number.as_str(),
        "{a}"
    );
    // The form body percent-encodes captcha_output's `=` padding, or a
    // `-`/`_`; a random output lacks all three about 1.7% of the time, so take
    // the first of a few that has one.
    let p = (0..20)
        .map(|_| sim.mint(CAPTCHA_ID))
        .find(|p| p.captcha_output.contains(['=', '-', '_']))
        .expect("one of 20 random outputs has a character to encode");
    let c = client(&sim, Duration::from_secs(2)).await;
    assert!(matches!(
        c.validate(CAPTCHA_ID, &captcha_key(), &p.proof()).await,
        Ok(Verdict::Pass)
    ));
    let record = sim.sim.stats().records.pop().unwrap();
    assert_eq!(record.method, "POST");
    assert_eq!(record.captcha_id_in_query.as_deref(), Some(CAPTCHA_ID));
    assert_eq!(
        record.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(record.sign_token_ok);
}

#[tokio::test]
async fn outages_map_to_the_four_kinds_of_validate_error() {
    let sim = Sim::start().await;
    let c = client(&sim, Duration::from_millis(300)).await;
    let p = sim.mint(CAPTCHA_ID).proof();
    sim.sim
        .set_behaviour(Behaviour::Slow(Duration::from_secs(2)));
    assert!(matches!(
        c.validate(CAPTCHA_ID, &captcha_key(), &p).await,
        Err(ValidateError::Timeout)
    ));
    sim.sim.set_behaviour(Behaviour::Garbage);
    assert!(matches!(
        c.validate(CAPTCHA_ID, &captcha_key(), &p).await,
        Err(ValidateError::Unparsable(_))
    ));
    sim.sim.set_behaviour(Behaviour::Http500);
    assert!(
        matches!(c.validate(CAPTCHA_ID, &captcha_key(), &p).await, Err(ValidateError::Status(s)) if s == 500)
    );
    sim.sim.set_behaviour(Behaviour::Drop);
    assert!(matches!(
        c.validate(CAPTCHA_ID, &captcha_key(), &p).await,
        Err(ValidateError::Transport(_))
    ));
    sim.sim.set_behaviour(Behaviour::Error);
    assert!(
        matches!(c.validate(CAPTCHA_ID, &captcha_key(), &p).await, Ok(Verdict::Error { code, .. }) if code == "-50000")
    );
    sim.sim.set_behaviour(Behaviour::Normal);
    assert!(matches!(
        c.validate(CAPTCHA_ID, &captcha_key(), &p).await,
        Ok(Verdict::Pass)
    ));
}

#[tokio::test]
async fn the_client_reuses_one_connection_for_many_validations() {
    let sim = Sim::start().await;
    let c = client(&sim, Duration::from_secs(2)).await;
    for _ in 0..200 {
        let p = sim.mint(CAPTCHA_ID).proof();
        assert!(matches!(
            c.validate(CAPTCHA_ID, &captcha_key(), &p).await,
            Ok(Verdict::Pass)
        ));
    }
    let stats = sim.sim.stats();
    assert_eq!(stats.validations, 200);
    assert_eq!(stats.connections, 1);
}

#[tokio::test]
async fn the_http_control_endpoints_mint_switch_behaviour_and_report() {
    let sim = Sim::start().await;
    let mint = raw_exchange(
        sim.addr,
        format!("POST /_sim/mint?captcha_id={CAPTCHA_ID} HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    let json: serde_json::Value =
        serde_json::from_str(mint.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    for field in [
        "lot_number",
        "captcha_output",
        "pass_token",
        "gen_time",
        "captcha_id",
    ] {
        assert!(
            json[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field} in {json}"
        );
    }
    let body = r#"{"mode":"http500"}"#;
    let set = raw_exchange(
        sim.addr,
        format!("POST /_sim/behaviour HTTP/1.1\r\nHost: s\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert!(set.starts_with("HTTP/1.1 200"), "{set}");
    assert_eq!(sim.sim.behaviour(), Behaviour::Http500);
    let stats = raw_exchange(
        sim.addr,
        b"GET /_sim/stats HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(stats.contains("\"connections\":3"), "{stats}");
}

#[tokio::test]
async fn batch_minting_gives_distinct_valid_proofs_and_bounds_the_count() {
    let sim = Sim::start().await;
    let mint = |query: String| {
        let wire = format!(
            "POST /_sim/mint?{query} HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        async move { raw_exchange(sim.addr, wire.as_bytes(), Duration::from_secs(5)).await }
    };
    let raw = mint(format!("captcha_id={CAPTCHA_ID}&count=50")).await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let proofs: Vec<serde_json::Value> =
        serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(proofs.len(), 50);
    let lots: std::collections::HashSet<&str> = proofs
        .iter()
        .map(|p| p["lot_number"].as_str().unwrap())
        .collect();
    assert_eq!(lots.len(), 50, "every lot_number is new");

    let client = client(&sim, Duration::from_secs(2)).await;
    for p in [&proofs[0], &proofs[49]] {
        let proof = gatekeeper::geetest::Proof {
            lot_number: p["lot_number"].as_str().unwrap().to_owned(),
            captcha_output: p["captcha_output"].as_str().unwrap().to_owned(),
            pass_token: p["pass_token"].as_str().unwrap().to_owned(),
            gen_time: p["gen_time"].as_str().unwrap().to_owned(),
        };
        let verdict = client
            .validate(CAPTCHA_ID, &captcha_key(), &proof)
            .await
            .unwrap();
        assert!(matches!(verdict, Verdict::Pass), "{verdict:?}");
    }

    for bad in ["0", "100001", "many"] {
        let raw = mint(format!("captcha_id={CAPTCHA_ID}&count={bad}")).await;
        assert!(raw.starts_with("HTTP/1.1 400"), "count={bad}: {raw}");
        assert!(raw.contains("count must be 1 to 100000"), "{raw}");
    }
}
