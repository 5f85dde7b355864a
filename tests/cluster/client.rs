//! A minimal legacy (2025-11-25) MCP client over plain HTTP that can talk to any node.
//!
//! Every call returns a `Result` instead of panicking, because the cluster tests expect
//! refused connections and errors while a node is down or a leader is being elected.

use std::io::{BufRead, BufReader, Read};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use ureq::http::Response;
use ureq::{Agent, Body};

/// The legacy protocol version the client asks for.
pub const VERSION: &str = "2025-11-25";
/// The version without sessions.
pub const MODERN: &str = "2026-07-28";
/// What real clients send.
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        Agent::config_builder()
            .http_status_as_error(false)
            // A hung node fails the request instead of hanging the test.
            .timeout_global(Some(Duration::from_secs(10)))
            .timeout_connect(Some(Duration::from_secs(2)))
            // The benchmark runs 16 threads against 3 or 4 nodes; keep their connections.
            .max_idle_connections(128)
            .max_idle_connections_per_host(32)
            .build()
            .into()
    })
}

/// A response, read completely.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Reply {
    fn read(result: Result<Response<Body>, ureq::Error>) -> Result<Self, ureq::Error> {
        let mut response = result?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_owned(), value)
            })
            .collect();
        let body = response.body_mut().read_to_string()?;
        Ok(Self {
            status,
            headers,
            body,
        })
    }

    /// The session an `initialize` reply made, for the holder of `token`.
    pub fn session(&self, token: Option<&str>) -> Result<Session, String> {
        if self.status != 200 {
            return Err(format!("initialize: {self:?}"));
        }
        let id = self
            .header("mcp-session-id")
            .ok_or_else(|| format!("initialize returned no session id: {self:?}"))?;
        Ok(match token {
            Some(token) => Session::with_token(id, token),
            None => Session::with_id(id),
        })
    }

    /// Whether the body is the server's JSON (a JSON-RPC message), not a page that a
    /// load balancer wrote.
    pub fn is_json(&self) -> bool {
        self.header("content-type").is_some_and(|c| {
            c.starts_with("application/json") || c.starts_with("text/event-stream")
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every JSON-RPC message the body carries, in order: the JSON body itself or each
    /// event of an event stream (priming events and comments carry none).
    pub fn messages(&self) -> Vec<Value> {
        let sse = self
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if !sse {
            return serde_json::from_str(&self.body).into_iter().collect();
        }
        self.body
            .split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                serde_json::from_str(&data.join("\n")).ok()
            })
            .collect()
    }

    /// The JSON-RPC response the body carries: the JSON body itself or, for an event
    /// stream, the event that answers a request.
    pub fn message(&self) -> Option<Value> {
        let sse = self
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if !sse {
            return serde_json::from_str(&self.body).ok();
        }
        self.body.split("\n\n").find_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            let message: Value = serde_json::from_str(&data.join("\n")).ok()?;
            let answers = message.get("id").is_some()
                && (message.get("result").is_some() || message.get("error").is_some());
            answers.then_some(message)
        })
    }
}

fn with_headers<B>(
    mut request: ureq::RequestBuilder<B>,
    headers: &[(&str, &str)],
) -> ureq::RequestBuilder<B> {
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
}

/// GETs `url` with extra `headers`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Reply, ureq::Error> {
    Reply::read(with_headers(agent().get(url), headers).call())
}

/// POSTs `body` as JSON, accepting JSON or an event stream, with extra `headers`.
pub fn post(url: &str, headers: &[(&str, &str)], body: &str) -> Result<Reply, ureq::Error> {
    let request = agent()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH);
    Reply::read(with_headers(request, headers).send(body))
}

/// DELETEs `url` with extra `headers`.
pub fn delete(url: &str, headers: &[(&str, &str)]) -> Result<Reply, ureq::Error> {
    Reply::read(with_headers(agent().delete(url), headers).call())
}

/// How long an event stream may stay open before a test reading it gives up.
const STREAM_TIMEOUT: Duration = Duration::from_secs(20);

/// The JSON-RPC messages of an SSE body, one per event, in order, read as they come.
pub struct Events<R> {
    lines: std::io::Lines<BufReader<R>>,
}

impl<R: Read> Events<R> {
    /// The events of `body`.
    pub fn new(body: R) -> Self {
        Self {
            lines: BufReader::new(body).lines(),
        }
    }

    /// The next event's message; `Err` when the stream ends or fails first.
    pub fn next_message(&mut self) -> Result<Value, String> {
        let mut data = Vec::new();
        loop {
            let line = self
                .lines
                .next()
                .ok_or("the stream ended")?
                .map_err(|e| format!("reading the stream: {e}"))?;
            if line.is_empty() {
                // Priming events and keep-alives carry no message.
                if data.iter().all(String::is_empty) {
                    data.clear();
                    continue;
                }
                return serde_json::from_str(&data.join("\n"))
                    .map_err(|e| format!("an event that is not JSON ({e}): {data:?}"));
            }
            if let Some(rest) = line.strip_prefix("data:") {
                data.push(rest.trim_start().to_owned());
            }
        }
    }

    /// Skips events until one satisfies `wanted`.
    pub fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Result<Value, String> {
        loop {
            let message = self
                .next_message()
                .map_err(|e| format!("waiting for {what}: {e}"))?;
            if wanted(&message) {
                return Ok(message);
            }
        }
    }
}

/// An open response stream's status and events.
pub type Stream = (u16, Events<ureq::BodyReader<'static>>);

fn stream_agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        Agent::config_builder()
            .http_status_as_error(false)
            // A stream that never brings what a test waits for fails it instead of hanging.
            .timeout_global(Some(STREAM_TIMEOUT))
            .build()
            .into()
    })
}

fn open_stream(result: Result<Response<Body>, ureq::Error>) -> Result<Stream, ureq::Error> {
    let response = result?;
    let status = response.status().as_u16();
    Ok((status, Events::new(response.into_body().into_reader())))
}

/// POSTs `body` as JSON with extra `headers`, and returns the response as it comes.
pub fn post_stream(url: &str, headers: &[(&str, &str)], body: &str) -> Result<Stream, ureq::Error> {
    let request = stream_agent()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH);
    open_stream(with_headers(request, headers).send(body))
}

/// Opens a legacy GET stream at `url` with extra `headers`, read as it comes.
pub fn get_stream(url: &str, headers: &[(&str, &str)]) -> Result<Stream, ureq::Error> {
    let request = stream_agent()
        .get(url)
        .header("accept", "text/event-stream");
    open_stream(with_headers(request, headers).call())
}

/// A 2026-07-28 `tools/call` of `tool` through `url`, with `token` as the bearer token
/// when given: no session, every request stands alone.
pub fn modern_call(
    url: &str,
    token: Option<&str>,
    tool: &str,
    arguments: Value,
) -> Result<Reply, ureq::Error> {
    let params = json!({ "name": tool, "arguments": arguments });
    modern_tool_call(url, token, json!({}), params)
}

/// A 2026-07-28 `tools/call` through `url` with `params` as given (`name`, `arguments`,
/// and for a retry `inputResponses` and `requestState`), declaring `capabilities` in
/// `_meta`, with `token` as the bearer token when given.
pub fn modern_tool_call(
    url: &str,
    token: Option<&str>,
    capabilities: Value,
    params: Value,
) -> Result<Reply, ureq::Error> {
    modern_request(url, token, "tools/call", params, capabilities)
}

/// A 2026-07-28 request of `method` with `params` through `url`, declaring `capabilities`,
/// with the `Mcp-Name` header its method needs (tool name or task id).
pub fn modern_request(
    url: &str,
    token: Option<&str>,
    method: &str,
    mut params: Value,
    capabilities: Value,
) -> Result<Reply, ureq::Error> {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    });
    let name = match method {
        "tools/call" => params["name"].as_str().map(str::to_owned),
        "tasks/get" | "tasks/update" | "tasks/cancel" => {
            params["taskId"].as_str().map(str::to_owned)
        }
        _ => None,
    };
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("MCP-Protocol-Version", MODERN), ("Mcp-Method", method)];
    headers.extend(name.as_deref().map(|n| ("Mcp-Name", n)));
    headers.extend(bearer.as_deref().map(|b| ("Authorization", b)));
    post(url, &headers, &body.to_string())
}

/// A legacy session, made by `initialize` on one node and usable on any.
#[derive(Debug, Clone)]
pub struct Session {
    /// The `Mcp-Session-Id`.
    pub id: String,
    /// `Bearer <token>` when the session was made with a token; every request sends it.
    authorization: Option<String>,
}

impl Session {
    /// A session known by its id, made anonymously.
    pub fn with_id(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            authorization: None,
        }
    }

    /// A session known by its id, made by the holder of `token`.
    pub fn with_token(id: &str, token: &str) -> Self {
        Self {
            id: id.to_owned(),
            authorization: Some(format!("Bearer {token}")),
        }
    }

    /// Creates a session through the node at `url` (initialize, then the initialized
    /// notification); panics if that fails.
    #[track_caller]
    pub fn initialize(url: &str) -> Self {
        Self::create(url, "cluster-tests").unwrap_or_else(|e| panic!("a session via {url}: {e}"))
    }

    /// Creates a session through `url`, naming the client `client_name` in `clientInfo`.
    pub fn create(url: &str, client_name: &str) -> Result<Self, String> {
        let session = Self::open(url, client_name)?;
        session.initialized(url)?;
        Ok(session)
    }

    /// Sends `initialize` only: the request that creates (and replicates) the session.
    pub fn open(url: &str, client_name: &str) -> Result<Self, String> {
        Self::open_as(url, client_name, None)
            .map_err(|e| e.to_string())
            .and_then(|reply| reply.session(None))
    }

    /// Like [`Session::create`], as the holder of `token`.
    pub fn create_as(url: &str, client_name: &str, token: &str) -> Result<Self, String> {
        let reply = Self::open_as(url, client_name, Some(token))
            .map_err(|e| format!("initialize via {url}: {e}"))?;
        let session = reply.session(Some(token))?;
        session.initialized(url)?;
        Ok(session)
    }

    /// Sends `initialize` through `url`, with `token` as the bearer token when given, and
    /// returns the raw reply; [`Reply::session`] reads the session out of it.
    pub fn open_as(
        url: &str,
        client_name: &str,
        token: Option<&str>,
    ) -> Result<Reply, ureq::Error> {
        Self::open_with(url, client_name, token, json!({}))
    }

    /// Like [`Session::open_as`], declaring client `capabilities` (e.g. elicitation).
    pub fn open_with(
        url: &str,
        client_name: &str,
        token: Option<&str>,
        capabilities: Value,
    ) -> Result<Reply, ureq::Error> {
        let client_info = json!({ "name": client_name, "version": "1" });
        Self::open_described(url, client_info, token, capabilities)
    }

    /// Sends `initialize` with `client_info` as given (e.g. a large one) and returns the
    /// raw reply.
    pub fn open_described(
        url: &str,
        client_info: Value,
        token: Option<&str>,
        capabilities: Value,
    ) -> Result<Reply, ureq::Error> {
        let params = json!({
            "protocolVersion": VERSION,
            "capabilities": capabilities,
            "clientInfo": client_info,
        });
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params });
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| ("Authorization", b))
            .into_iter()
            .collect();
        post(url, &headers, &body.to_string())
    }

    /// Sends `notifications/initialized` through `url`.
    pub fn initialized(&self, url: &str) -> Result<(), String> {
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let reply = post(url, &self.headers(), &note.to_string())
            .map_err(|e| format!("notifications/initialized via {url}: {e}"))?;
        if reply.status != 202 {
            return Err(format!("notifications/initialized via {url}: {reply:?}"));
        }
        Ok(())
    }

    /// The headers every later request of this session carries.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![
            ("Mcp-Session-Id", self.id.as_str()),
            ("MCP-Protocol-Version", VERSION),
        ];
        headers.extend(self.authorization.as_deref().map(|a| ("Authorization", a)));
        headers
    }

    /// Calls the `echo` tool through `url` and returns the raw reply.
    pub fn echo_reply(&self, url: &str, text: &str) -> Result<Reply, ureq::Error> {
        let params = json!({ "name": "echo", "arguments": { "text": text } });
        let body = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params });
        post(url, &self.headers(), &body.to_string())
    }

    /// Calls the `echo` tool through `url` and returns the text it echoed.
    pub fn echo(&self, url: &str, text: &str) -> Result<String, String> {
        let reply = self
            .echo_reply(url, text)
            .map_err(|e| format!("echo via {url}: {e}"))?;
        let echoed = (reply.status == 200)
            .then(|| reply.message())
            .flatten()
            .filter(|m| m.get("error").is_none())
            .and_then(|m| {
                m["result"]["content"][0]["text"]
                    .as_str()
                    .map(str::to_owned)
            });
        echoed.ok_or_else(|| format!("echo via {url}: {reply:?}"))
    }

    /// Ends the session through `url` (DELETE with the session header).
    pub fn delete(&self, url: &str) -> Result<Reply, ureq::Error> {
        delete(url, &self.headers())
    }
}
