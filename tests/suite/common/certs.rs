//! A self-signed certificate for `localhost` made at test time, and a
//! client configuration that trusts it.

use std::path::PathBuf;
use std::sync::Arc;

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
        client_config_trusting(self.cert_der.clone(), alpn)
    }
}

/// A TLS client (ring) trusting only `root`, offering `alpn`.
pub fn client_config_trusting(
    root: rustls::pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
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
