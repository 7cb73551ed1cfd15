//! `gatekeeper demo` as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;

use super::{free_port, until_listening};

/// `gatekeeper demo` on free ports; killed on drop. The addresses of its
/// simulator and legacy app are read from what it prints.
pub struct Demo {
    child: std::process::Child,
    /// The demo's TMPDIR: a killed demo cannot remove its files itself.
    _tmp: tempfile::TempDir,
    pub https_port: u16,
    pub http_port: u16,
    pub sim: SocketAddr,
    pub app: SocketAddr,
    /// What it printed up to "Ctrl-C stops the demo.".
    pub printed: String,
}

impl Demo {
    pub fn start() -> Self {
        let (https_port, http_port) = (free_port(), free_port());
        let tmp = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args([
                "demo",
                "--https-port",
                &https_port.to_string(),
                "--http-port",
                &http_port.to_string(),
            ])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().expect("piped");
        let (mut sim, mut app) = (None, None);
        let mut printed = String::new();
        let mut lines = BufReader::new(stdout).lines();
        while !printed.contains("Ctrl-C stops the demo.") {
            let line = lines
                .next()
                .expect("the demo printed its addresses")
                .unwrap();
            printed.push_str(&line);
            printed.push('\n');
            let address = || -> SocketAddr {
                let url = line.split_whitespace().find(|w| w.starts_with("http://"));
                url.and_then(|u| u.trim_start_matches("http://").parse().ok())
                    .unwrap_or_else(|| panic!("no address in {line:?}"))
            };
            if line.starts_with("GeeTest simulator") {
                sim = Some(address());
            } else if line.starts_with("legacy app") {
                app = Some(address());
            }
        }
        // The rest of its output is not read: drain it so the demo never blocks.
        std::thread::spawn(move || for _ in lines {});
        until_listening(https_port, "the demo");
        Self {
            child,
            _tmp: tmp,
            https_port,
            http_port,
            sim: sim.expect("the demo printed the simulator's address"),
            app: app.expect("the demo printed the app's address"),
            printed,
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
