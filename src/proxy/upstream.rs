//! The forwarder: requests to the upstream application over pooled keep-alive
//! connections.

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};

use super::body::{ProxyBody, Streamed};
use crate::config::UpstreamConfig;
use crate::pool::{BoxError, Pool};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No response head within `upstream.timeout` → 504.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// Could not connect, or the connection broke → 502.
    #[error("upstream unreachable: {0}")]
    Unreachable(#[source] BoxError),
}

impl UpstreamError {
    /// A fixed word for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Unreachable(_) => "unreachable",
        }
    }
}

#[derive(Debug)]
pub struct Upstream {
    pool: Pool<ProxyBody>,
    timeout: Duration,
}

impl Upstream {
    /// `pool_idle` bounds how long an unused pooled connection is kept;
    /// `workers` is how many worker threads will call it (one pool each).
    pub fn new(config: &UpstreamConfig, pool_idle: Duration, workers: usize) -> Self {
        let connector = crate::server::tls::client_connector(config.connect_timeout);
        Self {
            pool: Pool::new(connector, &config.url, pool_idle, workers),
            timeout: config.timeout,
        }
    }

    /// Sends `req` (whose URI may be absolute, as HTTP/2 gives it) to the
    /// upstream, keeping its headers as given. The response body streams;
    /// only the head is timed.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Streamed>, UpstreamError> {
        // The upstream gets origin-form (RFC 9112 §3.2.1).
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(path);
        }
        // The upstream leg is HTTP/1.1 whatever the client spoke.
        *req.version_mut() = Version::HTTP_11;
        match tokio::time::timeout(self.timeout, self.pool.send(req)).await {
            Ok(Ok((resp, lease))) => Ok(resp.map(|body| Streamed::leased(body, lease))),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(e)),
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        }
    }
}
