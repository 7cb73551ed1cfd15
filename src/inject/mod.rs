//! `[[inject]]`: gatekeeper puts the widget into the app's own forms, so an
//! app that knows nothing of GeeTest posts the five fields itself and the
//! gate works as for an integrated app.
//!
//! For a request to a page an `[[inject]]` rule names, [`InjectPage::ask_whole`]
//! asks the app for the whole page uncompressed (`Accept-Encoding: identity`,
//! no `Range`); when the answer is HTML, [`InjectPage::rewriter`] adjusts its
//! head (no `Content-Length`: the length changes; a weak `ETag`; the CSP
//! amended with the widget's origins) and returns the [`Rewriter`] the
//! response body streams through. Anything else (another type, a compressed
//! body, a 206 or 304) passes unchanged.
//!
//! What goes in at the start of the first form the selector matches: the
//! widget's container, the five hidden fields, GeeTest's script and
//! gatekeeper's [`SCRIPT_PATH`], which moves the container before the submit
//! button, fills the fields on success and holds the submit until then. The
//! rest of the page after that form's start tag passes unparsed, and a page
//! that starts as the last one did is not parsed at all (see `rewrite`).

mod csp;
mod rewrite;

pub use csp::{WidgetSources, amend as amend_csp, script_nonce};
use rewrite::Remembered;
pub use rewrite::Rewriter;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};

use http::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_SECURITY_POLICY,
    CONTENT_SECURITY_POLICY_REPORT_ONLY, CONTENT_TYPE, ETAG, HeaderValue, IF_RANGE, RANGE,
};
use http::{HeaderMap, Method, StatusCode};
use lol_html::AsciiCompatibleEncoding;
use tracing::warn;

use crate::config::{Config, InjectRule};
use crate::gate::fields::CAPTCHA_FIELDS;
use crate::http_common::origin_of;
use crate::metrics::Metrics;
use crate::normal_path::NormalPath;
use crate::refusal::escape_html;
use crate::routing::RouteTable;

/// The script that wires the widget to the app's form; served by gatekeeper.
pub const SCRIPT_PATH: &str = "/.gatekeeper/inject.js";
pub const SCRIPT: &str = include_str!("inject.js");

/// A strong ETag of [`SCRIPT`]: its bytes are fixed at build time.
pub fn script_etag() -> &'static str {
    static ETAG: LazyLock<String> =
        LazyLock::new(|| format!("\"{}\"", hex::encode(&Sha256::digest(SCRIPT)[..16])));
    &ETAG
}

/// The pages that get the widget, built once per configuration.
#[derive(Debug)]
pub struct Injector {
    pages: RouteTable<Arc<InjectPage>>,
}

/// One `[[inject]]` rule with what its rewrites need.
#[derive(Debug)]
pub struct InjectPage {
    rule: InjectRule,
    /// The container and hidden fields, put into the selected form.
    markup: String,
    /// The script tags after them, for a page whose policy has no nonce.
    scripts: String,
    widget_url: String,
    sources: WidgetSources,
    /// Each of these is logged once per configuration, not per page view.
    warned_unmatched: AtomicBool,
    warned_encoded: AtomicBool,
    /// The start of the last page rewritten, for the next that starts alike.
    last: ArcSwapOption<Remembered>,
    metrics: Arc<Metrics>,
}

impl AsRef<crate::config::Route> for Arc<InjectPage> {
    fn as_ref(&self) -> &crate::config::Route {
        &self.rule.route
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Injected,
    Unmatched,
}

impl Injector {
    /// `api_origin` is the GeeTest API's (or the simulator's) origin.
    pub fn new(config: &Config, api_origin: Option<String>, metrics: Arc<Metrics>) -> Self {
        let widget_url = config.challenge.widget_url.to_string();
        let sources = WidgetSources::new(origin_of(&config.challenge.widget_url), api_origin);
        let pages = config
            .injects
            .iter()
            .map(|rule| {
                let captcha_id = rule.route.captchas.first().map_or("", |c| c.id.as_str());
                let mut markup = format!(
                    "<div class=\"gatekeeper-captcha\" data-gatekeeper-captcha=\"{}\"></div>",
                    escape_html(captcha_id)
                );
                for field in CAPTCHA_FIELDS {
                    markup.push_str(&format!(
                        "<input type=\"hidden\" name=\"{field}\" value=\"\">"
                    ));
                }
                let mut page = InjectPage {
                    rule: rule.clone(),
                    markup,
                    scripts: String::new(),
                    widget_url: widget_url.clone(),
                    sources: sources.clone(),
                    warned_unmatched: AtomicBool::new(false),
                    warned_encoded: AtomicBool::new(false),
                    last: ArcSwapOption::empty(),
                    metrics: metrics.clone(),
                };
                page.scripts = page.scripts(None);
                Arc::new(page)
            })
            .collect();
        Self {
            pages: RouteTable::new(pages),
        }
    }

    /// The rule for this page, if any; any method (a form re-rendered after
    /// a failed post needs the widget as much as the first).
    pub fn page(&self, host: Option<&str>, path: &NormalPath<'_>) -> Option<&Arc<InjectPage>> {
        if self.pages.is_empty() {
            return None;
        }
        self.pages.find_any_method(host, path)
    }
}

impl InjectPage {
    /// The request asks for the whole page, uncompressed, so it can be
    /// rewritten as it streams.
    pub fn ask_whole(&self, headers: &mut HeaderMap) {
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        headers.remove(RANGE);
        headers.remove(IF_RANGE);
    }

    /// Whether and how the app's answer is rewritten; the head is adjusted
    /// here when it is.
    pub fn rewriter(
        self: &Arc<Self>,
        method: &Method,
        status: StatusCode,
        headers: &mut HeaderMap,
    ) -> Option<Rewriter> {
        let bodiless = status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            );
        if bodiless {
            return None;
        }
        let encoding = html_encoding(headers)?;
        let encoded = headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            if !self.warned_encoded.swap(true, Ordering::Relaxed) {
                warn!(
                    inject = %self.rule.route.origin,
                    "the app compressed the page though asked for identity; served without the widget"
                );
            }
            self.metrics.injection("skipped");
            return None;
        }
        headers.remove(CONTENT_LENGTH);
        headers.remove(CONTENT_ENCODING);
        weaken_etag(headers);
        let nonce = headers
            .get(CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .and_then(script_nonce);
        for name in [CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_REPORT_ONLY] {
            let amended: Vec<HeaderValue> = headers
                .get_all(&name)
                .iter()
                .filter_map(|v| {
                    v.to_str()
                        .ok()
                        .and_then(|p| HeaderValue::from_str(&amend_csp(p, &self.sources)).ok())
                })
                .collect();
            if !amended.is_empty() {
                headers.remove(&name);
                for v in amended {
                    headers.append(&name, v);
                }
            }
        }
        // A HEAD's answer has no body to rewrite; its head says what a GET's would.
        if method == Method::HEAD {
            return None;
        }
        Some(Rewriter::new(self.clone(), encoding, nonce))
    }

    /// The script tags, after the container.
    fn scripts(&self, nonce: Option<&str>) -> String {
        let nonce = nonce
            .map(|n| format!(" nonce=\"{}\"", escape_html(n)))
            .unwrap_or_default();
        format!(
            "<script src=\"{}\"{nonce}></script><script src=\"{SCRIPT_PATH}\"{nonce}></script>",
            escape_html(&self.widget_url)
        )
    }

    fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Injected => self.metrics.injection("injected"),
            Outcome::Unmatched => {
                self.metrics.injection("unmatched");
                if !self.warned_unmatched.swap(true, Ordering::Relaxed) {
                    warn!(
                        inject = %self.rule.route.origin,
                        form = %self.rule.form_text,
                        "no form on the page matched; served unchanged (logged once)"
                    );
                }
            }
        }
    }

    fn bailed_out(&self, e: &lol_html::errors::RewritingError) {
        self.metrics.injection("bailed_out");
        warn!(inject = %self.rule.route.origin, error = %e, "the rest of the page passed through unchanged");
    }
}

/// The page's character encoding when the answer is HTML the rewriter can
/// read (UTF-8 unless the type says otherwise; UTF-16 pages pass unchanged).
fn html_encoding(headers: &HeaderMap) -> Option<AsciiCompatibleEncoding> {
    let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let mut params = content_type.split(';');
    let essence = params.next()?.trim();
    if !essence.eq_ignore_ascii_case("text/html")
        && !essence.eq_ignore_ascii_case("application/xhtml+xml")
    {
        return None;
    }
    let charset = params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"'))
    });
    match charset {
        None => Some(AsciiCompatibleEncoding::utf_8()),
        Some(label) => {
            AsciiCompatibleEncoding::new(encoding_rs::Encoding::for_label(label.as_bytes())?)
        }
    }
}

/// The page's bytes change, so a strong validator would be a lie (as nginx
/// weakens it when it compresses).
fn weaken_etag(headers: &mut HeaderMap) {
    let weak = match headers.get(ETAG) {
        Some(v) if v.as_bytes().starts_with(b"\"") => {
            let mut bytes = b"W/".to_vec();
            bytes.extend_from_slice(v.as_bytes());
            HeaderValue::from_bytes(&bytes).ok()
        }
        _ => return,
    };
    match weak {
        Some(v) => headers.insert(ETAG, v),
        None => headers.remove(ETAG),
    };
}
