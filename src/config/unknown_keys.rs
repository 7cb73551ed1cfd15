//! The unknown-key pass: every key the file has and `raw.rs` does not know,
//! with a "did you mean" when one is close.

use toml::de::{DeTable, DeValue};

use super::diagnostic::Report;
use super::raw;

/// Reports every unknown key in the file, in every section. It runs on the
/// parsed TOML, before serde, so that one run lists all of them along with
/// every bad value.
pub(super) fn report_unknown_keys(top: &DeTable<'_>, report: &mut Report<'_>) {
    report_unknown_keys_in(top, raw::TOP, "the top level", report);
    for (key, value) in top {
        let sub = match key.get_ref().as_ref() {
            "server" => raw::SERVER,
            "tls" => raw::TLS,
            "upstream" => raw::UPSTREAM,
            "limits" => raw::LIMITS,
            "paths" => raw::PATHS,
            "geetest" => raw::GEETEST,
            "replay" => raw::REPLAY,
            "throttle" => raw::THROTTLE,
            "challenge" => raw::CHALLENGE,
            "captcha" => {
                if let DeValue::Table(captchas) = value.get_ref() {
                    for (name, table) in captchas {
                        if let DeValue::Table(t) = table.get_ref() {
                            report_unknown_keys_in(
                                t,
                                raw::CAPTCHA,
                                &format!("[captcha.{}]", name.get_ref()),
                                report,
                            );
                        }
                    }
                }
                continue;
            }
            "route" => {
                if let DeValue::Array(routes) = value.get_ref() {
                    for route in routes {
                        if let DeValue::Table(t) = route.get_ref() {
                            report_unknown_keys_in(t, raw::ROUTE, "[[route]]", report);
                        }
                    }
                }
                continue;
            }
            _ => continue,
        };
        if let DeValue::Table(t) = value.get_ref() {
            report_unknown_keys_in(t, sub, &format!("[{}]", key.get_ref()), report);
        }
    }
}

/// Reports each key of `table` not in `known`, naming `section`.
fn report_unknown_keys_in(
    table: &DeTable<'_>,
    known: &[&str],
    section: &str,
    report: &mut Report<'_>,
) {
    for key in table.keys() {
        let name = key.get_ref().as_ref();
        if known.contains(&name) {
            continue;
        }
        let hint = known
            .iter()
            .map(|k| (strsim::damerau_levenshtein(name, k), *k))
            .filter(|(d, k)| *d <= (k.len() / 3).max(2))
            .min()
            .map(|(_, k)| format!("; did you mean \"{k}\"?"))
            .unwrap_or_default();
        report.at(
            key.span(),
            format!("unknown key \"{name}\" in {section}{hint}"),
        );
    }
}
