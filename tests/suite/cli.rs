//! The command line: `check`, `--version`, `--help`.

use std::process::Command;

fn gatekeeper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
}

#[test]
fn check_accepts_the_reference_config_and_summarises_it() {
    let out = gatekeeper()
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/gatekeeper.toml"),
        ])
        .env("GEETEST_LOGIN_KEY", "b09a7aafbfd83f73b35a9b530d0337bf")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("/login"),
        "summary names the routes: {stdout}"
    );
    assert!(
        !stdout.contains("b09a7aafbfd83f73b35a9b530d0337bf"),
        "summary shows the key: {stdout}"
    );
}

#[test]
fn check_reports_every_problem_with_file_line_and_column_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nhtps = \"0.0.0.0:8443\"\nhttp = \"not an address\"\n\n[upstream]\nurl = \"http://127.0.0.1:3000\"\ntimeout = \"5 parsecs\"\n",
    )
    .unwrap();
    let out = gatekeeper()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:2:1:")),
        "unknown key located: {stderr}"
    );
    assert!(
        stderr.contains("htps") && stderr.contains("did you mean"),
        "suggestion: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:3:")),
        "bad address located: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:7:")),
        "bad duration located: {stderr}"
    );
}

/// Regression: `u64::MAX` seconds overflowed `max_token_age + 1m` and
/// `check` panicked with exit 101 instead of naming the line.
#[test]
fn check_refuses_a_huge_duration_with_file_and_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    std::fs::write(
        &path,
        "[server]\nhttp = \"127.0.0.1:8080\"\n\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n\n[geetest]\nmax_token_age = \"18446744073709551615s\"\ntimeout = \"18446744073709551615s\"\n",
    )
    .unwrap();
    let out = gatekeeper()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:8:17: invalid duration"))
            && stderr.contains("geetest.max_token_age must be between 1s and 1day"),
        "max_token_age located with its bound: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:9:11: invalid duration"))
            && stderr.contains("geetest.timeout must be between 1ms and 1m"),
        "timeout located with its bound: {stderr}"
    );
}

/// Regression: humantime overflows and panics on this sum, and the sim
/// parsed `--proof-lifetime` with it.
#[test]
fn sim_refuses_an_overflowing_proof_lifetime_without_panicking() {
    let out = gatekeeper()
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--proof-lifetime",
            "18446744073709551615s 1000ms",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("more than 11 digits"), "{stderr}");
}

#[test]
fn check_names_a_missing_file() {
    let out = gatekeeper()
        .args(["check", "-c", "does-not-exist.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist.toml"));
}

#[test]
fn version_and_help_with_examples() {
    let out = gatekeeper().arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.starts_with("gatekeeper "), "{version}");
    // The commit the binary was built from, as `git` names it here.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout);
    assert!(
        version.contains(&format!("(commit {})", head.trim())),
        "{version} names no commit {head}"
    );
    let out = gatekeeper().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Examples:") && help.contains("check"),
        "{help}"
    );
}

#[test]
fn check_piped_into_a_closed_reader_does_not_panic() {
    // `gatekeeper check | head -n 1` closes the pipe after one line.
    let mut child = gatekeeper()
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/gatekeeper.toml"),
        ])
        .env("GEETEST_LOGIN_KEY", "b09a7aafbfd83f73b35a9b530d0337bf")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

/// Issue 20: `check --offline` checks a templated config (a ConfigMap) whose
/// secrets and files exist only where it runs, and still finds bad values.
#[test]
fn check_offline_reads_no_secret_or_file_but_checks_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatekeeper.toml");
    let text = "[server]\nhttps = \"0.0.0.0:8443\"\n\n[tls]\ncert = \"/nowhere/fullchain.pem\"\n\
                key = \"/nowhere/privkey.pem\"\n\n[upstream]\nurl = \"http://app:3000\"\n\n\
                [captcha.login]\nid = \"647f5ed2ed8acb4be36784e01556bb71\"\n\
                key_env = \"GATEKEEPER_TEST_NEVER_SET\"\n\n[captcha.signup]\n\
                id = \"647f5ed2ed8acb4be36784e01556bb72\"\nkey_file = \"/nowhere/signup.key\"\n\n\
                [[route]]\npath = \"/login\"\ncaptcha = \"login\"\n";
    std::fs::write(&path, text).unwrap();
    let run = |args: &[&str]| {
        let out = gatekeeper()
            .args(args)
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), said)
    };
    let (code, said) = run(&["check", "--offline"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("ok (offline"), "{said}");
    // Without --offline, each missing thing is its own error.
    let (code, said) = run(&["check"]);
    assert_eq!(code, Some(2), "{said}");
    for missing in ["fullchain.pem", "GATEKEEPER_TEST_NEVER_SET", "signup.key"] {
        assert!(said.contains(missing), "{missing} not reported:\n{said}");
    }
    // Offline still refuses a bad value, with its line.
    std::fs::write(&path, text.replace("http://app:3000", "ftp://app")).unwrap();
    let (code, said) = run(&["check", "--offline"]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("gatekeeper.toml:9:"), "{said}");
}
