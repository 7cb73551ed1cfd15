//! A Redis for a test, its own or the one `GATEKEEPER_TEST_REDIS` names.

use super::{free_port, until_listening};

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
