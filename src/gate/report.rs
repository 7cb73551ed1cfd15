//! The one log line and count each gate decision gets.

use std::net::IpAddr;

use tracing::info;

use crate::metrics::Metrics;

/// What a gate decision learned along the way, for its log line.
#[derive(Debug, Default)]
pub(super) struct LogFields {
    pub(super) lot_number: Option<String>,
    pub(super) validate_ms: Option<u64>,
}

/// Counts the decision and logs its line: once per gated request.
pub(super) fn report_decision(
    metrics: &Metrics,
    route: &str,
    client: IpAddr,
    lot_number: Option<&str>,
    outcome: &'static str,
    reason: &str,
    validate_ms: Option<u64>,
) {
    metrics.decision(route, outcome);
    info!(
        route,
        client = %client,
        lot_number = lot_number.unwrap_or("-"),
        outcome,
        reason,
        validate_ms,
        "captcha decision"
    );
}
