//! `[challenge]`: the kept-request store's bounds and TTL, the widget's
//! script URL and the optional page template (read here, at load).

use std::time::Duration;

use http::Uri;
use serde_spanned::Spanned;

use super::ChallengeConfig;
use super::load::Validator;
use super::pages::PageKind;
use super::raw;

/// GeeTest's own widget script.
pub const DEFAULT_WIDGET_URL: &str = "https://static.geetest.com/v4/gt4.js";

/// The simulator's stand-in widget, when the API server is a simulator on
/// this machine (cleartext on a loopback address, as `gatekeeper sim` runs):
/// GeeTest's real widget could not solve a simulator's captcha.
fn simulator_widget(api_servers: &[Uri]) -> Option<Uri> {
    let server = api_servers.first()?;
    let host = server.host()?.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if server.scheme_str() != Some("http") || !loopback {
        return None;
    }
    format!("http://{}/gt4.js", server.authority()?)
        .parse()
        .ok()
}

impl Validator<'_, '_> {
    /// `api_servers` decide the default widget: the local simulator's
    /// stand-in when GeeTest's API is the simulator, GeeTest's own otherwise.
    pub(super) fn challenge(
        &mut self,
        raw: &raw::RawChallenge,
        max_body: u64,
        api_servers: &[Uri],
    ) -> ChallengeConfig {
        let max_bytes = self.size(
            raw.max_bytes.as_ref(),
            "challenge.max_bytes",
            64 * 1024 * 1024,
        );
        if let Some(v) = &raw.max_bytes
            && max_bytes < max_body
        {
            self.error(
                v.span(),
                format!("challenge.max_bytes ({max_bytes} bytes) is less than limits.max_body ({max_body} bytes): a request with a full body could never be kept"),
            );
        }
        ChallengeConfig {
            ttl: self.duration(raw.ttl.as_ref(), "challenge.ttl", Duration::from_secs(600)),
            max_entries: self.count(raw.max_entries.as_ref(), "challenge.max_entries", 10_000),
            max_bytes,
            widget_url: raw
                .widget_url
                .as_ref()
                .and_then(|v| self.widget_url(v))
                .or_else(|| simulator_widget(api_servers))
                .unwrap_or_else(|| Uri::from_static(DEFAULT_WIDGET_URL)),
            template: raw
                .template
                .as_ref()
                .and_then(|v| self.template(v, "challenge.template", PageKind::Challenge)),
        }
    }

    /// An absolute http(s) URL: the page loads it as a script.
    fn widget_url(&mut self, v: &Spanned<String>) -> Option<Uri> {
        let problem = match v.get_ref().parse::<Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                return Some(u);
            }
            Ok(_) => "it must be an absolute http:// or https:// URL".to_owned(),
            Err(e) => e.to_string(),
        };
        self.error(
            v.span(),
            format!(
                "invalid challenge.widget_url \"{}\": {problem}",
                v.get_ref()
            ),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, test_config};

    /// The gated route every test here has: BASE and it end on line 10.
    const ROUTE: &str = "[[route]]\npath = \"/comment\"\n";

    fn load(extra: &str, dir: &Path) -> Result<crate::config::Config, ConfigError> {
        test_config::load(&format!("{ROUTE}{extra}"), dir)
    }

    fn error_of(extra: &str, dir: &Path) -> String {
        test_config::error_of(&format!("{ROUTE}{extra}"), dir)
    }

    #[test]
    fn defaults_serve_without_a_challenge_section() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let c = load("", dir.path()).expect("valid");
        assert_eq!(c.challenge.ttl.as_secs(), 600);
        assert_eq!(c.challenge.max_entries, 10_000);
        assert_eq!(c.challenge.max_bytes, 64 * 1024 * 1024);
        assert_eq!(c.challenge.widget_url, super::DEFAULT_WIDGET_URL);
        assert!(c.challenge.template.is_none());
        assert!(
            c.routes[0].challenge,
            "a route challenges browsers by default"
        );
    }

    #[test]
    fn a_local_simulator_brings_its_own_widget() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let sim = load(
            "[geetest]\napi_server = \"http://127.0.0.1:9001\"\n",
            dir.path(),
        )
        .expect("valid");
        assert_eq!(sim.challenge.widget_url, "http://127.0.0.1:9001/gt4.js");
        let remote = load(
            "[geetest]\napi_server = \"http://gcaptcha4.example.com\"\n",
            dir.path(),
        )
        .expect("valid");
        assert_eq!(remote.challenge.widget_url, super::DEFAULT_WIDGET_URL);
        let chosen = load(
            "[geetest]\napi_server = \"http://[::1]:9001\"\n[challenge]\nwidget_url = \"https://cdn.example.com/gt4.js\"\n",
            dir.path(),
        )
        .expect("valid");
        assert_eq!(
            chosen.challenge.widget_url,
            "https://cdn.example.com/gt4.js"
        );
    }

    #[test]
    fn every_setting_is_read() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("page.html"), "<p>{{message}}</p>{{widget}}")
            .expect("written");
        let c = load(
            "challenge = false\n[challenge]\nttl = \"2m\"\nmax_entries = 5\nmax_bytes = \"2MiB\"\nwidget_url = \"http://127.0.0.1:8080/static/gt4.js\"\ntemplate = \"page.html\"\n",
            dir.path(),
        )
        .expect("valid");
        assert!(!c.routes[0].challenge);
        assert_eq!(c.challenge.ttl.as_secs(), 120);
        assert_eq!(c.challenge.max_entries, 5);
        assert_eq!(c.challenge.max_bytes, 2 * 1024 * 1024);
        assert_eq!(
            c.challenge.widget_url,
            "http://127.0.0.1:8080/static/gt4.js"
        );
        assert_eq!(
            c.challenge.template.as_deref(),
            Some("<p>{{message}}</p>{{widget}}")
        );
    }

    #[test]
    fn bad_values_are_located() {
        let dir = tempfile::tempdir().expect("a temp dir");
        // BASE ends on line 10: [challenge] is line 11.
        let e = error_of(
            "[challenge]\nwidget_url = \"/gt4.js\"\nttl = \"2d\"\nmax_entries = 0\nmax_bytes = \"1KiB\"\n",
            dir.path(),
        );
        assert!(
            e.contains(":12:") && e.contains("challenge.widget_url") && e.contains("absolute"),
            "{e}"
        );
        assert!(e.contains(":13:") && e.contains("challenge.ttl"), "{e}");
        assert!(
            e.contains(":14:") && e.contains("challenge.max_entries"),
            "{e}"
        );
        assert!(
            e.contains(":15:") && e.contains("less than limits.max_body"),
            "{e}"
        );
    }

    #[test]
    fn a_template_must_be_readable_and_hold_its_placeholders() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let e = error_of("[challenge]\ntemplate = \"absent.html\"\n", dir.path());
        assert!(
            e.contains(":12:") && e.contains("challenge.template") && e.contains("absent.html"),
            "{e}"
        );
        std::fs::write(dir.path().join("bare.html"), "<p>{{message}}</p>").expect("written");
        let e = error_of("[challenge]\ntemplate = \"bare.html\"\n", dir.path());
        assert!(e.contains(":12:") && e.contains("lacks {{widget}}"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let e = error_of("[challenge]\nttll = \"1m\"\n", dir.path());
        assert!(e.contains("unknown key \"ttll\" in [challenge]"), "{e}");
        let e = error_of("challange = true\n", dir.path());
        assert!(e.contains("did you mean \"challenge\"?"), "{e}");
    }
}
