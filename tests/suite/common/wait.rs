//! Waiting for a state no component announces: poll with a deadline.

use std::time::Duration;

/// Polls `cond` every 10 ms until it holds; panics naming `what` once
/// `within` has passed.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    wait_until_async(what, within, || std::future::ready(cond())).await;
}

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
        // The poll interval.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Blocks until 127.0.0.1:`port` accepts connections; panics naming `what`
/// after 20 s. For child processes, which announce nothing.
pub fn until_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not start listening"
        );
        // The poll interval.
        std::thread::sleep(Duration::from_millis(20));
    }
}
