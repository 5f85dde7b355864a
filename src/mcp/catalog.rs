//! Listing and reading what the registry offers: paginated lists, resources, prompts,
//! completions.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::call::{handler_error, Interactive};
use super::engine::{object_param, str_param};
use super::{Call, Engine, Era, RpcError};

impl Engine {
    pub(super) fn list(
        &self,
        params: &Map<String, Value>,
        items: impl Iterator<Item = Value>,
        key: &str,
    ) -> Result<Value, RpcError> {
        let offset = match params.get("cursor") {
            None | Some(Value::Null) => 0,
            Some(Value::String(c)) => {
                decode_cursor(c).ok_or_else(|| RpcError::invalid_params("invalid cursor"))?
            }
            Some(_) => return Err(RpcError::invalid_params("cursor must be a string")),
        };
        let page_size = self.inner.config.page_size.max(1);
        let all: Vec<Value> = items.collect();
        if offset > all.len() {
            return Err(RpcError::invalid_params("invalid cursor"));
        }
        let page: Vec<Value> = all.iter().skip(offset).take(page_size).cloned().collect();
        let mut result = json!({ key: page });
        if offset + page_size < all.len() {
            result["nextCursor"] =
                json!(URL_SAFE_NO_PAD.encode(format!("o{}", offset + page_size)));
        }
        Ok(result)
    }

    pub(super) async fn read_resource(
        &self,
        call: &Call,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let uri = str_param(params, "uri")?;
        let registry = &self.inner.registry;
        let (read, vars) = if let Some(r) = registry.resources.iter().find(|r| r.uri == uri) {
            (r.read.clone(), HashMap::new())
        } else if let Some((t, vars)) = registry
            .templates
            .iter()
            .find_map(|t| t.matches(uri).map(|vars| (t, vars)))
        {
            (t.read.clone(), vars)
        } else {
            let code = match call.era {
                // 2025-11-25 and earlier name this -32002; 2026-07-28 uses invalid params.
                Era::Legacy(_) => -32002,
                Era::Modern(_) => super::jsonrpc::INVALID_PARAMS,
            };
            return Err(RpcError::new(code, format!("Resource not found: {uri}"))
                .with_data(json!({ "uri": uri })));
        };
        let target = format!("resources/read:{uri}");
        let owned_uri = uri.to_owned();
        let outcome = self
            .interactive(call, params, &target, &Map::new(), move |ctx| {
                read(ctx, owned_uri, vars)
            })
            .await?;
        match outcome {
            Interactive::InputRequired(result) => Ok(result),
            Interactive::BecomeTask(_) => Err(only_tools_become_tasks()),
            Interactive::Done(Ok(contents)) => Ok(json!({ "contents": contents })),
            Interactive::Done(Err(e)) => Err(handler_error(&format!("reading {uri}"), e)),
        }
    }

    pub(super) async fn get_prompt(
        &self,
        call: &Call,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let name = str_param(params, "name")?;
        let prompt = self
            .inner
            .registry
            .prompts
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| RpcError::invalid_params(format!("Unknown prompt: {name}")))?;
        let args = object_param(params, "arguments")?;
        if let Some(missing) = prompt.missing_argument(&args) {
            return Err(RpcError::invalid_params(format!(
                "prompt {name} needs argument {missing}"
            )));
        }
        let target = format!("prompts/get:{name}");
        let get = prompt.get.clone();
        let run_args = args.clone();
        let outcome = self
            .interactive(call, params, &target, &args, move |ctx| get(ctx, run_args))
            .await?;
        match outcome {
            Interactive::InputRequired(result) => Ok(result),
            Interactive::BecomeTask(_) => Err(only_tools_become_tasks()),
            Interactive::Done(Ok(result)) => Ok(result),
            Interactive::Done(Err(e)) => Err(handler_error(&format!("prompt {name}"), e)),
        }
    }

    pub(super) fn complete(&self, params: &Map<String, Value>) -> Result<Value, RpcError> {
        let reference = params
            .get("ref")
            .and_then(Value::as_object)
            .ok_or_else(|| RpcError::invalid_params("completion/complete needs a ref"))?;
        let argument = params
            .get("argument")
            .and_then(Value::as_object)
            .ok_or_else(|| RpcError::invalid_params("completion/complete needs an argument"))?;
        let arg_name = argument
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let arg_value = argument
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let context_args = params
            .get("context")
            .and_then(|c| c.get("arguments"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let registry = &self.inner.registry;
        let completer = match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let name = reference
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let prompt = registry
                    .prompts
                    .iter()
                    .find(|p| p.name == name)
                    .ok_or_else(|| RpcError::invalid_params(format!("Unknown prompt: {name}")))?;
                prompt.complete.clone()
            }
            Some("ref/resource") => {
                let uri = reference
                    .get("uri")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let template = registry
                    .templates
                    .iter()
                    .find(|t| t.uri_template() == uri)
                    .ok_or_else(|| {
                        RpcError::invalid_params(format!("Unknown resource template: {uri}"))
                    })?;
                template.complete.clone()
            }
            _ => {
                return Err(RpcError::invalid_params(
                    "ref.type must be ref/prompt or ref/resource",
                ))
            }
        };
        let mut values = completer
            .map(|c| c(arg_name, arg_value, &context_args))
            .unwrap_or_default();
        let total = values.len();
        values.truncate(100);
        Ok(json!({ "completion": { "values": values, "total": total, "hasMore": total > 100 } }))
    }
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix('o')?
        .parse()
        .ok()
}

/// A resource read or prompt that asked to become a task: only tool calls can.
fn only_tools_become_tasks() -> RpcError {
    RpcError::internal("only a tool call can continue as a task")
}
