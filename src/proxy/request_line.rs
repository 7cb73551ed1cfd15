//! A request's one log line, written when its answer's body has ended.

use std::time::Instant;

use http::header::HeaderValue;
use http::{Method, Version};
use tracing::info;

use super::counted::Tally;

/// A request's one log line, its fields at the top level.
pub struct RequestLine {
    pub(super) request_id: HeaderValue,
    pub(super) method: Method,
    pub(super) host: Option<HeaderValue>,
    pub(super) uri: http::Uri,
    pub(super) version: Version,
    pub(super) status: u16,
    pub(super) route: Option<String>,
    pub(super) bytes_in: Option<u64>,
    pub(super) uploaded: Option<Tally>,
    pub(super) upstream_ms: Option<u64>,
    pub(super) started: Instant,
    pub(super) peer: std::net::IpAddr,
    pub(super) user_agent: Option<HeaderValue>,
    pub(super) span: tracing::Span,
}

impl RequestLine {
    pub(super) fn log(self, bytes_out: u64) {
        // Header values that are not visible ASCII are logged as "-".
        fn text(v: &Option<HeaderValue>) -> &str {
            v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
        }
        let _span = self.span.enter();
        info!(
            request_id = self.request_id.to_str().unwrap_or("-"),
            method = %self.method,
            host = text(&self.host),
            // The query is never logged: GeeTest's own demos put the proof there.
            path = %self.uri.path(),
            version = ?self.version,
            status = self.status,
            route = self.route.as_deref().unwrap_or("-"),
            // The bytes read from the client, by the gate or for the
            // application: counted by now (a body refused unread: 0).
            bytes_in = self.uploaded.as_ref().map_or(self.bytes_in, |t| Some(t.get())),
            bytes_out,
            upstream_ms = self.upstream_ms,
            total_ms = self.started.elapsed().as_millis() as u64,
            peer = %self.peer,
            user_agent = text(&self.user_agent),
            "request"
        );
    }
}
