use std::time::Duration;

use http::HeaderValue;

use super::*;

fn config(template: Option<&str>) -> ChallengeConfig {
    ChallengeConfig {
        ttl: Duration::from_secs(600),
        max_entries: 10,
        max_bytes: 1 << 20,
        widget_url: Uri::from_static("https://static.geetest.com/v4/gt4.js?v=1"),
        template: template.map(Into::into),
    }
}

fn accept(value: &str) -> Language {
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT_LANGUAGE,
        HeaderValue::try_from(value).expect("valid"),
    );
    Language::from_headers(&headers)
}

#[test]
fn language_follows_accept_language_and_its_q_values() {
    assert_eq!(Language::from_headers(&HeaderMap::new()), Language::English);
    assert_eq!(accept("zh-CN,zh;q=0.9,en;q=0.8"), Language::Chinese);
    assert_eq!(accept("en-US,zh;q=0.9"), Language::English);
    assert_eq!(accept("zh;q=0.5, en;q=0.7"), Language::English);
    assert_eq!(accept("en;q=0.5, ZH-tw;q=0.7"), Language::Chinese);
    assert_eq!(accept("fr, de;q=0.9, zh;q=0.1"), Language::Chinese);
    assert_eq!(accept("fr, de"), Language::English, "default");
    assert_eq!(accept("zh;q=0, fr"), Language::English, "q=0 is a refusal");
    assert_eq!(
        accept("zh;q=2, en;q=0.1"),
        Language::English,
        "invalid q ignored"
    );
    assert_eq!(
        accept("en;q=0.5, zh;q=0.5"),
        Language::English,
        "ties: first listed"
    );
}

#[test]
fn the_challenge_page_holds_the_widget_and_the_release_form() {
    let pages = Pages::new(&config(None), "https://gcaptcha4.geetest.com/");
    let id = ChallengeId::random();
    let page = pages.challenge(
        Language::English,
        "0123456789abcdef0123456789abcdef",
        id,
        false,
    );
    let h = &page.html;
    assert!(
        h.starts_with("<!doctype html>") && h.contains("<html lang=\"en\">"),
        "{h}"
    );
    assert!(h.contains("data-captcha-id=\"0123456789abcdef0123456789abcdef\""));
    assert!(h.contains("data-language=\"eng\""));
    assert!(h.contains(
        "<form id=\"gatekeeper-release\" method=\"post\" action=\"/.gatekeeper/release\">"
    ));
    assert!(h.contains(&format!("name=\"challenge\" value=\"{id}\"")));
    assert_eq!(
        h.matches("<input").count(),
        1,
        "only the id: the script adds the captcha fields"
    );
    assert!(h.contains("<script src=\"https://static.geetest.com/v4/gt4.js?v=1\"></script>"));
    assert!(h.contains("<script src=\"/.gatekeeper/challenge.js\"></script>"));
    assert_eq!(h.matches("<script").count(), 2, "no inline script");
    assert!(h.contains(ENGLISH.challenge) && !h.contains(ENGLISH.retry));
    assert!(!h.contains("{{"), "every placeholder replaced");

    let retry = pages.challenge(Language::Chinese, "abc", id, true).html;
    assert!(retry.contains("<html lang=\"zh-CN\">") && retry.contains("data-language=\"zho\""));
    assert!(retry.contains(CHINESE.retry), "{retry}");
    assert!(
        retry.contains(&format!("value=\"{id}\"")),
        "the same id again"
    );
}

#[test]
fn the_csp_allows_self_and_exactly_the_two_origins() {
    let pages = Pages::new(&config(None), "http://127.0.0.1:9000/");
    let csp = pages
        .expired(Language::English, None)
        .csp
        .to_str()
        .expect("visible ASCII")
        .to_owned();
    assert!(
        csp.starts_with(
            "default-src 'self' https://static.geetest.com http://127.0.0.1:9000; style-src 'self' https://static.geetest.com http://127.0.0.1:9000 'unsafe-inline';"
        ),
        "{csp}"
    );
    assert!(
        !csp.contains("script-src"),
        "scripts fall back to default-src: {csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"));
    let same = Pages::new(&config(None), "https://static.geetest.com");
    let csp = same
        .expired(Language::English, None)
        .csp
        .to_str()
        .expect("visible ASCII")
        .to_owned();
    assert!(
        csp.starts_with("default-src 'self' https://static.geetest.com;"),
        "{csp}"
    );
    let junk = Pages::new(&config(None), "'unsafe-eval' https://x; script-src *");
    let csp = junk
        .expired(Language::English, None)
        .csp
        .to_str()
        .expect("visible ASCII")
        .to_owned();
    assert!(
        csp.starts_with("default-src 'self' https://static.geetest.com;"),
        "{csp}"
    );
}

#[test]
fn the_expired_page_links_back_only_within_the_site() {
    let pages = Pages::new(&config(None), "https://gcaptcha4.geetest.com");
    let page = pages.expired(Language::English, Some("/comment?x=1&y=\"2\""));
    assert!(
        page.html
            .contains("<a href=\"/comment?x=1&amp;y=&quot;2&quot;\">Go back</a>"),
        "{}",
        page.html
    );
    assert!(page.html.contains(ENGLISH.expired) && !page.html.contains("<script"));
    for foreign in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "javascript:x",
    ] {
        let html = pages.expired(Language::Chinese, Some(foreign)).html;
        assert!(html.contains("<a href=\"/\">返回</a>"), "{foreign}: {html}");
    }
}

#[test]
fn a_template_replaces_the_look_and_values_stay_escaped() {
    let template = "<html lang=\"{{lang}}\"><h1>{{title}}</h1>{{message}}|{{widget}}|{{unknown}}{{";
    let pages = Pages::new(&config(Some(template)), "https://gcaptcha4.geetest.com");
    let page = pages.challenge(
        Language::English,
        "\"><script>alert(1)</script>",
        ChallengeId::random(),
        false,
    );
    let h = &page.html;
    assert!(
        h.starts_with("<html lang=\"en\"><h1>Please confirm you are a person</h1>"),
        "{h}"
    );
    assert!(
        h.contains("data-captcha-id=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""),
        "{h}"
    );
    assert!(
        h.ends_with("</script>|{{unknown}}{{"),
        "unknown placeholders stay as written: {h}"
    );
    assert!(!h.contains("<!doctype"), "the default look is gone");
}

#[test]
fn the_script_reads_its_data_from_the_page_and_has_a_strong_etag() {
    for needle in [
        "initGeetest4",
        "product: \"float\"",
        "getValidate()",
        "data-captcha-id",
        "data-language",
        "gatekeeper-release",
        ".submit()",
    ] {
        assert!(SCRIPT.contains(needle), "{needle}");
    }
    let etag = script_etag();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34,
        "{etag}"
    );
    assert!(!etag.starts_with("W/"));
}

#[test]
fn a_prepared_page_is_the_page_rendered_whole() {
    let template = "<p>{{title}}</p>{{message}}<div>{{widget}}</div>{{lang}}";
    for config in [config(None), config(Some(template))] {
        let whole = Pages::new(&config, "https://gcaptcha4.geetest.com");
        let prepared = whole
            .clone()
            .prepared_for(["0123456789abcdef0123456789abcdef"]);
        let id = ChallengeId::random();
        for lang in [Language::English, Language::Chinese] {
            for retry in [false, true] {
                let page = prepared.challenge(lang, "0123456789abcdef0123456789abcdef", id, retry);
                assert_eq!(
                    page.html,
                    whole
                        .challenge(lang, "0123456789abcdef0123456789abcdef", id, retry)
                        .html
                );
                assert!(page.html.contains(&id.to_string()));
            }
        }
        // An id it was not prepared for is rendered whole.
        let other = prepared.challenge(Language::English, "other", id, false);
        assert!(other.html.contains("data-captcha-id=\"other\""));
    }
}
