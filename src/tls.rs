//! rustls below the server: the one crypto provider, the connector for
//! gatekeeper's own clients, and reading a certificate chain and private key
//! from PEM files. The listener's configuration is in `server::tls`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::crypto::CryptoProvider;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The one crypto provider, chosen explicitly rather than by process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connector for gatekeeper's own clients (upstream, GeeTest): http or
/// https with the web PKI roots, HTTP/1.1, no Nagle, bounded connects.
pub fn client_connector(connect_timeout: Duration) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = match rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // The ring provider supports the safe default versions by construction.
        Err(e) => unreachable!("rustls ring provider rejected its default versions: {e}"),
    };
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("certificate file {}: {message}", path.display())]
    Cert { path: PathBuf, message: String },
    #[error("key file {}: {message}", path.display())]
    Key { path: PathBuf, message: String },
}

impl TlsFileError {
    pub fn is_key(&self) -> bool {
        matches!(self, Self::Key { .. })
    }
}

/// The chain (leaf first) and the key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn load_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsFileError> {
    let cert_err = |message: String| TlsFileError::Cert {
        path: cert.to_owned(),
        message,
    };
    let key_err = |message: String| TlsFileError::Key {
        path: key.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(describe(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(describe(&e)))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(describe(&e)))?;
    Ok((chain, key))
}

/// Root certificates from a PEM file (at least one).
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let at = |e: String| format!("{}: {e}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| at(describe(&e)))? {
        let cert = cert.map_err(|e| at(describe(&e)))?;
        roots.add(cert).map_err(|e| at(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(at("no PEM certificate found".into()));
    }
    Ok(roots)
}

fn describe(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM private key found (PKCS#8, PKCS#1 or SEC1)".into(),
        other => format!("not valid PEM: {other}"),
    }
}
