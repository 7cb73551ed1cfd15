//! The upstream application: a real HTTP/1.1 server that records what it
//! receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the upstream application received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: http::Method,
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
        // A slow application: the behaviour tests ask for.
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
    if path.starts_with("/redirect/") {
        // An application's answer to a form post: a redirect setting a session.
        let resp = Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header("location", "/done?from=app")
            .header("set-cookie", "session=app; Path=/; HttpOnly")
            .body(Full::new(Bytes::from("see other")))
            .unwrap();
        return Ok(resp);
    }
    let resp = Response::builder()
        .header("connection", "x-upstream-private")
        .header("x-upstream-private", "hop")
        .header("keep-alive", "timeout=5")
        .header("x-upstream", "yes")
        .body(Full::new(Bytes::from("upstream ok")))
        .unwrap();
    Ok(resp)
}
