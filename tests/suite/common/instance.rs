//! gatekeeper started in this process: its config text, and `Env`, the
//! instance with its own certificate, upstream and simulator.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{CAPTCHA_ID, CAPTCHA_KEY, Sim, TestCerts, TestClient, Upstream};

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
        TestClient::new(&self.certs, h2)
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(5)).await;
        }
    }
}
