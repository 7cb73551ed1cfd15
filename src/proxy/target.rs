//! The request's target as routing reads it and the upstream will get it:
//! one authority, host and path in normal form, and HTTP/2's cookies joined.

use std::borrow::Cow;

use http::header::{COOKIE, HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Uri};

use crate::normal_path::{NormalPath, PathRules};
use crate::routing::{RequestMethods, normal_host};

/// The request as routing reads it and the upstream will get it: host,
/// path and methods in normal form (see [`crate::routing`]), or why the
/// request is refused.
pub(super) fn canonical_target<B>(
    req: &mut Request<B>,
    rules: PathRules,
) -> Result<Target<'_>, String> {
    let mut authority = request_authority(req).map_err(str::to_owned)?;
    if let Some(a) = &authority {
        let written = a.host();
        let host = normal_host(written).ok_or("invalid host")?;
        if host.len() != written.len() || host.bytes().any(|b| b.is_ascii_uppercase()) {
            let normal = match a.port() {
                Some(port) => format!("{}:{port}", host.to_ascii_lowercase()),
                None => host.to_ascii_lowercase(),
            };
            let normal = Authority::try_from(normal).map_err(|_| "invalid host")?;
            if req.headers().contains_key(HOST) {
                let value = HeaderValue::from_str(normal.as_str()).map_err(|_| "invalid host")?;
                req.headers_mut().insert(HOST, value);
            }
            authority = Some(normal);
        }
    }
    let methods = RequestMethods::new(req.method(), req.headers(), req.uri().query())
        .map_err(|e| e.to_string())?;
    let uri = req.uri();
    let path = NormalPath::new(uri.path(), rules).map_err(|e| e.to_string())?;
    let normalised_uri = match &path.path {
        Cow::Borrowed(_) => None,
        Cow::Owned(normal) => {
            let target = match uri.query() {
                Some(q) => format!("{normal}?{q}"),
                None => normal.clone(),
            };
            let mut parts = uri.clone().into_parts();
            parts.path_and_query =
                Some(PathAndQuery::try_from(target).map_err(|_| "invalid path")?);
            Some(Uri::from_parts(parts).map_err(|_| "invalid path")?)
        }
    };
    Ok(Target {
        authority,
        path,
        methods,
        normalised_uri,
    })
}

/// A request as routing reads it.
pub(super) struct Target<'r> {
    pub(super) authority: Option<Authority>,
    pub(super) path: NormalPath<'r>,
    pub(super) methods: RequestMethods,
    /// The URI to forward, when normalising changed the path.
    pub(super) normalised_uri: Option<Uri>,
}

/// The authority the client addressed: HTTP/2's `:authority`, or the Host
/// header. An absolute-form HTTP/1.1 target, or HTTP/2's `:authority`, must
/// agree with a Host header (RFC 9112 §3.2.2 lets a server prefer the
/// target, RFC 9113 §8.3.1 `:authority`; the app behind reads Host, so a
/// mismatch is refused). More than one Host is refused whatever the version.
fn request_authority<B>(req: &Request<B>) -> Result<Option<Authority>, &'static str> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one host header");
    }
    let from_header = match host {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<Authority>().ok())
                .ok_or("invalid host header")?,
        ),
        None => None,
    };
    let from_uri = req.uri().authority().cloned();
    match (from_uri, from_header) {
        (Some(u), Some(h)) if !u.as_str().eq_ignore_ascii_case(h.as_str()) => {
            Err("request target and host header disagree")
        }
        (Some(u), _) => Ok(Some(u)),
        (None, h) => Ok(h),
    }
}

/// HTTP/2 may split Cookie into one field per crumb; an HTTP/1.1 upstream
/// expects one line, joined with "; " (RFC 9113 §8.2.3).
pub(super) fn join_cookies(headers: &mut http::HeaderMap) {
    let mut cookies = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for crumb in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}
