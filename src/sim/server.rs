//! The simulator's HTTP side: HTTP/1.1 keep-alive on a multi-threaded runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{debug, info};

use super::state::{Behaviour, Simulator, ValidateRecord};
use super::{DEMO_CAPTCHA_ID, DEMO_CAPTCHA_KEY, SimArgs};

const MAX_BODY: usize = 64 * 1024;
/// The most proofs one `/_sim/mint?count=N` makes.
const MAX_MINT_BATCH: usize = 100_000;

/// An answer, or `Err` to drop the connection without one.
pub type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

/// Serves until the task is dropped or the listener fails.
pub async fn serve(listener: TcpListener, sim: Arc<Simulator>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        sim.connections.fetch_add(1, Ordering::Relaxed);
        let sim = sim.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(sim.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "simulator connection ended");
            }
        });
    }
}

/// `gatekeeper sim`: binds, says what it serves, and serves until Ctrl-C.
pub async fn run(args: SimArgs) -> std::io::Result<()> {
    let credentials = if args.captchas.is_empty() {
        vec![(DEMO_CAPTCHA_ID.to_owned(), DEMO_CAPTCHA_KEY.to_owned())]
    } else {
        args.captchas
    };
    let sim = Simulator::with_lifetime(credentials, args.proof_lifetime);
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    info!("GeeTest simulator on http://{addr}");
    info!("  validate: POST http://{addr}/validate?captcha_id=ID");
    for id in sim.captcha_ids() {
        info!("  mint a proof: curl -X POST 'http://{addr}/_sim/mint?captcha_id={id}'");
    }
    tokio::select! {
        result = serve(listener, sim) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// The stand-in for GeeTest's browser widget (same API as gt4.js).
const WIDGET: &str = include_str!("widget/gt4.js");
/// Its look, a stylesheet it loads from beside itself.
const WIDGET_STYLE: &str = include_str!("widget/gt4.css");

/// Answers one simulator request. Public so the demo can serve the widget and
/// the mint endpoint from the page's own origin.
pub async fn handle(sim: Arc<Simulator>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET | Method::POST, "/validate") => validate(&sim, req).await,
        (Method::GET | Method::POST, "/_sim/mint") => {
            let params = query_params(req.uri().query());
            let id = params
                .get("captcha_id")
                .map(String::as_str)
                .unwrap_or(DEMO_CAPTCHA_ID);
            let unknown = || {
                json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "unknown captcha_id"}),
                )
            };
            // `count=N` mints N proofs at once (a JSON array), for load tests.
            let Some(count) = params.get("count") else {
                return Ok(match sim.mint(id) {
                    Some(proof) => json_response(StatusCode::OK, &json!(proof)),
                    None => unknown(),
                });
            };
            let count = match count.parse::<usize>() {
                Ok(n @ 1..=MAX_MINT_BATCH) => n,
                _ => {
                    return Ok(json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": format!("count must be 1 to {MAX_MINT_BATCH}")}),
                    ));
                }
            };
            let proofs: Option<Vec<_>> = (0..count).map(|_| sim.mint(id)).collect();
            Ok(match proofs {
                Some(proofs) => json_response(StatusCode::OK, &json!(proofs)),
                None => unknown(),
            })
        }
        (Method::POST, "/_sim/behaviour") => {
            let body = read_body(req).await?;
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let delay = std::time::Duration::from_millis(parsed["delay_ms"].as_u64().unwrap_or(0));
            let behaviour = match parsed["mode"].as_str() {
                Some("normal") => Behaviour::Normal,
                Some("slow") => Behaviour::Slow(delay),
                Some("fail") => Behaviour::Fail,
                Some("error") => Behaviour::Error,
                Some("garbage") => Behaviour::Garbage,
                Some("http500") => Behaviour::Http500,
                Some("drop") => Behaviour::Drop,
                _ => {
                    return Ok(json_response(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "mode must be normal, slow, fail, error, garbage, http500 or drop"}),
                    ));
                }
            };
            sim.set_behaviour(behaviour);
            Ok(json_response(
                StatusCode::OK,
                &json!({"mode": parsed["mode"]}),
            ))
        }
        (Method::GET, "/_sim/stats") => Ok(json_response(StatusCode::OK, &json!(sim.stats()))),
        (Method::GET, "/gt4.js" | "/gt4.css") => {
            let (text, content_type) = if path == "/gt4.js" {
                (WIDGET, "text/javascript; charset=utf-8")
            } else {
                (WIDGET_STYLE, "text/css; charset=utf-8")
            };
            let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            Ok(resp)
        }
        _ => Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not found"}),
        )),
    }
}

async fn validate(sim: &Simulator, req: Request<Incoming>) -> Answer {
    match sim.behaviour() {
        Behaviour::Slow(d) => tokio::time::sleep(d).await,
        Behaviour::Garbage => {
            return Ok(text_response(
                StatusCode::OK,
                "<html>upstream proxy error</html>",
            ));
        }
        Behaviour::Http500 => {
            return Ok(text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ));
        }
        Behaviour::Drop => return Err(std::io::Error::other("dropping the connection as told")),
        _ => {}
    }
    let query = query_params(req.uri().query());
    let mut record = ValidateRecord {
        method: req.method().to_string(),
        captcha_id_in_query: query.get("captcha_id").cloned(),
        lot_number: String::new(),
        sign_token_ok: false,
        content_type: req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        outcome: String::new(),
    };
    let mut params = query;
    let body = read_body(req).await?;
    // GeeTest takes the parameters from the query and the form body alike.
    params.extend(form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    let answer = sim.validate(&params, &mut record);
    record.outcome = match (answer["status"].as_str(), answer["result"].as_str()) {
        (Some("success"), Some(r)) => r.to_owned(),
        _ => format!("error {}", answer["code"].as_str().unwrap_or("")),
    };
    sim.remember(record);
    Ok(json_response(StatusCode::OK, &answer))
}

fn query_params(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, std::io::Error> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The demo's widget mints from the page's origin.
    resp.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}

fn text_response(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp
}
