//! The validate client: `POST {api_server}/validate?captcha_id=ID` over a
//! pooled keep-alive connection, the whole exchange bounded by one timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};

use super::breaker::{Breaker, Permit};
use super::{CaptchaKey, Proof, Verdict};
use crate::pool::Pool;

/// GeeTest's answers are small; anything larger is not one.
const MAX_ANSWER: usize = 64 * 1024;

/// How long an unused connection to a validate server is kept.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(90);

/// The bytes `application/x-www-form-urlencoded` leaves as they are (the
/// WHATWG URL standard's set, as `form_urlencoded` uses); every other byte
/// is percent-encoded.
const FORM_ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// The validate request's form body: the proof's four fields and its
/// sign_token.
pub fn validate_body(proof: &Proof, sign_token: &str) -> String {
    // Room for the names, and for captcha_output's base64 with every byte
    // percent-encoded, so the body is written without regrowing.
    let capacity = 80
        + proof.lot_number.len()
        + 3 * proof.captcha_output.len()
        + proof.pass_token.len()
        + proof.gen_time.len()
        + sign_token.len();
    let mut body = String::with_capacity(capacity);
    for (name, value) in [
        ("lot_number", proof.lot_number.as_str()),
        ("captcha_output", &proof.captcha_output),
        ("pass_token", &proof.pass_token),
        ("gen_time", &proof.gen_time),
        ("sign_token", sign_token),
    ] {
        append_form_pair(&mut body, name, value);
    }
    body
}

/// Appends `name=value` (after a `&` if `out` has pairs already), both
/// form-encoded. Not `form_urlencoded::Serializer`: it decides each byte by a
/// chain of range comparisons, and a proof's bytes are random, so most of
/// them mispredict: 1.9-2.2 µs for a validate body against 0.3-0.4 µs with
/// `percent_encoding`'s one bitset lookup a byte (`cargo bench --bench
/// proof`). The output differs only for a space, `%20` here and `+` there,
/// which decode alike; no field of a checked proof holds one.
fn append_form_pair(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.extend(percent_encoding::utf8_percent_encode(name, FORM_ENCODED));
    out.push('=');
    out.extend(percent_encoding::utf8_percent_encode(value, FORM_ENCODED));
}

/// Every way of not getting a verdict; all count as "GeeTest cannot be
/// reached" for the outage policy.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("no answer within the timeout")]
    Timeout,
    #[error("transport: {0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("unparsable answer: {0}")]
    Unparsable(String),
    /// Every server's circuit is open: not called at all.
    #[error("every validate server is failing (circuit open)")]
    CircuitOpen,
}

impl ValidateError {
    /// A fixed word for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Transport(_) => "transport",
            Self::Status(_) => "status",
            Self::Unparsable(_) => "unparsable",
            Self::CircuitOpen => "circuit_open",
        }
    }
}

#[derive(Clone)]
pub struct ValidateClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tried in order on transport failure.
    servers: Vec<Server>,
    timeout: Duration,
}

struct Server {
    /// The endpoint's path, which requests carry (origin-form).
    path: String,
    /// Keep-alive connections to this server, per worker thread.
    pool: Pool<Full<Bytes>>,
    breaker: Breaker,
}

impl std::fmt::Debug for ValidateClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut servers = f.debug_tuple("ValidateClient");
        for s in &self.inner.servers {
            servers.field(&format_args!("{:?} {}", s.pool, s.path));
        }
        servers.finish()
    }
}

impl ValidateClient {
    /// A client for `api_servers` (tried in order), with GeeTest's demo
    /// defaults for the breaker: 5 failures open a circuit for 10 s.
    pub fn new(api_servers: &[Uri], timeout: Duration) -> Self {
        Self::with_breaker(api_servers, timeout, 5, Duration::from_secs(10), 1)
    }

    /// `workers`: how many worker threads will call it (one pool each).
    pub fn with_breaker(
        api_servers: &[Uri],
        timeout: Duration,
        failures: u32,
        cooldown: Duration,
        workers: usize,
    ) -> Self {
        let servers = api_servers
            .iter()
            .map(|uri| Server {
                path: format!("{}/validate", uri.path().trim_end_matches('/')),
                pool: Pool::new(uri, timeout, IDLE_CONNECTION_TIMEOUT, workers),
                breaker: Breaker::new(failures, cooldown),
            })
            .collect();
        Self {
            inner: Arc::new(Inner { servers, timeout }),
        }
    }

    /// Whether the circuit of the server at `index` is open.
    pub fn circuit_open(&self, index: usize) -> bool {
        self.inner
            .servers
            .get(index)
            .is_some_and(|s| s.breaker.is_open())
    }

    /// Asks GeeTest about `proof` with the credential `captcha_id`/`key`.
    /// Servers are tried in order while the timeout budget lasts; a server
    /// whose circuit is open is skipped without waiting.
    pub async fn validate(
        &self,
        captcha_id: &str,
        key: &CaptchaKey,
        proof: &Proof,
    ) -> Result<Verdict, ValidateError> {
        let sign = key.sign(&proof.lot_number);
        let body = Bytes::from(validate_body(proof, &sign));
        let mut query = String::with_capacity(16 + 3 * captcha_id.len());
        append_form_pair(&mut query, "captcha_id", captcha_id);
        let started = tokio::time::Instant::now();
        let mut last_error = ValidateError::CircuitOpen;
        let servers = &self.inner.servers;
        for (i, server) in servers.iter().enumerate() {
            let permit = server.breaker.permit();
            if permit == Permit::Refused {
                continue;
            }
            // Each remaining server gets an equal share of what is left.
            let left = self.inner.timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            let share = left / u32::try_from(servers.len() - i).unwrap_or(1);
            let req = Request::post([server.path.as_str(), "?", &query].concat())
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )
                .header(
                    USER_AGENT,
                    HeaderValue::from_static(concat!("gatekeeper/", env!("CARGO_PKG_VERSION"))),
                )
                .body(Full::new(body.clone()))
                .map_err(|e| ValidateError::Transport(e.to_string()))?;
            let result = match tokio::time::timeout(share, exchange(&server.pool, req)).await {
                Ok(result) => result,
                Err(_) => Err(ValidateError::Timeout),
            };
            match result {
                Ok(verdict) => {
                    server.breaker.success();
                    return Ok(verdict);
                }
                Err(e) => {
                    server.breaker.failure(permit);
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }
}

/// One request and its answer; the connection goes back to the pool once the
/// answer has been read in full.
async fn exchange(
    pool: &Pool<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Verdict, ValidateError> {
    let (resp, lease) = pool
        .send(req)
        .await
        .map_err(|e| ValidateError::Transport(error_chain(e.as_ref())))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| ValidateError::Transport(e.to_string()))?
        .to_bytes();
    if let Some(lease) = lease {
        lease.release();
    }
    if status != StatusCode::OK {
        return Err(ValidateError::Status(status));
    }
    Verdict::parse(&body).map_err(ValidateError::Unparsable)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::append_form_pair;

    /// The same bytes `form_urlencoded` writes, for every value without a
    /// space, and the pairs decode back to what went in.
    #[test]
    fn form_pairs_encode_as_form_urlencoded_does() {
        let pairs = [
            ("lot_number", "4dc3cfc2cdff448cad8d13107198d473"),
            ("captcha_output", "fPhM8e-Y_Qe7r9Ag0DfG3A+/x*.=="),
            ("odd_name&=", "a&b=c%d\u{e9}\u{1f600}~!'()"),
            ("empty", ""),
        ];
        let mut ours = String::new();
        let mut theirs = form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            append_form_pair(&mut ours, name, value);
            theirs.append_pair(name, value);
        }
        assert_eq!(ours, theirs.finish());
        let decoded: Vec<(String, String)> = form_urlencoded::parse(ours.as_bytes())
            .into_owned()
            .collect();
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn a_space_is_percent_encoded_and_decodes_alike() {
        let mut ours = String::new();
        append_form_pair(&mut ours, "a b", "c d");
        assert_eq!(ours, "a%20b=c%20d");
        let decoded: Vec<_> = form_urlencoded::parse(ours.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(decoded, [("a b".to_string(), "c d".to_string())]);
    }
}
