//! Pebble, Let's Encrypt's ACME test server, and its challenge test server
//! as DNS (every name is 127.0.0.1), as real processes on free ports.
//! Validation is real: Pebble connects to the ports it is given, where the
//! test puts gatekeeper's listeners.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{TestCerts, free_port, until_listening};

pub struct Pebble {
    pub api_port: u16,
    pub management_port: u16,
    /// Pebble's own HTTPS certificate, which the ACME client must trust.
    pub certs: TestCerts,
    pebble: Option<Child>,
    dns: Child,
}

impl Pebble {
    /// Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` (gatekeeper's listeners), issuing certificates valid for
    /// `validity_secs` (Pebble's default, years, when `None`).
    pub fn start(http_port: u16, tls_port: u16, validity_secs: Option<u64>) -> Self {
        let certs = TestCerts::new();
        let dns_port = free_port();
        let dns_management = free_port();
        let dns = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{dns_management}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv on PATH: install pebble (scripts/setup)");
        until_listening(dns_management, "pebble-challtestsrv");
        let api_port = free_port();
        let management_port = free_port();
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{api_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": certs.cert_path,
                "privateKey": certs.key_path,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        if let Some(secs) = validity_secs {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        let config_path = certs.dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let mut this = Self {
            api_port,
            management_port,
            certs,
            pebble: None,
            dns,
        };
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            // Validation at once, every order validated anew, and no
            // nonce refused at random: the test is about gatekeeper.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble on PATH: install pebble (scripts/setup)");
        this.pebble = Some(pebble);
        until_listening(api_port, "pebble");
        until_listening(management_port, "pebble management");
        this
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.api_port)
    }

    /// The PEM file to give as `tls.acme.ca_roots`.
    pub fn ca_roots(&self) -> PathBuf {
        self.certs.cert_path.clone()
    }

    /// The root Pebble issues under, from its management interface.
    pub async fn root(&self) -> CertificateDer<'static> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.certs.client_config(&[]))
            .https_only()
            .enable_http1()
            .build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Empty<Bytes>>(connector);
        let url = format!("https://localhost:{}/roots/0", self.management_port);
        let resp = client.get(url.parse().unwrap()).await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let pem = resp.into_body().collect().await.unwrap().to_bytes();
        CertificateDer::from_pem_slice(&pem).expect("a PEM root")
    }

    /// Stops the CA: an ACME outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

/// A TLS client trusting only `root`, offering http/1.1, never resuming.
pub fn client_trusting(root: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut config = super::client_config_trusting(root, &[b"http/1.1"]);
    // Each connection a full handshake: the certificate of the moment.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}
