//! Issue 2: gatekeeper as a correct reverse proxy, over real sockets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;

const ROUTES: &str = r#"
[[route]]
path = "/login"

[[route]]
prefix = "/admin/"
host = "admin.example.com"
methods = ["GET", "POST"]
"#;

#[tokio::test]
async fn https_speaks_http1_or_h2_as_negotiated_by_alpn() {
    let env = Env::start(ROUTES).await;
    let h1 = env.client(false).get(&env.https_url("/hello")).await;
    assert_eq!(h1.status, StatusCode::OK);
    assert_eq!(h1.version, Version::HTTP_11);
    assert_eq!(h1.text(), "upstream ok");
    let h2 = env.client(true).get(&env.https_url("/hello?x=1")).await;
    assert_eq!(h2.status, StatusCode::OK);
    assert_eq!(h2.version, Version::HTTP_2);
    let seen = env.upstream.requests();
    assert_eq!(seen.len(), 2);
    // The upstream leg is HTTP/1.1 and keeps the client's host.
    assert!(seen.iter().all(|r| r.version == Version::HTTP_11));
    assert_eq!(seen[1].uri, "/hello?x=1");
    for name in ["host", "x-forwarded-host"] {
        assert_eq!(
            seen[1].headers[name],
            format!("localhost:{}", env.https.port())
        );
    }
    assert_eq!(seen[1].headers["x-forwarded-proto"], "https");
    env.shutdown().await;
}

#[tokio::test]
async fn cleartext_listener_serves_http1_and_h2_with_prior_knowledge() {
    let env = Env::start(ROUTES).await;
    let raw = raw_exchange(
        env.http,
        b"GET /plain HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(status_line(&raw), "HTTP/1.1 200 OK");
    assert_eq!(env.upstream.last().headers["x-forwarded-proto"], "http");

    let h2c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = h2c
        .get(env.http_url("/prior").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);
    env.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    let env = Env::start(ROUTES).await;
    let req = Request::get(env.https_url("/hop"))
        .header("connection", "x-private, keep-alive")
        .header("x-private", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-end-to-end", "kept")
        .body(Full::default())
        .unwrap();
    let answer = env.client(false).send(req).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = env.upstream.last();
    for name in [
        "connection",
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
    ] {
        assert!(!seen.headers.contains_key(name), "upstream received {name}");
    }
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    // The upstream's response named x-upstream-private in Connection.
    assert!(!answer.headers.contains_key("x-upstream-private"));
    assert!(!answer.headers.contains_key("keep-alive"));
    assert_eq!(answer.headers["x-upstream"], "yes");
    env.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_replaced() {
    let env = Env::start(ROUTES).await;
    let req = Request::get(env.https_url("/xff"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "gopher")
        .header("forwarded", "for=6.6.6.6")
        .header("x-gatekeeper-captcha", "pass")
        .body(Full::default())
        .unwrap();
    env.client(false).send(req).await;
    let seen = env.upstream.last();
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        format!("localhost:{}", env.https.port())
    );
    assert!(!seen.headers.contains_key("forwarded"));
    // Only gatekeeper may state a captcha verdict, on every route.
    assert!(!seen.headers.contains_key("x-gatekeeper-captcha"));
    env.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_peer_is_kept_on_one_line() {
    let env = Env::start_trusting("127.0.0.0/8", ROUTES).await;
    let req = Request::get(env.https_url("/xff"))
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-for", "10.1.2.3")
        .body(Full::default())
        .unwrap();
    env.client(false).send(req).await;
    let seen = env.upstream.last();
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(
        seen.headers["x-forwarded-for"],
        "198.51.100.7, 10.1.2.3, 127.0.0.1"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn routes_gate_only_their_methods_and_hosts() {
    let env = Env::start(ROUTES).await;
    let client = env.client(false);
    // Exact path, POST only: a GET passes untouched, a POST without a proof is refused.
    assert_eq!(
        client.get(&env.https_url("/login")).await.status,
        StatusCode::OK
    );
    let refused = client.post_form(&env.https_url("/login"), "user=a").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error_code(), "captcha_required");
    // Exact means exact.
    assert_eq!(
        client
            .post_form(&env.https_url("/login/x"), "user=a")
            .await
            .status,
        StatusCode::OK
    );
    // A host-bound prefix route applies only to its host.
    let admin = Request::get(env.https_url("/admin/panel"))
        .header("host", "admin.example.com")
        .body(Full::default())
        .unwrap();
    assert_eq!(client.send(admin).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        client.get(&env.https_url("/admin/panel")).await.status,
        StatusCode::OK
    );
    env.shutdown().await;
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_a_slow_one_is_504() {
    let env = Env::start(ROUTES).await;
    let slow = env.client(false).get(&env.https_url("/slow/4000")).await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.error_code(), "upstream_timeout");
    env.shutdown().await;

    // An upstream port with nothing listening.
    let certs = TestCerts::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = parse_config(
        &config_text(&certs, closed, "http://127.0.0.1:9", ""),
        certs.dir.path(),
    );
    let server = gatekeeper::server::start(config).await.unwrap();
    let raw = raw_exchange(
        server.http_addr.unwrap(),
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_line(&raw), "HTTP/1.1 502 Bad Gateway");
    assert!(raw.contains("upstream_unavailable"), "{raw}");
    // A person gets a page with a link back, as for any refusal (issue 20).
    let page = raw_exchange(
        server.http_addr.unwrap(),
        b"GET /shop HTTP/1.1\r\nHost: a.test\r\nAccept: text/html,*/*\r\nReferer: http://a.test/cart?x=1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_line(&page), "HTTP/1.1 502 Bad Gateway");
    assert!(
        page.to_ascii_lowercase()
            .contains("content-type: text/html")
            && page.contains("href=\"/cart?x=1\"")
            && page.contains("upstream_unavailable"),
        "{page}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn websocket_is_tunnelled_after_the_upstream_switches_protocols() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let env = Env::start(ROUTES).await;
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", env.http.port()))
            .await
            .expect("websocket handshake through gatekeeper");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("hello through the gate"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        echoed.into_text().unwrap().as_str(),
        "hello through the gate"
    );
    env.shutdown().await;
}

/// Each ambiguous framing shape is refused with 400 and the connection closed;
/// none reaches the upstream.
#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let env = Env::start(ROUTES).await;
    let cases: &[(&str, &[u8])] = &[
        ("CL+TE", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE chunked, chunked", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
        ("TE twice", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE gzip, chunked", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("TE gzip", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
        ("HTTP/1.0 with TE", b"POST /a HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("two different CL", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        ("two equal CL", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"),
        ("duplicate Host", b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("no Host in HTTP/1.1", b"GET /a HTTP/1.1\r\n\r\n"),
        ("space before colon", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("upgrade h2c", b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
        ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
        ("NUL in header", b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n"),
        ("TE chunked with a trailing tab", b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n"),
        ("bare CR in header", b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n"),
        ("absolute-form for another host", b"GET http://b/a HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("bare LF line endings", b"GET /a HTTP/1.1\nHost: a\n\n"),
        ("one bare LF among CRLFs", b"GET /a HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n"),
        ("CL+TE with bare LFs", b"POST /a HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\n"),
        ("two Hosts with bare LFs", b"GET /a HTTP/1.1\nHost: a\nHost: b\n\n"),
        ("CL as a list", b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nab"),
    ];
    for (name, bytes) in cases {
        // A second, valid request pipelined behind must not be served.
        let mut wire = bytes.to_vec();
        wire.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
        let raw = raw_exchange(env.http, &wire, Duration::from_secs(3)).await;
        assert!(
            status_line(&raw).starts_with("HTTP/1.1 400"),
            "{name}: {raw}"
        );
        assert_eq!(
            raw.matches("HTTP/1.1 ").count(),
            1,
            "{name}: served a pipelined request: {raw}"
        );
    }
    assert_eq!(
        env.upstream.count(),
        0,
        "an ambiguous request reached the upstream"
    );
    env.shutdown().await;
}

/// Shapes nginx 1.22 also accepts: optional white space around a value, and
/// an absolute-form target naming the Host. Served, and framed correctly.
#[tokio::test]
async fn unambiguous_variants_are_served_and_framed_correctly() {
    let env = Env::start(ROUTES).await;
    let cases: &[(&str, &[u8])] = &[
        ("chunked with trailing space", b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        ("absolute-form naming the host", b"POST http://a/count HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"),
    ];
    for (name, bytes) in cases {
        let mut wire = bytes.to_vec();
        wire.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let raw = raw_exchange(env.http, &wire, Duration::from_secs(3)).await;
        assert!(
            status_line(&raw).starts_with("HTTP/1.1 200"),
            "{name}: {raw}"
        );
        assert!(
            raw.contains("\r\n\r\n3"),
            "{name}: the body was framed wrongly: {raw}"
        );
        assert_eq!(
            raw.matches("HTTP/1.1 200").count(),
            2,
            "{name}: the pipelined request: {raw}"
        );
    }
    env.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let env = Env::start(ROUTES).await;
    let big = "x".repeat(100 * 1024);
    let wire = format!("GET /a HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    let raw = raw_exchange(env.http, wire.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        status_line(&raw).starts_with("HTTP/1.1 431"),
        "{}",
        status_line(&raw)
    );
    assert_eq!(env.upstream.count(), 0);
    env.shutdown().await;
}

/// A websocket opening handshake for `path` (RFC 6455 §4.1), with `rest`
/// written straight after it.
fn upgrade_request(path: &str, key: &str, rest: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n{rest}"
    )
    .into_bytes()
}

const SMUGGLED_LOGIN: &str = "POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\n\r\nuser=a";

/// An application that answers the first request on each connection with a
/// `101` chosen by its path, then serves every further request head it
/// reads with 200, as a careless app or framework would. Returns its address
/// and every byte it received.
async fn fake_101_upstream() -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let (mut buf, mut chunk, mut answered) = (Vec::new(), [0u8; 4096], 0);
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    record.lock().unwrap().extend_from_slice(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                    let heads = buf.windows(4).filter(|w| w == b"\r\n\r\n").count();
                    while answered < heads {
                        let reply: &[u8] = if answered > 0 {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        } else if buf.starts_with(b"GET /wrong-accept ") {
                            // The accept for the RFC's sample key, not the client's.
                            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                        } else if buf.starts_with(b"GET /h2c ") {
                            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                        } else {
                            b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
                        };
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                        answered += 1;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Issue 15: an endpoint that answers `101` without a real WebSocket
/// handshake got a raw tunnel, and a `POST /login` written into it reached
/// the application with no captcha.
#[tokio::test]
async fn an_upstream_101_without_the_websocket_handshake_is_502_and_opens_no_tunnel() {
    let (upstream, seen) = fake_101_upstream().await;
    let certs = TestCerts::new();
    let config = parse_config(
        &config_text(&certs, upstream, "http://127.0.0.1:9", ROUTES),
        certs.dir.path(),
    );
    let server = gatekeeper::server::start(config).await.unwrap();
    let addr = server.http_addr.unwrap();
    let other_key = "AQIDBAUGBwgJCgsMDQ4PEA==";
    let cases: &[(&str, Vec<u8>)] = &[
        (
            "bare 101",
            upgrade_request("/bare", other_key, SMUGGLED_LOGIN),
        ),
        (
            "101 with another key's accept",
            upgrade_request("/wrong-accept", other_key, SMUGGLED_LOGIN),
        ),
        (
            "101 to h2c",
            upgrade_request("/h2c", other_key, SMUGGLED_LOGIN),
        ),
        (
            "101 to a request that asked for no upgrade",
            format!("GET /unasked HTTP/1.1\r\nHost: a\r\n\r\n{SMUGGLED_LOGIN}").into_bytes(),
        ),
    ];
    for (name, wire) in cases {
        let raw = raw_exchange(addr, wire, Duration::from_secs(3)).await;
        assert_eq!(
            status_line(&raw),
            "HTTP/1.1 502 Bad Gateway",
            "{name}: {raw}"
        );
        assert!(raw.contains("upstream_bad_upgrade"), "{name}: {raw}");
        assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "{name}: {raw}");
    }
    let seen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    for path in ["/bare", "/wrong-accept", "/h2c", "/unasked"] {
        assert!(
            seen.contains(&format!("GET {path} ")),
            "{path} never reached the app: {seen}"
        );
    }
    assert!(
        !seen.contains("/login"),
        "the smuggled request reached the application: {seen}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

/// RFC 6455 §4.1 and §4.2.1: anything that asks for an upgrade and is not a
/// well-formed WebSocket handshake is refused, and the connection closed.
#[tokio::test]
async fn a_malformed_upgrade_request_is_refused_with_400() {
    let env = Env::start(ROUTES).await;
    let handshake = |line: &str, drop: &str, add: &str| {
        let mut head = format!("{line}\r\nHost: a\r\n");
        for h in [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ] {
            if drop.is_empty() || !h.starts_with(drop) {
                head.push_str(h);
                head.push_str("\r\n");
            }
        }
        head.push_str(add);
        head + "\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    };
    let get = "GET /ws HTTP/1.1";
    let cases = [
        ("no key", handshake(get, "Sec-WebSocket-Key", "")),
        (
            "a 15-byte key",
            handshake(
                get,
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n",
            ),
        ),
        (
            "a key that is not base64",
            handshake(
                get,
                "Sec-WebSocket-Key",
                "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n",
            ),
        ),
        ("no version", handshake(get, "Sec-WebSocket-Version", "")),
        (
            "version 8",
            handshake(get, "Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n"),
        ),
        ("no connection: upgrade", handshake(get, "Connection", "")),
        ("connection: upgrade alone", handshake(get, "Upgrade", "")),
        (
            "POST",
            handshake("POST /ws HTTP/1.1", "", "Content-Length: 0\r\n"),
        ),
        ("HTTP/1.0", handshake("GET /ws HTTP/1.0", "", "")),
        (
            "a body",
            handshake(get, "", "Content-Length: 5\r\n\r\nhello"),
        ),
    ];
    for (name, wire) in &cases {
        let raw = raw_exchange(env.http, wire.as_bytes(), Duration::from_secs(3)).await;
        // An HTTP/1.0 request is answered in HTTP/1.0.
        assert!(
            status_line(&raw).ends_with(" 400 Bad Request"),
            "{name}: {raw}"
        );
        let answers = raw.lines().filter(|l| l.starts_with("HTTP/1.")).count();
        assert_eq!(answers, 1, "{name}: {raw}");
    }
    assert_eq!(
        env.upstream.count(),
        0,
        "a malformed upgrade reached the upstream"
    );
    env.shutdown().await;
}

/// Issue 15: after an `Upgrade` request, framing went unchecked on the rest
/// of the connection, even when the upstream declined the upgrade.
#[tokio::test]
async fn after_a_declined_upgrade_the_next_heads_are_still_checked() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start(ROUTES).await;
    let cases: &[(&str, &str)] = &[
        (
            "CL+TE",
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "duplicate Host",
            "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        ("bare LF", "GET /a HTTP/1.1\nHost: a\n\n"),
    ];
    for (i, (name, bad)) in cases.iter().enumerate() {
        let mut s = tokio::net::TcpStream::connect(env.http).await.unwrap();
        // Not /ws: the upstream answers 200 and the connection stays HTTP/1.1.
        s.write_all(&upgrade_request(
            "/declined",
            "dGhlIHNhbXBsZSBub25jZQ==",
            "",
        ))
        .await
        .unwrap();
        let mut first = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&first).contains("upstream ok") {
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
                .await
                .expect("an answer to the upgrade request")
                .unwrap();
            assert!(n > 0, "{name}: closed after the declined upgrade");
            first.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200"));
        s.write_all(format!("{bad}GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut rest = Vec::new();
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..n]);
        }
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            status_line(&rest).starts_with("HTTP/1.1 400"),
            "{name}: {rest}"
        );
        assert_eq!(rest.matches("HTTP/1.1 ").count(), 1, "{name}: {rest}");
        assert_eq!(env.upstream.count(), i + 1, "{name} reached the upstream");
    }
    env.shutdown().await;
}
