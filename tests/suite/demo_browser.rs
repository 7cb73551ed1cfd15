//! Issues 5 and 19: headless Chromium drives the demo (solve, submit, replay,
//! submit unsolved) and the simulator's widget in every product mode, with
//! screenshots in `target/artifacts/browser/`. Needs Debian's chromium and
//! `npm ci` in tests/browser (scripts/setup does both), so the tests are
//! `#[ignore]`d: a plain `cargo nextest run` reports them skipped, and
//! `--run-ignored all` (the README's test command, CI's) runs them, failing
//! when either is missing.

use crate::common::{Demo, free_port, until_listening};
use std::path::{Path, PathBuf};

/// Chromium's path; the test fails, saying what to install, without it.
fn chromium() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver = root.join("tests/browser/node_modules/playwright-core");
    assert!(
        Path::new(&chromium).exists() && driver.exists(),
        "needs {chromium} and tests/browser/node_modules: run scripts/setup"
    );
    chromium
}

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts/browser")
}

/// Runs a driver script under tests/browser and fails with its output.
fn node(script: &str, args: &[String], chromium: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let result = std::process::Command::new("node")
        .arg(root.join("tests/browser").join(script))
        .args(args)
        .env("CHROMIUM", chromium)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "browser run failed:\n{stdout}\n{stderr}"
    );
}

/// Removes earlier runs' screenshots, so only this run's can pass.
fn forget_screenshots(names: &[&str]) {
    for shot in names {
        let _ = std::fs::remove_file(artifacts().join(format!("{shot}.png")));
    }
}

fn assert_screenshots(names: &[&str]) {
    for shot in names {
        assert!(
            artifacts().join(format!("{shot}.png")).exists(),
            "screenshot {shot} missing"
        );
    }
}

#[ignore = "needs chromium and tests/browser/node_modules (scripts/setup); run with --run-ignored all"]
#[test]
fn a_person_solves_the_captcha_and_the_app_receives_a_clean_form() {
    let chromium = chromium();
    forget_screenshots(DEMO_SHOTS);
    let demo = Demo::start();
    node(
        "demo.mjs",
        &[
            format!("https://localhost:{}", demo.https_port),
            artifacts().display().to_string(),
        ],
        &chromium,
    );
    drop(demo);
    assert_screenshots(DEMO_SHOTS);
}

const DEMO_SHOTS: &[&str] = &[
    "1-login",
    "2-solved",
    "3-received",
    "4-replayed",
    "5-unsolved",
];

const WIDGET_SHOTS: &[&str] = &[
    "float-1-ready",
    "float-2-short-release",
    "float-3-success",
    "en-1-keyboard",
    "en-2-success",
    "popup-1-open",
    "popup-2-success",
    "bind-1-open",
    "bind-2-success",
];

/// The simulator, killed when dropped.
struct Sim(std::process::Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[ignore = "needs chromium and tests/browser/node_modules (scripts/setup); run with --run-ignored all"]
#[test]
fn the_widget_works_like_geetests_in_every_product_mode_by_mouse_and_keyboard() {
    let chromium = chromium();
    forget_screenshots(WIDGET_SHOTS);
    let port = free_port();
    let sim = Sim(std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
        .args(["sim", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap());
    until_listening(port, "the simulator");
    node(
        "widget.mjs",
        &[
            format!("http://127.0.0.1:{port}"),
            artifacts().display().to_string(),
            gatekeeper::sim::DEMO_CAPTCHA_KEY.to_owned(),
        ],
        &chromium,
    );
    drop(sim);
    assert_screenshots(WIDGET_SHOTS);
}
