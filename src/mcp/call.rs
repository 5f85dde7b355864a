//! `tools/call`: running a tool in its actor, and, under 2026-07-28, turning its questions
//! into input-required results with a sealed `requestState`.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::engine::{object_param, str_param};
use super::mrtr::{self, MrtrPeer};
use super::{Call, Engine, Era, RpcError};
use crate::tools::{self, Output, Peer};

impl Engine {
    pub(super) async fn call_tool(
        &self,
        call: &Call,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let name = str_param(params, "name")?;
        let tool = self
            .inner
            .tools
            .get(name)
            .ok_or_else(|| RpcError::invalid_params(format!("Unknown tool: {name}")))?;
        let args = object_param(params, "arguments")?;
        let target = format!("tools/call:{name}");
        let binding = call.principal.binding();
        let mrtr = match &call.era {
            Era::Legacy(_) => None,
            Era::Modern(_) => {
                let mut answers = match params.get("requestState") {
                    None | Some(Value::Null) => HashMap::new(),
                    Some(Value::String(token)) => {
                        mrtr::open(&self.inner.sealer, &binding, &target, &args, token)?
                    }
                    Some(_) => {
                        return Err(RpcError::invalid_params("requestState must be a string"))
                    }
                };
                match params.get("inputResponses") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(responses)) => {
                        answers.extend(responses.iter().map(|(k, v)| (k.clone(), v.clone())))
                    }
                    Some(_) => {
                        return Err(RpcError::invalid_params("inputResponses must be an object"))
                    }
                }
                Some(answers)
            }
        };
        let peer: Arc<dyn Peer> = match &mrtr {
            None => call.peer.clone(),
            Some(answers) => Arc::new(MrtrPeer {
                inner: call.peer.clone(),
                answers: answers.clone(),
                next: AtomicUsize::new(0),
            }),
        };
        let ctx = self.context(call, params, peer);
        match tool.call(ctx, Value::Object(args.clone())).await {
            Ok(output) => Ok(output.to_value()),
            Err(tools::Error::InputRequired(request)) => match mrtr {
                Some(answers) => {
                    let state = mrtr::seal(
                        &self.inner.sealer,
                        &binding,
                        &target,
                        &args,
                        &answers,
                        self.inner.config.request_state_ttl,
                    );
                    Ok(json!({
                        "resultType": "input_required",
                        "inputRequests": { request.key: { "method": request.method, "params": request.params } },
                        "requestState": state,
                    }))
                }
                None => Err(RpcError::internal(
                    "input was required outside a multi round-trip request",
                )),
            },
            Err(e) => tool_error(name, e),
        }
    }
}

/// Turns a tool failure into what the client sees: an `isError` result for failures the
/// model can act on, a JSON-RPC error for the rest.
fn tool_error(name: &str, error: tools::Error) -> Result<Value, RpcError> {
    use tools::Error as E;
    match error {
        E::Failed(message) => Ok(Output::error(message).to_value()),
        E::Timeout(after) => Ok(Output::error(format!(
            "The tool {name} timed out after {} ms",
            after.as_millis()
        ))
        .to_value()),
        E::Client(message) => {
            Ok(Output::error(format!("The client could not answer: {message}")).to_value())
        }
        E::InvalidArguments(message) => Err(RpcError::invalid_params(format!(
            "Invalid arguments for {name}: {message}"
        ))),
        E::MissingCapability(capability) => Err(RpcError::missing_capability(capability)),
        E::Cancelled => Err(RpcError::new(-32800, "Request cancelled")),
        E::Overloaded => Err(RpcError::internal(format!(
            "{name} is overloaded; retry later"
        ))),
        E::Panicked => Err(RpcError::internal(format!("{name} failed unexpectedly"))),
        E::InputRequired(_) => Err(RpcError::internal("unexpected input request")),
    }
}
