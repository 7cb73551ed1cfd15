//! A circuit breaker per validate server: during an outage, requests stop
//! waiting out timeouts.
//!
//! Closed: calls go through; `failures` consecutive failures open it. Open:
//! calls are refused at once for `cooldown`. Then one call at a time is let
//! through as a probe: its success closes the circuit, its failure reopens it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    cooldown: Duration,
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the circuit is open; 0 = closed.
    open_until_ms: AtomicU64,
    probing: AtomicBool,
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Call,
    /// The one call let through after a cool-down.
    Probe,
    /// Open: do not call.
    Refused,
}

impl Breaker {
    pub fn new(failures_to_open: u32, cooldown: Duration) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            cooldown,
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    pub fn permit(&self) -> Permit {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        if open_until == 0 {
            return Permit::Call;
        }
        if self.now_ms() < open_until {
            return Permit::Refused;
        }
        // Cool-down over: exactly one caller probes.
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Permit::Probe,
            Err(_) => Permit::Refused,
        }
    }

    pub fn success(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    pub fn failure(&self, permit: Permit) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if permit == Permit::Probe || failures >= self.failures_to_open {
            let until = self
                .now_ms()
                .saturating_add(u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX));
            self.open_until_ms.store(until.max(1), Ordering::Release);
            self.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves the breaker's clock `by` forward, as if that much time had passed.
    fn advance(b: &mut Breaker, by: Duration) {
        b.epoch = b.epoch.checked_sub(by).expect("the clock starts later");
    }

    #[test]
    fn opens_after_repeated_failures_and_a_probe_closes_it() {
        let mut b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..3 {
            assert_eq!(b.permit(), Permit::Call);
            b.failure(Permit::Call);
        }
        assert_eq!(b.permit(), Permit::Refused);
        advance(&mut b, Duration::from_millis(60));
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.permit(), Permit::Refused, "only one probe at a time");
        b.failure(Permit::Probe);
        assert_eq!(b.permit(), Permit::Refused, "a failed probe reopens");
        advance(&mut b, Duration::from_millis(60));
        assert_eq!(b.permit(), Permit::Probe);
        b.success();
        assert_eq!(b.permit(), Permit::Call);
        assert!(!b.is_open());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.failure(Permit::Call);
        b.success();
        b.failure(Permit::Call);
        assert_eq!(b.permit(), Permit::Call);
    }
}
