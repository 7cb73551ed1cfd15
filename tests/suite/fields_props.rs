//! Property tests for the field extractor and the three body strippers: they
//! never panic, and for any body they remove exactly the captcha fields and
//! keep every other field byte for byte.
//!
//! CI runs proptest's default 256 cases per property; run longer with
//! `PROPTEST_CASES=100000 cargo nextest run -E 'test(/^fields_props::/)'`.

use bytes::Bytes;
use gatekeeper::gate::fields::{BodyFormat, CAPTCHA_FIELDS, FieldError, extract};
use proptest::prelude::*;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Values as a widget yields them (a base64url captcha_output, hex elsewhere).
fn proof_values() -> impl Strategy<Value = [String; 5]> {
    (
        "[0-9a-f]{32}",
        "[A-Za-z0-9_-]{24,120}={0,2}",
        "[0-9a-f]{64}",
        "1[0-9]{9}",
        "[0-9a-f]{32}",
    )
        .prop_map(|(a, b, c, d, e)| [a, b, c, d, e])
}

/// Field names that are never captcha fields.
fn other_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,12}".prop_filter("not a captcha field", |n| {
        !CAPTCHA_FIELDS.contains(&n.as_str())
    })
}

/// Arbitrary text, non-ASCII included.
fn any_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~é日\\n\\t]{0,40}").unwrap()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Interleaves the captcha pairs into `others` at the given positions.
fn interleave<T: Clone>(others: &[T], captcha: &[T], positions: &[usize]) -> Vec<T> {
    let mut out = others.to_vec();
    for (item, pos) in captcha.iter().zip(positions) {
        let at = pos % (out.len() + 1);
        out.insert(at, item.clone());
    }
    out
}

fn check_values(extracted: &gatekeeper::gate::fields::Extraction, values: &[String; 5]) {
    assert_eq!(extracted.proof.lot_number, values[0]);
    assert_eq!(extracted.proof.captcha_output, values[1]);
    assert_eq!(extracted.proof.pass_token, values[2]);
    assert_eq!(extracted.proof.gen_time, values[3]);
    assert_eq!(extracted.captcha_id.as_deref(), Some(values[4].as_str()));
}

proptest! {
    #[test]
    fn extract_never_panics_on_arbitrary_input(
        query in proptest::option::of(any::<String>()),
        body in proptest::collection::vec(any::<u8>(), 0..600),
        boundary in "[A-Za-z0-9'()+_,./:=?-]{1,70}",
    ) {
        for format in [BodyFormat::Empty, BodyFormat::Form, BodyFormat::Json, BodyFormat::Multipart { boundary: boundary.clone() }] {
            let _ = block_on(extract(query.as_deref(), &format, Bytes::from(body.clone())));
        }
    }

    #[test]
    fn form_strip_removes_exactly_the_captcha_pairs(
        others in proptest::collection::vec((other_name(), any_text()), 0..8),
        values in proof_values(),
        positions in proptest::collection::vec(any::<usize>(), 5),
    ) {
        let other_pairs: Vec<String> = others.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
        let captcha_pairs: Vec<String> = CAPTCHA_FIELDS.iter().zip(&values).map(|(k, v)| format!("{k}={}", enc(v))).collect();
        let body = interleave(&other_pairs, &captcha_pairs, &positions).join("&");
        let got = block_on(extract(None, &BodyFormat::Form, Bytes::from(body))).unwrap();
        check_values(&got, &values);
        prop_assert_eq!(got.body, Bytes::from(other_pairs.join("&")));
    }

    #[test]
    fn query_strip_removes_exactly_the_captcha_pairs(
        others in proptest::collection::vec((other_name(), any_text()), 0..8),
        values in proof_values(),
        positions in proptest::collection::vec(any::<usize>(), 5),
    ) {
        let other_pairs: Vec<String> = others.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
        let captcha_pairs: Vec<String> = CAPTCHA_FIELDS.iter().zip(&values).map(|(k, v)| format!("{k}={}", enc(v))).collect();
        let query = interleave(&other_pairs, &captcha_pairs, &positions).join("&");
        let got = block_on(extract(Some(&query), &BodyFormat::Empty, Bytes::new())).unwrap();
        let expected = other_pairs.join("&");
        check_values(&got, &values);
        prop_assert_eq!(got.query.unwrap_or_default(), expected);
    }

    #[test]
    fn json_strip_removes_exactly_the_captcha_members(
        others in proptest::collection::vec((other_name(), any_text(), any::<i64>(), 0..3u8), 0..8),
        values in proof_values(),
        positions in proptest::collection::vec(any::<usize>(), 5),
        gen_time_as_number in any::<bool>(),
        spacing in "[ \\n\\t]{0,3}",
    ) {
        // Unique names: JSON objects with duplicate keys are not what is tested here.
        let mut seen = std::collections::HashSet::new();
        let other_members: Vec<String> = others
            .iter()
            .filter(|(k, ..)| seen.insert(k.clone()))
            .map(|(k, text, n, kind)| {
                let value = match kind {
                    0 => serde_json::to_string(text).unwrap(),
                    1 => n.to_string(),
                    _ => format!("{{\"lot_number\":{}}}", serde_json::to_string(text).unwrap()),
                };
                format!("{}{spacing}:{spacing}{value}", serde_json::to_string(k).unwrap())
            })
            .collect();
        let captcha_members: Vec<String> = CAPTCHA_FIELDS
            .iter()
            .zip(&values)
            .map(|(k, v)| if *k == "gen_time" && gen_time_as_number { format!("\"{k}\":{v}") } else { format!("\"{k}\":\"{v}\"") })
            .collect();
        let sep = format!(",{spacing}");
        let body = format!("{{{spacing}{}{spacing}}}", interleave(&other_members, &captcha_members, &positions).join(&sep));
        let expected = format!("{{{spacing}{}{spacing}}}", other_members.join(&sep));
        let got = block_on(extract(None, &BodyFormat::Json, Bytes::from(body))).unwrap();
        check_values(&got, &values);
        prop_assert_eq!(String::from_utf8(got.body.to_vec()).unwrap(), expected);
    }

    #[test]
    fn multipart_strip_removes_exactly_the_captcha_parts(
        others in proptest::collection::vec((other_name(), proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()), 0..6),
        values in proof_values(),
        positions in proptest::collection::vec(any::<usize>(), 5),
        preamble in "[a-z ]{0,20}",
    ) {
        let boundary = "gkPropBoundary7MA4YWxkTrZu0gW";
        let part = |name: &str, filename: Option<&str>, content: &[u8]| {
            let mut p = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").into_bytes();
            if let Some(f) = filename {
                p.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes());
            }
            p.extend_from_slice(b"\r\n\r\n");
            p.extend_from_slice(content);
            p.extend_from_slice(b"\r\n");
            p
        };
        // Binary content must not contain the delimiter; random bytes of this length cannot.
        let other_parts: Vec<Vec<u8>> = others.iter().map(|(n, c, file)| part(n, file.then_some("a.bin"), c)).collect();
        let captcha_parts: Vec<Vec<u8>> = CAPTCHA_FIELDS.iter().zip(&values).map(|(k, v)| part(k, None, v.as_bytes())).collect();
        let assemble = |parts: &[Vec<u8>]| {
            let mut body = if preamble.is_empty() { Vec::new() } else { format!("{preamble}\r\n").into_bytes() };
            for p in parts {
                body.extend_from_slice(p);
            }
            body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            body
        };
        let body = assemble(&interleave(&other_parts, &captcha_parts, &positions));
        let format = BodyFormat::Multipart { boundary: boundary.to_owned() };
        let got = block_on(extract(None, &format, Bytes::from(body))).unwrap();
        check_values(&got, &values);
        prop_assert_eq!(got.body, Bytes::from(assemble(&other_parts)));
    }

    #[test]
    fn a_duplicated_captcha_field_is_always_refused(
        values in proof_values(),
        which in 0..5usize,
        in_query in any::<bool>(),
    ) {
        let pairs: Vec<String> = CAPTCHA_FIELDS.iter().zip(&values).map(|(k, v)| format!("{k}={}", enc(v))).collect();
        let body = pairs.join("&");
        let dup = pairs[which].clone();
        let (query, body) = if in_query { (Some(dup), body) } else { (None, format!("{body}&{dup}")) };
        let got = block_on(extract(query.as_deref(), &BodyFormat::Form, Bytes::from(body)));
        prop_assert!(matches!(got, Err(FieldError::Malformed(_))));
    }
}
