//! A local upstream API for tests of tools that call one (`ctx.http()`,
//! `ctx.token_for`): serves real HTTP on `127.0.0.1:0` and records what it received.
//!
//! Standalone (no `mcp_fleet` imports), like `issuer.rs`:
//! `#[path = "../support/upstream.rs"] mod upstream;`.
//!
//! - `/echo` (any method): recorded, answered `200 {"ok": true}`.
//! - `/hang`: recorded, never answered (until the server stops).
//! - `/big?bytes=N`: recorded, answered with `N` bytes of `x`.
//! - `POST /requirements` (the team API of `examples/tenant_api`): recorded; a JSON body
//!   with a non-empty `title` is answered `201 {"id": "REQ-<n>", "title": …}` (`n` counts
//!   from 1 on each upstream), anything else `422 {"error": "title must not be empty"}`.

// Each binary that includes this file uses a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// What one request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `x-request-id` header, if any.
    pub request_id: Option<String>,
    /// The `x-api-key` header, if any.
    pub api_key: Option<String>,
    /// The body, as text.
    pub body: String,
}

impl Received {
    /// The bearer token sent, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.authorization.as_deref()?.strip_prefix("Bearer ")
    }
}

type Log = Arc<Mutex<Vec<Received>>>;

fn lock(log: &Log) -> MutexGuard<'_, Vec<Received>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running upstream; stopped when dropped.
pub struct Upstream {
    url: String,
    log: Log,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts on a free loopback port.
    pub fn start() -> Self {
        let log: Log = Arc::default();
        let (tx, rx) = mpsc::channel();
        let shared = log.clone();
        let thread = std::thread::Builder::new()
            .name("test-upstream".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let data = web::Data::new(shared);
                    let next_id = web::Data::new(AtomicU64::new(1));
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .app_data(next_id.clone())
                            .route("/echo", web::to(echo))
                            .route("/hang", web::to(hang))
                            .route("/big", web::to(big))
                            .route("/requirements", web::post().to(requirements))
                    })
                    .workers(2)
                    .disable_signals()
                    .shutdown_timeout(0)
                    .bind(("127.0.0.1", 0))
                    .expect("bind the upstream");
                    let addr: SocketAddr = server.addrs()[0];
                    let server = server.run();
                    tx.send((addr, server.handle())).expect("the test waits");
                    let _ = server.await;
                });
            })
            .expect("spawn the upstream thread");
        let (addr, handle) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the upstream starts");
        Self {
            url: format!("http://{addr}"),
            log,
            handle,
            thread: Some(thread),
        }
    }

    /// The URL of `path_and_query` (`/echo`, `/big?bytes=10`) on this upstream.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.url)
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.log).clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn record(log: &Log, req: &HttpRequest) {
    record_with_body(log, req, &[]);
}

fn record_with_body(log: &Log, req: &HttpRequest, body: &[u8]) {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    lock(log).push(Received {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        authorization: header("authorization"),
        request_id: header("x-request-id"),
        api_key: header("x-api-key"),
        body: String::from_utf8_lossy(body).into_owned(),
    });
}

async fn echo(log: web::Data<Log>, req: HttpRequest) -> HttpResponse {
    record(&log, &req);
    HttpResponse::Ok().json(json!({ "ok": true }))
}

async fn hang(log: web::Data<Log>, req: HttpRequest) -> HttpResponse {
    record(&log, &req);
    std::future::pending::<()>().await;
    HttpResponse::Ok().finish()
}

async fn big(log: web::Data<Log>, req: HttpRequest) -> HttpResponse {
    record(&log, &req);
    let bytes = req
        .query_string()
        .strip_prefix("bytes=")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    HttpResponse::Ok().body("x".repeat(bytes))
}

async fn requirements(
    log: web::Data<Log>,
    next_id: web::Data<AtomicU64>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    record_with_body(&log, &req, &body);
    let title = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("title").and_then(Value::as_str).map(str::to_owned))
        .filter(|t| !t.is_empty());
    match title {
        Some(title) => {
            let id = format!("REQ-{}", next_id.fetch_add(1, Ordering::Relaxed));
            HttpResponse::Created().json(json!({ "id": id, "title": title }))
        }
        None => {
            HttpResponse::UnprocessableEntity().json(json!({ "error": "title must not be empty" }))
        }
    }
}
