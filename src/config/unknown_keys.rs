//! The unknown-key pass: every key the file has and `raw.rs` does not know,
//! with a "did you mean" when one is close.

use serde_spanned::Spanned;
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
            "tls" => {
                if let DeValue::Table(t) = value.get_ref() {
                    report_unknown_keys_in(t, raw::TLS, "[tls]", report);
                    let acme = t.iter().find(|(k, _)| k.get_ref() == "acme");
                    if let Some((_, acme)) = acme
                        && let DeValue::Table(a) = acme.get_ref()
                    {
                        report_unknown_keys_in(a, raw::ACME, "[tls.acme]", report);
                    }
                }
                continue;
            }
            "upstream" => raw::UPSTREAM,
            "limits" => raw::LIMITS,
            "paths" => raw::PATHS,
            "geetest" => raw::GEETEST,
            "replay" => raw::REPLAY,
            "throttle" => raw::THROTTLE,
            "challenge" => raw::CHALLENGE,
            "pages" => raw::PAGES,
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
            "route" | "inject" => {
                let (known, section) = if key.get_ref() == "route" {
                    (raw::ROUTE, "[[route]]")
                } else {
                    (raw::INJECT, "[[inject]]")
                };
                if let DeValue::Array(tables) = value.get_ref() {
                    for table in tables {
                        if let DeValue::Table(t) = table.get_ref() {
                            report_unknown_keys_in(t, known, section, report);
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

/// The dotted key whose value covers byte `at` (`replay.ttl`,
/// `route.methods`, `captcha.login.id`), so a type error names its key.
/// Every value is searched, not only those inside a covering table: a
/// table's own span need not cover its keys' lines.
pub(super) fn key_at(top: &DeTable<'_>, at: usize) -> Option<String> {
    fn search(table: &DeTable<'_>, at: usize, path: &mut Vec<String>) -> bool {
        for (key, value) in table {
            path.push(key.get_ref().to_string());
            if found(value, at, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    fn found(value: &Spanned<DeValue<'_>>, at: usize, path: &mut Vec<String>) -> bool {
        match value.get_ref() {
            DeValue::Table(t) => search(t, at, path),
            DeValue::Array(items) => {
                items.iter().any(|item| found(item, at, path)) || value.span().contains(&at)
            }
            _ => value.span().contains(&at),
        }
    }
    let mut path = Vec::new();
    search(top, at, &mut path).then(|| path.join("."))
}
