//! Issue 7: every wait has a bound, and `max_connections` holds (tunnels included).

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SHORT: &str = r#"
[[route]]
path = "/login"

[limits]
handshake_timeout = "400ms"
header_read_timeout = "400ms"
idle_timeout = "400ms"
"#;

/// Reads until the peer closes; true if it did within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> (bool, String) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let result = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (result.is_ok(), String::from_utf8_lossy(&out).into_owned())
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_silent_tls_client_is_dropped_after_the_handshake_timeout() {
    let env = Env::start(SHORT).await;
    let mut s = connect(env.https).await;
    let (closed, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "the TLS listener kept a silent connection open");
    env.shutdown().await;
}

#[tokio::test]
async fn a_silent_cleartext_client_is_dropped_after_the_header_timeout() {
    let env = Env::start(SHORT).await;
    let mut s = connect(env.http).await;
    let (closed, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "a connection that never sent a byte stayed open");
    env.shutdown().await;
}

#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    let env = Env::start(SHORT).await;
    let mut s = connect(env.http).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let (closed, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "an unfinished request head held the connection");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(env.upstream.count(), 0);
    env.shutdown().await;
}

#[tokio::test]
async fn a_slow_gated_body_is_refused_with_408_and_never_forwarded() {
    let env = Env::start(SHORT).await;
    let mut s = connect(env.http).await;
    s.write_all(b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nlot_number=").await.unwrap();
    let (_, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert_eq!(env.upstream.count(), 0);
    env.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let env = Env::start(SHORT).await;
    let mut s = connect(env.http).await;
    s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let (closed, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection stayed open");
    env.shutdown().await;
}

#[tokio::test]
async fn max_connections_holds_extra_clients_until_a_slot_frees() {
    let env = Env::start("[limits]\nmax_connections = 2\n").await;
    let request = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut first = connect(env.http).await;
    let mut second = connect(env.http).await;
    for s in [&mut first, &mut second] {
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 1024];
        assert!(s.read(&mut buf).await.unwrap() > 0);
    }
    // A third connection completes in the kernel's backlog but is not served.
    let mut third = connect(env.http).await;
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served beyond max_connections"
    );
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    env.shutdown().await;
}

/// Regression: the idle watchdog used the first-request limit
/// (header_read_timeout) for a keep-alive connection that had served requests.
#[tokio::test]
async fn a_keep_alive_connection_outlives_the_header_timeout_when_idle_timeout_is_longer() {
    let env =
        Env::start("[limits]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"10s\"\n").await;
    let mut s = connect(env.http).await;
    let mut buf = [0u8; 1024];
    for _ in 0..2 {
        s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "keep-alive connection was closed"
        );
        // Idle for longer than header_read_timeout: the behaviour under test.
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    env.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let env = Env::start("[limits]\nidle_timeout = \"500ms\"\n").await;
    let mut s = connect(env.http).await;
    let total = 64 * 1024 * 1024;
    s.write_all(format!("GET /big/{total} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Read nothing while the server's writes block (the behaviour under
    // test), then drain what is left.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection was still open");
    assert!(
        received < total,
        "the whole response was delivered: the stalled client was not dropped"
    );
    env.shutdown().await;
}

async fn open_websocket(
    env: &Env,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", env.http.port()))
            .await
            .expect("websocket handshake through gatekeeper");
    ws
}

/// An open tunnel is not an HTTP connection the watchdog sees: it has its own
/// idle timeout, and a tunnel in use is left alone.
#[tokio::test]
async fn an_idle_websocket_tunnel_is_closed_after_the_idle_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let env = Env::start("[limits]\nidle_timeout = \"1s\"\n").await;
    let mut ws = open_websocket(&env).await;
    // Busy for well over the idle timeout: every message comes back.
    let mut last_echo = std::time::Instant::now();
    for i in 0..6 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .expect("an echo")
            .expect("the tunnel is open")
            .unwrap();
        last_echo = std::time::Instant::now();
        assert_eq!(echo.into_text().unwrap().as_str(), format!("ping {i}"));
        // Traffic spaced within the idle timeout: the behaviour under test.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then silent: closed without a frame from either side.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(end.is_ok(), "an idle tunnel stayed open");
    assert!(
        !matches!(end, Ok(Some(Ok(Message::Text(_))))),
        "unexpected message: {end:?}"
    );
    assert!(last_echo.elapsed() >= Duration::from_millis(900));
    env.shutdown().await;
}

#[tokio::test]
async fn an_open_websocket_tunnel_counts_against_max_connections() {
    let env = Env::start("[limits]\nmax_connections = 1\n").await;
    let ws = open_websocket(&env).await;
    let mut second = connect(env.http).await;
    second
        .write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "served beside an open tunnel beyond max_connections"
    );
    drop(ws);
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("served once the tunnel closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    env.shutdown().await;
}

#[tokio::test]
async fn an_open_websocket_tunnel_is_closed_on_shutdown_rather_than_holding_it_up() {
    use futures_util::StreamExt;
    let env = Env::start("").await;
    let mut ws = open_websocket(&env).await;
    let started = std::time::Instant::now();
    // Env::shutdown allows five seconds for connections to drain.
    env.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited {:?} for the tunnel",
        started.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    assert!(end.is_ok(), "the tunnel outlived the shutdown");
}

// ---------------------------------------------------------------- issue 16: per-address limits, body budget

/// A connection from `source` (any 127.x.y.z on Linux).
async fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_are_closed_at_accept_and_others_are_served() {
    let env = Env::start("[limits]\nmax_connections_per_address = 2\n").await;
    let abuser: std::net::IpAddr = [127, 0, 0, 2].into();
    let request = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from(abuser, env.http).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 1024];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        held.push(s);
    }
    let mut third = connect_from(abuser, env.http).await.unwrap();
    let _ = third.write_all(request).await;
    let (closed, answer) = closed_within(&mut third, Duration::from_secs(2)).await;
    assert!(
        closed && answer.is_empty(),
        "a third connection was served: {answer}"
    );
    // Another address is not limited by this one.
    let mut other = connect_from([127, 0, 0, 3].into(), env.http).await.unwrap();
    other.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = other.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let metrics = raw_exchange(
        env.admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(
        metrics.contains(r#"gatekeeper_connections_refused_total{kind="per_address"} 1"#),
        "{metrics}"
    );
    // A place freed is a place again: given back as the connection ends,
    // which the open-connections gauge shows.
    let open = r#"gatekeeper_open_connections{listener="http","#;
    let before = metric(env.admin, open).await;
    drop(held.pop());
    let admin = env.admin;
    wait_until_async(
        "the dropped connection to end",
        Duration::from_secs(10),
        || async { metric(admin, open).await < before },
    )
    .await;
    let mut again = connect_from(abuser, env.http).await.unwrap();
    again.write_all(request).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), again.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    env.shutdown().await;
}

#[tokio::test]
async fn a_trusted_proxy_is_exempt_from_the_per_address_connection_limit() {
    let env = Env::start_trusting(
        "127.0.0.5/32",
        "[limits]\nmax_connections_per_address = 1\n",
    )
    .await;
    let proxy: std::net::IpAddr = [127, 0, 0, 5].into();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from(proxy, env.http).await.unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("the trusted proxy's connection is served")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    env.shutdown().await;
}

/// The hostile load of issue 16, against the real binary: `max_connections`
/// 200, `max_body` 256 KiB, a body budget of 8 MiB. Every attacker sends 95%
/// of `max_body` to a gated route and stalls (reconnecting when refused);
/// a normal client keeps sending gated and ungated requests meanwhile.
mod body_memory {
    use super::*;
    use std::convert::Infallible;
    use std::net::IpAddr;
    use std::time::Instant;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    const MAX_BODY: usize = 256 * 1024;
    const STALL: usize = MAX_BODY * 95 / 100;
    const BUDGET_KB: u64 = 8 * 1024;
    const H1_CONNECTIONS: usize = 180;
    const H2_CONNECTIONS: usize = 10;
    const H2_STREAMS: usize = 100;
    const ATTACK: Duration = Duration::from_secs(4);

    pub struct Target {
        pub process: Process,
        pub port: u16,
        pub admin: u16,
        pub sim: Sim,
        _upstream: Upstream,
        _certs: TestCerts,
    }

    pub async fn start(limits: &str) -> Target {
        let certs = TestCerts::new();
        let upstream = Upstream::start().await;
        let sim = Sim::start().await;
        let (port, admin) = (free_port(), free_port());
        let extra = format!(
            "[[route]]\npath = \"/login\"\n\n[limits]\nmax_connections = 200\nmax_body = \"256KiB\"\nmax_buffered_bodies = \"8MiB\"\nheader_read_timeout = \"6s\"\n{limits}"
        );
        let text = config_text(&certs, upstream.addr, &sim.url(), &extra)
            .replace(
                "http = \"127.0.0.1:0\"",
                &format!("http = \"127.0.0.1:{port}\""),
            )
            .replace(
                "admin = \"127.0.0.1:0\"",
                &format!("admin = \"127.0.0.1:{admin}\""),
            );
        let path = certs.dir.path().join("gatekeeper.toml");
        std::fs::write(&path, text).unwrap();
        let process = Process::spawn(&path, port, &[("RUST_LOG", "warn")]);
        Target {
            process,
            port,
            admin,
            sim,
            _upstream: upstream,
            _certs: certs,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    /// One HTTP/1 attacker: holds a stalled gated body until `until`.
    async fn h1_attacker(source: IpAddr, port: u16, until: tokio::time::Instant) {
        let head = format!(
            "POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {MAX_BODY}\r\n\r\n"
        );
        let body = vec![b'a'; STALL];
        while tokio::time::Instant::now() < until {
            let Ok(mut s) = connect_from(source, addr(port)).await else {
                // The attacker's pace of retries, part of the load.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let sent = tokio::time::timeout_at(until, async {
                s.write_all(head.as_bytes()).await?;
                s.write_all(&body).await
            })
            .await;
            if sent.is_err() {
                return;
            }
            // An answer (503, 429) or a close: try again; silence: stalled.
            let mut buf = [0u8; 512];
            if tokio::time::timeout_at(until, s.read(&mut buf))
                .await
                .is_err()
            {
                return;
            }
            // The attacker's pace of retries, part of the load.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One HTTP/2 (prior knowledge) connection with `H2_STREAMS` stalled gated bodies.
    async fn h2_attacker(source: IpAddr, port: u16, until: tokio::time::Instant) {
        let Ok(tcp) = connect_from(source, addr(port)).await else {
            return;
        };
        let Ok((sender, conn)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await
        else {
            return;
        };
        let conn = tokio::spawn(conn);
        let mut streams = Vec::new();
        for _ in 0..H2_STREAMS {
            let mut sender = sender.clone();
            streams.push(tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'a'; STALL]);
                let frames = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(chunk))])
                    .chain(futures_util::stream::pending());
                let req = http::Request::post("http://a/login")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("content-length", MAX_BODY)
                    .body(StreamBody::new(frames))
                    .unwrap();
                let _ = sender.send_request(req).await;
            }));
        }
        // The attack lasts until `until`: the load under test.
        tokio::time::sleep_until(until).await;
        for s in streams {
            s.abort();
        }
        conn.abort();
    }

    use futures_util::StreamExt;

    /// A normal client's gated and ungated requests until `until`: (ok, total).
    async fn normal_client(target: &Target, until: tokio::time::Instant) -> (usize, usize) {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let (mut ok, mut total) = (0, 0);
        while tokio::time::Instant::now() < until {
            let gated = http::Request::post(format!("http://127.0.0.1:{}/login", target.port))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(target.sim.mint(CAPTCHA_ID).form())))
                .unwrap();
            let open = http::Request::get(format!("http://127.0.0.1:{}/open", target.port))
                .body(Full::default())
                .unwrap();
            for req in [gated, open] {
                total += 1;
                let answer =
                    tokio::time::timeout(Duration::from_secs(5), client.request(req)).await;
                if let Ok(Ok(resp)) = answer {
                    let status = resp.status();
                    let _ = resp.into_body().collect().await;
                    if status == http::StatusCode::OK {
                        ok += 1;
                    }
                }
            }
        }
        (ok, total)
    }

    pub async fn metrics(admin: u16) -> String {
        raw_exchange(
            addr(admin),
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await
    }

    pub fn metric(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// Attackers refused so far, by any limit.
    async fn refusals(admin: u16) -> u64 {
        let m = metrics(admin).await;
        [
            r#"gatekeeper_gate_decisions_total{route="/login",outcome="body_budget_exhausted"}"#,
            r#"gatekeeper_gate_decisions_total{route="/login",outcome="too_many_gated"}"#,
            r#"gatekeeper_connections_refused_total{kind="per_address"}"#,
        ]
        .iter()
        .map(|series| metric(&m, series))
        .sum()
    }

    pub struct Outcome {
        pub baseline_kb: u64,
        pub peak_kb: u64,
        pub ok: usize,
        pub total: usize,
        pub metrics: String,
        /// Once every attacker has gone.
        pub metrics_after: String,
    }

    /// Runs the attack; `source(i)` is attacker connection i's address.
    pub async fn attack(target: &Target, source: impl Fn(usize) -> IpAddr) -> Outcome {
        // Warm up: the normal path's own allocations are not the attack's.
        let warm = tokio::time::Instant::now() + Duration::from_millis(500);
        let _ = normal_client(target, warm).await;
        let baseline_kb = target.process.status_kb("VmRSS");
        let refused_before = refusals(target.admin).await;
        let until = tokio::time::Instant::now() + ATTACK;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..H1_CONNECTIONS {
            tasks.push(tokio::spawn(h1_attacker(source(i), target.port, until)));
        }
        for i in 0..H2_CONNECTIONS {
            tasks.push(tokio::spawn(h2_attacker(
                source(H1_CONNECTIONS + i),
                target.port,
                until,
            )));
        }
        // The attack has taken hold once a limit refuses an attacker; the
        // normal client is measured from then on.
        wait_until_async("the attack to meet a limit", ATTACK / 2, || async {
            refusals(target.admin).await > refused_before
        })
        .await;
        let (ok, total) = normal_client(target, until).await;
        for t in tasks {
            let _ = t.await;
        }
        let peak_kb = target.process.status_kb("VmHWM");
        let metrics = metrics(target.admin).await;
        // Every client is gone: wait until the server has closed their
        // connections and given their reservations back.
        wait_until_async(
            "the attackers' connections to end",
            Duration::from_secs(10),
            || async {
                let m = self::metrics(target.admin).await;
                metric(&m, "gatekeeper_buffered_body_bytes") == 0
                    && m.lines()
                        .filter(|l| l.starts_with("gatekeeper_open_connections{"))
                        .all(|l| l.ends_with(" 0"))
            },
        )
        .await;
        let after_kb = target.process.status_kb("VmRSS");
        let metrics_after = self::metrics(target.admin).await;
        eprintln!(
            "baseline {baseline_kb} kB, peak {peak_kb} kB, after {after_kb} kB, normal {ok}/{total}, attack {:?}",
            started.elapsed()
        );
        Outcome {
            baseline_kb,
            peak_kb,
            ok,
            total,
            metrics,
            metrics_after,
        }
    }

    /// The stated overhead: per HTTP/1 connection its read buffer (at most
    /// 64 KiB) and a body's free 16 KiB; per HTTP/2 connection its receive
    /// window (1 MiB of unread DATA), four buffering bodies' 16 KiB and 100
    /// streams' state (4 KiB each).
    pub const OVERHEAD_KB: u64 = H1_CONNECTIONS as u64 * (64 + 16)
        + H2_CONNECTIONS as u64 * (1024 + 4 * 16 + H2_STREAMS as u64 * 4);

    pub const BUDGET: u64 = BUDGET_KB;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_stalled_gated_bodies_stay_within_the_body_budget_and_normal_clients_are_served() {
    use body_memory::*;
    let target = start("").await;
    // Each attacker connection from an address of its own: no per-address limit applies.
    let outcome = attack(&target, |i| {
        std::net::IpAddr::from([127, 1, (i / 200) as u8, (i % 200 + 1) as u8])
    })
    .await;
    let grown = outcome.peak_kb.saturating_sub(outcome.baseline_kb);
    assert!(
        grown <= BUDGET + OVERHEAD_KB,
        "peak RSS grew {grown} kB: over the budget {BUDGET} kB + overhead {OVERHEAD_KB} kB"
    );
    assert!(
        outcome.ok * 100 >= outcome.total * 99 && outcome.total >= 10,
        "a normal client got {}/{} answered",
        outcome.ok,
        outcome.total
    );
    assert!(
        metric(
            &outcome.metrics,
            r#"gatekeeper_gate_decisions_total{route="/login",outcome="body_budget_exhausted"}"#
        ) > 0,
        "the budget never refused a body: the attack did not reach it"
    );
    // Memory returns: every reserved byte is given back. The allocator may
    // keep freed pages mapped (RSS barely falls), so the proof it is free is
    // that the same attack again reuses it: the peak grows by at most half
    // of the first attack's growth, plus 2 MiB. (Memory kept would show as a
    // second full growth; a quarter was too tight: jemalloc's per-thread
    // arenas let a second attack touch some fresh pages, 7.3 MB against a
    // first growth of 17.6 MB in one of 20 runs.)
    assert_eq!(
        metric(&outcome.metrics_after, "gatekeeper_buffered_body_bytes"),
        0,
        "{}",
        outcome.metrics_after
    );
    let again = attack(&target, |i| {
        std::net::IpAddr::from([127, 2, (i / 200) as u8, (i % 200 + 1) as u8])
    })
    .await;
    let regrown = again.peak_kb.saturating_sub(outcome.peak_kb);
    assert!(
        regrown <= grown / 2 + 2048,
        "a second attack grew the peak by {regrown} kB more (first: {grown} kB): memory was not returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_attack_from_one_address_meets_the_per_address_limits_before_the_budget() {
    use body_memory::*;
    let target = start("max_connections_per_address = 20\nmax_gated_per_address = 8\n").await;
    let outcome = attack(&target, |_| std::net::IpAddr::from([127, 0, 0, 2])).await;
    let m = &outcome.metrics;
    assert!(
        metric(
            m,
            r#"gatekeeper_connections_refused_total{kind="per_address"}"#
        ) > 0,
        "no connection was refused per address:\n{m}"
    );
    assert!(
        metric(
            m,
            r#"gatekeeper_gate_decisions_total{route="/login",outcome="too_many_gated"}"#
        ) > 0,
        "no gated request was refused per address:\n{m}"
    );
    assert_eq!(
        metric(
            m,
            r#"gatekeeper_gate_decisions_total{route="/login",outcome="body_budget_exhausted"}"#
        ),
        0,
        "one address exhausted the body budget:\n{m}"
    );
    let grown = outcome.peak_kb.saturating_sub(outcome.baseline_kb);
    assert!(grown <= BUDGET + OVERHEAD_KB, "peak RSS grew {grown} kB");
    assert!(
        outcome.ok * 100 >= outcome.total * 99 && outcome.total >= 10,
        "a normal client got {}/{} answered",
        outcome.ok,
        outcome.total
    );
}
