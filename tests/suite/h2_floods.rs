//! Issue 7: HTTP/2 floods (rapid reset, CONTINUATION, empty DATA) leave memory
//! bounded and the service answering. Raw frames on a real socket, against
//! the real binary; each attack is bounded in frames and time.

use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK: `:method`, `:scheme http`, `:path`, `:authority a`, from the static
/// table and literals without indexing (no dynamic table state).
fn request_block(post: bool, path: &str) -> Vec<u8> {
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x86];
    b.push(0x04); // :path, literal without indexing, static name 4
    b.push(path.len() as u8);
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&[0x01, 0x01, b'a']); // :authority a
    b
}

/// An attack: the frames to send, written while the server's answers are
/// drained, until all are sent, the server closes, or 20 s pass.
async fn attack(port: u16, frames: impl Iterator<Item = Vec<u8>>) -> (usize, Vec<u8>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            if got.len() < 1 << 20 {
                got.extend_from_slice(&buf[..n]);
            }
        }
        got
    });
    let started = Instant::now();
    let mut sent = 0;
    // Frames count as sent once written: a batch the server refused is not.
    let mut batch = Vec::with_capacity(1 << 16);
    batch.extend_from_slice(PREFACE);
    batch.extend(frame(SETTINGS, 0, 0, &[]));
    for f in frames {
        batch.extend(f);
        sent += 1;
        if batch.len() >= 1 << 15 {
            let wrote = tokio::time::timeout(Duration::from_secs(2), wr.write_all(&batch)).await;
            batch.clear();
            if !matches!(wrote, Ok(Ok(()))) || started.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
    }
    let _ = wr.write_all(&batch).await;
    let _ = wr.shutdown().await;
    (sent, reader.await.unwrap())
}

/// The server's frames: (type, flags, stream, payload).
fn frames_of(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = (usize::from(bytes[at]) << 16)
            | (usize::from(bytes[at + 1]) << 8)
            | usize::from(bytes[at + 2]);
        let stream =
            u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
        let end = (at + 9 + len).min(bytes.len());
        out.push((
            bytes[at + 3],
            bytes[at + 4],
            stream,
            bytes[at + 9..end].to_vec(),
        ));
        at += 9 + len;
    }
    out
}

/// The error code of the server's GOAWAY, if it sent one (RFC 9113 §6.8).
fn goaway_code(bytes: &[u8]) -> Option<u32> {
    frames_of(bytes)
        .into_iter()
        .find(|(kind, ..)| *kind == 0x7)
        .and_then(|(.., p)| {
            p.get(4..8)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        })
}

/// The attack was cut off: GOAWAY with ENHANCE_YOUR_CALM, or (when a reset
/// connection loses the GOAWAY bytes) the server closed before every frame was
/// sent. A PROTOCOL_ERROR or COMPRESSION_ERROR would mean malformed frames.
fn cut_off(code: Option<u32>, sent: usize, total: usize) -> bool {
    match code {
        Some(code) => code == 0xb,
        None => sent < total,
    }
}

async fn target() -> Binary {
    Binary::start(&[("RUST_LOG", "warn")]).await
}

/// After an attack: another client is still served, and memory stayed bounded.
async fn still_healthy(t: &Binary, rss_before_kb: u64, what: &str) {
    let raw = raw_exchange(
        ([127, 0, 0, 1], t.port).into(),
        b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        status_line(&raw),
        "HTTP/1.1 200 OK",
        "{what}: the service stopped answering"
    );
    let grown_mb = t.process.status_kb("VmHWM").saturating_sub(rss_before_kb) / 1024;
    assert!(grown_mb < 64, "{what}: peak memory grew by {grown_mb} MB");
}

/// Control: the same frame builder makes a request the server answers, so a
/// GOAWAY in the attacks below is the flood's doing, not malformed frames.
#[tokio::test]
async fn a_well_formed_h2_request_from_these_frames_is_answered() {
    let t = target().await;
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).await.unwrap();
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(SETTINGS, 0, 0, &[]));
    wire.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &request_block(false, "/ok"),
    ));
    s.write_all(&wire).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = |bytes: &[u8]| {
        frames_of(bytes).iter().any(|(kind, _, stream, payload)| {
            *kind == HEADERS && *stream == 1 && payload.first() == Some(&0x88)
        })
    };
    while !answered(&answer) {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => panic!("no :status 200 on stream 1: {:?}", frames_of(&answer)),
        }
    }
}

#[tokio::test]
async fn rapid_reset_is_cut_off_and_memory_stays_bounded() {
    let t = target().await;
    let before = t.process.status_kb("VmRSS");
    let block = request_block(false, "/");
    let frames = (0..50_000u32).flat_map(|i| {
        let id = 2 * i + 1;
        [
            frame(HEADERS, END_STREAM | END_HEADERS, id, &block),
            frame(RST_STREAM, 0, id, &8u32.to_be_bytes()),
        ]
    });
    let (sent, answer) = attack(t.port, frames).await;
    let code = goaway_code(&answer);
    assert!(
        cut_off(code, sent, 100_000),
        "GOAWAY {code:?} after {sent} frames of rapid reset"
    );
    still_healthy(&t, before, "rapid reset").await;
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off_and_memory_stays_bounded() {
    let t = target().await;
    let before = t.process.status_kb("VmRSS");
    let mut header = vec![0x00, 0x03, b'x', b'-', b'a', 100];
    header.extend_from_slice(&[b'a'; 100]);
    let first = frame(HEADERS, END_STREAM, 1, &request_block(false, "/"));
    let frames =
        std::iter::once(first).chain((0..200_000).map(move |_| frame(CONTINUATION, 0, 1, &header)));
    let (sent, answer) = attack(t.port, frames).await;
    let code = goaway_code(&answer);
    assert!(
        cut_off(code, sent, 200_001),
        "GOAWAY {code:?} after {sent} CONTINUATION frames"
    );
    still_healthy(&t, before, "CONTINUATION flood").await;
}

#[tokio::test]
async fn an_empty_data_flood_leaves_memory_bounded_and_the_service_answering() {
    let t = target().await;
    let before = t.process.status_kb("VmRSS");
    let first = frame(HEADERS, END_HEADERS, 1, &request_block(true, "/count"));
    let frames = std::iter::once(first)
        .chain((0..500_000).map(|_| frame(DATA, 0, 1, &[])))
        .chain(std::iter::once(frame(DATA, END_STREAM, 1, &[])));
    let (sent, _) = attack(t.port, frames).await;
    assert!(sent > 1000, "the attack did not run ({sent} frames)");
    still_healthy(&t, before, "empty DATA flood").await;
}
