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
use super::{ReplayStoreKind, TlsFiles};

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
