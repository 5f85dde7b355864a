//! The smallest mcp-fleet server: one typed tool, one resource, one prompt, and the whole
//! mcp-fleet command line (`dev`, `serve`, `stdio`, `cluster …`, `keys …`).
//!
//! ```text
//! cargo run --example quickstart -- dev            # a node of one on 127.0.0.1:8080
//! cargo run --example quickstart -- dev --auth dev # with a development issuer and token
//! ```

use std::sync::Arc;

use mcp_fleet::tools::{Context, Error, Output, Prompt, PromptArgument, Resource, Tool, ToolInfo};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

/// Arguments of `greet`; the doc comments become the schema's descriptions.
#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    /// Whom to greet.
    name: String,
}

/// `greet`: greets someone on behalf of the caller.
struct Greet;

impl Tool for Greet {
    type Args = GreetArgs;

    fn info(&self) -> ToolInfo {
        ToolInfo::new("greet", "Greets someone on behalf of the caller.")
    }

    async fn call(&self, ctx: Context, args: GreetArgs) -> Result<Output, Error> {
        let caller = &ctx.principal().subject;
        Ok(Output::text(format!(
            "Hello, {}! (from {caller})",
            args.name
        )))
    }
}

fn main() -> std::process::ExitCode {
    let topic = PromptArgument {
        name: "topic".into(),
        description: Some("What to write about.".into()),
        required: true,
    };
    let haiku = Prompt::new(
        "haiku",
        "Asks for a haiku.",
        vec![topic],
        Arc::new(|_ctx, args| {
            let topic = args
                .get("topic")
                .and_then(|t| t.as_str())
                .unwrap_or("the sea")
                .to_owned();
            let text = format!("Write a haiku about {topic}.");
            Box::pin(async move {
                Ok(
                    json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": text } }] }),
                )
            })
        }),
    );
    let readme = Resource::text(
        "docs://readme",
        "readme",
        "text/plain",
        "Say hello with `greet`.",
    );
    mcp_fleet::App::new("quickstart", env!("CARGO_PKG_VERSION"))
        .tool(Greet)
        .resource(readme)
        .prompt(haiku)
        .run()
}
