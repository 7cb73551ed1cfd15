//! A Redis for a test, its own or the one `GATEKEEPER_TEST_REDIS` names.

use super::{Sim, TestCerts, Upstream, config_text, free_port, parse_config, until_listening};

/// A Redis for a test: `GATEKEEPER_TEST_REDIS` (a URL) when set, else a
/// `redis-server` of the test's own on a free port. Tests that stop and start
/// Redis need their own (`start_owned`). Without either the test fails with
/// what to install: such tests are `#[ignore]`d, so a plain `cargo nextest
/// run` reports them skipped and `--run-ignored all` (CI) runs them.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    external: Option<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("GATEKEEPER_TEST_REDIS") {
            return Self {
                port: 0,
                child: None,
                external: Some(url),
            };
        }
        Self::start_owned()
    }

    /// A redis-server this test owns, so it can be stopped and started again.
    pub fn start_owned() -> Self {
        let port = free_port();
        let mut server = Self {
            port,
            child: None,
            external: None,
        };
        assert!(
            server.restart(),
            "no redis-server on PATH to start and stop: install it (scripts/setup)"
        );
        server
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
        until_listening(self.port, "redis-server");
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

/// Two gatekeepers (A and B) in process, in front of one upstream and one
/// simulator, sharing `redis` as their replay store (and kept-request store).
pub struct Fleet {
    /// This fleet's Redis key prefix, so a shared Redis can hold others.
    pub prefix: String,
    pub certs: TestCerts,
    pub upstream: Upstream,
    pub sim: Sim,
    pub a: gatekeeper::server::RunningServer,
    pub b: gatekeeper::server::RunningServer,
}

impl Fleet {
    /// `replay`: extra lines for `[replay]`; `routes`: the rest of the file.
    pub async fn start(redis: &RedisServer, replay: &str, routes: &str) -> Self {
        let certs = TestCerts::new();
        let upstream = Upstream::start().await;
        let sim = Sim::start().await;
        // A prefix per fleet keeps tests sharing one Redis apart.
        let prefix = format!("gk-test-{}:", free_port());
        let extra = format!(
            "[replay]\nstore = \"{}\"\nkey_prefix = \"{prefix}\"\n{replay}\n{routes}",
            redis.url()
        );
        let text = config_text(&certs, upstream.addr, &sim.url(), &extra);
        let a = gatekeeper::server::start(parse_config(&text, certs.dir.path()))
            .await
            .unwrap();
        let b = gatekeeper::server::start(parse_config(&text, certs.dir.path()))
            .await
            .unwrap();
        Self {
            prefix,
            certs,
            upstream,
            sim,
            a,
            b,
        }
    }
}
