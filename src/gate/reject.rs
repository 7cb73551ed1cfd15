//! How a refused request is answered: JSON for programs, a short page for
//! people, or a 303 back to the form for classic browser form posts.

use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::http_common::{HeldBody, json_error, whole_body};

/// A refusal: the status, a stable machine-readable code, and a reason that is
/// safe to show (it never contains a field's value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub code: &'static str,
    pub reason: String,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
}

impl Rejection {
    pub fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(5);
        Self {
            status,
            code,
            reason: reason.into(),
            retry_after,
        }
    }

    /// Whether the client is to blame (a refused proof, for the throttle).
    pub fn is_client_fault(&self) -> bool {
        self.status.is_client_error() && self.status != StatusCode::TOO_MANY_REQUESTS
    }

    /// Renders the refusal for the client that sent `method` with `headers`.
    pub fn into_response(
        self,
        method: &Method,
        headers: &HeaderMap,
        redirect: Option<&str>,
    ) -> Response<HeldBody> {
        let html = prefers_html(headers);
        if let Some(target) =
            redirect.filter(|_| html && *method == Method::POST && is_form_post(headers))
        {
            let sep = if target.contains('?') { '&' } else { '?' };
            let location = format!("{target}{sep}captcha_error={}", self.code);
            if let Ok(location) = HeaderValue::from_str(&location) {
                let mut resp = Response::new(HeldBody::default());
                *resp.status_mut() = StatusCode::SEE_OTHER;
                resp.headers_mut().insert(LOCATION, location);
                resp.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return resp;
            }
        }
        let mut resp = if html {
            html_page(self.status, self.code, &self.reason)
        } else {
            json_error(self.status, self.code, &self.reason)
        };
        if let Some(seconds) = self.retry_after {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        resp
    }
}

fn prefers_html(headers: &HeaderMap) -> bool {
    // Browsers list text/html first; programs ask for JSON or */*.
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|accept| accept.split(',').next())
        .is_some_and(|first| first.trim().to_ascii_lowercase().starts_with("text/html"))
}

fn is_form_post(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.trim().to_ascii_lowercase())
        .is_some_and(|ct| {
            ct.starts_with("application/x-www-form-urlencoded")
                || ct.starts_with("multipart/form-data")
        })
}

fn html_page(status: StatusCode, code: &str, reason: &str) -> Response<HeldBody> {
    let advice = match code {
        "captcha_required" | "captcha_failed" | "captcha_expired" | "captcha_replayed"
        | "captcha_rejected" | "captcha_malformed" => {
            "Please go back, complete the captcha again and resubmit the form."
        }
        "captcha_unavailable" => {
            "Verification is unavailable right now. Please try again in a moment."
        }
        "body_too_large" => "The form you sent is too large.",
        _ => "Please go back and try again.",
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status}</title></head>\n\
         <body style=\"font:16px system-ui,sans-serif;max-width:40rem;margin:3rem auto;color:#223\">\
         <h1>Verification needed</h1><p>{advice}</p><p style=\"color:#667\"><small>{code}: {}</small></p></body></html>\n",
        escape_html(reason)
    );
    let mut resp = Response::new(whole_body(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
