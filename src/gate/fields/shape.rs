//! Cheap local shape checks, before any GeeTest call (GEETEST.md, "Field
//! shapes"): lenient about what GeeTest might change, strict about length.

use super::FieldError;
use crate::geetest::Proof;

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn check_shapes(proof: &Proof, captcha_id: Option<&str>) -> Result<(), FieldError> {
    let bad = |name: &str, what: &str| Err(FieldError::Malformed(format!("{name} {what}")));
    // 32 hex: a UUIDv4 without dashes.
    if proof.lot_number.len() != 32 || !is_hex(&proof.lot_number) {
        return bad("lot_number", "is not 32 hex characters");
    }
    // 64 hex in every sample; allow some room.
    if proof.pass_token.is_empty() || proof.pass_token.len() > 256 || !is_hex(&proof.pass_token) {
        return bad("pass_token", "is not up to 256 hex characters");
    }
    // Unix seconds, 10 digits today.
    if proof.gen_time.is_empty()
        || proof.gen_time.len() > 12
        || !proof.gen_time.bytes().all(|b| b.is_ascii_digit())
    {
        return bad("gen_time", "is not a number of seconds");
    }
    // AES ciphertext in base64url (or standard base64), seen from 24 to 236 characters.
    let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/' | b'=');
    if proof.captcha_output.is_empty()
        || proof.captcha_output.len() > 1024
        || !proof.captcha_output.bytes().all(base64)
    {
        return bad("captcha_output", "is not base64 of up to 1024 characters");
    }
    if let Some(id) = captcha_id
        && (id.len() != 32 || !is_hex(id))
    {
        return bad("captcha_id", "is not 32 hex characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof() -> Proof {
        Proof {
            lot_number: "4dc3cfc2cdff448cad8d13107198d473".into(),
            captcha_output: "fPhM8e-Y_Qe7r9Ag0DfG3A==".into(),
            pass_token: "a".repeat(64),
            gen_time: "1700000000".into(),
        }
    }

    #[test]
    fn plausible_proofs_pass() {
        assert!(check_shapes(&proof(), Some("647f5ed2ed8acb4be36784e01556bb71")).is_ok());
        assert!(check_shapes(&proof(), None).is_ok());
    }

    #[test]
    fn each_bad_shape_is_named_without_its_value() {
        type Mutation = fn(&mut Proof);
        let cases: [(Mutation, &str); 4] = [
            (|p| p.lot_number = "xyz".into(), "lot_number"),
            (|p| p.pass_token = "zz".into(), "pass_token"),
            (|p| p.gen_time = "12a".into(), "gen_time"),
            (|p| p.captcha_output = "<script>".into(), "captcha_output"),
        ];
        for (mutate, name) in cases {
            let mut p = proof();
            mutate(&mut p);
            match check_shapes(&p, None) {
                Err(FieldError::Malformed(why)) => {
                    assert!(why.starts_with(name), "{why}");
                    assert!(!why.contains("<script>") && !why.contains("zz"));
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(check_shapes(&proof(), Some("nothex")).is_err());
    }
}
