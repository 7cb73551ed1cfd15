//! One value at a time: durations, sizes, counts, rates, addresses, URLs and
//! choices, each checked against its range in `bounds.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use serde_spanned::Spanned;

use super::OnError;
use super::bounds::{self, Bound};
use super::load::Validator;
use super::raw::RawSize;

/// Parses a duration as `humantime` does (`"250ms"`, `"1h 30m"`), after
/// refusing text with more digits than any sensible duration holds: with
/// those, `humantime` itself can overflow and panic.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if too_many_digits(text) {
        return Err(format!(
            "more than {} digits: use a larger unit",
            bounds::DURATION_DIGITS
        ));
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn too_many_digits(text: &str) -> bool {
    text.chars().filter(char::is_ascii_digit).count() > bounds::DURATION_DIGITS
}

/// A size in bytes as a person would write it: `"1GiB"`, `"512KiB"`, `"10 bytes"`.
pub(super) fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map_or_else(
            || format!("{bytes} bytes"),
            |(unit, name)| format!("{}{name}", bytes / unit),
        )
}

impl Validator<'_, '_> {
    pub(super) fn duration(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(v) = value else { return default };
        let text = v.get_ref();
        let Bound { min, max, why } = bounds::duration(key);
        let range = || {
            format!(
                "{key} must be between {} and {}: {why}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )
        };
        let problem = match parse_duration(text) {
            Ok(d) if d.is_zero() => format!("{key} must be greater than zero"),
            Ok(d) if (min..=max).contains(&d) => return d,
            Ok(_) => format!("{key} = \"{text}\" is out of range: {}", range()),
            Err(e) if too_many_digits(text) => {
                format!("invalid duration \"{text}\" for {key}: {e}; {}", range())
            }
            Err(e) => format!(
                "invalid duration \"{text}\" for {key}: {e} (e.g. \"250ms\", \"5s\", \"15m\")"
            ),
        };
        self.error(v.span(), problem);
        default
    }

    pub(super) fn size(
        &mut self,
        value: Option<&Spanned<RawSize>>,
        key: &str,
        default: u64,
    ) -> u64 {
        let Some(v) = value else { return default };
        let (parsed, shown) = match v.get_ref() {
            RawSize::Bytes(n) => (u64::try_from(*n).ok(), n.to_string()),
            // bytesize saturates at u64::MAX rather than overflow: still out of range.
            RawSize::Text(t) => (
                t.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()),
                format!("\"{t}\""),
            ),
        };
        let Bound { min, max, why } = bounds::size(key);
        let problem = match parsed {
            Some(n) if (min..=max).contains(&n) => return n,
            Some(n) if n > max => format!(
                "{key} = {shown} is out of range: {key} must be at most {}: {why}",
                format_size(max)
            ),
            _ => format!(
                "{key} must be a positive size like \"1MiB\", \"512KiB\" or a number of bytes"
            ),
        };
        self.error(v.span(), problem);
        default
    }

    /// A whole number of things (workers, connections, entries).
    pub(super) fn count(
        &mut self,
        value: Option<&Spanned<i64>>,
        key: &str,
        default: usize,
    ) -> usize {
        let Some(v) = value else { return default };
        let Bound { min, max, why } = bounds::count(key);
        let problem = match u64::try_from(*v.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => match usize::try_from(n) {
                Ok(n) => return n,
                Err(_) => format!("{key} = {n} does not fit this machine's memory"),
            },
            Ok(n) if n > max => {
                format!("{key} = {n} is out of range: {key} must be between {min} and {max}: {why}")
            }
            _ => format!("{key} must be a positive whole number"),
        };
        self.error(v.span(), problem);
        default
    }

    pub(super) fn socket_addr(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
    ) -> Option<SocketAddr> {
        let v = value?;
        match v.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(v.span(), format!("invalid address \"{}\" for {key} (expected IP:PORT, e.g. \"0.0.0.0:8443\")", v.get_ref()));
                None
            }
        }
    }

    pub(super) fn one_of<T: Copy>(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(v) = value else { return default };
        match options.iter().find(|(name, _)| *name == v.get_ref()) {
            Some((_, t)) => *t,
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.error(
                    v.span(),
                    format!(
                        "{key} must be one of {}, not \"{}\"",
                        names.join(", "),
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    /// An absolute http(s) URL with nothing after the authority.
    pub(super) fn base_url(&mut self, v: &Spanned<String>, key: &str) -> Option<Uri> {
        let bad = |why: &str| format!("invalid {key} \"{}\": {why}", v.get_ref());
        let uri: Uri = match v.get_ref().parse() {
            Ok(u) => u,
            Err(e) => {
                self.error(v.span(), bad(&e.to_string()));
                return None;
            }
        };
        let problem = match (
            uri.scheme_str(),
            uri.authority(),
            uri.path_and_query().map(|p| p.as_str()),
        ) {
            (Some("http" | "https"), Some(_), None | Some("/" | "")) => None,
            (Some("http" | "https"), Some(_), Some(_)) => Some("a path or query is not allowed"),
            (Some("http" | "https"), None, _) => Some("a host is required"),
            _ => Some("the scheme must be http or https"),
        };
        match problem {
            Some(why) => {
                self.error(v.span(), bad(why));
                None
            }
            None => Some(uri),
        }
    }

    pub(super) fn on_error(
        &mut self,
        v: Option<&Spanned<String>>,
        key: &str,
        default: OnError,
    ) -> OnError {
        self.one_of(
            v,
            key,
            &[("allow", OnError::Allow), ("deny", OnError::Deny)],
            default,
        )
    }

    /// A rate as `"N/s"`, `"N/m"` or `"N/h"`, in events per second.
    pub(super) fn rate(&mut self, v: &Spanned<String>, key: &str) -> f64 {
        let parsed = v.get_ref().split_once('/').and_then(|(n, unit)| {
            let n: f64 = n
                .trim()
                .parse()
                .ok()
                .filter(|n: &f64| *n > 0.0 && n.is_finite())?;
            let seconds = match unit.trim() {
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return None,
            };
            Some(n / seconds)
        });
        let Bound { min, max, why } = bounds::RATE_PER_SECOND;
        match parsed {
            Some(rate) if (min..=max).contains(&rate) => rate,
            Some(_) => {
                self.error(v.span(), format!("{key} = \"{}\" is out of range: {key} must be between 1/h and {max}/s: {why}", v.get_ref()));
                1.0
            }
            None => {
                self.error(
                    v.span(),
                    format!(
                        "invalid {key} \"{}\" (expected N/s, N/m or N/h, e.g. \"10/m\")",
                        v.get_ref()
                    ),
                );
                1.0
            }
        }
    }
}
