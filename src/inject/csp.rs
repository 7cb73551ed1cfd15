//! Amending the app's Content-Security-Policy so the injected widget may run:
//! exactly the origins the widget needs are added to the directives that
//! govern them, and nothing else changes. A directive the policy leaves to
//! `default-src` gets its own copy of `default-src`'s sources plus ours, so
//! every other kind of fetch stays as strict as the app made it.

/// What the widget loads, by directive.
#[derive(Debug, Clone, Default)]
pub struct WidgetSources {
    /// The widget script, GeeTest's API (its JSONP answers are scripts) and
    /// `'self'` for gatekeeper's own `/.gatekeeper/inject.js`.
    pub script: Vec<String>,
    /// The widget's stylesheets, images and API calls.
    pub other: Vec<String>,
}

impl WidgetSources {
    /// `widget` and `api` are origins (`scheme://host[:port]`).
    pub fn new(widget: Option<String>, api: Option<String>) -> Self {
        let mut other: Vec<String> = Vec::new();
        for origin in [widget, api].into_iter().flatten() {
            if !other.contains(&origin) {
                other.push(origin);
            }
        }
        let mut script = vec!["'self'".to_owned()];
        script.extend(other.iter().cloned());
        Self { script, other }
    }

    fn for_directive(&self, name: &str) -> &[String] {
        if name.starts_with("script-src") {
            &self.script
        } else {
            &self.other
        }
    }
}

/// Directives the widget's fetches fall under, each of which falls back to
/// `default-src` when absent. (`*-elem` variants fall back to these, so they
/// are amended only where the policy has them.)
const GOVERNING: &[&str] = &["script-src", "style-src", "img-src", "connect-src"];
const ELEM: &[&str] = &["script-src-elem", "style-src-elem"];

/// `policy` with the widget's sources added.
pub fn amend(policy: &str, sources: &WidgetSources) -> String {
    let directives: Vec<(String, Vec<&str>)> = policy
        .split(';')
        .filter_map(|d| {
            let mut tokens = d.split_ascii_whitespace();
            let name = tokens.next()?.to_ascii_lowercase();
            Some((name, tokens.collect()))
        })
        .collect();
    let default_src = directives
        .iter()
        .find(|(name, _)| name == "default-src")
        .map(|(_, tokens)| tokens.clone());
    let mut out: Vec<String> = Vec::with_capacity(directives.len() + GOVERNING.len());
    for (name, tokens) in &directives {
        if GOVERNING.contains(&name.as_str()) || ELEM.contains(&name.as_str()) {
            out.push(with_sources(name, tokens, sources.for_directive(name)));
        } else {
            out.push(join(name, tokens));
        }
    }
    if let Some(default_src) = default_src {
        for name in GOVERNING {
            if !directives.iter().any(|(n, _)| n == name) {
                out.push(with_sources(
                    name,
                    &default_src,
                    sources.for_directive(name),
                ));
            }
        }
    }
    out.join("; ")
}

/// The nonce the policy gives scripts (`'nonce-…'` in the directive that
/// governs script elements), for gatekeeper's own script tags: with it they
/// run under `'strict-dynamic'` too.
pub fn script_nonce(policy: &str) -> Option<String> {
    let directive = |want: &str| {
        policy.split(';').find_map(|d| {
            let mut tokens = d.split_ascii_whitespace();
            let name = tokens.next()?;
            name.eq_ignore_ascii_case(want).then_some(tokens)
        })
    };
    let tokens = directive("script-src-elem")
        .or_else(|| directive("script-src"))
        .or_else(|| directive("default-src"))?;
    tokens
        .filter_map(|t| t.strip_prefix("'nonce-")?.strip_suffix('\''))
        .find(|n| {
            !n.is_empty()
                && n.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
                })
        })
        .map(str::to_owned)
}

fn with_sources(name: &str, tokens: &[&str], add: &[String]) -> String {
    // 'none' cannot be combined with a source: the widget's replace it.
    let mut kept: Vec<&str> = tokens
        .iter()
        .copied()
        .filter(|t| !t.eq_ignore_ascii_case("'none'"))
        .collect();
    for source in add {
        if !kept.iter().any(|t| t.eq_ignore_ascii_case(source)) {
            kept.push(source);
        }
    }
    join(name, &kept)
}

fn join(name: &str, tokens: &[&str]) -> String {
    if tokens.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {}", tokens.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> WidgetSources {
        WidgetSources::new(
            Some("https://static.geetest.com".into()),
            Some("https://gcaptcha4.geetest.com".into()),
        )
    }

    #[test]
    fn present_directives_gain_exactly_the_widget_origins() {
        let amended = amend(
            "script-src 'self' https://cdn.example.com; img-src 'self'; frame-ancestors 'none'",
            &sources(),
        );
        assert_eq!(
            amended,
            "script-src 'self' https://cdn.example.com https://static.geetest.com https://gcaptcha4.geetest.com; \
             img-src 'self' https://static.geetest.com https://gcaptcha4.geetest.com; frame-ancestors 'none'"
        );
    }

    #[test]
    fn directives_left_to_default_src_get_their_own_copy() {
        let amended = amend("default-src 'none'; form-action 'self'", &sources());
        assert_eq!(
            amended,
            "default-src 'none'; form-action 'self'; \
             script-src 'self' https://static.geetest.com https://gcaptcha4.geetest.com; \
             style-src https://static.geetest.com https://gcaptcha4.geetest.com; \
             img-src https://static.geetest.com https://gcaptcha4.geetest.com; \
             connect-src https://static.geetest.com https://gcaptcha4.geetest.com",
            "default-src itself stays 'none' for every other fetch"
        );
    }

    #[test]
    fn a_policy_without_fetch_directives_is_left_as_it_was() {
        assert_eq!(
            amend(
                "frame-ancestors 'self'; upgrade-insecure-requests",
                &sources()
            ),
            "frame-ancestors 'self'; upgrade-insecure-requests"
        );
    }

    #[test]
    fn nonces_are_found_where_scripts_are_governed() {
        assert_eq!(
            script_nonce("default-src 'self'; script-src 'nonce-r4nd0m+/=' 'strict-dynamic'"),
            Some("r4nd0m+/=".into())
        );
        assert_eq!(script_nonce("default-src 'nonce-abc'"), Some("abc".into()));
        assert_eq!(script_nonce("script-src 'self'"), None);
        assert_eq!(
            script_nonce("script-src 'nonce-a\"b'"),
            None,
            "a nonce that could break out of an attribute is not used"
        );
    }
}
