//! An HTTPS client (hyper, rustls) to gatekeeper, and the answer it reads whole.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::TestCerts;

/// An HTTPS client to gatekeeper's listener.
pub struct TestClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A response, its body read whole.
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
    /// An HTTPS client trusting `certs`, offering h1 only (`h2 = false`) or h2 only.
    pub fn new(certs: &TestCerts, h2: bool) -> Self {
        // hyper-rustls offers ALPN itself: h2 only, or http/1.1 only.
        let tls = certs.client_config(&[]);
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
        Self { client }
    }

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
