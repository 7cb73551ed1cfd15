//! A kept request, and its encoding for Redis.
//!
//! The blob is one version byte, then postcard: a fleet that upgrades one
//! instance at a time refuses a blob of another layout instead of misreading
//! it. Decoding checks every field (method, target, header names and values)
//! as `http` would, so a corrupt or foreign blob is an error, never a panic
//! or a malformed request forwarded.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, uri::PathAndQuery};
use serde::{Deserialize, Serialize};

/// Bumped whenever [`Wire`] changes.
const VERSION: u8 = 1;

/// The request as gatekeeper would have forwarded it, waiting for its proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRequest {
    pub method: Method,
    /// Path and query in the form gatekeeper forwards (normalised).
    pub target: PathAndQuery,
    /// End-to-end headers as they would be forwarded (hop-by-hop removed;
    /// `X-Forwarded-*` and the pass marker are added on release).
    pub headers: HeaderMap,
    /// The whole body, at most `limits.max_body`.
    pub body: Bytes,
}

/// Byte strings go as serde bytes (length, then the bytes in one copy); a
/// plain `&[u8]` would be a sequence, serialized a byte at a time into the
/// same layout.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    method: &'a str,
    target: &'a str,
    #[serde(borrow)]
    headers: Vec<(&'a str, &'a serde_bytes::Bytes)>,
    #[serde(borrow)]
    body: &'a serde_bytes::Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown layout version {0}")]
    Version(u8),
    #[error("empty blob")]
    Empty,
    #[error("malformed: {0}")]
    Format(#[from] postcard::Error),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

impl KeptRequest {
    /// What the request weighs against the store's byte bound: its text and
    /// body, about what it takes in memory and (encoded) in Redis.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        let total = self.method.as_str().len() + self.target.as_str().len() + headers;
        (total as u64).saturating_add(self.body.len() as u64)
    }

    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let wire = Wire {
            method: self.method.as_str(),
            target: self.target.as_str(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), serde_bytes::Bytes::new(v.as_bytes())))
                .collect(),
            body: serde_bytes::Bytes::new(&self.body),
        };
        let mut out = Vec::with_capacity(self.weight() as usize + 64);
        out.push(VERSION);
        postcard::to_io(&wire, &mut out)?;
        Ok(out)
    }

    pub fn decode(blob: &[u8]) -> Result<Self, DecodeError> {
        let (&version, rest) = blob.split_first().ok_or(DecodeError::Empty)?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let wire: Wire<'_> = postcard::from_bytes(rest)?;
        let method = Method::from_bytes(wire.method.as_bytes())
            .map_err(|_| DecodeError::Invalid("method"))?;
        let target = PathAndQuery::try_from(wire.target)
            .ok()
            .filter(|t| t.as_str().starts_with('/'))
            .ok_or(DecodeError::Invalid("target"))?;
        let mut headers = HeaderMap::with_capacity(wire.headers.len());
        for (name, value) in wire.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| DecodeError::Invalid("header name"))?;
            let value =
                HeaderValue::from_bytes(value).map_err(|_| DecodeError::Invalid("header value"))?;
            headers.append(name, value);
        }
        Ok(Self {
            method,
            target,
            headers,
            body: Bytes::copy_from_slice(wire.body),
        })
    }
}

#[cfg(test)]
pub(super) fn sample(body: &[u8]) -> KeptRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("multipart/form-data; boundary=x"),
    );
    headers.append("cookie", HeaderValue::from_static("a=1"));
    headers.append("cookie", HeaderValue::from_static("b=2"));
    headers.insert(
        "x-odd",
        HeaderValue::from_bytes(b"caf\xc3\xa9 \x80").expect("opaque bytes are a valid value"),
    );
    KeptRequest {
        method: Method::POST,
        target: PathAndQuery::from_static("/comment?draft=1&x=%2F"),
        headers,
        body: Bytes::copy_from_slice(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout a fleet's instances share: one instance's blob is
    /// another's request, across versions of gatekeeper.
    #[test]
    fn the_blob_layout_is_fixed() {
        let blob = sample(b"\x00\xffbody").encode().expect("encodes");
        assert_eq!(
            hex::encode(&blob),
            "0104504f5354162f636f6d6d656e743f64726166743d3126783d253246040c636f6e74656e742d747970651f6d756c7469706172742f666f726d2d646174613b20626f756e646172793d7806636f6f6b696503613d3106636f6f6b696503623d3205782d6f646407636166c3a920800600ff626f6479"
        );
    }

    #[test]
    fn a_request_survives_encoding_byte_for_byte() {
        let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let kept = sample(&body);
        let blob = kept.encode().expect("encodes");
        assert!(
            blob.len() < body.len() + 200,
            "bytes are stored raw, not as a list of numbers: {} bytes",
            blob.len()
        );
        let back = KeptRequest::decode(&blob).expect("decodes");
        assert_eq!(back, kept);
        let cookies: Vec<_> = back.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"], "repeated headers keep their order");
    }

    #[test]
    fn corrupt_blobs_are_errors() {
        let blob = sample(b"hello").encode().expect("encodes");
        assert!(matches!(KeptRequest::decode(&[]), Err(DecodeError::Empty)));
        let mut other = blob.clone();
        other[0] = 9;
        assert!(matches!(
            KeptRequest::decode(&other),
            Err(DecodeError::Version(9))
        ));
        for cut in 1..blob.len() {
            assert!(KeptRequest::decode(&blob[..cut]).is_err(), "cut at {cut}");
        }
        // Every single-byte change either fails or yields a valid request.
        for i in 1..blob.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = blob.clone();
                bad[i] ^= flip;
                let _ = KeptRequest::decode(&bad);
            }
        }
        let mut bad_method = vec![VERSION];
        let wire = Wire {
            method: "PO ST",
            target: "/",
            headers: Vec::new(),
            body: serde_bytes::Bytes::new(b""),
        };
        postcard::to_io(&wire, &mut bad_method).expect("encodes");
        assert!(matches!(
            KeptRequest::decode(&bad_method),
            Err(DecodeError::Invalid("method"))
        ));
        let mut bad_header = vec![VERSION];
        let wire = Wire {
            method: "GET",
            target: "/",
            headers: vec![("x", serde_bytes::Bytes::new(b"line\nbreak"))],
            body: serde_bytes::Bytes::new(b""),
        };
        postcard::to_io(&wire, &mut bad_header).expect("encodes");
        assert!(matches!(
            KeptRequest::decode(&bad_header),
            Err(DecodeError::Invalid("header value"))
        ));
    }

    #[test]
    fn weight_counts_text_and_body() {
        let kept = sample(&[0; 1000]);
        assert!(
            kept.weight() > 1000 && kept.weight() < 1200,
            "{}",
            kept.weight()
        );
    }
}
