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
