// Over 400 lines: a third is its tests, one per way two parsers could read a body differently.
//! `multipart/form-data` bodies (RFC 7578).
//!
//! multer parses the body and yields the field values; the same body is then
//! cut at its delimiter lines to drop the captcha parts byte for byte, keeping
//! the boundary, preamble, every other part and the close delimiter. The two
//! readings must agree on every part's name, whether it is a file, and the
//! length of its content, or the body is refused: a body two parsers read
//! differently is an attack on one of them.
//!
//! The byte-level reading is strict where application parsers differ, and
//! refuses (as ambiguous) a body with:
//! - the boundary anywhere but at the start of a CRLF-delimited line followed
//!   by CRLF or `--` (Werkzeug also accepts bare LF or CR line breaks and
//!   transport padding; others do not), or after the close delimiter;
//! - a bare LF or CR in a part's header section;
//! - a part without exactly one Content-Disposition, a disposition other than
//!   `form-data`, a duplicated parameter, `name*`/`filename*` (forbidden by
//!   RFC 7578 §4.2; Werkzeug decodes them), or a backslash-escaped quote;
//! - a name that a backslash- or percent-decoding parser reads as a captcha
//!   field (`name="lot%5Fnumber"`, `name="lot\_number"`);
//! - a Content-Transfer-Encoding other than 7bit, 8bit or binary (RFC 7578
//!   §4.7; some parsers decode base64 or quoted-printable), and on a captcha
//!   part a Content-Type other than UTF-8 `text/plain`.

use bytes::Bytes;
use memchr::memmem;

use super::params;
use super::{FieldError, Found, ambiguous, captcha_index, plain_charset};

/// What both readings must agree on, part by part.
#[derive(Debug, PartialEq, Eq)]
struct PartShape {
    name: String,
    is_file: bool,
    len: usize,
}

pub(super) async fn strip(
    body: Bytes,
    boundary: &str,
    found: &mut Found,
) -> Result<Bytes, FieldError> {
    let malformed = |why: &str| FieldError::Malformed(format!("multipart body: {why}"));

    // The byte-level reading first: it refuses what multer would accept.
    let parts = split(&body, boundary)?;

    // Second reading: multer, for names and values.
    let stream = futures_util::stream::once({
        let body = body.clone();
        async move { Ok::<Bytes, std::io::Error>(body) }
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut shapes = Vec::with_capacity(parts.len());
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|_| malformed("cannot be parsed"))?
    {
        let name = field.name().unwrap_or("").to_owned();
        let is_file = field.file_name().is_some();
        let is_captcha = captcha_index(&name)?.is_some();
        if is_captcha && is_file {
            return Err(FieldError::Malformed(format!(
                "{name} must be a text field, not a file"
            )));
        }
        let data = field
            .bytes()
            .await
            .map_err(|_| malformed("cannot be parsed"))?;
        let len = data.len();
        if is_captcha {
            found.offer(&name, || {
                String::from_utf8(data.to_vec())
                    .map_err(|_| FieldError::Malformed(format!("{name} is not valid UTF-8")))
            })?;
        }
        shapes.push(PartShape { name, is_file, len });
    }

    if parts.iter().map(|p| &p.shape).ne(shapes.iter()) {
        return Err(ambiguous("multipart parts read two ways"));
    }
    if !parts.iter().any(|p| p.is_captcha) {
        return Ok(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut from = 0;
    for part in parts.iter().filter(|p| p.is_captcha) {
        out.extend_from_slice(&body[from..part.start]);
        from = part.end;
    }
    out.extend_from_slice(&body[from..]);
    Ok(Bytes::from(out))
}

/// A part: from the first byte of its delimiter line to the first byte of
/// the next delimiter line (so removing it removes exactly one part).
struct Part {
    start: usize,
    end: usize,
    is_captcha: bool,
    shape: PartShape,
}

/// Splits at delimiter lines (`--boundary` at the start or after CRLF).
fn split(body: &[u8], boundary: &str) -> Result<Vec<Part>, FieldError> {
    let malformed = |why: &str| FieldError::Malformed(format!("multipart body: {why}"));
    let marker = format!("--{boundary}");
    let finder = memmem::Finder::new(marker.as_bytes());

    // Every occurrence of the marker, overlapping ones included, must be a
    // delimiter line: anything else is a delimiter to some other parser.
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(i) = body.get(from..).and_then(|rest| finder.find(rest)) {
        let at = from + i;
        if at != 0 && !body[..at].ends_with(b"\r\n") {
            return Err(ambiguous(
                "a multipart boundary that is not at the start of a CRLF line",
            ));
        }
        starts.push(at);
        from = at + 1;
    }
    let mut parts = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let after = start + marker.len();
        let rest = &body[after..];
        if rest.starts_with(b"--") {
            // The close delimiter: everything after is the epilogue.
            if i + 1 != starts.len() {
                return Err(ambiguous("a multipart boundary after the close delimiter"));
            }
            return Ok(parts);
        }
        if !rest.starts_with(b"\r\n") {
            return Err(ambiguous("a multipart delimiter line not ended by CRLF"));
        }
        let Some(&end) = starts.get(i + 1) else {
            return Err(malformed("no close delimiter"));
        };
        let section = &body[after + 2..end];
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let (consumed, headers) = match httparse::parse_headers(section, &mut headers) {
            Ok(httparse::Status::Complete((consumed, headers))) => (consumed, headers),
            _ => return Err(malformed("a part's headers cannot be parsed")),
        };
        if has_bare_line_break(&section[..consumed]) {
            return Err(ambiguous("a bare LF or CR in a multipart part's headers"));
        }
        let (name, is_file) = disposition(headers)?;
        let is_captcha = captcha_index(&name)?.is_some();
        check_part_headers(headers, is_captcha)?;
        // The content ends at the CRLF that begins the next delimiter line.
        let len = end.saturating_sub(2).saturating_sub(after + 2 + consumed);
        parts.push(Part {
            start,
            end,
            is_captcha,
            shape: PartShape { name, is_file, len },
        });
    }
    Err(malformed("no close delimiter"))
}

fn has_bare_line_break(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, b)| match b {
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        _ => false,
    })
}

/// The part's name, and whether it is a file, from its one
/// `Content-Disposition: form-data; name="..."`.
fn disposition(headers: &[httparse::Header<'_>]) -> Result<(String, bool), FieldError> {
    let mut dispositions = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-disposition"));
    let (Some(header), None) = (dispositions.next(), dispositions.next()) else {
        return Err(ambiguous(
            "a multipart part without exactly one Content-Disposition",
        ));
    };
    let text = std::str::from_utf8(header.value)
        .map_err(|_| FieldError::Malformed("multipart body: a non-UTF-8 part header".into()))?;
    let parsed =
        params::parse(text).map_err(|why| ambiguous(format!("Content-Disposition: {why}")))?;
    if !parsed.value.eq_ignore_ascii_case("form-data") {
        return Err(ambiguous("a multipart disposition other than form-data"));
    }
    let Some(name) = parsed.get("name") else {
        return Err(ambiguous("a multipart part without a name"));
    };
    check_decoded_name(name)?;
    Ok((name.to_owned(), parsed.get("filename").is_some()))
}

/// Refuses a name that a parser decoding backslash escapes or percent
/// escapes (as some do for RFC 5987-style names) reads as a captcha field.
fn check_decoded_name(name: &str) -> Result<(), FieldError> {
    if !name.contains(['\\', '%']) {
        return Ok(());
    }
    let unescaped = unescape_backslashes(name);
    for candidate in [
        percent_decode(name),
        unescaped.clone(),
        percent_decode(&unescaped),
    ] {
        if !matches!(captcha_index(&candidate), Ok(None)) {
            return Err(ambiguous(
                "a multipart name that decodes to a captcha field",
            ));
        }
    }
    Ok(())
}

fn unescape_backslashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Content-Transfer-Encoding and, on a captcha part, Content-Type.
fn check_part_headers(
    headers: &[httparse::Header<'_>],
    is_captcha: bool,
) -> Result<(), FieldError> {
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap_or("\u{FFFD}"))
    };
    for encoding in values("content-transfer-encoding") {
        if !["7bit", "8bit", "binary"]
            .iter()
            .any(|ok| encoding.trim().eq_ignore_ascii_case(ok))
        {
            return Err(ambiguous(
                "a multipart Content-Transfer-Encoding other than 7bit, 8bit or binary",
            ));
        }
    }
    if is_captcha {
        let mut types = values("content-type");
        match (types.next(), types.next()) {
            (None, _) => {}
            (Some(ct), None) => {
                let parsed = params::parse(ct)
                    .map_err(|why| ambiguous(format!("a captcha part's Content-Type: {why}")))?;
                if !parsed.value.eq_ignore_ascii_case("text/plain")
                    || !plain_charset(parsed.get("charset"))
                {
                    return Err(ambiguous(
                        "a captcha part whose Content-Type is not UTF-8 text/plain",
                    ));
                }
            }
            (Some(_), Some(_)) => {
                return Err(ambiguous("a multipart part with two Content-Type headers"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, &str)], boundary: &str) -> String {
        let mut s = String::from("preamble\r\n");
        for (name, value) in parts {
            s.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        s.push_str(&format!("--{boundary}--\r\nepilogue"));
        s
    }

    async fn run(input: &str, boundary: &str) -> Result<(String, Found), FieldError> {
        let mut found = Found::default();
        let out = strip(Bytes::from(input.to_owned()), boundary, &mut found).await?;
        Ok((String::from_utf8(out.to_vec()).expect("utf8"), found))
    }

    #[tokio::test]
    async fn captcha_parts_are_removed_byte_for_byte() {
        let b = "XyZ";
        let input = body(
            &[
                ("a", "1"),
                ("lot_number", "abc"),
                ("b", "line\r\nline"),
                ("gen_time", "17"),
            ],
            b,
        );
        let (out, found) = run(&input, b).await.expect("strips");
        assert_eq!(out, body(&[("a", "1"), ("b", "line\r\nline")], b));
        assert_eq!(found.values[0].as_deref(), Some("abc"));
        assert_eq!(found.values[3].as_deref(), Some("17"));
    }

    #[tokio::test]
    async fn a_captcha_file_part_is_refused() {
        let b = "B";
        let input = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"lot_number\"; filename=\"x\"\r\n\r\nabc\r\n--{b}--\r\n"
        );
        assert!(matches!(
            run(&input, b).await,
            Err(FieldError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_body_without_captcha_parts_is_returned_as_is() {
        let b = "B";
        let input = body(&[("a", "1")], b);
        assert_eq!(run(&input, b).await.expect("ok").0, input);
    }

    fn one_part(b: &str, headers: &str) -> String {
        format!("--{b}\r\n{headers}\r\n\r\nabc\r\n--{b}--\r\n")
    }

    #[tokio::test]
    async fn part_headers_parsers_read_differently_are_ambiguous() {
        let b = "B";
        for headers in [
            "Content-Disposition: form-data; name*=UTF-8''lot_number",
            "Content-Disposition: form-data; name=\"x\"; name*=UTF-8''lot_number",
            "Content-Disposition: form-data; name=\"x\"; filename*=UTF-8''a.txt",
            "Content-Disposition: form-data; name=\"x\"\r\nContent-Disposition: form-data; name=\"lot_number\"",
            "Content-Disposition: attachment; name=\"lot_number\"",
            "Content-Disposition: form-data-x; name=\"a\"",
            "Content-Disposition: form-data; name=\"a\"; name=\"lot_number\"",
            "Content-Disposition: form-data; name=\"lot\\\"_number\"",
            "Content-Disposition: form-data; name=\"lot\\_number\"",
            "Content-Disposition: form-data; name=\"lot%5Fnumber\"",
            "Content-Disposition: form-data; name=\"LOT_NUMBER\"",
            "Content-Disposition: form-data; name=\"lot_number[]\"",
            "Content-Disposition: form-data; x=\"y name=lot_number\"",
            "Content-Type: text/plain",
            "Content-Disposition: form-data; name=\"a\"\nX-Other: 1",
            "Content-Disposition: form-data; name=\"a\"\r\nContent-Transfer-Encoding: base64",
            "Content-Disposition: form-data; name=\"lot_number\"\r\nContent-Type: text/plain; charset=utf-16",
            "Content-Disposition: form-data; name=\"lot_number\"\r\nContent-Type: application/octet-stream",
        ] {
            let input = one_part(b, headers);
            assert!(
                matches!(run(&input, b).await, Err(FieldError::Ambiguous(_))),
                "{headers}: {:?}",
                run(&input, b).await.map(|r| r.0)
            );
        }
        // The ordinary shapes are still read.
        for headers in [
            "Content-Disposition: form-data; name=\"a\"",
            "content-disposition: form-data; name=a",
            "Content-Disposition: form-data; name=\"a%20b\\c\"; filename=\"C:\\x.txt\"",
            "Content-Disposition: form-data; name=\"lot_number\"\r\nContent-Type: text/plain; charset=UTF-8",
            "Content-Disposition: form-data; name=\"a\"\r\nContent-Transfer-Encoding: binary",
        ] {
            let input = one_part(b, headers);
            assert!(run(&input, b).await.is_ok(), "{headers}");
        }
    }

    #[tokio::test]
    async fn delimiters_not_on_their_own_crlf_line_are_ambiguous() {
        let b = "B";
        let ok = body(&[("a", "1"), ("lot_number", "x")], b);
        for bad in [
            // Bare LF, bare CR and padding around a delimiter.
            ok.replace(
                "\r\n--B\r\nContent-Disposition: form-data; name=\"lot",
                "\n--B\nContent-Disposition: form-data; name=\"lot",
            ),
            ok.replace("1\r\n--B", "1\n--B"),
            ok.replace("1\r\n--B", "1\r--B"),
            ok.replace(
                "--B\r\nContent-Disposition: form-data; name=\"lot",
                "--B \r\nContent-Disposition: form-data; name=\"lot",
            ),
            // The boundary inside a part, or after the close delimiter.
            ok.replace("\"a\"\r\n\r\n1", "\"a\"\r\n\r\n1--B"),
            format!("{ok}\r\n--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ny\r\n--B--"),
        ] {
            assert!(
                matches!(run(&bad, b).await, Err(FieldError::Ambiguous(_))),
                "{bad:?}: {:?}",
                run(&bad, b).await.map(|r| r.0)
            );
        }
        assert!(run(&ok, b).await.is_ok());
    }

    #[tokio::test]
    async fn truncated_bodies_are_malformed() {
        let b = "B";
        let input =
            format!("--{b}\r\nContent-Disposition: form-data; name=\"lot_number\"\r\n\r\nabc");
        assert!(matches!(
            run(&input, b).await,
            Err(FieldError::Malformed(_))
        ));
    }
}
