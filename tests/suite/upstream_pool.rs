//! The keep-alive pool to the upstream, watched from an upstream on raw
//! sockets that counts the connections gatekeeper opens and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answers each request head it reads with `ok`, or with `body_len` bytes.
/// With `one_per_connection` it closes a connection after its first answer,
/// without saying so (as an upstream whose keep-alive timeout struck would).
struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections gatekeeper closed (read end of file).
    closed_by_gatekeeper: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start(one_per_connection: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (counted, closed_by) = (accepted.clone(), closed.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, one_per_connection, closed_by.clone()));
            }
        });
        Self {
            addr,
            accepted,
            closed_by_gatekeeper: closed,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed_by_gatekeeper(&self) -> usize {
        self.closed_by_gatekeeper.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, one_per_connection: bool, closed: Arc<AtomicUsize>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end + 4);
        // GET /big/<n> answers n bytes, in pieces, so the body outlives the head.
        let body_len: usize = head
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.strip_prefix("/big/"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(2);
        // A HEAD answer states the length and sends no body.
        let bodiless = head.starts_with("HEAD ");
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n");
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut left = if bodiless { 0 } else { body_len };
        while left > 0 {
            let piece = left.min(16 * 1024);
            if stream.write_all(&vec![b'x'; piece]).await.is_err() {
                return;
            }
            left -= piece;
            tokio::task::yield_now().await;
        }
        if one_per_connection {
            // Gatekeeper closing its end then shows it has seen this close;
            // a request sent on the connection anyway goes unanswered.
            let _ = stream.shutdown().await;
            if matches!(stream.read(&mut buf).await, Ok(0)) {
                closed.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
    }
}

/// Gatekeeper in front of a raw upstream, and one keep-alive client
/// connection to its cleartext listener.
struct Proxied {
    upstream: RawUpstream,
    server: gatekeeper::server::RunningServer,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    certs: TestCerts,
    sim: Sim,
}

impl Proxied {
    /// `extra` is config appended to the test config.
    async fn start(one_per_connection: bool, extra: &str) -> Self {
        let upstream = RawUpstream::start(one_per_connection).await;
        let certs = TestCerts::new();
        let sim = Sim::start().await;
        let text = config_text(&certs, upstream.addr, &sim.url(), extra);
        let config = parse_config(&text, certs.dir.path());
        let server = gatekeeper::server::start(config)
            .await
            .expect("gatekeeper starts");
        let stream = TcpStream::connect(server.http_addr.unwrap()).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self {
            upstream,
            server,
            sender,
            certs,
            sim,
        }
    }

    /// Rewrites the configuration file for `upstream` with `extra`, and
    /// reloads it.
    async fn reload(&mut self, upstream: SocketAddr, extra: &str) {
        self.reload_edited(upstream, extra, |t| t).await;
    }

    /// As `reload`, with the file's text passed through `edit`.
    async fn reload_edited(
        &mut self,
        upstream: SocketAddr,
        extra: &str,
        edit: impl Fn(String) -> String,
    ) {
        let text = edit(config_text(&self.certs, upstream, &self.sim.url(), extra));
        // The listeners' configured addresses (port 0) are unchanged: they
        // stay open, and the client stays connected.
        std::fs::write(self.certs.dir.path().join("gatekeeper.toml"), text).unwrap();
        self.server.reload().await.expect("the reload succeeds");
    }

    /// A gated POST with a fresh proof; the answer's status.
    async fn gated(&mut self) -> StatusCode {
        let form = self.sim.mint(CAPTCHA_ID).form();
        self.sender.ready().await.unwrap();
        let req = Request::post("/login")
            .header("host", "localhost")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status();
        resp.into_body().collect().await.unwrap();
        status
    }

    fn validate_connections(&self) -> u64 {
        self.sim.sim.stats().connections
    }

    async fn shutdown(self) {
        self.server.shutdown(Duration::from_secs(1)).await;
    }
}

async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> (StatusCode, Bytes) {
    send(sender, http::Method::GET, path).await
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: http::Method,
    path: &str,
) -> (StatusCode, Bytes) {
    sender.ready().await.unwrap();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::default())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn requests_in_turn_share_one_upstream_connection_even_after_long_bodies() {
    let mut proxied = Proxied::start(false, "").await;
    for i in 0..20 {
        // Every fifth answer is 1 MB, streamed in pieces: the connection goes
        // back to the pool only when such a body has been relayed in full.
        let path = if i % 5 == 0 { "/big/1000000" } else { "/" };
        let (status, body) = get(&mut proxied.sender, path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), if i % 5 == 0 { 1_000_000 } else { 2 });
    }
    assert_eq!(
        proxied.upstream.accepted(),
        1,
        "each request opened its own connection"
    );
    proxied.shutdown().await;
}

#[tokio::test]
async fn a_bodiless_answer_gives_its_connection_back_at_once() {
    let mut proxied = Proxied::start(false, "").await;
    for i in 0..10 {
        let method = if i % 2 == 0 {
            http::Method::HEAD
        } else {
            http::Method::GET
        };
        let (status, body) = send(&mut proxied.sender, method, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), if i % 2 == 0 { 0 } else { 2 });
    }
    assert_eq!(
        proxied.upstream.accepted(),
        1,
        "a HEAD answer kept its connection"
    );
    proxied.shutdown().await;
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_used() {
    let mut proxied = Proxied::start(true, "").await;
    for i in 1..=3 {
        let (status, body) = get(&mut proxied.sender, "/").await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        wait_until(
            "gatekeeper to see the upstream's close",
            Duration::from_secs(10),
            || proxied.upstream.closed_by_gatekeeper() == i,
        )
        .await;
    }
    assert_eq!(proxied.upstream.accepted(), 3);
    proxied.shutdown().await;
}

#[tokio::test]
async fn an_idle_upstream_connection_is_closed_after_the_idle_timeout() {
    let mut proxied = Proxied::start(false, "[limits]\nidle_timeout = \"300ms\"\n").await;
    let (status, _) = get(&mut proxied.sender, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(proxied.upstream.closed_by_gatekeeper(), 0);
    // Within two idle timeouts (one to expire, one for the sweep to see it),
    // with no request to trigger it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while proxied.upstream.closed_by_gatekeeper() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle upstream connection stayed open"
        );
        // The poll interval, within the deadline above.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxied.shutdown().await;
}

const GATED: &str = "[[route]]\npath = \"/login\"\n";

#[tokio::test]
async fn reloads_that_leave_upstream_and_geetest_settings_alone_open_no_new_connections() {
    let mut proxied = Proxied::start(false, GATED).await;
    let upstream = proxied.upstream.addr;
    assert_eq!(proxied.gated().await, StatusCode::OK);
    assert_eq!(get(&mut proxied.sender, "/").await.0, StatusCode::OK);
    let (upstream_before, validate_before) =
        (proxied.upstream.accepted(), proxied.validate_connections());
    assert_eq!((upstream_before, validate_before), (1, 1));

    // Routes, limits and timeouts elsewhere change; the upstream's and
    // GeeTest's connection settings do not.
    for i in 0..5 {
        let extra = format!(
            "{GATED}\n[[route]]\npath = \"/other{i}\"\n\n[limits]\nmax_body = \"{}KiB\"\n",
            64 + i
        );
        proxied.reload(upstream, &extra).await;
        for _ in 0..3 {
            assert_eq!(proxied.gated().await, StatusCode::OK);
            assert_eq!(get(&mut proxied.sender, "/").await.0, StatusCode::OK);
        }
    }
    assert_eq!(
        proxied.upstream.accepted(),
        upstream_before,
        "a reload opened new upstream connections"
    );
    assert_eq!(
        proxied.validate_connections(),
        validate_before,
        "a reload opened new validate connections"
    );
    assert_eq!(proxied.upstream.closed_by_gatekeeper(), 0);
    proxied.shutdown().await;
}

#[tokio::test]
async fn a_reload_with_a_new_upstream_url_sends_to_the_new_upstream_and_lets_the_old_pool_go() {
    let mut proxied = Proxied::start(false, GATED).await;
    assert_eq!(get(&mut proxied.sender, "/").await.0, StatusCode::OK);
    assert_eq!(proxied.upstream.accepted(), 1);

    let moved = RawUpstream::start(false).await;
    proxied.reload(moved.addr, GATED).await;
    for _ in 0..3 {
        assert_eq!(get(&mut proxied.sender, "/").await.0, StatusCode::OK);
        assert_eq!(proxied.gated().await, StatusCode::OK);
    }
    assert_eq!(moved.accepted(), 1, "the new upstream is used, pooled");
    assert_eq!(proxied.upstream.accepted(), 1);
    // The old generation is gone with its pool: its connection closes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while proxied.upstream.closed_by_gatekeeper() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old upstream's pooled connection stayed open"
        );
        // The poll interval, within the deadline above.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A changed GeeTest timeout makes a new validate pool.
    let validate_before = proxied.validate_connections();
    proxied
        .reload_edited(moved.addr, GATED, |t| {
            t.replace(
                "timeout = \"1s\"\n\n[captcha",
                "timeout = \"2s\"\n\n[captcha",
            )
        })
        .await;
    assert_eq!(proxied.gated().await, StatusCode::OK);
    assert_eq!(proxied.validate_connections(), validate_before + 1);
    proxied.shutdown().await;
}

#[ignore = "needs redis-server (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn reloads_keep_the_redis_connection_of_the_replay_store() {
    let redis = RedisServer::start_owned();
    let watcher = redis::Client::open(redis.url()).unwrap();
    let mut watch = watcher.get_multiplexed_async_connection().await.unwrap();
    let extra = format!(
        "{GATED}\n[replay]\nstore = \"{}\"\ntimeout = \"1s\"\n",
        redis.url()
    );
    let mut proxied = Proxied::start(false, &extra).await;
    let upstream = proxied.upstream.addr;
    assert_eq!(proxied.gated().await, StatusCode::OK);
    let received = async |conn: &mut redis::aio::MultiplexedConnection| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("INFO stats counts connections")
    };
    let before = received(&mut watch).await;
    for i in 0..3 {
        proxied
            .reload(
                upstream,
                &format!("{extra}\n[[route]]\npath = \"/other{i}\"\n"),
            )
            .await;
        assert_eq!(proxied.gated().await, StatusCode::OK);
    }
    assert_eq!(
        received(&mut watch).await,
        before,
        "a reload opened a new Redis connection"
    );
    proxied.shutdown().await;
}
