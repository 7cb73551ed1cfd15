//! Raw HTTP/1.1 over a cleartext socket: what hyper would normalise away, and
//! scrapes of the admin listener's /metrics.

use std::net::SocketAddr;
use std::time::Duration;

/// Sends raw bytes over cleartext and returns everything read until the peer
/// closes or `wait` passes without data.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first line of a raw HTTP answer.
pub fn status_line(raw: &str) -> &str {
    raw.lines().next().unwrap_or("")
}

/// The value of the first /metrics sample whose line starts with `series`
/// (a name, or a name with its labels), 0 when there is none.
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = raw_exchange(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.rsplit(' ').next()?.trim().parse::<f64>().ok()
        })
        .unwrap_or(0.0)
}
