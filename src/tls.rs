//! Reading the listener's certificate chain and private key from PEM files.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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

fn describe(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM private key found (PKCS#8, PKCS#1 or SEC1)".into(),
        other => format!("not valid PEM: {other}"),
    }
}
