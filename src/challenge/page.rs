//! The pages a person sees: the challenge (and its "try again" variant) and
//! the "expired or unknown" page, in English or Chinese, from the default
//! look or the operator's template.
//!
//! A template is an HTML file with these placeholders, each replaced once,
//! in one pass (a value is never searched for placeholders itself):
//! - `{{lang}}`: the page's language tag, `en` or `zh-CN`;
//! - `{{title}}`: a short title;
//! - `{{message}}` (required): why the page is there, or what went wrong;
//! - `{{widget}}` (required): gatekeeper's markup, the widget's container,
//!   the hidden release form and the two scripts (or, on the expired page,
//!   a link back).
//!
//! Every value is HTML-escaped; `{{widget}}` is markup gatekeeper builds
//! from escaped values. The page carries no inline script, so it works
//! under the Content-Security-Policy returned with it.

use std::sync::{Arc, LazyLock};

use http::{HeaderMap, HeaderValue, Uri, header::ACCEPT_LANGUAGE};
use sha2::{Digest, Sha256};

use super::{ChallengeId, ID_FIELD, RELEASE_PATH, SCRIPT_PATH};
use crate::config::ChallengeConfig;
use crate::http_common::origin_of;
use crate::refusal::escape_html;

/// The page's script, served at [`SCRIPT_PATH`].
pub const SCRIPT: &str = include_str!("challenge.js");

/// A strong ETag of [`SCRIPT`]: its bytes are fixed at build time.
pub fn script_etag() -> &'static str {
    static ETAG: LazyLock<String> =
        LazyLock::new(|| format!("\"{}\"", hex::encode(&Sha256::digest(SCRIPT)[..16])));
    &ETAG
}

const DEFAULT_TEMPLATE: &str = include_str!("page.html");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    English,
    Chinese,
}

struct Text {
    tag: &'static str,
    /// What GeeTest's `language` option calls it.
    widget: &'static str,
    title: &'static str,
    challenge: &'static str,
    retry: &'static str,
    expired_title: &'static str,
    expired: &'static str,
    back: &'static str,
    sending: &'static str,
    unavailable: &'static str,
    noscript: &'static str,
}

const ENGLISH: Text = Text {
    tag: "en",
    widget: "eng",
    title: "Please confirm you are a person",
    challenge: "Solve the check below and your request will continue on its own.",
    retry: "That check did not pass. Please try again: your request is still waiting.",
    expired_title: "This check has expired",
    expired: "This check expired or is unknown, so your request was not sent. Please go back and send it again.",
    back: "Go back",
    sending: "Verified. Sending your request\u{2026}",
    unavailable: "The check could not be loaded. Please reload the page.",
    noscript: "This check needs JavaScript.",
};

const CHINESE: Text = Text {
    tag: "zh-CN",
    widget: "zho",
    title: "请确认您不是机器人",
    challenge: "请完成下方验证，通过后您的请求将自动继续。",
    retry: "验证未通过，请重试：您的请求仍在等待。",
    expired_title: "验证已过期",
    expired: "此验证已过期或无效，您的请求未被发送。请返回后重新提交。",
    back: "返回",
    sending: "验证成功，正在发送您的请求\u{2026}",
    unavailable: "验证无法加载，请刷新页面。",
    noscript: "此验证需要启用 JavaScript。",
};

impl Language {
    /// The most preferred of English and Chinese in `Accept-Language`
    /// (q-values respected, ties to the first listed); English otherwise.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut best: Option<(f32, Self)> = None;
        let ranges = headers
            .get_all(ACCEPT_LANGUAGE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for range in ranges {
            let mut parts = range.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let mut q = Some(1.0f32);
            for param in parts {
                if let Some((k, v)) = param.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    q = v
                        .trim()
                        .parse()
                        .ok()
                        .filter(|q: &f32| (0.0..=1.0).contains(q));
                }
            }
            let primary = tag.split('-').next().unwrap_or("");
            let lang = if primary.eq_ignore_ascii_case("zh") {
                Self::Chinese
            } else if primary.eq_ignore_ascii_case("en") || primary == "*" {
                Self::English
            } else {
                continue;
            };
            match q {
                Some(q) if q > 0.0 && best.is_none_or(|(b, _)| q > b) => best = Some((q, lang)),
                _ => {}
            }
        }
        best.map_or(Self::English, |(_, lang)| lang)
    }

    fn text(self) -> &'static Text {
        match self {
            Self::English => &ENGLISH,
            Self::Chinese => &CHINESE,
        }
    }
}

/// A page and the `Content-Security-Policy` it must be served with.
#[derive(Debug, Clone)]
pub struct Page {
    pub html: String,
    pub csp: HeaderValue,
}

/// Renders the pages; built once per configuration.
#[derive(Debug, Clone)]
pub struct Pages {
    widget_url: String,
    template: Arc<str>,
    /// `[pages] expired`, else `template`.
    expired_template: Option<Arc<str>>,
    csp: HeaderValue,
    /// The challenge page for each configured captcha id, language and
    /// retry, rendered once and split where the kept request's id goes: a
    /// page is then two copies and the id (a flood of challenges costs no
    /// more than a flood of refusals). (language, retry, captcha id, before
    /// the id, after it); a few.
    prepared: Vec<(Language, bool, String, String, String)>,
}

impl Pages {
    /// `api_origin` is where the widget talks to (GeeTest's API, or the
    /// simulator): the CSP allows it besides the page's own origin and the
    /// widget script's. Anything but an http(s) origin is left out.
    pub fn new(config: &ChallengeConfig, api_origin: &str) -> Self {
        let mut sources = vec!["'self'".to_owned()];
        let extra = api_origin.parse::<Uri>().ok();
        for origin in [
            origin_of(&config.widget_url),
            extra.as_ref().and_then(origin_of),
        ]
        .into_iter()
        .flatten()
        {
            if !sources.contains(&origin) {
                sources.push(origin);
            }
        }
        let sources = sources.join(" ");
        // Scripts, connections, frames and images only from those origins;
        // styles may also be inline because widgets (GeeTest's and the
        // stand-in) inject <style> elements. No form-action: the released
        // request's answer may redirect anywhere the application sends it.
        let csp = format!(
            "default-src {sources}; style-src {sources} 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
        );
        Self {
            widget_url: config.widget_url.to_string(),
            template: config
                .template
                .clone()
                .unwrap_or_else(|| DEFAULT_TEMPLATE.into()),
            expired_template: None,
            // Origins are checked host names and ports: a valid header value.
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
            prepared: Vec::new(),
        }
    }

    /// The expired page from its own template, with the same placeholders.
    pub fn with_expired_template(mut self, template: Option<Arc<str>>) -> Self {
        self.expired_template = template;
        self
    }

    /// Renders the challenge pages of these captcha ids ahead of time.
    pub fn prepared_for<'a>(mut self, captcha_ids: impl IntoIterator<Item = &'a str>) -> Self {
        // Never in a page: whatever it is replaced by cannot clash with it.
        const MARK: &str = "\u{0}id\u{0}";
        for captcha_id in captcha_ids {
            for lang in [Language::English, Language::Chinese] {
                for retry in [false, true] {
                    let html = self.render_challenge(lang, captcha_id, MARK, retry).html;
                    if let Some((head, tail)) = html.split_once(MARK) {
                        self.prepared.push((
                            lang,
                            retry,
                            captcha_id.to_owned(),
                            head.to_owned(),
                            tail.to_owned(),
                        ));
                    }
                }
            }
        }
        self
    }

    /// The challenge for kept request `id`; `retry` after a refused proof.
    pub fn challenge(
        &self,
        lang: Language,
        captcha_id: &str,
        id: ChallengeId,
        retry: bool,
    ) -> Page {
        let id = id.to_string();
        let prepared = self
            .prepared
            .iter()
            .find(|(l, r, c, _, _)| *l == lang && *r == retry && c == captcha_id);
        if let Some((_, _, _, head, tail)) = prepared {
            let mut html = String::with_capacity(head.len() + id.len() + tail.len());
            html.push_str(head);
            html.push_str(&id);
            html.push_str(tail);
            return Page {
                html,
                csp: self.csp.clone(),
            };
        }
        self.render_challenge(lang, captcha_id, &id, retry)
    }

    fn render_challenge(&self, lang: Language, captcha_id: &str, id: &str, retry: bool) -> Page {
        let t = lang.text();
        let mut widget = format!(
            "<div id=\"gatekeeper-captcha\" data-captcha-id=\"{}\" data-language=\"{}\" data-sending=\"{}\" data-unavailable=\"{}\"></div>\n\
             <p id=\"gatekeeper-status\" role=\"status\" aria-live=\"polite\"></p>\n\
             <form id=\"gatekeeper-release\" method=\"post\" action=\"{RELEASE_PATH}\">\n\
             <input type=\"hidden\" name=\"{ID_FIELD}\" value=\"{id}\">\n",
            escape_html(captcha_id),
            t.widget,
            escape_html(t.sending),
            escape_html(t.unavailable),
        );
        // The five captcha fields are added by the script when the widget
        // passes: the page is encrypted and sent with every challenge, and
        // empty inputs would only lengthen it.
        widget.push_str(&format!(
            "</form>\n<noscript><p>{}</p></noscript>\n<script src=\"{}\"></script>\n<script src=\"{SCRIPT_PATH}\"></script>",
            escape_html(t.noscript),
            escape_html(&self.widget_url),
        ));
        let message = if retry { t.retry } else { t.challenge };
        self.render(&self.template, t, t.title, message, &widget)
    }

    /// The page for an expired or unknown id, linking `back` when it is a
    /// path on this site (the `Referer`'s path, say), else the site's root.
    pub fn expired(&self, lang: Language, back: Option<&str>) -> Page {
        let t = lang.text();
        let back = back
            .filter(|b| b.starts_with('/') && !b.starts_with("//") && !b.starts_with("/\\"))
            .unwrap_or("/");
        let widget = format!(
            "<p><a href=\"{}\">{}</a></p>",
            escape_html(back),
            escape_html(t.back)
        );
        let template = self.expired_template.as_ref().unwrap_or(&self.template);
        self.render(template, t, t.expired_title, t.expired, &widget)
    }

    fn render(&self, template: &str, t: &Text, title: &str, message: &str, widget: &str) -> Page {
        let (lang, title, message) = (escape_html(t.tag), escape_html(title), escape_html(message));
        let mut html = String::with_capacity(template.len() + widget.len() + 512);
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            html.push_str(&rest[..start]);
            let after = &rest[start..];
            let value = [
                ("{{lang}}", lang.as_str()),
                ("{{title}}", title.as_str()),
                ("{{message}}", message.as_str()),
                ("{{widget}}", widget),
            ]
            .into_iter()
            .find(|(name, _)| after.starts_with(name));
            match value {
                Some((name, value)) => {
                    html.push_str(value);
                    rest = &after[name.len()..];
                }
                None => {
                    html.push_str("{{");
                    rest = &after[2..];
                }
            }
        }
        html.push_str(rest);
        Page {
            html,
            csp: self.csp.clone(),
        }
    }
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
