//! Issue 3: the GeeTest gate, through the real TLS proxy to a real upstream,
//! with the simulator as GeeTest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use bytes::Bytes;
use gatekeeper::sim::Behaviour;
use http::{Request, StatusCode};
use http_body_util::Full;

const ROUTES: &str = r#"
[[route]]
path = "/login"
methods = ["POST", "GET"]

[[route]]
path = "/deny"
on_error = "deny"

[[route]]
path = "/form"
reject_redirect = "/form?retry=1"
"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assert_refused(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert_eq!(answer.error_code(), code, "{}", answer.text());
}

#[tokio::test]
async fn a_valid_form_post_is_forwarded_without_the_captcha_fields() {
    let env = Env::start(ROUTES).await;
    let proof = env.sim.mint(CAPTCHA_ID);
    let body = format!(
        "user=alice&{}&note=caf%C3%A9+au+lait&tags=a&tags=&empty=",
        proof.form()
    );
    let answer = env
        .client(false)
        .post_form(&env.https_url("/login?keep=1"), body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let seen = env.upstream.last();
    assert_eq!(
        seen.body,
        "user=alice&note=caf%C3%A9+au+lait&tags=a&tags=&empty="
    );
    assert_eq!(seen.headers["content-length"], seen.body.len().to_string());
    assert_eq!(seen.headers["x-gatekeeper-captcha"], "pass");
    assert_eq!(seen.uri, "/login?keep=1");
    env.shutdown().await;
}

#[tokio::test]
async fn a_valid_json_post_keeps_every_other_member_byte_exact() {
    let env = Env::start(ROUTES).await;
    let p = env.sim.mint(CAPTCHA_ID);
    let body = format!(
        "{{ \"user\" : \"\\u00e9lodie\",\n  \"lot_number\": \"{}\", \"captcha_output\":\"{}\",\"pass_token\":\"{}\", \"gen_time\": {}, \"captcha_id\":\"{}\",\n  \"nested\": {{\"lot_number\": 1}}, \"n\": 1.50 }}",
        p.lot_number, p.captcha_output, p.pass_token, p.gen_time, p.captcha_id
    );
    let answer = env
        .client(true)
        .post(
            &env.https_url("/login"),
            "application/json; charset=utf-8",
            body,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let seen = env.upstream.last();
    let text = String::from_utf8(seen.body.to_vec()).unwrap();
    assert_eq!(
        text,
        "{ \"user\" : \"\\u00e9lodie\",\n  \"nested\": {\"lot_number\": 1}, \"n\": 1.50 }"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_valid_multipart_post_keeps_other_parts_byte_for_byte() {
    let env = Env::start(ROUTES).await;
    let p = env.sim.mint(CAPTCHA_ID);
    let b = "----gkBoundary7MA4YWxk";
    let part = |name: &str, value: &str| {
        format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    };
    let file = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\u{0}\u{1}binary\r\n--not-the-boundary\r\n"
    );
    let mut body = part("comment", "héllo");
    for (k, v) in p.pairs() {
        body.push_str(&part(k, v));
    }
    body.push_str(&file);
    body.push_str(&format!("--{b}--\r\n"));
    let expected = format!("{}{file}--{b}--\r\n", part("comment", "héllo"));
    let answer = env
        .client(false)
        .post(
            &env.https_url("/login"),
            &format!("multipart/form-data; boundary={b}"),
            body,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let seen = env.upstream.last();
    assert_eq!(seen.body, Bytes::from(expected));
    assert_eq!(
        seen.headers["content-type"],
        format!("multipart/form-data; boundary={b}")
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_proof_in_the_query_string_is_accepted_and_stripped() {
    let env = Env::start(ROUTES).await;
    let p = env.sim.mint(CAPTCHA_ID);
    let url = env.https_url(&format!("/login?page=2&{}&q=a%20b", p.form()));
    let answer = env.client(false).get(&url).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(env.upstream.last().uri, "/login?page=2&q=a%20b");
    env.shutdown().await;
}

#[tokio::test]
async fn the_simulator_sees_sign_token_and_captcha_id_as_documented() {
    let env = Env::start(ROUTES).await;
    let p = env.sim.mint(CAPTCHA_ID);
    let answer = env
        .client(false)
        .post_form(&env.https_url("/login"), p.form())
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let stats = env.sim.sim.stats();
    let record = stats
        .records
        .last()
        .expect("the simulator recorded the validation");
    assert_eq!(record.captcha_id_in_query.as_deref(), Some(CAPTCHA_ID));
    assert!(
        record.sign_token_ok,
        "sign_token must be HMAC-SHA256(key, lot_number)"
    );
    assert_eq!(record.lot_number, p.lot_number);
    // The GEETEST.md vector itself.
    assert_eq!(
        gatekeeper::geetest::sign_token(CAPTCHA_KEY.as_bytes(), "4dc3cfc2cdff448cad8d13107198d473"),
        "c99f3aa68104bdcd085f372dc6556a17a5a830a1a3d25125fb0010466977f3d8"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn each_local_refusal_has_its_status_and_code_and_never_reaches_the_upstream() {
    let env = Env::start(&format!("{ROUTES}\n[limits]\nmax_body = \"4KiB\"\n")).await;
    let c = env.client(false);
    let url = env.https_url("/login");

    // fields absent
    assert_refused(
        &c.post_form(&url, "user=a").await,
        StatusCode::FORBIDDEN,
        "captcha_required",
    );
    // malformed lot_number
    let mut p = env.sim.mint(CAPTCHA_ID);
    p.lot_number = "not-hex".into();
    assert_refused(
        &c.post_form(&url, p.form()).await,
        StatusCode::BAD_REQUEST,
        "captcha_malformed",
    );
    // captcha_id not configured for the route (OTHER_ID is known to GeeTest, not to this route)
    let p = env.sim.mint(OTHER_ID);
    assert_refused(
        &c.post_form(&url, p.form()).await,
        StatusCode::BAD_REQUEST,
        "captcha_malformed",
    );
    // gen_time too old, and in the future
    let mut p = env.sim.mint(CAPTCHA_ID);
    p.gen_time = (now() - 3600).to_string();
    assert_refused(
        &c.post_form(&url, p.form()).await,
        StatusCode::FORBIDDEN,
        "captcha_expired",
    );
    p.gen_time = (now() + 3600).to_string();
    assert_refused(
        &c.post_form(&url, p.form()).await,
        StatusCode::FORBIDDEN,
        "captcha_expired",
    );
    // body over max_body
    let p = env.sim.mint(CAPTCHA_ID);
    let big = format!("{}&pad={}", p.form(), "x".repeat(8 * 1024));
    assert_refused(
        &c.post_form(&url, big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    // unsupported Content-Type
    assert_refused(
        &c.post(&url, "text/plain", "hello").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    assert_eq!(env.upstream.count(), 0);
    assert_eq!(
        env.sim.sim.stats().validations,
        0,
        "local checks must not call GeeTest"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn geetest_answers_map_to_failed_rejected_and_replayed() {
    let env = Env::start(ROUTES).await;
    let c = env.client(false);
    let url = env.https_url("/login");

    // result: fail (forged pass_token), with GeeTest's reason
    let mut p = env.sim.mint(CAPTCHA_ID);
    p.pass_token = "0".repeat(64);
    let answer = c.post_form(&url, p.form()).await;
    assert_refused(&answer, StatusCode::FORBIDDEN, "captcha_failed");
    assert_eq!(answer.json()["reason"], "pass_token error");

    // status: error
    env.sim.sim.set_behaviour(Behaviour::Error);
    let p = env.sim.mint(CAPTCHA_ID);
    assert_refused(
        &c.post_form(&url, p.form()).await,
        StatusCode::FORBIDDEN,
        "captcha_rejected",
    );
    env.sim.sim.set_behaviour(Behaviour::Normal);

    // a used proof is replayed
    let p = env.sim.mint(CAPTCHA_ID);
    assert_eq!(c.post_form(&url, p.form()).await.status, StatusCode::OK);
    assert_refused(
        &c.post_form(&url, p.form()).await,
        StatusCode::FORBIDDEN,
        "captcha_replayed",
    );
    // ... also with the lot_number in upper case
    let mut upper = p.clone();
    upper.lot_number = upper.lot_number.to_uppercase();
    assert_refused(
        &c.post_form(&url, upper.form()).await,
        StatusCode::FORBIDDEN,
        "captcha_replayed",
    );

    assert_eq!(env.upstream.count(), 1);
    env.shutdown().await;
}

#[tokio::test]
async fn geetest_outage_with_deny_is_503_and_the_same_proof_works_once_it_is_back() {
    let env = Env::start(ROUTES).await;
    let c = env.client(false);
    let p = env.sim.mint(CAPTCHA_ID);
    for behaviour in [
        Behaviour::Http500,
        Behaviour::Garbage,
        Behaviour::Drop,
        Behaviour::Slow(Duration::from_secs(3)),
    ] {
        env.sim.sim.set_behaviour(behaviour);
        let answer = c.post_form(&env.https_url("/deny"), p.form()).await;
        assert_refused(
            &answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "captcha_unavailable",
        );
        assert!(answer.headers.contains_key("retry-after"));
    }
    env.sim.sim.set_behaviour(Behaviour::Normal);
    assert_eq!(
        c.post_form(&env.https_url("/deny"), p.form()).await.status,
        StatusCode::OK
    );
    assert_eq!(env.upstream.count(), 1);
    env.shutdown().await;
}

#[tokio::test]
async fn geetest_outage_with_allow_lets_the_request_through_marked_fail_open_once() {
    let env = Env::start(ROUTES).await;
    let c = env.client(false);
    env.sim.sim.set_behaviour(Behaviour::Http500);
    let p = env.sim.mint(CAPTCHA_ID);
    let answer = c
        .post_form(&env.https_url("/login"), format!("a=1&{}", p.form()))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let seen = env.upstream.last();
    assert_eq!(seen.headers["x-gatekeeper-captcha"], "fail-open");
    assert_eq!(seen.body, "a=1");
    // Remembered as used.
    assert_refused(
        &c.post_form(&env.https_url("/login"), p.form()).await,
        StatusCode::FORBIDDEN,
        "captcha_replayed",
    );
    env.shutdown().await;
}

#[tokio::test]
async fn fifty_concurrent_submissions_of_one_proof_forward_exactly_one() {
    let env = Env::start(ROUTES).await;
    let p = env.sim.mint(CAPTCHA_ID);
    let client = std::sync::Arc::new(env.client(false));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = client.clone();
        let url = env.https_url("/login");
        let body = p.form();
        tasks.push(tokio::spawn(
            async move { client.post_form(&url, body).await },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        let answer = t.await.unwrap();
        match answer.status {
            StatusCode::OK => ok += 1,
            _ => assert_refused(&answer, StatusCode::FORBIDDEN, "captcha_replayed"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(env.upstream.count(), 1);
    env.shutdown().await;
}

#[tokio::test]
async fn browsers_get_a_page_or_a_redirect_instead_of_json() {
    let env = Env::start(ROUTES).await;
    let c = env.client(false);
    // A partial proof: one with no field at all gets the challenge page
    // instead (`challenge::`).
    let html = Request::post(env.https_url("/login"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from("user=a&lot_number=")))
        .unwrap();
    let answer = c.send(html).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(answer.text().contains("captcha_required"));

    let form = Request::post(env.https_url("/form"))
        .header("accept", "text/html")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from("user=a&lot_number=")))
        .unwrap();
    let answer = c.send(form).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(
        answer.headers["location"],
        "/form?retry=1&captcha_error=captcha_required"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn ungated_requests_pass_untouched_even_with_captcha_like_fields() {
    let env = Env::start(ROUTES).await;
    let p = env.sim.mint(CAPTCHA_ID);
    let body = format!("x=1&{}", p.form());
    let req = Request::post(env.https_url("/elsewhere"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-gatekeeper-captcha", "pass")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    assert_eq!(env.client(false).send(req).await.status, StatusCode::OK);
    let seen = env.upstream.last();
    assert_eq!(seen.body, body);
    assert!(!seen.headers.contains_key("x-gatekeeper-captcha"));
    assert_eq!(env.sim.sim.stats().validations, 0);
    env.shutdown().await;
}

#[tokio::test]
async fn a_full_replay_store_refuses_new_proofs_with_503_and_never_evicts() {
    let env = Env::start(&format!("{ROUTES}\n[replay]\nmax_entries = 1\n")).await;
    let c = env.client(false);
    let first = env.sim.mint(CAPTCHA_ID);
    assert_eq!(
        c.post_form(&env.https_url("/login"), first.form())
            .await
            .status,
        StatusCode::OK
    );
    let answer = c
        .post_form(&env.https_url("/login"), env.sim.mint(CAPTCHA_ID).form())
        .await;
    assert_refused(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "captcha_unavailable",
    );
    // The remembered proof is still refused as a replay: nothing was evicted.
    assert_refused(
        &c.post_form(&env.https_url("/login"), first.form()).await,
        StatusCode::FORBIDDEN,
        "captcha_replayed",
    );
    assert_eq!(env.upstream.count(), 1);
    env.shutdown().await;
}

/// What a refused case is, its request headers, and its body.
type Case = (&'static str, Vec<(&'static str, String)>, String);

/// A multipart body of the proof's five parts, each with `headers` in place
/// of the usual Content-Disposition when its name is `lot_number`.
fn multipart_with(p: &ProofFields, b: &str, lot_number_headers: &str) -> String {
    let mut body = String::new();
    for (k, v) in p.pairs() {
        let headers = if k == "lot_number" {
            lot_number_headers.to_owned()
        } else {
            format!("Content-Disposition: form-data; name=\"{k}\"")
        };
        body.push_str(&format!("--{b}\r\n{headers}\r\n\r\n{v}\r\n"));
    }
    body.push_str(&format!("--{b}--\r\n"));
    body
}

#[tokio::test]
async fn bodies_an_application_could_read_differently_are_refused_before_geetest_and_the_upstream()
{
    let env = Env::start(ROUTES).await;
    let c = env.client(false);
    let url = env.https_url("/login");
    let b = "gkBoundary";
    let multipart = format!("multipart/form-data; boundary={b}");
    let cases: Vec<Case> = {
        let p = || env.sim.mint(CAPTCHA_ID);
        let plain = |p: &ProofFields| {
            multipart_with(p, b, "Content-Disposition: form-data; name=\"lot_number\"")
        };
        vec![
            (
                "two boundary parameters",
                vec![(
                    "content-type",
                    format!("multipart/form-data; boundary={b}; boundary=other"),
                )],
                plain(&p()),
            ),
            (
                "name*= (RFC 7578 §4.2)",
                vec![("content-type", multipart.clone())],
                multipart_with(
                    &p(),
                    b,
                    "Content-Disposition: form-data; name=\"x\"; name*=UTF-8''lot_number",
                ),
            ),
            (
                "two Content-Disposition headers",
                vec![("content-type", multipart.clone())],
                multipart_with(
                    &p(),
                    b,
                    "Content-Disposition: form-data; name=\"x\"\r\nContent-Disposition: form-data; name=\"lot_number\"",
                ),
            ),
            (
                "a disposition that is not form-data",
                vec![("content-type", multipart.clone())],
                multipart_with(
                    &p(),
                    b,
                    "Content-Disposition: attachment; name=\"lot_number\"",
                ),
            ),
            (
                "a backslash-escaped quote in a name",
                vec![("content-type", multipart.clone())],
                multipart_with(
                    &p(),
                    b,
                    "Content-Disposition: form-data; name=\"lot\\\"_number\"",
                ),
            ),
            (
                "a percent-encoded name",
                vec![("content-type", multipart.clone())],
                multipart_with(
                    &p(),
                    b,
                    "Content-Disposition: form-data; name=\"lot%5Fnumber\"",
                ),
            ),
            (
                "bare-LF delimiters",
                vec![("content-type", multipart.clone())],
                plain(&p()).replace("\r\n--", "\n--"),
            ),
            (
                "two Content-Type headers",
                vec![
                    (
                        "content-type",
                        "application/x-www-form-urlencoded".to_owned(),
                    ),
                    ("content-type", "text/plain".to_owned()),
                ],
                p().form(),
            ),
            (
                "a compressed body",
                vec![
                    (
                        "content-type",
                        "application/x-www-form-urlencoded".to_owned(),
                    ),
                    ("content-encoding", "gzip".to_owned()),
                ],
                p().form(),
            ),
            (
                "a form charset other than UTF-8",
                vec![(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-16".to_owned(),
                )],
                p().form(),
            ),
            (
                "a `;` separator",
                vec![(
                    "content-type",
                    "application/x-www-form-urlencoded".to_owned(),
                )],
                format!("{};captcha_id=1", p().form()),
            ),
            (
                "a name PHP reads as a captcha field",
                vec![(
                    "content-type",
                    "application/x-www-form-urlencoded".to_owned(),
                )],
                format!("{}&lot.number=1", p().form()),
            ),
            (
                "a JSON key given twice",
                vec![("content-type", "application/json".to_owned())],
                {
                    let p = p();
                    format!(
                        "{{\"a\":1,\"a\":2,\"lot_number\":\"{}\",\"captcha_output\":\"{}\",\"pass_token\":\"{}\",\"gen_time\":\"{}\"}}",
                        p.lot_number, p.captcha_output, p.pass_token, p.gen_time
                    )
                },
            ),
        ]
    };
    for (what, headers, body) in cases {
        let mut req = Request::post(&url);
        for (name, value) in &headers {
            req = req.header(*name, value);
        }
        let answer = c
            .send(req.body(Full::new(Bytes::from(body))).unwrap())
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            answer.text()
        );
        assert_eq!(
            answer.error_code(),
            "body_ambiguous",
            "{what}: {}",
            answer.text()
        );
    }
    assert_eq!(
        env.upstream.count(),
        0,
        "a refused body reached the upstream"
    );
    assert_eq!(env.sim.sim.stats().validations, 0, "GeeTest was asked");

    // The ordinary multipart shape still passes.
    let p = env.sim.mint(CAPTCHA_ID);
    let body = multipart_with(&p, b, "Content-Disposition: form-data; name=\"lot_number\"");
    let answer = c.post(&url, &multipart, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(env.upstream.count(), 1);
    env.shutdown().await;
}

// ---------------------------------------------------------------- issue 16: what the gate may hold

/// Starts a gated form post of `declared` bytes, sends `sent` of them and
/// stalls, holding the connection open.
async fn stalled_post(
    addr: std::net::SocketAddr,
    declared: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'a'; sent]).await.unwrap();
    s
}

/// A form post with a valid proof, padded to about `size` bytes.
fn padded_form(p: &ProofFields, size: usize) -> String {
    let form = p.form();
    let pad = size.saturating_sub(form.len() + 5);
    format!("{form}&pad={}", "x".repeat(pad))
}

#[tokio::test]
async fn a_gated_body_beyond_the_body_budget_is_refused_at_once_and_a_small_form_still_passes() {
    let env = Env::start(&format!(
        "{ROUTES}\n[limits]\nmax_buffered_bodies = \"64KiB\"\nheader_read_timeout = \"5s\"\n"
    ))
    .await;
    // Holds 60 KiB - 16 KiB (the free allowance) = 44 KiB of the budget.
    let held = stalled_post(env.http, 60 * 1024, 1024).await;
    let admin = env.admin;
    wait_until_async(
        "the stalled body's reservation",
        Duration::from_secs(10),
        || async { metric(admin, "gatekeeper_buffered_body_bytes ").await >= (44 * 1024) as f64 },
    )
    .await;
    let client = env.client(false);
    // Owes 40 - 16 = 24 KiB: over the 20 KiB left, refused by Content-Length.
    let started = std::time::Instant::now();
    let big = padded_form(&env.sim.mint(CAPTCHA_ID), 40 * 1024);
    // HTTP/2: an answer before the body is sent is still read (over HTTP/1
    // the client may see the closed connection first).
    let answer = env
        .client(true)
        .post_form(&env.https_url("/login"), big)
        .await;
    assert_refused(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "body_budget_exhausted",
    );
    assert!(answer.headers.contains_key("retry-after"), "no Retry-After");
    assert!(started.elapsed() < Duration::from_secs(2), "not at once");
    // A login form fits in its free allowance, whatever the budget holds.
    let small = padded_form(&env.sim.mint(CAPTCHA_ID), 2 * 1024);
    let answer = client.post_form(&env.https_url("/login"), small).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    // The stalled body's reservation comes back when its client goes.
    drop(held);
    wait_until_async(
        "the reservation to come back",
        Duration::from_secs(10),
        || async { metric(admin, "gatekeeper_buffered_body_bytes ").await == 0.0 },
    )
    .await;
    let big = padded_form(&env.sim.mint(CAPTCHA_ID), 40 * 1024);
    let answer = client.post_form(&env.https_url("/login"), big).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(env.upstream.count(), 2);
    env.shutdown().await;
}

#[tokio::test]
async fn a_chunked_gated_body_is_refused_when_its_bytes_outgrow_the_budget() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start(&format!(
        "{ROUTES}\n[limits]\nmax_buffered_bodies = \"32KiB\"\n"
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(env.http).await.unwrap();
    s.write_all(b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").await.unwrap();
    // 64 KiB in 4 KiB chunks: past 16 KiB free + 32 KiB of budget.
    let chunk = format!("1000\r\n{}\r\n", "a".repeat(4096));
    for _ in 0..16 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("body_budget_exhausted"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after"),
        "{answer}"
    );
    assert_eq!(env.upstream.count(), 0);
    env.shutdown().await;
}

#[tokio::test]
async fn gated_requests_in_flight_beyond_the_per_address_limit_get_429_with_retry_after() {
    let env = Env::start(&format!(
        "{ROUTES}\n[limits]\nmax_gated_per_address = 2\nheader_read_timeout = \"5s\"\n"
    ))
    .await;
    // Declaring 20 KiB, each reserves 4 KiB beyond its free allowance once
    // it holds its gated place: the budget gauge shows both in flight.
    let first = stalled_post(env.http, 20 * 1024, 10).await;
    let second = stalled_post(env.http, 20 * 1024, 10).await;
    let admin = env.admin;
    let buffered = || metric(admin, "gatekeeper_buffered_body_bytes ");
    wait_until_async(
        "two gated requests in flight",
        Duration::from_secs(10),
        || async { buffered().await == (8 * 1024) as f64 },
    )
    .await;
    let client = env.client(false);
    let answer = client
        .post_form(&env.https_url("/login"), env.sim.mint(CAPTCHA_ID).form())
        .await;
    assert_refused(&answer, StatusCode::TOO_MANY_REQUESTS, "too_many_gated");
    assert_eq!(answer.headers["retry-after"], "1");
    // Ungated requests are not counted.
    assert_eq!(
        client.get(&env.https_url("/open")).await.status,
        StatusCode::OK
    );
    drop(first);
    wait_until_async(
        "the first one's place given back",
        Duration::from_secs(10),
        || async { buffered().await == (4 * 1024) as f64 },
    )
    .await;
    // Its gated place is given back just after its bytes (same step, no
    // await between): a 429 in that instant is retried, nothing else is.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let answer = client
            .post_form(&env.https_url("/login"), env.sim.mint(CAPTCHA_ID).form())
            .await;
        if answer.status != StatusCode::TOO_MANY_REQUESTS || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
    };
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    drop(second);
    env.shutdown().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_gated_limit_counts_each_forwarded_client() {
    let env = Env::start_trusting(
        "127.0.0.0/8",
        &format!("{ROUTES}\n[limits]\nmax_gated_per_address = 1\nheader_read_timeout = \"5s\"\n"),
    )
    .await;
    use tokio::io::AsyncWriteExt;
    let mut held = tokio::net::TcpStream::connect(env.http).await.unwrap();
    // 20 KiB declared: it reserves 4 KiB of the budget once it holds its place.
    held.write_all(b"POST /login HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 20480\r\n\r\nlot").await.unwrap();
    let admin = env.admin;
    wait_until_async(
        "the held request in flight",
        Duration::from_secs(10),
        || async { metric(admin, "gatekeeper_buffered_body_bytes ").await == (4 * 1024) as f64 },
    )
    .await;
    let post = |xff: &'static str, form: String| {
        Request::post(env.http_url("/login"))
            .header("x-forwarded-for", xff)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap()
    };
    let client = env.client(false);
    let same = client
        .send(post("198.51.100.1", env.sim.mint(CAPTCHA_ID).form()))
        .await;
    assert_refused(&same, StatusCode::TOO_MANY_REQUESTS, "too_many_gated");
    let other = client
        .send(post("198.51.100.2", env.sim.mint(CAPTCHA_ID).form()))
        .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text());
    drop(held);
    env.shutdown().await;
}

#[tokio::test]
async fn at_most_four_streams_of_one_http2_connection_buffer_a_gated_body_at_once() {
    use futures_util::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let env = Env::start(&format!(
        "{ROUTES}\n[limits]\nheader_read_timeout = \"5s\"\n"
    ))
    .await;
    const DECLARED: usize = 200 * 1024;
    // Each buffering body reserves what Content-Length declares beyond its free 16 KiB.
    const RESERVED: u64 = (DECLARED - 16 * 1024) as u64;
    let h2_connection = || async {
        let tcp = tokio::net::TcpStream::connect(env.http).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        (sender, tokio::spawn(conn))
    };
    let stalled = |sender: &hyper::client::conn::http2::SendRequest<_>| {
        let mut sender = sender.clone();
        tokio::spawn(async move {
            let frames = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                Frame::data(Bytes::from(vec![b'a'; 1024])),
            )])
            .chain(futures_util::stream::pending());
            let req = Request::post("http://a/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("content-length", DECLARED)
                .body(StreamBody::new(frames))
                .unwrap();
            let _ = sender.send_request(req).await;
        })
    };
    let buffered = || async {
        let metrics = raw_exchange(
            env.admin,
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("gatekeeper_buffered_body_bytes ")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    let (one, one_conn) = h2_connection().await;
    let streams: Vec<_> = (0..6).map(|_| stalled(&one)).collect();
    wait_until_async(
        "four buffering streams",
        Duration::from_secs(10),
        || async { buffered().await >= 4 * RESERVED },
    )
    .await;
    assert_eq!(
        buffered().await,
        4 * RESERVED,
        "six streams, four buffering"
    );
    // Another connection has places of its own.
    let (two, two_conn) = h2_connection().await;
    let other = stalled(&two);
    wait_until_async(
        "a fifth buffering stream",
        Duration::from_secs(10),
        || async { buffered().await > 4 * RESERVED },
    )
    .await;
    assert_eq!(buffered().await, 5 * RESERVED);
    for task in streams.into_iter().chain([other]) {
        task.abort();
    }
    one_conn.abort();
    two_conn.abort();
    drop((one, two));
    wait_until_async(
        "the reservations to come back",
        Duration::from_secs(10),
        || async { buffered().await == 0 },
    )
    .await;
    env.shutdown().await;
}
