//! Reading the GeeTest fields from a request and removing them.
//!
//! The five fields may arrive in the query string (GeeTest's own web demos
//! submit by GET) and in a form, JSON or multipart body. Each stripper removes
//! exactly the captcha fields and keeps every other byte as it was, so the
//! upstream sees the request it would have seen without gatekeeper. A captcha
//! field given twice anywhere is refused: guessing which copy counts is how
//! parser differentials start.
//!
//! The same goes for every other shape that an application's parser (Werkzeug,
//! Starlette, Express, PHP, ASP.NET...) could read differently from gatekeeper:
//! two Content-Type headers, a compressed body, duplicated or RFC 2231
//! parameters, a charset other than UTF-8, names that some parsers fold into
//! a captcha field name (`LOT_NUMBER`, `lot.number`, `lot_number[]`), and the
//! per-format cases documented in `form`, `json` and `multipart`. These are
//! refused ([`FieldError::Ambiguous`]) rather than guessed at.

mod form;
mod json;
mod multipart;
mod params;
mod shape;

pub use shape::check_shapes;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};

use crate::geetest::Proof;

pub const CAPTCHA_FIELDS: [&str; 5] = [
    "lot_number",
    "captcha_output",
    "pass_token",
    "gen_time",
    "captcha_id",
];

/// Longest value accepted for any captcha field, before shape checks.
pub const MAX_FIELD_LEN: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldError {
    /// → 415 `unsupported_media_type`.
    #[error("unsupported media type {0}")]
    UnsupportedMediaType(String),
    /// → 403 `captcha_required`: the required fields that are absent.
    #[error("missing {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// None of the five fields at all: the request carries no proof. Answered
    /// as `Missing` is, unless the request is kept for the challenge page.
    #[error("no captcha fields")]
    NoneGiven,
    /// → 400 `captcha_malformed`. A client-safe reason that never holds a value.
    #[error("{0}")]
    Malformed(String),
    /// → 400 `body_ambiguous`: a request the application could read
    /// differently from gatekeeper. A client-safe reason without values.
    #[error("{0}")]
    Ambiguous(String),
}

fn ambiguous(why: impl Into<String>) -> FieldError {
    FieldError::Ambiguous(why.into())
}

/// Refuses request headers that make the body's reading a guess: two
/// Content-Type headers (which one the application takes is its parser's
/// choice) and a Content-Encoding other than `identity` (the application or
/// a middleware may decompress a body gatekeeper read compressed).
pub fn check_headers(headers: &HeaderMap) -> Result<(), FieldError> {
    if headers.get_all(CONTENT_TYPE).iter().nth(1).is_some() {
        return Err(ambiguous("two Content-Type headers"));
    }
    for value in &headers.get_all(CONTENT_ENCODING) {
        let identity = value.to_str().is_ok_and(|v| {
            v.split(',')
                .map(|c| c.trim_matches([' ', '\t']))
                .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
        });
        if !identity {
            return Err(ambiguous(
                "a Content-Encoding other than identity on a protected route",
            ));
        }
    }
    Ok(())
}

/// Whether `charset` (absent, or a parameter's value) is one every parser
/// reads captcha field names in the same way.
fn plain_charset(charset: Option<&str>) -> bool {
    charset.is_none_or(|c| {
        ["utf-8", "utf8", "us-ascii"]
            .iter()
            .any(|ok| c.eq_ignore_ascii_case(ok))
    })
}

/// Whether `b` may appear in a multipart boundary (RFC 2046 §5.1.1 `bchars`).
fn is_bchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b)
}

/// Which captcha field `name` is, or `None` for any other field.
///
/// A name that is not exactly a captcha field but that some framework reads
/// as one is refused: ASP.NET binds names case-insensitively (and its
/// invariant upper-casing maps `ı` to `I` and `ſ` to `S`), PHP turns `.`,
/// spaces and a first `[` into `_` and drops leading spaces, PHP and qs read
/// `lot_number[]` as `lot_number`, and C-string code stops at a NUL.
pub(crate) fn captcha_index(name: &str) -> Result<Option<usize>, FieldError> {
    if let Some(index) = CAPTCHA_FIELDS.iter().position(|f| *f == name) {
        return Ok(Some(index));
    }
    // The longest field name is 14 characters; a few more allow for `[]`.
    // Folded on the stack: most names are ordinary fields, and this runs
    // for each of them.
    let mut folded = [0u8; 16];
    let mut len = 0;
    for c in name.trim_matches(|c: char| c.is_ascii_whitespace()).chars() {
        if matches!(c, '[' | '\0') {
            break;
        }
        let c = if matches!(c, '.' | ' ') { '_' } else { c };
        for upper in c.to_uppercase() {
            let Some(room) = folded.get_mut(len..len + upper.len_utf8()) else {
                return Ok(None);
            };
            upper.encode_utf8(room);
            len += upper.len_utf8();
        }
    }
    match CAPTCHA_FIELDS
        .iter()
        .find(|f| f.as_bytes().eq_ignore_ascii_case(&folded[..len]))
    {
        Some(field) => Err(ambiguous(format!(
            "a field name that some applications read as {field}"
        ))),
        None => Ok(None),
    }
}

/// How the body is encoded, from its Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFormat {
    Empty,
    Form,
    Json,
    Multipart { boundary: String },
}

pub fn body_format(
    content_type: Option<&HeaderValue>,
    body_is_empty: bool,
) -> Result<BodyFormat, FieldError> {
    let Some(content_type) = content_type else {
        return if body_is_empty {
            Ok(BodyFormat::Empty)
        } else {
            Err(FieldError::UnsupportedMediaType(
                "a body without Content-Type".into(),
            ))
        };
    };
    let text = content_type
        .to_str()
        .map_err(|_| FieldError::UnsupportedMediaType("a non-ASCII Content-Type".into()))?;
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match essence.as_str() {
        "application/x-www-form-urlencoded" => BodyFormat::Form,
        "application/json" => BodyFormat::Json,
        e if e.starts_with("application/") && e.ends_with("+json") => BodyFormat::Json,
        "multipart/form-data" => BodyFormat::Multipart {
            boundary: String::new(),
        },
        _ if body_is_empty => return Ok(BodyFormat::Empty),
        _ => return Err(FieldError::UnsupportedMediaType(essence)),
    };
    let parsed = params::parse(text).map_err(|why| ambiguous(format!("Content-Type: {why}")))?;
    if !plain_charset(parsed.get("charset")) {
        return Err(ambiguous("a Content-Type charset other than UTF-8"));
    }
    match format {
        BodyFormat::Multipart { .. } => {
            let boundary = parsed.get("boundary").unwrap_or("");
            if boundary.is_empty()
                || boundary.len() > 70
                || boundary.ends_with(' ')
                || !boundary.bytes().all(is_bchar)
            {
                return Err(FieldError::Malformed(
                    "multipart/form-data without a valid boundary".into(),
                ));
            }
            Ok(BodyFormat::Multipart {
                boundary: boundary.to_owned(),
            })
        }
        format => Ok(format),
    }
}

/// The proof, and the request's query and body without the captcha fields.
#[derive(Debug)]
pub struct Extraction {
    pub proof: Proof,
    pub captcha_id: Option<String>,
    /// `None` when nothing remains of the query.
    pub query: Option<String>,
    pub body: Bytes,
}

/// Captcha values found so far, refusing a second copy of any.
#[derive(Debug, Default)]
pub(crate) struct Found {
    values: [Option<String>; 5],
}

impl Found {
    /// Records `value` for `name` if `name` is a captcha field; returns whether it was.
    pub(crate) fn offer(
        &mut self,
        name: &str,
        value: impl FnOnce() -> Result<String, FieldError>,
    ) -> Result<bool, FieldError> {
        let Some(index) = captcha_index(name)? else {
            return Ok(false);
        };
        if self.values[index].is_some() {
            return Err(FieldError::Malformed(format!("duplicate {name}")));
        }
        let value = value()?;
        if value.len() > MAX_FIELD_LEN {
            return Err(FieldError::Malformed(format!("{name} is too long")));
        }
        self.values[index] = Some(value);
        Ok(true)
    }

    fn into_proof(self) -> Result<(Proof, Option<String>), FieldError> {
        if self.values.iter().all(Option::is_none) {
            return Err(FieldError::NoneGiven);
        }
        let [lot_number, captcha_output, pass_token, gen_time, captcha_id] = self.values;
        let missing: Vec<&'static str> = [&lot_number, &captcha_output, &pass_token, &gen_time]
            .iter()
            .zip(CAPTCHA_FIELDS)
            .filter(|(v, _)| v.as_ref().is_none_or(|s| s.is_empty()))
            .map(|(_, name)| name)
            .collect();
        match (lot_number, captcha_output, pass_token, gen_time) {
            (Some(lot_number), Some(captcha_output), Some(pass_token), Some(gen_time))
                if missing.is_empty() =>
            {
                Ok((
                    Proof {
                        lot_number,
                        captcha_output,
                        pass_token,
                        gen_time,
                    },
                    captcha_id,
                ))
            }
            _ => Err(FieldError::Missing(missing)),
        }
    }
}

/// Reads the five fields from the query and the body, and strips them from both.
pub async fn extract(
    query: Option<&str>,
    format: &BodyFormat,
    body: Bytes,
) -> Result<Extraction, FieldError> {
    let mut found = Found::default();
    let query = match query {
        Some(q) => match form::strip(q.as_bytes(), &mut found)? {
            // The stripped query is made of whole segments of a valid one.
            Some(stripped) => String::from_utf8(stripped).ok(),
            None => Some(q.to_owned()),
        },
        None => None,
    };
    let query = query.filter(|q| !q.is_empty());
    let body = match format {
        BodyFormat::Empty => body,
        BodyFormat::Form => form::strip(&body, &mut found)?
            .map(Bytes::from)
            .unwrap_or(body),
        BodyFormat::Json => json::strip(&body, &mut found)?
            .map(Bytes::from)
            .unwrap_or(body),
        BodyFormat::Multipart { boundary } => multipart::strip(body, boundary, &mut found).await?,
    };
    let (proof, captcha_id) = found.into_proof()?;
    Ok(Extraction {
        proof,
        captcha_id: captcha_id.filter(|id| !id.is_empty()),
        query,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(value: &str) -> Result<BodyFormat, FieldError> {
        body_format(Some(&HeaderValue::from_str(value).expect("ascii")), false)
    }

    #[test]
    fn content_types_parsers_read_differently_are_ambiguous() {
        for value in [
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/form-data; boundary=\"a\"; boundary=b",
            "multipart/form-data; boundary=a; charset=utf-8; charset=latin1",
            "multipart/form-data; boundary*=UTF-8''a",
            "multipart/form-data; boundary=\"a\\\"b\"",
            "application/x-www-form-urlencoded; charset=utf-16",
            "application/x-www-form-urlencoded; charset=iso-8859-1",
            "application/json; charset=utf-32",
            "application/json; charset=utf-8; charset=utf-8",
            "multipart/form-data; boundary=a; charset=shift_jis",
        ] {
            assert!(
                matches!(ct(value), Err(FieldError::Ambiguous(_))),
                "{value}: {:?}",
                ct(value)
            );
        }
        assert_eq!(
            ct("multipart/form-data; charset=UTF-8; boundary=\"----x y\""),
            Ok(BodyFormat::Multipart {
                boundary: "----x y".into()
            })
        );
        assert_eq!(
            ct("application/x-www-form-urlencoded;charset=US-ASCII"),
            Ok(BodyFormat::Form)
        );
        assert_eq!(ct("application/json; charset=utf8"), Ok(BodyFormat::Json));
        assert!(matches!(
            ct("multipart/form-data; boundary=\"a b \""),
            Err(FieldError::Malformed(_))
        ));
    }

    #[test]
    fn two_content_types_or_a_content_encoding_are_ambiguous() {
        let mut headers = HeaderMap::new();
        headers.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(check_headers(&headers), Ok(()));
        headers.append(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(matches!(
            check_headers(&headers),
            Err(FieldError::Ambiguous(_))
        ));

        for (encoding, ok) in [
            ("identity", true),
            ("Identity, ", true),
            ("gzip", false),
            ("identity, br", false),
            ("deflate", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
            assert_eq!(check_headers(&headers).is_ok(), ok, "{encoding}");
        }
    }

    #[test]
    fn only_exact_names_are_captcha_fields_and_lookalikes_are_refused() {
        assert_eq!(captcha_index("lot_number"), Ok(Some(0)));
        assert_eq!(captcha_index("captcha_id"), Ok(Some(4)));
        for other in ["lot", "lot_numbers", "my_lot_number", "", "lot_number_"] {
            assert_eq!(captcha_index(other), Ok(None), "{other}");
        }
        for lookalike in [
            "Lot_Number",
            " lot_number",
            "lot.number",
            "lot number",
            "lot_number[]",
            "lot_number[x][y]",
            "lot_number\0x",
            "pa\u{17F}\u{17F}_token",
            "captcha_\u{131}d",
            "GEN_TIME",
        ] {
            assert!(
                matches!(captcha_index(lookalike), Err(FieldError::Ambiguous(_))),
                "{lookalike:?}"
            );
        }
    }
}
