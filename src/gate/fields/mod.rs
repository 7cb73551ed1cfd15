//! Reading the GeeTest fields from a request and removing them.
//!
//! The five fields may arrive in the query string (GeeTest's own web demos
//! submit by GET) and in a form, JSON or multipart body. Each stripper removes
//! exactly the captcha fields and keeps every other byte as it was, so the
//! upstream sees the request it would have seen without gatekeeper. A captcha
//! field given twice anywhere is refused: guessing which copy counts is how
//! parser differentials start.

mod form;
mod json;
mod multipart;
mod shape;

pub use shape::check_shapes;

use bytes::Bytes;
use http::HeaderValue;

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
    /// → 400 `captcha_malformed`. A client-safe reason that never holds a value.
    #[error("{0}")]
    Malformed(String),
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
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Ok(BodyFormat::Form),
        "application/json" => Ok(BodyFormat::Json),
        e if e.starts_with("application/") && e.ends_with("+json") => Ok(BodyFormat::Json),
        "multipart/form-data" => multer::parse_boundary(text)
            .map(|boundary| BodyFormat::Multipart { boundary })
            .map_err(|_| {
                FieldError::Malformed("multipart/form-data without a valid boundary".into())
            }),
        _ if body_is_empty => Ok(BodyFormat::Empty),
        _ => Err(FieldError::UnsupportedMediaType(essence)),
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
        let Some(index) = CAPTCHA_FIELDS.iter().position(|f| *f == name) else {
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
