//! `application/x-www-form-urlencoded` bodies and query strings.
//!
//! Names are percent- and plus-decoded before they are compared, as every
//! form parser does, so `lot%5Fnumber` is the captcha field `lot_number`.
//! Some parsers (Python's `parse_qs` before 3.9.2, Perl's CGI, some Java
//! containers) also split pairs at `;`: a segment holding a `;` next to a
//! captcha field is refused, since those parsers would see other pairs.

use std::borrow::Cow;

use super::{FieldError, Found, ambiguous, captcha_index};

/// Refuses `segment` if it holds a `;` and any `;`-separated piece of it
/// names a captcha field (or a name read as one).
fn check_semicolons(segment: &[u8]) -> Result<(), FieldError> {
    if memchr::memchr(b';', segment).is_none() {
        return Ok(());
    }
    for piece in segment.split(|b| *b == b';') {
        let raw_name = &piece[..memchr::memchr(b'=', piece).unwrap_or(piece.len())];
        if let Some((name, _)) = form_urlencoded::parse(raw_name).next()
            && !matches!(captcha_index(&name), Ok(None))
        {
            return Err(ambiguous(
                "a `;` next to a captcha field (some parsers split pairs there)",
            ));
        }
    }
    Ok(())
}

/// `raw` as it is when form_urlencoded would decode it to itself: it holds
/// no `+` or `%` and is UTF-8. Most names are, and so are the hex and digit
/// proof values (a browser sends base64 padding as `%3D`, which is decoded):
/// they are borrowed without a decoding pass.
fn plain(raw: &[u8]) -> Option<&str> {
    match memchr::memchr2(b'+', b'%', raw) {
        None => std::str::from_utf8(raw).ok(),
        Some(_) => None,
    }
}

/// Removes captcha pairs, keeping every other `&`-separated segment byte for
/// byte (its encoding, empty values, repeated keys, empty segments).
/// Returns `None` when nothing was removed, so the caller keeps its bytes.
pub(super) fn strip(input: &[u8], found: &mut Found) -> Result<Option<Vec<u8>>, FieldError> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = false;
    // memchr finds the separators a vector at a time: a gated form is read
    // whole, and its long fields are mostly bytes to skip.
    let mut start = 0;
    for end in memchr::memchr_iter(b'&', input).chain([input.len()]) {
        let segment = &input[start..end];
        start = end + 1;
        check_semicolons(segment)?;
        // Only the name is decoded first: a long value of some other field
        // is never looked at. form_urlencoded decodes `+` and percent escapes
        // as browsers encode them.
        let decoded = || form_urlencoded::parse(segment).next().unwrap_or_default();
        let name_end = memchr::memchr(b'=', segment).unwrap_or(segment.len());
        let name = plain(&segment[..name_end]).map_or_else(|| decoded().0, Cow::Borrowed);
        let is_captcha = found.offer(&name, || {
            let raw_value = segment.get(name_end + 1..).unwrap_or_default();
            let value = plain(raw_value).map_or_else(|| decoded().1, Cow::Borrowed);
            if value.contains('\u{FFFD}') {
                return Err(FieldError::Malformed(format!("{name} is not valid UTF-8")));
            }
            Ok(value.into_owned())
        })?;
        if is_captcha {
            removed = true;
        } else {
            kept.push(segment);
        }
    }
    Ok(removed.then(|| kept.join(&b'&')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> (String, Found) {
        let mut found = Found::default();
        let out = strip(input.as_bytes(), &mut found).expect("strips");
        (
            out.map(|b| String::from_utf8(b).expect("utf8"))
                .unwrap_or_else(|| input.to_owned()),
            found,
        )
    }

    #[test]
    fn a_plain_name_or_value_is_what_form_urlencoded_decodes_it_to() {
        for raw in [
            &b"lot_number"[..],
            b"x-y_z.~*!",
            b"caf\xc3\xa9",
            b"",
            b"a+b",
            b"%41",
            b"\xff",
        ] {
            let parsed = form_urlencoded::parse(raw)
                .next()
                .map(|(text, _)| text)
                .unwrap_or_default();
            match plain(raw) {
                Some(text) => assert_eq!(text, parsed),
                None => assert!(
                    raw.contains(&b'+') || raw.contains(&b'%') || std::str::from_utf8(raw).is_err()
                ),
            }
        }
    }

    #[test]
    fn captcha_pairs_go_and_everything_else_stays_exact() {
        let (out, found) = run("a=1&lot_number=abc&b=%C3%A9+x&&c=&c=2&d&gen_time=1");
        assert_eq!(out, "a=1&b=%C3%A9+x&&c=&c=2&d");
        assert_eq!(found.values[0].as_deref(), Some("abc"));
        assert_eq!(found.values[3].as_deref(), Some("1"));
    }

    #[test]
    fn encoded_names_are_recognised() {
        let (out, found) = run("lot%5Fnumber=x&pass_token=y%2Bz&keep=1");
        assert_eq!(out, "keep=1");
        assert_eq!(found.values[0].as_deref(), Some("x"));
        assert_eq!(found.values[2].as_deref(), Some("y+z"));
    }

    #[test]
    fn a_duplicate_captcha_field_is_refused() {
        let mut found = Found::default();
        let err = strip(b"lot_number=a&lot_number=b", &mut found).expect_err("duplicate");
        assert_eq!(err, FieldError::Malformed("duplicate lot_number".into()));
    }

    #[test]
    fn a_value_holding_equals_signs_is_kept_whole() {
        let (out, found) = run("pass_token=a%3Db=c&x=y=z");
        assert_eq!(out, "x=y=z");
        assert_eq!(found.values[2].as_deref(), Some("a=b=c"));
    }

    #[test]
    fn empty_segments_at_either_end_are_kept() {
        let (out, found) = run("&a=1&&lot_number=x&");
        assert_eq!(out, "&a=1&&");
        assert_eq!(found.values[0].as_deref(), Some("x"));
        assert_eq!(run("lot_number=x").0, "");
    }

    #[test]
    fn names_some_framework_reads_as_a_captcha_field_are_refused() {
        for body in [
            "LOT_NUMBER=x",
            "Lot_Number=x",
            "lot.number=x",
            "lot+number=x",
            "lot%20number=x",
            "+lot_number=x",
            "lot_number%20=x",
            "lot_number[]=x",
            "lot_number%5B0%5D=x",
            "lot_number%00=x",
            "pa%C5%BF%C5%BF_token=x",
            "captcha_%C4%B1d=x",
        ] {
            let mut found = Found::default();
            assert!(
                matches!(
                    strip(body.as_bytes(), &mut found),
                    Err(FieldError::Ambiguous(_))
                ),
                "{body}"
            );
        }
        // Names merely containing a field name are ordinary fields.
        assert_eq!(
            run("my_lot_number=1&lot_numbers=2").0,
            "my_lot_number=1&lot_numbers=2"
        );
    }

    #[test]
    fn a_semicolon_next_to_a_captcha_field_is_refused() {
        for body in [
            "a=1;lot_number=x",
            "lot_number=x;a=1",
            "a=1&b=2;captcha%5Fid=3",
        ] {
            let mut found = Found::default();
            assert!(
                matches!(
                    strip(body.as_bytes(), &mut found),
                    Err(FieldError::Ambiguous(_))
                ),
                "{body}"
            );
        }
        // Elsewhere a `;` is just a byte of a value.
        assert_eq!(run("q=a;b&lot_number=x").0, "q=a;b");
    }

    #[test]
    fn nothing_removed_means_none() {
        let mut found = Found::default();
        assert_eq!(strip(b"a=1&b=2", &mut found), Ok(None));
    }
}
