//! `[pages]`: the operator's own refusal page and kept-request expired page,
//! and the reading of every page template (`[challenge] template` too), at
//! load and on reload. A template names only placeholders its page fills.

use std::sync::Arc;

use serde_spanned::Spanned;

use super::PagesConfig;
use super::load::{Externals, Validator};
use super::raw;
use crate::refusal;

/// Placeholders a challenge (or expired) page template must hold: without
/// them the page could not say why it is there, or could not be solved.
pub const TEMPLATE_PLACEHOLDERS: &[&str] = &["{{message}}", "{{widget}}"];

/// Every placeholder the challenge and expired pages fill.
const CHALLENGE_PLACEHOLDERS: &[&str] = &["lang", "title", "message", "widget"];

/// A template larger than this is surely not a page template.
const TEMPLATE_MAX_BYTES: u64 = 1024 * 1024;

/// Which page a template is for, and so which placeholders it may and must hold.
#[derive(Clone, Copy)]
pub(super) enum PageKind {
    /// The challenge page (`[challenge] template`): others are left as written.
    Challenge,
    Expired,
    Refusal,
}

impl Validator<'_, '_> {
    pub(super) fn pages(&mut self, raw: &raw::RawPages) -> PagesConfig {
        PagesConfig {
            refusal: raw
                .refusal
                .as_ref()
                .and_then(|v| self.template(v, "pages.refusal", PageKind::Refusal)),
            expired: raw
                .expired
                .as_ref()
                .and_then(|v| self.template(v, "pages.expired", PageKind::Expired)),
        }
    }

    /// The template file `v` names (relative to the config file), checked;
    /// with [`Externals::Skip`] nothing is read.
    pub(super) fn template(
        &mut self,
        v: &Spanned<String>,
        key: &str,
        kind: PageKind,
    ) -> Option<Arc<str>> {
        if self.externals == Externals::Skip {
            return None;
        }
        let path = self.base.join(v.get_ref());
        let shown = path.display();
        let read = std::fs::metadata(&path).and_then(|m| {
            if m.len() > TEMPLATE_MAX_BYTES {
                Err(std::io::Error::other(format!(
                    "{} bytes, more than the 1MiB a page template may have",
                    m.len()
                )))
            } else {
                std::fs::read_to_string(&path)
            }
        });
        let text = match read {
            Ok(text) => text,
            Err(e) => {
                self.error(v.span(), format!("{key}: cannot read {shown}: {e}"));
                return None;
            }
        };
        let (required, known) = match kind {
            PageKind::Challenge => (TEMPLATE_PLACEHOLDERS, None),
            PageKind::Expired => (TEMPLATE_PLACEHOLDERS, Some(CHALLENGE_PLACEHOLDERS)),
            PageKind::Refusal => (&[][..], Some(refusal::PLACEHOLDERS)),
        };
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|p| !text.contains(p))
            .collect();
        let unknown = known.map(|k| refusal::unknown_placeholders(&text, k));
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("{shown} lacks {}", missing.join(" and ")));
        }
        if let Some(unknown) = unknown.filter(|u| !u.is_empty()) {
            let names: Vec<String> = unknown.iter().map(|u| format!("{{{{{u}}}}}")).collect();
            let known: Vec<String> = known
                .unwrap_or_default()
                .iter()
                .map(|k| format!("{{{{{k}}}}}"))
                .collect();
            problems.push(format!(
                "{shown} has unknown placeholder{} {} (known: {})",
                if names.len() == 1 { "" } else { "s" },
                names.join(", "),
                known.join(", ")
            ));
        }
        if problems.is_empty() {
            return Some(text.into());
        }
        self.error(v.span(), format!("{key}: {}", problems.join("; ")));
        None
    }
}
