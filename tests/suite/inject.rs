//! Issue 18 part B over real sockets: `[[inject]]` rewrites the app's HTML
//! as it streams, and only where it should. The app here is a real HTTP/1.1
//! server whose pages are written per path; gatekeeper runs as the binary,
//! so what it logs once can be counted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::common::*;

const FORM: &str =
    "<form method=\"post\" action=\"/login\"><input name=\"user\"><button>Go</button></form>";

/// A page of about 300 KB whose form comes last, sent in 1 KB chunks.
fn big_page() -> String {
    let filler = "<p>Some text that is not a form, &amp; entities, <b>tags</b>.</p>\n".repeat(4600);
    format!("<!doctype html><html><body>{filler}{FORM}</body></html>")
}

fn head_token_page(token: &str) -> String {
    format!("<html><head><meta name=\"csrf\" content=\"{token}\"></head><body>{FORM}</body></html>")
}

fn field_token_page(token: &str) -> String {
    format!(
        "<html><head><title>Log in</title></head><body><h1>Log in</h1>\
         <form method=\"post\" action=\"/login\"><input name=\"csrf\" value=\"{token}\"><input name=\"user\"></form>\
         <p>{token}</p></body></html>"
    )
}

type AppBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The app: the request heads it received, and a page per path.
async fn start_app() -> (SocketAddr, Arc<Mutex<Vec<HeaderMap>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    record.lock().unwrap().push(req.headers().clone());
                    async move { Ok::<_, Infallible>(page(req.uri().path())) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn full(text: impl Into<Bytes>) -> AppBody {
    http_body_util::Full::new(text.into()).boxed()
}

fn page(path: &str) -> Response<AppBody> {
    let html = "text/html; charset=utf-8";
    let (content_type, body, extra): (&str, AppBody, &[(&str, &str)]) = match path {
        "/login" => (
            html,
            full(format!(
                "<html><body><h1>Log in</h1>{FORM}<form action=\"/search\"><input name=\"q\"></form></body></html>"
            )),
            &[
                (
                    "content-security-policy",
                    "default-src 'self'; script-src 'nonce-Abc123' 'strict-dynamic'",
                ),
                ("etag", "\"v1\""),
            ],
        ),
        "/p/big" => {
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> = big_page()
                .into_bytes()
                .chunks(1024)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            (
                html,
                StreamBody::new(futures_util::stream::iter(chunks)).boxed(),
                &[],
            )
        }
        // An app that compresses whatever it is asked.
        "/p/gz" => (
            html,
            full(&b"\x1f\x8b\x08\x00not really gzip"[..]),
            &[("content-encoding", "gzip")],
        ),
        // Two forms the selector matches, then a long tail.
        "/p/two" => (
            html,
            full(format!(
                "<html><body>{FORM}{FORM}{}</body></html>",
                "<p>tail &amp; more</p>".repeat(3000)
            )),
            &[],
        ),
        "/p/nomatch" => (
            html,
            full("<html><body><form action=\"/other\"></form></body></html>"),
            &[],
        ),
        "/p/json" => (
            "application/json",
            full(format!("{{\"html\":\"{}\"}}", FORM.replace('"', "\\\""))),
            &[],
        ),
        "/p/meta" => (
            html,
            full(format!(
                "<html><head><meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self'\"></head><body>{FORM}</body></html>"
            )),
            &[],
        ),
        // Pages whose start differs per view (a token in the head), or only
        // after the form's start tag (a token among its fields).
        p if p.starts_with("/p/head/") => (html, full(head_token_page(&p[8..])), &[]),
        p if p.starts_with("/p/field/") => (html, full(field_token_page(&p[9..])), &[]),
        // A page that ends within the start of the page above.
        "/p/cut" => (html, full(field_token_page("0")[..40].to_owned()), &[]),
        _ => (html, full(format!("<html><body>{FORM}</body></html>")), &[]),
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    for (k, v) in extra {
        resp.headers_mut().insert(*k, v.parse().unwrap());
    }
    resp
}

struct Setup {
    gatekeeper: Process,
    sim: Sim,
    certs: TestCerts,
    https: u16,
    admin: u16,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

async fn setup() -> Setup {
    let (app, seen) = start_app().await;
    let sim = Sim::start().await;
    let certs = TestCerts::new();
    let (https, admin) = (free_port(), free_port());
    let text = config_text(
        &certs,
        app,
        &sim.url(),
        r#"
[[route]]
path = "/login"

[[inject]]
path = "/login"
form = 'form[action="/login"]'

[[inject]]
prefix = "/p/"
form = 'form[action="/login"]'
"#,
    )
    .replace(
        "https = \"127.0.0.1:0\"",
        &format!("https = \"127.0.0.1:{https}\""),
    )
    .replace(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"127.0.0.1:{admin}\""),
    );
    let path = certs.dir.path().join("gatekeeper.toml");
    std::fs::write(&path, text).unwrap();
    let gatekeeper = Process::spawn(&path, https, &[]);
    Setup {
        gatekeeper,
        sim,
        certs,
        https,
        admin,
        seen,
    }
}

impl Setup {
    async fn get(&self, path: &str, h2: bool) -> Answer {
        let req = Request::get(format!("https://localhost:{}{path}", self.https))
            .header("accept-encoding", "gzip, br")
            .header("range", "bytes=0-99")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        TestClient::new(&self.certs, h2).send(req).await
    }

    async fn metrics(&self) -> String {
        let wire = b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        raw_exchange(
            ([127, 0, 0, 1], self.admin).into(),
            wire,
            std::time::Duration::from_secs(5),
        )
        .await
    }
}

fn injected(sim: &Sim) -> String {
    format!(
        "<div class=\"gatekeeper-captcha\" data-gatekeeper-captcha=\"{CAPTCHA_ID}\"></div>\
         <input type=\"hidden\" name=\"lot_number\" value=\"\"><input type=\"hidden\" name=\"captcha_output\" value=\"\">\
         <input type=\"hidden\" name=\"pass_token\" value=\"\"><input type=\"hidden\" name=\"gen_time\" value=\"\">\
         <input type=\"hidden\" name=\"captcha_id\" value=\"\"><script src=\"{}/gt4.js\"NONCE></script>\
         <script src=\"/.gatekeeper/inject.js\"NONCE></script>",
        sim.url()
    )
}

/// `page` with the widget (no nonce) where it goes: right after the start
/// tag of its first login form.
fn with_widget(page: &str, sim: &Sim) -> String {
    let tag = "action=\"/login\">";
    page.replacen(
        tag,
        &format!("{tag}{}", injected(sim).replace("NONCE", "")),
        1,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_selected_form_gets_the_widget_and_the_head_is_made_true() {
    let s = setup().await;
    for h2 in [false, true] {
        let a = s.get("/login", h2).await;
        assert_eq!(a.status, 200);
        let nonce = injected(&s.sim).replace("NONCE", " nonce=\"Abc123\"");
        assert_eq!(
            a.text(),
            format!(
                "<html><body><h1>Log in</h1><form method=\"post\" action=\"/login\">{nonce}<input name=\"user\"><button>Go</button></form>\
                 <form action=\"/search\"><input name=\"q\"></form></body></html>"
            ),
            "only the selected form changes; the scripts carry the app's nonce"
        );
        assert!(a.headers.get("content-length").is_none() || h2);
        assert_eq!(
            a.headers["etag"], "W/\"v1\"",
            "the changed page's validator is weak"
        );
        let csp = a.headers["content-security-policy"].to_str().unwrap();
        let sim = s.sim.url();
        assert_eq!(
            csp,
            format!(
                "default-src 'self'; script-src 'nonce-Abc123' 'strict-dynamic' 'self' {sim}; style-src 'self' {sim}; img-src 'self' {sim}; connect-src 'self' {sim}"
            )
        );
    }
    let asked = s.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        asked["accept-encoding"], "identity",
        "the page is asked for uncompressed"
    );
    assert!(asked.get("range").is_none(), "and whole");

    // HEAD: the head a GET would get, no body.
    let head = TestClient::new(&s.certs, false)
        .send(
            Request::head(format!("https://localhost:{}/login", s.https))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty() && head.headers.get("content-length").is_none());
    assert!(
        head.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains(&s.sim.url())
    );

    // A page set in a meta tag is amended as the header is.
    let meta = s.get("/p/meta", false).await;
    assert!(
        meta.text()
            .contains(&format!("content=\"script-src 'self' {}\"", s.sim.url())),
        "{}",
        meta.text()
    );
    drop(s.gatekeeper);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_matching_form_gets_the_widget_and_the_rest_passes_as_sent() {
    let s = setup().await;
    let a = s.get("/p/two", false).await;
    let first = with_widget(FORM, &s.sim);
    assert_eq!(
        a.text(),
        format!(
            "<html><body>{first}{FORM}{}</body></html>",
            "<p>tail &amp; more</p>".repeat(3000)
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_page_streams_through_with_every_byte_but_the_insertion_kept() {
    let s = setup().await;
    let a = s.get("/p/big", true).await;
    let expected = with_widget(&big_page(), &s.sim);
    assert_eq!(a.body.len(), expected.len());
    assert!(
        a.text() == expected,
        "the page differs beyond the insertion"
    );
    assert!(
        s.metrics()
            .await
            .contains("gatekeeper_injections_total{outcome=\"injected\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn other_types_compressed_pages_and_other_paths_pass_unchanged_and_a_miss_is_logged_once() {
    let s = setup().await;
    for _ in 0..2 {
        let json = s.get("/p/json", false).await;
        assert_eq!(
            json.text(),
            format!("{{\"html\":\"{}\"}}", FORM.replace('"', "\\\""))
        );
        let gz = s.get("/p/gz", false).await;
        assert_eq!(&gz.body[..], b"\x1f\x8b\x08\x00not really gzip");
        assert_eq!(gz.headers["content-encoding"], "gzip");
        let miss = s.get("/p/nomatch", false).await;
        assert_eq!(
            miss.text(),
            "<html><body><form action=\"/other\"></form></body></html>"
        );
        let other = s.get("/other", false).await;
        assert_eq!(other.text(), format!("<html><body>{FORM}</body></html>"));
    }
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("gatekeeper_injections_total{outcome=\"unmatched\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatekeeper_injections_total{outcome=\"skipped\"} 2"),
        "{metrics}"
    );
    let logs_both = || {
        let logs = s.gatekeeper.logs();
        logs.contains("no form on the page matched") && logs.contains("the app compressed the page")
    };
    wait_until(
        "both warnings logged",
        std::time::Duration::from_secs(5),
        logs_both,
    )
    .await;
    let logs = s.gatekeeper.logs();
    assert_eq!(
        logs.matches("no form on the page matched").count(),
        1,
        "a miss is logged once:\n{logs}"
    );
    assert_eq!(
        logs.matches("the app compressed the page").count(),
        1,
        "{logs}"
    );
}

/// A page that starts as the last one rewritten gets that rewrite's start
/// without a parse; whatever differs, before the form or after its start
/// tag, is each page's own.
#[tokio::test(flavor = "multi_thread")]
async fn each_page_keeps_its_own_bytes_whether_its_start_is_remembered_or_parsed() {
    let s = setup().await;
    let mut served = 0;
    for token in ["1", "2", "2", "3"] {
        for (path, page) in [
            (format!("/p/field/{token}"), field_token_page(token)),
            (format!("/p/field/{token}"), field_token_page(token)),
            (format!("/p/head/{token}"), head_token_page(token)),
        ] {
            for h2 in [false, true] {
                let a = s.get(&path, h2).await;
                assert_eq!(a.status, 200);
                assert_eq!(a.text(), with_widget(&page, &s.sim), "{path}");
                served += 1;
            }
        }
    }
    // A page that ends within the remembered start is parsed, and has no form.
    let _ = s.get("/p/field/9", false).await;
    let cut = s.get("/p/cut", false).await;
    assert_eq!(cut.text(), field_token_page("0")[..40]);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(&format!(
            "gatekeeper_injections_total{{outcome=\"injected\"}} {}",
            served + 1
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatekeeper_injections_total{outcome=\"unmatched\"} 1"),
        "{metrics}"
    );
}
