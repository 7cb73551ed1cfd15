//! `multipart/form-data` bodies (RFC 7578).
//!
//! multer parses the body and yields the field values; the same body is then
//! cut at its delimiter lines to drop the captcha parts byte for byte, keeping
//! the boundary, preamble, every other part and the close delimiter. The two
//! readings must agree on the sequence of part names, or the body is refused:
//! a body two parsers read differently is an attack on one of them.

use bytes::Bytes;
use memchr::memmem;

use super::{CAPTCHA_FIELDS, FieldError, Found};

pub(super) async fn strip(
    body: Bytes,
    boundary: &str,
    found: &mut Found,
) -> Result<Bytes, FieldError> {
    let malformed = |why: &str| FieldError::Malformed(format!("multipart body: {why}"));

    // First reading: multer, for names and values.
    let stream = futures_util::stream::once({
        let body = body.clone();
        async move { Ok::<Bytes, std::io::Error>(body) }
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut names = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|_| malformed("cannot be parsed"))?
    {
        let name = field.name().unwrap_or("").to_owned();
        let has_filename = field.file_name().is_some();
        let is_captcha = CAPTCHA_FIELDS.contains(&name.as_str());
        if is_captcha && has_filename {
            return Err(FieldError::Malformed(format!(
                "{name} must be a text field, not a file"
            )));
        }
        let data = field
            .bytes()
            .await
            .map_err(|_| malformed("cannot be parsed"))?;
        if is_captcha {
            found.offer(&name, || {
                String::from_utf8(data.to_vec())
                    .map_err(|_| FieldError::Malformed(format!("{name} is not valid UTF-8")))
            })?;
        }
        names.push(name);
    }

    // Second reading: the delimiter lines, for byte positions.
    let parts = split(&body, boundary).ok_or_else(|| malformed("delimiters are inconsistent"))?;
    if parts
        .iter()
        .map(|p| p.name.as_str())
        .ne(names.iter().map(String::as_str))
    {
        return Err(malformed("parts are ambiguous"));
    }
    if !parts
        .iter()
        .any(|p| CAPTCHA_FIELDS.contains(&p.name.as_str()))
    {
        return Ok(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut from = 0;
    for part in parts
        .iter()
        .filter(|p| CAPTCHA_FIELDS.contains(&p.name.as_str()))
    {
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
    name: String,
}

/// Splits at delimiter lines (`--boundary` at the start or after CRLF).
fn split(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delimiter = format!("\r\n--{boundary}");
    let first = format!("--{boundary}");
    let finder = memmem::Finder::new(delimiter.as_bytes());

    // Positions where a delimiter line starts ("--boundary").
    let mut starts = Vec::new();
    if body.starts_with(first.as_bytes()) {
        starts.push(0);
    }
    starts.extend(finder.find_iter(body).map(|i| i + 2));
    let mut parts = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let after = start + first.len();
        let rest = body.get(after..)?;
        if rest.starts_with(b"--") {
            // The close delimiter: everything after is the epilogue.
            return Some(parts);
        }
        let line_end = memmem::find(rest, b"\r\n")?;
        // Only transport padding may follow the boundary on its line.
        if !rest[..line_end].iter().all(|b| *b == b' ' || *b == b'\t') {
            return None;
        }
        let headers_at = after + line_end + 2;
        let end = *starts.get(i + 1)?;
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let name = match httparse::parse_headers(body.get(headers_at..end)?, &mut headers) {
            Ok(httparse::Status::Complete((_, headers))) => disposition_name(headers)?,
            _ => return None,
        };
        parts.push(Part { start, end, name });
    }
    // No close delimiter.
    None
}

/// The `name` parameter of `Content-Disposition: form-data; name="..."`.
fn disposition_name(headers: &[httparse::Header<'_>]) -> Option<String> {
    let value = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-disposition"))
        .and_then(|h| std::str::from_utf8(h.value).ok())?;
    value.split(';').skip(1).find_map(|param| {
        let (key, val) = param.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("name")
            .then(|| val.trim().trim_matches('"').to_owned())
    })
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
