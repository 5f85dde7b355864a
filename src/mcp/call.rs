//! Running handlers that may ask the client something — tools, prompts, resource reads —
//! and, under 2026-07-28, turning their questions into input-required results with a
//! sealed `requestState`.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::{Map, Value};

use super::engine::{object_param_in, str_param};
use super::mrtr::{self, Round};
use super::{Call, Engine, Era, RpcError};
use crate::tools::{self, Context, Output, Peer};

/// How a handler that may ask the client ended.
pub(super) enum Interactive<T> {
    /// It finished, well or badly.
    Done(Result<T, tools::Error>),
    /// It needs answers first: the input-required result to send (2026-07-28 only).
    InputRequired(Value),
    /// It goes on as a task (`Context::run_as_task`), with these answers gathered so far.
    BecomeTask(HashMap<String, Value>),
}

impl Engine {
    /// Runs `handler`. In a legacy session its questions reach the client live; under
    /// 2026-07-28 they are answered from the request's `requestState` and
    /// `inputResponses`, or collected into an input-required result. `target` and `args`
    /// name the request, so a `requestState` is refused on any other.
    pub(super) async fn interactive<T>(
        &self,
        call: &Call,
        params: &Map<String, Value>,
        target: &str,
        args: &Map<String, Value>,
        handler: impl FnOnce(Context) -> BoxFuture<'static, Result<T, tools::Error>>,
    ) -> Result<Interactive<T>, RpcError> {
        self.interactive_with(call, params, (target, args), false, handler)
            .await
    }

    /// [`Engine::interactive`]; with `detachable`, a 2026-07-28 round ends when the
    /// handler calls `Context::run_as_task`, so the call goes on as a task.
    async fn interactive_with<T>(
        &self,
        call: &Call,
        params: &Map<String, Value>,
        (target, args): (&str, &Map<String, Value>),
        detachable: bool,
        handler: impl FnOnce(Context) -> BoxFuture<'static, Result<T, tools::Error>>,
    ) -> Result<Interactive<T>, RpcError> {
        if let Era::Legacy(_) = call.era {
            let ctx = self.context(call, params, call.peer.clone());
            return Ok(Interactive::Done(handler(ctx).await));
        }
        let cap = self.inner.config.max_request_state_bytes;
        mrtr::check_incoming(params, cap, &self.inner.limits)?;
        let binding = call.principal.binding();
        let sealer = &self.inner.sealer;
        let mut round = Round::open(sealer, &binding, target, args, params, call.peer.clone())?;
        if detachable {
            round = round.detaching();
        }
        let round = Arc::new(round);
        let ctx = self.context(call, params, round.clone() as Arc<dyn Peer>);
        match handler(ctx).await {
            Err(tools::Error::InputRequired(_)) => {
                let result = round.input_required(
                    sealer,
                    &binding,
                    target,
                    args,
                    self.inner.config.request_state_ttl,
                );
                mrtr::check_outgoing(&result, cap, &self.inner.limits)?;
                Ok(Interactive::InputRequired(result))
            }
            Err(tools::Error::BecomeTask) => Ok(Interactive::BecomeTask(round.answers())),
            other => Ok(Interactive::Done(other)),
        }
    }

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
            .ok_or_else(|| RpcError::invalid_params(format!("Unknown tool: {name}")))?
            .clone();
        // The HTTP layer answers 403 before this; stdio and any other caller stop here.
        if let Some(needed) = self.missing_scopes(&call.principal, name) {
            return Err(RpcError::invalid_request(format!(
                "insufficient scope: calling {name} needs {}",
                needed.join(" ")
            )));
        }
        let no_args = Map::new();
        let args = object_param_in(params, "arguments")?.unwrap_or(&no_args);
        if let Some(created) = self.maybe_task(call, params, &tool, args).await? {
            return Ok(created);
        }
        let target = format!("tools/call:{name}");
        let run_args = Value::Object(args.clone());
        // Only a tool that asks before it becomes a task, called by a client that can
        // hold a task, has its round end at `Context::run_as_task`.
        let info = tool.info();
        let detachable = info.asks_before_task
            && info.task_support != tools::TaskSupport::Forbidden
            && super::tasks::declared(call);
        let outcome = self
            .interactive_with(call, params, (&target, args), detachable, {
                let tool = tool.clone();
                move |ctx| async move { tool.call(ctx, run_args).await }.boxed()
            })
            .await?;
        match outcome {
            Interactive::InputRequired(result) => Ok(result),
            Interactive::BecomeTask(answers) => {
                let created = self.create_task(call, params, &tool, args, answers);
                created.await
            }
            Interactive::Done(Ok(output)) => Ok(output.into_value()),
            Interactive::Done(Err(e)) => tool_error(name, e),
        }
    }
}

/// Turns a tool failure into what the client sees: an `isError` result for failures the
/// model can act on, a JSON-RPC error for the rest.
pub(super) fn tool_error(name: &str, error: tools::Error) -> Result<Value, RpcError> {
    use tools::Error as E;
    match error {
        E::Failed(message) => Ok(Output::error(message).into_value()),
        E::Timeout(after) => Ok(Output::error(format!(
            "The tool {name} timed out after {} ms",
            after.as_millis()
        ))
        .into_value()),
        E::Client(message) => {
            Ok(Output::error(format!("The client could not answer: {message}")).into_value())
        }
        E::Overloaded => Err(RpcError::internal(format!(
            "{name} is overloaded; retry later"
        ))),
        E::Panicked => Err(RpcError::internal(format!("{name} failed unexpectedly"))),
        other => Err(handler_error(name, other)),
    }
}

/// The JSON-RPC error for a failed handler: bad arguments and missing capabilities keep
/// their own codes; the rest is an internal error naming what failed.
pub(super) fn handler_error(what: &str, error: tools::Error) -> RpcError {
    use tools::Error as E;
    match error {
        E::InvalidArguments(message) => {
            RpcError::invalid_params(format!("Invalid arguments for {what}: {message}"))
        }
        E::MissingCapability(capability) => RpcError::missing_capability(capability),
        E::Cancelled => RpcError::new(-32800, "Request cancelled"),
        other => RpcError::internal(format!("{what} failed: {other}")),
    }
}
