//! Header values of the form `value *( ";" name=value )`, read strictly.
//!
//! Content-Type (RFC 9110 §8.3.1) and a part's Content-Disposition (RFC 7578
//! §4.2) carry parameters that parsers read in different ways: the first or
//! the last of two `boundary` parameters, RFC 2231 `name*=` forms, backslash
//! escapes inside quoted strings, white space around `=`. On a gated body
//! every such shape is refused, so that whatever parser the application uses
//! reads the same parameters as gatekeeper.

/// The value before the first `;`, and the parameters with lower-cased names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parameterised<'a> {
    pub value: &'a str,
    pub params: Vec<(String, &'a str)>,
}

impl Parameterised<'_> {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses `text`, refusing anything some parser could read differently:
/// a parameter given twice, an RFC 2231 extended parameter (`name*`), white
/// space around `=`, a backslash before a quote inside a quoted string (where
/// the string ends depends on the parser), and any other syntax error.
/// Empty parameters (`a/b;` or `a/b; ;c=d`) are accepted: every parser
/// skips them.
pub(crate) fn parse(text: &str) -> Result<Parameterised<'_>, String> {
    let bytes = text.as_bytes();
    let first = memchr::memchr(b';', bytes).unwrap_or(bytes.len());
    let value = text[..first].trim_matches([' ', '\t']);
    let mut params: Vec<(String, &str)> = Vec::new();
    let mut i = first;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && matches!(bytes[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        if bytes[i] != b';' {
            return Err("unexpected text after a parameter".into());
        }
        i += 1;
        skip_ws(&mut i);
        if i >= bytes.len() || bytes[i] == b';' {
            continue;
        }
        let name_start = i;
        while i < bytes.len() && is_tchar(bytes[i]) {
            i += 1;
        }
        let name = text[name_start..i].to_ascii_lowercase();
        if name.is_empty() || bytes.get(i) != Some(&b'=') {
            return Err("a parameter is not name=value".into());
        }
        if name.ends_with('*') {
            return Err(format!("an RFC 2231 extended parameter ({name})"));
        }
        i += 1;
        let value = if bytes.get(i) == Some(&b'"') {
            let start = i + 1;
            let Some(len) = memchr::memchr(b'"', &bytes[start..]) else {
                return Err("an unterminated quoted string".into());
            };
            let end = start + len;
            if end > start && bytes[end - 1] == b'\\' {
                return Err("a backslash-escaped quote".into());
            }
            if bytes[start..end]
                .iter()
                .any(|b| matches!(b, b'\r' | b'\n' | 0))
            {
                return Err("a control character in a quoted string".into());
            }
            i = end + 1;
            &text[start..end]
        } else {
            let start = i;
            while i < bytes.len() && is_tchar(bytes[i]) {
                i += 1;
            }
            if i == start {
                return Err("a parameter without a value".into());
            }
            &text[start..i]
        };
        if params.iter().any(|(n, _)| *n == name) {
            return Err(format!("the parameter {name} given twice"));
        }
        params.push((name, value));
    }
    Ok(Parameterised { value, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_values_parse() {
        let p = parse("multipart/form-data; boundary=----WebKitFormBoundary7MA4").expect("ok");
        assert_eq!(p.value, "multipart/form-data");
        assert_eq!(p.get("boundary"), Some("----WebKitFormBoundary7MA4"));
        let p = parse(r#"form-data; name="a b"; FileName="c;d.txt""#).expect("ok");
        assert_eq!(p.get("name"), Some("a b"));
        assert_eq!(p.get("filename"), Some("c;d.txt"));
        assert_eq!(parse("application/json;").expect("ok").params, vec![]);
        assert_eq!(
            parse("text/plain;charset=UTF-8")
                .expect("ok")
                .get("charset"),
            Some("UTF-8")
        );
    }

    #[test]
    fn every_shape_parsers_disagree_on_is_refused() {
        for bad in [
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/form-data; boundary=a; BOUNDARY=b",
            "form-data; name=\"a\"; name=\"b\"",
            "form-data; name*=UTF-8''lot_number",
            "form-data; name=\"x\"; filename*=UTF-8''a.txt",
            "form-data; name = \"a\"",
            "form-data; name=\"lot\\\"_number\"",
            "form-data; name=\"a",
            "multipart/form-data; boundary=a,b",
            "multipart/form-data; boundary",
            "multipart/form-data; boundary=",
            "form-data; name=\"a\" x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
