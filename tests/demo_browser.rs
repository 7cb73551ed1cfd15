//! Issue 5: headless Chromium solves the demo's widget, submits, replays and
//! submits unsolved, with a screenshot of each step in
//! `target/artifacts/browser/`. Needs Debian's chromium and
//! `npm install` in tests/browser (`.ci/run` does both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Demo;
use std::path::{Path, PathBuf};

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
    let demo = Demo::start();
    let out: PathBuf = root.join("target/artifacts/browser");
    let result = std::process::Command::new("node")
        .arg(root.join("tests/browser/demo.mjs"))
        .arg(format!("https://localhost:{}", demo.https_port))
        .arg(&out)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    drop(demo);
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
