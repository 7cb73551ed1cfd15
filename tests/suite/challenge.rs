//! Issue 18 A: a browser's navigation without a proof is kept and answered
//! with the challenge page; the proof, posted to the reserved release path,
//! forwards the kept request exactly as it was sent, once.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::common::*;

const ROUTES: &str =
    "[[route]]\npath = \"/redirect/comment\"\n\n[[route]]\npath = \"/plain\"\nchallenge = false\n";

/// A browser's form post, as a navigation.
fn navigation(url: &str, content_type: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("sec-fetch-mode", "navigate")
        .header("content-type", content_type)
        .header("referer", url)
        .header("x-custom", "kept")
        .body(Full::new(body.into()))
        .unwrap()
}

/// The kept request's id and the binding cookie (`name=value`), from the page's answer.
fn challenge_of(answer: &Answer) -> (String, String) {
    let set_cookie = answer
        .headers
        .get("set-cookie")
        .expect("the page sets the binding cookie")
        .to_str()
        .unwrap();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    let (name, _) = pair.split_once('=').unwrap();
    let id = name
        .strip_prefix("__Host-gatekeeper-")
        .expect("a __Host- cookie");
    assert!(
        answer.text().contains(&format!("value=\"{id}\"")),
        "the page's form carries the id"
    );
    (id.to_owned(), pair)
}

/// A fresh proof, minted over HTTP by the simulator's /_sim/mint, form-encoded.
async fn mint(sim: &Sim) -> String {
    let request = format!(
        "POST /_sim/mint?captcha_id={CAPTCHA_ID} HTTP/1.1\r\nHost: sim\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let raw = raw_exchange(sim.addr, request.as_bytes(), Duration::from_secs(2)).await;
    let (_, body) = raw.split_once("\r\n\r\n").expect("an answer");
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(body).expect("a JSON proof");
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in &fields {
        form.append_pair(name, value.as_str().unwrap_or_default());
    }
    form.finish()
}

async fn release(
    client: &TestClient,
    url: &str,
    id: &str,
    cookie: Option<&str>,
    proof: &str,
) -> Answer {
    let mut req = Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let body = format!("challenge={id}&{proof}");
    client.send(req.body(Full::new(body.into())).unwrap()).await
}

#[tokio::test]
async fn a_kept_form_post_is_released_once_exactly_as_sent() {
    let env = Env::start(ROUTES).await;
    let client = env.client(false);
    let url = env.https_url("/redirect/comment?draft=1");
    let form = "name=ann&text=caf%C3%A9+%26+more";
    let kept = client
        .send(navigation(&url, "application/x-www-form-urlencoded", form))
        .await;
    assert_eq!(kept.status, StatusCode::FORBIDDEN);
    assert_eq!(kept.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(kept.headers["cache-control"], "no-store");
    let csp = kept.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains(&format!("http://{}", env.sim.addr)), "{csp}");
    let set_cookie = kept.headers["set-cookie"].to_str().unwrap();
    for part in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    assert!(
        kept.text()
            .contains(&format!("http://{}/gt4.js", env.sim.addr))
    );
    let (id, cookie) = challenge_of(&kept);
    assert_eq!(env.upstream.count(), 0, "nothing is forwarded while kept");
    assert_eq!(metric(env.admin, "gatekeeper_kept_requests ").await, 1.0);

    let release_url = env.https_url("/.gatekeeper/release");
    let proof = mint(&env.sim).await;
    let released = release(&client, &release_url, &id, Some(&cookie), &proof).await;
    assert_eq!(
        released.status,
        StatusCode::SEE_OTHER,
        "{}",
        released.text()
    );
    assert_eq!(released.headers["location"], "/done?from=app");
    let cookies: Vec<_> = released
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("session=app")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("__Host-gatekeeper-{id}=;")) && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    let seen = env.upstream.requests();
    assert_eq!(seen.len(), 1);
    let arrived = &seen[0];
    assert_eq!(arrived.method, http::Method::POST);
    assert_eq!(arrived.uri, "/redirect/comment?draft=1");
    assert_eq!(&arrived.body[..], form.as_bytes());
    assert_eq!(arrived.headers["x-gatekeeper-captcha"], "pass");
    assert_eq!(arrived.headers["x-custom"], "kept");
    assert_eq!(arrived.headers["x-forwarded-proto"], "https");
    assert_eq!(arrived.headers["x-forwarded-for"], "127.0.0.1");
    assert!(arrived.headers.contains_key("x-request-id"));
    assert!(
        !arrived.headers.contains_key("cookie"),
        "the kept request had none"
    );

    // Single use: the same id (and cookie) again finds nothing.
    let again = release(
        &client,
        &release_url,
        &id,
        Some(&cookie),
        &mint(&env.sim).await,
    )
    .await;
    assert_eq!(again.status, StatusCode::GONE);
    assert!(again.text().contains("expired"), "{}", again.text());
    assert_eq!(env.upstream.count(), 1);

    let m = |s: &'static str| metric(env.admin, s);
    assert_eq!(
        m("gatekeeper_challenges_total{outcome=\"shown\"}").await,
        1.0
    );
    assert_eq!(
        m("gatekeeper_challenges_total{outcome=\"passed\"}").await,
        1.0
    );
    assert_eq!(
        m("gatekeeper_challenges_total{outcome=\"expired\"}").await,
        1.0
    );
    assert_eq!(m("gatekeeper_kept_requests ").await, 0.0);
    assert_eq!(m("gatekeeper_kept_request_bytes ").await, 0.0);
    env.shutdown().await;
}

#[tokio::test]
async fn a_multipart_post_with_a_file_survives_byte_for_byte_over_h2() {
    let env = Env::start(ROUTES).await;
    let client = env.client(true);
    let file: Vec<u8> = (0..=255u8).cycle().take(40_000).collect();
    let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    body.extend_from_slice(&file);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let url = env.https_url("/redirect/comment");
    let kept = client
        .send(navigation(
            &url,
            "multipart/form-data; boundary=XyZ",
            body.clone(),
        ))
        .await;
    assert_eq!(kept.status, StatusCode::FORBIDDEN);
    let (id, cookie) = challenge_of(&kept);
    assert_eq!(env.upstream.count(), 0);

    let released = release(
        &client,
        &env.https_url("/.gatekeeper/release"),
        &id,
        Some(&cookie),
        &mint(&env.sim).await,
    )
    .await;
    assert_eq!(released.status, StatusCode::SEE_OTHER);
    let arrived = env.upstream.last();
    assert_eq!(
        arrived.body,
        Bytes::from(body),
        "the file arrives byte for byte"
    );
    assert_eq!(
        arrived.headers["content-type"],
        "multipart/form-data; boundary=XyZ"
    );
    assert_eq!(arrived.headers["x-gatekeeper-captcha"], "pass");
    assert_eq!(env.upstream.count(), 1);
    env.shutdown().await;
}

#[tokio::test]
async fn a_wrong_proof_keeps_the_request_for_a_right_one() {
    let env = Env::start(ROUTES).await;
    let client = env.client(false);
    let url = env.https_url("/redirect/comment");
    let kept = client
        .send(navigation(&url, "application/x-www-form-urlencoded", "a=1"))
        .await;
    let (id, cookie) = challenge_of(&kept);
    let release_url = env.https_url("/.gatekeeper/release");

    let good = mint(&env.sim).await;
    let forged = good.replace("captcha_output=", "captcha_output=00");
    let refused = release(&client, &release_url, &id, Some(&cookie), &forged).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.text().contains("did not pass"),
        "{}",
        refused.text()
    );
    assert!(
        refused.text().contains(&format!("value=\"{id}\"")),
        "the retry page carries the same id"
    );
    assert_eq!(env.upstream.count(), 0);

    let released = release(
        &client,
        &release_url,
        &id,
        Some(&cookie),
        &mint(&env.sim).await,
    )
    .await;
    assert_eq!(released.status, StatusCode::SEE_OTHER);
    assert_eq!(env.upstream.count(), 1);
    assert_eq!(&env.upstream.last().body[..], b"a=1");
    assert_eq!(
        metric(
            env.admin,
            "gatekeeper_challenges_total{outcome=\"refused\"}"
        )
        .await,
        1.0
    );
    env.shutdown().await;
}

#[tokio::test]
async fn another_browser_cannot_release_a_kept_request() {
    let env = Env::start(ROUTES).await;
    let client = env.client(false);
    let url = env.https_url("/redirect/comment");
    let mine = client
        .send(navigation(
            &url,
            "application/x-www-form-urlencoded",
            "who=me",
        ))
        .await;
    let theirs = client
        .send(navigation(
            &url,
            "application/x-www-form-urlencoded",
            "who=them",
        ))
        .await;
    let (id, cookie) = challenge_of(&mine);
    let (_, their_cookie) = challenge_of(&theirs);
    let release_url = env.https_url("/.gatekeeper/release");

    let without = release(&client, &release_url, &id, None, &mint(&env.sim).await).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
    let forged = their_cookie.replacen(
        their_cookie.split('=').next().unwrap(),
        &format!("__Host-gatekeeper-{id}"),
        1,
    );
    let other = release(
        &client,
        &release_url,
        &id,
        Some(&forged),
        &mint(&env.sim).await,
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert!(other.text().contains("expired"));
    assert_eq!(env.upstream.count(), 0, "nothing is forwarded");

    // Still kept for its own browser.
    let mine = release(
        &client,
        &release_url,
        &id,
        Some(&cookie),
        &mint(&env.sim).await,
    )
    .await;
    assert_eq!(mine.status, StatusCode::SEE_OTHER);
    assert_eq!(&env.upstream.last().body[..], b"who=me");
    env.shutdown().await;
}

#[tokio::test]
async fn an_expired_kept_request_is_gone() {
    let env = Env::start(&format!("[challenge]\nttl = \"1s\"\n\n{ROUTES}")).await;
    let client = env.client(false);
    let kept = client
        .send(navigation(
            &env.https_url("/redirect/comment"),
            "application/x-www-form-urlencoded",
            "a=1",
        ))
        .await;
    let (id, cookie) = challenge_of(&kept);
    assert_eq!(metric(env.admin, "gatekeeper_kept_requests ").await, 1.0);
    let release_url = env.https_url("/.gatekeeper/release");
    // A release without a proof is refused (403) while the request is kept,
    // and finds it gone (410) once the TTL has passed.
    wait_until_async(
        "the kept request to expire",
        Duration::from_secs(5),
        || async {
            let answer = release(&client, &release_url, &id, Some(&cookie), "x=1").await;
            assert!(
                matches!(answer.status, StatusCode::FORBIDDEN | StatusCode::GONE),
                "{}",
                answer.status
            );
            answer.status == StatusCode::GONE
        },
    )
    .await;
    let late = release(
        &client,
        &release_url,
        &id,
        Some(&cookie),
        &mint(&env.sim).await,
    )
    .await;
    assert_eq!(late.status, StatusCode::GONE);
    assert_eq!(env.upstream.count(), 0);
    // The gauges read the store when scraped: an expiry shows without
    // another request being kept or released.
    assert_eq!(metric(env.admin, "gatekeeper_kept_requests ").await, 0.0);
    assert_eq!(
        metric(env.admin, "gatekeeper_kept_request_bytes ").await,
        0.0
    );
    env.shutdown().await;
}

#[tokio::test]
async fn scripts_partial_proofs_and_plain_routes_keep_todays_answers() {
    let env = Env::start(ROUTES).await;
    let client = env.client(false);
    let url = env.https_url("/redirect/comment");
    let json = client
        .send(
            Request::post(&url)
                .header("accept", "application/json")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from("a=1")))
                .unwrap(),
        )
        .await;
    assert_eq!(json.status, StatusCode::FORBIDDEN);
    assert_eq!(json.error_code(), "captcha_required");
    assert_eq!(
        json.json()["reason"],
        "missing captcha fields: lot_number, captcha_output, pass_token, gen_time"
    );
    for (name, value) in [
        ("x-requested-with", "XMLHttpRequest"),
        ("sec-fetch-mode", "cors"),
    ] {
        let xhr = client
            .send(
                Request::post(&url)
                    .header("accept", "text/html")
                    .header(name, value)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from("a=1")))
                    .unwrap(),
            )
            .await;
        assert_eq!(xhr.status, StatusCode::FORBIDDEN);
        assert!(!xhr.headers.contains_key("set-cookie"), "{name}: not kept");
    }
    let partial = client
        .send(navigation(
            &url,
            "application/x-www-form-urlencoded",
            "a=1&lot_number=x",
        ))
        .await;
    assert!(
        !partial.headers.contains_key("set-cookie"),
        "a partial proof is not kept"
    );
    let plain = client
        .send(navigation(
            &env.https_url("/plain"),
            "application/x-www-form-urlencoded",
            "a=1",
        ))
        .await;
    assert_eq!(plain.status, StatusCode::FORBIDDEN);
    assert!(
        !plain.headers.contains_key("set-cookie"),
        "challenge = false"
    );
    assert_eq!(
        metric(env.admin, "gatekeeper_challenges_total{outcome=\"shown\"}").await,
        0.0
    );
    assert_eq!(env.upstream.count(), 0);
    env.shutdown().await;
}

#[tokio::test]
async fn a_full_store_refuses_the_next_request_with_a_reason() {
    let env = Env::start(&format!("[challenge]\nmax_entries = 1\n\n{ROUTES}")).await;
    let client = env.client(false);
    let url = env.https_url("/redirect/comment");
    let first = client
        .send(navigation(&url, "application/x-www-form-urlencoded", "a=1"))
        .await;
    assert_eq!(first.status, StatusCode::FORBIDDEN);
    let second = client
        .send(navigation(&url, "application/x-www-form-urlencoded", "a=2"))
        .await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        second
            .text()
            .to_lowercase()
            .contains("too many requests are waiting for a captcha"),
        "{}",
        second.text()
    );
    assert!(second.headers.contains_key("retry-after"));
    assert_eq!(
        metric(env.admin, "gatekeeper_challenges_total{outcome=\"full\"}").await,
        1.0
    );
    env.shutdown().await;
}

#[tokio::test]
async fn gatekeepers_own_paths_are_never_forwarded() {
    let env = Env::start(ROUTES).await;
    let client = env.client(false);
    let other = client.get(&env.https_url("/.gatekeeper/other")).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    // Matched on the normalised path.
    let dotted = client.get(&env.https_url("/x/../.gatekeeper/other")).await;
    assert_eq!(dotted.status, StatusCode::NOT_FOUND);
    let get_release = client.get(&env.https_url("/.gatekeeper/release")).await;
    assert_eq!(get_release.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get_release.headers["allow"], "POST");
    let script = client
        .get(&env.https_url("/.gatekeeper/challenge.js"))
        .await;
    assert_eq!(script.status, StatusCode::OK);
    let etag = script.headers["etag"].clone();
    let cached = client
        .send(
            Request::get(env.https_url("/.gatekeeper/challenge.js"))
                .header("if-none-match", etag)
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.body.is_empty());
    assert_eq!(env.upstream.count(), 0);
    env.shutdown().await;
}

#[ignore = "needs redis-server (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn a_request_kept_by_one_instance_is_released_by_another_through_redis() {
    let redis = RedisServer::start();
    let Fleet {
        prefix,
        certs,
        upstream,
        sim,
        a,
        b,
    } = Fleet::start(&redis, "", ROUTES).await;
    let client = TestClient::new(&certs, false);
    let on = |server: &gatekeeper::server::RunningServer, path: &str| {
        format!(
            "https://localhost:{}{path}",
            server.https_addr.unwrap().port()
        )
    };
    let kept = client
        .send(navigation(
            &on(&a, "/redirect/comment"),
            "application/x-www-form-urlencoded",
            "fleet=1",
        ))
        .await;
    assert_eq!(kept.status, StatusCode::FORBIDDEN);
    let (id, cookie) = challenge_of(&kept);
    assert!(!redis.keys(&format!("{prefix}*{id}")).await.is_empty());
    let released = release(
        &client,
        &on(&b, "/.gatekeeper/release"),
        &id,
        Some(&cookie),
        &mint(&sim).await,
    )
    .await;
    assert_eq!(
        released.status,
        StatusCode::SEE_OTHER,
        "{}",
        released.text()
    );
    assert_eq!(&upstream.last().body[..], b"fleet=1");
    let again = release(
        &client,
        &on(&a, "/.gatekeeper/release"),
        &id,
        Some(&cookie),
        &mint(&sim).await,
    )
    .await;
    assert_eq!(again.status, StatusCode::GONE, "taken once, fleet-wide");
    assert_eq!(upstream.count(), 1);
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_kept_request_outlives_a_reload() {
    let mut env = Env::start(ROUTES).await;
    let client = env.client(false);
    let kept = client
        .send(navigation(
            &env.https_url("/redirect/comment"),
            "application/x-www-form-urlencoded",
            "across=reload",
        ))
        .await;
    let (id, cookie) = challenge_of(&kept);
    let server = env.server.as_mut().unwrap();
    server.reload().await.expect("the reload succeeds");
    let released = release(
        &client,
        &env.https_url("/.gatekeeper/release"),
        &id,
        Some(&cookie),
        &mint(&env.sim).await,
    )
    .await;
    assert_eq!(released.status, StatusCode::SEE_OTHER);
    assert_eq!(&env.upstream.last().body[..], b"across=reload");
    env.shutdown().await;
}
