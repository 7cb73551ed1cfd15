//! Rate limits for repeated warnings.
//!
//! While the upstream, Redis or GeeTest is down, every request meets the
//! same failure; logging each one wrote hundreds of megabytes a minute. A
//! call site written `throttled!(warn!(...))` instead of `warn!(...)` logs
//! at most one line per [`INTERVAL`]; the repeats in between are counted, and
//! the count is logged at the interval's end (`suppressed=N`, with the
//! warning's message as `warning`), or with the next line if no timer could
//! be set. Per-request lines (`request`, `captcha decision`) are never
//! throttled: only warnings about a dependency's state are.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per call site per interval.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One call site's limit.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the current interval ends; `None` before the first line.
    until: Option<Instant>,
    /// Repeats not logged and not yet reported.
    suppressed: u64,
    /// Whether a report of `suppressed` is scheduled.
    report_scheduled: bool,
}

/// What to do with one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Log it; `suppressed` repeats were left out since the last report.
    Log { suppressed: u64 },
    /// Leave it out. `report_at` is set for the first one left out since the
    /// last report: the caller then reports the count at that instant.
    Suppress { report_at: Option<Instant> },
}

impl Throttle {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State {
                until: None,
                suppressed: 0,
                report_scheduled: false,
            }),
        }
    }

    /// Counts an occurrence at `now`.
    pub fn check(&self, now: Instant) -> Check {
        let Ok(mut state) = self.state.lock() else {
            // A panic elsewhere while holding the lock: log rather than lose.
            return Check::Log { suppressed: 0 };
        };
        match state.until {
            Some(until) if now < until => {
                state.suppressed += 1;
                let report_at = (!state.report_scheduled).then_some(until);
                state.report_scheduled = true;
                Check::Suppress { report_at }
            }
            _ => {
                state.until = now.checked_add(self.interval);
                Check::Log {
                    suppressed: std::mem::take(&mut state.suppressed),
                }
            }
        }
    }

    /// The repeats not yet reported, now reported: called when a scheduled
    /// report is due.
    pub fn take_suppressed(&self) -> u64 {
        let Ok(mut state) = self.state.lock() else {
            return 0;
        };
        state.report_scheduled = false;
        std::mem::take(&mut state.suppressed)
    }

    /// Logs, at `at`, how many repeats of `warning` were left out (if any
    /// still are by then). Needs a tokio runtime; without one the count
    /// waits for the next logged line.
    pub fn report_later(&'static self, at: Instant, warning: &'static str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            if let Ok(mut state) = self.state.lock() {
                state.report_scheduled = false;
            }
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let suppressed = self.take_suppressed();
            if suppressed > 0 {
                tracing::warn!(warning, suppressed, "repeats of a warning were suppressed");
            }
        });
    }
}

/// A `tracing` event limited to one line per [`INTERVAL`] at this call
/// site: `throttled!(warn!(error = %e, "upstream unreachable"))`. The event's
/// arguments must end with its message, a string literal; the report of the
/// repeats left out is a warning.
macro_rules! throttled {
    ($($event:ident)::+ ! ( $($arg:tt)+ )) => {{
        static THROTTLE: $crate::logging::throttle::Throttle =
            $crate::logging::throttle::Throttle::new($crate::logging::throttle::INTERVAL);
        match THROTTLE.check(::std::time::Instant::now()) {
            $crate::logging::throttle::Check::Log { suppressed: 0 } => {
                $($event)::+!($($arg)+)
            }
            $crate::logging::throttle::Check::Log { suppressed } => {
                $($event)::+!(suppressed, $($arg)+)
            }
            $crate::logging::throttle::Check::Suppress { report_at: Some(at) } => THROTTLE
                .report_later(at, $crate::logging::throttle::throttled!(@message $($arg)+)),
            $crate::logging::throttle::Check::Suppress { report_at: None } => {}
        }
    }};
    // The last token: the message.
    (@message $message:literal) => { $message };
    (@message $first:tt $($rest:tt)+) => {
        $crate::logging::throttle::throttled!(@message $($rest)+)
    };
}

pub(crate) use throttled;

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_occurrence_is_logged_and_repeats_within_the_interval_are_counted() {
        let t = Throttle::new(SECOND);
        let start = Instant::now();
        assert_eq!(t.check(start), Check::Log { suppressed: 0 });
        let end = start + SECOND;
        assert_eq!(
            t.check(start + Duration::from_millis(10)),
            Check::Suppress {
                report_at: Some(end)
            },
            "the first repeat asks for a report at the interval's end"
        );
        for ms in [20, 500, 999] {
            assert_eq!(
                t.check(start + Duration::from_millis(ms)),
                Check::Suppress { report_at: None },
                "one report per interval"
            );
        }
        assert_eq!(t.take_suppressed(), 4);
        assert_eq!(t.take_suppressed(), 0, "a count is reported once");
    }

    #[test]
    fn after_the_interval_a_line_is_logged_with_the_unreported_count() {
        let t = Throttle::new(SECOND);
        let start = Instant::now();
        assert_eq!(t.check(start), Check::Log { suppressed: 0 });
        for ms in 1..=3 {
            assert!(matches!(
                t.check(start + Duration::from_millis(ms)),
                Check::Suppress { .. }
            ));
        }
        // No report ran (no runtime): the next line carries the count.
        assert_eq!(t.check(start + SECOND), Check::Log { suppressed: 3 });
        assert_eq!(t.take_suppressed(), 0);
        // A new interval started with that line.
        assert_eq!(
            t.check(start + SECOND + Duration::from_millis(1)),
            Check::Suppress {
                report_at: Some(start + 2 * SECOND)
            }
        );
    }

    #[test]
    fn a_steady_flood_logs_one_line_per_interval() {
        let t = Throttle::new(SECOND);
        let start = Instant::now();
        let mut logged = 0;
        let mut left_out = 0;
        // 10,000 occurrences a second for 10 seconds.
        for i in 0..100_000u64 {
            match t.check(start + Duration::from_micros(i * 100)) {
                Check::Log { suppressed } => {
                    logged += 1;
                    left_out += suppressed;
                }
                Check::Suppress { .. } => {}
            }
        }
        // What the last interval's report would say.
        left_out += t.take_suppressed();
        assert_eq!(logged, 10);
        assert_eq!(
            logged + left_out,
            100_000,
            "every occurrence is accounted for"
        );
    }

    #[test]
    fn a_report_once_due_lets_the_next_repeat_schedule_another() {
        let t = Throttle::new(SECOND);
        let start = Instant::now();
        t.check(start);
        t.check(start + Duration::from_millis(1));
        assert_eq!(t.take_suppressed(), 1);
        assert_eq!(
            t.check(start + Duration::from_millis(2)),
            Check::Suppress {
                report_at: Some(start + SECOND)
            }
        );
    }

    #[tokio::test]
    async fn the_macro_logs_once_and_reports_the_repeats_when_the_interval_ends() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lines").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        for i in 0..50 {
            throttled!(tracing::warn!(attempt = i, "dependency down"));
        }
        // The count is reported when the interval ends: wait for its line.
        let text = || String::from_utf8_lossy(&lines.0.lock().expect("lines")).into_owned();
        let deadline = tokio::time::Instant::now() + INTERVAL * 5;
        while !text().contains("suppressed=") && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = text();
        let logged: Vec<&str> = text.lines().collect();
        assert_eq!(logged.len(), 2, "{text}");
        assert!(logged[0].contains("dependency down") && logged[0].contains("attempt=0"));
        assert!(
            logged[1].contains("suppressed=49")
                && logged[1].contains("warning=\"dependency down\""),
            "{text}"
        );
    }
}
