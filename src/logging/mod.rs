//! Logging helpers. [`throttle`] keeps a failing dependency from flooding
//! the log: a warning repeated for every request is written once per
//! interval, with a count of the repeats left out.

pub mod throttle;

pub(crate) use throttle::throttled;
