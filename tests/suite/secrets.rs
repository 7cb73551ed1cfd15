//! Issue 3: no secret (captcha key, pass_token, captcha_output, sign_token)
//! reaches gatekeeper's logs, whatever the outcome, even at debug level.

use crate::common::*;
use gatekeeper::sim::Behaviour;

#[tokio::test]
async fn no_secret_appears_in_the_logs_at_debug_level() {
    let certs = TestCerts::new();
    let upstream = Upstream::start().await;
    let sim = Sim::start().await;
    let port = free_port();
    let routes = "[[route]]\npath = \"/login\"\nmethods = [\"POST\", \"GET\"]\n";
    let text = config_text(&certs, upstream.addr, &sim.url(), routes)
        .replace(
            "http = \"127.0.0.1:0\"",
            &format!("http = \"127.0.0.1:{port}\""),
        )
        .replace(
            &format!("key = \"{CAPTCHA_KEY}\""),
            "key_env = \"GK_TEST_LOGIN_KEY\"",
        );
    let path = certs.dir.path().join("gatekeeper.toml");
    std::fs::write(&path, text).unwrap();
    for format in ["pretty", "json"] {
        let gk = Process::spawn_with_args(
            &path,
            port,
            &["--log-format", format],
            &[("RUST_LOG", "debug"), ("GK_TEST_LOGIN_KEY", CAPTCHA_KEY)],
        );
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let url = |q: &str| format!("http://127.0.0.1:{port}/login{q}");
        let mut secrets: Vec<String> = vec![CAPTCHA_KEY.to_owned()];
        let mut send = |proof: &ProofFields, in_query: bool| {
            secrets.extend(proof.secrets().iter().map(|s| s.to_string()));
            secrets.push(gatekeeper::geetest::sign_token(
                CAPTCHA_KEY.as_bytes(),
                &proof.lot_number,
            ));
            let req = if in_query {
                http::Request::get(url(&format!("?{}", proof.form()))).body(Default::default())
            } else {
                http::Request::post(url(""))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(http_body_util::Full::new(bytes::Bytes::from(proof.form())))
            }
            .unwrap();
            client.request(req)
        };
        // pass (body and query), replay, forged pass_token, GeeTest error, outage.
        let p = sim.mint(CAPTCHA_ID);
        send(&p, false).await.unwrap();
        send(&p, false).await.unwrap();
        send(&sim.mint(CAPTCHA_ID), true).await.unwrap();
        let mut forged = sim.mint(CAPTCHA_ID);
        forged.pass_token = "ab".repeat(32);
        send(&forged, false).await.unwrap();
        sim.sim.set_behaviour(Behaviour::Error);
        send(&sim.mint(CAPTCHA_ID), false).await.unwrap();
        sim.sim.set_behaviour(Behaviour::Garbage);
        send(&sim.mint(CAPTCHA_ID), false).await.unwrap();
        sim.sim.set_behaviour(Behaviour::Normal);

        let status = gk.terminate_keep_logs();
        let logs = std::fs::read_to_string(&status.1).unwrap();
        assert!(
            logs.contains("captcha decision"),
            "decisions are logged ({format}):\n{logs}"
        );
        for secret in &secrets {
            assert!(
                !logs.contains(secret.as_str()),
                "a secret reached the {format} log:\n{logs}"
            );
        }
    }
}
