//! Values that name something outside the file: the TLS certificate and key
//! (read and parsed as PEM), captcha keys from environment variables or key
//! files, and the Redis URL of the replay store.

use std::ops::Range;

use serde_spanned::Spanned;

use super::load::{Externals, Validator};

/// What a key read from outside the file is, when `check --offline` reads
/// nothing: 32 characters, so the length check passes; never served.
const OFFLINE_KEY: &str = "offline-check-placeholder-key-32";
use super::raw;
use super::{AcmeChallenge, AcmeConfig, LETS_ENCRYPT, ReplayStoreKind, TlsFiles};

impl Validator<'_, '_> {
    pub(super) fn tls(
        &mut self,
        raw: Option<&Spanned<raw::RawTls>>,
        https: bool,
    ) -> Option<TlsFiles> {
        let Some(raw) = raw else {
            if https {
                self.report.whole_file(
                    "server.https is set but there is no [tls] section with cert and key",
                );
            }
            return None;
        };
        if !https {
            self.error(raw.span(), "[tls] is set but server.https is not");
            return None;
        }
        if raw.get_ref().acme.is_some() {
            let files = raw.get_ref().cert.as_ref().or(raw.get_ref().key.as_ref());
            if let Some(file) = files {
                self.error(
                    file.span(),
                    "[tls] takes cert and key, or [tls.acme], not both",
                );
            }
            return None;
        }
        let (Some(cert), Some(key)) = (&raw.get_ref().cert, &raw.get_ref().key) else {
            self.error(raw.span(), "[tls] needs both cert and key");
            return None;
        };
        let cert_path = self.base.join(cert.get_ref());
        let key_path = self.base.join(key.get_ref());
        if self.externals == Externals::Skip {
            return Some(TlsFiles {
                cert: cert_path,
                key: key_path,
            });
        }
        match crate::tls::load_pem(&cert_path, &key_path) {
            Ok(_) => Some(TlsFiles {
                cert: cert_path,
                key: key_path,
            }),
            Err(e) => {
                let span = if e.is_key() { key.span() } else { cert.span() };
                self.error(span, e.to_string());
                None
            }
        }
    }

    /// The captcha key from exactly one of `key`, `key_env` (an environment
    /// variable) or `key_file` (a file, trailing whitespace trimmed), with
    /// where it was named. No message shows the value: it is a secret.
    pub(super) fn captcha_key(
        &mut self,
        c: &raw::RawCaptcha,
        section: &str,
        span: Range<usize>,
    ) -> Option<(Range<usize>, String)> {
        let sources = [&c.key, &c.key_env, &c.key_file];
        let given: Vec<&Spanned<String>> = sources.iter().filter_map(|s| s.as_ref()).collect();
        match (given.len(), &c.key, &c.key_env, &c.key_file) {
            (1, Some(k), _, _) => Some((k.span(), k.get_ref().clone())),
            (1, _, Some(source), _) | (1, _, _, Some(source))
                if self.externals == Externals::Skip =>
            {
                Some((source.span(), OFFLINE_KEY.to_owned()))
            }
            (1, _, Some(var), _) => match std::env::var(var.get_ref()) {
                Ok(k) if !k.is_empty() => Some((var.span(), k)),
                _ => {
                    self.error(
                        var.span(),
                        format!(
                            "{section}.key_env: environment variable {} is not set",
                            var.get_ref()
                        ),
                    );
                    None
                }
            },
            (1, _, _, Some(file)) => {
                let path = self.base.join(file.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(k) => Some((file.span(), k.trim_end().to_owned())),
                    Err(e) => {
                        self.error(
                            file.span(),
                            format!("{section}.key_file: cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
            _ => {
                self.error(
                    span,
                    format!("[{section}] needs exactly one of key, key_env, key_file"),
                );
                None
            }
        }
    }

    /// `[tls.acme]`; `https` and `http` say which listeners are set (the
    /// challenges are answered there).
    pub(super) fn acme(
        &mut self,
        raw: Option<&Spanned<raw::RawTls>>,
        https: bool,
        http: bool,
    ) -> Option<AcmeConfig> {
        let table = raw?.get_ref().acme.as_ref()?;
        let (span, acme) = (table.span(), table.get_ref());
        if !https {
            // Reported by `tls`.
            return None;
        }
        let mut domains = Vec::new();
        match &acme.domains {
            None => self.error(
                span.clone(),
                "[tls.acme] needs domains = [\"example.com\", …]",
            ),
            Some(list) if list.get_ref().is_empty() => {
                self.error(
                    list.span(),
                    "tls.acme.domains must name at least one domain",
                );
            }
            Some(list) => {
                for d in list.get_ref() {
                    let name = d.get_ref().trim_end_matches('.').to_ascii_lowercase();
                    let problem = if name.starts_with("*.") {
                        Some(
                            "a wildcard needs the DNS-01 challenge, which gatekeeper does not answer",
                        )
                    } else if name.parse::<std::net::IpAddr>().is_ok() {
                        Some("an IP address is not a domain")
                    } else if rustls_pki_types::DnsName::try_from(name.as_str()).is_err()
                        || !name.contains('.')
                    {
                        Some("not a fully qualified domain name")
                    } else {
                        None
                    };
                    match problem {
                        Some(why) => self.error(
                            d.span(),
                            format!("tls.acme.domains: \"{}\": {why}", d.get_ref()),
                        ),
                        None if domains.contains(&name) => self.error(
                            d.span(),
                            format!("tls.acme.domains: \"{}\" is listed twice", d.get_ref()),
                        ),
                        None => domains.push(name),
                    }
                }
            }
        }
        let mut contact = Vec::new();
        if let Some(c) = &acme.contact {
            let address = c.get_ref().strip_prefix("mailto:").unwrap_or("");
            match address.split_once('@') {
                Some((user, host)) if !user.is_empty() && host.contains('.') => {
                    contact.push(c.get_ref().clone());
                }
                _ => self.error(
                    c.span(),
                    format!(
                        "tls.acme.contact must be \"mailto:name@example.com\", not \"{}\"",
                        c.get_ref()
                    ),
                ),
            }
        }
        let directory = match &acme.directory {
            None => LETS_ENCRYPT.to_owned(),
            Some(d) => {
                match d.get_ref().parse::<http::Uri>() {
                    Ok(u) if u.scheme_str() == Some("https") && u.authority().is_some() => {}
                    Ok(_) => self.error(
                        d.span(),
                        format!(
                            "tls.acme.directory must be an https:// URL, not \"{}\"",
                            d.get_ref()
                        ),
                    ),
                    Err(e) => self.error(
                        d.span(),
                        format!("invalid tls.acme.directory \"{}\": {e}", d.get_ref()),
                    ),
                }
                d.get_ref().clone()
            }
        };
        let cache = match &acme.cache {
            Some(c) if !c.get_ref().is_empty() => self.base.join(c.get_ref()),
            Some(c) => {
                self.error(c.span(), "tls.acme.cache must name a directory");
                return None;
            }
            None => {
                self.error(
                    span,
                    "[tls.acme] needs cache = \"DIR\": the account and certificates are kept there",
                );
                return None;
            }
        };
        let ca_roots = acme.ca_roots.as_ref().map(|r| {
            let path = self.base.join(r.get_ref());
            if self.externals == Externals::Read
                && let Err(e) = crate::tls::load_roots(&path)
            {
                self.error(r.span(), format!("tls.acme.ca_roots: {e}"));
            }
            path
        });
        let challenge = self.one_of(
            acme.challenge.as_ref(),
            "tls.acme.challenge",
            &[
                ("tls-alpn-01", AcmeChallenge::TlsAlpn01),
                ("http-01", AcmeChallenge::Http01),
            ],
            AcmeChallenge::TlsAlpn01,
        );
        if challenge == AcmeChallenge::Http01
            && !http
            && let Some(c) = &acme.challenge
        {
            self.error(
                c.span(),
                "tls.acme.challenge = \"http-01\" is answered on the cleartext listener, but server.http is not set",
            );
        }
        Some(AcmeConfig {
            domains,
            contact,
            directory,
            cache,
            ca_roots,
            challenge,
        })
    }

    /// `"memory"` (also when absent), or a `redis://` or `rediss://` URL the
    /// Redis client accepts.
    pub(super) fn replay_store(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
    ) -> ReplayStoreKind {
        match value {
            None => ReplayStoreKind::Memory,
            Some(v) if v.get_ref() == "memory" => ReplayStoreKind::Memory,
            Some(v)
                if v.get_ref().starts_with("redis://") || v.get_ref().starts_with("rediss://") =>
            {
                match redis::Client::open(v.get_ref().as_str()) {
                    Ok(_) => ReplayStoreKind::Redis {
                        url: v.get_ref().clone(),
                    },
                    Err(e) => {
                        self.error(v.span(), format!("invalid {key} URL: {e}"));
                        ReplayStoreKind::Memory
                    }
                }
            }
            Some(v) => {
                self.error(
                    v.span(),
                    format!("{key} must be \"memory\" or a redis:// or rediss:// URL"),
                );
                ReplayStoreKind::Memory
            }
        }
    }
}
