//! Issue 7: every wait has a bound, and `max_connections` holds (tunnels included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SHORT: &str = r#"
[[route]]
path = "/login"

[limits]
handshake_timeout = "400ms"
header_read_timeout = "400ms"
idle_timeout = "400ms"
"#;

/// Reads until the peer closes; true if it did within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> (bool, String) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let result = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (result.is_ok(), String::from_utf8_lossy(&out).into_owned())
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_silent_tls_client_is_dropped_after_the_handshake_timeout() {
    let env = Env::start(SHORT).await;
    let mut s = connect(env.https).await;
    let (closed, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "the TLS listener kept a silent connection open");
    env.shutdown().await;
}

#[tokio::test]
async fn a_silent_cleartext_client_is_dropped_after_the_header_timeout() {
    let env = Env::start(SHORT).await;
    let mut s = connect(env.http).await;
    let (closed, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "a connection that never sent a byte stayed open");
    env.shutdown().await;
}

#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    let env = Env::start(SHORT).await;
    let mut s = connect(env.http).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let (closed, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "an unfinished request head held the connection");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(env.upstream.count(), 0);
    env.shutdown().await;
}

#[tokio::test]
async fn a_slow_gated_body_is_refused_with_408_and_never_forwarded() {
    let env = Env::start(SHORT).await;
    let mut s = connect(env.http).await;
    s.write_all(b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nlot_number=").await.unwrap();
    let (_, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert_eq!(env.upstream.count(), 0);
    env.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let env = Env::start(SHORT).await;
    let mut s = connect(env.http).await;
    s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let (closed, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection stayed open");
    env.shutdown().await;
}

#[tokio::test]
async fn max_connections_holds_extra_clients_until_a_slot_frees() {
    let env = Env::start("[limits]\nmax_connections = 2\n").await;
    let request = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut first = connect(env.http).await;
    let mut second = connect(env.http).await;
    for s in [&mut first, &mut second] {
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 1024];
        assert!(s.read(&mut buf).await.unwrap() > 0);
    }
    // A third connection completes in the kernel's backlog but is not served.
    let mut third = connect(env.http).await;
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served beyond max_connections"
    );
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    env.shutdown().await;
}

/// Regression: the idle watchdog used the first-request limit
/// (header_read_timeout) for a keep-alive connection that had served requests.
#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_when_idle_timeout_is_longer() {
    let env =
        Env::start("[limits]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"10s\"\n").await;
    let mut s = connect(env.http).await;
    let mut buf = [0u8; 1024];
    for _ in 0..2 {
        s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "keep-alive connection was closed"
        );
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    env.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let env = Env::start("[limits]\nidle_timeout = \"500ms\"\n").await;
    let mut s = connect(env.http).await;
    let total = 64 * 1024 * 1024;
    s.write_all(format!("GET /big/{total} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Read nothing while the server's writes block, then drain what is left.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection was still open");
    assert!(
        received < total,
        "the whole response was delivered: the stalled client was not dropped"
    );
    env.shutdown().await;
}

async fn open_websocket(
    env: &Env,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", env.http.port()))
            .await
            .expect("websocket handshake through gatekeeper");
    ws
}

/// An open tunnel is not an HTTP connection the watchdog sees: it has its own
/// idle timeout, and a tunnel in use is left alone.
#[tokio::test]
async fn an_idle_websocket_tunnel_is_closed_after_the_idle_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let env = Env::start("[limits]\nidle_timeout = \"1s\"\n").await;
    let mut ws = open_websocket(&env).await;
    // Busy for well over the idle timeout: every message comes back.
    let mut last_echo = std::time::Instant::now();
    for i in 0..6 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("an echo")
            .expect("the tunnel is open")
            .unwrap();
        last_echo = std::time::Instant::now();
        assert_eq!(echo.into_text().unwrap().as_str(), format!("ping {i}"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then silent: closed without a frame from either side.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(end.is_ok(), "an idle tunnel stayed open");
    assert!(
        !matches!(end, Ok(Some(Ok(Message::Text(_))))),
        "unexpected message: {end:?}"
    );
    assert!(last_echo.elapsed() >= Duration::from_millis(900));
    env.shutdown().await;
}

#[tokio::test]
async fn an_open_websocket_tunnel_counts_against_max_connections() {
    let env = Env::start("[limits]\nmax_connections = 1\n").await;
    let ws = open_websocket(&env).await;
    let mut second = connect(env.http).await;
    second
        .write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "served beside an open tunnel beyond max_connections"
    );
    drop(ws);
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("served once the tunnel closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    env.shutdown().await;
}

#[tokio::test]
async fn an_open_websocket_tunnel_is_closed_on_shutdown_rather_than_holding_it_up() {
    use futures_util::StreamExt;
    let env = Env::start("").await;
    let mut ws = open_websocket(&env).await;
    let started = std::time::Instant::now();
    // Env::shutdown allows five seconds for connections to drain.
    env.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited {:?} for the tunnel",
        started.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    assert!(end.is_ok(), "the tunnel outlived the shutdown");
}
