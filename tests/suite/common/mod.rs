//! Test harness: real sockets everywhere. Certificates are made at test time,
//! the upstream is a real HTTP server that records what it receives, GeeTest is
//! the project's simulator, and gatekeeper runs either in-process or as the
//! real binary.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub const CAPTCHA_ID: &str = "647f5ed2ed8acb4be36784e01556bb71";
pub const CAPTCHA_KEY: &str = "b09a7aafbfd83f73b35a9b530d0337bf";
pub const OTHER_ID: &str = "0123456789abcdef0123456789abcdef";
pub const OTHER_KEY: &str = "fedcba9876543210fedcba9876543210";

// ---------------------------------------------------------------- certificates

pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCerts {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
        Self {
            cert_der: cert.der().clone(),
            dir,
            cert_path,
            key_path,
        }
    }

    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

// ---------------------------------------------------------------- upstream

/// What the upstream application received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP/1.1 server standing in for the legacy application.
/// - `/slow/<ms>` answers after a delay;
/// - `/big/<n>` answers n bytes;
/// - `/count` reads the body without keeping it and answers its length;
/// - `/ws` upgrades to a WebSocket echo;
/// - anything else records the request and answers 200 `upstream ok`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Recorded>>>,
    /// How many requests have reached the handler, counted as each arrives
    /// (before `/slow/` waits or a body is read).
    arrived: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let rec = received.clone();
        let (arrival, arrived) = tokio::sync::watch::channel(0usize);
        let arrival = Arc::new(arrival);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (rec, arrival) = (rec.clone(), arrival.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        arrival.send_modify(|n| *n += 1);
                        upstream_handle(req, rec.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            arrived,
            task,
        }
    }

    /// Waits until `n` requests in all have arrived (a slow one is then in
    /// flight); panics after 10 s.
    pub async fn arrivals(&self, n: usize) {
        let mut arrived = self.arrived.clone();
        let reached = tokio::time::timeout(Duration::from_secs(10), arrived.wait_for(|a| *a >= n));
        match reached.await {
            Ok(Ok(_)) => {}
            _ => panic!(
                "the upstream saw {} of {n} requests",
                *self.arrived.borrow()
            ),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

async fn upstream_handle(
    mut req: Request<Incoming>,
    rec: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(Full::new(Bytes::from("slow ok"))));
    }
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().unwrap_or(1024);
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; n]))));
    }
    if path == "/count" {
        let mut body = req.into_body();
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map(|f| f.into_data()) {
                total += data.map(|d| d.len()).unwrap_or(0);
            } else {
                break;
            }
        }
        return Ok(Response::new(Full::new(Bytes::from(total.to_string()))));
    }
    if path == "/ws" {
        let key = req.headers().get("sec-websocket-key").cloned();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                use futures_util::{SinkExt, StreamExt};
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(
            key.as_ref().map(|k| k.as_bytes()).unwrap_or_default(),
        );
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    rec.lock().unwrap().push(Recorded {
        method: parts.method,
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body,
    });
    let resp = Response::builder()
        .header("connection", "x-upstream-private")
        .header("x-upstream-private", "hop")
        .header("keep-alive", "timeout=5")
        .header("x-upstream", "yes")
        .body(Full::new(Bytes::from("upstream ok")))
        .unwrap();
    Ok(resp)
}

// ---------------------------------------------------------------- waiting

/// Polls `cond` every 10 ms until it holds; panics naming `what` once
/// `within` has passed. For states no component announces.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {within:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`wait_until`] for a condition that must itself wait (a scrape, a request).
pub async fn wait_until_async<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {within:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of the first /metrics sample whose line starts with `series`
/// (a name, or a name with its labels), 0 when there is none.
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = raw_exchange(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.rsplit(' ').next()?.trim().parse::<f64>().ok()
        })
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------- simulator

pub struct Sim {
    pub addr: SocketAddr,
    pub sim: Arc<gatekeeper::sim::Simulator>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sim {
    pub async fn start() -> Self {
        let sim = gatekeeper::sim::Simulator::new(vec![
            (CAPTCHA_ID.to_owned(), CAPTCHA_KEY.to_owned()),
            (OTHER_ID.to_owned(), OTHER_KEY.to_owned()),
        ]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(gatekeeper::sim::serve(listener, sim.clone()));
        Self { addr, sim, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A fresh valid proof for `captcha_id`, as the widget would yield it.
    pub fn mint(&self, captcha_id: &str) -> ProofFields {
        let p = self
            .sim
            .mint(captcha_id)
            .expect("simulator knows this captcha id");
        ProofFields {
            lot_number: p.lot_number,
            captcha_output: p.captcha_output,
            pass_token: p.pass_token,
            gen_time: p.gen_time,
            captcha_id: p.captcha_id,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProofFields {
    pub lot_number: String,
    pub captcha_output: String,
    pub pass_token: String,
    pub gen_time: String,
    pub captcha_id: String,
}

impl ProofFields {
    /// The four fields the validate API takes.
    pub fn proof(&self) -> gatekeeper::geetest::Proof {
        gatekeeper::geetest::Proof {
            lot_number: self.lot_number.clone(),
            captcha_output: self.captcha_output.clone(),
            pass_token: self.pass_token.clone(),
            gen_time: self.gen_time.clone(),
        }
    }

    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            ("lot_number", &self.lot_number),
            ("captcha_output", &self.captcha_output),
            ("pass_token", &self.pass_token),
            ("gen_time", &self.gen_time),
            ("captcha_id", &self.captcha_id),
        ]
    }

    /// The five fields form-encoded, to prepend or append to a form body.
    pub fn form(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.pairs())
            .finish()
    }

    /// The secrets that must never appear in a log.
    pub fn secrets(&self) -> [&str; 2] {
        [&self.pass_token, &self.captcha_output]
    }
}

/// The test credential's key.
pub fn captcha_key() -> gatekeeper::config::CaptchaKey {
    gatekeeper::config::CaptchaKey::new(CAPTCHA_KEY.to_owned())
}

// ---------------------------------------------------------------- gatekeeper

/// A config with both listeners on free ports, the test certificate, the given
/// upstream and simulator, and `extra` appended (routes, overrides).
pub fn config_text(certs: &TestCerts, upstream: SocketAddr, sim_url: &str, extra: &str) -> String {
    config_text_trusting(certs, upstream, sim_url, "10.0.0.0/8", extra)
}

/// As `config_text`, with `trusted` as the one trusted proxy network.
pub fn config_text_trusting(
    certs: &TestCerts,
    upstream: SocketAddr,
    sim_url: &str,
    trusted: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[server]
https = "127.0.0.1:0"
http = "127.0.0.1:0"
admin = "127.0.0.1:0"
trusted_proxies = ["{trusted}"]

[tls]
cert = "{cert}"
key = "{key}"

[upstream]
url = "http://{upstream}"
connect_timeout = "1s"
timeout = "2s"

[geetest]
api_server = "{sim_url}"
timeout = "1s"

[captcha.login]
id = "{CAPTCHA_ID}"
key = "{CAPTCHA_KEY}"

{extra}
"#,
        cert = certs.cert_path.display(),
        key = certs.key_path.display(),
    )
}

pub fn parse_config(text: &str, dir: &Path) -> gatekeeper::config::Config {
    let path = dir.join("gatekeeper.toml");
    std::fs::write(&path, text).unwrap();
    match gatekeeper::config::load_file(&path) {
        Ok(c) => c,
        Err(e) => panic!("test config is invalid:\n{e}\n---\n{text}"),
    }
}

/// Everything a test needs, started in this process.
pub struct Env {
    pub certs: TestCerts,
    pub upstream: Upstream,
    pub sim: Sim,
    pub server: Option<gatekeeper::server::RunningServer>,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

impl Env {
    /// Starts upstream, simulator and gatekeeper; `routes` is TOML appended to the config.
    pub async fn start(routes: &str) -> Self {
        Self::start_trusting("10.0.0.0/8", routes).await
    }

    /// As `start`, with `trusted` as the trusted proxy network.
    pub async fn start_trusting(trusted: &str, routes: &str) -> Self {
        let certs = TestCerts::new();
        let upstream = Upstream::start().await;
        let sim = Sim::start().await;
        let text = config_text_trusting(&certs, upstream.addr, &sim.url(), trusted, routes);
        let config = parse_config(&text, certs.dir.path());
        let server = gatekeeper::server::start(config)
            .await
            .expect("gatekeeper starts");
        let https = server.https_addr.expect("https listener");
        let http = server.http_addr.expect("http listener");
        let admin = server.admin_addr.expect("admin listener");
        Self {
            admin,
            certs,
            upstream,
            sim,
            server: Some(server),
            https,
            http,
        }
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https.port())
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http.port())
    }

    /// An HTTPS client offering h1 only (`h2 = false`) or h2 only.
    pub fn client(&self, h2: bool) -> TestClient {
        // hyper-rustls offers ALPN itself: h2 only, or http/1.1 only.
        let tls = self.certs.client_config(&[]);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if h2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build(connector);
        TestClient { client }
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(5)).await;
        }
    }
}

pub struct TestClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

pub struct Answer {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The `error` code of a gatekeeper refusal.
    pub fn error_code(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

impl TestClient {
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Answer {
        let resp = self
            .client
            .request(req)
            .await
            .expect("request reaches gatekeeper");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Answer {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Answer {
        self.send(Request::get(url).body(Full::default()).unwrap())
            .await
    }

    pub async fn post(&self, url: &str, content_type: &str, body: impl Into<Bytes>) -> Answer {
        let req = Request::post(url)
            .header("content-type", content_type)
            .body(Full::new(body.into()))
            .unwrap();
        self.send(req).await
    }

    pub async fn post_form(&self, url: &str, body: impl Into<Bytes>) -> Answer {
        self.post(url, "application/x-www-form-urlencoded", body)
            .await
    }
}

// ---------------------------------------------------------------- raw sockets

/// Sends raw bytes over cleartext and returns everything read until the peer
/// closes or `wait` passes without data.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first line of a raw HTTP answer.
pub fn status_line(raw: &str) -> &str {
    raw.lines().next().unwrap_or("")
}

// ---------------------------------------------------------------- the real binary

/// A free TCP port on 127.0.0.1 (bound then released; the race is harmless here).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        let child = cmd.spawn().expect("spawn gatekeeper");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "gatekeeper did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
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
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The binary in front of its own recording upstream, on the cleartext port
/// `port` (GeeTest unreachable: for tests that never reach the gate).
pub struct Binary {
    pub process: Process,
    pub port: u16,
    pub upstream: Upstream,
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
            upstream,
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

// ---------------------------------------------------------------- redis

/// A Redis for a test: `GATEKEEPER_TEST_REDIS` (a URL) when set, else a
/// `redis-server` of the test's own on a free port. Tests that stop and start
/// Redis need their own (`start_owned`). `None`, with a message saying the test
/// was skipped, where neither is available.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    external: Option<String>,
}

impl RedisServer {
    pub fn start() -> Option<Self> {
        if let Ok(url) = std::env::var("GATEKEEPER_TEST_REDIS") {
            return Some(Self {
                port: 0,
                child: None,
                external: Some(url),
            });
        }
        Self::start_owned()
    }

    /// A redis-server this test owns, so it can be stopped and started again.
    pub fn start_owned() -> Option<Self> {
        let port = free_port();
        let mut server = Self {
            port,
            child: None,
            external: None,
        };
        if !server.restart() {
            eprintln!("SKIPPED: no redis-server on PATH to start and stop (install redis-server)");
            return None;
        }
        Some(server)
    }

    pub fn url(&self) -> String {
        self.external
            .clone()
            .unwrap_or_else(|| format!("redis://127.0.0.1:{}/0", self.port))
    }

    /// Starts (again) on the same port; false when redis-server is missing
    /// or the Redis is not this test's own.
    pub fn restart(&mut self) -> bool {
        if self.external.is_some() {
            return false;
        }
        let Ok(child) = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A direct client, to look at what gatekeeper stored.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- the demo

/// `gatekeeper demo` on free ports; killed on drop.
pub struct Demo {
    child: std::process::Child,
    pub https_port: u16,
    pub http_port: u16,
}

impl Demo {
    pub fn start() -> Self {
        let (https_port, http_port) = (free_port(), free_port());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
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
        Self {
            child,
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
