//! The canonical request path: what is routed is what is forwarded.
//!
//! An application picks its handler from its own reading of the path, and
//! frameworks read it differently: nginx and Flask decode `%6c` and merge
//! `//`, nginx resolves `/x/../login`, Express ignores case and a trailing
//! slash, servlet containers drop `;jsessionid=…`. A gate that matches the
//! raw path can be walked around by any of them. So, before routing, the
//! path is put in one normal form (RFC 3986 §6.2.2: unreserved characters
//! decoded, escapes in upper case; §5.2.4: dot segments removed; repeated
//! slashes merged, as Envoy's `normalize_path` + `merge_slashes`), and that
//! form is what the upstream receives. What cannot be normalised without
//! guessing (an encoded `/` or `\`, `%00`, invalid or overlong UTF-8 in the
//! escapes, a climb above the root) is refused.
//!
//! Matching then errs toward gating: [`NormalPath::match_key`] also ignores
//! case, a trailing slash and `;parameters`, so a lenient route catches every
//! spelling some framework would send to the same handler.

use std::borrow::Cow;

/// How the path rules are set in `[paths]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// `%2F` / `%5C` in a path.
    pub encoded_slash: EncodedSlash,
    /// `//` becomes `/` before routing and forwarding.
    pub merge_slashes: bool,
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            encoded_slash: EncodedSlash::Reject,
            merge_slashes: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodedSlash {
    /// 400: the app might decode it into a path separator (Starlette does).
    Reject,
    /// Forwarded as sent (for apps that put encoded ids in paths); routed as
    /// if it were a `/`, so a route still catches it.
    Keep,
}

/// Why a path was refused (the reason the client is told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with \"/\"")]
    NotAbsolute,
    #[error("a percent-escape in the path is not two hex digits")]
    BadEscape,
    #[error("an encoded \"/\" or \"\\\" in the path is not accepted")]
    EncodedSlash,
    #[error("a \"\\\" in the path is not accepted")]
    Backslash,
    #[error("a NUL or control character in the path is not accepted")]
    Control,
    #[error("the path's escapes are not valid UTF-8")]
    InvalidUtf8,
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("a dot segment with ;parameters in the path is not accepted")]
    DotWithParameters,
}

/// A request path in normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath<'a> {
    /// What is routed by strict routes and forwarded upstream.
    pub path: Cow<'a, str>,
    /// Whether `%2F`/`%5C` were kept in `path` (then `match_key` decodes them).
    kept_slash: bool,
    /// Whether repeated slashes were kept in `path`.
    kept_repeats: bool,
}

/// `unreserved` of RFC 3986 §2.3: decoding these never changes a URI's meaning.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Is the path already in normal form? (The common case, checked without
/// allocating: no escape, no backslash, no control byte, no empty or dot
/// segment.)
fn already_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut prev = b'/';
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b if b < 0x20 || b == 0x7f => return false,
            b'/' if prev == b'/' && i > 0 => return false,
            b'.' if prev == b'/' => {
                // "." or ".." (or with ;params) as a whole segment.
                let rest = &bytes[i..];
                let seg_end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                let seg = &rest[..seg_end];
                let bare = seg.split(|&c| c == b';').next().unwrap_or(seg);
                if bare == b"." || bare == b".." {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

impl<'a> NormalPath<'a> {
    /// Puts `path` (the request target's path, without query) in normal form.
    pub fn new(path: &'a str, rules: PathRules) -> Result<Self, PathError> {
        if already_normal(path) {
            return Ok(Self {
                path: Cow::Borrowed(path),
                kept_slash: false,
                kept_repeats: false,
            });
        }
        if !path.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        let mut kept_slash = false;
        let mut kept_repeats = false;
        let raw_segments: Vec<&str> = path[1..].split('/').collect();
        let last = raw_segments.len() - 1;
        let mut out: Vec<String> = Vec::with_capacity(raw_segments.len());
        let mut trailing_slash = false;
        for (i, raw) in raw_segments.iter().enumerate() {
            let seg = decode_segment(raw, rules, &mut kept_slash)?;
            let bare = seg.split(';').next().unwrap_or("");
            if (bare == "." || bare == "..") && bare != seg {
                // Tomcat reads `..;x` as `..`; nginx does not. Refuse the doubt.
                return Err(PathError::DotWithParameters);
            }
            match seg.as_str() {
                "." => trailing_slash = i == last,
                ".." => {
                    out.pop().ok_or(PathError::AboveRoot)?;
                    trailing_slash = i == last;
                }
                "" if i == last => trailing_slash = true,
                "" if rules.merge_slashes => {}
                _ => {
                    if seg.is_empty() {
                        kept_repeats = true;
                    }
                    out.push(seg);
                }
            }
        }
        let mut normal = String::with_capacity(path.len());
        for seg in &out {
            normal.push('/');
            normal.push_str(seg);
        }
        if trailing_slash || out.is_empty() {
            normal.push('/');
        }
        Ok(Self {
            path: Cow::Owned(normal),
            kept_slash,
            kept_repeats,
        })
    }

    /// The form lenient routes match: ASCII lower case, `;parameters`
    /// dropped from each segment, no trailing slash, and any `%2F`/`%5C` or
    /// repeated slash kept in the forwarded path read as one separator.
    pub fn match_key(&self) -> Cow<'_, str> {
        let path: &str = &self.path;
        let simple = !self.kept_slash
            && !self.kept_repeats
            && !path.bytes().any(|b| b == b';' || b.is_ascii_uppercase());
        if simple {
            let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty());
            return Cow::Borrowed(trimmed.unwrap_or(path));
        }
        let lowered = path.to_ascii_lowercase();
        let split_more = if self.kept_slash {
            lowered.replace("%2f", "/").replace("%5c", "/")
        } else {
            lowered
        };
        let mut out: Vec<&str> = Vec::new();
        for seg in split_more.split('/') {
            match seg.split(';').next().unwrap_or("") {
                "" | "." => {}
                // A climb above the root stays at the root: for matching only.
                ".." => {
                    out.pop();
                }
                bare => out.push(bare),
            }
        }
        if out.is_empty() {
            return Cow::Borrowed("/");
        }
        let mut key = String::with_capacity(split_more.len());
        for seg in out {
            key.push('/');
            key.push_str(seg);
        }
        Cow::Owned(key)
    }
}

/// Decodes the escapes of one segment that RFC 3986 lets a normaliser
/// decode, upper-cases the rest, and refuses what could be read two ways.
fn decode_segment(raw: &str, rules: PathRules, kept_slash: &mut bool) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    // Every byte the segment stands for, escapes decoded, to check UTF-8.
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                match v {
                    0 => return Err(PathError::Control),
                    b'/' | b'\\' => match rules.encoded_slash {
                        EncodedSlash::Reject => return Err(PathError::EncodedSlash),
                        EncodedSlash::Keep => {
                            *kept_slash = true;
                            out.push_str(if v == b'/' { "%2F" } else { "%5C" });
                        }
                    },
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push('%');
                        out.push(char::from(HEX[usize::from(v >> 4)]));
                        out.push(char::from(HEX[usize::from(v & 0xf)]));
                    }
                }
                decoded.push(v);
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            b if b < 0x20 || b == 0x7f => return Err(PathError::Control),
            _ => {}
        }
        decoded.push(b);
        i += 1;
        // Non-escape bytes are copied whole characters at a time below.
        let start = i - 1;
        let mut end = i;
        while end < bytes.len()
            && !matches!(bytes[end], b'%' | b'\\')
            && bytes[end] >= 0x20
            && bytes[end] != 0x7f
        {
            decoded.push(bytes[end]);
            end += 1;
        }
        out.push_str(&raw[start..end]);
        i = end;
    }
    // Decoded bytes that are not UTF-8 (overlong forms included, which
    // `from_utf8` refuses) would be read differently by different decoders.
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    if decoded.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(PathError::Control);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(path: &str) -> Result<String, PathError> {
        NormalPath::new(path, PathRules::default()).map(|p| p.path.into_owned())
    }

    fn key(path: &str) -> String {
        NormalPath::new(path, PathRules::default())
            .expect("normalises")
            .match_key()
            .into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/login",
            "/a/b.c/d",
            "/api/",
            "/x;y=1",
            "/.well-known/x",
        ] {
            let n = NormalPath::new(p, PathRules::default()).expect(p);
            assert!(matches!(n.path, Cow::Borrowed(_)), "{p}");
            assert_eq!(n.path, p);
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(normal("/%6cogin").as_deref(), Ok("/login"));
        assert_eq!(normal("/%6Cogin").as_deref(), Ok("/login"));
        assert_eq!(normal("/lo%67in").as_deref(), Ok("/login"));
        assert_eq!(normal("/a%20b%3f").as_deref(), Ok("/a%20b%3F"));
        assert_eq!(normal("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
    }

    #[test]
    fn dot_segments_are_removed_and_repeated_slashes_merged() {
        assert_eq!(normal("//login").as_deref(), Ok("/login"));
        assert_eq!(normal("///login").as_deref(), Ok("/login"));
        assert_eq!(normal("/x/../login").as_deref(), Ok("/login"));
        assert_eq!(normal("/./login").as_deref(), Ok("/login"));
        assert_eq!(normal("/login/.").as_deref(), Ok("/login/"));
        assert_eq!(normal("/x/%2e%2e/login").as_deref(), Ok("/login"));
        assert_eq!(normal("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(normal("/login//").as_deref(), Ok("/login/"));
        assert_eq!(normal("/api/./x").as_deref(), Ok("/api/x"));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(normal("/api%2fx"), Err(PathError::EncodedSlash));
        assert_eq!(normal("/api%2Fx"), Err(PathError::EncodedSlash));
        assert_eq!(normal("/x/..%5clogin"), Err(PathError::EncodedSlash));
        assert_eq!(normal("/login%00"), Err(PathError::Control));
        assert_eq!(normal("/login%09"), Err(PathError::Control));
        assert_eq!(normal("/%c0%aflogin"), Err(PathError::InvalidUtf8));
        assert_eq!(normal("/lo%c0%adgin"), Err(PathError::InvalidUtf8));
        assert_eq!(normal("/%ff"), Err(PathError::InvalidUtf8));
        assert_eq!(normal("/%2e%2e/login"), Err(PathError::AboveRoot));
        assert_eq!(normal("/../x"), Err(PathError::AboveRoot));
        assert_eq!(normal("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normal("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normal("/x/..;/login"), Err(PathError::DotWithParameters));
        assert_eq!(
            normal("/login/..;/login"),
            Err(PathError::DotWithParameters)
        );
        assert_eq!(normal("\\login"), Err(PathError::NotAbsolute));
        assert_eq!(normal("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normal("*"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn match_key_ignores_case_trailing_slash_and_parameters() {
        assert_eq!(key("/LOGIN"), "/login");
        assert_eq!(key("/login/"), "/login");
        assert_eq!(key("/login;jsessionid=1"), "/login");
        assert_eq!(key("/login;"), "/login");
        assert_eq!(key("/API;x/V1/"), "/api/v1");
        assert_eq!(key("/"), "/");
        assert_eq!(key("/a/b"), "/a/b");
    }

    #[test]
    fn kept_raw_forms_are_still_matched_as_separators() {
        let rules = PathRules {
            encoded_slash: EncodedSlash::Keep,
            merge_slashes: false,
        };
        let n = NormalPath::new("/api%2fx", rules).expect("kept");
        assert_eq!(n.path, "/api%2Fx");
        assert_eq!(n.match_key(), "/api/x");
        let n = NormalPath::new("//login", rules).expect("kept");
        assert_eq!(n.path, "//login");
        assert_eq!(n.match_key(), "/login");
        let n = NormalPath::new("/x/..%2flogin", rules).expect("kept");
        assert_eq!(n.match_key(), "/login");
    }
}
