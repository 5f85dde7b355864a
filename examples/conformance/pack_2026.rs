//! Conformance fixtures for the 2026-07-28 requirement set of the prerelease suite
//! (`@modelcontextprotocol/conformance@0.2.0-alpha.12`, `--requirements 2026-07-28`).
//!
//! Served with the 2025 pack (`pack_2025`). The suite calls these by name:
//! - `test_input_required_result_*` and the prompt `test_input_required_result_prompt`:
//!   Multi Round-Trip Requests (SEP-2322). A tool asks with [`Context::elicit`],
//!   [`Context::sample`] or [`Context::list_roots`]; the engine answers from the retry's
//!   `inputResponses`, or returns `resultType: input_required` with a sealed `requestState`.
//! - `test_missing_capability`, `test_streaming_elicitation`, `test_logging_tool`: the
//!   stateless-protocol diagnostics of SEP-2575 (-32021 for an undeclared capability, no
//!   server requests on a response stream, no log without `_meta` logLevel).
//! - `test_custom_headers`: parameters annotated with `x-mcp-header` (SEP-2243); the suite
//!   tests the first listed tool with such a string parameter.
//! - `a_conformance_noop`: the SEP-2243 standard-header checks call the *first* listed tool
//!   with `arguments: {}`; this one sorts before every other (`big_result` needs `bytes`,
//!   `confirm_delete` asks the client, `echo` needs `text`) and takes none.

use std::sync::Arc;

use futures_util::future::{join, join3, BoxFuture, FutureExt};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use mcp_fleet::tools::{
    Context, Error, FnTool, LogLevel, NoArgs, Output, Prompt, Registry, ToolInfo,
};

/// Adds every 2026-07-28 fixture to `registry`.
pub fn register(registry: &mut Registry) {
    let description = "Echoes parameters that clients mirror into Mcp-Param-* headers (SEP-2243).";
    let headers = ToolInfo::new("test_custom_headers", description);
    let headers = headers.input_schema(custom_headers_schema());
    registry.tool(FnTool::new(headers, custom_headers));
    let description = "Takes no arguments and answers \"ok\" (listed first, for header checks).";
    let noop = ToolInfo::new("a_conformance_noop", description);
    registry.tool(FnTool::new(noop, noop_tool));
    for (name, description, run) in NO_ARG_TOOLS {
        registry.tool(FnTool::new(ToolInfo::new(*name, *description), *run));
    }
    registry.prompt(Prompt::new(
        "test_input_required_result_prompt",
        "Asks the user for context, then builds a message with it (SEP-2322 on prompts/get).",
        Vec::new(),
        Arc::new(|ctx, _args| prompt_with_context(ctx).boxed()),
    ));
}

/// A tool without arguments whose call is `run`.
type Run = fn(Context, NoArgs) -> BoxFuture<'static, Result<Output, Error>>;

/// The argument-less fixtures: name, description, run.
const NO_ARG_TOOLS: &[(&str, &str, Run)] = &[
    (
        "test_input_required_result_elicitation",
        "Asks the user's name (elicitation), then greets them.",
        |ctx, _| elicitation(ctx).boxed(),
    ),
    (
        "test_input_required_result_sampling",
        "Asks the client's model a question (sampling), then returns its answer.",
        |ctx, _| sampling(ctx).boxed(),
    ),
    (
        "test_input_required_result_list_roots",
        "Asks the client for its roots, then lists them.",
        |ctx, _| list_roots(ctx).boxed(),
    ),
    (
        "test_input_required_result_request_state",
        "Asks for a confirmation; the retry must echo the sealed requestState.",
        |ctx, _| confirm(ctx, "state-ok").boxed(),
    ),
    (
        "test_input_required_result_multiple_inputs",
        "Asks for a name, a sampled greeting and the roots at once.",
        |ctx, _| multiple_inputs(ctx).boxed(),
    ),
    (
        "test_input_required_result_multi_round",
        "Asks for a name, then, in a second round, a favourite colour.",
        |ctx, _| multi_round(ctx).boxed(),
    ),
    (
        "test_input_required_result_tampered_state",
        "Asks for a confirmation; a retry with an altered requestState is refused.",
        |ctx, _| confirm(ctx, "integrity-ok").boxed(),
    ),
    (
        "test_input_required_result_capabilities",
        "Asks only what the client declared it can answer (elicitation, sampling).",
        |ctx, _| capabilities(ctx).boxed(),
    ),
    (
        "test_missing_capability",
        "Needs sampling; fails with -32021 when the client did not declare it.",
        |ctx, _| missing_capability(ctx).boxed(),
    ),
    (
        "test_streaming_elicitation",
        "Reports progress, then asks for a confirmation without a server request on the stream.",
        |ctx, _| streaming_elicitation(ctx).boxed(),
    ),
    (
        "test_logging_tool",
        "Logs one info message, sent only when the request's _meta asks for a log level.",
        |ctx, _| logging_tool(ctx).boxed(),
    ),
];

/// What a fixture asks the client, with the key the suite's reference server gives it.
///
/// The engine numbers the keys itself (`input-0`, `input-1`, … in asking order), so `key`
/// is not on the wire yet; it is kept here because the basic-elicitation scenario looks for
/// `inputRequests.user_name` and the ignore-extra-params scenario answers `user_name`
/// without a `requestState`.
struct Question {
    key: &'static str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `elicitation/create` with this message, asking for one field of this JSON type.
    Elicit(&'static str, &'static str, &'static str),
    /// `sampling/createMessage` with this prompt and token budget.
    Sample(&'static str, u32),
    /// `roots/list`.
    Roots,
}

impl Question {
    const fn elicit(key: &'static str, message: &'static str, field: &'static str) -> Self {
        Self {
            key,
            kind: Kind::Elicit(message, field, "string"),
        }
    }

    /// Asks the client and checks that the answer has the shape of the method's result.
    async fn ask(&self, ctx: &Context) -> Result<Value, Error> {
        let (answer, valid, method) = match self.kind {
            Kind::Elicit(message, field, ty) => {
                let schema = json!({ "type": "object", "required": [field],
                    "properties": { field: { "type": ty } } });
                let params = json!({ "message": message, "requestedSchema": schema });
                let answer = ctx.elicit_as(self.key, params).await?;
                let valid = elicit_result(&answer).is_some();
                (answer, valid, "elicitation/create")
            }
            Kind::Sample(text, max_tokens) => {
                let message =
                    json!({ "role": "user", "content": { "type": "text", "text": text } });
                let params = json!({ "messages": [message], "maxTokens": max_tokens });
                let answer = ctx.sample_as(self.key, params).await?;
                let valid = answer["content"].is_object() || answer["content"].is_array();
                (answer, valid, "sampling/createMessage")
            }
            Kind::Roots => {
                let answer = ctx.list_roots_as(self.key).await?;
                let valid = answer["roots"].is_array();
                (answer, valid, "roots/list")
            }
        };
        if !valid {
            let key = self.key;
            return Err(Error::InvalidArguments(format!(
                "the answer to {method} ({key}) is not a {method} result: {answer}"
            )));
        }
        Ok(answer)
    }
}

/// The action and content of an `ElicitResult`, when it is one.
fn elicit_result(answer: &Value) -> Option<(&str, Option<&Map<String, Value>>)> {
    let action = answer.get("action")?.as_str()?;
    if !matches!(action, "accept" | "decline" | "cancel") {
        return None;
    }
    match answer.get("content") {
        None | Some(Value::Null) => Some((action, None)),
        Some(Value::Object(content)) => Some((action, Some(content))),
        Some(_) => None,
    }
}

/// The `field` of an accepted `ElicitResult`, as text; `None` when the user declined.
fn accepted_text(answer: &Value, field: &str) -> Option<String> {
    match elicit_result(answer)? {
        ("accept", Some(content)) => match content.get(field)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        },
        _ => None,
    }
}

/// The text of a `CreateMessageResult`, whose `content` is one block or an array of them.
fn sampled_text(answer: &Value) -> String {
    let blocks = match &answer["content"] {
        Value::Array(blocks) => blocks.iter().collect(),
        block => vec![block],
    };
    let texts: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
    texts.join("\n")
}

const USER_NAME: Question = Question::elicit("user_name", "What is your name?", "name");
const CAPITAL: Question = Question {
    key: "capital_question",
    kind: Kind::Sample("What is the capital of France?", 100),
};
const CLIENT_ROOTS: Question = Question {
    key: "client_roots",
    kind: Kind::Roots,
};
const CONFIRM: Question = Question {
    key: "confirm",
    kind: Kind::Elicit("Please confirm", "ok", "boolean"),
};

/// `test_input_required_result_elicitation`: `Hello, <name>!`.
async fn elicitation(ctx: Context) -> Result<Output, Error> {
    let answer = USER_NAME.ask(&ctx).await?;
    let name = accepted_text(&answer, "name").unwrap_or_else(|| "stranger".to_owned());
    Ok(Output::text(format!("Hello, {name}!")))
}

/// `test_input_required_result_sampling`: the model's answer.
async fn sampling(ctx: Context) -> Result<Output, Error> {
    let answer = CAPITAL.ask(&ctx).await?;
    Ok(Output::text(format!(
        "Sampling result: {}",
        sampled_text(&answer)
    )))
}

/// `test_input_required_result_list_roots`: the number of roots and their URIs.
async fn list_roots(ctx: Context) -> Result<Output, Error> {
    let answer = CLIENT_ROOTS.ask(&ctx).await?;
    let uris: Vec<&str> = answer["roots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    let text = format!("Found {} root(s): {}", uris.len(), uris.join(", "));
    Ok(Output::text(text))
}

/// `test_input_required_result_request_state` and `…_tampered_state`: a confirmation. The
/// engine seals the `requestState` and refuses one that was altered; reaching the end means
/// the retry carried a valid one.
async fn confirm(ctx: Context, marker: &'static str) -> Result<Output, Error> {
    let answer = CONFIRM.ask(&ctx).await?;
    let ok = accepted_text(&answer, "ok").unwrap_or_else(|| "false".to_owned());
    Ok(Output::text(format!(
        "{marker}: requestState validated, ok={ok}"
    )))
}

/// `test_input_required_result_multiple_inputs`: three questions asked together. They are
/// polled in order, so the engine keys them `input-0` (elicitation), `input-1` (sampling)
/// and `input-2` (roots) in every round. The suite wants all three in one input-required
/// result; an engine that reports only the question in the tool's error asks them in three
/// rounds instead.
async fn multiple_inputs(ctx: Context) -> Result<Output, Error> {
    const GREETING: Question = Question {
        key: "greeting",
        kind: Kind::Sample("Generate a greeting", 50),
    };
    let (name, greeting, roots) = join3(
        USER_NAME.ask(&ctx),
        GREETING.ask(&ctx),
        CLIENT_ROOTS.ask(&ctx),
    )
    .await;
    let (name, greeting, roots) = (name?, greeting?, roots?);
    let name = accepted_text(&name, "name").unwrap_or_else(|| "stranger".to_owned());
    let roots = roots["roots"].as_array().map_or(0, Vec::len);
    let greeting = sampled_text(&greeting);
    Ok(Output::text(format!(
        "Name: {name}; Greeting: {greeting}; Roots: {roots}"
    )))
}

/// `test_input_required_result_multi_round`: a name, then, once answered, a colour.
async fn multi_round(ctx: Context) -> Result<Output, Error> {
    const STEP1: Question = Question::elicit("step1", "Step 1: What is your name?", "name");
    const STEP2: Question =
        Question::elicit("step2", "Step 2: What is your favorite color?", "color");
    let name = accepted_text(&STEP1.ask(&ctx).await?, "name");
    let name = name.unwrap_or_else(|| "friend".to_owned());
    let color = accepted_text(&STEP2.ask(&ctx).await?, "color");
    let color = color.unwrap_or_else(|| "no color".to_owned());
    Ok(Output::text(format!(
        "Multi-round complete for {name} who likes {color}"
    )))
}

/// `test_input_required_result_capabilities`: asks for elicitation and sampling only when
/// the client declared them (in `_meta` under 2026-07-28).
async fn capabilities(ctx: Context) -> Result<Output, Error> {
    const ELICIT: Question = Question::elicit("elicit_input", "Elicitation input", "value");
    const SAMPLE: Question = Question {
        key: "sample_input",
        kind: Kind::Sample("Sample request", 50),
    };
    let declared = |capability: &str| ctx.client_capabilities().get(capability).is_some();
    let (elicit, sample) = (declared("elicitation"), declared("sampling"));
    if !elicit && !sample {
        return Ok(Output::text("No supported capabilities declared"));
    }
    let ask = |question: &'static Question, wanted: bool| {
        let ctx = ctx.clone();
        async move {
            if wanted {
                question.ask(&ctx).await.map(Some)
            } else {
                Ok(None)
            }
        }
    };
    let (elicited, sampled) = join(ask(&ELICIT, elicit), ask(&SAMPLE, sample)).await;
    let received: Vec<&str> = [(&ELICIT, elicited?), (&SAMPLE, sampled?)]
        .iter()
        .filter(|(_, answer)| answer.is_some())
        .map(|(q, _)| q.key)
        .collect();
    Ok(Output::text(format!(
        "capabilities-ok: received {}",
        received.join(",")
    )))
}

/// `test_missing_capability`: samples, so a client without `sampling` gets -32021.
async fn missing_capability(ctx: Context) -> Result<Output, Error> {
    const PROBE: Question = Question {
        key: "sample",
        kind: Kind::Sample("Say hello", 10),
    };
    PROBE.ask(&ctx).await?;
    Ok(Output::text("Success"))
}

/// `test_streaming_elicitation`: progress (when asked for), then a question, which under
/// 2026-07-28 becomes an input-required result and never a request on the stream.
async fn streaming_elicitation(ctx: Context) -> Result<Output, Error> {
    ctx.progress(50.0, Some(100.0), Some("asking for confirmation"));
    let answer = CONFIRM.ask(&ctx).await?;
    let ok = accepted_text(&answer, "ok").unwrap_or_else(|| "false".to_owned());
    Ok(Output::text(format!("Streaming complete, ok={ok}")))
}

/// `test_logging_tool`: one info message, which the engine drops unless the request asked
/// for a log level.
async fn logging_tool(ctx: Context) -> Result<Output, Error> {
    let data = json!("Diagnostic trace logging activated");
    ctx.log(LogLevel::Info, Some("conformance"), data);
    Ok(Output::text("Logging evaluated"))
}

/// `a_conformance_noop`.
async fn noop_tool(_: Context, _: NoArgs) -> Result<Output, Error> {
    Ok(Output::text("ok"))
}

/// The input schema of `test_custom_headers`: a required string mirrored into
/// `Mcp-Param-Region` (the one the suite tests), and an optional integer and boolean.
fn custom_headers_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "region": { "type": "string", "description": "A region, sent as Mcp-Param-Region",
                "x-mcp-header": "Region" },
            "priority": { "type": "integer", "description": "A priority, sent as Mcp-Param-Priority",
                "x-mcp-header": "Priority" },
            "verbose": { "type": "boolean", "description": "Verbose output, sent as Mcp-Param-Verbose",
                "x-mcp-header": "Verbose" },
        },
        "required": ["region"],
        "additionalProperties": false,
    })
}

/// Arguments of `test_custom_headers`; the listed schema is [`custom_headers_schema`].
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CustomHeaderArgs {
    region: String,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    verbose: Option<bool>,
}

/// `test_custom_headers`: echoes the mirrored parameters.
async fn custom_headers(_: Context, args: CustomHeaderArgs) -> Result<Output, Error> {
    let shown = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    let priority = shown(args.priority.map(|p| p.to_string()));
    let verbose = shown(args.verbose.map(|v| v.to_string()));
    Ok(Output::text(format!(
        "region={}, priority={priority}, verbose={verbose}",
        args.region
    )))
}

/// `test_input_required_result_prompt`: asks for context, then returns one user message.
async fn prompt_with_context(ctx: Context) -> Result<Value, Error> {
    const CONTEXT: Question = Question::elicit(
        "user_context",
        "What context should the prompt use?",
        "context",
    );
    let answer = CONTEXT.ask(&ctx).await?;
    let context = accepted_text(&answer, "context").unwrap_or_else(|| "none".to_owned());
    let text = format!("Prompt with context: {context}");
    Ok(json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": text } }] }))
}
