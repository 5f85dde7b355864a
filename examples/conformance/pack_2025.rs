//! The conformance fixture pack: the tools, resources and prompts that the official MCP
//! conformance suite (`@modelcontextprotocol/conformance`, server mode) calls by name.
//!
//! Only `examples/conformance` serves it; it is test scaffolding, not something to offer
//! real users. The suite checks shapes more than values, but a few values matter:
//! `audio/wav`, the id in the template's text, the prompt arguments echoed back, the
//! elicitation schemas and the JSON Schema 2020-12 keywords.

use std::collections::HashMap;
use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use mcp_fleet::tools::{
    Content, Context, Error, FnTool, LogLevel, NoArgs, Output, Prompt, PromptArgument, Registry,
    Resource, ResourceTemplate, Tool, ToolInfo,
};

/// A 1x1 PNG, base64-encoded.
const TEST_IMAGE_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

/// A minimal WAV file, base64-encoded.
const TEST_AUDIO_BASE64: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

/// Adds every fixture to `registry`.
pub fn register(registry: &mut Registry) {
    let text = Output::text("This is a simple text response for testing.");
    let image = Output::new(vec![Content::image(TEST_IMAGE_BASE64, "image/png")]);
    let audio = Output::new(vec![Content::audio(TEST_AUDIO_BASE64, "audio/wav")]);
    let embedded = Output::new(vec![Content::resource(json!({
        "uri": "test://embedded-resource", "mimeType": "text/plain",
        "text": "This is an embedded resource content.",
    }))]);
    let mixed = Output::new(vec![
        Content::text("Multiple content types test:"),
        Content::image(TEST_IMAGE_BASE64, "image/png"),
        Content::resource(json!({
            "uri": "test://mixed-content-resource", "mimeType": "application/json",
            "text": json!({ "test": "data", "value": 123 }).to_string(),
        })),
    ]);
    let error = Output::error("This tool intentionally returns an error for testing");
    Pack(registry)
        .fixed("test_simple_text", "Returns a text block.", text)
        .fixed("test_image_content", "Returns a PNG image.", image)
        .fixed("test_audio_content", "Returns a WAV clip.", audio)
        .fixed("test_embedded_resource", "Returns a resource.", embedded)
        .fixed(
            "test_multiple_content_types",
            "Returns text, an image and a resource.",
            mixed,
        )
        .fixed("test_error_handling", "Always fails (isError).", error)
        .tool("test_tool_with_logging", "Logs three messages.", logging)
        .tool("test_tool_with_progress", "Reports progress.", progress)
        .tool("test_sampling", "Asks the client's model.", sampling)
        .tool("test_elicitation", "Asks the user for input.", elicitation)
        .tool(
            "test_elicitation_sep1034_defaults",
            "Asks for a form with defaults (SEP-1034).",
            sep1034,
        )
        .tool(
            "test_elicitation_sep1330_enums",
            "Asks for a form with enums (SEP-1330).",
            sep1330,
        )
        .listed(json_schema_info(), json_schema)
        .tool("test_reconnection", "Answers after 200 ms.", reconnection)
        .prompt("test_simple_prompt", "A simple prompt.", &[], simple)
        .prompt(
            "test_prompt_with_arguments",
            "A prompt with two arguments.",
            ARGS,
            with_args,
        )
        .prompt(
            "test_prompt_with_embedded_resource",
            "Embeds the given resource.",
            URI,
            embed,
        )
        .prompt(
            "test_prompt_with_image",
            "A prompt with an image.",
            &[],
            with_image,
        );
    register_resources(registry);
}

/// Registers fixtures with one short call each.
struct Pack<'a>(&'a mut Registry);

/// Builds a `GetPromptResult` from a prompt's arguments.
type Build = fn(&Map<String, Value>) -> Result<Value, Error>;

impl Pack<'_> {
    /// Adds a tool running `run`; the type of its second parameter is the tool's `Args`.
    fn tool<A, F>(&mut self, name: &str, description: &str, run: F) -> &mut Self
    where
        FnTool<A, F>: Tool,
    {
        self.listed(ToolInfo::new(name, description), run)
    }

    /// Adds a tool with a full listing, running `run`.
    fn listed<A, F>(&mut self, info: ToolInfo, run: F) -> &mut Self
    where
        FnTool<A, F>: Tool,
    {
        self.0.tool(FnTool::new(info, run));
        self
    }

    /// Adds a tool without arguments that always returns `output`.
    fn fixed(&mut self, name: &str, description: &str, output: Output) -> &mut Self {
        let run = move |_, _: NoArgs| ready(Ok(output.clone()));
        self.tool(name, description, run)
    }

    /// Adds a prompt with required `arguments` (name, description), built by `build`.
    fn prompt(
        &mut self,
        name: &str,
        description: &str,
        arguments: &[(&str, &str)],
        build: Build,
    ) -> &mut Self {
        let arguments = arguments.iter().map(|(name, description)| PromptArgument {
            name: (*name).to_owned(),
            description: Some((*description).to_owned()),
            required: true,
        });
        let get = Arc::new(move |_, args| ready(build(&args)).boxed());
        let prompt = Prompt::new(name, description, arguments.collect(), get);
        self.0.prompt(prompt.with_completion(Arc::new(complete)));
        self
    }
}

/// Waits `ms` milliseconds, or fails when the call is cancelled first.
async fn pause(ctx: &Context, ms: u64) -> Result<(), Error> {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
        () = ctx.cancelled() => Err(Error::Cancelled),
    }
}

/// `test_tool_with_logging`: three info messages about 50 ms apart.
async fn logging(ctx: Context, _: NoArgs) -> Result<Output, Error> {
    let steps = ["started", "processing data", "completed"];
    for (i, step) in steps.into_iter().enumerate() {
        if i > 0 {
            pause(&ctx, 50).await?;
        }
        let message = json!(format!("Tool execution {step}"));
        ctx.log(LogLevel::Info, Some("conformance"), message);
    }
    Ok(Output::text("Tool with logging executed successfully"))
}

/// `test_tool_with_progress`: progress 0, 50 and 100 of 100, about 50 ms apart.
async fn progress(ctx: Context, _: NoArgs) -> Result<Output, Error> {
    for (i, step) in [0u32, 50, 100].into_iter().enumerate() {
        if i > 0 {
            pause(&ctx, 50).await?;
        }
        let message = format!("Completed step {step} of 100");
        ctx.progress(f64::from(step), Some(100.0), Some(&message));
    }
    Ok(Output::text("Progress test completed"))
}

/// Arguments of `test_sampling`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SamplingArgs {
    /// The prompt to send to the client's model.
    prompt: String,
}

/// `test_sampling`: asks the client's model to answer the prompt.
async fn sampling(ctx: Context, args: SamplingArgs) -> Result<Output, Error> {
    let message = json!({ "role": "user", "content": { "type": "text", "text": args.prompt } });
    let params = json!({ "messages": [message], "maxTokens": 100 });
    let text = sampled_text(&ctx.sample(params).await?);
    Ok(Output::text(format!("LLM response: {text}")))
}

/// The text of a `CreateMessageResult`, whose `content` is one block or an array of them.
fn sampled_text(result: &Value) -> String {
    let blocks = match &result["content"] {
        Value::Array(blocks) => blocks.iter().collect(),
        block => vec![block],
    };
    let texts: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
    if texts.is_empty() {
        return "(no text content)".to_owned();
    }
    texts.join("\n")
}

/// `action=…, content=…` for an `ElicitResult`.
fn describe(answer: &Value) -> String {
    let action = answer["action"].as_str().unwrap_or("unknown");
    let content = answer.get("content").unwrap_or(&Value::Null);
    format!("action={action}, content={content}")
}

/// Arguments of `test_elicitation`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ElicitationArgs {
    /// The question shown to the user.
    message: String,
}

/// `test_elicitation`: asks the user for a username and an email address.
async fn elicitation(ctx: Context, args: ElicitationArgs) -> Result<Output, Error> {
    let schema = json!({ "type": "object", "required": ["username", "email"], "properties": {
        "username": { "type": "string", "description": "User's response" },
        "email": { "type": "string", "description": "User's email address" },
    } });
    let params = json!({ "message": args.message, "requestedSchema": schema });
    let answer = describe(&ctx.elicit(params).await?);
    Ok(Output::text(format!("User response: {answer}")))
}

/// Asks for a form with these `properties`, none required, and reports the answer.
async fn elicit_form(ctx: Context, message: &str, properties: Value) -> Result<Output, Error> {
    let schema = json!({ "type": "object", "properties": properties, "required": [] });
    let params = json!({ "message": message, "requestedSchema": schema });
    let answer = describe(&ctx.elicit(params).await?);
    Ok(Output::text(format!("Elicitation completed: {answer}")))
}

/// `test_elicitation_sep1034_defaults`: a field of each primitive type, each with a default.
async fn sep1034(ctx: Context, _: NoArgs) -> Result<Output, Error> {
    let properties = json!({
        "name": { "type": "string", "description": "User name", "default": "John Doe" },
        "age": { "type": "integer", "description": "User age", "default": 30 },
        "score": { "type": "number", "description": "User score", "default": 95.5 },
        "status": { "type": "string", "description": "User status",
            "enum": ["active", "inactive", "pending"], "default": "active" },
        "verified": { "type": "boolean", "description": "Verification status", "default": true },
    });
    let message = "Please review and update the form fields with defaults";
    elicit_form(ctx, message, properties).await
}

/// `{const, title}` choices `value1`..`value3` for titled enums.
fn titled(titles: [&str; 3]) -> Value {
    let choice = |(i, title)| json!({ "const": format!("value{}", i + 1), "title": title });
    titles.into_iter().enumerate().map(choice).collect()
}

/// `test_elicitation_sep1330_enums`: untitled, titled and legacy single-select, and untitled
/// and titled multi-select.
async fn sep1330(ctx: Context, _: NoArgs) -> Result<Output, Error> {
    let options = json!(["option1", "option2", "option3"]);
    let properties = json!({
        "untitledSingle": { "type": "string", "description": "Select one option", "enum": options },
        "titledSingle": { "type": "string", "description": "Select one option with titles",
            "oneOf": titled(["First Option", "Second Option", "Third Option"]) },
        "legacyEnum": { "type": "string", "description": "Select one option (legacy)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"] },
        "untitledMulti": { "type": "array", "description": "Select multiple options",
            "minItems": 1, "maxItems": 3, "items": { "type": "string", "enum": options } },
        "titledMulti": { "type": "array", "description": "Select multiple options with titles",
            "minItems": 1, "maxItems": 3,
            "items": { "anyOf": titled(["First Choice", "Second Choice", "Third Choice"]) } },
    });
    let message = "Please select options from the enum fields";
    elicit_form(ctx, message, properties).await
}

/// Arguments of `json_schema_2020_12_tool`; its listed schema is in [`json_schema_info`].
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JsonSchemaArgs {
    /// A name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// An address object (`street`, `city`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<Value>,
    /// `phone` or `email`: which of the two the schema then requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    contact_method: Option<String>,
    /// A phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
    /// An email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

/// The listing of `json_schema_2020_12_tool`: its input schema uses `$schema`, `$defs`
/// and `$ref`, and is closed (SEP-1613); it also carries an `$anchor`, composition
/// (`allOf`/`anyOf`) and conditional (`if`/`then`/`else`) keywords, which the 2026-07-28
/// suite checks are listed unchanged (SEP-2106).
fn json_schema_info() -> ToolInfo {
    let description = "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)";
    ToolInfo::new("json_schema_2020_12_tool", description).input_schema(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": { "address": { "$anchor": "addressDef", "type": "object", "properties": {
            "street": { "type": "string" }, "city": { "type": "string" },
        } } },
        "properties": {
            "name": { "type": "string" },
            "address": { "$ref": "#/$defs/address" },
            "contactMethod": { "type": "string", "enum": ["phone", "email"] },
            "phone": { "type": "string" },
            "email": { "type": "string" },
        },
        "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
        "if": {
            "properties": { "contactMethod": { "const": "phone" } },
            "required": ["contactMethod"],
        },
        "then": { "required": ["phone"] },
        "else": { "required": ["email"] },
        "additionalProperties": false,
    }))
}

/// `json_schema_2020_12_tool`: echoes its arguments.
async fn json_schema(_: Context, args: JsonSchemaArgs) -> Result<Output, Error> {
    let args = serde_json::to_string(&args).map_err(|e| Error::Failed(e.to_string()))?;
    let text = format!("JSON Schema 2020-12 tool called with: {args}");
    Ok(Output::text(text))
}

/// `test_reconnection`: answers after a short delay; the transport decides whether the SSE
/// stream closes before the answer (SEP-1699).
async fn reconnection(ctx: Context, _: NoArgs) -> Result<Output, Error> {
    // End the SSE connection after the priming event; the client resumes with Last-Event-ID.
    ctx.close_stream();
    pause(&ctx, 200).await?;
    let text = "Reconnection test completed successfully. If you received this, \
                the client properly reconnected after stream closure.";
    Ok(Output::text(text))
}

/// Reads `test://template/{id}/data` as JSON naming the id.
fn read_template(
    _: Context,
    uri: String,
    vars: HashMap<String, String>,
) -> BoxFuture<'static, Result<Vec<Value>, Error>> {
    let id = vars.get("id").cloned().unwrap_or_default();
    let data = format!("Data for ID: {id}");
    let text = json!({ "id": id, "templateTest": true, "data": data }).to_string();
    let contents = json!({ "uri": uri, "mimeType": "application/json", "text": text });
    ready(Ok(vec![contents])).boxed()
}

/// The three listed resources (`test://<name>`) and the template.
fn register_resources(registry: &mut Registry) {
    let text = "This is the content of the static text resource.";
    let watched = "Watched resource content";
    let fixed = [
        ("static-text", "text/plain", "text", text),
        ("static-binary", "image/png", "blob", TEST_IMAGE_BASE64),
        ("watched-resource", "text/plain", "text", watched),
    ];
    for (name, mime, key, body) in fixed {
        let (uri, mut title) = (format!("test://{name}"), name.replace('-', " "));
        title[..1].make_ascii_uppercase();
        let description = format!("{title}, a conformance fixture");
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

/// Arguments of `test_prompt_with_arguments`.
const ARGS: &[(&str, &str)] = &[
    ("arg1", "First test argument"),
    ("arg2", "Second test argument"),
];

/// Arguments of `test_prompt_with_embedded_resource`.
const URI: &[(&str, &str)] = &[("resourceUri", "URI of the resource to embed")];

/// Completions for prompt arguments: known values starting with what was typed.
fn complete(name: &str, value: &str, _: &Map<String, Value>) -> Vec<String> {
    let known: &[&str] = match name {
        "arg1" => &["test1", "test2", "testValue1"],
        "arg2" => &["test1", "test2", "testValue2"],
        "resourceUri" => &["test://static-text", "test://static-binary"],
        _ => &[],
    };
    let matching = known.iter().filter(|k| k.starts_with(value));
    matching.map(|k| (*k).to_owned()).collect()
}

/// A prompt argument as a string, or an error when it is missing.
fn string_arg(args: &Map<String, Value>, name: &str) -> Result<String, Error> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(Error::InvalidArguments(format!("missing `{name}`"))),
    }
}

/// A `GetPromptResult` of user messages, one per content block.
fn user_messages(blocks: Vec<Content>) -> Result<Value, Error> {
    let message = |c| json!({ "role": "user", "content": c });
    let messages: Vec<Value> = blocks.into_iter().map(message).collect();
    Ok(json!({ "messages": messages }))
}

/// `test_simple_prompt`.
fn simple(_: &Map<String, Value>) -> Result<Value, Error> {
    user_messages(vec![Content::text("This is a simple prompt for testing.")])
}

/// `test_prompt_with_arguments`: both arguments substituted into the text.
fn with_args(args: &Map<String, Value>) -> Result<Value, Error> {
    let (arg1, arg2) = (string_arg(args, "arg1")?, string_arg(args, "arg2")?);
    let text = format!("Prompt with arguments: arg1='{arg1}', arg2='{arg2}'");
    user_messages(vec![Content::text(text)])
}

/// `test_prompt_with_embedded_resource`: the given URI as an embedded text resource.
fn embed(args: &Map<String, Value>) -> Result<Value, Error> {
    let uri = string_arg(args, "resourceUri")?;
    let text = "Embedded resource content for testing.";
    user_messages(vec![
        Content::resource(json!({ "uri": uri, "mimeType": "text/plain", "text": text })),
        Content::text("Please process the embedded resource above."),
    ])
}

/// `test_prompt_with_image`: an image, then a question about it.
fn with_image(_: &Map<String, Value>) -> Result<Value, Error> {
    user_messages(vec![
        Content::image(TEST_IMAGE_BASE64, "image/png"),
        Content::text("Please analyze the image above."),
    ])
}
