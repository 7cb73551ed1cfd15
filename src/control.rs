//! Talking to a running gatekeeper from the command line.
//!
//! `gatekeeper health` asks the admin listener whether the process is alive
//! (or ready): a distroless image has no curl for a HEALTHCHECK.
//!
//! `gatekeeper reload`: checks the new configuration, then asks the running
//! process to load it and waits for that process's own verdict. A plain
//! `kill -HUP` reports success even when the running process keeps its old
//! configuration; this fails loudly instead, so systemd's `ExecReload` does.
//!
//! The verdict is read from the admin listener's reload counters
//! (`gatekeeper_config_reloads_total`), before and after the signal.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use thiserror::Error;

use crate::config::{ConfigError, load_file};

#[derive(Debug, Error)]
pub enum ReloadError {
    /// The file itself is wrong: nothing was sent.
    #[error("{0}")]
    Invalid(ConfigError),
    #[error("cannot signal process {pid}: {source}")]
    Signal { pid: i32, source: nix::Error },
    #[error(
        "cannot read the reload counters from the admin listener at {addr} \
         (is gatekeeper running with this configuration?): {reason}"
    )]
    Admin { addr: SocketAddr, reason: String },
    #[error(
        "the running gatekeeper refused the new configuration and keeps the old one; \
         its log says why"
    )]
    Refused,
    #[error("the running gatekeeper did not report a reload within {0:?}")]
    NoAnswer(Duration),
}

/// Successful and failed reloads the running process has counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reloads {
    success: u64,
    failure: u64,
}

/// Checks `path`, signals `pid` to reload, and waits up to `wait` for its
/// answer. Returns what to tell the operator.
pub async fn reload(path: &Path, pid: i32, wait: Duration) -> Result<String, ReloadError> {
    let config = load_file(path).map_err(ReloadError::Invalid)?;
    // Port 0 is a port the OS picked at start: not one we can ask.
    let admin = config.server.admin.filter(|a| a.port() != 0);
    let before = match admin {
        Some(addr) => Some(reloads(addr).await?),
        None => None,
    };
    kill(Pid::from_raw(pid), Signal::SIGHUP)
        .map_err(|source| ReloadError::Signal { pid, source })?;
    let (Some(addr), Some(before)) = (admin, before) else {
        return Ok(format!(
            "{}: ok; process {pid} signalled (no [server] admin listener to confirm the reload)",
            path.display()
        ));
    };
    let deadline = Instant::now() + wait;
    loop {
        let now = reloads(addr).await?;
        if now.failure > before.failure {
            return Err(ReloadError::Refused);
        }
        if now.success > before.success {
            return Ok(format!("{}: reloaded by process {pid}", path.display()));
        }
        if Instant::now() >= deadline {
            return Err(ReloadError::NoAnswer(wait));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which admin endpoint `health` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/healthz`: the process answers.
    Alive,
    /// `/readyz`: it takes traffic (503 while draining).
    Ready,
}

/// Asks the admin listener at `addr`; Ok with its answer when it is 200.
pub async fn health(addr: SocketAddr, probe: Probe) -> Result<String, String> {
    let path = match probe {
        Probe::Alive => "/healthz",
        Probe::Ready => "/readyz",
    };
    let (status, body) = admin_get(addr, path).await?;
    let said = format!("{addr}{path}: {status} {}", body.trim());
    if status == http::StatusCode::OK {
        Ok(said)
    } else {
        Err(said)
    }
}

async fn reloads(addr: SocketAddr) -> Result<Reloads, ReloadError> {
    let text = match admin_get(addr, "/metrics").await {
        Ok((status, text)) if status.is_success() => text,
        Ok((status, _)) => {
            let reason = format!("/metrics answered {status}");
            return Err(ReloadError::Admin { addr, reason });
        }
        Err(reason) => return Err(ReloadError::Admin { addr, reason }),
    };
    Ok(Reloads {
        success: sample(&text, "gatekeeper_config_reloads_total{result=\"success\"}"),
        failure: sample(&text, "gatekeeper_config_reloads_total{result=\"failure\"}"),
    })
}

/// One sample's value from Prometheus text; absent (never counted) is 0.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .next()
        .unwrap_or(0)
}

/// One GET to the admin listener: its status and text, within 5 s.
async fn admin_get(addr: SocketAddr, path: &str) -> Result<(http::StatusCode, String), String> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8(body.to_bytes().to_vec()).map_err(|e| e.to_string())?;
        Ok((status, text))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn a_sample_is_read_by_its_exact_series_and_absent_is_zero() {
        let text = "# TYPE gatekeeper_config_reloads_total counter\n\
                    gatekeeper_config_reloads_total{result=\"success\"} 3\n\
                    gatekeeper_config_reloads_total{result=\"failure\"} 1\n";
        assert_eq!(
            sample(text, "gatekeeper_config_reloads_total{result=\"success\"}"),
            3
        );
        assert_eq!(
            sample(text, "gatekeeper_config_reloads_total{result=\"failure\"}"),
            1
        );
        assert_eq!(
            sample("", "gatekeeper_config_reloads_total{result=\"success\"}"),
            0
        );
    }
}
