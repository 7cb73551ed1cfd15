//! rustls for the HTTPS listener (TLS 1.2 and 1.3 with the ring provider's
//! AEAD suites only, ALPN `h2` then `http/1.1`) and for gatekeeper's clients.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;

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

/// Builds the listener's TLS configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let (chain, key) = crate::tls::load_pem(cert, key).map_err(|e| e.to_string())?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // rustls's own order (all AEAD, strongest first), not the client's.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}
