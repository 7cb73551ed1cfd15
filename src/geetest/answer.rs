//! GeeTest's three kinds of answer, all HTTP 200 with JSON:
//! pass `{"status":"success","result":"success",...}`, fail
//! `{"status":"success","result":"fail","reason":...}`, and error
//! `{"status":"error","code":"-50005","msg":...}`. A pass's `captcha_args`
//! (what GeeTest saw of the challenge) is not needed and not read.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

/// What GeeTest said about a proof.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Fail {
        reason: String,
    },
    /// A malformed request (possibly attacker-made): a deny, never fail-open.
    Error {
        code: String,
        msg: String,
    },
}

#[derive(Deserialize)]
struct Raw<'a> {
    /// Borrowed from the answer's bytes unless it holds an escape.
    #[serde(borrow)]
    status: Cow<'a, str>,
    result: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    msg: Option<String>,
}

impl Verdict {
    /// Parses an answer body; `Err` names what was wrong (never echoes the body).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let raw: Raw =
            serde_json::from_slice(body).map_err(|e| format!("not a GeeTest answer: {e}"))?;
        match (&*raw.status, raw.result.as_deref()) {
            ("success", Some("success")) => Ok(Self::Pass),
            ("success", Some("fail")) => Ok(Self::Fail {
                reason: raw.reason.unwrap_or_default(),
            }),
            ("error", _) => Ok(Self::Error {
                // Documented as a string ("-50005"); accept a number too.
                code: match raw.code {
                    Some(Value::String(s)) => s,
                    Some(Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                },
                msg: raw.msg.unwrap_or_default(),
            }),
            (status, result) => Err(format!(
                "unexpected status {status:?} with result {result:?}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_documented_shapes_parse() {
        let pass = br#"{"status":"success","result":"success","reason":"","captcha_args":{"used_type":"slide","lot_number":"x"}}"#;
        assert_eq!(Verdict::parse(pass), Ok(Verdict::Pass));
        let fail = br#"{"status":"success","result":"fail","reason":"pass_token expire","captcha_args":{}}"#;
        assert_eq!(
            Verdict::parse(fail),
            Ok(Verdict::Fail {
                reason: "pass_token expire".into()
            })
        );
        let error = br#"{"status":"error","code":"-50005","msg":"illegal gen_time","desc":{"type":"defined error"}}"#;
        assert_eq!(
            Verdict::parse(error),
            Ok(Verdict::Error {
                code: "-50005".into(),
                msg: "illegal gen_time".into()
            })
        );
    }

    #[test]
    fn anything_else_is_unparsable() {
        for body in [
            &b"<html>"[..],
            b"{}",
            br#"{"status":"success"}"#,
            br#"{"status":"weird","result":"success"}"#,
        ] {
            assert!(
                Verdict::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
