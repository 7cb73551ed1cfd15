//! Issue 5: headless Chromium solves the demo's widget, submits, replays and
//! submits unsolved, with a screenshot of each step in
//! `target/artifacts/browser/`. Needs Debian's chromium and
//! `npm install` in tests/browser (`.ci/run` does both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::free_port;

#[test]
fn a_person_solves_the_captcha_and_the_app_receives_a_clean_form() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver = root.join("tests/browser/node_modules/playwright-core");
    if !Path::new(&chromium).exists() || !driver.exists() {
        eprintln!(
            "SKIPPED: needs {chromium} and tests/browser/node_modules (apt-get install chromium; npm install --prefix tests/browser)"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test"
        );
        return;
    }
    let (https_port, http_port) = (free_port(), free_port());
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args([
            "demo",
            "--https-port",
            &https_port.to_string(),
            "--http-port",
            &http_port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", https_port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out: PathBuf = root.join("target/artifacts/browser");
    let result = std::process::Command::new("node")
        .arg(root.join("tests/browser/demo.mjs"))
        .arg(format!("https://localhost:{https_port}"))
        .arg(&out)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let _ = demo.kill();
    let _ = demo.wait();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "browser run failed:\n{stdout}\n{stderr}"
    );
    for shot in [
        "1-login",
        "2-solved",
        "3-received",
        "4-replayed",
        "5-unsolved",
    ] {
        assert!(
            out.join(format!("{shot}.png")).exists(),
            "screenshot {shot} missing"
        );
    }
}
