//! Issue 2: ungated bodies stream; memory does not grow with their size.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use futures_util::stream;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_100_mb_upload_streams_without_growing_memory_by_its_size() {
    let binary = Binary::start(&[]).await;
    let (gk, port) = (&binary.process, binary.port);
    let before = gk.status_kb("VmRSS");

    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 1600; // 100 MiB
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let frames =
        stream::iter((0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<StreamBody<_>>();
    let req = Request::post(format!("http://127.0.0.1:{port}/count"))
        .body(StreamBody::new(frames))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        (CHUNK * CHUNKS).to_string(),
        "the upstream received every byte"
    );

    let peak = gk.status_kb("VmHWM");
    let grown_mb = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mb < 32,
        "gatekeeper's peak memory grew by {grown_mb} MB for a 100 MB upload"
    );
}

/// Sends `head` and then `body` in `pieces` pieces `pause` apart on the
/// cleartext listener; returns the whole answer.
async fn slow_upload(env: &Env, head: &str, body: &[u8], pieces: usize, pause: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(env.http).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for piece in body.chunks(body.len().div_ceil(pieces)) {
        // A slow client's pause: the behaviour under test.
        tokio::time::sleep(pause).await;
        stream.write_all(piece).await.unwrap();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_upload_slower_than_the_upstream_timeout_still_succeeds() {
    // The test config's upstream.timeout is 2s; this upload takes ~3s.
    let env = Env::start("").await;
    let body = vec![b'x'; 400 * 1024];
    let head = format!(
        "POST /count HTTP/1.1\r\nHost: a.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answer = slow_upload(&env, &head, &body, 30, Duration::from_millis(100)).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK", "{answer}");
    assert!(answer.ends_with(&body.len().to_string()), "{answer}");
    env.shutdown().await;
}

#[tokio::test]
async fn an_upload_that_pauses_past_body_idle_timeout_is_408() {
    let env = Env::start("[limits]\nbody_idle_timeout = \"500ms\"\n").await;
    let head = "POST /count HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\n12345";
    let answer = slow_upload(&env, head, b"67890", 1, Duration::from_millis(1500)).await;
    assert_eq!(
        status_line(&answer),
        "HTTP/1.1 408 Request Timeout",
        "{answer}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_fault_not_the_upstreams() {
    let env = Env::start("").await;
    let wire = b"POST /count HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n";
    let answer = raw_exchange(env.http, wire, Duration::from_secs(3)).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 400 Bad Request", "{answer}");
    let metrics = admin_metrics(&env).await;
    assert!(
        !metrics.contains("gatekeeper_upstream_errors_total{"),
        "a client's malformed body was counted as an upstream error:\n{metrics}"
    );
    env.shutdown().await;
}

async fn admin_metrics(env: &Env) -> String {
    let wire = b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    raw_exchange(env.admin, wire, Duration::from_secs(2)).await
}
