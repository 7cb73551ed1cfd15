//! `gatekeeper.toml` validation: each kind of error is located by file, line
//! and column, all at once, and secrets never appear in messages.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::strategy::Strategy;

use gatekeeper::config::{
    AcmeChallenge, ConfigError, PathMatch, ReplayStoreKind, ThrottleStore, parse_str,
};

const KEY: &str = "b09a7aafbfd83f73b35a9b530d0337bf";

fn minimal(extra: &str) -> String {
    format!(
        "[server]\nhttp = \"127.0.0.1:8080\"\n\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n\n[captcha.login]\nid = \"647f5ed2ed8acb4be36784e01556bb71\"\nkey = \"{KEY}\"\n{extra}"
    )
}

fn errors(text: &str) -> ConfigError {
    errors_at(text, Path::new("gk.toml"))
}

fn errors_at(text: &str, path: &Path) -> ConfigError {
    match parse_str(text, path) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e,
    }
}

/// The one diagnostic expected, as `LINE:COL: message`.
fn only(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.diagnostics.len(), 1, "{e}");
    let d = &e.diagnostics[0];
    format!("{}:{}: {}", d.line, d.col, d.message)
}

#[test]
fn defaults_apply_to_a_minimal_file() {
    let c = parse_str(
        &minimal("[[route]]\npath = \"/login\"\n"),
        Path::new("gk.toml"),
    )
    .unwrap();
    assert_eq!(c.limits.max_body, 1024 * 1024);
    assert_eq!(c.limits.max_connections, 10_000);
    assert_eq!(c.limits.max_buffered_bodies, 256 * 1024 * 1024);
    assert_eq!(c.limits.max_connections_per_address, 1000);
    assert_eq!(c.limits.max_gated_per_address, 128);
    assert_eq!(
        c.server.workers,
        std::thread::available_parallelism().unwrap().get(),
        "one worker per core"
    );
    assert_eq!(
        c.geetest.api_servers[0].to_string(),
        "https://gcaptcha4.geetest.com/"
    );
    assert_eq!(c.geetest.max_token_age.as_secs(), 600);
    assert_eq!(c.replay.ttl.as_secs(), 900);
    assert_eq!(c.replay.store, ReplayStoreKind::Memory);
    let route = &c.routes[0];
    assert_eq!(route.path, PathMatch::Exact("/login".into()));
    assert_eq!(
        route.methods,
        gatekeeper::config::Methods::Unsafe,
        "a route without methods gates all but GET, HEAD and OPTIONS"
    );
    assert!(!route.strict);
    assert_eq!(c.paths, gatekeeper::config::PathRules::default());
    assert_eq!(
        route.captchas[0].name, "login",
        "the only credential is the default"
    );
}

#[test]
fn an_unknown_key_is_named_with_a_suggestion() {
    let msg = only(&minimal("[limits]\nmax_conections = 5\n"));
    assert!(
        msg.starts_with("11:1: unknown key \"max_conections\" in [limits]"),
        "{msg}"
    );
    assert!(msg.contains("did you mean \"max_connections\""), "{msg}");
    let msg = only(&minimal("[[route]]\npath = \"/a\"\nmethod = [\"GET\"]\n"));
    assert!(
        msg.starts_with("12:1: unknown key \"method\" in [[route]]; did you mean \"methods\""),
        "{msg}"
    );
}

#[test]
fn bad_values_are_located_at_the_value() {
    assert!(
        only(&minimal("[limits]\nidle_timeout = \"5 parsecs\"\n"))
            .starts_with("11:16: invalid duration \"5 parsecs\" for limits.idle_timeout")
    );
    assert!(
        only(&minimal("[limits]\nmax_body = \"lots\"\n"))
            .starts_with("11:12: limits.max_body must be a positive size")
    );
    assert!(
        only(&minimal("[limits]\nmax_connections = 0\n"))
            .starts_with("11:19: limits.max_connections must be a positive")
    );
    assert_eq!(
        only(&minimal("").replace("[server]\n", "[server]\nworkers = 0\n")),
        "2:11: server.workers must be a positive whole number"
    );
    assert!(
        only(&minimal("[geetest]\non_error = \"maybe\"\n"))
            .contains("geetest.on_error must be one of allow, deny")
    );
    assert!(
        only(&minimal("[geetest]\napi_server = \"ftp://x\"\n"))
            .contains("the scheme must be http or https")
    );
    let text = "[server]\nhttp = \"localhost\"\n[upstream]\nurl = \"http://127.0.0.1:3000/app\"\n";
    let e = errors(text);
    let all = e.to_string();
    assert!(
        all.contains("gk.toml:2:8: invalid address \"localhost\" for server.http"),
        "{all}"
    );
    assert!(all.contains("gk.toml:4:7: invalid upstream.url"), "{all}");
}

#[test]
fn several_problems_are_reported_in_one_run() {
    let e = errors(&minimal(
        "[limits]\nidle_timeout = \"x\"\nhandshake_timeout = \"y\"\nbogus = 1\n",
    ));
    assert_eq!(e.diagnostics.len(), 3, "{e}");
    let lines: Vec<usize> = e.diagnostics.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![11, 12, 13]);
}

#[test]
fn tls_files_are_checked_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |cert: &str, key: &str| {
        format!(
            "[server]\nhttps = \"127.0.0.1:8443\"\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n"
        )
    };
    let path = dir.path().join("gk.toml");
    // Missing certificate: located at the cert value, file named.
    let e = errors_at(&cfg("missing.pem", "key.pem"), &path);
    let d = &e.diagnostics[0];
    assert_eq!((d.line, d.col), (4, 8), "{e}");
    assert!(d.message.contains("missing.pem"), "{e}");

    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("garbage.pem"), "not a key").unwrap();
    let e = errors_at(&cfg("cert.pem", "garbage.pem"), &path);
    let d = &e.diagnostics[0];
    assert_eq!((d.line, d.col), (5, 7), "{e}");
    assert!(d.message.contains("garbage.pem"), "{e}");

    // PKCS#8 (rcgen's serialisation) and SEC1 (EC PRIVATE KEY) are both accepted.
    std::fs::write(dir.path().join("pkcs8.pem"), signing_key.serialize_pem()).unwrap();
    assert!(parse_str(&cfg("cert.pem", "pkcs8.pem"), &path).is_ok());
    let sec1 = sec1_pem(&signing_key);
    std::fs::write(dir.path().join("sec1.pem"), sec1).unwrap();
    assert!(parse_str(&cfg("cert.pem", "sec1.pem"), &path).is_ok());
}

#[test]
fn tls_acme_is_checked_and_located() {
    // Lines 1-3: server and upstream; [tls.acme] is line 4, its keys from 5.
    let acme = |keys: &str| {
        format!(
            "[server]\nhttps = \"0.0.0.0:443\"\nhttp = \"0.0.0.0:80\"\n[tls.acme]\n{keys}[upstream]\nurl = \"http://127.0.0.1:3000\"\n"
        )
    };
    let good = "domains = [\"example.com\", \"www.example.com\"]\ncontact = \"mailto:ops@example.com\"\ncache = \"acme\"\n";
    let c = parse_str(&acme(good), Path::new("/etc/gk/gk.toml")).unwrap();
    let a = c.acme.unwrap();
    assert_eq!(a.domains, ["example.com", "www.example.com"]);
    assert_eq!(
        a.directory,
        "https://acme-v02.api.letsencrypt.org/directory"
    );
    assert_eq!(a.cache, Path::new("/etc/gk/acme"));
    assert_eq!(a.challenge, AcmeChallenge::TlsAlpn01);
    assert!(c.tls.is_none());

    let cases = [
        (
            "domains = []\ncache = \"a\"\n",
            "5:11: tls.acme.domains must name at least one domain",
        ),
        (
            "domains = [\"*.example.com\"]\ncache = \"a\"\n",
            "5:12: tls.acme.domains: \"*.example.com\": a wildcard needs the DNS-01 challenge",
        ),
        (
            "domains = [\"localhost\"]\ncache = \"a\"\n",
            "5:12: tls.acme.domains: \"localhost\": not a fully qualified domain name",
        ),
        (
            "domains = [\"a.example\"]\ncontact = \"ops@example.com\"\ncache = \"a\"\n",
            "6:11: tls.acme.contact must be \"mailto:name@example.com\"",
        ),
        (
            "domains = [\"a.example\"]\ndirectory = \"http://ca.example/dir\"\ncache = \"a\"\n",
            "6:13: tls.acme.directory must be an https:// URL",
        ),
        ("domains = [\"a.example\"]\n", "4:1: [tls.acme] needs cache"),
        (
            "domains = [\"a.example\"]\ncache = \"a\"\nchallenge = \"dns-01\"\n",
            "7:13: tls.acme.challenge must be one of tls-alpn-01, http-01",
        ),
        (
            "domains = [\"a.example\"]\ncache = \"a\"\ncahce = \"b\"\n",
            "7:1: unknown key \"cahce\" in [tls.acme]; did you mean \"cache\"?",
        ),
    ];
    for (keys, expected) in cases {
        let msg = only(&acme(keys));
        assert!(msg.starts_with(expected), "{keys}: {msg}");
    }
    // Files and ACME at once.
    let both = "[server]\nhttps = \"0.0.0.0:443\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[tls.acme]\ndomains = [\"a.example\"]\ncache = \"a\"\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n";
    assert!(
        only(both).starts_with("4:8: [tls] takes cert and key, or [tls.acme], not both"),
        "{}",
        only(both)
    );
    // HTTP-01 needs the cleartext listener.
    let text = acme("domains = [\"a.example\"]\ncache = \"a\"\nchallenge = \"http-01\"\n")
        .replace("http = \"0.0.0.0:80\"\n", "");
    let msg = only(&text);
    assert!(
        msg.starts_with(
            "6:13: tls.acme.challenge = \"http-01\" is answered on the cleartext listener"
        ),
        "{msg}"
    );
}

/// Re-wraps rcgen's P-256 PKCS#8 key as SEC1 (`EC PRIVATE KEY`): the SEC1
/// structure is the OCTET STRING inside PKCS#8's privateKey field.
fn sec1_pem(key: &rcgen::KeyPair) -> String {
    let der = key.serialize_der();
    // ECPrivateKey starts SEQUENCE, len, INTEGER 1, OCTET STRING of 32 bytes.
    let at = der
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("ECPrivateKey inside PKCS#8");
    let sec1 = &der[at - 2..];
    assert_eq!(sec1[0], 0x30, "SEC1 is a SEQUENCE");
    let sec1 = &sec1[..2 + sec1[1] as usize];
    let b64 = base64_encode(sec1);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn overlapping_routes_are_refused_and_point_at_the_first() {
    let msg = only(&minimal(
        "[[route]]\npath = \"/a\"\nmethods = [\"POST\", \"GET\"]\n[[route]]\npath = \"/a\"\nmethods = [\"GET\"]\n",
    ));
    assert!(msg.contains("overlaps the route on line 10"), "{msg}");
    // Same path on different hosts, or disjoint methods, is fine (a route
    // without methods gates all but GET, HEAD and OPTIONS).
    let ok = minimal(
        "[[route]]\npath = \"/a\"\n[[route]]\npath = \"/a\"\nhost = \"x.test\"\n[[route]]\npath = \"/a\"\nmethods = [\"GET\"]\n",
    );
    assert!(parse_str(&ok, Path::new("gk.toml")).is_ok());
}

#[test]
fn captcha_references_and_keys_are_checked_without_showing_the_key() {
    let msg = only(&minimal("[[route]]\npath = \"/a\"\ncaptcha = \"logn\"\n"));
    assert!(
        msg.contains("unknown captcha \"logn\"") && msg.contains("did you mean \"login\""),
        "{msg}"
    );

    let text = minimal("").replace(
        &format!("key = \"{KEY}\""),
        "key_env = \"GK_CONFIG_TEST_UNSET_VAR\"",
    );
    assert!(only(&text).contains("environment variable GK_CONFIG_TEST_UNSET_VAR is not set"));

    let short = minimal("").replace(KEY, "tooshort-secret");
    let e = errors(&short).to_string();
    assert!(
        e.contains("must be 32 characters") && !e.contains("tooshort-secret"),
        "{e}"
    );

    let both = minimal("").replace(
        &format!("key = \"{KEY}\""),
        &format!("key = \"{KEY}\"\nkey_env = \"X\""),
    );
    let e = errors(&both).to_string();
    assert!(
        e.contains("exactly one of key, key_env, key_file") && !e.contains(KEY),
        "{e}"
    );
}

#[test]
fn key_file_is_read_relative_to_the_config_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("login.key"), format!("{KEY}\n")).unwrap();
    let text = minimal("[[route]]\npath = \"/a\"\n")
        .replace(&format!("key = \"{KEY}\""), "key_file = \"login.key\"");
    let c = parse_str(&text, &dir.path().join("gk.toml")).unwrap();
    assert_eq!(c.captchas["login"].key.expose(), KEY.as_bytes());
    let debug = format!("{c:?}");
    assert!(!debug.contains(KEY), "the key leaked through Debug");
    assert!(
        !c.summary().contains(KEY),
        "the key leaked through the summary"
    );
}

#[test]
fn replay_ttl_must_outlive_accepted_tokens() {
    let msg = only(&minimal(
        "[geetest]\nmax_token_age = \"10m\"\n[replay]\nttl = \"10m\"\n",
    ));
    assert!(
        msg.starts_with("13:7: replay.ttl (10m) must be at least geetest.max_token_age + 1m (11m)"),
        "{msg}"
    );
    let c = parse_str(
        &minimal("[replay]\nstore = \"redis://127.0.0.1:6379/0\"\n"),
        Path::new("gk.toml"),
    )
    .unwrap();
    assert!(matches!(c.replay.store, ReplayStoreKind::Redis { .. }));
    assert!(
        only(&minimal("[replay]\nstore = \"memcached://x\"\n")).contains("replay.store must be")
    );
}

#[test]
fn the_throttle_store_is_memory_the_replay_stores_redis_or_its_own() {
    let store = |extra: &str| {
        parse_str(&minimal(extra), Path::new("gk.toml"))
            .unwrap()
            .throttle
            .unwrap()
            .store
    };
    assert_eq!(store("[throttle]\n"), ThrottleStore::Memory);
    assert_eq!(
        store("[replay]\nstore = \"redis://r:6379\"\n[throttle]\nstore = \"replay\"\n"),
        ThrottleStore::Replay
    );
    assert!(matches!(
        store("[throttle]\nstore = \"rediss://u:p@r:6380/1\"\n"),
        ThrottleStore::Redis { .. }
    ));
    let msg = only(&minimal("[throttle]\nstore = \"replay\"\n"));
    assert!(
        msg.starts_with("11:9: throttle.store = \"replay\" shares the replay store's Redis, but replay.store is \"memory\""),
        "{msg}"
    );
    let msg = only(&minimal("[throttle]\nstore = \"memcached://x\"\n"));
    assert!(
        msg.starts_with("11:9: throttle.store must be \"memory\", \"replay\""),
        "{msg}"
    );
    let msg = only(&minimal("[throttle]\nstroe = \"memory\"\n"));
    assert!(msg.contains("did you mean \"store\""), "{msg}");
}

#[test]
fn syntax_errors_are_located() {
    let e = errors("[server\nhttp = 1\n");
    assert_eq!(e.diagnostics[0].line, 1, "{e}");
}

#[test]
fn the_reference_file_parses() {
    // SAFETY-free: tests run as separate processes under nextest.
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/gatekeeper.toml"));
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "key_env = \"GEETEST_LOGIN_KEY\"",
        &format!("key = \"{KEY}\""),
    );
    let c = parse_str(&text, &path).unwrap();
    assert_eq!(c.routes.len(), 1);
}

#[ignore = "needs openssl (scripts/setup); run with --run-ignored all"]
#[test]
fn a_pkcs1_rsa_key_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
    };
    let made = run(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"]).and_then(|_| {
        run(&[
            "req",
            "-x509",
            "-key",
            "rsa.pem",
            "-subj",
            "/CN=a.test",
            "-days",
            "1",
            "-out",
            "cert.pem",
        ])
    });
    assert!(
        made.is_ok() && d.join("cert.pem").exists(),
        "openssl is needed to make a PKCS#1 key: run scripts/setup"
    );
    let pem = std::fs::read_to_string(d.join("rsa.pem")).unwrap();
    assert!(
        pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "PKCS#1 expected"
    );
    let text = "[server]\nhttps = \"127.0.0.1:8443\"\n[tls]\ncert = \"cert.pem\"\nkey = \"rsa.pem\"\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n";
    parse_str(text, &d.join("gk.toml")).unwrap();
}

/// Regression: a route host with a port never matched (requests are matched
/// on the host without its port), so its path went silently ungated.
#[test]
fn a_route_host_with_a_port_is_refused() {
    let msg = only(&minimal(
        "[[route]]\npath = \"/a\"\nhost = \"www.example.com:8443\"\n",
    ));
    assert!(
        msg.starts_with("12:8: route host \"www.example.com:8443\" must not include a port"),
        "{msg}"
    );
    assert!(
        only(&minimal(
            "[[route]]\npath = \"/a\"\nhost = \"not a host\"\n"
        ))
        .contains("invalid route host")
    );
    let c = parse_str(
        &minimal("[[route]]\npath = \"/a\"\nhost = \"WWW.Example.com\"\n"),
        Path::new("gk.toml"),
    )
    .unwrap();
    assert_eq!(c.routes[0].host.as_deref(), Some("www.example.com"));
}

// ------------------------------------------------------------------ bounds

/// Every key that holds a duration, size, count or rate, as (section, key).
const NUMERIC_KEYS: &[(&str, &str)] = &[
    ("server", "shutdown_timeout"),
    ("server", "workers"),
    ("upstream", "connect_timeout"),
    ("upstream", "timeout"),
    ("limits", "max_body"),
    ("limits", "header_read_timeout"),
    ("limits", "handshake_timeout"),
    ("limits", "idle_timeout"),
    ("limits", "max_connections"),
    ("geetest", "timeout"),
    ("geetest", "max_token_age"),
    ("geetest", "breaker_failures"),
    ("geetest", "breaker_cooldown"),
    ("replay", "ttl"),
    ("replay", "max_entries"),
    ("replay", "timeout"),
    ("throttle", "rate"),
    ("throttle", "burst"),
    ("throttle", "max_clients"),
];

/// A minimal file with `key = value` (value as TOML) in its section, and
/// the line that key is on.
fn with_value(section: &str, key: &str, value: &str) -> (String, usize) {
    let line = format!("{key} = {value}\n");
    let text = match section {
        "server" | "upstream" => {
            minimal("").replace(&format!("[{section}]\n"), &format!("[{section}]\n{line}"))
        }
        _ => minimal(&format!("[{section}]\n{line}")),
    };
    let at = text
        .lines()
        .position(|l| l.starts_with(&format!("{key} = ")))
        .expect("the key is in the text")
        + 1;
    (text, at)
}

/// A string as a TOML value, escaped as TOML wants it.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `parse_str` accepts the value, within every bound, or refuses it with
/// every diagnostic on the key's own line. A panic fails the caller.
fn accepted_or_refused_at_its_line(section: &str, key: &str, value: &str) {
    let (text, line) = with_value(section, key, value);
    match parse_str(&text, Path::new("gk.toml")) {
        Ok(c) => {
            let ms = Duration::from_millis(1);
            let durations = [
                c.server.shutdown_timeout,
                c.upstream.connect_timeout,
                c.upstream.timeout,
                c.limits.header_read_timeout,
                c.limits.handshake_timeout,
                c.limits.idle_timeout,
                c.geetest.timeout,
                c.geetest.breaker_cooldown,
                c.geetest.max_token_age,
                c.replay.ttl,
                c.replay.timeout,
            ];
            for d in durations {
                assert!(
                    d >= ms && d <= Duration::from_secs(30 * 86_400),
                    "{key} = {value} accepted, giving {d:?}"
                );
            }
            assert!(c.geetest.max_token_age <= Duration::from_secs(86_400));
            assert!(
                (1..=1 << 30).contains(&c.limits.max_body),
                "{key} = {value}"
            );
            assert!((1..=1024).contains(&c.server.workers), "{key} = {value}");
            assert!((1..=1_000_000).contains(&c.limits.max_connections));
            assert!((1..=10_000).contains(&c.geetest.breaker_failures));
            assert!((1..=100_000_000).contains(&c.replay.max_entries));
            if let Some(t) = &c.throttle {
                assert!(
                    (1.0 / 3600.0..=1_000_000.0).contains(&t.per_second),
                    "{key} = {value} gave {} per second",
                    t.per_second
                );
                assert!((1..=1_000_000).contains(&t.burst));
                assert!((1..=10_000_000).contains(&t.max_clients));
            }
        }
        Err(e) => {
            assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                assert_eq!(d.line, line, "{key} = {value}: {e}");
            }
        }
    }
}

/// Values that broke, or could break, a parser or the arithmetic after it.
const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "1",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "4294967296",
    "1.5",
    "-0.0",
    "1e300",
    "inf",
    "-inf",
    "nan",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\" \"",
    "\"0\"",
    "\"0s\"",
    "\"0ms 0s\"",
    "\"-5s\"",
    "\"1\"",
    "\"1ns\"",
    "\"999us\"",
    "\"5 parsecs\"",
    "\"18446744073709551615s\"",
    "\"18446744073709551615s 1000ms\"",
    "\"18446744073709551615s 500ms 500ms\"",
    "\"584542046090y 1000ms\"",
    "\"99999999999y\"",
    "\"9999999999w 9d\"",
    "\"18446744073709551615ns\"",
    "\"1.999999999999s\"",
    "\"30days 1ns\"",
    "\"1day 1s\"",
    "\"1h 1ms\"",
    "\"1e3s\"",
    "\"١٢s\"",
    "\"18446744073709551615\"",
    "\"18446744073709551615 EiB\"",
    "\"16 EiB\"",
    "\"1.5GiB\"",
    "\"1GiB\"",
    "\"1073741825\"",
    "\"-1KiB\"",
    "\"nan KiB\"",
    "\"0.5B\"",
    "\"10/m\"",
    "\"0/s\"",
    "\"-1/s\"",
    "\"1e308/s\"",
    "\"1e309/s\"",
    "\"inf/s\"",
    "\"NaN/h\"",
    "\"1e-300/h\"",
    "\"0.9/h\"",
    "\"1000001/s\"",
    "\"18446744073709551615/s\"",
    "\"/\"",
    "\"10/\"",
    "\"/m\"",
    "\"10/d\"",
    "\"10//m\"",
];

#[test]
fn every_numeric_key_refuses_hostile_values_at_its_line_without_panicking() {
    for (section, key) in NUMERIC_KEYS {
        for value in HOSTILE {
            accepted_or_refused_at_its_line(section, key, value);
        }
    }
}

proptest::proptest! {
    #[test]
    fn any_value_of_a_numeric_key_is_bounded_or_refused_at_its_line(
        key in 0..NUMERIC_KEYS.len(),
        value in proptest::prop_oneof![
            proptest::num::i64::ANY.prop_map(|n| n.to_string()),
            proptest::num::f64::ANY.prop_map(|f| if f.is_nan() {
                "nan".to_owned()
            } else if f.is_infinite() {
                if f > 0.0 { "inf" } else { "-inf" }.to_owned()
            } else {
                format!("{f:?}")
            }),
            "-?[0-9]{0,22}(\\.[0-9]{0,12})? ?(ns|us|µs|ms|s|sec|m|min|h|hr|d|days|w|M|y|B|KiB|MiB|GiB|EiB|kb|/s|/m|/h|)"
                .prop_map(|s| toml_str(&s)),
            "([0-9]{1,21}(\\.[0-9]{1,3})?(ns|ms|s|m|h|d|y) ?){1,5}".prop_map(|s| toml_str(&s)),
            ".{0,24}".prop_map(|s| toml_str(&s)),
        ],
    ) {
        let (section, key) = NUMERIC_KEYS[key];
        accepted_or_refused_at_its_line(section, key, &value);
    }
}

/// Regression: `u64::MAX` seconds overflowed `max_token_age + 1m` (panic,
/// exit 101, and a SIGHUP with it killed the proxy).
#[test]
fn a_huge_duration_is_refused_with_its_key_bound_and_reason() {
    let msg = only(&minimal(
        "[geetest]\nmax_token_age = \"18446744073709551615s\"\n",
    ));
    assert!(
        msg.starts_with(
            "11:17: invalid duration \"18446744073709551615s\" for geetest.max_token_age"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("geetest.max_token_age must be between 1s and 1day: "),
        "{msg}"
    );
    let msg = only(&minimal("[geetest]\ntimeout = \"2h\"\n"));
    assert!(
        msg.starts_with("11:11: geetest.timeout = \"2h\" is out of range: geetest.timeout must be between 1ms and 1m: "),
        "{msg}"
    );
    // humantime alone panics on this one: it is refused before it gets there.
    let msg = only(&minimal(
        "[geetest]\ntimeout = \"18446744073709551615s 1000ms\"\n",
    ));
    assert!(msg.contains("more than 11 digits"), "{msg}");
    assert!(
        only(&minimal("[limits]\nidle_timeout = \"500us\"\n"))
            .contains("limits.idle_timeout must be between 1ms and 1h")
    );
}

#[test]
fn sizes_counts_and_rates_name_their_bound() {
    let msg = only(&minimal("[limits]\nmax_body = \"2GiB\"\n"));
    assert!(
        msg.starts_with("11:12: limits.max_body = \"2GiB\" is out of range: limits.max_body must be at most 1GiB: "),
        "{msg}"
    );
    let msg = only(&minimal("").replace("[server]\n", "[server]\nworkers = 100000\n"));
    assert_eq!(
        msg,
        "2:11: server.workers = 100000 is out of range: server.workers must be between 1 and 1024: each worker is a thread with its own runtime and pools"
    );
    let msg = only(&minimal("[throttle]\nrate = \"2000000/s\"\n"));
    assert!(
        msg.starts_with("11:8: throttle.rate = \"2000000/s\" is out of range: throttle.rate must be between 1/h and 1000000/s"),
        "{msg}"
    );
    let c = parse_str(
        &minimal("[limits]\nmax_body = \"1GiB\"\n[throttle]\nrate = \"1/h\"\n"),
        Path::new("gk.toml"),
    )
    .unwrap();
    assert_eq!(c.limits.max_body, 1 << 30, "the bound itself is accepted");
}

#[test]
fn a_per_address_connection_limit_above_max_connections_is_refused_at_its_line() {
    let msg = only(&minimal(
        "[limits]
max_connections = 50
max_connections_per_address = 51
",
    ));
    assert!(
        msg.starts_with("12:31: limits.max_connections_per_address = 51 is more than limits.max_connections = 50"),
        "{msg}"
    );
    // The default follows max_connections: a tenth, at least 100, at most all.
    let c = parse_str(
        &minimal(
            "[limits]
max_connections = 50
",
        ),
        Path::new("gk.toml"),
    )
    .unwrap();
    assert_eq!(c.limits.max_connections_per_address, 50);
    let c = parse_str(
        &minimal(
            "[limits]
max_connections = 5000
",
        ),
        Path::new("gk.toml"),
    )
    .unwrap();
    assert_eq!(c.limits.max_connections_per_address, 500);
}

/// Regression: with no replay.ttl written, a long max_token_age was refused
/// at line 1, column 1, naming a key that is not in the file.
#[test]
fn a_token_age_the_default_ttl_cannot_outlive_is_located_at_the_token_age() {
    let msg = only(&minimal("[geetest]\nmax_token_age = \"20m\"\n"));
    assert!(
        msg.starts_with(
            "11:17: replay.ttl (15m) must be at least geetest.max_token_age + 1m (21m)"
        ),
        "{msg}"
    );
}

/// Issue 20: each root cause once. A captcha section whose key is missing
/// is one error; the route naming it, and a [tls] whose https address is
/// wrong, add none.
#[test]
fn a_broken_section_is_reported_once_without_follow_on_errors() {
    let text = "[server]\nhttps = \"nonsense\"\nhttp = \"127.0.0.1:8080\"\n\n\
                [tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n\
                [upstream]\nurl = \"http://127.0.0.1:3000\"\n\n\
                [captcha.login]\nid = \"647f5ed2ed8acb4be36784e01556bb71\"\n\
                key_env = \"GATEKEEPER_TEST_UNSET_VARIABLE\"\n\n\
                [[route]]\npath = \"/login\"\ncaptcha = \"login\"\n\n[[route]]\npath = \"/other\"\n";
    let e = errors(text);
    let messages: Vec<String> = e
        .diagnostics
        .iter()
        .map(|d| format!("{}: {}", d.line, d.message))
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("2: invalid address")),
        "{e}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("GATEKEEPER_TEST_UNSET_VARIABLE")),
        "{e}"
    );
    assert!(
        !messages
            .iter()
            .any(|m| m.contains("unknown captcha") || m.contains("server.https is not")),
        "a follow-on error:\n{e}"
    );
    // A name no section declares is still an error of its own.
    let typo = minimal("\n[[route]]\npath = \"/x\"\ncaptcha = \"logni\"\n");
    assert!(
        only(&typo).contains("unknown captcha \"logni\""),
        "{}",
        errors(&typo)
    );
}

/// Issue 20: a type error names its key, not only the types.
#[test]
fn a_type_error_names_its_key() {
    assert_eq!(
        only(&minimal("\n[replay]\nttl = 15\n")),
        "12:7: replay.ttl: invalid type: integer `15`, expected a string"
    );
    let methods = only(&minimal("\n[[route]]\npath = \"/x\"\nmethods = \"POST\"\n"));
    assert!(
        methods.starts_with("13:11: route.methods: invalid type"),
        "{methods}"
    );
    let id = only(&minimal("").replace("id = \"647f5ed2ed8acb4be36784e01556bb71\"", "id = 647"));
    assert!(id.contains("captcha.login.id: invalid type"), "{id}");
}
