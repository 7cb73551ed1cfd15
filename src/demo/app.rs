//! The demo's "legacy app": three forms written as a real GeeTest integration
//! is, and pages that show exactly what the app received, so gatekeeper's
//! stripping is visible. It knows nothing of gatekeeper.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::gate::fields::CAPTCHA_FIELDS;
use crate::refusal::escape_html;
use crate::sim::{DEMO_CAPTCHA_ID, Simulator};

pub async fn serve(listener: TcpListener, sim: Arc<Simulator>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let sim = sim.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(sim.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    sim: Arc<Simulator>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req.uri().path().to_owned();
    // GeeTest's widget would come from static.geetest.com; the stand-in is
    // served from the page's own origin so HTTPS pages can load it.
    if path == "/gt4.js" || path.starts_with("/_sim/") {
        return crate::sim::handle(sim, req).await;
    }
    Ok(match (req.method().clone(), path.as_str()) {
        (Method::GET, "/") => html(INDEX.to_owned()),
        // Browsers ask for it on every page; a 404 would be a console error.
        (Method::GET, "/favicon.ico") => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        (Method::GET, "/login") => html(page("Log in", LOGIN_FORM, Widget::Yes)),
        (Method::GET, "/comment") => html(page("Leave a comment", COMMENT_FORM, Widget::Yes)),
        (Method::GET, "/api") => html(page("Call the JSON API", API_FORM, Widget::Yes)),
        (Method::POST, "/login" | "/comment") => {
            let received = Received::read(req).await;
            html(page(
                "What the legacy app received",
                &received.render(),
                Widget::No,
            ))
        }
        (Method::POST, "/api/echo") => {
            let received = Received::read(req).await;
            let json = serde_json::json!({
                "received": {
                    "method": received.method,
                    "target": received.target,
                    "headers": received.headers,
                    "body": received.body,
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
                Widget::No,
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
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    async fn read(req: Request<Incoming>) -> Self {
        let (parts, body) = req.into_parts();
        let body = Limited::new(body, 8 * 1024 * 1024)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Self {
            method: parts.method.to_string(),
            target: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Captcha field names found anywhere in what the app received.
    fn captcha_fields(&self) -> Vec<&'static str> {
        CAPTCHA_FIELDS
            .iter()
            .copied()
            .filter(|f| self.body.contains(f) || self.target.contains(f))
            .collect()
    }

    fn render(&self) -> String {
        let seen = self.captcha_fields();
        let verdict = if seen.is_empty() {
            "<p class=\"ok\" id=\"verdict\">No captcha field reached the app.</p>".to_owned()
        } else {
            format!(
                "<p class=\"bad\" id=\"verdict\">Captcha fields reached the app: {}</p>",
                seen.join(", ")
            )
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
            "{verdict}<h2>Request</h2><pre id=\"target\">{} {}</pre><h2>Headers</h2><table>{rows}</table>\
             <h2>Body</h2><pre id=\"body\">{}</pre><p><a href=\"/\">Back</a></p>",
            escape_html(&self.method),
            escape_html(&self.target),
            escape_html(&self.body)
        )
    }
}

fn html(body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// Whether a page carries the captcha: only the forms do (the widget needs
/// their `#captcha` container).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Widget {
    Yes,
    No,
}

fn page(title: &str, content: &str, widget: Widget) -> String {
    let (script, setup) = match widget {
        Widget::Yes => (
            "<!-- GeeTest's widget. For production: https://static.geetest.com/v4/gt4.js -->\n\
             <script src=\"/gt4.js\"></script>\n",
            WIDGET_SETUP,
        ),
        Widget::No => ("", ""),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\n{STYLE}\n\
         {script}</head><body><h1>{title}</h1>\n{content}\n{setup}</body></html>\n"
    )
    .replace("CAPTCHA_ID", DEMO_CAPTCHA_ID)
}

const STYLE: &str = "<style>body{font:15px system-ui,sans-serif;max-width:46rem;margin:2rem auto;color:#223}\
label{display:block;margin:.5rem 0}input[type=text],input[type=password],textarea{display:block;width:20rem}\
#captcha{margin:1rem 0}table{border-collapse:collapse;width:100%;table-layout:fixed}\
th,td{text-align:left;vertical-align:top;padding:2px 8px;border-bottom:1px solid #eee;font-size:13px;overflow-wrap:anywhere}th{width:13rem}\
pre{background:#f4f6f8;padding:.6rem;white-space:pre-wrap;word-break:break-all}.ok{color:#17702e;font-weight:600}.bad{color:#b3261e;font-weight:600}</style>";

const INDEX: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Legacy app</title></head>\
<body style=\"font:15px system-ui,sans-serif;max-width:46rem;margin:2rem auto\"><h1>Legacy app behind gatekeeper</h1>\
<p>This application knows nothing about captchas. gatekeeper checks the GeeTest proof on the protected routes and removes it before the app sees the request.</p>\
<ul><li><a href=\"/login\">Log in</a> (form)</li><li><a href=\"/comment\">Leave a comment</a> (multipart, with a file)</li>\
<li><a href=\"/api\">Call the JSON API</a></li></ul></body></html>\n";

const LOGIN_FORM: &str = concat!(
    "<form method=\"post\" action=\"/login\" id=\"form\">",
    "<label>User <input type=\"text\" name=\"user\" value=\"alice\"></label>",
    "<label>Password <input type=\"password\" name=\"password\" value=\"correct horse\"></label>",
    "<div id=\"captcha\"></div>",
    "<input type=\"hidden\" name=\"lot_number\"><input type=\"hidden\" name=\"captcha_output\">",
    "<input type=\"hidden\" name=\"pass_token\"><input type=\"hidden\" name=\"gen_time\"><input type=\"hidden\" name=\"captcha_id\">",
    "<button type=\"submit\" id=\"submit\">Log in</button></form>"
);

const COMMENT_FORM: &str = concat!(
    "<form method=\"post\" action=\"/comment\" enctype=\"multipart/form-data\" id=\"form\">",
    "<label>Comment <textarea name=\"comment\">Crème brûlée is underrated.</textarea></label>",
    "<label>Attachment <input type=\"file\" name=\"attachment\"></label>",
    "<div id=\"captcha\"></div>",
    "<input type=\"hidden\" name=\"lot_number\"><input type=\"hidden\" name=\"captcha_output\">",
    "<input type=\"hidden\" name=\"pass_token\"><input type=\"hidden\" name=\"gen_time\"><input type=\"hidden\" name=\"captcha_id\">",
    "<button type=\"submit\" id=\"submit\">Post comment</button></form>"
);

const API_FORM: &str = concat!(
    "<form id=\"form\" onsubmit=\"return false\">",
    "<label>Message <input type=\"text\" name=\"message\" value=\"hello from JSON\"></label>",
    "<div id=\"captcha\"></div>",
    "<input type=\"hidden\" name=\"lot_number\"><input type=\"hidden\" name=\"captcha_output\">",
    "<input type=\"hidden\" name=\"pass_token\"><input type=\"hidden\" name=\"gen_time\"><input type=\"hidden\" name=\"captcha_id\">",
    "<button type=\"button\" id=\"submit\" onclick=\"sendJson()\">Send JSON</button></form>",
    "<h2>Answer</h2><pre id=\"answer\"></pre>",
    "<script>function sendJson(){var f=document.getElementById('form');var data={};",
    "new FormData(f).forEach(function(v,k){data[k]=v;});",
    "fetch('/api/echo',{method:'POST',headers:{'content-type':'application/json','accept':'application/json'},body:JSON.stringify(data)})",
    ".then(function(r){return r.text().then(function(t){document.getElementById('answer').textContent=r.status+' '+t;});});}</script>"
);

/// As in GeeTest's own demos: on success, copy getValidate() into the form.
const WIDGET_SETUP: &str = "<script>\ninitGeetest4({captchaId: \"CAPTCHA_ID\", product: \"float\"}, function (captcha) {\n  \
captcha.appendTo(\"#captcha\");\n  captcha.onSuccess(function () {\n    var result = captcha.getValidate();\n    \
Object.keys(result).forEach(function (name) {\n      var input = document.querySelector('#form input[name=\"' + name + '\"]');\n      \
if (input) input.value = result[name];\n    });\n  });\n});\n</script>\n";
