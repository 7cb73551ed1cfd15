//! Issue 21: the throttle of refused proofs shared by a fleet through a real
//! Redis server (`[throttle] store`).

use std::time::Duration;

use crate::common::*;
use http::StatusCode;

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// Two instances sharing `redis` (replay store), one gated route, a throttle
/// of 3 refusals an hour stored as `store` says.
async fn fleet(redis: &RedisServer, on_store_error: &str, store: &str) -> Fleet {
    let replay = format!("on_store_error = \"{on_store_error}\"\ntimeout = \"300ms\"\n");
    let rest = format!(
        "[[route]]\npath = \"/login\"\n\n[throttle]\nrate = \"1/h\"\nburst = 3\nstore = \"{store}\"\n"
    );
    Fleet::start(redis, &replay, &rest).await
}

fn client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// The status, `Retry-After` (if any) and body of a form POST to /login.
async fn post(
    c: &HttpClient,
    server: &gatekeeper::server::RunningServer,
    proof: &ProofFields,
) -> (StatusCode, Option<u64>, String) {
    use http_body_util::BodyExt;
    let req = http::Request::post(format!("http://{}/login", server.http_addr.unwrap()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(proof.form())))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}

/// The key's time to live, in ms.
async fn pttl(redis: &RedisServer, key: &str) -> i64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn metrics(c: &HttpClient, server: &gatekeeper::server::RunningServer) -> String {
    use http_body_util::BodyExt;
    let url = format!("http://{}/metrics", server.admin_addr.unwrap());
    let resp = c.get(url.parse().unwrap()).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// A proof GeeTest fails: a refusal the throttle counts.
fn failing(f: &Fleet) -> ProofFields {
    let mut p = f.sim.mint(CAPTCHA_ID);
    p.pass_token = "ab".repeat(32);
    p
}

#[ignore = "needs redis-server (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn the_fourth_refused_proof_is_throttled_whichever_instance_it_reaches() {
    let redis = RedisServer::start();
    let f = fleet(&redis, "deny", "replay").await;
    let c = client();
    // Three refusals, spread over both instances: each alone has seen fewer
    // than its burst.
    for server in [&f.a, &f.b, &f.a] {
        let (status, _, body) = post(&c, server, &failing(&f)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let validations = f.sim.sim.stats().validations;
    for server in [&f.b, &f.a] {
        // Even a valid proof waits now, on either instance.
        let (status, retry, body) = post(&c, server, &f.sim.mint(CAPTCHA_ID)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(body.contains("captcha_throttled"), "{body}");
        let retry = retry.expect("Retry-After");
        assert!((60..=3600).contains(&retry), "Retry-After {retry}");
    }
    assert_eq!(
        f.sim.sim.stats().validations,
        validations,
        "GeeTest was asked while throttled"
    );
    assert_eq!(f.upstream.count(), 0);
    // One key for the address, which expires when its bucket is full again.
    let keys = redis.keys(&format!("{}throttle:*", f.prefix)).await;
    assert_eq!(keys, [format!("{}throttle:127.0.0.1", f.prefix)]);
    let ttl_ms = pttl(&redis, &keys[0]).await;
    assert!(
        (2 * 3600 * 1000..=3 * 3600 * 1000).contains(&ttl_ms),
        "PTTL {ttl_ms}: three refusals at 1/h are forgiven in three hours"
    );
}

#[ignore = "needs redis-server (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn redis_down_with_local_throttles_on_each_instance_alone_and_redis_back_is_shared_again() {
    let mut redis = RedisServer::start_owned();
    let f = fleet(&redis, "local", "replay").await;
    let c = client();
    for server in [&f.a, &f.a] {
        assert_eq!(
            post(&c, server, &failing(&f)).await.0,
            StatusCode::FORBIDDEN
        );
    }

    redis.stop();
    // A remembers its own two refusals: one more, then 429.
    let (status, _, body) = post(&c, &f.a, &failing(&f)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, body) = post(&c, &f.a, &failing(&f)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // B never saw them: its refusals are still answered, neither 429 nor 503.
    let (status, _, body) = post(&c, &f.b, &failing(&f)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("captcha_failed"), "{body}");

    assert!(redis.restart());
    // The restarted Redis is empty. Once B stores a proof there again, its
    // throttle is read from Redis too.
    let mut back = false;
    for _ in 0..50 {
        assert_eq!(
            post(&c, &f.b, &f.sim.mint(CAPTCHA_ID)).await.0,
            StatusCode::OK
        );
        if !redis.keys(&format!("{}lot:*", f.prefix)).await.is_empty() {
            back = true;
            break;
        }
        // The poll interval: 50 tries.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "gatekeeper never used Redis again");
    // The first commands on a restarted Redis can still fail while the
    // connection manager settles (a reconnect the probe started can drop a
    // command sent on the connection before it), and each failure falls back
    // to the local throttle for a probe interval. Go on once a few valid
    // posts, a probe interval apart, meet no store error.
    let errors = |m: String| {
        m.lines()
            .filter(|l| {
                l.starts_with("gatekeeper_throttle_store_errors_total ")
                    || l.starts_with("gatekeeper_replay_store_errors_total ")
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut settled = false;
    for _ in 0..50 {
        let before = errors(metrics(&c, &f.b).await);
        for _ in 0..3 {
            assert_eq!(
                post(&c, &f.b, &f.sim.mint(CAPTCHA_ID)).await.0,
                StatusCode::OK
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if errors(metrics(&c, &f.b).await) == before {
            settled = true;
            break;
        }
    }
    assert!(settled, "Redis calls kept failing after Redis came back");
    // B has one refusal of its own in memory and a fresh bucket in Redis:
    // three refusals pass before 429, as Redis counts them, not two.
    for _ in 0..3 {
        assert_eq!(post(&c, &f.b, &failing(&f)).await.0, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        post(&c, &f.b, &failing(&f)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        redis.keys(&format!("{}throttle:*", f.prefix)).await.len(),
        1
    );
}

#[ignore = "needs redis-server (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn a_throttle_redis_of_its_own_down_with_deny_is_503_without_asking_geetest_and_back_passes()
{
    let replay_redis = RedisServer::start();
    let mut throttle_redis = RedisServer::start_owned();
    let f = fleet(&replay_redis, "deny", &throttle_redis.url()).await;
    let c = client();
    assert_eq!(post(&c, &f.a, &failing(&f)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        throttle_redis
            .keys(&format!("{}throttle:*", f.prefix))
            .await
            .len(),
        1,
        "the bucket is in the throttle's own Redis"
    );
    assert!(
        replay_redis
            .keys(&format!("{}throttle:*", f.prefix))
            .await
            .is_empty()
    );

    throttle_redis.stop();
    let validations = f.sim.sim.stats().validations;
    let p = f.sim.mint(CAPTCHA_ID);
    let (status, _, body) = post(&c, &f.a, &p).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("captcha_unavailable"), "{body}");
    assert_eq!(f.sim.sim.stats().validations, validations);
    assert_eq!(f.upstream.count(), 0);

    assert!(throttle_redis.restart());
    // The same proof, never judged, passes once the probe finds Redis back.
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = post(&c, &f.a, &p).await.0;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        // The poll interval: 50 tries.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics(&c, &f.a).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gatekeeper_throttle_store_errors_total ")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
}
