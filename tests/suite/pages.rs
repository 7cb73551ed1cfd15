//! Issue 20: the operator's own pages (`[pages]`), and the default refusal
//! page's link back, over real sockets; `check` on bad templates.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::common::*;

const REFUSAL: &str = "<html lang=\"{{lang}}\"><h1>{{heading}}</h1><p>{{message}}</p>\
    <p>{{advice}}</p><a id=\"back\" href=\"{{back_url}}\">back</a>\
    <footer>{{status}} {{code}} {{request_id}}</footer></html>";
const EXPIRED: &str =
    "<main lang=\"{{lang}}\"><h2>OWN {{title}}</h2><p>{{message}}</p>{{widget}}</main>";

/// Starts gatekeeper with `[pages]` naming templates written in `dir`.
async fn start_with_pages(dir: &Path) -> Env {
    std::fs::write(dir.join("refusal.html"), REFUSAL).unwrap();
    std::fs::write(dir.join("expired.html"), EXPIRED).unwrap();
    Env::start(&format!(
        "[pages]\nrefusal = \"{}\"\nexpired = \"{}\"\n\n[[route]]\npath = \"/login\"\n",
        dir.join("refusal.html").display(),
        dir.join("expired.html").display()
    ))
    .await
}

/// A browser's form post to /login with a partial proof: refused with a page.
fn partial_proof(env: &Env, referer: &str) -> Request<Full<Bytes>> {
    Request::post(env.https_url("/login"))
        .header("accept", "text/html,*/*;q=0.8")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("referer", referer)
        .body(Full::new(Bytes::from("user=a&lot_number=")))
        .unwrap()
}

/// The `href` of the page's link back.
fn back_link(page: &str) -> &str {
    let start = page.find("id=\"back\" href=\"").expect("a link back") + 16;
    &page[start..start + page[start..].find('"').unwrap()]
}

#[tokio::test]
async fn an_operators_refusal_page_is_filled_escaped_and_links_back_on_this_site() {
    let dir = tempfile::tempdir().unwrap();
    let env = start_with_pages(dir.path()).await;
    let c = env.client(false);
    let site = env.https_url("");

    let hostile = format!("{site}/shop/cart?q=%22%3E&x='onmouseover=alert(1)'");
    let answer = c.send(partial_proof(&env, &hostile)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let page = answer.text();
    assert!(
        page.starts_with("<html lang=\"en\"><h1>Verification needed</h1>"),
        "{page}"
    );
    assert_eq!(
        back_link(&page),
        "/shop/cart?q=%22%3E&amp;x=&#39;onmouseover=alert(1)&#39;",
        "{page}"
    );
    assert!(!page.contains("'onmouseover"), "{page}");
    let footer = page.split("<footer>").nth(1).unwrap();
    let mut footer = footer.trim_end_matches("</footer></html>").split(' ');
    assert_eq!(footer.next(), Some("403"));
    assert_eq!(footer.next(), Some("captcha_required"));
    let id = footer.next().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    // The proof's internals stay in the JSON and logs.
    assert!(!page.contains("lot_number"), "{page}");

    // Another site's page, or a path browsers read as another site: the root.
    for referer in [
        "https://elsewhere.example/shop/cart".to_owned(),
        format!("{site}//elsewhere.example/x"),
        "javascript:alert(1)".to_owned(),
    ] {
        let page = c.send(partial_proof(&env, &referer)).await.text();
        assert_eq!(back_link(&page), "/", "{referer}: {page}");
    }
    env.shutdown().await;
}

#[tokio::test]
async fn the_default_refusal_page_speaks_to_people_and_links_back() {
    let env = Env::start("[[route]]\npath = \"/login\"\n").await;
    let c = env.client(true);
    let referer = env.https_url("/signin?next=%2Fhome");
    let page = c.send(partial_proof(&env, &referer)).await.text();
    assert!(page.contains("<h1>Verification needed</h1>"), "{page}");
    assert!(
        page.contains("<p>We could not confirm that this request was sent by a person.</p>"),
        "{page}"
    );
    assert!(
        page.contains("<a href=\"/signin?next=%2Fhome\">Go back</a>"),
        "{page}"
    );
    // The code is small print, not the main text.
    let main = page.split("<small>").next().unwrap();
    assert!(!main.contains("captcha_required"), "{page}");
    assert!(
        page.contains("<small>Reference: captcha_required (403), request "),
        "{page}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn an_operators_expired_page_replaces_the_expired_page_only() {
    let dir = tempfile::tempdir().unwrap();
    let env = start_with_pages(dir.path()).await;
    let req = Request::post(env.https_url("/.gatekeeper/release"))
        .header("accept", "text/html")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("referer", env.https_url("/<b>x"))
        .body(Full::new(Bytes::from(
            "challenge=0123456789abcdef0123456789abcdef",
        )))
        .unwrap();
    let answer = env.client(false).send(req).await;
    // Without the binding cookie: refused as unknown.
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    let page = answer.text();
    assert!(
        page.starts_with("<main lang=\"en\"><h2>OWN This check has expired</h2>"),
        "{page}"
    );
    assert!(page.contains("<a href=\"/"), "{page}");
    assert!(!page.contains("<b>"), "{page}");
    env.shutdown().await;
}

fn check(config: &Path, offline: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatekeeper"));
    cmd.arg("check").arg("-c").arg(config);
    if offline {
        cmd.arg("--offline");
    }
    let out = cmd.output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), said)
}

#[test]
fn check_reads_page_templates_beside_the_config_and_names_each_problem_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatekeeper.toml");
    let text = "[server]\nhttp = \"127.0.0.1:8080\"\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n[pages]\n\
                refusal = \"refusal.html\"\nexpired = \"expired.html\"\n";
    std::fs::write(&config, text).unwrap();
    let file = config.display().to_string();

    let (code, said) = check(&config, false);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(&format!("{file}:6:")) && said.contains("pages.refusal: cannot read"),
        "{said}"
    );
    assert!(
        said.contains(&format!("{file}:7:")) && said.contains("pages.expired: cannot read"),
        "{said}"
    );
    // Offline, nothing is read.
    let (code, said) = check(&config, true);
    assert_eq!(code, Some(0), "{said}");

    std::fs::write(
        dir.path().join("refusal.html"),
        "{{heading}} {{reason}} {{secret}}",
    )
    .unwrap();
    std::fs::write(dir.path().join("expired.html"), "{{message}} {{heading}}").unwrap();
    let (code, said) = check(&config, false);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(&format!("{file}:6:"))
            && said.contains("unknown placeholders {{reason}}, {{secret}}"),
        "{said}"
    );
    assert!(
        said.contains(&format!("{file}:7:"))
            && said.contains("lacks {{widget}}")
            && said.contains("unknown placeholder {{heading}}"),
        "{said}"
    );

    std::fs::write(dir.path().join("refusal.html"), REFUSAL).unwrap();
    std::fs::write(dir.path().join("expired.html"), EXPIRED).unwrap();
    let (code, said) = check(&config, false);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("pages: own refusal and expired page"),
        "{said}"
    );
}

/// A typo in the section is caught with a suggestion, as everywhere.
#[test]
fn an_unknown_pages_key_is_named_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatekeeper.toml");
    std::fs::write(
        &config,
        "[server]\nhttp = \"127.0.0.1:8080\"\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n[pages]\nrefusl = \"r.html\"\n",
    )
    .unwrap();
    let (code, said) = check(&config, true);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(":6:") && said.contains("did you mean \"refusal\""),
        "{said}"
    );
}
