//! The forwarder: one pooled keep-alive client to the upstream application.

use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ProxyBody;
use crate::config::UpstreamConfig;
use crate::server::workers::PerWorker;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No response head within `upstream.timeout` → 504.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// Could not connect, or the connection broke → 502.
    #[error("upstream unreachable: {0}")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
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

pub struct Upstream {
    /// A pool per worker thread (see `server::workers`).
    clients: PerWorker<Client<HttpsConnector<HttpConnector>, ProxyBody>>,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({}://{})", self.scheme, self.authority)
    }
}

impl Upstream {
    /// `pool_idle` bounds how long an unused pooled connection is kept;
    /// `workers` is how many worker threads will call it (one pool each).
    pub fn new(config: &UpstreamConfig, pool_idle: Duration, workers: usize) -> Self {
        let clients = PerWorker::new(workers, || {
            // The pool's idle timeout only runs with a timer (hyper-util's legacy client).
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(pool_idle)
                .timer(TokioTimer::new())
                .build(crate::server::tls::client_connector(config.connect_timeout))
        });
        let scheme = config.url.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = config
            .url
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("127.0.0.1"));
        Self {
            clients,
            scheme,
            authority,
            timeout: config.timeout,
        }
    }

    /// Sends `req` (whose URI may be origin-form) to the upstream, keeping its
    /// headers as given. The response body streams; only the head is timed.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build();
        *req.uri_mut() = match uri {
            Ok(uri) => uri,
            Err(_) => unreachable!("scheme, authority and path were each already valid"),
        };
        // The upstream leg is HTTP/1.1 whatever the client spoke.
        *req.version_mut() = Version::HTTP_11;
        match tokio::time::timeout(self.timeout, self.clients.get().request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(e)),
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        }
    }
}
