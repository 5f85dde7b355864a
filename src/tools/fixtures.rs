//! Fixtures for the project's own tests of failure handling, served with the conformance
//! pack (`--conformance`): a tool that panics and a tool that sleeps.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Context, Error, NoArgs, Output, Registry, Tool, ToolInfo};

pub(super) fn register(registry: &mut Registry) {
    registry.tool(Panic).tool(Sleep);
}

/// Panics on every call, to show a panic is contained and reported.
struct Panic;

impl Tool for Panic {
    type Args = NoArgs;

    fn info(&self) -> ToolInfo {
        ToolInfo::new(
            "test_panic",
            "Panics, to test that a failing tool is contained.",
        )
    }

    async fn call(&self, _ctx: Context, _args: NoArgs) -> Result<Output, Error> {
        panic!("test_panic was called");
    }
}

/// Arguments of `test_sleep`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    /// How long to sleep, in milliseconds.
    ms: u64,
}

/// Sleeps, to test timeouts, cancellation and concurrency limits.
struct Sleep;

impl Tool for Sleep {
    type Args = SleepArgs;

    fn info(&self) -> ToolInfo {
        ToolInfo::new(
            "test_sleep",
            "Sleeps for `ms` milliseconds, then answers \"slept\".",
        )
    }

    async fn call(&self, ctx: Context, args: SleepArgs) -> Result<Output, Error> {
        // Sent only when the caller asked for progress; it shows the call has started.
        ctx.progress(0.0, None, Some("sleeping"));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(args.ms)) => Ok(Output::text("slept")),
            () = ctx.cancelled() => Err(Error::Cancelled),
        }
    }
}
