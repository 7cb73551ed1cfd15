//! The demo's "legacy app": plain HTML forms and pages that show exactly what
//! the app received. It has no GeeTest code at all and knows nothing of
//! gatekeeper, as the apps gatekeeper exists for. Its pages are served with
//! a strict Content-Security-Policy (scripts and styles from its own origin
//! only), as a careful app's are; gatekeeper amends it where it injects.
//!
//! - `/login`: a form gatekeeper puts the widget into (`[[inject]]`);
//! - `/comment`: a multipart form with a file, kept by gatekeeper's
//!   challenge while the person solves the captcha;
//! - `/api`: the app's own script posts JSON to `/api/echo`: scripts get
//!   gatekeeper's 403 `captcha_required` JSON, never a page.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::gate::fields::CAPTCHA_FIELDS;
use crate::refusal::escape_html;
use crate::sim::Simulator;

/// What a careful app sends: nothing inline, nothing from elsewhere.
const APP_CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

pub async fn serve(listener: TcpListener, sim: Arc<Simulator>) -> std::io::Result<()> {
    let posts = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let (sim, posts) = (sim.clone(), posts.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(sim.clone(), posts.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    sim: Arc<Simulator>,
    posts: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req.uri().path().to_owned();
    // The simulator's stand-in widget, also reachable through the app's
    // origin (as `gatekeeper sim` serves it).
    if matches!(path.as_str(), "/gt4.js" | "/gt4.css") || path.starts_with("/_sim/") {
        return crate::sim::handle(sim, req).await;
    }
    Ok(match (req.method().clone(), path.as_str()) {
        (Method::GET, "/") => html(page(
            "Legacy app behind gatekeeper",
            &INDEX.replace("POSTS", &posts.load(Ordering::Relaxed).to_string()),
        )),
        (Method::GET, "/app.css") => asset(STYLE, "text/css; charset=utf-8"),
        (Method::GET, "/app.js") => asset(SCRIPT, "text/javascript; charset=utf-8"),
        // Browsers ask for it on every page; a 404 would be a console error.
        (Method::GET, "/favicon.ico") => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        (Method::GET, "/login") => html(page("Log in", LOGIN_FORM)),
        (Method::GET, "/comment") => html(page("Leave a comment", COMMENT_FORM)),
        (Method::GET, "/api") => html(page("Call the JSON API", API_FORM)),
        (Method::POST, "/login" | "/comment") => {
            let seq = posts.fetch_add(1, Ordering::Relaxed) + 1;
            let received = Received::read(req).await;
            html(page(
                "What the legacy app received",
                &received.render(seq).await,
            ))
        }
        (Method::POST, "/api/echo") => {
            posts.fetch_add(1, Ordering::Relaxed);
            let received = Received::read(req).await;
            let json = serde_json::json!({
                "received": {
                    "method": received.method,
                    "target": received.target,
                    "body": String::from_utf8_lossy(&received.body),
                    "captcha_fields_seen": received.captcha_fields(),
                }
            });
            let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        _ => {
            let mut resp = html(page(
                "Not found",
                "<p>No such page. <a href=\"/\">Back</a></p>",
            ));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
    })
}

/// A request as the app saw it.
struct Received {
    method: String,
    target: String,
    content_type: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// One part of a multipart body: a field's text, or a file's name, size and digest.
enum Part {
    Field(String, String),
    File {
        name: String,
        file_name: String,
        size: usize,
        sha256: String,
    },
}

impl Received {
    async fn read(req: Request<Incoming>) -> Self {
        let (parts, body) = req.into_parts();
        let body = Limited::new(body, 16 * 1024 * 1024)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        Self {
            method: parts.method.to_string(),
            target: parts.uri.to_string(),
            content_type: parts
                .headers
                .get(CONTENT_TYPE)
                .map(text)
                .unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), text(v)))
                .collect(),
            body,
        }
    }

    /// The multipart body's parts, when it is one.
    async fn parts(&self) -> Option<Vec<Part>> {
        let boundary = multer::parse_boundary(&self.content_type).ok()?;
        let body = self.body.clone();
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut out = Vec::new();
        while let Ok(Some(field)) = multipart.next_field().await {
            let name = field.name().unwrap_or("").to_owned();
            match field.file_name().map(str::to_owned) {
                Some(file_name) => {
                    let bytes = field.bytes().await.ok()?;
                    out.push(Part::File {
                        name,
                        file_name,
                        size: bytes.len(),
                        sha256: hex::encode(Sha256::digest(&bytes)),
                    });
                }
                None => out.push(Part::Field(name, field.text().await.ok()?)),
            }
        }
        Some(out)
    }

    /// Captcha field names found anywhere in what the app received.
    fn captcha_fields(&self) -> Vec<&'static str> {
        let body = String::from_utf8_lossy(&self.body);
        CAPTCHA_FIELDS
            .iter()
            .copied()
            .filter(|f| body.contains(f) || self.target.contains(f))
            .collect()
    }

    async fn render(&self, seq: u64) -> String {
        let seen = self.captcha_fields();
        let verdict = if seen.is_empty() {
            "<p class=\"ok\" id=\"verdict\">No captcha field reached the app.</p>".to_owned()
        } else {
            format!(
                "<p class=\"bad\" id=\"verdict\">Captcha fields reached the app: {}</p>",
                seen.join(", ")
            )
        };
        let body = match self.parts().await {
            Some(parts) => parts
                .iter()
                .map(|p| match p {
                    Part::Field(name, value) => format!("{name}={value}\n"),
                    Part::File {
                        name,
                        file_name,
                        size,
                        sha256,
                    } => format!("{name}: file {file_name}, {size} bytes, sha256 {sha256}\n"),
                })
                .collect::<String>(),
            None => String::from_utf8_lossy(&self.body).into_owned(),
        };
        let rows: String = self
            .headers
            .iter()
            .map(|(k, v)| {
                format!(
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape_html(k),
                    escape_html(v)
                )
            })
            .collect();
        format!(
            "{verdict}<p>Post number <span id=\"seq\">{seq}</span> this app has received.</p>\
             <h2>Request</h2><pre id=\"target\">{} {}</pre><h2>Body</h2><pre id=\"body\">{}</pre>\
             <h2>Headers</h2><table>{rows}</table><p><a href=\"/\">Back</a></p>",
            escape_html(&self.method),
            escape_html(&self.target),
            escape_html(body.trim_end())
        )
    }
}

fn html(body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(APP_CSP));
    resp
}

fn asset(text: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn page(title: &str, content: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\n\
         <link rel=\"stylesheet\" href=\"/app.css\"></head><body><h1>{title}</h1>\n{content}\n</body></html>\n"
    )
}

const STYLE: &str = "body{font:15px system-ui,sans-serif;max-width:46rem;margin:2rem auto;color:#223}\n\
label{display:block;margin:.5rem 0}input[type=text],input[type=password],textarea{display:block;width:20rem}\n\
table{border-collapse:collapse;width:100%;table-layout:fixed}\n\
th,td{text-align:left;vertical-align:top;padding:2px 8px;border-bottom:1px solid #eee;font-size:13px;overflow-wrap:anywhere}th{width:13rem}\n\
pre{background:#f4f6f8;padding:.6rem;white-space:pre-wrap;word-break:break-all}.ok{color:#17702e;font-weight:600}.bad{color:#b3261e;font-weight:600}\n\
.gatekeeper-captcha{margin:1rem 0}\n";

const INDEX: &str = "<p>This application knows nothing about captchas: its pages are plain HTML forms, and \
no GeeTest code is in it. gatekeeper, in front of it, puts the captcha in front of the person.</p>\
<ul><li><a href=\"/login\">Log in</a>: gatekeeper puts the widget into the app's own form as the page passes \
(<code>[[inject]]</code>).</li>\
<li><a href=\"/comment\">Leave a comment</a> (multipart, with a file): the form posts as it is; gatekeeper keeps \
the request, shows its own challenge page, and sends the request on, byte for byte, once the captcha is solved.</li>\
<li><a href=\"/api\">Call the JSON API</a>: a script is not a person; it gets gatekeeper's 403 \
<code>captcha_required</code> JSON, never a page.</li></ul>\
<p>Posts this app has received: <span id=\"posts\">POSTS</span>.</p>";

const LOGIN_FORM: &str = concat!(
    "<form method=\"post\" action=\"/login\" id=\"form\">",
    "<label>User <input type=\"text\" name=\"user\" value=\"alice\"></label>",
    "<label>Password <input type=\"password\" name=\"password\" value=\"\"></label>",
    "<button type=\"submit\" id=\"submit\">Log in</button></form>"
);

const COMMENT_FORM: &str = concat!(
    "<form method=\"post\" action=\"/comment\" enctype=\"multipart/form-data\" id=\"form\">",
    "<label>Comment <textarea name=\"comment\">Crème brûlée is underrated.</textarea></label>",
    "<label>Attachment <input type=\"file\" name=\"attachment\"></label>",
    "<button type=\"submit\" id=\"submit\">Post comment</button></form>"
);

const API_FORM: &str = concat!(
    "<form id=\"form\">",
    "<label>Message <input type=\"text\" name=\"message\" value=\"hello from JSON\"></label>",
    "<button type=\"button\" id=\"submit\">Send JSON</button></form>",
    "<h2>Answer</h2><pre id=\"answer\"></pre>",
    "<script src=\"/app.js\"></script>"
);

/// The app's own script for `/api`: JSON from a script, as apps send it.
const SCRIPT: &str = "document.getElementById('submit').addEventListener('click', function () {\n\
  var data = {};\n\
  new FormData(document.getElementById('form')).forEach(function (v, k) { data[k] = v; });\n\
  fetch('/api/echo', {method: 'POST', headers: {'content-type': 'application/json', 'accept': 'application/json'},\n\
    body: JSON.stringify(data)})\n\
    .then(function (r) { return r.text().then(function (t) {\n\
      document.getElementById('answer').textContent = r.status + ' ' + t; }); });\n\
});\n";
