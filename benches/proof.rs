//! A proof's local work before GeeTest is asked: the shape checks and the
//! validate body, each timed against the way it was done before, in one run.
//!
//! cargo bench --bench proof
//!
//! The proofs are random, as real ones are: a check that branches on each
//! byte's class mispredicts on random bytes, which a loop over one repeated
//! proof would hide.

use std::hint::black_box;
use std::time::Instant;

use gatekeeper::gate::fields::check_shapes;
use gatekeeper::geetest::Proof;
use gatekeeper::geetest::client::validate_body;

const PROOFS: usize = 8192;
const ROUNDS: usize = 2_000_000;

/// xorshift64: reproducible random text, no dependency.
fn random_text(state: &mut u64, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            char::from(alphabet[(*state % alphabet.len() as u64) as usize])
        })
        .collect()
}

/// The checks as they were: the standard predicates, byte by byte.
fn shapes_by_predicates(p: &Proof) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/' | b'=');
    hex(&p.lot_number)
        && hex(&p.pass_token)
        && p.gen_time.bytes().all(|b| b.is_ascii_digit())
        && p.captcha_output.bytes().all(base64)
}

/// The body as it was: `form_urlencoded::Serializer`.
fn body_by_form_urlencoded(p: &Proof, sign: &str) -> String {
    form_urlencoded::Serializer::new(String::with_capacity(600))
        .append_pair("lot_number", &p.lot_number)
        .append_pair("captcha_output", &p.captcha_output)
        .append_pair("pass_token", &p.pass_token)
        .append_pair("gen_time", &p.gen_time)
        .append_pair("sign_token", sign)
        .finish()
}

fn time(name: &str, mut each: impl FnMut(usize) -> usize) -> f64 {
    let started = Instant::now();
    let mut sink = 0;
    for i in 0..ROUNDS {
        sink += each(i % PROOFS);
    }
    black_box(sink);
    let ns = started.elapsed().as_nanos() as f64 / ROUNDS as f64;
    println!("{name:<48} {ns:8.0} ns");
    ns
}

fn main() {
    let hex = b"0123456789abcdef";
    // captcha_output's alphabet as GeeTest's samples show it (base64url).
    let base64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut state = 0x9E37_79B9_7F4A_7C15;
    let proofs: Vec<(Proof, String)> = (0..PROOFS)
        .map(|_| {
            let proof = Proof {
                lot_number: random_text(&mut state, hex, 32),
                captcha_output: random_text(&mut state, base64, 128),
                pass_token: random_text(&mut state, hex, 64),
                gen_time: "1795817640".into(),
            };
            (proof, random_text(&mut state, hex, 64))
        })
        .collect();
    // Each variant is checked to agree with the other on every proof, so a
    // fast wrong answer cannot pass for speed.
    for (proof, sign) in &proofs {
        assert!(check_shapes(proof, None).is_ok() && shapes_by_predicates(proof));
        let ours = validate_body(proof, sign);
        let theirs = body_by_form_urlencoded(proof, sign);
        assert_eq!(
            form_urlencoded::parse(ours.as_bytes()).collect::<Vec<_>>(),
            form_urlencoded::parse(theirs.as_bytes()).collect::<Vec<_>>()
        );
    }
    for _ in 0..2 {
        let old = time("shape checks, standard predicates (before)", |i| {
            usize::from(shapes_by_predicates(black_box(&proofs[i].0)))
        });
        let new = time("shape checks, byte-class table (check_shapes)", |i| {
            usize::from(check_shapes(black_box(&proofs[i].0), None).is_ok())
        });
        println!("{:<48} {:8.1}x", "  before / now", old / new);
        let old = time("validate body, form_urlencoded (before)", |i| {
            body_by_form_urlencoded(black_box(&proofs[i].0), &proofs[i].1).len()
        });
        let new = time("validate body, percent_encoding (validate_body)", |i| {
            validate_body(black_box(&proofs[i].0), &proofs[i].1).len()
        });
        println!("{:<48} {:8.1}x", "  before / now", old / new);
    }
}
