//! Conformance fixtures for the 2026-07-28 requirement set of the prerelease suite
//! (`@modelcontextprotocol/conformance@0.2.0-alpha.12`, `--requirements 2026-07-28`).
//!
//! Registered with the 2025 pack in [`super::conformance`] when the server runs with
//! `--conformance`. The suite calls these by name:
//! - `test_input_required_result_*` and the prompt `test_input_required_result_prompt`:
//!   Multi Round-Trip Requests (SEP-2322). A tool asks with [`Context::elicit`],
//!   [`Context::sample`] or [`Context::list_roots`]; the engine answers from the retry's
//!   `inputResponses`, or returns `resultType: input_required` with a sealed `requestState`.
//! - `test_missing_capability`, `test_streaming_elicitation`, `test_logging_tool`: the
//!   stateless-protocol diagnostics of SEP-2575 (-32021 for an undeclared capability, no
//!   server requests on a response stream, no log without `_meta` logLevel).
//! - `test_custom_headers`: parameters annotated with `x-mcp-header` (SEP-2243); the suite
//!   tests the first listed tool with such a string parameter.
//! - `conformance_noop`: the SEP-2243 standard-header checks call the *first* listed tool
//!   with `arguments: {}`; this one sorts before `echo` (which needs `text`) and takes none.

use std::sync::Arc;

use futures_util::future::{join, join3, BoxFuture, FutureExt};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{Context, Error, FnTool, LogLevel, NoArgs, Output, Prompt, Registry, ToolInfo};

/// Adds every 2026-07-28 fixture to `registry`.
pub(super) fn register(registry: &mut Registry) {
    let description = "Echoes parameters that clients mirror into Mcp-Param-* headers (SEP-2243).";
    let headers = ToolInfo::new("test_custom_headers", description);
    let headers = headers.input_schema(custom_headers_schema());
    registry.tool(FnTool::new(headers, custom_headers));
    let description = "Takes no arguments and answers \"ok\" (listed first, for header checks).";
    let noop = ToolInfo::new("conformance_noop", description);
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

/// `conformance_noop`.
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::tools::{InputRequest, Peer};

    /// Plays the 2026-07-28 engine: questions are keyed `input-N` in asking order and
    /// answered from `answers`, or become `InputRequired`. Records everything sent.
    #[derive(Default)]
    struct Engine {
        answers: HashMap<String, Value>,
        next: AtomicUsize,
        sent: Mutex<Vec<(String, Value)>>,
    }

    impl Engine {
        fn answering(answers: &[Value]) -> Arc<Self> {
            let answers = answers.iter().enumerate();
            let answers = answers.map(|(i, a)| (format!("input-{i}"), a.clone()));
            Arc::new(Self {
                answers: answers.collect(),
                ..Self::default()
            })
        }

        fn methods(&self) -> Vec<String> {
            let sent = self.sent.lock().expect("lock");
            sent.iter().map(|(m, _)| m.clone()).collect()
        }
    }

    impl Peer for Engine {
        fn notify(&self, method: &str, params: Value) {
            let mut sent = self.sent.lock().expect("lock");
            sent.push((method.to_owned(), params));
        }

        fn request(&self, method: &str, params: Value) -> BoxFuture<'static, Result<Value, Error>> {
            self.notify(method, params.clone());
            let key = format!("input-{}", self.next.fetch_add(1, Ordering::Relaxed));
            let outcome = match self.answers.get(&key) {
                Some(answer) => Ok(answer.clone()),
                None => Err(Error::InputRequired(InputRequest {
                    key,
                    method: method.to_owned(),
                    params,
                })),
            };
            futures_util::future::ready(outcome).boxed()
        }
    }

    const ALL: &str = r#"{ "sampling": {}, "elicitation": {}, "roots": {} }"#;

    fn context(engine: &Arc<Engine>, capabilities: &str, log_level: Option<LogLevel>) -> Context {
        Context::for_test(
            engine.clone(),
            serde_json::from_str(capabilities).expect("capabilities"),
            None,
            log_level,
        )
    }

    fn registry() -> Registry {
        let mut registry = Registry::new();
        register(&mut registry);
        registry
    }

    async fn call(
        engine: &Arc<Engine>,
        caps: &str,
        name: &str,
        args: Value,
    ) -> Result<Value, Error> {
        let registry = registry();
        let tool = registry.tools.iter().find(|t| t.info().name == name);
        let ctx = context(engine, caps, None);
        let output = tool.expect("tool").clone().call(ctx, args).await?;
        Ok(output.to_value())
    }

    fn text(result: &Result<Value, Error>) -> &str {
        let result = result.as_ref().expect("complete result");
        result["content"][0]["text"].as_str().expect("text")
    }

    fn accept(content: Value) -> Value {
        json!({ "action": "accept", "content": content })
    }

    fn sampled(text: &str) -> Value {
        json!({ "role": "assistant", "content": { "type": "text", "text": text },
            "model": "test-model", "stopReason": "endTurn" })
    }

    fn roots() -> Value {
        json!({ "roots": [{ "uri": "file:///test/root", "name": "Test Root" }] })
    }

    /// The question of an input-required outcome.
    fn asked(result: Result<Value, Error>) -> InputRequest {
        match result {
            Err(Error::InputRequired(request)) => request,
            other => panic!("expected an input request, got {other:?}"),
        }
    }

    #[test]
    fn registers_every_fixture() {
        let registry = registry();
        let expected = "conformance_noop test_custom_headers \
            test_input_required_result_capabilities test_input_required_result_elicitation \
            test_input_required_result_list_roots test_input_required_result_multi_round \
            test_input_required_result_multiple_inputs test_input_required_result_request_state \
            test_input_required_result_sampling test_input_required_result_tampered_state \
            test_logging_tool test_missing_capability test_streaming_elicitation";
        let expected: Vec<&str> = expected.split_whitespace().collect();
        assert_eq!(registry.tool_names(), expected);
        for listing in registry.tools.iter().map(|t| t.listing()) {
            assert_ne!(listing["description"], "");
            assert_eq!(listing["inputSchema"]["type"], "object");
        }
        let prompt = &registry.prompts[0];
        assert_eq!(prompt.name, "test_input_required_result_prompt");
        assert_ne!(prompt.listing["description"], "");

        let headers = &registry.tools[1].listing()["inputSchema"]["properties"];
        assert_eq!(headers["region"]["x-mcp-header"], "Region");
        assert_eq!(headers["region"]["type"], "string");
        // The suite calls the first listed tool with no arguments.
        let all = crate::tools::default_registry(true);
        assert_eq!(all.tool_names()[0], "conformance_noop");
    }

    #[tokio::test]
    async fn elicitation_asks_then_greets() {
        let name = "test_input_required_result_elicitation";
        let request = asked(call(&Engine::answering(&[]), ALL, name, json!({})).await);
        assert_eq!(
            (request.key.as_str(), request.method.as_str()),
            ("input-0", "elicitation/create")
        );
        assert_eq!(request.params["message"], "What is your name?");
        assert_eq!(
            request.params["requestedSchema"]["required"],
            json!(["name"])
        );

        let engine = Engine::answering(&[accept(json!({ "name": "Alice" }))]);
        assert_eq!(
            text(&call(&engine, ALL, name, json!({})).await),
            "Hello, Alice!"
        );
        // An answer that is not an ElicitResult is refused, not taken as complete.
        for bad in [
            json!(12345),
            json!({ "action": "maybe" }),
            json!({ "action": "accept", "content": 1 }),
        ] {
            let result = call(&Engine::answering(&[bad]), ALL, name, json!({})).await;
            assert!(
                matches!(result, Err(Error::InvalidArguments(_))),
                "{result:?}"
            );
        }
        let declined = Engine::answering(&[json!({ "action": "decline" })]);
        assert_eq!(
            text(&call(&declined, ALL, name, json!({})).await),
            "Hello, stranger!"
        );
    }

    #[tokio::test]
    async fn sampling_roots_and_confirmations_complete() {
        let cases = [
            (
                "test_input_required_result_sampling",
                "sampling/createMessage",
                sampled("Paris."),
                "Sampling result: Paris.",
            ),
            (
                "test_input_required_result_list_roots",
                "roots/list",
                roots(),
                "Found 1 root(s): file:///test/root",
            ),
            (
                "test_input_required_result_request_state",
                "elicitation/create",
                accept(json!({ "ok": true })),
                "state-ok: requestState validated, ok=true",
            ),
            (
                "test_input_required_result_tampered_state",
                "elicitation/create",
                accept(json!({ "ok": true })),
                "integrity-ok: requestState validated, ok=true",
            ),
        ];
        for (name, method, answer, expected) in cases {
            let request = asked(call(&Engine::answering(&[]), ALL, name, json!({})).await);
            assert_eq!(request.method, method, "{name}");
            let result = call(&Engine::answering(&[answer]), ALL, name, json!({})).await;
            assert_eq!(text(&result), expected);
        }
    }

    #[tokio::test]
    async fn multiple_inputs_are_asked_together_in_order() {
        let name = "test_input_required_result_multiple_inputs";
        let engine = Engine::answering(&[]);
        let request = asked(call(&engine, ALL, name, json!({})).await);
        assert_eq!(request.method, "elicitation/create");
        // All three questions are asked in the same round, keyed in this order.
        let methods = ["elicitation/create", "sampling/createMessage", "roots/list"];
        assert_eq!(engine.methods(), methods);

        let answers = [
            accept(json!({ "name": "Alice" })),
            sampled("Hello there!"),
            roots(),
        ];
        let result = call(&Engine::answering(&answers), ALL, name, json!({})).await;
        assert_eq!(
            text(&result),
            "Name: Alice; Greeting: Hello there!; Roots: 1"
        );
    }

    #[tokio::test]
    async fn multi_round_asks_the_second_question_after_the_first() {
        let name = "test_input_required_result_multi_round";
        let first = asked(call(&Engine::answering(&[]), ALL, name, json!({})).await);
        assert_eq!(first.params["message"], "Step 1: What is your name?");
        let round2 = Engine::answering(&[accept(json!({ "name": "Alice" }))]);
        let second = asked(call(&round2, ALL, name, json!({})).await);
        assert_eq!(
            (second.key.as_str(), second.params["message"].as_str()),
            ("input-1", Some("Step 2: What is your favorite color?"))
        );
        let round3 = Engine::answering(&[
            accept(json!({ "name": "Alice" })),
            accept(json!({ "color": "blue" })),
        ]);
        let result = call(&round3, ALL, name, json!({})).await;
        assert_eq!(
            text(&result),
            "Multi-round complete for Alice who likes blue"
        );
    }

    #[tokio::test]
    async fn capabilities_decide_what_is_asked() {
        let name = "test_input_required_result_capabilities";
        let engine = Engine::answering(&[]);
        let request = asked(call(&engine, r#"{ "sampling": {} }"#, name, json!({})).await);
        assert_eq!(request.method, "sampling/createMessage");
        assert_eq!(engine.methods(), ["sampling/createMessage"]);

        let engine = Engine::answering(&[sampled("ok")]);
        let result = call(&engine, r#"{ "sampling": {} }"#, name, json!({})).await;
        assert_eq!(text(&result), "capabilities-ok: received sample_input");
        let result = call(&Engine::answering(&[]), "{}", name, json!({})).await;
        assert_eq!(text(&result), "No supported capabilities declared");
    }

    #[tokio::test]
    async fn missing_capability_is_refused() {
        let name = "test_missing_capability";
        let result = call(
            &Engine::answering(&[]),
            r#"{ "elicitation": {} }"#,
            name,
            json!({}),
        )
        .await;
        assert!(
            matches!(result, Err(Error::MissingCapability("sampling"))),
            "{result:?}"
        );
        let engine = Engine::answering(&[sampled("hello")]);
        assert_eq!(text(&call(&engine, ALL, name, json!({})).await), "Success");
    }

    #[tokio::test]
    async fn streaming_elicitation_asks_without_a_request_on_the_stream() {
        let name = "test_streaming_elicitation";
        let request = asked(call(&Engine::answering(&[]), ALL, name, json!({})).await);
        assert_eq!(request.method, "elicitation/create");
        let engine = Engine::answering(&[accept(json!({ "ok": true }))]);
        assert_eq!(
            text(&call(&engine, ALL, name, json!({})).await),
            "Streaming complete, ok=true"
        );
    }

    #[tokio::test]
    async fn logging_tool_logs_only_when_asked() {
        let registry = registry();
        let tool = registry
            .tools
            .iter()
            .find(|t| t.info().name == "test_logging_tool");
        let tool = tool.expect("tool");
        for (level, expected) in [
            (None, 0),
            (Some(LogLevel::Info), 1),
            (Some(LogLevel::Error), 0),
        ] {
            let engine = Engine::answering(&[]);
            let ctx = context(&engine, ALL, level);
            let output = tool.clone().call(ctx, json!({})).await.expect("call");
            assert_eq!(output.to_value()["content"][0]["text"], "Logging evaluated");
            assert_eq!(engine.methods().len(), expected, "{level:?}");
        }
    }

    #[tokio::test]
    async fn custom_headers_and_noop_answer() {
        let engine = Engine::answering(&[]);
        let args = json!({ "region": "us-west1", "priority": 42 });
        let result = call(&engine, ALL, "test_custom_headers", args).await;
        assert_eq!(text(&result), "region=us-west1, priority=42, verbose=none");
        let result = call(
            &engine,
            ALL,
            "test_custom_headers",
            json!({ "priority": 1 }),
        )
        .await;
        assert!(matches!(result, Err(Error::InvalidArguments(_))));
        assert_eq!(
            text(&call(&engine, ALL, "conformance_noop", json!({})).await),
            "ok"
        );
    }

    #[tokio::test]
    async fn prompt_asks_for_context() {
        let registry = registry();
        let prompt = &registry.prompts[0];
        let ctx = context(&Engine::answering(&[]), ALL, None);
        let request = asked((prompt.get)(ctx, Map::new()).await);
        assert_eq!(
            request.params["message"],
            "What context should the prompt use?"
        );
        let engine = Engine::answering(&[accept(json!({ "context": "test context" }))]);
        let result = (prompt.get)(context(&engine, ALL, None), Map::new()).await;
        let result = result.expect("messages");
        assert_eq!(
            result["messages"][0]["content"]["text"],
            "Prompt with context: test context"
        );
    }
}
