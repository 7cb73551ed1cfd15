//! Every way gatekeeper refuses a request itself, and how a refusal is put
//! on the wire: JSON for programs, a short page for people, a 303 back to
//! the form for classic browser form posts, `Retry-After` for 429 and 503.
//! Each kind carries its status, stable code and advice; the reason is data
//! only where it varies. Below both the gate and the proxy, which both refuse.

use std::borrow::Cow;

use http::header::{
    ACCEPT, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HOST, HeaderName, HeaderValue, LOCATION,
    REFERER, RETRY_AFTER,
};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::http_common::{HeldBody, X_REQUEST_ID, whole_body};

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

    /// What happened, for a person. A proof's reason names internals (which
    /// fields were missing, GeeTest's error, a field's shape): it stays in
    /// the JSON and the logs. Other reasons (a busy store) are said as they are.
    fn message(&self) -> Cow<'_, str> {
        if self.refuses_the_proof() {
            return Cow::Borrowed("We could not confirm that this request was sent by a person.");
        }
        let reason = self.reason();
        let mut chars = reason.chars();
        let first = chars.next().map(|c| c.to_uppercase().to_string());
        Cow::Owned(format!("{}{}.", first.unwrap_or_default(), chars.as_str()))
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
    /// A page is rendered from `template` (the operator's, checked at load
    /// to hold only [`PLACEHOLDERS`]) or the default.
    pub fn to_response(
        &self,
        audience: &Audience,
        redirect: Option<&str>,
        template: Option<&str>,
    ) -> Response<HeldBody> {
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
        let page = fill(template.unwrap_or(DEFAULT_PAGE), |name| {
            Some(match name {
                "lang" => Cow::Borrowed("en"),
                "status" => Cow::Owned(self.status().as_u16().to_string()),
                "code" => Cow::Borrowed(self.code()),
                "heading" => Cow::Borrowed(self.heading()),
                "message" => self.message(),
                "advice" => Cow::Borrowed(self.advice()),
                "back_url" => Cow::Borrowed(audience.back.as_deref().unwrap_or("/")),
                "request_id" => Cow::Borrowed(audience.request_id.as_deref().unwrap_or("-")),
                _ => return None,
            })
        });
        self.with_retry_after(answer(self.status(), "text/html; charset=utf-8", page))
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audience {
    /// Browsers list text/html first; programs ask for JSON or */*.
    browser: bool,
    /// A classic form post (urlencoded or multipart POST).
    form_post: bool,
    /// The page's link back: the path of a `Referer` on this site.
    back: Option<String>,
    request_id: Option<String>,
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
        // Typed names: a `&str` name is parsed again on every lookup.
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            browser,
            form_post,
            back: text(&REFERER).and_then(|referer| back_path(referer, text(&HOST))),
            // Set by the proxy on every request before anything refuses it.
            request_id: text(&X_REQUEST_ID).map(str::to_owned),
        }
    }
}

/// The path (and query) of a `Referer` on this site: its authority is the
/// `Host` (HTTP/2 has none in headers; the path is then taken as is, since
/// the link stays on this site either way). Only a path is returned, never
/// `//host` or `/\host`, which browsers read as another site.
fn back_path(referer: &str, host: Option<&str>) -> Option<String> {
    let uri = referer.parse::<http::Uri>().ok()?;
    let same_site = match (uri.authority(), host) {
        (Some(from), Some(host)) => from.as_str().eq_ignore_ascii_case(host),
        (Some(_), None) => true,
        (None, _) => false,
    };
    let path = uri.path_and_query()?.as_str();
    (same_site && path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/\\"))
        .then(|| path.to_owned())
}

/// The placeholders a refusal page template may hold.
pub const PLACEHOLDERS: &[&str] = &[
    "lang",
    "status",
    "code",
    "heading",
    "message",
    "advice",
    "back_url",
    "request_id",
];

/// The default refusal page, itself a template.
const DEFAULT_PAGE: &str = include_str!("refusal.html");

/// `template` with each `{{name}}` that `value` knows replaced by its value,
/// HTML-escaped, in one pass (a value is never searched for placeholders);
/// anything else is left as written.
fn fill<'v>(template: &str, value: impl Fn(&str) -> Option<Cow<'v, str>>) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let found = after
            .find("}}")
            .and_then(|end| Some((end, value(&after[..end])?)));
        match found {
            Some((end, v)) => {
                out.push_str(&escape_html(&v));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `{{name}}`s in `template` that `known` does not list, in order.
pub fn unknown_placeholders<'t>(template: &'t str, known: &[&str]) -> Vec<&'t str> {
    let mut unknown = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = &after[..end];
        if !known.contains(&name) && !unknown.contains(&name) {
            unknown.push(name);
        }
        rest = &after[end + 2..];
    }
    unknown
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
        .to_response(&Audience::default(), Some("/form"), None);
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
        let resp = Refusal::CaptchaFailed("too fast".into()).to_response(
            &browser_form_post(),
            Some("/form?step=2"),
            None,
        );
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            resp.headers()[LOCATION],
            "/form?step=2&captcha_error=captcha_failed"
        );
    }

    #[test]
    fn a_browser_without_redirect_gets_an_escaped_page_with_retry_after() {
        let resp =
            Refusal::Throttled { retry_after: 7 }.to_response(&browser_form_post(), None, None);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[RETRY_AFTER], "7");
        let page = String::from_utf8(body_bytes(resp).to_vec()).expect("a UTF-8 page");
        assert!(
            page.contains("<h1>Please try again in a moment</h1>"),
            "{page}"
        );
        assert!(
            page.contains("<p>Too many refused captchas from this address, retry later.</p>"),
            "{page}"
        );
        assert!(
            page.contains("<small>Reference: captcha_throttled (429), request -</small>"),
            "{page}"
        );
        let resp = Refusal::BadRequest("<b>".into()).to_response(&browser_form_post(), None, None);
        assert!(String::from_utf8_lossy(&body_bytes(resp)).contains("<p>&lt;b&gt;.</p>"));
        // The reason names internals: JSON and logs carry it, the page does not.
        let resp = Refusal::CaptchaRequired {
            missing: vec!["lot_number", "pass_token"],
        }
        .to_response(&browser_form_post(), None, None);
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

    #[test]
    fn the_link_back_is_a_path_on_this_site() {
        let back = |referer, host| back_path(referer, host);
        let site = Some("shop.example:8443");
        assert_eq!(
            back("https://shop.example:8443/cart?x=1", site).as_deref(),
            Some("/cart?x=1")
        );
        assert_eq!(back("https://other.example/cart", site), None);
        assert_eq!(back("https://shop.example:8443//evil.example/", site), None);
        assert_eq!(back("/relative", site), None);
        // HTTP/2: no Host header; the path is still only a path here.
        assert_eq!(back("https://a.example/x", None).as_deref(), Some("/x"));
    }

    #[test]
    fn a_template_is_filled_in_one_pass_and_escaped() {
        let value = |name: &str| (name == "code").then_some(Cow::Borrowed("{{code}}<i>"));
        assert_eq!(
            fill("a{{code}}b{{other}}{{", value),
            "a{{code}}&lt;i&gt;b{{other}}{{"
        );
        assert_eq!(
            unknown_placeholders("{{code}} {{nope}} {{ x }} {{nope}}", PLACEHOLDERS),
            ["nope", " x "]
        );
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
