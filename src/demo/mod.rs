//! `gatekeeper demo`: the whole product on one machine, offline.
//!
//! One process starts the GeeTest simulator, a small "legacy app" that shows
//! exactly what it receives, and gatekeeper in front of it on HTTPS (with a
//! certificate made at start) and cleartext. The app is plain HTML with no
//! GeeTest code: gatekeeper injects the widget into its login form and keeps
//! its comment post behind a challenge page. For production only the API
//! server, the widget's script URL and the credential change.

mod app;

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::sim::{DEMO_CAPTCHA_ID, DEMO_CAPTCHA_KEY, Simulator};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// HTTPS port for gatekeeper.
    #[arg(long, default_value_t = 8443)]
    pub https_port: u16,
    /// Cleartext port for gatekeeper.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs) -> Result<(), String> {
    let sim = Simulator::new(vec![(
        DEMO_CAPTCHA_ID.to_owned(),
        DEMO_CAPTCHA_KEY.to_owned(),
    )]);
    let sim_addr = spawn_listener("simulator", |l| crate::sim::serve(l, sim.clone())).await?;
    let app_addr = spawn_listener("legacy app", |l| app::serve(l, sim.clone())).await?;

    let dir = TempDir::new()?;
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| format!("cannot make a certificate: {e}"))?;
    dir.write("cert.pem", &cert.pem())?;
    dir.write("key.pem", &signing_key.serialize_pem())?;
    let text = config_text(&args, app_addr, sim_addr);
    let path = dir.write("gatekeeper.toml", &text)?;
    let config = crate::config::load_file(&path).map_err(|e| e.to_string())?;
    let server = crate::server::start(config)
        .await
        .map_err(|e| e.to_string())?;

    let https = format!("https://localhost:{}", args.https_port);
    let http = format!("http://127.0.0.1:{}", args.http_port);
    println!("gatekeeper demo: everything runs in this process, offline.\n");
    println!(
        "--- gatekeeper.toml (generated) ---\n{}\n-----------------------------------\n",
        text.trim()
    );
    println!("GeeTest simulator  http://{sim_addr}");
    println!(
        "legacy app         http://{app_addr}   (what the app receives is shown on each page)"
    );
    println!(
        "gatekeeper         {https}   (self-signed certificate: accept the browser's warning)"
    );
    println!("                   {http}\n");
    println!("Open one of these (the app has no captcha code; gatekeeper brings it):");
    println!("  {https}/login     gatekeeper puts the widget into the app's login form");
    println!(
        "  {https}/comment   post a comment with a file; gatekeeper keeps it while you solve the captcha"
    );
    println!(
        "  {https}/api       the app's script posts JSON: scripts get the 403 captcha_required JSON\n"
    );
    println!("Or from a terminal: mint a proof and log in with it.");
    println!("{}\n", curl_round_trip(&http));
    println!("Ctrl-C stops the demo.");
    server.run_until_signal().await;
    Ok(())
}

/// The printed terminal round trip. It must work when pasted into any POSIX
/// shell: the URL is quoted (zsh globs a bare `?`), and the form is written
/// without a trailing newline (`print()` would add one to the last field,
/// which gatekeeper then refuses as malformed).
fn curl_round_trip(http: &str) -> String {
    format!(
        "  curl -s -X POST '{http}/_sim/mint?captcha_id={DEMO_CAPTCHA_ID}' \\\n    \
         | python3 -c 'import json,sys,urllib.parse; sys.stdout.write(urllib.parse.urlencode(json.load(sys.stdin)))' \\\n    \
         | curl -s '{http}/login' --data-binary @- --data 'user=alice' -H 'content-type: application/x-www-form-urlencoded'"
    )
}

fn config_text(args: &DemoArgs, app: SocketAddr, sim: SocketAddr) -> String {
    format!(
        r#"[server]
https = "127.0.0.1:{https}"
http = "127.0.0.1:{http}"

[tls]
cert = "cert.pem"
key = "key.pem"

[upstream]
url = "http://{app}"

[geetest]
api_server = "http://{sim}"   # the simulator; GeeTest is https://gcaptcha4.geetest.com
on_error = "deny"

[challenge]
widget_url = "http://{sim}/gt4.js"   # the simulator's stand-in; GeeTest's is the default

[captcha.demo]
id = "{DEMO_CAPTCHA_ID}"
key = "{DEMO_CAPTCHA_KEY}"    # a simulator key; use key_env for a real one

[[route]]
path = "/login"        # its form gets the widget from [[inject]] below

[[route]]
path = "/comment"      # a browser's post is kept while the person solves the captcha

[[route]]
path = "/api/echo"     # scripts get the 403 captcha_required JSON

[[inject]]
path = "/login"
form = 'form[action="/login"]'
"#,
        https = args.https_port,
        http = args.http_port,
    )
}

async fn spawn_listener<F, Fut>(what: &str, serve: F) -> Result<SocketAddr, String>
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot start the {what}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(serve(listener));
    Ok(addr)
}

/// The demo's certificate and config, removed when the demo stops.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("gatekeeper-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }

    fn write(&self, name: &str, contents: &str) -> Result<PathBuf, String> {
        let path = self.0.join(name);
        std::fs::write(&path, contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
