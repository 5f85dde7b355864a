//! The smallest mcp-fleet server: one typed tool, one resource, one prompt, with the whole
//! mcp-fleet command line. `cargo run --example quickstart -- dev` serves it on
//! 127.0.0.1:8080 (add `--auth dev` for a development issuer and a token).

use mcp_fleet::tools::{Context, Error, Output, Prompt, PromptArgument, Resource, Tool, ToolInfo};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

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
        let greeting = format!("Hello, {}, from {}!", args.name, ctx.principal().subject);
        Ok(Output::text(greeting))
    }
}

fn main() -> std::process::ExitCode {
    let topic = PromptArgument {
        name: "topic".into(),
        description: Some("What the haiku is about.".into()),
        required: true,
    };
    let haiku = Prompt::new(
        "haiku",
        "Asks for a haiku.",
        vec![topic],
        std::sync::Arc::new(|_, args| {
            let topic = args
                .get("topic")
                .and_then(Value::as_str)
                .unwrap_or("the sea");
            let text = format!("Write a haiku about {topic}.");
            let message = json!({ "role": "user", "content": { "type": "text", "text": text } });
            Box::pin(async move { Ok(json!({ "messages": [message] })) })
        }),
    );
    let readme = Resource::text("docs://readme", "readme", "text/plain", "Try `greet`.");
    mcp_fleet::App::new("quickstart", env!("CARGO_PKG_VERSION"))
        .tool(Greet)
        .resource(readme)
        .prompt(haiku)
        .run()
}
