//! The [`Tool`] trait and what a call returns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::header_param::{self, HeaderParam};
use super::{Context, InputRequest};

/// A tool callers can invoke with `tools/call`.
///
/// ```
/// use mcp_fleet::tools::{Context, Error, Output, Registry, Tool, ToolInfo};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Args {
///     text: String,
/// }
///
/// struct Shout;
///
/// impl Tool for Shout {
///     type Args = Args;
///     fn info(&self) -> ToolInfo {
///         ToolInfo::new("shout", "Upper-cases the text.")
///     }
///     async fn call(&self, _ctx: Context, args: Args) -> Result<Output, Error> {
///         Ok(Output::text(args.text.to_uppercase()))
///     }
/// }
///
/// let mut registry = Registry::new();
/// registry.tool(Shout);
/// assert_eq!(registry.tool_names(), ["shout"]);
/// ```
pub trait Tool: Send + Sync + 'static {
    /// The arguments, deserialised from the call's `arguments` object.
    type Args: DeserializeOwned + JsonSchema + Send + 'static;

    /// Name, description and hints shown in `tools/list`.
    fn info(&self) -> ToolInfo;

    /// Runs one call.
    ///
    /// The call runs on the thread that serves the request, among that thread's other
    /// requests: await, never block. Put blocking or long CPU-bound work in
    /// [`tokio::task::spawn_blocking`] and await its handle; the call's timeout and
    /// cancellation then still end the call on time.
    fn call(
        &self,
        ctx: Context,
        args: Self::Args,
    ) -> impl Future<Output = Result<Output, Error>> + Send;
}

/// A tool made of a listing and an async function of its typed arguments, for tools that
/// need no state of their own.
///
/// ```
/// use mcp_fleet::tools::{FnTool, NoArgs, Output, Registry, ToolInfo};
///
/// let mut registry = Registry::new();
/// registry.tool(FnTool::new(ToolInfo::new("ping_me", "Answers pong."), |_ctx, _: NoArgs| async {
///     Ok(Output::text("pong"))
/// }));
/// assert_eq!(registry.tool_names(), ["ping_me"]);
/// ```
pub struct FnTool<A, F> {
    info: ToolInfo,
    run: F,
    args: std::marker::PhantomData<fn() -> A>,
}

impl<A, F> FnTool<A, F> {
    /// A tool listed as `info` that runs `run`; `A` is its arguments type.
    pub fn new(info: ToolInfo, run: F) -> Self {
        Self {
            info,
            run,
            args: std::marker::PhantomData,
        }
    }
}

impl<A, F, Fut> Tool for FnTool<A, F>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Output, Error>> + Send,
{
    type Args = A;

    fn info(&self) -> ToolInfo {
        self.info.clone()
    }

    fn call(&self, ctx: Context, args: A) -> impl Future<Output = Result<Output, Error>> + Send {
        (self.run)(ctx, args)
    }
}

/// Arguments of a tool that takes none.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// What `tools/list` shows of a tool, and how it runs.
#[derive(Debug, Clone)]
pub struct ToolInfo {
    /// Unique name.
    pub name: String,
    /// Human-readable title.
    pub title: Option<String>,
    /// What it does, for the model.
    pub description: String,
    /// Behaviour hints (`readOnlyHint`, …).
    pub annotations: Option<Value>,
    /// JSON Schema of `structuredContent`, when the tool returns one.
    pub output_schema: Option<Value>,
    /// A hand-written input schema replacing the generated one.
    pub input_schema: Option<Value>,
    /// Extra `_meta` on the listing.
    pub meta: Option<Value>,
    /// Whether a call may run as a task (`io.modelcontextprotocol/tasks`). Default
    /// [`TaskSupport::Forbidden`]: every call answers in its own response.
    pub task_support: TaskSupport,
    /// Whether running the tool again from the start is harmless (no side effect it
    /// cannot repeat). A task of such a tool whose node dies is run again by another
    /// node; any other such task ends as failed. Default `false`.
    pub rerunnable: bool,
    /// Whether the tool first gathers input over 2026-07-28 `input_required` rounds and
    /// becomes a task only when it calls
    /// [`Context::run_as_task`](super::Context::run_as_task). Default `false`: a call
    /// that may be a task is one from the start.
    pub asks_before_task: bool,
}

/// Whether a tool's calls may run as tasks, which a client polls with `tasks/get` instead
/// of waiting on the response (the 2026-07-28 tasks extension, SEP-2663).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskSupport {
    /// Never a task: the call answers in its response.
    #[default]
    Forbidden,
    /// A task when the client declared the tasks extension; otherwise the call answers
    /// in its response.
    Optional,
    /// Always a task: a client without the tasks extension is refused with `-32021`.
    Required,
}

impl TaskSupport {
    /// The value `tools/list` shows under `execution.taskSupport`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSupport::Forbidden => "forbidden",
            TaskSupport::Optional => "optional",
            TaskSupport::Required => "required",
        }
    }
}

impl ToolInfo {
    /// A tool with a name and description.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            title: None,
            description: description.into(),
            annotations: None,
            output_schema: None,
            input_schema: None,
            meta: None,
            task_support: TaskSupport::Forbidden,
            rerunnable: false,
            asks_before_task: false,
        }
    }

    /// Declares that the tool asks its questions in `input_required` rounds first and
    /// becomes a task when it calls
    /// [`Context::run_as_task`](super::Context::run_as_task) (SEP-2663's MRTR → task
    /// composition).
    pub fn asks_before_task(mut self) -> Self {
        self.asks_before_task = true;
        self
    }

    /// Lets calls run as tasks (see [`TaskSupport`]).
    pub fn task_support(mut self, support: TaskSupport) -> Self {
        self.task_support = support;
        self
    }

    /// Declares that running the tool again from the start is harmless, so a task whose
    /// node died is run again elsewhere instead of failing.
    pub fn rerunnable(mut self) -> Self {
        self.rerunnable = true;
        self
    }

    /// Sets the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the annotations.
    pub fn annotations(mut self, annotations: Value) -> Self {
        self.annotations = Some(annotations);
        self
    }

    /// Sets the output schema.
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = Some(schema);
        self
    }

    /// Replaces the generated input schema.
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.input_schema = Some(schema);
        self
    }
}

/// One content block of a result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct Content(pub Value);

impl Content {
    /// Text.
    pub fn text(text: impl Into<String>) -> Self {
        Self::block("text", [("text", Value::String(text.into()))])
    }

    /// An image, base64-encoded.
    pub fn image(data_base64: impl Into<String>, mime_type: impl Into<String>) -> Self {
        let data = Value::String(data_base64.into());
        Self::block(
            "image",
            [("data", data), ("mimeType", mime_type.into().into())],
        )
    }

    /// Audio, base64-encoded.
    pub fn audio(data_base64: impl Into<String>, mime_type: impl Into<String>) -> Self {
        let data = Value::String(data_base64.into());
        Self::block(
            "audio",
            [("data", data), ("mimeType", mime_type.into().into())],
        )
    }

    /// An embedded resource (`contents` is a text or blob resource contents object).
    pub fn resource(contents: Value) -> Self {
        Self::block("resource", [("resource", contents)])
    }

    /// A link to a resource.
    pub fn resource_link(uri: impl Into<String>, name: impl Into<String>) -> Self {
        let uri = Value::String(uri.into());
        Self::block(
            "resource_link",
            [("uri", uri), ("name", name.into().into())],
        )
    }

    // The block's own values moved in: `json!` would serialise each into a copy (for an
    // image or audio clip, a copy of all its base64).
    fn block<const N: usize>(kind: &str, members: [(&str, Value); N]) -> Self {
        let mut obj = Map::new();
        obj.insert("type".into(), kind.into());
        for (key, value) in members {
            obj.insert(key.into(), value);
        }
        Self(Value::Object(obj))
    }
}

/// The result of a tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Content blocks for the model.
    pub content: Vec<Content>,
    /// Structured result matching the output schema.
    pub structured: Option<Value>,
    /// Whether the tool failed (an execution error the model can see and act on).
    pub is_error: bool,
}

impl Output {
    /// A result of content blocks.
    pub fn new(content: Vec<Content>) -> Self {
        Self {
            content,
            structured: None,
            is_error: false,
        }
    }

    /// A text result.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(vec![Content::text(text)])
    }

    /// A failed result the model sees.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            is_error: true,
            ..Self::text(text)
        }
    }

    /// Adds structured content.
    pub fn structured(mut self, value: Value) -> Self {
        self.structured = Some(value);
        self
    }

    /// The `CallToolResult` object (without `resultType`).
    pub fn to_value(&self) -> Value {
        self.clone().into_value()
    }

    /// The `CallToolResult` object (without `resultType`), made of this output's own
    /// values rather than copies of them.
    pub fn into_value(self) -> Value {
        let mut obj = Map::new();
        let content = self.content.into_iter().map(|c| c.0).collect();
        obj.insert("content".into(), Value::Array(content));
        if let Some(s) = self.structured {
            obj.insert("structuredContent".into(), s);
        }
        if self.is_error {
            obj.insert("isError".into(), Value::Bool(true));
        }
        Value::Object(obj)
    }
}

/// Why a tool call did not produce an [`Output`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The arguments did not match the tool's schema.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool ran and failed; the model sees this as an `isError` result.
    #[error("{0}")]
    Failed(String),
    /// The call was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The tool ran past its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The tool panicked.
    #[error("the tool failed unexpectedly")]
    Panicked,
    /// Too many calls of this tool are queued.
    #[error("the tool is overloaded; retry later")]
    Overloaded,
    /// The tool asked the client for something it did not declare it can do.
    #[error("the client does not support {0}")]
    MissingCapability(&'static str),
    /// The client could not be reached, or answered with an error.
    #[error("client request failed: {0}")]
    Client(String),
    /// The client must answer `InputRequest` and retry the call (Multi Round-Trip Requests).
    #[error("input required")]
    InputRequired(InputRequest),
    /// The call goes on as a task, from the start, with the answers gathered so far
    /// (returned by [`Context::run_as_task`](super::Context::run_as_task); pass it on with `?`).
    #[error("the call continues as a task")]
    BecomeTask,
}

/// Object-safe form of [`Tool`] used by the registry and the tool handles.
pub(crate) trait DynTool: Send + Sync {
    fn info(&self) -> &ToolInfo;
    fn listing(&self) -> &Value;
    fn header_params(&self) -> &[HeaderParam];
    fn call(
        self: Arc<Self>,
        ctx: Context,
        args: Value,
    ) -> BoxFuture<'static, Result<Output, Error>>;
}

pub(crate) struct Adapter<T: Tool> {
    tool: T,
    info: ToolInfo,
    listing: Value,
    header_params: Vec<HeaderParam>,
}

impl<T: Tool> Adapter<T> {
    /// Wraps a tool; fails when its `x-mcp-header` annotations are invalid.
    pub(crate) fn new(tool: T) -> Result<Self, String> {
        let info = tool.info();
        let input_schema = info.input_schema.clone().unwrap_or_else(|| {
            let mut schema = serde_json::to_value(schemars::schema_for!(T::Args))
                .unwrap_or_else(|_| json!({ "type": "object" }));
            if let Some(obj) = schema.as_object_mut() {
                // Clients expect an object schema; the generated title is the Rust type's name.
                obj.remove("title");
                obj.entry("type").or_insert_with(|| json!("object"));
            }
            schema
        });
        let mut listing = Map::new();
        listing.insert("name".into(), json!(info.name));
        if let Some(title) = &info.title {
            listing.insert("title".into(), json!(title));
        }
        listing.insert("description".into(), json!(info.description));
        let header_params =
            header_param::collect(&input_schema).map_err(|e| format!("tool {}: {e}", info.name))?;
        listing.insert("inputSchema".into(), input_schema);
        if let Some(schema) = &info.output_schema {
            listing.insert("outputSchema".into(), schema.clone());
        }
        if let Some(a) = &info.annotations {
            listing.insert("annotations".into(), a.clone());
        }
        if info.task_support != TaskSupport::Forbidden {
            listing.insert(
                "execution".into(),
                json!({ "taskSupport": info.task_support.as_str() }),
            );
        }
        if let Some(m) = &info.meta {
            listing.insert("_meta".into(), m.clone());
        }
        Ok(Self {
            tool,
            info,
            listing: Value::Object(listing),
            header_params,
        })
    }
}

impl<T: Tool> DynTool for Adapter<T> {
    fn info(&self) -> &ToolInfo {
        &self.info
    }

    fn listing(&self) -> &Value {
        &self.listing
    }

    fn header_params(&self) -> &[HeaderParam] {
        &self.header_params
    }

    fn call(
        self: Arc<Self>,
        ctx: Context,
        args: Value,
    ) -> BoxFuture<'static, Result<Output, Error>> {
        Box::pin(async move {
            let args: T::Args =
                serde_json::from_value(args).map_err(|e| Error::InvalidArguments(e.to_string()))?;
            self.tool.call(ctx, args).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_blocks_are_the_mcp_objects() {
        let resource = json!({ "uri": "file:///a", "text": "a" });
        let cases = [
            (Content::text("hi"), json!({ "type": "text", "text": "hi" })),
            (
                Content::image("AAAA", "image/png"),
                json!({ "type": "image", "data": "AAAA", "mimeType": "image/png" }),
            ),
            (
                Content::audio("BBBB", "audio/wav"),
                json!({ "type": "audio", "data": "BBBB", "mimeType": "audio/wav" }),
            ),
            (
                Content::resource(resource.clone()),
                json!({ "type": "resource", "resource": resource }),
            ),
            (
                Content::resource_link("file:///a", "a"),
                json!({ "type": "resource_link", "uri": "file:///a", "name": "a" }),
            ),
        ];
        for (built, expected) in cases {
            assert_eq!(built.0, expected);
        }
        let output = Output::error("failed").structured(json!({ "n": 1 }));
        assert_eq!(
            output.clone().into_value(),
            json!({ "content": [{ "type": "text", "text": "failed" }],
                    "structuredContent": { "n": 1 }, "isError": true })
        );
        assert_eq!(output.to_value(), output.into_value());
    }
}
