//! Every way gatekeeper refuses a request itself, and how a refusal is put
//! on the wire: JSON for programs, a short page for people, a 303 back to
//! the form for classic browser form posts, `Retry-After` for 429 and 503.
//! Each kind carries its status, stable code and advice; the reason is data
//! only where it varies. Below both the gate and the proxy, which both refuse.

use std::borrow::Cow;

use http::header::{
    ACCEPT, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER,
};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::http_common::{HeldBody, whole_body};

/// A refusal. Its reason is safe to show: it never holds a field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request's framing or target is not one gatekeeper forwards.
    BadRequest(Cow<'static, str>),
    /// The client's body broke off or could not be decoded.
    BodyUnreadable,
    BodyTimeout,
    BodyTooLarge {
        max_body: u64,
    },
    /// A body the application could read differently from gatekeeper.
    BodyAmbiguous(String),
    /// Bodies being received have used up the process-wide budget.
    BodyBudgetExhausted,
    /// A content type the captcha fields cannot be read from.
    UnsupportedMediaType(String),
    /// Too many verifications in flight from one address.
    TooManyGated,
    /// Too many refused captchas from one address; retry after this many seconds.
    Throttled {
        retry_after: u64,
    },
    CaptchaRequired {
        missing: Vec<&'static str>,
    },
    CaptchaMalformed(Cow<'static, str>),
    CaptchaExpired(&'static str),
    /// The lot_number was seen before; the reason says in which state.
    CaptchaReplayed(&'static str),
    /// GeeTest judged the proof and failed it, for this reason.
    CaptchaFailed(String),
    /// GeeTest refused the validate request as malformed.
    CaptchaRejected {
        code: String,
        msg: String,
    },
    CaptchaUnavailable(&'static str),
    UpstreamTimeout,
    UpstreamUnavailable,
    /// The upstream switched protocols without a websocket handshake.
    UpstreamBadUpgrade(&'static str),
}

/// The model is rpxy's `From<HttpError> for StatusCode`: the kind decides.
impl From<&Refusal> for StatusCode {
    fn from(refusal: &Refusal) -> Self {
        use Refusal::*;
        match refusal {
            BadRequest(_) | BodyUnreadable | BodyAmbiguous(_) | CaptchaMalformed(_) => {
                StatusCode::BAD_REQUEST
            }
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TooManyGated | Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            CaptchaRequired { .. }
            | CaptchaExpired(_)
            | CaptchaReplayed(_)
            | CaptchaFailed(_)
            | CaptchaRejected { .. } => StatusCode::FORBIDDEN,
            BodyBudgetExhausted | CaptchaUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamUnavailable | UpstreamBadUpgrade(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        self.into()
    }

    /// The stable machine-readable code: the JSON `error`, the redirect's
    /// `captcha_error`, the decision's outcome in logs and metrics.
    pub fn code(&self) -> &'static str {
        use Refusal::*;
        match self {
            BadRequest(_) | BodyUnreadable => "bad_request",
            BodyTimeout => "body_timeout",
            BodyTooLarge { .. } => "body_too_large",
            BodyAmbiguous(_) => "body_ambiguous",
            BodyBudgetExhausted => "body_budget_exhausted",
            UnsupportedMediaType(_) => "unsupported_media_type",
            TooManyGated => "too_many_gated",
            Throttled { .. } => "captcha_throttled",
            CaptchaRequired { .. } => "captcha_required",
            CaptchaMalformed(_) => "captcha_malformed",
            CaptchaExpired(_) => "captcha_expired",
            CaptchaReplayed(_) => "captcha_replayed",
            CaptchaFailed(_) => "captcha_failed",
            CaptchaRejected { .. } => "captcha_rejected",
            CaptchaUnavailable(_) => "captcha_unavailable",
            UpstreamTimeout => "upstream_timeout",
            UpstreamUnavailable => "upstream_unavailable",
            UpstreamBadUpgrade(_) => "upstream_bad_upgrade",
        }
    }

    pub fn reason(&self) -> Cow<'_, str> {
        use Refusal::*;
        match self {
            BadRequest(why) | CaptchaMalformed(why) => Cow::Borrowed(why),
            BodyAmbiguous(why) | CaptchaFailed(why) => Cow::Borrowed(why),
            CaptchaExpired(why) | CaptchaReplayed(why) | CaptchaUnavailable(why) => {
                Cow::Borrowed(why)
            }
            UpstreamBadUpgrade(why) => Cow::Borrowed(why),
            BodyUnreadable => Cow::Borrowed("the request body could not be read"),
            BodyTimeout => Cow::Borrowed("the request body was not received in time"),
            BodyTooLarge { max_body } => {
                Cow::Owned(format!("the request body is larger than {max_body} bytes"))
            }
            BodyBudgetExhausted => {
                Cow::Borrowed("too many request bodies are being received, please retry shortly")
            }
            UnsupportedMediaType(ct) => Cow::Owned(format!("cannot read captcha fields from {ct}")),
            TooManyGated => {
                Cow::Borrowed("too many verifications in flight from this address, retry shortly")
            }
            Throttled { .. } => {
                Cow::Borrowed("too many refused captchas from this address, retry later")
            }
            CaptchaRequired { missing } => {
                Cow::Owned(format!("missing captcha fields: {}", missing.join(", ")))
            }
            CaptchaRejected { code, msg } => Cow::Owned(format!("GeeTest error {code}: {msg}")),
            UpstreamTimeout => Cow::Borrowed("the application did not answer in time"),
            UpstreamUnavailable => Cow::Borrowed("the application cannot be reached"),
        }
    }

    /// Whether the proof (missing, wrong, old, used or malformed) is refused.
    fn refuses_the_proof(&self) -> bool {
        use Refusal::*;
        matches!(
            self,
            CaptchaRequired { .. }
                | CaptchaFailed(_)
                | CaptchaExpired(_)
                | CaptchaReplayed(_)
                | CaptchaRejected { .. }
                | CaptchaMalformed(_)
        )
    }

    /// The refusal page's title, in a person's words.
    fn heading(&self) -> &'static str {
        let status = self.status();
        if self.refuses_the_proof() {
            "Verification needed"
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            "Please try again in a moment"
        } else {
            "This request could not be handled"
        }
    }

    /// What the refusal page tells a person to do.
    fn advice(&self) -> &'static str {
        use Refusal::*;
        match self {
            _ if self.refuses_the_proof() => {
                "Please go back, complete the captcha again and resubmit the form."
            }
            CaptchaUnavailable(_) => {
                "Verification is unavailable right now. Please try again in a moment."
            }
            BodyTooLarge { .. } => "The form you sent is too large.",
            _ => "Please go back and try again.",
        }
    }

    /// Seconds for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Throttled { retry_after } => Some(*retry_after),
            Self::TooManyGated => Some(1),
            _ => (self.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(5),
        }
    }

    /// Whether the client is to blame (a refused proof, for the throttle).
    pub fn is_client_fault(&self) -> bool {
        let status = self.status();
        status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS
    }

    /// `{"error": code, "reason": reason}`, never cached.
    pub fn to_json(&self) -> Response<HeldBody> {
        let body = serde_json::json!({ "error": self.code(), "reason": self.reason() }).to_string();
        let resp = answer(self.status(), "application/json", body);
        self.with_retry_after(resp)
    }

    /// The JSON answer, after which the connection is closed: the request's
    /// framing or body went wrong, so nothing after it can be trusted.
    pub fn to_closing_json(&self) -> Response<HeldBody> {
        let mut resp = self.to_json();
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        resp
    }

    /// The answer for the client `audience` describes: with `redirect`, a
    /// browser's form post goes back to the form; else a page or JSON.
    pub fn to_response(&self, audience: Audience, redirect: Option<&str>) -> Response<HeldBody> {
        if let Some(target) = redirect.filter(|_| audience.browser && audience.form_post) {
            let sep = if target.contains('?') { '&' } else { '?' };
            let location = format!("{target}{sep}captcha_error={}", self.code());
            if let Ok(location) = HeaderValue::from_str(&location) {
                let mut resp = Response::new(HeldBody::default());
                *resp.status_mut() = StatusCode::SEE_OTHER;
                resp.headers_mut().insert(LOCATION, location);
                resp.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return resp;
            }
        }
        if !audience.browser {
            return self.to_json();
        }
        let status = self.status();
        // For a person: what to do, in words; the code in small print, as a
        // reference. A proof's reason names internals (which fields were
        // missing, GeeTest's error, a field's shape): it stays in the JSON
        // and the logs. Other reasons (a busy store) are said as they are.
        use Refusal::*;
        let detail = match self {
            CaptchaRequired { .. } | CaptchaRejected { .. } | CaptchaMalformed(_) => String::new(),
            _ => format!(": {}", escape_html(&self.reason())),
        };
        let body = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
             <body style=\"font:16px system-ui,sans-serif;max-width:40rem;margin:3rem auto;color:#223\">\
             <h1>{}</h1><p>{}</p><p style=\"color:#667\"><small>Reference: {}{detail}</small></p></body></html>\n",
            self.heading(),
            self.heading(),
            self.advice(),
            self.code(),
        );
        self.with_retry_after(answer(status, "text/html; charset=utf-8", body))
    }

    fn with_retry_after(&self, mut resp: Response<HeldBody>) -> Response<HeldBody> {
        if let Some(seconds) = self.retry_after() {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        resp
    }
}

/// Who sent the refused request, as far as its answer's form goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Audience {
    /// Browsers list text/html first; programs ask for JSON or */*.
    browser: bool,
    /// A classic form post (urlencoded or multipart POST).
    form_post: bool,
}

impl Audience {
    pub fn of(method: &Method, headers: &HeaderMap) -> Self {
        let browser = headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .and_then(|accept| accept.split(',').next())
            .is_some_and(|first| first.trim().to_ascii_lowercase().starts_with("text/html"));
        let form_post = *method == Method::POST
            && headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|ct| ct.trim().to_ascii_lowercase())
                .is_some_and(|ct| {
                    ct.starts_with("application/x-www-form-urlencoded")
                        || ct.starts_with("multipart/form-data")
                });
        Self { browser, form_post }
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<HeldBody> {
    let mut resp = Response::new(whole_body(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn escape_html(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn browser_form_post() -> Audience {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("text/html,*/*;q=0.8"));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        Audience::of(&Method::POST, &headers)
    }

    #[test]
    fn a_program_gets_json_with_code_and_reason() {
        let resp = Refusal::CaptchaRequired {
            missing: vec!["pass_token", "gen_time"],
        }
        .to_response(Audience::default(), Some("/form"));
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
        let body: serde_json::Value =
            serde_json::from_slice(&body_bytes(resp)).expect("a JSON body");
        assert_eq!(body["error"], "captcha_required");
        assert_eq!(
            body["reason"],
            "missing captcha fields: pass_token, gen_time"
        );
    }

    #[test]
    fn a_browser_form_post_goes_back_to_the_form_with_the_code() {
        let resp = Refusal::CaptchaFailed("too fast".into())
            .to_response(browser_form_post(), Some("/form?step=2"));
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            resp.headers()[LOCATION],
            "/form?step=2&captcha_error=captcha_failed"
        );
    }

    #[test]
    fn a_browser_without_redirect_gets_an_escaped_page_with_retry_after() {
        let resp = Refusal::Throttled { retry_after: 7 }.to_response(browser_form_post(), None);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[RETRY_AFTER], "7");
        let page = String::from_utf8(body_bytes(resp).to_vec()).expect("a UTF-8 page");
        assert!(
            page.contains("<h1>Please try again in a moment</h1>"),
            "{page}"
        );
        assert!(
            page.contains("<small>Reference: captcha_throttled: too many refused"),
            "{page}"
        );
        let resp = Refusal::CaptchaFailed("<b>".into()).to_response(browser_form_post(), None);
        assert!(String::from_utf8_lossy(&body_bytes(resp)).contains("&lt;b&gt;"));
        // The reason names internals: JSON and logs carry it, the page does not.
        let resp = Refusal::CaptchaRequired {
            missing: vec!["lot_number", "pass_token"],
        }
        .to_response(browser_form_post(), None);
        let page = String::from_utf8_lossy(&body_bytes(resp)).into_owned();
        assert!(page.contains("<h1>Verification needed</h1>"), "{page}");
        assert!(
            !page.contains("lot_number") && !page.contains("missing"),
            "{page}"
        );
    }

    #[test]
    fn a_closing_refusal_closes_and_only_503s_and_429s_say_when_to_retry() {
        let resp = Refusal::BadRequest("invalid host".into()).to_closing_json();
        assert_eq!(resp.headers()[CONNECTION], "close");
        assert!(!resp.headers().contains_key(RETRY_AFTER));
        assert_eq!(Refusal::BodyBudgetExhausted.retry_after(), Some(5));
        assert_eq!(Refusal::TooManyGated.retry_after(), Some(1));
        assert_eq!(Refusal::UpstreamTimeout.retry_after(), None);
    }

    /// A held body is one frame, already in memory.
    fn body_bytes(resp: Response<HeldBody>) -> bytes::Bytes {
        use http_body::Body;
        let mut body = std::pin::pin!(resp.into_body());
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match body.as_mut().poll_frame(&mut cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
            _ => bytes::Bytes::new(),
        }
    }
}
