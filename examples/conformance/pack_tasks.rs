//! Conformance fixtures for the tasks extension (`io.modelcontextprotocol/tasks`,
//! SEP-2663), as the prerelease suite's `tasks-*` scenarios call them by name:
//! - `greet`: never a task; answers `Hello, {name}!`.
//! - `slow_compute`: may run as a task; sleeps `seconds`, then answers. It watches for
//!   cancellation, so a cancelled task ends as cancelled (the cluster tests rely on it
//!   to show that a cancel received by another node reaches the running one).
//! - `failing_job`: only a task; fails as a tool (`isError`) after about a second.
//! - `protocol_error_job`: may run as a task; panics, which the task reports as failed.
//! - `confirm_delete`: may run as a task; asks for a confirmation (`elicitation/create`).
//! - `multi_input`: may run as a task; asks two questions at once.
//! - `rerunnable_sleep`: may run as a task, declared safe to run again; sleeps
//!   `seconds` (for the cluster test of a task whose node is lost).
//! - `big_result`: may run as a task; answers `bytes` bytes of text (for the result cap).
//! - `test_tool_with_task`: only a task, asked before: asks the user's name in an
//!   `input_required` round, then becomes a task ([`Context::run_as_task`]) that greets
//!   them (SEP-2663's MRTR → task composition).

use std::time::Duration;

use futures_util::future::join;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use mcp_fleet::tools::{Context, Error, FnTool, NoArgs, Output, Registry, TaskSupport, ToolInfo};

/// Adds every tasks fixture to `registry`.
pub fn register(registry: &mut Registry) {
    registry.tool(FnTool::new(
        ToolInfo::new("greet", "Greets someone by name (never a task)."),
        |_ctx, args: GreetArgs| async move { Ok(Output::text(format!("Hello, {}!", args.name))) },
    ));
    let optional = |name: &str, description: &str| {
        ToolInfo::new(name, description).task_support(TaskSupport::Optional)
    };
    registry.tool(FnTool::new(
        optional(
            "slow_compute",
            "Sleeps `seconds`, then answers; stops when cancelled.",
        ),
        |ctx, args: SlowArgs| sleep_then_answer(ctx, args),
    ));
    registry.tool(FnTool::new(
        optional(
            "rerunnable_sleep",
            "Sleeps `seconds`, then answers; safe to run again from the start.",
        )
        .rerunnable(),
        |ctx, args: SlowArgs| sleep_then_answer(ctx, args),
    ));
    registry.tool(FnTool::new(
        ToolInfo::new(
            "failing_job",
            "Fails as a tool after about a second (only a task).",
        )
        .task_support(TaskSupport::Required),
        |_ctx, _: NoArgs| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err::<Output, _>(Error::Failed(
                "failing_job failed, as it always does".into(),
            ))
        },
    ));
    registry.tool(FnTool::new(
        optional(
            "protocol_error_job",
            "Panics, which a task reports as failed.",
        ),
        |_ctx, _: NoArgs| async {
            if std::hint::black_box(true) {
                panic!("protocol_error_job panics on purpose");
            }
            Ok(Output::text("unreachable"))
        },
    ));
    registry.tool(FnTool::new(
        optional(
            "confirm_delete",
            "Asks for a confirmation, then says whether the file was deleted.",
        ),
        |ctx, args: ConfirmArgs| confirm_delete(ctx, args),
    ));
    registry.tool(FnTool::new(
        optional(
            "multi_input",
            "Asks two questions at once, then answers with both.",
        ),
        |ctx, _: NoArgs| multi_input(ctx),
    ));
    registry.tool(FnTool::new(
        ToolInfo::new(
            "test_tool_with_task",
            "Asks the user's name, then becomes a task that greets them.",
        )
        .task_support(TaskSupport::Required)
        .asks_before_task(),
        |ctx, _: NoArgs| name_then_task(ctx),
    ));
    registry.tool(FnTool::new(
        optional("big_result", "Answers `bytes` bytes of text."),
        |_ctx, args: BigArgs| async move { Ok(Output::text("x".repeat(args.bytes))) },
    ));
}

#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    /// Who to greet.
    name: String,
}

#[derive(Deserialize, JsonSchema)]
struct SlowArgs {
    /// How long to work, in seconds.
    #[serde(default)]
    seconds: f64,
    /// A label echoed in the answer.
    #[serde(default)]
    label: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
struct ConfirmArgs {
    /// The file to delete.
    #[serde(default)]
    filename: String,
}

#[derive(Deserialize, JsonSchema)]
struct BigArgs {
    /// How many bytes of text to answer.
    bytes: usize,
}

async fn sleep_then_answer(ctx: Context, args: SlowArgs) -> Result<Output, Error> {
    let seconds = args.seconds.clamp(0.0, 3600.0);
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {}
        () = ctx.cancelled() => return Err(Error::Cancelled),
    }
    let label = args.label.unwrap_or_default();
    Ok(Output::text(format!(
        "computed after {seconds} s ({label})"
    )))
}

fn confirmation(message: String) -> Value {
    json!({
        "message": message,
        "requestedSchema": {
            "type": "object",
            "properties": { "confirm": { "type": "boolean" } },
            "required": ["confirm"],
        },
    })
}

fn accepted(answer: &Value) -> bool {
    answer.get("action").and_then(Value::as_str) == Some("accept")
}

async fn confirm_delete(ctx: Context, args: ConfirmArgs) -> Result<Output, Error> {
    let answer = ctx
        .elicit(confirmation(format!("Delete {}?", args.filename)))
        .await?;
    let confirmed = accepted(&answer)
        && answer
            .pointer("/content/confirm")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    Ok(Output::text(if confirmed {
        format!("Deleted {}", args.filename)
    } else {
        format!("Kept {}", args.filename)
    }))
}

async fn multi_input(ctx: Context) -> Result<Output, Error> {
    let name = json!({
        "message": "Your name?",
        "requestedSchema": {
            "type": "object",
            "properties": { "name": { "type": "string" } },
            "required": ["name"],
        },
    });
    let (first, second) = join(
        ctx.elicit(name),
        ctx.elicit(confirmation("Go ahead?".into())),
    )
    .await;
    let (first, second) = (first?, second?);
    Ok(Output::text(format!(
        "answers: {} and {}",
        first.get("content").cloned().unwrap_or_default(),
        second.get("content").cloned().unwrap_or_default()
    )))
}

async fn name_then_task(ctx: Context) -> Result<Output, Error> {
    let answer = ctx
        .elicit(json!({
            "message": "Your name?",
            "requestedSchema": {
                "type": "object",
                "properties": { "name": { "type": "string" } },
                "required": ["name"],
            },
        }))
        .await?;
    // Asked in an input_required round; the rest runs as a task, which asks nothing again.
    ctx.run_as_task().await?;
    let name = answer
        .pointer("/content/name")
        .and_then(Value::as_str)
        .unwrap_or("whoever you are");
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Output::text(format!("Hello, {name}, from a task!")))
}
