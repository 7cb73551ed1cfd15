//! An offline GeeTest CAPTCHA v4, for development, tests and benchmarks.
//!
//! It speaks the validate API as GEETEST.md documents it (`GET` or `POST
//! /validate`, parameters in the query or a form body, the checks in the
//! observed order, the three answer shapes, always HTTP 200), mints real proofs
//! for its credentials as the browser widget would, and can be told to
//! misbehave the ways a real outage does.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET/POST /validate` | GeeTest's secondary validation |
//! | `GET/POST /_sim/mint?captcha_id=ID` | a fresh proof: the five fields as JSON (`&count=N`: an array of N) |
//! | `POST /_sim/behaviour` | `{"mode": "normal|slow|fail|error|garbage|http500|drop", "delay_ms": N}` |
//! | `GET /_sim/stats` | validations, accepted connections, recent validations |
//! | `GET /gt4.js` | a stand-in for GeeTest's browser widget, same API |

mod server;
mod state;

pub use server::{handle, run, serve};
pub use state::{Behaviour, MintedProof, SimStats, Simulator, ValidateRecord};

use std::net::SocketAddr;
use std::time::Duration;

/// The credential the simulator (and the demo) use when none is given.
pub const DEMO_CAPTCHA_ID: &str = "647f5ed2ed8acb4be36784e01556bb71";
/// Not a secret: it only opens the simulator. The key of GEETEST.md's test vector.
pub const DEMO_CAPTCHA_KEY: &str = "b09a7aafbfd83f73b35a9b530d0337bf";

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// A credential the simulator accepts, as ID:KEY (repeatable). Defaults
    /// to a demo credential.
    #[arg(long = "captcha", value_name = "ID:KEY", value_parser = parse_credential)]
    pub captchas: Vec<(String, String)>,
    /// How long a minted proof stays valid.
    #[arg(long, default_value = "10m", value_parser = crate::config::parse_duration)]
    pub proof_lifetime: Duration,
}

fn parse_credential(s: &str) -> Result<(String, String), String> {
    let (id, key) = s.split_once(':').ok_or("expected ID:KEY")?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the captcha id must be 32 hex characters".into());
    }
    if key.len() != 32 {
        return Err("the captcha key must be 32 characters".into());
    }
    Ok((id.to_ascii_lowercase(), key.to_owned()))
}
