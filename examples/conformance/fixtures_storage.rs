//! Test fixtures that reach tenant secrets and tool state, served with the conformance
//! pack: `test_secret` answers with the caller's tenant's secret, `test_state` reads,
//! writes and deletes the caller's (or tenant's) state. Self-contained, to move with the
//! other fixtures to `examples/`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use mcp_fleet::tools::{Context, Error, FnTool, Output, Registry, ToolInfo};

/// Registers `test_secret` and `test_state`.
pub fn register(registry: &mut Registry) {
    registry
        .tool(FnTool::new(
            ToolInfo::new(
                "test_secret",
                "Answers with the caller's tenant's secret `name` (a test fixture: real tools \
                 never echo a secret).",
            ),
            |ctx: Context, args: SecretArgs| async move {
                let secret = ctx.secret(&args.name).await?;
                Ok(Output::text(secret.expose()))
            },
        ))
        .tool(FnTool::new(
            ToolInfo::new(
                "test_state",
                "Gets, sets or deletes `key` in this tool's state for the caller (or the \
                 caller's tenant with `tenant: true`); answers with the value as JSON, \
                 `null` when absent.",
            ),
            |ctx: Context, args: StateArgs| async move {
                let state = if args.tenant {
                    ctx.state().tenant()
                } else {
                    ctx.state()
                };
                let answer = match args.op {
                    StateOp::Get => state.get::<Value>(&args.key).await?.unwrap_or(Value::Null),
                    StateOp::Set => {
                        let value = args
                            .value
                            .ok_or_else(|| Error::InvalidArguments("set needs a value".into()))?;
                        state.set(&args.key, &value).await?;
                        value
                    }
                    StateOp::Delete => Value::Bool(state.delete(&args.key).await?),
                    // The design not taken, for `cargo bench --bench state`.
                    StateOp::SetMajority => {
                        let value = args
                            .value
                            .ok_or_else(|| Error::InvalidArguments("set needs a value".into()))?;
                        state.set_majority_only(&args.key, &value).await?;
                        value
                    }
                    StateOp::GetBarrier => state
                        .get_after_barrier::<Value>(&args.key)
                        .await?
                        .unwrap_or(Value::Null),
                };
                Ok(Output::text(answer.to_string()))
            },
        ));
}

/// Arguments of `test_secret`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SecretArgs {
    /// The secret's name.
    name: String,
}

/// What `test_state` does.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum StateOp {
    Get,
    Set,
    Delete,
    /// A write acknowledged by a majority only (benchmark of the design not taken).
    SetMajority,
    /// A read after a read barrier (benchmark of the design not taken).
    GetBarrier,
}

/// Arguments of `test_state`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StateArgs {
    /// What to do.
    op: StateOp,
    /// The key.
    key: String,
    /// The value to set.
    #[serde(default)]
    value: Option<Value>,
    /// The caller's tenant's state rather than the caller's own.
    #[serde(default)]
    tenant: bool,
}
