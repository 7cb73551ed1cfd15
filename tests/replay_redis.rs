//! Issue 4: replay memory shared by a fleet through a real Redis server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;

/// Two gatekeepers (A and B) in front of one upstream, sharing `redis`.
struct Fleet {
    /// This fleet's Redis key prefix, so a shared Redis can hold others.
    prefix: String,
    certs: TestCerts,
    upstream: Upstream,
    sim: Sim,
    a: gatekeeper::server::RunningServer,
    b: gatekeeper::server::RunningServer,
}

async fn fleet(redis: &RedisServer, on_store_error: &str) -> Fleet {
    let certs = TestCerts::new();
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    // A prefix per fleet keeps tests sharing one Redis apart.
    let prefix = format!("gk-test-{}:", free_port());
    let extra = format!(
        "[replay]\nstore = \"{}\"\nkey_prefix = \"{prefix}\"\non_store_error = \"{on_store_error}\"\ntimeout = \"300ms\"\n\n[[route]]\npath = \"/login\"\n",
        redis.url()
    );
    let text = config_text(&certs, upstream.addr, &sim.url(), &extra);
    let a = gatekeeper::server::start(parse_config(&text, certs.dir.path()))
        .await
        .unwrap();
    let b = gatekeeper::server::start(parse_config(&text, certs.dir.path()))
        .await
        .unwrap();
    Fleet {
        prefix,
        certs,
        upstream,
        sim,
        a,
        b,
    }
}

fn client() -> Arc<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
> {
    Arc::new(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http(),
    )
}

async fn post(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    server: &gatekeeper::server::RunningServer,
    proof: &ProofFields,
) -> (StatusCode, String) {
    use http_body_util::BodyExt;
    let req = http::Request::post(format!("http://{}/login", server.http_addr.unwrap()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(proof.form())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_proof_used_on_one_instance_is_refused_on_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let f = fleet(&redis, "deny").await;
    let c = client();
    let p = f.sim.mint(CAPTCHA_ID);
    assert_eq!(post(&c, &f.a, &p).await.0, StatusCode::OK);
    let (status, body) = post(&c, &f.b, &p).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("captcha_replayed"), "{body}");
    assert_eq!(f.upstream.count(), 1);
    assert_eq!(
        redis.keys(&format!("{}*", f.prefix)).await.len(),
        1,
        "one key per lot_number"
    );
    drop(f.certs);
}

#[tokio::test]
async fn two_hundred_concurrent_submissions_across_two_instances_forward_exactly_one() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let f = Arc::new(fleet(&redis, "deny").await);
    let c = client();
    let p = f.sim.mint(CAPTCHA_ID);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (f, c, p) = (f.clone(), c.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            let server = if i % 2 == 0 { &f.a } else { &f.b };
            post(&c, server, &p).await
        }));
    }
    let mut forwarded = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        if status == StatusCode::OK {
            forwarded += 1;
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert!(body.contains("captcha_replayed"), "{body}");
        }
    }
    assert_eq!(forwarded, 1);
    assert_eq!(f.upstream.count(), 1);
}

#[tokio::test]
async fn redis_down_with_deny_is_503_and_redis_back_is_used_without_a_restart() {
    let Some(mut redis) = RedisServer::start_owned() else {
        return;
    };
    let f = fleet(&redis, "deny").await;
    let c = client();
    assert_eq!(
        post(&c, &f.a, &f.sim.mint(CAPTCHA_ID)).await.0,
        StatusCode::OK
    );

    redis.stop();
    let p = f.sim.mint(CAPTCHA_ID);
    let (status, body) = post(&c, &f.a, &p).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("captcha_unavailable"), "{body}");

    assert!(redis.restart());
    // The same proof, never judged, now passes on the other instance.
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = post(&c, &f.b, &p).await.0;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        post(&c, &f.a, &p).await.0,
        StatusCode::FORBIDDEN,
        "A sees B's use through Redis"
    );
    assert_eq!(redis.keys(&format!("{}*", f.prefix)).await.len(), 1);
}

#[tokio::test]
async fn redis_down_with_local_falls_back_to_memory_and_still_refuses_replays_here() {
    let Some(mut redis) = RedisServer::start_owned() else {
        return;
    };
    let f = fleet(&redis, "local").await;
    let c = client();
    let before = f.sim.mint(CAPTCHA_ID);
    assert_eq!(post(&c, &f.a, &before).await.0, StatusCode::OK);

    redis.stop();
    let during = f.sim.mint(CAPTCHA_ID);
    assert_eq!(
        post(&c, &f.a, &during).await.0,
        StatusCode::OK,
        "local fallback keeps serving"
    );
    assert_eq!(
        post(&c, &f.a, &during).await.0,
        StatusCode::FORBIDDEN,
        "and refuses a replay on the same instance"
    );
    assert_eq!(
        post(&c, &f.a, &before).await.0,
        StatusCode::FORBIDDEN,
        "outcomes from before the outage are mirrored"
    );

    assert!(redis.restart());
    // Proofs keep passing; once one is stored in Redis again, Redis is in use.
    let mut after = f.sim.mint(CAPTCHA_ID);
    for _ in 0..50 {
        after = f.sim.mint(CAPTCHA_ID);
        assert_eq!(post(&c, &f.a, &after).await.0, StatusCode::OK);
        if !redis.keys(&format!("{}*", f.prefix)).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !redis.keys(&format!("{}*", f.prefix)).await.is_empty(),
        "gatekeeper never used Redis again"
    );
    // B refuses what A just used.
    assert_eq!(post(&c, &f.b, &after).await.0, StatusCode::FORBIDDEN);
}
