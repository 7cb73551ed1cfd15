//! The validate client: `POST {api_server}/validate?captcha_id=ID` over a
//! pooled keep-alive connection, the whole exchange bounded by one timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{Proof, Verdict, sign_token};
use crate::config::CaptchaKey;

/// GeeTest's answers are small; anything larger is not one.
const MAX_ANSWER: usize = 64 * 1024;

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
}

impl ValidateError {
    /// A fixed word for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Transport(_) => "transport",
            Self::Status(_) => "status",
            Self::Unparsable(_) => "unparsable",
        }
    }
}

#[derive(Clone)]
pub struct ValidateClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `{api_server}/validate`, without the query.
    endpoint: String,
    timeout: Duration,
}

impl std::fmt::Debug for ValidateClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ValidateClient({})", self.inner.endpoint)
    }
}

impl ValidateClient {
    pub fn new(api_server: &Uri, timeout: Duration) -> Self {
        let connector = crate::server::tls::client_connector(timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let base = api_server.to_string();
        let endpoint = format!("{}/validate", base.trim_end_matches('/'));
        Self {
            inner: Arc::new(Inner {
                client,
                endpoint,
                timeout,
            }),
        }
    }

    /// Asks GeeTest about `proof` with the credential `captcha_id`/`key`.
    pub async fn validate(
        &self,
        captcha_id: &str,
        key: &CaptchaKey,
        proof: &Proof,
    ) -> Result<Verdict, ValidateError> {
        let sign = sign_token(key.expose(), &proof.lot_number);
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("lot_number", &proof.lot_number)
            .append_pair("captcha_output", &proof.captcha_output)
            .append_pair("pass_token", &proof.pass_token)
            .append_pair("gen_time", &proof.gen_time)
            .append_pair("sign_token", &sign)
            .finish();
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("captcha_id", captcha_id)
            .finish();
        let req = Request::post(format!("{}?{query}", self.inner.endpoint))
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("gatekeeper/", env!("CARGO_PKG_VERSION"))),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ValidateError::Transport(e.to_string()))?;
        match tokio::time::timeout(self.inner.timeout, self.exchange(req)).await {
            Ok(result) => result,
            Err(_) => Err(ValidateError::Timeout),
        }
    }

    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<Verdict, ValidateError> {
        let resp = self
            .inner
            .client
            .request(req)
            .await
            .map_err(|e| ValidateError::Transport(error_chain(&e)))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| ValidateError::Transport(e.to_string()))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(ValidateError::Status(status));
        }
        Verdict::parse(&body).map_err(ValidateError::Unparsable)
    }
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
