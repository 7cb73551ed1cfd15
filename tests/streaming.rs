//! Issue 2: ungated bodies stream; memory does not grow with their size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use futures_util::stream;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

#[tokio::test]
async fn a_100_mb_upload_streams_without_growing_memory_by_its_size() {
    let certs = TestCerts::new();
    let upstream = Upstream::start().await;
    let port = free_port();
    let text = config_text(&certs, upstream.addr, "http://127.0.0.1:9", "").replace(
        "http = \"127.0.0.1:0\"",
        &format!("http = \"127.0.0.1:{port}\""),
    );
    let path = certs.dir.path().join("gatekeeper.toml");
    std::fs::write(&path, text).unwrap();
    let gk = Process::spawn(&path, port, &[]);
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
