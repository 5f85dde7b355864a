//! Built-in tools every server offers: `whoami` and `echo`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{Context, Error, NoArgs, Output, Registry, Tool, ToolInfo};

/// Registers `whoami` and `echo`.
pub fn register(registry: &mut Registry) {
    registry.tool(WhoAmI).tool(Echo);
}

/// `whoami`: returns the caller's principal and tenant.
pub struct WhoAmI;

impl Tool for WhoAmI {
    type Args = NoArgs;

    fn info(&self) -> ToolInfo {
        ToolInfo::new(
            "whoami",
            "Returns the authenticated caller: subject, tenant, email and scopes.",
        )
        .title("Who am I")
        .annotations(
            json!({ "readOnlyHint": true, "idempotentHint": true, "openWorldHint": false }),
        )
        .output_schema(json!({
            "type": "object",
            "properties": {
                "subject": { "type": "string" },
                "tenant": { "type": ["string", "null"] },
                "email": { "type": ["string", "null"] },
                "scopes": { "type": "array", "items": { "type": "string" } }
            },
            "required": ["subject", "tenant", "email", "scopes"]
        }))
    }

    async fn call(&self, ctx: Context, _args: NoArgs) -> Result<Output, Error> {
        let p = ctx.principal();
        let structured = json!({
            "subject": p.subject, "tenant": p.tenant, "email": p.email, "scopes": p.scopes,
        });
        let tenant = p.tenant.as_deref().unwrap_or("none");
        Ok(
            Output::text(format!("subject: {}, tenant: {tenant}", p.subject))
                .structured(structured),
        )
    }
}

/// Arguments of `echo`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EchoArgs {
    /// The text to send back.
    pub text: String,
}

/// `echo`: returns its input.
pub struct Echo;

impl Tool for Echo {
    type Args = EchoArgs;

    fn info(&self) -> ToolInfo {
        ToolInfo::new("echo", "Returns the given text unchanged.")
            .title("Echo")
            .annotations(
                json!({ "readOnlyHint": true, "idempotentHint": true, "openWorldHint": false }),
            )
    }

    async fn call(&self, _ctx: Context, args: EchoArgs) -> Result<Output, Error> {
        Ok(Output::text(args.text))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::tools::Silent;

    fn context() -> Context {
        Context::for_test(Arc::new(Silent), json!({}), None, None)
    }

    #[tokio::test]
    async fn echo_returns_its_text_unchanged() {
        let args = EchoArgs {
            text: "hello, fleet".into(),
        };
        let output = Echo.call(context(), args).await.expect("echo answers");
        assert_eq!(output.to_value()["content"][0]["text"], "hello, fleet");
    }

    #[tokio::test]
    async fn whoami_names_the_anonymous_caller_without_a_tenant() {
        let output = WhoAmI
            .call(context(), NoArgs {})
            .await
            .expect("whoami answers");
        let structured = &output.to_value()["structuredContent"];
        assert_eq!(structured["tenant"], Value::Null);
        assert!(structured["scopes"].is_array(), "{structured}");
    }
}
