//! GeeTest CAPTCHA v4 secondary validation (see GEETEST.md in the project docs).
//!
//! `sign` computes `sign_token`, `client` asks the validate API, `answer` reads its
//! three kinds of answer.

pub mod answer;
mod breaker;
pub mod client;
pub mod sign;

pub use answer::Verdict;
pub use client::{ValidateClient, ValidateError};
pub use sign::{CaptchaKey, sign_token};

use std::fmt;

/// The four fields the browser widget yields and the validate API takes,
/// passed through unchanged. `captcha_id` travels separately: it selects
/// the credential and is never trusted for the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Proof {
    pub lot_number: String,
    pub captcha_output: String,
    pub pass_token: String,
    pub gen_time: String,
}

/// Secrets (`captcha_output`, `pass_token`) never appear in `Debug`, so a proof
/// can be logged without leaking them.
impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proof")
            .field("lot_number", &self.lot_number)
            .field("gen_time", &self.gen_time)
            .finish_non_exhaustive()
    }
}
