//! Issue 6: operable at the edge. Metrics, readiness, live reload under load,
//! certificate renewal, graceful shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};

type Plain = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn plain() -> Plain {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

async fn get(client: &Plain, url: &str) -> Result<(StatusCode, String), String> {
    let resp = client
        .get(url.parse().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The value of one sample line of the exposition, e.g. `name{labels}`.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_change_as_requests_are_decided() {
    let env = Env::start("[[route]]\npath = \"/login\"\n").await;
    let admin = |path: &str| format!("http://{}{path}", env.admin);
    let c = env.client(false);
    let before = get(&plain(), &admin("/metrics")).await.unwrap().1;
    assert_eq!(
        sample(
            &before,
            "gatekeeper_gate_decisions_total{route=\"/login\",outcome=\"pass\"}"
        ),
        0.0
    );

    assert_eq!(
        c.post_form(&env.https_url("/login"), env.sim.mint(CAPTCHA_ID).form())
            .await
            .status,
        StatusCode::OK
    );
    c.post_form(&env.https_url("/login"), "user=a").await;
    c.get(&env.https_url("/other")).await;

    let (status, after) = get(&plain(), &admin("/metrics")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sample(
            &after,
            "gatekeeper_gate_decisions_total{route=\"/login\",outcome=\"pass\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "gatekeeper_gate_decisions_total{route=\"/login\",outcome=\"captcha_required\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "gatekeeper_requests_total{route=\"/login\",method=\"POST\",status=\"403\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "gatekeeper_requests_total{route=\"-\",method=\"GET\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&after, "gatekeeper_validate_duration_seconds_count"),
        1.0
    );
    assert_eq!(
        sample(&after, "gatekeeper_upstream_duration_seconds_count"),
        2.0
    );
    assert_eq!(sample(&after, "gatekeeper_replay_entries"), 1.0);
    assert!(
        sample(
            &after,
            "gatekeeper_open_connections{listener=\"https\",protocol=\"http/1.1\"}"
        ) >= 1.0
    );
    assert!(after.contains("gatekeeper_config_info{hash=\""), "{after}");
    assert_eq!(
        get(&plain(), &admin("/healthz")).await.unwrap().0,
        StatusCode::OK
    );
    // The admin endpoints are not on the public listeners.
    assert_eq!(
        c.get(&env.https_url("/metrics")).await.text(),
        "upstream ok"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn readyz_flips_during_drain_while_a_slow_request_finishes() {
    let mut env = Env::start("").await;
    let readyz = format!("http://{}/readyz", env.admin);
    assert_eq!(get(&plain(), &readyz).await.unwrap().0, StatusCode::OK);

    let client = Arc::new(env.client(false));
    let url = env.https_url("/slow/1500");
    let slow = tokio::spawn(async move { client.get(&url).await });
    env.upstream.arrivals(1).await;
    let server = env.server.take().unwrap();
    let draining = tokio::spawn(server.shutdown(Duration::from_secs(10)));

    let mut saw_503 = false;
    for _ in 0..50 {
        if let Ok((StatusCode::SERVICE_UNAVAILABLE, _)) = get(&plain(), &readyz).await {
            saw_503 = true;
            break;
        }
        // The poll interval: 50 tries, while the slow request is in flight.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_503, "readyz did not answer 503 while draining");
    // No new connections once draining.
    assert!(
        tokio::net::TcpStream::connect(env.https).await.is_err(),
        "still accepting"
    );
    let answer = slow.await.unwrap();
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "the request in flight finished"
    );
    assert_eq!(answer.text(), "slow ok");
    draining.await.unwrap();
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_the_next_handshake_without_a_signal() {
    let env = Env::start("").await;
    let first = peer_certificate(&env, std::slice::from_ref(&env.certs.cert_der)).await;
    assert_eq!(first, env.certs.cert_der);

    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    // Key first, then chain, as a renewal tool writes them.
    std::fs::write(&env.certs.key_path, signing_key.serialize_pem()).unwrap();
    std::fs::write(&env.certs.cert_path, cert.pem()).unwrap();
    let trusted = [env.certs.cert_der.clone(), cert.der().clone()];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = peer_certificate(&env, &trusted).await;
        if served == *cert.der() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        // The poll interval, within the deadline above.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.shutdown().await;
}

async fn peer_certificate(
    env: &Env,
    trusted: &[rustls::pki_types::CertificateDer<'static>],
) -> rustls::pki_types::CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add(c.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(env.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// The binary, on a config file the test can rewrite.
struct Managed {
    process: Process,
    path: std::path::PathBuf,
    port: u16,
    _certs: TestCerts,
}

fn managed(upstream: &Upstream, sim: &Sim, routes: &str) -> Managed {
    let certs = TestCerts::new();
    let port = free_port();
    let path = certs.dir.path().join("gatekeeper.toml");
    std::fs::write(&path, managed_text(&certs, upstream, sim, port, routes)).unwrap();
    let process = Process::spawn(&path, port, &[]);
    Managed {
        process,
        path,
        port,
        _certs: certs,
    }
}

fn managed_text(
    certs: &TestCerts,
    upstream: &Upstream,
    sim: &Sim,
    port: u16,
    routes: &str,
) -> String {
    config_text(certs, upstream.addr, &sim.url(), routes)
        .replace(
            "http = \"127.0.0.1:0\"",
            &format!("http = \"127.0.0.1:{port}\""),
        )
        .replace("[server]\n", "[server]\nshutdown_timeout = \"10s\"\n")
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

async fn wait_for_log(path: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(Instant::now() < deadline, "log never said {needle:?}");
        // The poll interval, within the deadline above.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sighup_with_a_changed_route_takes_effect_under_keep_alive_load_with_no_failed_request() {
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    let m = managed(&upstream, &sim, "[[route]]\npath = \"/login\"\n");
    let url = format!("http://127.0.0.1:{}/open", m.port);
    let client = plain();
    assert_eq!(get(&client, &url).await.unwrap().0, StatusCode::OK);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // How many load tasks have met the new route (a 403).
    let switched = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, url) = (client.clone(), url.clone());
        let (stop, switched) = (stop.clone(), switched.clone());
        load.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let result = get(&client, &url).await.map(|(s, _)| s);
                if result == Ok(StatusCode::FORBIDDEN) && !seen.contains(&result) {
                    switched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                seen.push(result);
            }
            seen
        }));
    }
    // The load is under way: 20 of its requests reached the upstream.
    upstream.arrivals(1 + 20).await;
    let text = std::fs::read_to_string(&m.path).unwrap()
        + "\n[[route]]\npath = \"/open\"\nmethods = [\"GET\"]\n";
    std::fs::write(&m.path, text).unwrap();
    signal(m.process.pid(), "-HUP");
    wait_for_log(&m.process.log_path, "configuration reloaded").await;
    wait_until(
        "every load task to meet the new route",
        Duration::from_secs(10),
        || switched.load(std::sync::atomic::Ordering::Relaxed) == 4,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut total = 0;
    for task in load {
        let seen = task.await.unwrap();
        total += seen.len();
        for result in &seen {
            let status = result
                .as_ref()
                .expect("no request failed during the reload");
            assert!(
                *status == StatusCode::OK || *status == StatusCode::FORBIDDEN,
                "{status}"
            );
        }
        assert_eq!(
            seen.last().unwrap().as_ref().unwrap(),
            &StatusCode::FORBIDDEN,
            "the new route applies"
        );
    }
    assert!(total > 20, "the load ran ({total} requests)");
    assert_eq!(get(&client, &url).await.unwrap().0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sighup_with_a_broken_file_keeps_serving_the_old_configuration() {
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    let m = managed(
        &upstream,
        &sim,
        "[[route]]\npath = \"/login\"\nmethods = [\"GET\"]\n",
    );
    let client = plain();
    let login = format!("http://127.0.0.1:{}/login", m.port);
    assert_eq!(get(&client, &login).await.unwrap().0, StatusCode::FORBIDDEN);

    std::fs::write(&m.path, "[server]\nhttp = \"127.0.0.1:1\"\nbogus = true\n").unwrap();
    signal(m.process.pid(), "-HUP");
    wait_for_log(&m.process.log_path, "configuration reload failed").await;
    let logs = m.process.logs();
    assert!(
        logs.contains("gatekeeper.toml:3:1: unknown key \"bogus\""),
        "the error names file and line:\n{logs}"
    );
    // Still the old config: same port, same route.
    assert_eq!(get(&client, &login).await.unwrap().0, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&client, &format!("http://127.0.0.1:{}/x", m.port))
            .await
            .unwrap()
            .0,
        StatusCode::OK
    );
}

/// Regression: a duration of `u64::MAX` seconds overflowed while the file
/// was checked, and the panic on SIGHUP killed the running proxy.
#[tokio::test]
async fn sighup_with_a_huge_duration_is_refused_and_the_old_configuration_keeps_serving() {
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    let m = managed(
        &upstream,
        &sim,
        "[[route]]\npath = \"/login\"\nmethods = [\"GET\"]\n",
    );
    let client = plain();
    let login = format!("http://127.0.0.1:{}/login", m.port);
    let open = format!("http://127.0.0.1:{}/open", m.port);
    assert_eq!(get(&client, &login).await.unwrap().0, StatusCode::FORBIDDEN);

    let good = std::fs::read_to_string(&m.path).unwrap();
    let huge = good.replace(
        "[geetest]\n",
        "[geetest]\nmax_token_age = \"18446744073709551615s\"\n",
    );
    assert_ne!(huge, good);
    let line = huge
        .lines()
        .position(|l| l.starts_with("max_token_age"))
        .unwrap()
        + 1;
    std::fs::write(&m.path, huge).unwrap();
    signal(m.process.pid(), "-HUP");
    wait_for_log(&m.process.log_path, "configuration reload failed").await;
    let logs = m.process.logs();
    assert!(
        logs.contains(&format!("gatekeeper.toml:{line}:17: invalid duration"))
            && logs.contains("geetest.max_token_age must be between 1s and 1day"),
        "the refusal names file, line and bound:\n{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
    // Still the old config, and still reloading: a good file is taken next.
    assert_eq!(get(&client, &login).await.unwrap().0, StatusCode::FORBIDDEN);
    assert_eq!(get(&client, &open).await.unwrap().0, StatusCode::OK);
    std::fs::write(
        &m.path,
        good + "\n[[route]]\npath = \"/open\"\nmethods = [\"GET\"]\n",
    )
    .unwrap();
    signal(m.process.pid(), "-HUP");
    wait_for_log(&m.process.log_path, "configuration reloaded").await;
    assert_eq!(get(&client, &open).await.unwrap().0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    let m = managed(&upstream, &sim, "");
    let client = plain();
    let url = format!("http://127.0.0.1:{}/slow/1500", m.port);
    let slow = tokio::spawn(async move { get(&client, &url).await });
    upstream.arrivals(1).await;
    signal(m.process.pid(), "-TERM");
    let (status, body) = slow
        .await
        .unwrap()
        .expect("the request in flight was not cut off");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "slow ok"));
    let exit = tokio::task::spawn_blocking(move || m.process.terminate())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

/// Of the "upstream unreachable" warnings in `logs`: the lines logged, the
/// reports of suppressed repeats, and the repeats those count.
fn unreachable_tally(logs: &str) -> (usize, usize, u64) {
    let mentions: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("upstream unreachable"))
        .collect();
    let reports = mentions
        .iter()
        .filter(|l| l.contains("repeats of a warning were suppressed"))
        .count();
    let logged = mentions.len() - reports;
    let counted: u64 = mentions
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once("suppressed=")?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    (logged, reports, counted)
}

#[tokio::test]
async fn a_burst_of_requests_to_a_down_upstream_logs_a_few_lines_and_counts_the_rest() {
    let certs = TestCerts::new();
    let sim = Sim::start().await;
    // Nothing listens there: every request is a 502.
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let port = free_port();
    let path = certs.dir.path().join("gatekeeper.toml");
    let text = config_text(&certs, dead, &sim.url(), "").replace(
        "http = \"127.0.0.1:0\"",
        &format!("http = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&path, text).unwrap();
    let process = Process::spawn(&path, port, &[]);
    let client = plain();
    let url = format!("http://127.0.0.1:{port}/down");

    let started = Instant::now();
    let mut burst = Vec::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        burst.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..50 {
                statuses.push(get(&client, &url).await.unwrap().0);
            }
            statuses
        }));
    }
    let mut sent = 0;
    for task in burst {
        for status in task.await.unwrap() {
            assert_eq!(status, StatusCode::BAD_GATEWAY);
            sent += 1;
        }
    }
    let seconds = started.elapsed().as_secs() + 1;
    // The count of the last interval's repeats comes at its end.
    wait_until("the last interval's count", Duration::from_secs(10), || {
        let (logged, _, counted) = unreachable_tally(&process.logs());
        logged as u64 + counted >= sent
    })
    .await;
    let logs = process.logs();
    let (logged, reports, counted) = unreachable_tally(&logs);
    // At most one line a second, and one count a second.
    assert!(
        logged as u64 <= seconds + 1 && reports as u64 <= seconds + 1,
        "{logged} lines and {reports} counts for {sent} failures in {seconds}s:\n{logs}"
    );
    assert!(reports >= 1, "{logs}");
    assert_eq!(
        logged as u64 + counted,
        sent,
        "every failure is logged or counted:\n{logs}"
    );
    // The per-request lines stay, one per request.
    let request_lines = logs.lines().filter(|l| l.contains("status=502")).count();
    assert_eq!(request_lines as u64, sent);
    process.terminate();
}

#[tokio::test]
async fn sighups_under_gated_load_open_no_new_validate_connections() {
    let upstream = Upstream::start().await;
    let sim = Arc::new(Sim::start().await);
    let m = managed(&upstream, &sim, "[[route]]\npath = \"/login\"\n");
    let client = plain();
    let login = format!("http://127.0.0.1:{}/login", m.port);
    let gated = {
        let (client, sim) = (client.clone(), sim.clone());
        move || {
            let req = http::Request::post(login.as_str())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(sim.mint(CAPTCHA_ID).form())))
                .unwrap();
            let client = client.clone();
            async move { client.request(req).await.map(|r| r.status()) }
        }
    };
    for _ in 0..5 {
        assert_eq!(gated().await.unwrap(), StatusCode::OK);
    }
    let before = sim.sim.stats().connections;

    // Light load, one request at a time, while the file is reloaded.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(gated().await.map_err(|e| e.to_string()));
            }
            statuses
        })
    };
    let original = std::fs::read_to_string(&m.path).unwrap();
    for i in 1..=5 {
        // A change elsewhere in the file: a new route.
        let text = format!("{original}\n[[route]]\npath = \"/other{i}\"\n");
        std::fs::write(&m.path, text).unwrap();
        signal(m.process.pid(), "-HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.process.logs().matches("configuration reloaded").count() < i {
            assert!(Instant::now() < deadline, "reload {i} never finished");
            // The poll interval, within the deadline above.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Gated requests between this reload and the next.
        let validations = sim.sim.stats().validations;
        wait_until(
            "gated requests after the reload",
            Duration::from_secs(10),
            || sim.sim.stats().validations >= validations + 3,
        )
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 10, "the load ran ({})", statuses.len());
    for status in statuses {
        assert_eq!(status.expect("no request failed"), StatusCode::OK);
    }
    assert_eq!(
        sim.sim.stats().connections,
        before,
        "a reload opened new validate connections"
    );
}

/// `gatekeeper reload` (systemd's ExecReload) checks the file, signals the
/// running process and reports that process's own verdict: a wrong file is
/// never sent, and a reload the process refuses fails the command.
#[tokio::test]
async fn gatekeeper_reload_reports_the_running_processs_verdict() {
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    let certs = TestCerts::new();
    let (port, admin) = (free_port(), free_port());
    let path = certs.dir.path().join("gatekeeper.toml");
    let text = managed_text(
        &certs,
        &upstream,
        &sim,
        port,
        "[[route]]\npath = \"/login\"\n",
    )
    .replace(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"127.0.0.1:{admin}\""),
    );
    std::fs::write(&path, &text).unwrap();
    let process = Process::spawn(&path, port, &[]);
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let reload = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args(["reload", "-c"])
            .arg(&path)
            .args(["--pid", &process.pid().to_string()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), said)
    };
    let client = plain();
    let open = format!("http://127.0.0.1:{port}/open");
    assert_eq!(get(&client, &open).await.unwrap().0, StatusCode::OK);

    // A good change: exit 0 once the process has taken it.
    std::fs::write(
        &path,
        text.clone() + "\n[[route]]\npath = \"/open\"\nmethods = [\"GET\"]\n",
    )
    .unwrap();
    let (code, said) = reload();
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("reloaded by process"), "{said}");
    assert_eq!(get(&client, &open).await.unwrap().0, StatusCode::FORBIDDEN);

    // A wrong file: exit 2 with FILE:LINE, and the process is not asked.
    let failures = "gatekeeper_config_reloads_total{result=\"failure\"}";
    std::fs::write(&path, text.clone() + "bogus = 1\n").unwrap();
    let (code, said) = reload();
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("gatekeeper.toml:") && said.contains("bogus"),
        "{said}"
    );
    assert_eq!(metric(admin, failures).await, 0.0);

    // A file that checks but that the process cannot apply (its new port is
    // taken): exit 1, and the old configuration keeps serving.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let moved = text.replace(
        &format!("http = \"127.0.0.1:{port}\""),
        &format!("http = \"{}\"", taken.local_addr().unwrap()),
    );
    std::fs::write(&path, moved).unwrap();
    let (code, said) = reload();
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("refused the new configuration"), "{said}");
    assert_eq!(metric(admin, failures).await, 1.0);
    assert_eq!(get(&client, &open).await.unwrap().0, StatusCode::FORBIDDEN);
}

/// `gatekeeper health` is the image's HEALTHCHECK: exit 0 while the admin
/// listener says alive (or ready), 1 when nothing answers.
#[tokio::test]
async fn gatekeeper_health_asks_the_admin_listener() {
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    let certs = TestCerts::new();
    let (port, admin) = (free_port(), free_port());
    let path = certs.dir.path().join("gatekeeper.toml");
    let text = managed_text(&certs, &upstream, &sim, port, "").replace(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"127.0.0.1:{admin}\""),
    );
    std::fs::write(&path, &text).unwrap();
    let _process = Process::spawn(&path, port, &[]);
    let health = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .arg("health")
            .args(args)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), said)
    };
    let addr = format!("127.0.0.1:{admin}");
    let (code, said) = health(&["--admin", &addr]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("/healthz: 200"), "{said}");
    let (code, said) = health(&["--admin", &addr, "--ready"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("/readyz: 200"), "{said}");
    let closed = format!("127.0.0.1:{}", free_port());
    let (code, said) = health(&["--admin", &closed]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.starts_with("gatekeeper health:"), "{said}");
}

/// Issue 20: in JSON, each line is one object, the request line carries its
/// id, host, user agent, HTTP version, lengths and status at the top level,
/// and a failed reload's problems are a field, not a multi-line message.
#[tokio::test]
async fn json_logs_carry_the_request_at_the_top_level_one_object_per_line() {
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    let certs = TestCerts::new();
    let port = free_port();
    let path = certs.dir.path().join("gatekeeper.toml");
    let text = managed_text(&certs, &upstream, &sim, port, "");
    std::fs::write(&path, &text).unwrap();
    let process = Process::spawn_with_args(&path, port, &["--log-format", "json"], &[]);
    let client = plain();
    let req = http::Request::post(format!("http://127.0.0.1:{port}/open"))
        .header("user-agent", "probe/1.0")
        .header("x-request-id", "ignored-from-an-untrusted-peer")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), StatusCode::OK);
    std::fs::write(&path, text + "bogus = 1\n").unwrap();
    signal(process.pid(), "-HUP");
    wait_for_log(&process.log_path, "configuration reload failed").await;
    let (_, log_path) = process.terminate_keep_logs();
    let logs = std::fs::read_to_string(log_path).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"))
        })
        .collect();
    let request = lines
        .iter()
        .find(|l| l["message"] == "request" && l["path"] == "/open")
        .unwrap_or_else(|| panic!("no request line:\n{logs}"));
    assert_eq!(request["method"], "POST", "{request}");
    assert_eq!(request["host"], format!("127.0.0.1:{port}"), "{request}");
    assert_eq!(request["user_agent"], "probe/1.0", "{request}");
    assert_eq!(request["version"], "HTTP/1.1", "{request}");
    assert_eq!(request["status"], 200, "{request}");
    assert_eq!(request["bytes_in"], 5, "{request}");
    let id = request["request_id"].as_str().unwrap_or_default();
    assert!(
        id.len() >= 16 && id != "ignored-from-an-untrusted-peer",
        "{request}"
    );
    let reload = lines
        .iter()
        .find(|l| l["message"] == "configuration reload failed, keeping the running configuration")
        .unwrap_or_else(|| panic!("no reload line:\n{logs}"));
    assert!(
        reload["errors"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown key \"bogus\""),
        "{reload}"
    );
}

/// An application that reads a request body whole, says how many bytes it
/// got in `x-received`, and answers 1000 + 2000 + 3000 bytes in chunks.
async fn chunked_app() -> std::net::SocketAddr {
    use hyper::body::{Frame, Incoming};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                let received = req.into_body().collect().await.map(|b| b.to_bytes().len());
                let frames = [1000, 2000, 3000].map(|n| {
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'x'; n])))
                });
                let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                http::Response::builder()
                    .header("x-received", received.unwrap_or(0))
                    .body(body)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// Issue 20: streamed uploads (forwarded, or read by the gate) and a chunked answer are logged
/// with the bytes that really went each way, once both have ended.
#[tokio::test]
async fn the_request_line_counts_streamed_uploads_gated_or_not_and_a_chunked_answer() {
    let app = chunked_app().await;
    let sim = Sim::start().await;
    let certs = TestCerts::new();
    let port = free_port();
    let path = certs.dir.path().join("gatekeeper.toml");
    let text = config_text(&certs, app, &sim.url(), "[[route]]\npath = \"/login\"\n").replace(
        "http = \"127.0.0.1:0\"",
        &format!("http = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&path, &text).unwrap();
    let process = Process::spawn_with_args(&path, port, &["--log-format", "json"], &[]);

    // Ten 1000-byte chunks, no declared length.
    let frames =
        futures_util::stream::iter((0..10).map(|_| {
            Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(vec![b'u'; 1000])))
        }));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<_>>();
    let req = http::Request::post(format!("http://127.0.0.1:{port}/upload"))
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-received"], "10000");
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        6000
    );
    // A chunked body the gate reads itself, and refuses.
    let form = futures_util::stream::iter(["user=alice&", "lot_number="].map(|s| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from_static(s.as_bytes())))
    }));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<_>>();
    let req = http::Request::post(format!("http://127.0.0.1:{port}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::StreamBody::new(form))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let refusal = resp.into_body().collect().await.unwrap().to_bytes();

    let (_, log_path) = process.terminate_keep_logs();
    let logs = std::fs::read_to_string(log_path).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.contains("\"message\":\"request\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one line per request:\n{logs}");
    assert_eq!(lines[0]["path"], "/upload", "{logs}");
    assert_eq!(lines[0]["bytes_in"], 10000, "{logs}");
    assert_eq!(lines[0]["bytes_out"], 6000, "{logs}");
    assert_eq!(lines[1]["path"], "/login", "{logs}");
    assert_eq!(lines[1]["bytes_in"], 22, "{logs}");
    assert_eq!(lines[1]["bytes_out"], refusal.len(), "{logs}");
}
