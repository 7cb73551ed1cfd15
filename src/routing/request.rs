//! The request's method and host as routing reads them.
//!
//! Apps run a handler for more than the request line says: Werkzeug upper-cases
//! `post`, Flask and Starlette run a GET handler for HEAD, and method-override
//! middleware (Flask's documented one, Express's `method-override`, Rails,
//! Laravel, Symfony) runs the handler a header or `_method` names. Every
//! method the app could act on counts for matching: the request is gated if
//! any is. A POST with a form body may carry `_method` in the body, which is
//! not read before routing: such a POST counts as every method.

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The headers method-override middleware reads.
static OVERRIDE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// The methods of RFC 9110 §9 and PATCH (RFC 5789), as they must be spelled.
const STANDARD: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// Methods are case-sensitive (RFC 9110 §9.1), but some apps upper-case
    /// them; nginx refuses such a request line too.
    #[error("the method must be spelled in upper case")]
    NotUpperCase,
}

/// Every method a request could run a handler for.
#[derive(Debug, Clone)]
pub struct RequestMethods {
    /// The request line's method.
    method: Method,
    /// What overrides name (HEAD bringing GET); empty, so unallocated, for
    /// almost every request.
    overrides: Vec<Method>,
    /// A form POST, whose body may name any method in `_method`.
    any: bool,
}

impl RequestMethods {
    pub fn new(
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Self, MethodError> {
        let text = method.as_str();
        if !text.bytes().all(|b| b.is_ascii_uppercase())
            && STANDARD
                .iter()
                .any(|m| m.eq_ignore_ascii_case(text) && *m != text)
        {
            return Err(MethodError::NotUpperCase);
        }
        let mut overrides = Vec::new();
        let mut offer = |value: &str| {
            // Middleware upper-cases what it reads.
            if let Ok(m) = Method::from_bytes(value.trim().to_ascii_uppercase().as_bytes()) {
                if m == Method::HEAD {
                    overrides.push(Method::GET);
                }
                overrides.push(m);
            }
        };
        // A scan of the names costs less than a hashed lookup of each
        // override header, and almost no request has one.
        if headers.keys().any(|name| OVERRIDE_HEADERS.contains(name)) {
            for name in &OVERRIDE_HEADERS {
                for value in headers.get_all(name) {
                    offer(value.to_str().unwrap_or(""));
                }
            }
        }
        // `_method` in the query (Rails, Laravel, Express's method-override),
        // looked for before any decoding: almost no query has it.
        if let Some(query) =
            query.filter(|q| q.contains("_method") || q.contains("%5F") || q.contains("%5f"))
        {
            for (name, value) in form_urlencoded::parse(query.as_bytes()) {
                if name == "_method" {
                    offer(&value);
                }
            }
        }
        let any = method == Method::POST && headers.get(CONTENT_TYPE).is_some_and(is_form);
        Ok(Self {
            method: method.clone(),
            overrides,
            any,
        })
    }

    /// Whether `f` holds for a method the request could run a handler for.
    pub fn any(&self, mut f: impl FnMut(&Method) -> bool) -> bool {
        self.any
            || f(&self.method)
            || (self.method == Method::HEAD && f(&Method::GET))
            || self.overrides.iter().any(f)
    }
}

/// The body types `_method` override middleware reads.
fn is_form(content_type: &HeaderValue) -> bool {
    let essence = content_type
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    let essence = essence.trim_ascii();
    essence.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
        || essence.eq_ignore_ascii_case(b"multipart/form-data")
}

/// The host routes compare: without a trailing dot (`www.example.com.` is
/// the same name in DNS, and nginx serves it the same vhost). `None` for a
/// host that is not a name at all (`..`, or empty once the dot is gone).
pub fn normal_host(host: &str) -> Option<&str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty() && !host.ends_with('.')).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn methods(
        m: &str,
        headers: &[(&'static str, &'static str)],
        query: Option<&str>,
    ) -> Vec<String> {
        let mut h = HeaderMap::new();
        for (n, v) in headers {
            h.append(*n, HeaderValue::from_static(v));
        }
        let m = Method::from_bytes(m.as_bytes()).expect("method");
        let methods = RequestMethods::new(&m, &h, query).expect("accepted");
        let mut names: Vec<String> = Vec::new();
        for candidate in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "PROPFIND", "purge",
        ] {
            let candidate = Method::from_bytes(candidate.as_bytes()).expect("method");
            if methods.any(|m| *m == candidate) {
                names.push(candidate.to_string());
            }
        }
        names
    }

    #[test]
    fn lower_and_mixed_case_standard_methods_are_refused() {
        for m in ["post", "Post", "pOST", "get", "Delete", "patch"] {
            let m = Method::from_bytes(m.as_bytes()).expect("method");
            assert_eq!(
                RequestMethods::new(&m, &HeaderMap::new(), None).map(|_| ()),
                Err(MethodError::NotUpperCase)
            );
        }
        // Extension methods are case-sensitive tokens of their own.
        assert_eq!(methods("PROPFIND", &[], None), ["PROPFIND"]);
        assert_eq!(methods("purge", &[], None), ["purge"]);
    }

    #[test]
    fn head_counts_as_get() {
        assert_eq!(methods("HEAD", &[], None), ["GET", "HEAD"]);
    }

    #[test]
    fn override_headers_and_query_count_as_the_method() {
        assert_eq!(
            methods("GET", &[("x-http-method-override", "post")], None),
            ["GET", "POST"]
        );
        assert_eq!(
            methods("GET", &[("x-http-method", "PUT")], None),
            ["GET", "PUT"]
        );
        assert_eq!(
            methods("GET", &[("x-method-override", " DELETE ")], None),
            ["GET", "DELETE"]
        );
        assert_eq!(
            methods("GET", &[], Some("a=1&_method=post")),
            ["GET", "POST"]
        );
        assert_eq!(
            methods("GET", &[], Some("%5Fmethod=PATCH")),
            ["GET", "PATCH"]
        );
        assert_eq!(methods("GET", &[], Some("x_method=POST")), ["GET"]);
    }

    #[test]
    fn a_form_post_counts_as_every_method() {
        let mut h = HeaderMap::new();
        let any = |m: &Method, h: &HeaderMap| {
            RequestMethods::new(m, h, None)
                .expect("accepted")
                .any(|m| *m == Method::GET)
        };
        assert!(!any(&Method::POST, &h));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!any(&Method::POST, &h));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
        );
        assert!(any(&Method::POST, &h));
        assert!(!any(&Method::PUT, &h));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=x"),
        );
        assert!(any(&Method::POST, &h));
    }

    #[test]
    fn hosts_lose_one_trailing_dot() {
        assert_eq!(normal_host("www.example.com."), Some("www.example.com"));
        assert_eq!(normal_host("www.example.com"), Some("www.example.com"));
        assert_eq!(normal_host("www.example.com.."), None);
        assert_eq!(normal_host("."), None);
    }
}
