//! Header rules applied on the way through, one concern per file.

pub mod forwarding;
pub mod framing;
pub mod hop;

/// Drops request headers whose names contain `_`, as nginx does by default
/// (`underscores_in_headers off`). CGI-style servers (PHP, WSGI environs)
/// read `X_Gatekeeper_Captcha` as `X-Gatekeeper-Captcha`: a client could
/// otherwise state gatekeeper's own headers, or a method override, under a
/// spelling gatekeeper does not read.
pub fn drop_underscored(headers: &mut http::HeaderMap) {
    // Names are short: a byte loop beats a substring search.
    let underscored = |name: &&http::HeaderName| name.as_str().bytes().any(|b| b == b'_');
    if !headers.keys().any(|name| underscored(&name)) {
        return;
    }
    let underscored: Vec<http::HeaderName> = headers.keys().filter(underscored).cloned().collect();
    for name in underscored {
        headers.remove(name);
    }
}
