//! JSON-RPC 2.0 messages and the error codes MCP uses.

use serde_json::{json, Map, Value};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist or is not available.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// A legacy session id is unknown or has ended (implementation-defined range).
pub const SESSION_NOT_FOUND: i64 = -32001;
/// A request that arrived without a session id that needs one (implementation-defined).
pub const BAD_REQUEST: i64 = -32000;
/// HTTP headers do not match the body, or required headers are missing or malformed.
pub const HEADER_MISMATCH: i64 = -32020;
/// The request needs a client capability the client did not declare.
pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
/// The requested protocol version is not supported.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// A JSON-RPC request id: a string or a number.
pub type Id = Value;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The error code.
    pub code: i64,
    /// A short description for humans.
    pub message: String,
    /// Optional structured detail.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Attaches structured data.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Parse error.
    pub fn parse(message: impl Into<String>) -> Self {
        Self::new(PARSE_ERROR, message)
    }

    /// Invalid request.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, message)
    }

    /// Method not found.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }

    /// Invalid params.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }

    /// Internal error; the message must not carry secrets or internals.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, message)
    }

    /// Header/body mismatch.
    pub fn header_mismatch(message: impl Into<String>) -> Self {
        Self::new(
            HEADER_MISMATCH,
            format!("Header mismatch: {}", message.into()),
        )
    }

    /// Unsupported protocol version, listing what is supported.
    pub fn unsupported_version(requested: &str) -> Self {
        Self::new(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version").with_data(
            json!({ "supported": super::Version::supported_strings(), "requested": requested }),
        )
    }

    /// The client lacks a capability the request needs.
    pub fn missing_capability(capability: &str) -> Self {
        Self::new(
            MISSING_REQUIRED_CLIENT_CAPABILITY,
            format!("Server requires the {capability} capability for this request"),
        )
        .with_data(json!({ "requiredCapabilities": { capability: {} } }))
    }

    /// The error as a JSON object.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("code".into(), self.code.into());
        obj.insert("message".into(), self.message.clone().into());
        if let Some(data) = &self.data {
            obj.insert("data".into(), data.clone());
        }
        Value::Object(obj)
    }
}

/// One incoming JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request that expects a response.
    Request {
        /// Its id.
        id: Id,
        /// The method.
        method: String,
        /// Its params, `{}` when absent.
        params: Map<String, Value>,
    },
    /// A notification (no id, no response).
    Notification {
        /// The method.
        method: String,
        /// Its params, `{}` when absent.
        params: Map<String, Value>,
    },
    /// A response to a request this server sent.
    Response {
        /// The id of the server's request.
        id: Id,
        /// The result, or the error the client returned.
        outcome: Result<Value, RpcError>,
    },
}

/// The members of a JSON-RPC message object that say what it is. Every other member is
/// left out; a member named twice keeps its last value, as a parsed object does.
#[derive(Debug, Default)]
pub struct Members {
    /// `jsonrpc`.
    pub jsonrpc: Option<Value>,
    /// `id`.
    pub id: Option<Value>,
    /// `method`.
    pub method: Option<Value>,
    /// `params`.
    pub params: Option<Value>,
    /// `result`.
    pub result: Option<Value>,
    /// `error`.
    pub error: Option<Value>,
}

impl Members {
    /// The slot of member `key`, when it is one of these.
    pub fn slot(&mut self, key: &str) -> Option<&mut Option<Value>> {
        match key {
            "jsonrpc" => Some(&mut self.jsonrpc),
            "id" => Some(&mut self.id),
            "method" => Some(&mut self.method),
            "params" => Some(&mut self.params),
            "result" => Some(&mut self.result),
            "error" => Some(&mut self.error),
            _ => None,
        }
    }
}

impl Message {
    /// Validates one JSON value as a JSON-RPC 2.0 message.
    ///
    /// On failure, returns the id (when one could be read) with the error.
    pub fn from_value(value: Value) -> Result<Self, (Option<Id>, RpcError)> {
        let Value::Object(mut obj) = value else {
            return Err((
                None,
                RpcError::invalid_request("a JSON-RPC message must be an object"),
            ));
        };
        Self::from_members(Members {
            jsonrpc: obj.remove("jsonrpc"),
            id: obj.remove("id"),
            method: obj.remove("method"),
            params: obj.remove("params"),
            result: obj.remove("result"),
            error: obj.remove("error"),
        })
    }

    /// Validates the members of one JSON object as a JSON-RPC 2.0 message, as
    /// [`from_value`](Self::from_value) does the whole object.
    pub fn from_members(members: Members) -> Result<Self, (Option<Id>, RpcError)> {
        let Members {
            jsonrpc,
            id,
            method,
            params,
            result,
            error,
        } = members;
        if let Some(id) = &id {
            if !(id.is_string() || id.is_i64() || id.is_u64()) {
                return Err((
                    None,
                    RpcError::invalid_request("id must be a string or an integer"),
                ));
            }
        }
        if jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
            return Err((id, RpcError::invalid_request("jsonrpc must be \"2.0\"")));
        }
        let method = match method {
            Some(Value::String(m)) => Some(m),
            Some(_) => return Err((id, RpcError::invalid_request("method must be a string"))),
            None => None,
        };
        let params = match params {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p,
            Some(_) => return Err((id, RpcError::invalid_request("params must be an object"))),
        };
        match (method, id) {
            (Some(method), Some(id)) => Ok(Message::Request { id, method, params }),
            (Some(method), None) => Ok(Message::Notification { method, params }),
            (None, Some(id)) => {
                let outcome = match (result, error) {
                    (Some(result), None) => Ok(result),
                    (None, Some(error)) => Err(parse_error_object(&error)),
                    _ => {
                        return Err((
                            Some(id),
                            RpcError::invalid_request(
                                "a response must carry exactly one of result and error",
                            ),
                        ))
                    }
                };
                Ok(Message::Response { id, outcome })
            }
            (None, None) => Err((None, RpcError::invalid_request("missing method"))),
        }
    }
}

fn parse_error_object(error: &Value) -> RpcError {
    RpcError {
        code: error
            .get("code")
            .and_then(Value::as_i64)
            .unwrap_or(INTERNAL_ERROR),
        message: error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        data: error.get("data").cloned(),
    }
}

// The builders below move their parts into the message: `json!` would serialise each
// interpolated `Value` into a copy of itself, which for a result is a deep copy per call.

/// A message of JSON-RPC 2.0 with these members after `jsonrpc`.
fn message<const N: usize>(members: [(&str, Value); N]) -> Value {
    let mut obj = Map::new();
    obj.insert("jsonrpc".into(), Value::String("2.0".into()));
    for (key, value) in members {
        obj.insert(key.into(), value);
    }
    Value::Object(obj)
}

/// A success response.
pub fn response(id: &Id, result: Value) -> Value {
    message([("id", id.clone()), ("result", result)])
}

/// An error response; `id` is `null` when the request's id could not be read.
pub fn error_response(id: Option<&Id>, error: &RpcError) -> Value {
    let id = id.cloned().unwrap_or(Value::Null);
    message([("id", id), ("error", error.to_value())])
}

/// The response to request `id`: its result, or its error.
pub fn reply(id: &Id, outcome: Result<Value, RpcError>) -> Value {
    match outcome {
        Ok(result) => response(id, result),
        Err(e) => error_response(Some(id), &e),
    }
}

/// A notification.
pub fn notification(method: &str, params: Value) -> Value {
    message([("method", method.into()), ("params", params)])
}

/// A request from the server to the client.
pub fn request(id: &Id, method: &str, params: Value) -> Value {
    message([
        ("id", id.clone()),
        ("method", method.into()),
        ("params", params),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        let req = Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap();
        assert!(matches!(req, Message::Request { ref method, .. } if method == "ping"));
        let note = Message::from_value(json!({"jsonrpc":"2.0","method":"n"})).unwrap();
        assert!(matches!(note, Message::Notification { .. }));
        let resp = Message::from_value(json!({"jsonrpc":"2.0","id":"a","result":{}})).unwrap();
        assert!(matches!(resp, Message::Response { outcome: Ok(_), .. }));
    }

    #[test]
    fn built_messages_are_the_json_rpc_objects() {
        let result = json!({ "content": [{ "type": "text", "text": "hi" }], "n": 1.5 });
        assert_eq!(
            response(&json!(7), result.clone()),
            json!({ "jsonrpc": "2.0", "id": 7, "result": result })
        );
        let error = RpcError::invalid_params("bad").with_data(json!({ "limit": "x" }));
        assert_eq!(
            error_response(None, &error),
            json!({ "jsonrpc": "2.0", "id": null,
                    "error": { "code": INVALID_PARAMS, "message": "bad", "data": { "limit": "x" } } })
        );
        assert_eq!(
            reply(&json!("a"), Err(RpcError::internal("x"))),
            json!({ "jsonrpc": "2.0", "id": "a", "error": { "code": INTERNAL_ERROR, "message": "x" } })
        );
        assert_eq!(
            notification("notifications/progress", json!({ "progress": 1 })),
            json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": { "progress": 1 } })
        );
        assert_eq!(
            request(&json!(3), "sampling/createMessage", json!({})),
            json!({ "jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage", "params": {} })
        );
    }

    #[test]
    fn rejects_malformed_messages() {
        for bad in [
            json!([]),
            json!({"id":1,"method":"x"}),
            json!({"jsonrpc":"2.0","id":1.5,"method":"x"}),
            json!({"jsonrpc":"2.0","id":1,"method":7}),
            json!({"jsonrpc":"2.0","id":1,"method":"x","params":[1]}),
            json!({"jsonrpc":"2.0"}),
            json!({"jsonrpc":"2.0","id":1}),
        ] {
            let err = Message::from_value(bad.clone()).unwrap_err().1;
            assert_eq!(err.code, INVALID_REQUEST, "{bad}");
        }
    }
}
