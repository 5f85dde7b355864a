//! A team's tool that calls its own HTTP API on behalf of the caller: `create_requirement`
//! files a requirement in the caller's tenant at the team's requirements API, the way a
//! SaaS vendor's MCP server acts for each customer's users. It shows the four things a
//! tool gets from the fleet, each answering the same on every node:
//!
//! - `ctx.secret("api_key")`: the caller's tenant's API key, set by an operator with
//!   `tenant_api secrets set --via HOST:PORT --tenant acme --name api_key < key.txt`
//!   (the same `secrets` command as `mcp-fleet`). Sent as `X-Api-Key`. A tenant without
//!   one gets a tool error naming the missing secret.
//! - `ctx.token_for(audience)`: a token for the API naming the caller, obtained by token
//!   exchange at the caller's issuer and reused by every node until shortly before it
//!   expires; never the caller's own token. Sent as the bearer token.
//! - `ctx.http()`: the shared client, with its timeouts, response cap and request id.
//! - `ctx.state()`: how many requirements the caller filed through this server and the
//!   last one's id, returned with each result, read back the same from any node.
//!
//! The API's contract: `POST {ACME_API_URL}/requirements` with `{"title", "description"}`
//! answers `201 {"id": "…", …}`; any other status is a tool error carrying the API's
//! message. The server reads the API's base URL from `ACME_API_URL` and the audience to
//! ask tokens for from `ACME_API_AUDIENCE` (default: the URL); everything else is the
//! mcp-fleet command line and configuration. Token exchange needs a caller token, so run
//! it authenticated, against an issuer that may exchange tokens for the API's audience:
//!
//! ```sh
//! cat > tenant_api.toml <<'EOF'
//! [auth]
//! mode = "jwt"
//! [[auth.issuers]]
//! issuer = "https://login.acme.example/"
//! preset = "workos"                # the caller's tenant is the token's org_id
//! [auth.issuers.token_exchange]
//! client_id = "mcp-fleet"
//! client_secret = "…"
//! EOF
//! export MCP_FLEET_CLUSTER_SECRET=$(openssl rand -hex 32)    # for `secrets` below
//! ACME_API_URL=https://api.acme.example cargo run --example tenant_api -- \
//!   dev --config tenant_api.toml
//! # In another shell, with the same MCP_FLEET_CLUSTER_SECRET and the internal listener
//! # `dev` printed on its second line:
//! cargo run --example tenant_api -- secrets set --via 127.0.0.1:PORT \
//!   --tenant acme --name api_key < acme-key.txt
//! ```
//!
//! A fleet runs the same binary with `serve` (see the README's "Running a fleet"). Under
//! `--auth none` the caller has no tenant and no token, so every call is a tool error
//! saying so. The built-ins `whoami` (which tenant a token belongs to) and `echo` come along.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use mcp_fleet::tools::builtin::{Echo, WhoAmI};
use mcp_fleet::tools::{Context, Error, Output, Tool, ToolInfo};

/// The tenant secret holding the tenant's key for the API.
const API_KEY: &str = "api_key";
/// The state key of what the caller filed so far.
const FILED: &str = "filed";
/// The most of an API's error body quoted back to the model.
const MAX_QUOTED: usize = 300;

/// Where the team's API is, from the environment at start.
#[derive(Clone)]
struct Api {
    /// Base URL, without a trailing `/`; `None` when `ACME_API_URL` is not set.
    url: Option<String>,
    /// The audience the caller's issuer knows the API as.
    audience: String,
}

impl Api {
    fn from_env() -> Self {
        let url = std::env::var("ACME_API_URL")
            .ok()
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty());
        let audience = std::env::var("ACME_API_AUDIENCE")
            .ok()
            .or_else(|| url.clone())
            .unwrap_or_default();
        Self { url, audience }
    }
}

/// Arguments of `create_requirement`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    /// A one-line summary of the requirement.
    title: String,
    /// The details, if any.
    #[serde(default)]
    description: Option<String>,
}

/// What the API answers to a created requirement (other fields are ignored).
#[derive(Deserialize)]
struct Created {
    id: String,
}

/// What this server remembers per caller: how many requirements they filed, and the last.
#[derive(Default, Serialize, Deserialize)]
struct Filed {
    count: u64,
    last_id: Option<String>,
}

/// `create_requirement`: files a requirement at the team's API as the caller.
struct CreateRequirement {
    api: Api,
}

impl Tool for CreateRequirement {
    type Args = CreateArgs;

    fn info(&self) -> ToolInfo {
        ToolInfo::new(
            "create_requirement",
            "Files a requirement in your organisation's requirements tracker, as you. \
             Answers its id and how many you have filed through this server.",
        )
        .title("Create requirement")
        .annotations(json!({ "readOnlyHint": false, "openWorldHint": true }))
        .output_schema(json!({
            "type": "object",
            "properties": {
                "id": { "type": "string" },
                "title": { "type": "string" },
                "filed_by_you": { "type": "integer" },
                "previous_id": { "type": ["string", "null"] }
            },
            "required": ["id", "title", "filed_by_you", "previous_id"]
        }))
    }

    async fn call(&self, ctx: Context, args: CreateArgs) -> Result<Output, Error> {
        let Some(base) = &self.api.url else {
            return Err(Error::Failed(
                "this server has no requirements API configured (ACME_API_URL)".into(),
            ));
        };
        // The tenant's key first: a tenant without one gets a clear error and costs no
        // token exchange.
        let key = ctx.secret(API_KEY).await?;
        let token = ctx.token_for(&self.api.audience).await?;
        let response = ctx
            .http()
            .post(&format!("{base}/requirements"))
            .bearer(&token)
            .secret_header("x-api-key", key.expose())
            .json(&json!({ "title": args.title, "description": args.description }))
            .send()
            .await?;
        if !response.is_success() {
            return Err(Error::Failed(format!(
                "the requirements API refused the request (HTTP {}): {}",
                response.status(),
                api_message(&response.text())
            )));
        }
        let created: Created = response.json()?;

        // Read, then write: two calls at once by one caller may count one. A convenience
        // counter can live with that; anything that must not should be kept by the API.
        let state = ctx.state();
        let before: Filed = state.get(FILED).await?.unwrap_or_default();
        let now = Filed {
            count: before.count + 1,
            last_id: Some(created.id.clone()),
        };
        state.set(FILED, &now).await?;

        let text = format!(
            "Created {} \"{}\"; you have filed {} through this server.",
            created.id, args.title, now.count
        );
        Ok(Output::text(text).structured(json!({
            "id": created.id,
            "title": args.title,
            "filed_by_you": now.count,
            "previous_id": before.last_id,
        })))
    }
}

/// The API's own message from an error body (`{"error": "…"}`, or the text), shortened.
fn api_message(body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    match message.char_indices().nth(MAX_QUOTED) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message,
    }
}

fn main() -> std::process::ExitCode {
    mcp_fleet::App::new("tenant-api", env!("CARGO_PKG_VERSION"))
        .tool(CreateRequirement {
            api: Api::from_env(),
        })
        .tool(WhoAmI)
        .tool(Echo)
        .run()
}
