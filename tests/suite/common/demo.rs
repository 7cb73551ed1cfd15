//! `gatekeeper demo` as a child process.

use super::{free_port, until_listening};

/// `gatekeeper demo` on free ports; killed on drop.
pub struct Demo {
    child: std::process::Child,
    /// The demo's TMPDIR: a killed demo cannot remove its files itself.
    _tmp: tempfile::TempDir,
    pub https_port: u16,
    pub http_port: u16,
}

impl Demo {
    pub fn start() -> Self {
        let (https_port, http_port) = (free_port(), free_port());
        let tmp = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args([
                "demo",
                "--https-port",
                &https_port.to_string(),
                "--http-port",
                &http_port.to_string(),
            ])
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        until_listening(https_port, "the demo");
        Self {
            child,
            _tmp: tmp,
            https_port,
            http_port,
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
