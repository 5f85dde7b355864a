//! The conformance fixture pack: the tools, resources and prompts that the official MCP
//! conformance suite (`@modelcontextprotocol/conformance`, server mode) calls by name.
//!
//! It is registered only when the server runs with `--conformance`; it is test scaffolding,
//! not something to offer real users. The suite checks shapes more than values, but a few
//! values matter: `audio/wav`, the id in the template's text, the prompt arguments echoed
//! back, the elicitation schemas and the JSON Schema 2020-12 keywords.

use std::collections::HashMap;
use std::future::{ready, Future};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::prompt::GetFn;
use super::{
    CompleteFn, Content, Context, Error, LogLevel, NoArgs, Output, Prompt, PromptArgument,
    Registry, Resource, ResourceTemplate, Tool, ToolInfo,
};

/// A 1x1 PNG, base64-encoded.
const TEST_IMAGE_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

/// A minimal WAV file, base64-encoded.
const TEST_AUDIO_BASE64: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

/// What `test_reconnection` returns.
const RECONNECTION_TEXT: &str = "Reconnection test completed successfully. If you received this, \
                                 the client properly reconnected after stream closure.";

/// The messages `test_tool_with_logging` logs, in order.
const LOG_STEPS: [&str; 3] = [
    "Tool execution started",
    "Tool processing data",
    "Tool execution completed",
];

/// Adds every fixture to `registry`.
pub(super) fn register(registry: &mut Registry) {
    register_tools(registry);
    register_resources(registry);
    register_prompts(registry);
}

/// A tool made of its listing and a closure over its typed arguments.
struct Fixture<A, F> {
    info: ToolInfo,
    run: F,
    args: PhantomData<fn() -> A>,
}

/// A [`Fixture`]; the type of the closure's second parameter is the tool's `Args`.
fn fixture<A, F, Fut>(name: &str, description: &str, run: F) -> Fixture<A, F>
where
    F: Fn(Context, A) -> Fut,
{
    let info = ToolInfo::new(name, description);
    Fixture { info, run, args: PhantomData }
}

impl<A, F, Fut> Tool for Fixture<A, F>
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

/// A tool without arguments that always returns `output`.
fn fixed(name: &str, description: &str, output: Output) -> impl Tool {
    fixture(name, description, move |_, _: NoArgs| ready(Ok(output.clone())))
}

/// Waits `ms` milliseconds, or fails when the call is cancelled first.
async fn pause(ctx: &Context, ms: u64) -> Result<(), Error> {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
        () = ctx.cancelled() => Err(Error::Cancelled),
    }
}

/// Arguments of `test_sampling`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SamplingArgs {
    /// The prompt to send to the client's model.
    prompt: String,
}

/// Arguments of `test_elicitation`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ElicitationArgs {
    /// The question shown to the user.
    message: String,
}

/// Arguments of `json_schema_2020_12_tool`; its listed schema is written by hand.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct JsonSchemaArgs {
    /// A name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// An address object (`street`, `city`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<Value>,
}

/// The fourteen tools.
fn register_tools(registry: &mut Registry) {
    let simple = Output::text("This is a simple text response for testing.");
    registry.tool(fixed("test_simple_text", "Returns a simple text block.", simple));
    let image = Output::new(vec![Content::image(TEST_IMAGE_BASE64, "image/png")]);
    registry.tool(fixed("test_image_content", "Returns a 1x1 PNG image.", image));
    let audio = Output::new(vec![Content::audio(TEST_AUDIO_BASE64, "audio/wav")]);
    registry.tool(fixed("test_audio_content", "Returns a short WAV clip.", audio));
    let embedded = Output::new(vec![Content::resource(json!({
        "uri": "test://embedded-resource", "mimeType": "text/plain",
        "text": "This is an embedded resource content.",
    }))]);
    registry.tool(fixed("test_embedded_resource", "Returns an embedded text resource.", embedded));
    let mixed = Output::new(vec![
        Content::text("Multiple content types test:"),
        Content::image(TEST_IMAGE_BASE64, "image/png"),
        Content::resource(json!({
            "uri": "test://mixed-content-resource", "mimeType": "application/json",
            "text": json!({ "test": "data", "value": 123 }).to_string(),
        })),
    ]);
    let description = "Returns text, an image and an embedded resource.";
    registry.tool(fixed("test_multiple_content_types", description, mixed));
    let error = Output::error("This tool intentionally returns an error for testing");
    let description = "Always returns an error result (isError), never a protocol error.";
    registry.tool(fixed("test_error_handling", description, error));

    let description = "Sends three info log messages while it runs.";
    registry.tool(fixture("test_tool_with_logging", description, |ctx, _: NoArgs| async move {
        for (i, step) in LOG_STEPS.into_iter().enumerate() {
            if i > 0 {
                pause(&ctx, 50).await?;
            }
            ctx.log(LogLevel::Info, Some("conformance"), json!(step));
        }
        Ok(Output::text("Tool with logging executed successfully"))
    }));
    let description = "Reports progress 0, 50 and 100 of 100 to the caller's progress token.";
    registry.tool(fixture("test_tool_with_progress", description, |ctx, _: NoArgs| async move {
        for (i, step) in [0u32, 50, 100].into_iter().enumerate() {
            if i > 0 {
                pause(&ctx, 50).await?;
            }
            let message = format!("Completed step {step} of 100");
            ctx.progress(f64::from(step), Some(100.0), Some(&message));
        }
        Ok(Output::text("Progress test completed"))
    }));

    let description = "Asks the client's model to answer the prompt and returns its reply.";
    registry.tool(fixture("test_sampling", description, |ctx, args: SamplingArgs| async move {
        let result = ctx
            .sample(json!({
                "messages": [{ "role": "user", "content": { "type": "text", "text": args.prompt } }],
                "maxTokens": 100,
            }))
            .await?;
        Ok(Output::text(format!("LLM response: {}", sampled_text(&result))))
    }));
    let description = "Asks the user for a username and an email address.";
    registry.tool(fixture("test_elicitation", description, |ctx, args: ElicitationArgs| async move {
        let answer = ctx.elicit(elicitation_params(args.message)).await?;
        Ok(Output::text(format!("User response: {}", describe_answer(&answer))))
    }));
    let forms: [(&str, &str, fn() -> Value); 2] = [
        ("test_elicitation_sep1034_defaults", "Asks for a form with defaults (SEP-1034).", sep1034),
        ("test_elicitation_sep1330_enums", "Asks for a form with every enum kind (SEP-1330).", sep1330),
    ];
    for (name, description, params) in forms {
        registry.tool(fixture(name, description, move |ctx, _: NoArgs| async move {
            let answer = ctx.elicit(params()).await?;
            Ok(Output::text(format!("Elicitation completed: {}", describe_answer(&answer))))
        }));
    }

    let description = "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)";
    let mut json_schema = fixture("json_schema_2020_12_tool", description, |_, args: JsonSchemaArgs| {
        let text = serde_json::to_string(&args).map_err(|e| Error::Failed(e.to_string()));
        ready(text.map(|a| Output::text(format!("JSON Schema 2020-12 tool called with: {a}"))))
    });
    json_schema.info = json_schema.info.input_schema(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "type": "object",
                "properties": { "street": { "type": "string" }, "city": { "type": "string" } },
            },
        },
        "properties": { "name": { "type": "string" }, "address": { "$ref": "#/$defs/address" } },
        "additionalProperties": false,
    }));
    registry.tool(json_schema);
    // Answers after a short delay; the transport decides whether the SSE stream closes first.
    let description = "Answers after a short delay, to test resuming an SSE stream (SEP-1699).";
    registry.tool(fixture("test_reconnection", description, |ctx, _: NoArgs| async move {
        pause(&ctx, 200).await?;
        Ok(Output::text(RECONNECTION_TEXT))
    }));
}

/// The text of a `CreateMessageResult`, whose `content` is one block or an array of them.
fn sampled_text(result: &Value) -> String {
    let blocks = match &result["content"] {
        Value::Array(blocks) => blocks.iter().collect(),
        block => vec![block],
    };
    let texts: Vec<&str> = blocks
        .into_iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect();
    if texts.is_empty() {
        "(no text content)".to_owned()
    } else {
        texts.join("\n")
    }
}

/// `action=…, content=…` for an `ElicitResult`.
fn describe_answer(answer: &Value) -> String {
    let action = answer["action"].as_str().unwrap_or("unknown");
    let content = answer.get("content").map_or_else(|| "null".to_owned(), Value::to_string);
    format!("action={action}, content={content}")
}

/// The `test_elicitation` form: a username and an email address.
fn elicitation_params(message: String) -> Value {
    json!({
        "message": message,
        "requestedSchema": {
            "type": "object",
            "properties": {
                "username": { "type": "string", "description": "User's response" },
                "email": { "type": "string", "description": "User's email address" },
            },
            "required": ["username", "email"],
        },
    })
}

/// The SEP-1034 form: one field of each primitive type, each with a default.
fn sep1034() -> Value {
    json!({
        "message": "Please review and update the form fields with defaults",
        "requestedSchema": {
            "type": "object",
            "properties": {
                "name": { "type": "string", "description": "User name", "default": "John Doe" },
                "age": { "type": "integer", "description": "User age", "default": 30 },
                "score": { "type": "number", "description": "User score", "default": 95.5 },
                "status": {
                    "type": "string", "description": "User status",
                    "enum": ["active", "inactive", "pending"], "default": "active",
                },
                "verified": {
                    "type": "boolean", "description": "Verification status", "default": true,
                },
            },
            "required": [],
        },
    })
}

/// `{const, title}` choices `value1..3` for titled enums.
fn titled(titles: [&str; 3]) -> Value {
    let choice = |(i, title)| json!({ "const": format!("value{}", i + 1), "title": title });
    titles.into_iter().enumerate().map(choice).collect()
}

/// The SEP-1330 form: untitled, titled and legacy single-select; untitled and titled multi-select.
fn sep1330() -> Value {
    let options = json!(["option1", "option2", "option3"]);
    json!({
        "message": "Please select options from the enum fields",
        "requestedSchema": {
            "type": "object",
            "properties": {
                "untitledSingle": {
                    "type": "string", "description": "Select one option", "enum": options,
                },
                "titledSingle": {
                    "type": "string", "description": "Select one option with titles",
                    "oneOf": titled(["First Option", "Second Option", "Third Option"]),
                },
                "legacyEnum": {
                    "type": "string", "description": "Select one option (legacy)",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array", "description": "Select multiple options",
                    "minItems": 1, "maxItems": 3,
                    "items": { "type": "string", "enum": options },
                },
                "titledMulti": {
                    "type": "array", "description": "Select multiple options with titles",
                    "minItems": 1, "maxItems": 3,
                    "items": { "anyOf": titled(["First Choice", "Second Choice", "Third Choice"]) },
                },
            },
            "required": [],
        },
    })
}

/// Reads `test://template/{id}/data` as JSON naming the id.
fn read_template(
    _ctx: Context,
    uri: String,
    vars: HashMap<String, String>,
) -> BoxFuture<'static, Result<Vec<Value>, Error>> {
    let id = vars.get("id").cloned().unwrap_or_default();
    let data = format!("Data for ID: {id}");
    let text = json!({ "id": id, "templateTest": true, "data": data }).to_string();
    ready(Ok(vec![json!({ "uri": uri, "mimeType": "application/json", "text": text })])).boxed()
}

/// The three listed resources and the template.
fn register_resources(registry: &mut Registry) {
    let fixed = [
        ("Static Text Resource", "text/plain", "text", "This is the content of the static text resource."),
        ("Static Binary Resource", "image/png", "blob", TEST_IMAGE_BASE64),
        ("Watched Resource", "text/plain", "text", "Watched resource content"),
    ];
    for (title, mime, key, body) in fixed {
        let name = title.strip_suffix(" Resource").unwrap_or(title).to_lowercase().replace(' ', "-");
        let uri = format!("test://{name}");
        let description = format!("The {title}, a conformance fixture");
        let listing = json!({
            "uri": uri, "name": name, "title": title, "description": description, "mimeType": mime,
        });
        let contents = json!({ "uri": uri, "mimeType": mime, key: body });
        let read = move |_, _, _| ready(Ok(vec![contents.clone()])).boxed();
        registry.resource(Resource::new(listing, Arc::new(read)));
    }
    let listing = json!({
        "uriTemplate": "test://template/{id}/data", "name": "template-data",
        "title": "Template Data Resource", "mimeType": "application/json",
        "description": "A templated resource whose content names the id in its URI",
    });
    registry.resource_template(ResourceTemplate::new(listing, Arc::new(read_template)));
}

/// A prompt builder that needs no context and never waits.
fn prompt_fn(build: fn(&Map<String, Value>) -> Result<Value, Error>) -> GetFn {
    Arc::new(move |_, args| ready(build(&args)).boxed())
}

/// A prompt argument as a string, or an error when it is missing.
fn string_arg(args: &Map<String, Value>, name: &str) -> Result<String, Error> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(Error::InvalidArguments(format!("missing argument `{name}`"))),
    }
}

/// A `GetPromptResult` of user messages, one per content block.
fn user_messages(blocks: Vec<Content>) -> Value {
    let messages: Vec<Value> =
        blocks.into_iter().map(|c| json!({ "role": "user", "content": c })).collect();
    json!({ "messages": messages })
}

/// A required prompt argument.
fn required(name: &str, description: &str) -> PromptArgument {
    let description = Some(description.to_owned());
    PromptArgument { name: name.to_owned(), description, required: true }
}

/// Completions for `test_prompt_with_arguments`: known values starting with what was typed.
fn complete_argument(name: &str, value: &str, _args: &Map<String, Value>) -> Vec<String> {
    let options: &[&str] = match name {
        "arg1" => &["test1", "test2", "testValue1"],
        "arg2" => &["test1", "test2", "testValue2"],
        _ => &[],
    };
    options.iter().filter(|o| o.starts_with(value)).map(|o| (*o).to_owned()).collect()
}

/// The four prompts.
fn register_prompts(registry: &mut Registry) {
    let simple = prompt_fn(|_| {
        Ok(user_messages(vec![Content::text("This is a simple prompt for testing.")]))
    });
    registry.prompt(Prompt::new("test_simple_prompt", "A prompt without arguments", vec![], simple));

    let with_args = prompt_fn(|args| {
        let (arg1, arg2) = (string_arg(args, "arg1")?, string_arg(args, "arg2")?);
        let text = format!("Prompt with arguments: arg1='{arg1}', arg2='{arg2}'");
        Ok(user_messages(vec![Content::text(text)]))
    });
    let arguments = vec![
        required("arg1", "First test argument"),
        required("arg2", "Second test argument"),
    ];
    let description = "A prompt that substitutes its two arguments";
    let complete: CompleteFn = Arc::new(complete_argument);
    let prompt = Prompt::new("test_prompt_with_arguments", description, arguments, with_args);
    registry.prompt(prompt.with_completion(complete));

    let embedded = prompt_fn(|args| {
        let uri = string_arg(args, "resourceUri")?;
        let text = "Embedded resource content for testing.";
        Ok(user_messages(vec![
            Content::resource(json!({ "uri": uri, "mimeType": "text/plain", "text": text })),
            Content::text("Please process the embedded resource above."),
        ]))
    });
    let arguments = vec![required("resourceUri", "URI of the resource to embed")];
    let description = "A prompt that embeds the resource it is given";
    let name = "test_prompt_with_embedded_resource";
    registry.prompt(Prompt::new(name, description, arguments, embedded));

    let image = prompt_fn(|_| {
        Ok(user_messages(vec![
            Content::image(TEST_IMAGE_BASE64, "image/png"),
            Content::text("Please analyze the image above."),
        ]))
    });
    registry.prompt(Prompt::new("test_prompt_with_image", "A prompt with an image", vec![], image));
}
