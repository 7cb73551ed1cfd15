//! `application/json` bodies: top-level members of one object.
//!
//! serde_json parses (and so validates) the body; each value is borrowed as a
//! `RawValue`, a slice of the input, which gives its exact position. Members
//! are then cut out of the original text, so whitespace, member order, escapes
//! and number formatting of everything else stay as sent.
//!
//! Refused as ambiguous, because parsers differ on them: a byte order mark
//! (Python's `json.loads` of bytes skips it), a top-level key given twice
//! (first wins in some parsers, last in most), and a captcha field's key
//! written with escapes (`"lot\u005fnumber"`: parsers that match raw key
//! bytes do not see it). Non-UTF-8 text, a top level that is not an object
//! and trailing text are malformed.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{FieldError, Found, ambiguous};

/// One top-level member: its key and its value's byte span in the input.
struct Member<'a> {
    key: Cow<'a, str>,
    value: &'a RawValue,
}

struct Members<'a>(Vec<Member<'a>>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    members.push(Member { key, value });
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

pub(super) fn strip(input: &[u8], found: &mut Found) -> Result<Option<Vec<u8>>, FieldError> {
    if input.starts_with(b"\xEF\xBB\xBF") {
        return Err(ambiguous("the JSON body starts with a byte order mark"));
    }
    let text = std::str::from_utf8(input)
        .map_err(|_| FieldError::Malformed("the JSON body is not UTF-8".into()))?;
    let Members(members) = serde_json::from_str(text)
        .map_err(|_| FieldError::Malformed("the body is not a JSON object".into()))?;

    // (start of key, end of value) of each member, as offsets into `text`.
    let mut spans = Vec::with_capacity(members.len());
    let mut cursor = text.find('{').unwrap_or(0) + 1;
    let mut remove = Vec::with_capacity(members.len());
    for member in &members {
        let value_start = member.value.get().as_ptr() as usize - text.as_ptr() as usize;
        let value_end = value_start + member.value.get().len();
        // Between the previous value (or `{`) and this key there is only white
        // space and at most one comma, so the key starts at the next quote.
        let key_start = text[cursor..value_start]
            .find('"')
            .map_or(value_start, |i| cursor + i);
        spans.push((key_start, value_end));
        cursor = value_end;
        let is_captcha = found.offer(&member.key, || value_text(&member.key, member.value))?;
        // Between the key's opening quote and the value only the key may hold a backslash.
        if is_captcha && text[key_start..value_start].contains('\\') {
            return Err(ambiguous(format!(
                "the key {} is written with escapes",
                member.key
            )));
        }
        remove.push(is_captcha);
    }
    if members.len() > 1 {
        let mut keys: Vec<&str> = members.iter().map(|m| m.key.as_ref()).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err(ambiguous("a top-level key given twice"));
        }
    }
    if !remove.contains(&true) {
        return Ok(None);
    }

    let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
        return Ok(None);
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first.0]);
    let mut wrote_any = false;
    for (i, (start, end)) in spans.iter().enumerate() {
        if remove[i] {
            continue;
        }
        if wrote_any {
            // The separator that originally preceded this member.
            out.push_str(&text[spans[i - 1].1..*start]);
        }
        out.push_str(&text[*start..*end]);
        wrote_any = true;
    }
    out.push_str(&text[last.1..]);
    Ok(Some(out.into_bytes()))
}

/// A captcha field's value: a JSON string, or for gen_time also an integer.
fn value_text(name: &str, raw: &RawValue) -> Result<String, FieldError> {
    let text = raw.get();
    if text.starts_with('"') {
        return serde_json::from_str::<String>(text)
            .map_err(|_| FieldError::Malformed(format!("{name} is not a valid string")));
    }
    if name == "gen_time" && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(text.to_owned());
    }
    Err(FieldError::Malformed(format!("{name} must be a string")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> Result<String, FieldError> {
        let mut found = Found::default();
        Ok(strip(input.as_bytes(), &mut found)?
            .map(|b| String::from_utf8(b).expect("utf8"))
            .unwrap_or_else(|| input.to_owned()))
    }

    #[test]
    fn json_strip_keeps_whitespace_and_member_order() {
        assert_eq!(
            run(r#"{"a":1,"lot_number":"x","b":[1, 2]}"#).as_deref(),
            Ok(r#"{"a":1,"b":[1, 2]}"#)
        );
        assert_eq!(
            run("{ \"lot_number\" : \"x\" ,\n \"b\" : 2 }").as_deref(),
            Ok("{ \"b\" : 2 }")
        );
        assert_eq!(
            run(r#"{"a":1, "gen_time": 17}"#).as_deref(),
            Ok(r#"{"a":1}"#)
        );
        assert_eq!(run(r#" {"lot_number":"x"} "#).as_deref(), Ok(" {} "));
    }

    #[test]
    fn nested_captcha_names_are_not_touched() {
        let body = r#"{"o":{"lot_number":"x"},"s":"lot_number"}"#;
        assert_eq!(run(body).as_deref(), Ok(body));
    }

    #[test]
    fn escaped_values_are_understood() {
        let mut found = Found::default();
        let out = strip(br#"{"lot_number":"a\u0062c","k\u0031":"v"}"#, &mut found).expect("ok");
        assert_eq!(out.as_deref(), Some(&br#"{"k\u0031":"v"}"#[..]));
        assert_eq!(found.values[0].as_deref(), Some("abc"));
    }

    #[test]
    fn bodies_parsers_read_differently_are_ambiguous() {
        for body in [
            r#"{"lot\u005fnumber":"x"}"#,
            r#"{"lot_num\u0062er":"x","a":1}"#,
            "\u{FEFF}{\"a\":1}",
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"b":{},"a":{"lot_number":"x"}}"#,
            r#"{"LOT_NUMBER":"x"}"#,
            r#"{"lot_number[]":"x"}"#,
            r#"{"captcha_\u0131d":"x"}"#,
        ] {
            assert!(
                matches!(run(body), Err(FieldError::Ambiguous(_))),
                "{body}: {:?}",
                run(body)
            );
        }
    }

    #[test]
    fn trailing_text_and_other_encodings_are_malformed() {
        for body in [
            &br#"{"a":1} x"#[..],
            br#"{"a":1}{"lot_number":"x"}"#,
            b"{\"a\":\"\xE9\"}",
            b"{\x00\"\x00a\x00\"\x00:\x001\x00}\x00",
            b"null",
            br#""lot_number""#,
        ] {
            let mut found = Found::default();
            assert!(
                matches!(strip(body, &mut found), Err(FieldError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(run("{\"a\":1}\r\n\t ").as_deref(), Ok("{\"a\":1}\r\n\t "));
    }

    #[test]
    fn wrong_types_and_non_objects_are_malformed() {
        assert!(matches!(
            run(r#"{"lot_number":1}"#),
            Err(FieldError::Malformed(_))
        ));
        assert!(matches!(
            run(r#"{"gen_time":1.5}"#),
            Err(FieldError::Malformed(_))
        ));
        assert!(matches!(run(r#"[1,2]"#), Err(FieldError::Malformed(_))));
        assert!(matches!(run(r#"{"a":1"#), Err(FieldError::Malformed(_))));
        assert!(matches!(
            run(r#"{"lot_number":"a","lot_number":"b"}"#),
            Err(FieldError::Malformed(_))
        ));
    }
}
