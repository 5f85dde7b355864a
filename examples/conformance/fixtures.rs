//! Fixtures for the project's own tests, served with the conformance packs: a tool that
//! panics, a tool that sleeps, a tool whose parameters are mirrored into `Mcp-Param-*`
//! headers, a tool that announces a resource update, and a tool that calls an upstream API
//! with a token for it (`ctx.http()`, `ctx.token_for`).

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use mcp_fleet::tools::{Context, Error, FnTool, NoArgs, Output, Registry, Tool, ToolInfo};

pub fn register(registry: &mut Registry) {
    super::fixtures_storage::register(registry);
    registry
        .tool(Panic)
        .tool(Sleep)
        .tool(Mirrored)
        .tool(UpstreamCall)
        .tool(FnTool::new(
            ToolInfo::new(
                "test_update_resource",
                "Announces that the resource at `uri` changed, as a writer of it would.",
            ),
            |ctx: Context, args: UpdateArgs| async move {
                ctx.resource_updated(&args.uri);
                Ok(Output::text(format!("announced {}", args.uri)))
            },
        ));
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

/// Arguments of `test_mirrored_params`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MirroredArgs {
    /// A region, mirrored into `Mcp-Param-Region`.
    #[schemars(extend("x-mcp-header" = "Region"))]
    region: String,
    /// A limit, mirrored into `Mcp-Param-Limit` when given.
    #[schemars(extend("x-mcp-header" = "Limit"))]
    limit: Option<i64>,
}

/// Echoes parameters that clients mirror into headers (2026-07-28 `x-mcp-header`).
struct Mirrored;

impl Tool for Mirrored {
    type Args = MirroredArgs;

    fn info(&self) -> ToolInfo {
        ToolInfo::new(
            "test_mirrored_params",
            "Returns its region and limit; both travel in Mcp-Param-* headers too.",
        )
    }

    async fn call(&self, _ctx: Context, args: MirroredArgs) -> Result<Output, Error> {
        let limit = args
            .limit
            .map_or_else(|| "none".to_owned(), |l| l.to_string());
        Ok(Output::text(format!(
            "region={}, limit={limit}",
            args.region
        )))
    }
}

/// Arguments of `test_update_resource`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateArgs {
    /// The resource that changed.
    uri: String,
}

/// Arguments of `test_upstream_call`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpstreamArgs {
    /// The URL to `GET`.
    url: String,
    /// When given, the request carries a token for this audience, from `ctx.token_for`.
    audience: Option<String>,
}

/// Calls an upstream API on the caller's behalf, as a team's tool would.
struct UpstreamCall;

impl Tool for UpstreamCall {
    type Args = UpstreamArgs;

    fn info(&self) -> ToolInfo {
        ToolInfo::new(
            "test_upstream_call",
            "GETs `url` with the shared HTTP client, carrying a token for `audience` when \
             given; answers the status and the body.",
        )
    }

    async fn call(&self, ctx: Context, args: UpstreamArgs) -> Result<Output, Error> {
        let mut request = ctx.http().get(&args.url);
        if let Some(audience) = &args.audience {
            request = request.bearer(&ctx.token_for(audience).await?);
        }
        let response = request.send().await?;
        Ok(Output::text(format!(
            "status {}: {}",
            response.status(),
            response.text()
        )))
    }
}
