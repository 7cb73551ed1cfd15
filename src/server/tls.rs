//! rustls for the HTTPS listener: TLS 1.2 and 1.3 with the ring provider's
//! AEAD suites only, ALPN `h2` then `http/1.1`.

use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

use super::acme::{ACME_TLS_ALPN, Resolver};
use crate::tls::provider;

/// Builds the listener's TLS configuration from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let (chain, key) = crate::tls::load_pem(cert, key).map_err(|e| e.to_string())?;
    let mut config = builder()?
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // rustls's own order (all AEAD, strongest first), not the client's.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The listener's TLS configuration with ACME's certificates; it also
/// offers `acme-tls/1`, which only a TLS-ALPN-01 validation asks for.
pub fn acme_server_config(resolver: Arc<Resolver>) -> Result<Arc<ServerConfig>, String> {
    let mut config = builder()?.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

fn builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, String>
{
    Ok(ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth())
}
