//! Issue 21: certificates from an ACME CA (`[tls.acme]`), against a real
//! Pebble that validates over gatekeeper's own listeners.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::common::*;

const DOMAIN: &str = "gk.example.com";
const OTHER: &str = "www.gk.example.com";

/// gatekeeper with `[tls.acme]` for both domains, answering `challenge` on
/// `https_port` (and `http_port`, its cleartext listener).
struct Acme {
    pebble: Pebble,
    upstream: Upstream,
    cache: tempfile::TempDir,
    https_port: u16,
    http_port: u16,
    challenge: &'static str,
}

impl Acme {
    async fn start(challenge: &'static str, validity_secs: Option<u64>) -> Self {
        let (https_port, http_port) = (free_port(), free_port());
        Self {
            pebble: Pebble::start(http_port, https_port, validity_secs),
            upstream: Upstream::start().await,
            cache: tempfile::tempdir().unwrap(),
            https_port,
            http_port,
            challenge,
        }
    }

    async fn gatekeeper(&self) -> gatekeeper::server::RunningServer {
        let text = format!(
            r#"
[server]
https = "127.0.0.1:{https}"
http = "127.0.0.1:{http}"
admin = "127.0.0.1:0"

[tls.acme]
domains = ["{DOMAIN}", "{OTHER}"]
contact = "mailto:ops@example.com"
directory = "{directory}"
cache = "{cache}"
ca_roots = "{roots}"
challenge = "{challenge}"

[upstream]
url = "http://{upstream}"
"#,
            https = self.https_port,
            http = self.http_port,
            directory = self.pebble.directory(),
            cache = self.cache.path().join("acme").display(),
            roots = self.pebble.ca_roots().display(),
            challenge = self.challenge,
            upstream = self.upstream.addr,
        );
        let config = parse_config(&text, self.pebble.certs.dir.path());
        gatekeeper::server::start(config).await.unwrap()
    }
}

/// One HTTPS request on a new connection to `port` for `domain`: the leaf
/// certificate served and the status, or why it failed.
async fn fetch(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    domain: &str,
) -> Result<(CertificateDer<'static>, StatusCode), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(domain.to_owned()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get("/page")
        .header("host", domain)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok((leaf, resp.status()))
}

/// The certificate served once one is, within `within`.
async fn served(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    within: Duration,
) -> CertificateDer<'static> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match fetch(tls, port, DOMAIN).await {
            Ok((leaf, _)) => return leaf,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no certificate from Pebble within {within:?}: {e}"
            ),
        }
        // The poll interval.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn orders(server: &gatekeeper::server::RunningServer, result: &str) -> u64 {
    let text = metrics_text(server).await;
    let line = format!("gatekeeper_acme_orders_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn metrics_text(server: &gatekeeper::server::RunningServer) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let url = format!("http://{}/metrics", server.admin_addr.unwrap());
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The leaf's DNS names.
fn names(leaf: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

#[ignore = "needs pebble (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn a_certificate_is_obtained_over_tls_alpn_01_and_a_restart_serves_it_from_the_cache() {
    let env = Acme::start("tls-alpn-01", None).await;
    let server = env.gatekeeper().await;
    let tls = client_trusting(env.pebble.root().await);
    let leaf = served(&tls, env.https_port, Duration::from_secs(30)).await;
    let mut got = names(&leaf);
    got.sort();
    assert_eq!(got, [DOMAIN, OTHER]);
    // The other domain is served the same certificate, and requests pass.
    let (other, status) = fetch(&tls, env.https_port, OTHER).await.unwrap();
    assert_eq!(other, leaf);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(env.upstream.count(), 2, "both requests were served");
    assert_eq!(orders(&server, "success").await, 1);
    let cache = env.cache.path().join("acme");
    for file in ["account.json", "certificate.pem"] {
        assert_eq!(mode(&cache.join(file)), 0o600, "{file}");
    }
    assert!(
        !cache.join("order.lock").exists(),
        "the order lock is released"
    );
    server.shutdown(Duration::from_secs(1)).await;

    // Restarted: the cached certificate at once, no order.
    let server = env.gatekeeper().await;
    let (again, status) = fetch(&tls, env.https_port, DOMAIN).await.unwrap();
    assert_eq!(again, leaf, "the cached certificate is served");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(orders(&server, "success").await, 0);
    assert_eq!(orders(&server, "failure").await, 0);
    server.shutdown(Duration::from_secs(1)).await;
}

#[ignore = "needs pebble (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn a_certificate_is_obtained_over_http_01_on_the_cleartext_listener() {
    let env = Acme::start("http-01", None).await;
    let server = env.gatekeeper().await;
    let tls = client_trusting(env.pebble.root().await);
    let leaf = served(&tls, env.https_port, Duration::from_secs(30)).await;
    assert!(names(&leaf).contains(&DOMAIN.to_owned()));
    assert_eq!(orders(&server, "success").await, 1);
    // Validation requests were answered by gatekeeper, not proxied: the
    // upstream saw the test's own request only.
    assert_eq!(env.upstream.count(), 1);
    server.shutdown(Duration::from_secs(1)).await;
}

#[ignore = "needs pebble (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn a_short_lived_certificate_is_renewed_without_a_dropped_request_and_an_acme_outage_keeps_it()
 {
    // Renewal is due at 2/3 of 15 s, less up to 1/12 of it.
    let mut env = Acme::start("tls-alpn-01", Some(15)).await;
    let server = env.gatekeeper().await;
    let tls = client_trusting(env.pebble.root().await);
    let first = served(&tls, env.https_port, Duration::from_secs(30)).await;

    // Requests on new connections all through the renewal (one was sent
    // while waiting for the first certificate).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut requests = 1;
    let renewed = loop {
        let (leaf, status) = fetch(&tls, env.https_port, DOMAIN)
            .await
            .expect("no request dropped");
        requests += 1;
        assert_eq!(status, StatusCode::OK);
        if leaf != first {
            break leaf;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not renewed within 30 s"
        );
    };
    assert_eq!(env.upstream.count(), requests);
    assert_eq!(orders(&server, "success").await, 2);

    // The CA goes away: the next renewal fails, and the certificate stays.
    env.pebble.stop();
    wait_until_async("a failed renewal", Duration::from_secs(30), || {
        let server = &server;
        async move { orders(server, "failure").await >= 1 }
    })
    .await;
    let (leaf, status) = fetch(&tls, env.https_port, DOMAIN).await.unwrap();
    assert_eq!(leaf, renewed, "the valid certificate is still served");
    assert_eq!(status, StatusCode::OK);
    server.shutdown(Duration::from_secs(1)).await;
}

#[ignore = "needs pebble (scripts/setup); run with --run-ignored all"]
#[tokio::test]
async fn an_instance_that_finds_another_ordering_waits_for_its_lock() {
    let env = Acme::start("tls-alpn-01", None).await;
    let cache = env.cache.path().join("acme");
    std::fs::create_dir_all(&cache).unwrap();
    // Another instance sharing the cache is ordering.
    std::fs::write(cache.join("order.lock"), "").unwrap();
    let server = env.gatekeeper().await;
    wait_until_async("an order put off", Duration::from_secs(10), || {
        let server = &server;
        async move { orders(server, "failure").await >= 1 }
    })
    .await;
    assert!(
        !cache.join("account.json").exists(),
        "the CA was not asked while the lock was held"
    );
    let tls = client_trusting(env.pebble.root().await);
    assert!(fetch(&tls, env.https_port, DOMAIN).await.is_err());

    // The other instance is done: the next try orders (after 5 s).
    std::fs::remove_file(cache.join("order.lock")).unwrap();
    served(&tls, env.https_port, Duration::from_secs(20)).await;
    assert_eq!(orders(&server, "success").await, 1);
    server.shutdown(Duration::from_secs(1)).await;
}
