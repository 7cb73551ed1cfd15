//! The real `gatekeeper` binary as a child process, its output captured.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{TestCerts, Upstream, config_text, until_listening};

/// A free TCP port on 127.0.0.1 (bound then released; the race is harmless here).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `gatekeeper` binary running with a config file, its output captured.
pub struct Process {
    pub child: std::process::Child,
    pub log_path: PathBuf,
}

impl Process {
    /// Starts `gatekeeper run -c config` and waits until `port` accepts connections.
    pub fn spawn(config: &Path, port: u16, env: &[(&str, &str)]) -> Self {
        Self::spawn_with_args(config, port, &[], env)
    }

    /// As `spawn`, with extra arguments after `run -c FILE`.
    pub fn spawn_with_args(config: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log_path = config.with_extension(format!("{}.log", std::process::id() ^ port as u32));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"));
        cmd.args(["run", "-c"])
            .arg(config)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn gatekeeper");
        until_listening(port, "gatekeeper");
        Self { child, log_path }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of /proc/PID/status in kB (VmRSS, VmHWM).
    pub fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .trim_start_matches(':')
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM, waits, and returns the exit status and the log file.
    pub fn terminate_keep_logs(self) -> (std::process::ExitStatus, PathBuf) {
        let log = self.log_path.clone();
        (self.terminate(), log)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            // The poll interval, within the deadline above.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The binary in front of its own recording upstream, on the cleartext port
/// `port` (GeeTest unreachable: for tests that never reach the gate).
pub struct Binary {
    pub process: Process,
    pub port: u16,
    // Held for the binary's lifetime: it proxies to this upstream and reads
    // this certificate.
    _upstream: Upstream,
    _certs: TestCerts,
}

impl Binary {
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let certs = TestCerts::new();
        let upstream = Upstream::start().await;
        let port = free_port();
        let text = config_text(&certs, upstream.addr, "http://127.0.0.1:9", "").replace(
            "http = \"127.0.0.1:0\"",
            &format!("http = \"127.0.0.1:{port}\""),
        );
        let path = certs.dir.path().join("gatekeeper.toml");
        std::fs::write(&path, text).unwrap();
        let process = Process::spawn(&path, port, env);
        Self {
            process,
            port,
            _upstream: upstream,
            _certs: certs,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
