//! Plain HTTP calls to the server, and the MCP requests the tests build from them.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use ureq::http::Response;
use ureq::{Agent, Body, SendBody};

/// The version without sessions.
pub const MODERN: &str = "2026-07-28";
/// The `_meta` key of the protocol version.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key of the client capabilities.
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// What real clients send.
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        Agent::config_builder()
            .http_status_as_error(false)
            // A hung server fails the test instead of hanging it.
            .timeout_global(Some(Duration::from_secs(15)))
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
    fn read(result: Result<Response<Body>, ureq::Error>) -> Self {
        let mut response = result.expect("an HTTP response");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .body_mut()
            .read_to_string()
            .expect("a readable body");
        Self {
            status,
            headers,
            body,
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON-RPC message the body carries: the JSON body itself, or, for an SSE body,
    /// the final response among its events.
    pub fn json(&self) -> Value {
        let sse = self
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if !sse {
            return serde_json::from_str(&self.body)
                .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"));
        }
        self.body
            .split("\n\n")
            .filter_map(|event| {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                serde_json::from_str::<Value>(&data.join("\n")).ok()
            })
            .find(|m| {
                m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
            })
            .unwrap_or_else(|| panic!("no response in the event stream: {self:?}"))
    }

    /// The JSON-RPC error code, if the body is an error response.
    pub fn error_code(&self) -> Option<i64> {
        self.json()["error"]["code"].as_i64()
    }

    /// The `result` member of a success response; panics on an error response.
    pub fn result(&self) -> Value {
        let message = self.json();
        assert!(
            message.get("error").is_none(),
            "expected a result: {self:?}"
        );
        message["result"].clone()
    }

    /// Asserts the status and the JSON-RPC error code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: i64) -> &Self {
        assert_eq!(self.status, status, "status of {self:?}");
        assert_eq!(
            self.error_code(),
            Some(code),
            "JSON-RPC error code of {self:?}"
        );
        self
    }

    /// The text of the first content block of a tool result.
    pub fn tool_text(&self) -> String {
        let result = self.result();
        result["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text content: {self:?}"))
            .to_owned()
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

fn has(headers: &[(&str, &str)], name: &str) -> bool {
    headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
}

/// POSTs `body` as JSON with extra `headers` (which may replace `Accept`).
pub fn post(url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut request = agent().post(url).header("content-type", "application/json");
    if !has(headers, "accept") {
        request = request.header("accept", ACCEPT_BOTH);
    }
    Reply::read(with_headers(request, headers).send(body))
}

/// POSTs `body` with chunked transfer encoding, so the server sees no `Content-Length`.
pub fn post_chunked(url: &str, body: Vec<u8>) -> Reply {
    let request = agent()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH);
    Reply::read(request.send(SendBody::from_owned_reader(std::io::Cursor::new(body))))
}

/// GETs `url`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    Reply::read(with_headers(agent().get(url), headers).call())
}

/// DELETEs `url`.
pub fn delete(url: &str, headers: &[(&str, &str)]) -> Reply {
    Reply::read(with_headers(agent().delete(url), headers).call())
}

/// Sends OPTIONS to `url`.
pub fn options(url: &str, headers: &[(&str, &str)]) -> Reply {
    Reply::read(with_headers(agent().options(url), headers).call())
}

/// A JSON-RPC request.
pub fn request(id: i64, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

/// Adds the 2026-07-28 `_meta` to `params`, declaring `capabilities`.
pub fn with_meta(mut params: Value, version: &str, capabilities: Value) -> Value {
    params["_meta"] = json!({ META_VERSION: version, META_CAPABILITIES: capabilities });
    params
}

/// The `Mcp-Name` a request needs: the tool or prompt name, the resource URI, or the
/// task id.
fn name_of(method: &str, params: &Value) -> Option<String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return None,
    };
    params[key].as_str().map(str::to_owned)
}

/// A 2026-07-28 request with the headers a conforming client sends.
pub struct Modern {
    method: String,
    params: Value,
    capabilities: Value,
    headers: Vec<(String, String)>,
}

impl Modern {
    /// `method` with `params` (without `_meta`; it is added).
    pub fn new(method: &str, params: Value) -> Self {
        let mut headers = vec![
            ("MCP-Protocol-Version".to_owned(), MODERN.to_owned()),
            ("Mcp-Method".to_owned(), method.to_owned()),
        ];
        if let Some(name) = name_of(method, &params) {
            headers.push(("Mcp-Name".to_owned(), name));
        }
        Self {
            method: method.to_owned(),
            params,
            capabilities: json!({}),
            headers,
        }
    }

    /// A `tools/call` of `tool` with `arguments`.
    pub fn call(tool: &str, arguments: Value) -> Self {
        Self::new(
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        )
    }

    /// Declares client capabilities in `_meta`.
    pub fn capabilities(mut self, capabilities: Value) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Sets (or replaces) header `name`.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.without(name)
            .headers
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// Removes header `name`.
    pub fn without(&mut self, name: &str) -> &mut Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    /// Removes header `name` (by value).
    pub fn drop_header(mut self, name: &str) -> Self {
        self.without(name);
        self
    }

    /// The request body.
    pub fn body(&self) -> Value {
        let params = with_meta(self.params.clone(), MODERN, self.capabilities.clone());
        request(1, &self.method, params)
    }

    /// Sends the request to `url`.
    pub fn send(&self, url: &str) -> Reply {
        self.send_body(url, &self.body())
    }

    /// Sends `body` instead of the one built, with this request's headers.
    pub fn send_body(&self, url: &str, body: &Value) -> Reply {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        post(url, &headers, &body.to_string())
    }
}

/// A legacy session, made by `initialize`.
pub struct Session {
    /// The `Mcp-Session-Id`.
    pub id: String,
    /// The negotiated version.
    pub version: String,
}

impl Session {
    /// Initialises a session asking for `version`, and sends `notifications/initialized`.
    pub fn initialize(url: &str, version: &str) -> Self {
        let params = json!({
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": { "name": "http-tests", "version": "0" },
        });
        let reply = post(url, &[], &request(0, "initialize", params).to_string());
        assert_eq!(reply.status, 200, "initialize: {reply:?}");
        let id = reply
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("initialize returned no session id: {reply:?}"))
            .to_owned();
        let version = reply.result()["protocolVersion"]
            .as_str()
            .expect("a version")
            .to_owned();
        let session = Self { id, version };
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let reply = post(url, &session.headers(), &note.to_string());
        assert_eq!(reply.status, 202, "notifications/initialized: {reply:?}");
        session
    }

    /// The headers every later request of this session carries.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![("Mcp-Session-Id", self.id.as_str())];
        // 2025-03-26 predates the version header.
        if self.version != "2025-03-26" {
            headers.push(("MCP-Protocol-Version", self.version.as_str()));
        }
        headers
    }

    /// Sends a request on this session.
    pub fn send(&self, url: &str, method: &str, params: Value) -> Reply {
        post(
            url,
            &self.headers(),
            &request(1, method, params).to_string(),
        )
    }

    /// Calls `echo` and returns the reply.
    pub fn echo(&self, url: &str, text: &str) -> Reply {
        self.send(
            url,
            "tools/call",
            json!({ "name": "echo", "arguments": { "text": text } }),
        )
    }
}
