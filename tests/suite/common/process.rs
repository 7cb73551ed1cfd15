//! The real `gatekeeper` binary as a child process, its output captured.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{TestCerts, Upstream, config_text};

/// A free TCP port on 127.0.0.1 for a server a test starts later (a child
/// process, or a config written before the bind). It is drawn at random
/// below Linux's ephemeral range (32768-60999): a port the OS picked (what
/// `bind(":0")` gives) may meanwhile become the source port of one of the
/// thousands of client connections tests open, and the server's bind then
/// fails (seen once in 20 suite runs). Checked free by binding it once.
pub fn free_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
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
        let mut child = cmd.spawn().expect("spawn gatekeeper");
        // Until it listens; if it exits first, fail at once with its log.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(exit)) = child.try_wait() {
                let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("gatekeeper exited ({exit}) before listening on {port}:\n{logs}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gatekeeper did not start listening on {port}"
            );
            // The poll interval.
            std::thread::sleep(Duration::from_millis(20));
        }
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
