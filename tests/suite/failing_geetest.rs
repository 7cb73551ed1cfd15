//! Issue 7: a failing GeeTest. Circuit breaker, backup servers, and the
//! per-client throttle of refused proofs.

use std::time::Duration;

use crate::common::*;
use gatekeeper::geetest::{ValidateClient, ValidateError, Verdict};
use gatekeeper::sim::Behaviour;
use http::StatusCode;

#[tokio::test]
async fn an_open_circuit_stops_calling_geetest_and_a_probe_closes_it() {
    let sim = Sim::start().await;
    let client = ValidateClient::with_breaker(
        &[sim.url().parse().unwrap()],
        Duration::from_millis(300),
        3,
        Duration::from_millis(500),
        1,
    );
    sim.sim
        .set_behaviour(Behaviour::Slow(Duration::from_secs(2)));
    for _ in 0..3 {
        let e = client
            .validate(CAPTCHA_ID, &captcha_key(), &sim.mint(CAPTCHA_ID).proof())
            .await
            .unwrap_err();
        assert!(matches!(e, ValidateError::Timeout), "{e}");
    }
    assert!(client.circuit_open(0));
    // While open, requests fail at once without reaching GeeTest.
    let connections = sim.sim.stats().connections;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let e = client
            .validate(CAPTCHA_ID, &captcha_key(), &sim.mint(CAPTCHA_ID).proof())
            .await
            .unwrap_err();
        assert!(matches!(e, ValidateError::CircuitOpen), "{e}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "an open circuit still waited out a timeout"
    );
    assert_eq!(
        sim.sim.stats().connections,
        connections,
        "an open circuit still called GeeTest"
    );

    // GeeTest is back: after the cool-down one probe closes the circuit.
    sim.sim.set_behaviour(Behaviour::Normal);
    let cooling = std::time::Instant::now();
    let verdict = loop {
        match client
            .validate(CAPTCHA_ID, &captcha_key(), &sim.mint(CAPTCHA_ID).proof())
            .await
        {
            Err(ValidateError::CircuitOpen) => {
                assert!(
                    cooling.elapsed() < Duration::from_secs(10),
                    "the circuit never let a probe through"
                );
                // The poll interval, within the deadline above.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => break other.unwrap(),
        }
    };
    assert!(matches!(verdict, Verdict::Pass));
    assert!(!client.circuit_open(0));
}

#[tokio::test]
async fn backup_servers_are_tried_in_order_on_transport_failure() {
    let sim = Sim::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let servers = [
        format!("http://{dead}").parse().unwrap(),
        sim.url().parse().unwrap(),
    ];
    let client = ValidateClient::new(&servers, Duration::from_secs(2));
    let verdict = client
        .validate(CAPTCHA_ID, &captcha_key(), &sim.mint(CAPTCHA_ID).proof())
        .await
        .unwrap();
    assert!(matches!(verdict, Verdict::Pass));
    assert_eq!(sim.sim.stats().validations, 1, "the backup answered");

    // A GeeTest verdict is final: no second server is asked about a fail.
    let mut forged = sim.mint(CAPTCHA_ID).proof();
    forged.pass_token = "ab".repeat(32);
    let other = Sim::start().await;
    let client = ValidateClient::new(
        &[sim.url().parse().unwrap(), other.url().parse().unwrap()],
        Duration::from_secs(2),
    );
    assert!(matches!(
        client.validate(CAPTCHA_ID, &captcha_key(), &forged).await,
        Ok(Verdict::Fail { .. })
    ));
    assert_eq!(other.sim.stats().validations, 0);
}

#[tokio::test]
async fn during_an_outage_the_gate_applies_on_error_without_waiting() {
    let certs = TestCerts::new();
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    let text = config_text(
        &certs,
        upstream.addr,
        &sim.url(),
        "[[route]]\npath = \"/login\"\non_error = \"deny\"\n",
    )
    .replace(
        "timeout = \"1s\"\n\n[captcha.login]",
        "timeout = \"300ms\"\nbreaker_failures = 2\nbreaker_cooldown = \"1m\"\n\n[captcha.login]",
    );
    let server = gatekeeper::server::start(parse_config(&text, certs.dir.path()))
        .await
        .unwrap();
    let url = format!("http://{}/login", server.http_addr.unwrap());
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let post = |body: String| {
        let req = http::Request::post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        client.request(req)
    };
    sim.sim
        .set_behaviour(Behaviour::Slow(Duration::from_secs(5)));
    for _ in 0..2 {
        assert_eq!(
            post(sim.mint(CAPTCHA_ID).form()).await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let connections = sim.sim.stats().connections;
    let started = std::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(
            post(sim.mint(CAPTCHA_ID).form()).await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "requests waited out the timeout during an outage"
    );
    assert_eq!(
        sim.sim.stats().connections,
        connections,
        "GeeTest was still called with the circuit open"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_that_keeps_failing_is_throttled_with_429_before_geetest_is_asked() {
    let env =
        Env::start("[[route]]\npath = \"/login\"\n\n[throttle]\nrate = \"1/h\"\nburst = 3\n").await;
    let c = env.client(false);
    for _ in 0..3 {
        let mut p = env.sim.mint(CAPTCHA_ID);
        p.pass_token = "ab".repeat(32);
        let answer = c.post_form(&env.https_url("/login"), p.form()).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    }
    let validations = env.sim.sim.stats().validations;
    // Even a valid proof waits now: the address has used its refusals.
    let answer = c
        .post_form(&env.https_url("/login"), env.sim.mint(CAPTCHA_ID).form())
        .await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.text()
    );
    assert_eq!(answer.error_code(), "captcha_throttled");
    let retry: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 60, "Retry-After {retry}");
    assert_eq!(
        env.sim.sim.stats().validations,
        validations,
        "GeeTest was asked while throttled"
    );
    assert_eq!(env.upstream.count(), 0);
    // Ungated routes are not throttled.
    assert_eq!(
        c.get(&env.https_url("/elsewhere")).await.status,
        StatusCode::OK
    );
    env.shutdown().await;
}

/// gatekeeper on one worker (one validate connection pool) with a 2 s
/// GeeTest timeout, its cleartext address, and its admin address.
async fn one_worker(
    sim: &Sim,
    upstream: &Upstream,
    certs: &TestCerts,
) -> gatekeeper::server::RunningServer {
    let text = config_text(
        certs,
        upstream.addr,
        &sim.url(),
        "[[route]]\npath = \"/login\"\n",
    )
    .replace("[server]\n", "[server]\nworkers = 1\n")
    .replace(
        "timeout = \"1s\"\n\n[captcha.login]",
        "timeout = \"2s\"\n\n[captcha.login]",
    );
    gatekeeper::server::start(parse_config(&text, certs.dir.path()))
        .await
        .unwrap()
}

/// Sends a gated form post with `proof` over cleartext, then goes away
/// while GeeTest is being asked: once the gate has claimed the lot_number,
/// which it does right before asking (seen in the replay entries gauge).
async fn post_and_go_away(
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    proof: &ProofFields,
) {
    use tokio::io::AsyncWriteExt;
    let entries = "gatekeeper_replay_entries ";
    let before = metric(admin, entries).await;
    let body = proof.form();
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    wait_until_async(
        "the gate to claim the proof and ask GeeTest",
        Duration::from_secs(10),
        || async { metric(admin, entries).await > before },
    )
    .await;
    drop(stream);
}

/// The count of gate decisions with outcome `cancelled`, from /metrics.
async fn cancelled(admin: std::net::SocketAddr) -> u64 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let resp = client
        .get(format!("http://{admin}/metrics").parse().unwrap())
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| {
            l.starts_with("gatekeeper_gate_decisions_total{") && l.contains("outcome=\"cancelled\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits until `n` abandoned requests have been settled.
async fn until_cancelled(admin: std::net::SocketAddr, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cancelled(admin).await < n {
        assert!(
            std::time::Instant::now() < deadline,
            "no `cancelled` decision was counted for an abandoned request"
        );
        // The poll interval, within the deadline above.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_gone_while_geetest_is_asked_settles_its_claim_and_keeps_the_connection() {
    let certs = TestCerts::new();
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    let server = one_worker(&sim, &upstream, &certs).await;
    let addr = server.http_addr.unwrap();
    let admin = server.admin_addr.unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let retry = |p: &ProofFields| {
        let req = http::Request::post(format!("http://{addr}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(p.form())))
            .unwrap();
        client.request(req)
    };

    // GeeTest answers pass, slowly, three times over: each abandoned
    // validation ends on the one pooled connection, and its claim is
    // released (GeeTest then judges a retry again, here: already used).
    sim.sim
        .set_behaviour(Behaviour::Slow(Duration::from_millis(800)));
    for n in 1..=3 {
        let p = sim.mint(CAPTCHA_ID);
        post_and_go_away(addr, admin, &p).await;
        until_cancelled(admin, n).await;
        let validations = sim.sim.stats().validations;
        let answer = retry(&p).await.unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::FORBIDDEN,
            "the retry was not judged by GeeTest"
        );
        assert_eq!(
            sim.sim.stats().validations,
            validations + 1,
            "the retry was refused as a replay instead of asking GeeTest"
        );
    }
    assert_eq!(
        sim.sim.stats().connections,
        1,
        "an abandoned validation threw its pooled connection away"
    );

    // GeeTest cannot answer in time: the claim is released, and once the
    // first validation has ended the same proof is admitted.
    sim.sim
        .set_behaviour(Behaviour::Slow(Duration::from_secs(5)));
    let p = sim.mint(CAPTCHA_ID);
    post_and_go_away(addr, admin, &p).await;
    until_cancelled(admin, 4).await;
    sim.sim.set_behaviour(Behaviour::Normal);
    assert_eq!(retry(&p).await.unwrap().status(), StatusCode::OK);
    assert_eq!(upstream.count(), 1, "an abandoned request was forwarded");

    // GeeTest says fail: the proof is spent, like any failed one.
    let mut forged = sim.mint(CAPTCHA_ID);
    forged.pass_token = "ab".repeat(32);
    sim.sim
        .set_behaviour(Behaviour::Slow(Duration::from_millis(800)));
    post_and_go_away(addr, admin, &forged).await;
    until_cancelled(admin, 5).await;
    sim.sim.set_behaviour(Behaviour::Normal);
    let validations = sim.sim.stats().validations;
    let answer = retry(&forged).await.unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let body = http_body_util::BodyExt::collect(answer.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("captcha_replayed"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(sim.sim.stats().validations, validations);
    server.shutdown(Duration::from_secs(1)).await;
}
