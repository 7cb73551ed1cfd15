//! `[[route]]`: path or prefix in normal form, host, methods, credentials,
//! and no two routes that gate the same requests.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use http::Method;
use serde_spanned::Spanned;

use crate::normal_path::NormalPath;

use super::load::Validator;
use super::raw::{self, CaptchaNames};
use super::{Captcha, Methods, OnError, PathMatch, PathRules, Route};

impl Validator<'_, '_> {
    pub(super) fn routes(
        &mut self,
        raw: &[Spanned<raw::RawRoute>],
        captchas: &BTreeMap<String, Arc<Captcha>>,
        declared: &BTreeMap<String, Spanned<raw::RawCaptcha>>,
        default_on_error: OnError,
    ) -> Vec<Route> {
        let mut routes: Vec<(Route, usize)> = Vec::new();
        for table in raw {
            let span = table.span();
            let line = self.report.line_of(span.start);
            let r = table.get_ref();
            let path = self.path_match(
                r.path.as_ref(),
                r.prefix.as_ref(),
                span.clone(),
                "[[route]]",
            );
            let host = r.host.as_ref().and_then(|h| self.route_host(h));
            let methods = self.methods(r.methods.as_ref());
            let strict = r.strict.as_ref().is_some_and(|v| *v.get_ref());
            let challenge = r.challenge.as_ref().is_none_or(|v| *v.get_ref());
            let route_captchas =
                self.route_captchas(r.captcha.as_ref(), captchas, declared, span.clone());
            let on_error = self.on_error(r.on_error.as_ref(), "route.on_error", default_on_error);
            let reject_redirect = r.reject_redirect.as_ref().and_then(|v| {
                if v.get_ref().starts_with('/') {
                    Some(v.get_ref().clone())
                } else {
                    self.error(
                        v.span(),
                        "reject_redirect must be a path starting with \"/\"",
                    );
                    None
                }
            });
            let Some(path) = path else { continue };
            if route_captchas.is_empty() {
                continue;
            }
            let origin = origin(host.as_deref(), &path);
            let route = Route {
                path,
                host,
                methods,
                strict,
                captchas: route_captchas,
                on_error,
                reject_redirect,
                challenge,
                origin,
            };
            if let Some((_, other_line)) = routes.iter().find(|(other, _)| overlaps(other, &route))
            {
                self.error(span.clone(), format!("this route overlaps the route on line {other_line} (same path, host and a shared method)"));
                continue;
            }
            routes.push((route, line));
        }
        routes.into_iter().map(|(r, _)| r).collect()
    }

    /// Exactly one of `path` (exact) or `prefix`, in normal form.
    pub(super) fn path_match(
        &mut self,
        path: Option<&Spanned<String>>,
        prefix: Option<&Spanned<String>>,
        table_span: Range<usize>,
        table: &str,
    ) -> Option<PathMatch> {
        match (path, prefix) {
            (Some(p), None) => self.route_path(p).map(PathMatch::Exact),
            (None, Some(p)) => self.route_path(p).map(PathMatch::Prefix),
            _ => {
                self.error(
                    table_span,
                    format!("{table} needs exactly one of path (exact) or prefix"),
                );
                None
            }
        }
    }

    /// A host name or address without a port: routes match the request's
    /// host without its port, so a route host with one would never match and
    /// its path would go ungated.
    pub(super) fn route_host(&mut self, v: &Spanned<String>) -> Option<String> {
        match v.get_ref().parse::<http::uri::Authority>() {
            Ok(a) if a.port().is_none() && a.as_str() == a.host() => {
                Some(a.host().to_ascii_lowercase())
            }
            Ok(a) if a.port().is_some() => {
                self.error(
                    v.span(),
                    format!(
                        "route host \"{}\" must not include a port (use \"{}\")",
                        v.get_ref(),
                        a.host()
                    ),
                );
                None
            }
            _ => {
                self.error(v.span(), format!("invalid route host \"{}\"", v.get_ref()));
                None
            }
        }
    }

    /// A route path must be in the normal form requests are routed in, or
    /// it could never match.
    pub(super) fn route_path(&mut self, v: &Spanned<String>) -> Option<String> {
        let written = v.get_ref();
        match NormalPath::new(written, PathRules::default()) {
            Ok(normal) if *normal.path == **written => Some(written.clone()),
            Ok(normal) => {
                self.error(
                    v.span(),
                    format!(
                        "route path \"{written}\" is not in normal form; requests are routed as \"{}\"",
                        normal.path
                    ),
                );
                None
            }
            Err(e) => {
                self.error(v.span(), format!("route path \"{written}\": {e}"));
                None
            }
        }
    }

    fn methods(&mut self, raw: Option<&Spanned<Vec<Spanned<String>>>>) -> Methods {
        let Some(list) = raw else {
            return Methods::Unsafe;
        };
        if list.get_ref().is_empty() {
            self.error(list.span(), "methods must not be empty");
            return Methods::Unsafe;
        }
        let mut out = Vec::new();
        for m in list.get_ref() {
            let text = m.get_ref();
            let valid =
                !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
            match Method::from_bytes(text.as_bytes()) {
                Ok(method) if valid => out.push(method),
                _ => self.error(
                    m.span(),
                    format!("invalid HTTP method \"{text}\" (use upper case, e.g. \"POST\")"),
                ),
            }
        }
        Methods::Listed(out)
    }

    /// The route's credentials. A `[captcha.NAME]` section that is declared
    /// but broken has had its own error reported: naming it is no second
    /// error (the cause is reported once, not its follow-ons).
    pub(super) fn route_captchas(
        &mut self,
        raw: Option<&Spanned<CaptchaNames>>,
        captchas: &BTreeMap<String, Arc<Captcha>>,
        declared: &BTreeMap<String, Spanned<raw::RawCaptcha>>,
        route_span: Range<usize>,
    ) -> Vec<Arc<Captcha>> {
        let Some(raw) = raw else {
            return match declared.len() {
                1 => captchas.values().cloned().collect(),
                0 => {
                    self.error(route_span, "this route needs a GeeTest credential, but there is no [captcha.NAME] section");
                    Vec::new()
                }
                _ => {
                    self.error(
                        route_span,
                        "several [captcha.*] sections exist: name one with captcha = \"NAME\"",
                    );
                    Vec::new()
                }
            };
        };
        let names: Vec<&String> = match raw.get_ref() {
            CaptchaNames::One(n) => vec![n],
            CaptchaNames::Many(list) => list.iter().collect(),
        };
        if names.is_empty() {
            self.error(raw.span(), "captcha must name at least one [captcha.NAME]");
        }
        let mut out = Vec::new();
        for name in names {
            match captchas.get(name.as_str()) {
                Some(c) => out.push(c.clone()),
                None if declared.contains_key(name.as_str()) => {}
                None => {
                    let hint = declared
                        .keys()
                        .map(|k| (strsim::damerau_levenshtein(name, k), k))
                        .filter(|(d, _)| *d <= 2)
                        .min()
                        .map(|(_, k)| format!("; did you mean \"{k}\"?"))
                        .unwrap_or_default();
                    self.error(
                        raw.span(),
                        format!("unknown captcha \"{name}\" (no [captcha.{name}] section){hint}"),
                    );
                }
            }
        }
        out
    }
}

/// A route's label for logs and metrics: `[host]/path` or `[host]/prefix*`.
pub(super) fn origin(host: Option<&str>, path: &PathMatch) -> String {
    let host = host.unwrap_or("");
    match path {
        PathMatch::Exact(p) => format!("{host}{p}"),
        PathMatch::Prefix(p) => format!("{host}{p}*"),
    }
}

fn overlaps(a: &Route, b: &Route) -> bool {
    let shared_method = match (&a.methods, &b.methods) {
        (Methods::Listed(x), other) | (other, Methods::Listed(x)) => {
            x.iter().any(|m| other.contains(m))
        }
        (Methods::Unsafe, Methods::Unsafe) => true,
    };
    a.path == b.path && a.host == b.host && shared_method
}
