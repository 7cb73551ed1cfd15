//! One view of the request: what gatekeeper routes is what the upstream gets.
//! Every spelling some framework would send to a protected handler is gated,
//! what cannot be read one way only is refused, and the upstream receives the
//! normal form.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

const ROUTES: &str = r#"
[[route]]
path = "/login"
methods = ["POST"]

[[route]]
path = "/admin"
host = "www.example.com"
methods = ["POST"]

[[route]]
path = "/search"
methods = ["GET"]

[[route]]
prefix = "/api/"
methods = ["POST"]
"#;

/// One raw HTTP/1.1 request on the cleartext listener; the answer's status line.
async fn raw(env: &Env, head: &str, body: &str) -> String {
    let wire = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_exchange(env.http, wire.as_bytes(), Duration::from_secs(3)).await;
    status_line(&answer).to_owned()
}

#[tokio::test]
async fn every_spelling_of_a_protected_path_is_gated() {
    let env = Env::start(ROUTES).await;
    for path in [
        "//login",
        "///login",
        "/%6cogin",
        "/%6Cogin",
        "/lo%67in",
        "/x/../login",
        "/./login",
        "/login/.",
        "/login/",
        "/LOGIN",
        "/Login",
        "/login;jsessionid=1",
        "/login;",
        "/x/%2e%2e/login",
        "/API/x",
        "//api/x",
        "/api/./x",
        "/api;v=1/x",
    ] {
        let status = raw(
            &env,
            &format!("POST {path} HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/x-www-form-urlencoded"),
            "user=alice",
        )
        .await;
        assert_eq!(status, "HTTP/1.1 403 Forbidden", "{path} was not gated");
    }
    assert_eq!(env.upstream.count(), 0, "{:?}", env.upstream.requests());
    env.shutdown().await;
}

#[tokio::test]
async fn paths_that_could_be_read_two_ways_are_refused() {
    let env = Env::start(ROUTES).await;
    for path in [
        "/api%2fx",
        "/api%2Fx",
        "/x/..%2flogin",
        "/%2flogin",
        "/x/..%5clogin",
        "/login%00",
        "/login%09",
        "/%c0%aflogin",
        "/lo%c0%adgin",
        "/%2e%2e/login",
        "/../login",
        "/login/..;/login",
        "/x/..;/login",
        "/a%zz",
    ] {
        let status = raw(
            &env,
            &format!("POST {path} HTTP/1.1\r\nHost: a.test\r\nContent-Type: text/plain"),
            "x",
        )
        .await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{path}");
    }
    assert_eq!(env.upstream.count(), 0, "{:?}", env.upstream.requests());
    env.shutdown().await;
}

#[tokio::test]
async fn the_upstream_receives_the_normal_form_it_was_routed_on() {
    let env = Env::start(ROUTES).await;
    let answer = env
        .client(false)
        .get(&env.https_url("/a//b/../c/%7euser/%e4%bd%a0?q=%2F..//x"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    // The query is the app's business and goes as sent.
    assert_eq!(env.upstream.last().uri, "/a/c/~user/%E4%BD%A0?q=%2F..//x");

    // A valid proof sent to another spelling passes, and the app gets /login.
    let proof = env.sim.mint(CAPTCHA_ID);
    let answer = env
        .client(true)
        .post_form(&env.https_url("//%6cogin"), proof.form())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let seen = env.upstream.last();
    assert_eq!(seen.uri, "/login");
    assert_eq!(seen.headers["x-gatekeeper-captcha"], "pass");
    env.shutdown().await;
}

#[tokio::test]
async fn hosts_match_without_case_or_trailing_dot_and_go_upstream_normalised() {
    let env = Env::start(ROUTES).await;
    for host in [
        "www.example.com.",
        "WWW.EXAMPLE.COM",
        "www.example.com:443",
        "Www.Example.Com.:8443",
    ] {
        let status = raw(
            &env,
            &format!("POST /admin HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded"),
            "x=1",
        )
        .await;
        assert_eq!(
            status, "HTTP/1.1 403 Forbidden",
            "{host} was not gated: {status}"
        );
    }
    assert_eq!(env.upstream.count(), 0);
    let status = raw(
        &env,
        "GET /page HTTP/1.1\r\nHost: WWW.Example.COM.:8443",
        "",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(env.upstream.last().headers["host"], "www.example.com:8443");
    for host in ["www.example.com..", "."] {
        let status = raw(&env, &format!("GET / HTTP/1.1\r\nHost: {host}"), "").await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{host}");
    }
    env.shutdown().await;
}

#[tokio::test]
async fn methods_are_read_as_the_app_would_read_them() {
    let env = Env::start(ROUTES).await;
    for head in [
        "post /login HTTP/1.1",
        "Post /login HTTP/1.1",
        "pOST /login HTTP/1.1",
        "get /search HTTP/1.1",
    ] {
        let status = raw(&env, &format!("{head}\r\nHost: a.test"), "").await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{head}");
    }
    for head in [
        // Flask and Starlette run the GET handler for HEAD.
        "HEAD /search HTTP/1.1\r\nHost: a.test",
        "GET /login HTTP/1.1\r\nHost: a.test\r\nX-HTTP-Method-Override: POST",
        "GET /login HTTP/1.1\r\nHost: a.test\r\nX-HTTP-Method: post",
        "GET /login HTTP/1.1\r\nHost: a.test\r\nX-Method-Override: POST",
        "GET /login?_method=POST HTTP/1.1\r\nHost: a.test",
        "PUT /api/x HTTP/1.1\r\nHost: a.test\r\nX-HTTP-Method-Override: POST",
    ] {
        let status = raw(&env, head, "").await;
        assert_eq!(status, "HTTP/1.1 403 Forbidden", "{head} was not gated");
    }
    assert_eq!(env.upstream.count(), 0, "{:?}", env.upstream.requests());
    env.shutdown().await;
}

#[tokio::test]
async fn a_route_without_methods_gates_all_but_get_head_and_options() {
    let env = Env::start("[[route]]\npath = \"/account\"\n").await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "PROPFIND"] {
        let status = raw(
            &env,
            &format!("{method} /account HTTP/1.1\r\nHost: a.test"),
            "",
        )
        .await;
        assert_eq!(status, "HTTP/1.1 403 Forbidden", "{method}");
    }
    for method in ["GET", "HEAD", "OPTIONS"] {
        let status = raw(
            &env,
            &format!("{method} /account HTTP/1.1\r\nHost: a.test"),
            "",
        )
        .await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{method}");
    }
    assert_eq!(env.upstream.count(), 3);
    env.shutdown().await;
}

#[tokio::test]
async fn connection_cannot_remove_the_headers_gatekeeper_states() {
    let env = Env::start(ROUTES).await;
    let proof = env.sim.mint(CAPTCHA_ID);
    let body = format!("user=alice&{}", proof.form());
    let wire = format!(
        "POST /login HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: X-Gatekeeper-Captcha, X-Request-Id, Content-Type, Content-Length, Host, X-Forwarded-For, X-Other\r\nX-Other: 1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_exchange(env.http, wire.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK", "{answer}");
    let seen = env.upstream.last();
    assert_eq!(seen.headers["x-gatekeeper-captcha"], "pass");
    assert_eq!(
        seen.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(seen.headers["content-length"], "10");
    assert_eq!(seen.headers["host"], "a.test");
    assert!(seen.headers.contains_key("x-request-id"));
    assert!(seen.headers.contains_key("x-forwarded-for"));
    assert!(!seen.headers.contains_key("x-other"));
    assert!(!seen.headers.contains_key("connection"));
    assert_eq!(seen.body, "user=alice");
    env.shutdown().await;
}

#[tokio::test]
async fn http2_cookies_are_joined_and_a_second_or_different_host_is_refused() {
    let env = Env::start(ROUTES).await;
    let client = env.client(true);
    let req = Request::get(env.https_url("/page"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::<Bytes>::default())
        .unwrap();
    let answer = client.send(req).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = env.upstream.last();
    assert_eq!(seen.headers.get_all("cookie").iter().count(), 1);
    assert_eq!(seen.headers["cookie"], "a=1; b=2");

    // :authority is localhost:PORT; a Host naming another site is refused.
    let req = Request::post(env.https_url("/admin"))
        .header("host", "www.example.com")
        .body(Full::<Bytes>::default())
        .unwrap();
    let answer = client.send(req).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    assert_eq!(env.upstream.count(), 1);
    env.shutdown().await;
}

#[tokio::test]
async fn headers_spelled_with_underscores_never_reach_the_app() {
    let env = Env::start(ROUTES).await;
    let status = raw(
        &env,
        "GET /login HTTP/1.1\r\nHost: a.test\r\nX_Gatekeeper_Captcha: pass\r\nX_HTTP_Method_Override: POST\r\nX-Kept: 1",
        "",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let seen = env.upstream.last();
    assert!(
        seen.headers.keys().all(|name| !name.as_str().contains('_')),
        "{:?}",
        seen.headers
    );
    assert!(!seen.headers.contains_key("x-gatekeeper-captcha"));
    assert_eq!(seen.headers["x-kept"], "1");
    env.shutdown().await;
}

#[tokio::test]
async fn a_form_post_is_gated_where_any_method_is_since_its_body_may_override_it() {
    let env = Env::start(ROUTES).await;
    // Symfony and Laravel run the GET handler for POST with _method=GET.
    let status = raw(
        &env,
        "POST /search HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/x-www-form-urlencoded",
        "_method=GET&q=x",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    let status = raw(
        &env,
        "POST /search HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/json",
        "{}",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    env.shutdown().await;
}

#[tokio::test]
async fn a_refused_head_gets_no_body_over_http2() {
    let env = Env::start(ROUTES).await;
    let req = Request::head(env.https_url("/search"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let answer = env.client(true).send(req).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.body.is_empty(), "{:?}", answer.body);
    assert_eq!(env.upstream.count(), 0);
    env.shutdown().await;
}
