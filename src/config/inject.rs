//! `[[inject]]`: which pages of the app get the widget in a form, and which
//! credential it uses. The selector is parsed here, with the rewriter's own
//! parser, so a selector it cannot run is a config error with its line.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_spanned::Spanned;

use super::load::Validator;
use super::raw::{self, CaptchaNames};
use super::routes::origin;
use super::{Captcha, InjectRule, Methods, OnError, Route};

impl Validator<'_, '_> {
    pub(super) fn injects(
        &mut self,
        raw: &[Spanned<raw::RawInject>],
        captchas: &BTreeMap<String, Arc<Captcha>>,
        declared: &BTreeMap<String, Spanned<raw::RawCaptcha>>,
    ) -> Vec<InjectRule> {
        let mut rules: Vec<InjectRule> = Vec::new();
        for table in raw {
            let span = table.span();
            let r = table.get_ref();
            let path = self.path_match(
                r.path.as_ref(),
                r.prefix.as_ref(),
                span.clone(),
                "[[inject]]",
            );
            let host = r.host.as_ref().and_then(|h| self.route_host(h));
            let form = match &r.form {
                Some(v) => {
                    match v.get_ref().parse::<lol_html::Selector>() {
                        Ok(selector) => Some((selector, v.get_ref().clone())),
                        Err(e) => {
                            self.error(
                            v.span(),
                            format!("inject.form \"{}\" is not a selector gatekeeper can match: {e}", v.get_ref()),
                        );
                            None
                        }
                    }
                }
                None => {
                    self.error(
                        span.clone(),
                        "[[inject]] needs form, a CSS selector for the form, e.g. form = 'form[action=\"/login\"]'",
                    );
                    None
                }
            };
            let names = r
                .captcha
                .as_ref()
                .map(|n| Spanned::new(n.span(), CaptchaNames::One(n.get_ref().clone())));
            let captchas = self.route_captchas(names.as_ref(), captchas, declared, span.clone());
            let (Some(path), Some((form, form_text)), Some(captcha)) =
                (path, form, captchas.into_iter().next())
            else {
                continue;
            };
            let origin = origin(host.as_deref(), &path);
            if rules
                .iter()
                .any(|other| other.route.path == path && other.route.host == host)
            {
                self.error(
                    span.clone(),
                    format!("another [[inject]] already covers {origin}"),
                );
                continue;
            }
            rules.push(InjectRule {
                route: Route {
                    path,
                    host,
                    methods: Methods::Unsafe,
                    strict: false,
                    captchas: vec![captcha],
                    on_error: OnError::Deny,
                    reject_redirect: None,
                    challenge: false,
                    origin,
                },
                form,
                form_text,
            });
        }
        rules
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, PathMatch, test_config};

    fn load(extra: &str) -> Result<crate::config::Config, ConfigError> {
        test_config::load(extra, Path::new("."))
    }

    fn error_of(extra: &str) -> String {
        test_config::error_of(extra, Path::new("."))
    }

    #[test]
    fn a_rule_is_read_with_its_defaults() {
        let c = load(
            "[[inject]]\npath = \"/login\"\nform = 'form[action=\"/login\"]'\n[[inject]]\nprefix = \"/account/\"\nhost = \"Shop.Example.com\"\nform = \"#signup\"\ncaptcha = \"main\"\n",
        )
        .expect("valid");
        assert_eq!(c.injects.len(), 2);
        assert_eq!(c.injects[0].route.path, PathMatch::Exact("/login".into()));
        assert_eq!(c.injects[0].form_text, "form[action=\"/login\"]");
        assert_eq!(
            c.injects[0].route.captchas[0].id,
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(c.injects[1].route.host.as_deref(), Some("shop.example.com"));
        assert_eq!(
            c.injects[1].route.path,
            PathMatch::Prefix("/account/".into())
        );
    }

    #[test]
    fn bad_rules_are_located() {
        // BASE ends on line 8: the first [[inject]] is line 9.
        let e = error_of(
            "[[inject]]\npath = \"/login\"\nform = \"form[action=\"\n[[inject]]\npath = \"/a/../b\"\nform = \"form\"\n[[inject]]\npath = \"/c\"\n[[inject]]\npath = \"/d\"\nform = \"form\"\ncaptcha = \"mian\"\n[[inject]]\npath = \"/e\"\nform = \"form\"\nfrom = \"x\"\n",
        );
        assert!(
            e.contains(":11:") && e.contains("inject.form") && e.contains("form[action="),
            "{e}"
        );
        assert!(e.contains(":13:") && e.contains("normal form"), "{e}");
        assert!(e.contains(":15:") && e.contains("needs form"), "{e}");
        assert!(
            e.contains(":20:") && e.contains("did you mean \"main\"?"),
            "{e}"
        );
        assert!(
            e.contains("unknown key \"from\" in [[inject]]")
                && e.contains("did you mean \"form\"?"),
            "{e}"
        );
    }

    #[test]
    fn two_rules_for_one_page_and_an_unnamed_credential_among_several_are_refused() {
        let e = error_of(
            "[[inject]]\npath = \"/login\"\nform = \"form\"\n[[inject]]\npath = \"/login\"\nform = \"#other\"\n",
        );
        assert!(
            e.contains(":12:") && e.contains("already covers /login"),
            "{e}"
        );
        let e = error_of(
            "[captcha.other]\nid = \"0123456789abcdef0123456789abcdee\"\nkey = \"0123456789abcdef0123456789abcdef\"\n[[inject]]\npath = \"/login\"\nform = \"form\"\n",
        );
        assert!(
            e.contains(":12:") && e.contains("name one with captcha"),
            "{e}"
        );
    }
}
