//! From text to a validated [`Config`]: parse, check every key and value,
//! and collect every problem on the way.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_spanned::Spanned;
use toml::de::DeTable;

use super::Config;
use super::diagnostic::{ConfigError, Report};
use super::raw::RawConfig;
use super::unknown_keys::{key_at, report_unknown_keys};

/// Whether validation reads what the file names outside itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Externals {
    /// Read certificates, key files, key variables and page templates,
    /// as a running gatekeeper must.
    Read,
    /// Check every key and value but read none of them: for CI and for a
    /// templated config (a Kubernetes ConfigMap) whose secrets and files
    /// exist only where it runs. Keys are then placeholders: such a
    /// `Config` is for `check`, never for serving.
    Skip,
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_with(path, Externals::Read)
}

/// As [`load_file`], reading external files and secrets or not.
pub fn load_file_with(path: &Path, externals: Externals) -> Result<Config, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_str_with(&text, path, externals),
        Err(e) => {
            let mut report = Report::new(path, "");
            report.whole_file(format!("cannot read: {e}"));
            Err(report.into_error())
        }
    }
}

/// Validates configuration text; `path` names it in messages and anchors
/// relative paths (certificates, key files).
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_str_with(text, path, Externals::Read)
}

/// As [`parse_str`], reading external files and secrets or not.
pub fn parse_str_with(
    text: &str,
    path: &Path,
    externals: Externals,
) -> Result<Config, ConfigError> {
    let mut report = Report::new(path, text);
    let table = match DeTable::parse(text) {
        Ok(table) => table,
        Err(e) => {
            report.at(e.span().unwrap_or(0..0), e.message().trim().to_owned());
            return Err(report.into_error());
        }
    };
    report_unknown_keys(table.get_ref(), &mut report);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            // serde names the type, not the key: say which key it is.
            let message = match key_at(table.get_ref(), span.start) {
                Some(key) => format!("{key}: {}", e.message().trim()),
                None => e.message().trim().to_owned(),
            };
            report.at(span, message);
            return Err(report.into_error());
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut config = Validator {
        report: &mut report,
        base,
        externals,
    }
    .validate(raw, path);
    config.hash = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())[..8]);
    report.finish(config)
}

/// Turns each raw section into its validated form, reporting every problem
/// and carrying on with a default so one run finds them all. Its methods
/// live in `values.rs` (one value), `sections.rs`, `external.rs` and
/// `routes.rs` (whole sections).
pub(super) struct Validator<'r, 'a> {
    pub(super) report: &'r mut Report<'a>,
    /// The config file's directory: relative paths are resolved against it.
    pub(super) base: PathBuf,
    pub(super) externals: Externals,
}

impl Validator<'_, '_> {
    fn validate(&mut self, raw: RawConfig, path: &Path) -> Config {
        let server = self.server(&raw.server);
        // Declared, even if its value is wrong: that error is its own.
        let tls = self.tls(raw.tls.as_ref(), raw.server.https.is_some());
        let acme = self.acme(
            raw.tls.as_ref(),
            raw.server.https.is_some(),
            raw.server.http.is_some(),
        );
        let upstream = self.upstream(raw.upstream.as_ref());
        let limits = self.limits(&raw.limits);
        let paths = self.paths(&raw.paths);
        let geetest = self.geetest(&raw.geetest);
        let captchas = self.captchas(&raw.captcha);
        let token_age_span = raw.geetest.max_token_age.as_ref().map(Spanned::span);
        let replay = self.replay(&raw.replay, geetest.max_token_age, token_age_span);
        let routes = self.routes(&raw.route, &captchas, &raw.captcha, geetest.on_error);
        let throttle = self.throttle(raw.throttle.as_ref(), &replay.store);
        let challenge = self.challenge(&raw.challenge, limits.max_body, &geetest.api_servers);
        let injects = self.injects(&raw.inject, &captchas, &raw.captcha);
        let pages = self.pages(&raw.pages);
        Config {
            source: path.to_owned(),
            server,
            tls,
            acme,
            upstream,
            limits,
            paths,
            geetest,
            captchas,
            routes,
            replay,
            throttle,
            challenge,
            injects,
            pages,
            hash: String::new(),
        }
    }

    pub(super) fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.report.at(span, message);
    }
}
