//! What the public listener records of each request: a `tracing` span with a request id,
//! one access-log line when the response is ready, and the request metrics.
//!
//! The access line names the method, path, status and latency, and for a tool call that
//! ended before the response was ready its tool, the caller's subject and the outcome
//! (see [`AccessNote`]): one line per call. Never headers, the query string or bodies,
//! where bearer tokens and other secrets travel.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::HttpMessage;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::telemetry::AccessNote;

/// The header carrying the request id, in both directions.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the request being served, in its extensions.
#[derive(Clone)]
pub(crate) struct RequestId(pub std::sync::Arc<str>);

/// Longest incoming request id that is kept; a longer one is replaced.
const MAX_REQUEST_ID: usize = 64;

/// The middleware: wrap it outermost so that it sees every response, refusals included.
#[derive(Clone)]
pub(crate) struct Observe {
    metrics: Metrics,
}

impl Observe {
    /// Records into `metrics`.
    pub(crate) fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = ObserveService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveService {
            service: Rc::new(service),
            metrics: self.metrics.clone(),
        }))
    }
}

/// [`Observe`] around one worker's service.
pub(crate) struct ObserveService<S> {
    service: Rc<S>,
    metrics: Metrics,
}

impl<S, B> Service<ServiceRequest> for ObserveService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let id = request_id(req.headers());
        // Handlers hand it on to what they call for the request (tools' upstream calls).
        req.extensions_mut().insert(RequestId(id.as_str().into()));
        let method = method_label(req.method());
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method,
            path = %req.path(),
        );
        // Where a tool call run for this request leaves what the access line says of it.
        let note = AccessNote::attach(&span);
        let metrics = self.metrics.clone();
        let service = self.service.clone();
        Box::pin(
            async move {
                let result = service.call(req).await;
                let status = match &result {
                    Ok(res) => res.status(),
                    Err(e) => e.as_response_error().status_code(),
                };
                let elapsed = started.elapsed();
                metrics.http_request(method, status.as_u16(), elapsed);
                let call = note.and_then(|note| note.take());
                let call = call.as_ref();
                tracing::info!(
                    status = status.as_u16(),
                    latency_ms = elapsed.as_micros() as f64 / 1000.0,
                    tool = call.map(|c| c.tool.as_str()),
                    subject = call.map(|c| c.subject.as_str()),
                    outcome = call.map(|c| c.outcome),
                    "request"
                );
                let mut res = result?;
                if let Ok(value) = HeaderValue::from_str(&id) {
                    res.headers_mut().insert(REQUEST_ID, value);
                }
                Ok(res)
            }
            .instrument(span),
        )
    }
}

/// The caller's request id when it is short and printable, else a new random one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=MAX_REQUEST_ID).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

/// A new request id: 16 hex digits. It is logged and sent back, never a secret, so it
/// needs to be unique, not unpredictable: each worker thread steps a SplitMix64 sequence
/// seeded once from the operating system, where reading the OS generator was a system
/// call per request.
fn new_request_id() -> String {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            let mut seed = [0u8; 8];
            crate::crypto::fill_random(&mut seed);
            u64::from_le_bytes(seed)
        });
    }
    let state = STATE.with(|s| {
        let next = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(next);
        next
    });
    // SplitMix64's output function: a bijection, so one thread's ids never repeat.
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

/// The method as a label: the standard ones by name, anything else as `OTHER`, so that
/// made-up methods cannot multiply the metric's series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::{web, App, HttpResponse};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;
    use crate::telemetry::ToolCall;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    async fn handler(req: actix_web::HttpRequest) -> HttpResponse {
        // What a handler might log: its span's fields must come along.
        tracing::info!(
            authorized = req.headers().contains_key("authorization"),
            "inside"
        );
        HttpResponse::Ok().body("done")
    }

    #[actix_web::test]
    async fn json_lines_carry_the_request_id_and_never_the_token() {
        let buffer = Buffer::default();
        let subscriber = crate::telemetry::json_subscriber(
            tracing_subscriber::EnvFilter::new("info"),
            buffer.clone(),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        let metrics = Metrics::new();
        let app = init_service(
            App::new()
                .wrap(Observe::new(metrics.clone()))
                .route("/mcp", web::post().to(handler)),
        )
        .await;
        let token = "eyJhbGciOiJFZERTQSJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl";
        let req = TestRequest::post()
            .uri("/mcp?access_token=also-secret")
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status(), 200);
        let id = res
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .expect("an x-request-id header")
            .to_owned();
        assert_eq!(id.len(), 16, "{id}");
        // An id the caller chose is kept; an unprintable or long one is replaced.
        let req = TestRequest::post()
            .uri("/mcp")
            .insert_header(("x-request-id", "trace-42"))
            .to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.headers().get(REQUEST_ID).unwrap(), "trace-42");
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        let req = TestRequest::post()
            .uri("/mcp")
            .insert_header(("x-request-id", long.as_str()))
            .to_request();
        let res = call_service(&app, req).await;
        assert_ne!(res.headers().get(REQUEST_ID).unwrap(), long.as_str());

        let output = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(!output.contains(token), "the token leaked:\n{output}");
        assert!(
            !output.contains("also-secret"),
            "the query leaked:\n{output}"
        );
        let lines: Vec<serde_json::Value> = output
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        let of_first: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id.as_str())
            .collect();
        assert_eq!(
            of_first.len(),
            2,
            "the handler's line and the access line:\n{output}"
        );
        let inside = of_first[0];
        assert_eq!(inside["message"], "inside", "{output}");
        assert_eq!(inside["authorized"], true, "{output}");
        let access = of_first[1];
        assert_eq!(access["message"], "request", "{output}");
        assert_eq!(access["level"], "INFO", "{output}");
        assert_eq!(access["status"], 200, "{output}");
        assert!(access["latency_ms"].is_f64(), "{output}");
        assert_eq!(access["span"]["method"], "POST", "{output}");
        assert_eq!(access["span"]["path"], "/mcp", "{output}");
        assert_eq!(access["spans"][0]["request_id"], id.as_str(), "{output}");
        let accesses = lines.iter().filter(|l| l["message"] == "request").count();
        assert_eq!(accesses, 3, "one access line per request:\n{output}");
        assert!(metrics
            .render()
            .contains("mcp_fleet_http_requests_total{method=\"POST\",status=\"200\"} 3"));
    }

    /// Where [`calling`] puts the note it found, for the test to try after the response.
    type Found = web::Data<Mutex<Option<Arc<AccessNote>>>>;

    /// A handler that runs a tool call: it leaves the call in its request's note.
    async fn calling(found: Found) -> HttpResponse {
        let note = AccessNote::current().expect("the request's note, found from inside it");
        let call = ToolCall {
            tool: "echo".to_owned(),
            subject: "alice".to_owned(),
            outcome: "ok",
        };
        note.leave(call.clone()).expect("an open note");
        // A second call in the same request (a batch) is given back to log its own line.
        assert_eq!(
            note.leave(call),
            Err(ToolCall {
                tool: "echo".to_owned(),
                subject: "alice".to_owned(),
                outcome: "ok"
            })
        );
        *found.lock().unwrap() = Some(note);
        HttpResponse::Ok().body("called")
    }

    #[actix_web::test]
    async fn the_access_line_names_the_tool_call_that_ended_before_it() {
        let buffer = Buffer::default();
        // The filter the node installs by default: the note is found through it.
        let subscriber = crate::telemetry::json_subscriber(
            crate::telemetry::LogFilter::parse(crate::config::DEFAULT_LOG_FILTER).unwrap(),
            buffer.clone(),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        let found: Found = web::Data::new(Mutex::new(None));
        let app = init_service(
            App::new()
                .wrap(Observe::new(Metrics::new()))
                .app_data(found.clone())
                .route("/call", web::post().to(calling))
                .route("/mcp", web::post().to(handler)),
        )
        .await;
        let res = call_service(&app, TestRequest::post().uri("/call").to_request()).await;
        assert_eq!(res.status(), 200);
        let res = call_service(&app, TestRequest::post().uri("/mcp").to_request()).await;
        assert_eq!(res.status(), 200);
        // Its line is written: a call ending now logs its own.
        let note = found.lock().unwrap().take().expect("the handler ran");
        let late = ToolCall {
            tool: "echo".to_owned(),
            subject: "alice".to_owned(),
            outcome: "ok",
        };
        assert_eq!(note.leave(late.clone()), Err(late));

        let output = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let accesses: Vec<serde_json::Value> = output
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .filter(|l: &serde_json::Value| l["message"] == "request")
            .collect();
        assert_eq!(accesses.len(), 2, "{output}");
        assert_eq!(accesses[0]["span"]["path"], "/call", "{output}");
        assert_eq!(accesses[0]["tool"], "echo", "{output}");
        assert_eq!(accesses[0]["subject"], "alice", "{output}");
        assert_eq!(accesses[0]["outcome"], "ok", "{output}");
        assert_eq!(accesses[1]["span"]["path"], "/mcp", "{output}");
        for field in ["tool", "subject", "outcome"] {
            assert!(accesses[1].get(field).is_none(), "{field}: {output}");
        }
    }

    #[test]
    fn new_request_ids_are_sixteen_hex_digits_and_distinct_across_threads() {
        let ids = |n| (0..n).map(|_| new_request_id()).collect::<Vec<_>>();
        let mut all = ids(50_000);
        let other = std::thread::spawn(move || ids(50_000)).join().unwrap();
        all.extend(other);
        assert!(
            all.iter()
                .all(|id| id.len() == 16
                    && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        );
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
