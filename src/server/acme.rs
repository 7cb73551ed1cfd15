//! Certificates from an ACME CA (RFC 8555), obtained and renewed in the
//! background: `[tls.acme]`.
//!
//! The protocol (JOSE, nonces, the order state machine) is `instant-acme`'s:
//! maintained, async, on rustls and ring as the rest of gatekeeper, and it
//! leaves the challenge answers to us, which both belong on our listeners.
//! TLS-ALPN-01 (RFC 8737) is answered by [`Resolver`] on the HTTPS listener:
//! a handshake offering only ALPN `acme-tls/1` gets the challenge
//! certificate (made by rcgen) and the connection is closed after it.
//! HTTP-01 is answered on the cleartext listener before routing.
//!
//! The cache directory holds `account.json` and `certificate.pem` (the key
//! and its chain in one file, replaced by a rename, so never half of a pair),
//! both 0600. At start a cached certificate for the configured domains is
//! served without asking the CA. Renewal starts at 2/3 of the lifetime, less
//! up to 1/12 of it at random so a fleet's instances spread out; a failure is
//! retried with a doubling back-off. The certificate served is only ever
//! replaced by a newly issued one, so an outage of the CA keeps the old one.
//!
//! Instances sharing one cache (a shared volume) do not all order at once:
//! an order is made only by the instance that creates `order.lock` (O_EXCL);
//! the others read the certificate it writes. A lock older than
//! [`LOCK_STALE`] is from a crashed instance and is taken over.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::config::{AcmeChallenge, AcmeConfig};
use crate::metrics::ResultLabels;
use crate::proxy::ProxyBody;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Where HTTP-01 is asked (RFC 8555 §8.3).
const HTTP_01_PREFIX: &str = "/.well-known/acme-challenge/";
/// An order lock older than this was left by an instance that died.
pub const LOCK_STALE: Duration = Duration::from_secs(600);
/// The first wait after a failed order, doubled after each until [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Picks the certificate for each handshake: the challenge certificate for
/// an `acme-tls/1` handshake, else the current certificate.
#[derive(Debug, Default)]
pub struct Resolver {
    current: ArcSwapOption<CertifiedKey>,
    /// TLS-ALPN-01 certificates by domain, while an order is in progress.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.alpn.lock().ok()?.get(&name).cloned();
        }
        self.current.load_full()
    }
}

/// A certificate and what is known of it.
struct Issued {
    key: Arc<CertifiedKey>,
    not_before: u64,
    not_after: u64,
    /// The leaf's DNS names.
    names: Vec<String>,
}

/// The ACME side of one gatekeeper process.
pub struct Acme {
    config: AcmeConfig,
    pub resolver: Arc<Resolver>,
    /// HTTP-01 key authorizations by token, while an order is in progress.
    http_tokens: Mutex<HashMap<String, String>>,
    /// Orders by result: `success`, `failure`.
    orders: Family<ResultLabels, Counter>,
}

impl std::fmt::Debug for Acme {
    // Without the challenge answers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("domains", &self.config.domains)
            .field("directory", &self.config.directory)
            .finish_non_exhaustive()
    }
}

impl Acme {
    pub fn new(config: AcmeConfig, orders: Family<ResultLabels, Counter>) -> Arc<Self> {
        Arc::new(Self {
            config,
            resolver: Arc::new(Resolver::default()),
            http_tokens: Mutex::new(HashMap::new()),
            orders,
        })
    }

    /// The HTTP-01 answer, when `req` asks for a token of an order in progress.
    pub fn http_challenge<B>(&self, req: &Request<B>) -> Option<Response<ProxyBody>> {
        let token = req.uri().path().strip_prefix(HTTP_01_PREFIX)?;
        let answer = self.http_tokens.lock().ok()?.get(token).cloned()?;
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(crate::proxy::body::full(Bytes::from(answer)))
            .ok()
    }

    /// Serves the cached certificate if there is one, then keeps a valid
    /// certificate for as long as the process runs.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.config.cache)
        {
            warn!(cache = %self.config.cache.display(), error = %e, "cannot create the ACME cache directory");
        }
        let mut current = self.cached();
        if let Some(c) = &current {
            self.resolver.current.store(Some(c.key.clone()));
            info!(domains = ?self.config.domains, "serving the cached ACME certificate");
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            // Now when there is nothing to serve.
            let mut due = current.as_ref().map_or_else(SystemTime::now, renewal_due);
            loop {
                let wait = due
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait).await;
                // Another instance sharing the cache may have renewed it.
                if let Some(cached) = this.cached().filter(|c| newer(c, current.as_ref())) {
                    this.resolver.current.store(Some(cached.key.clone()));
                    info!("serving the ACME certificate another instance obtained");
                    due = renewal_due(&cached);
                    current = Some(cached);
                    failures = 0;
                    if SystemTime::now() < due {
                        continue;
                    }
                }
                match this.obtain().await {
                    Ok(issued) => {
                        this.orders
                            .get_or_create(&ResultLabels { result: "success" })
                            .inc();
                        this.resolver.current.store(Some(issued.key.clone()));
                        info!(domains = ?this.config.domains, not_after = issued.not_after, "ACME certificate obtained");
                        due = renewal_due(&issued);
                        current = Some(issued);
                        failures = 0;
                    }
                    Err(e) => {
                        this.orders
                            .get_or_create(&ResultLabels { result: "failure" })
                            .inc();
                        let wait = backoff(failures);
                        failures = failures.saturating_add(1);
                        warn!(error = %e, retry_in = ?wait, serving = current.is_some(), "ACME order failed; the current certificate stays");
                        due = SystemTime::now() + wait;
                    }
                }
            }
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.config.cache.join(name)
    }

    /// The cached certificate, if it is readable, covers every domain and
    /// has not expired.
    fn cached(&self) -> Option<Issued> {
        let pem = std::fs::read(self.path("certificate.pem")).ok()?;
        let issued = parse_issued(&pem).ok()?;
        let covered = self.config.domains.iter().all(|d| issued.names.contains(d));
        (covered && issued.not_after > unix_now()).then_some(issued)
    }

    async fn obtain(&self) -> Result<Issued, String> {
        let _lock = OrderLock::take(&self.path("order.lock"))?;
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let _answers = Answers { acme: self };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let domain = authz.identifier().to_string();
            let kind = match self.config.challenge {
                AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                AcmeChallenge::Http01 => ChallengeType::Http01,
            };
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| format!("the CA offers no {kind:?} challenge for {domain}"))?;
            let key_authorization = challenge.key_authorization();
            match self.config.challenge {
                AcmeChallenge::TlsAlpn01 => {
                    let cert = alpn_certificate(&domain, key_authorization.digest().as_ref())?;
                    self.resolver
                        .alpn
                        .lock()
                        .map_err(|_| "poisoned")?
                        .insert(domain.clone(), cert);
                }
                AcmeChallenge::Http01 => {
                    self.http_tokens.lock().map_err(|_| "poisoned")?.insert(
                        challenge.token.clone(),
                        key_authorization.as_str().to_owned(),
                    );
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge for {domain}: {e}"))?;
        }
        let retries = RetryPolicy::new().timeout(Duration::from_secs(60));
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(|e| format!("waiting for validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!("the order is {status:?}, not ready"));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(self.config.domains.clone())
            .map_err(|e| e.to_string())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        let pem = format!("{}{chain}", key.serialize_pem());
        let issued = parse_issued(pem.as_bytes())?;
        write_private(&self.path("certificate.pem"), pem.as_bytes())
            .map_err(|e| format!("cache: {e}"))?;
        Ok(issued)
    }

    /// The cached account for this directory, or a new one (then cached).
    async fn account(&self) -> Result<Account, String> {
        let builder = || match &self.config.ca_roots {
            Some(roots) => Account::builder_with_root(roots),
            None => Account::builder(),
        };
        let path = self.path("account.json");
        let cached = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CachedAccount>(&b).ok())
            .filter(|a| a.directory == self.config.directory);
        if let Some(cached) = cached {
            let builder = builder().map_err(|e| e.to_string())?;
            return builder
                .from_credentials(cached.credentials)
                .await
                .map_err(|e| format!("cached account: {e}"));
        }
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder()
            .map_err(|e| e.to_string())?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await
            .map_err(|e| format!("new account: {e}"))?;
        let json = serde_json::to_vec(&CachedAccount {
            directory: self.config.directory.clone(),
            credentials,
        })
        .map_err(|e| e.to_string())?;
        write_private(&path, &json).map_err(|e| format!("cache: {e}"))?;
        Ok(account)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CachedAccount {
    directory: String,
    credentials: instant_acme::AccountCredentials,
}

/// Clears the challenge answers when an order ends, however it ends.
struct Answers<'a> {
    acme: &'a Acme,
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        if let Ok(mut alpn) = self.acme.resolver.alpn.lock() {
            alpn.clear();
        }
        if let Ok(mut tokens) = self.acme.http_tokens.lock() {
            tokens.clear();
        }
    }
}

/// `order.lock` in the cache, created with O_EXCL and removed when dropped.
struct OrderLock(PathBuf);

impl OrderLock {
    fn take(path: &Path) -> Result<Self, String> {
        let create = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
        };
        match create() {
            Ok(_) => Ok(Self(path.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                if age.is_some_and(|a| a > LOCK_STALE) {
                    let _ = std::fs::remove_file(path);
                    if create().is_ok() {
                        return Ok(Self(path.to_owned()));
                    }
                }
                Err(format!(
                    "another instance is ordering ({} exists)",
                    path.display()
                ))
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

impl Drop for OrderLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The TLS-ALPN-01 certificate for `domain` (RFC 8737 §3): self-signed, the
/// domain as its only SAN, the key authorization's digest in a critical
/// acmeIdentifier extension.
fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    certified(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let signing = crate::tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// A key and its chain from one PEM text, with the leaf's validity.
fn parse_issued(pem: &[u8]) -> Result<Issued, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| e.to_string())?;
    let leaf = chain.first().ok_or("no certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let validity = parsed.validity();
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    let (not_before, not_after) = (
        secs(validity.not_before.timestamp()),
        secs(validity.not_after.timestamp()),
    );
    let names = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Issued {
        key: certified(chain, key)?,
        not_before,
        not_after,
        names,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When to renew: at 2/3 of the lifetime, less up to 1/12 of it at random.
fn renewal_due(c: &Issued) -> SystemTime {
    let lifetime = c.not_after.saturating_sub(c.not_before);
    let jitter = rand::random_range(0..=lifetime / 12);
    let due = (c.not_before + lifetime * 2 / 3).saturating_sub(jitter);
    UNIX_EPOCH + Duration::from_secs(due)
}

fn newer(c: &Issued, than: Option<&Issued>) -> bool {
    than.is_none_or(|t| c.not_after > t.not_after)
}

fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(failures.min(20)))
        .min(MAX_BACKOFF)
}

/// Writes `bytes` to `path` as a 0600 file, replacing it at once (a
/// temporary file renamed over it).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
