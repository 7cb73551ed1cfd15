//! Waiting for a state no component announces: poll with a deadline.

use std::time::Duration;

/// Polls `cond` every 10 ms until it holds; panics naming `what` once
/// `within` has passed. `cond` may itself wait (a scrape, a request).
pub async fn wait_until_async<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {within:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
