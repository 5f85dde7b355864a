//! The registry of tools, resources and prompts one server offers, and their limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::tool::Adapter;
use super::{DynTool, Prompt, Resource, ResourceTemplate, Tool};

/// How many calls of one tool may run at once, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Calls running at once; more wait their turn.
    pub concurrency: usize,
    /// A call running longer is stopped and reported as timed out.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            concurrency: 64,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Tool limits: a default and per-tool overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Limits for tools without an override.
    pub default: Limits,
    /// Overrides by tool name.
    pub per_tool: HashMap<String, Limits>,
    /// The HTTP client tools share (`ctx.http()`): `[tools.http]`.
    pub http: super::HttpConfig,
}

impl Config {
    /// The limits for `tool`.
    pub fn limits(&self, tool: &str) -> Limits {
        self.per_tool.get(tool).copied().unwrap_or(self.default)
    }
}

/// Everything a server offers.
#[derive(Default, Clone)]
pub struct Registry {
    pub(crate) tools: Vec<Arc<dyn DynTool>>,
    pub(crate) resources: Vec<Resource>,
    pub(crate) templates: Vec<ResourceTemplate>,
    pub(crate) prompts: Vec<Prompt>,
    /// Where each tool came from (its Rust type), to name both sides of a duplicate.
    origins: HashMap<String, &'static str>,
    /// Tools registered under a name already taken; refused when a server starts.
    duplicates: Vec<Duplicate>,
}

/// A tool name registered twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The name both tools claim.
    pub name: String,
    /// The type registered first.
    pub first: &'static str,
    /// The type registered second.
    pub second: &'static str,
}

/// Why a registry cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Two tools claim one name: a client could not tell which one it calls.
    #[error("{}", describe(.0))]
    DuplicateTools(Vec<Duplicate>),
}

fn describe(duplicates: &[Duplicate]) -> String {
    let each: Vec<String> = duplicates
        .iter()
        .map(|d| {
            format!(
                "tool `{}` is registered twice: by {} and by {}",
                d.name, d.first, d.second
            )
        })
        .collect();
    each.join("; ")
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tool. A second tool of a name already registered is kept out, and
    /// [`Registry::check`] (run when a server starts) refuses the registry, naming both.
    ///
    /// # Panics
    ///
    /// When the tool's input schema carries invalid `x-mcp-header` annotations: clients
    /// would refuse the tool, so the server refuses to start with it.
    pub fn tool<T: Tool>(&mut self, tool: T) -> &mut Self {
        let adapter = Adapter::new(tool).unwrap_or_else(|e| panic!("{e}"));
        let adapter: Arc<dyn DynTool> = Arc::new(adapter);
        let name = adapter.info().name.clone();
        let origin = std::any::type_name::<T>();
        if let Some(first) = self.origins.get(&name) {
            self.duplicates.push(Duplicate {
                name,
                first,
                second: origin,
            });
            return self;
        }
        self.origins.insert(name, origin);
        self.tools.push(adapter);
        // Deterministic order for `tools/list`, whatever the registration order.
        self.tools.sort_by(|a, b| a.info().name.cmp(&b.info().name));
        self
    }

    /// Adds a resource.
    pub fn resource(&mut self, resource: Resource) -> &mut Self {
        self.resources.retain(|r| r.uri != resource.uri);
        self.resources.push(resource);
        self
    }

    /// Adds a resource template.
    pub fn resource_template(&mut self, template: ResourceTemplate) -> &mut Self {
        self.templates.push(template);
        self
    }

    /// Adds a prompt.
    pub fn prompt(&mut self, prompt: Prompt) -> &mut Self {
        self.prompts.retain(|p| p.name != prompt.name);
        self.prompts.push(prompt);
        self
    }

    /// Refuses a registry a server cannot offer: two tools of one name.
    pub fn check(&self) -> Result<(), RegistryError> {
        if self.duplicates.is_empty() {
            Ok(())
        } else {
            Err(RegistryError::DuplicateTools(self.duplicates.clone()))
        }
    }

    /// A digest of what `tools/list`, `resources/list`, `resources/templates/list` and
    /// `prompts/list` show (64 hex characters): nodes serving the same offer agree on it.
    pub(crate) fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut resources: Vec<&serde_json::Value> =
            self.resources.iter().map(|r| &r.listing).collect();
        resources.sort_by_key(|r| r["uri"].to_string());
        let mut templates: Vec<&serde_json::Value> =
            self.templates.iter().map(|t| &t.listing).collect();
        templates.sort_by_key(|t| t["uriTemplate"].to_string());
        let mut prompts: Vec<&serde_json::Value> =
            self.prompts.iter().map(|p| &p.listing).collect();
        prompts.sort_by_key(|p| p["name"].to_string());
        let tools: Vec<&serde_json::Value> = self.tools.iter().map(|t| t.listing()).collect();
        let offer = serde_json::json!({
            "tools": tools,
            "resources": resources,
            "resourceTemplates": templates,
            "prompts": prompts,
        });
        hex::encode(Sha256::digest(offer.to_string().as_bytes()))
    }

    /// A digest of what `tools/list` shows (64 hex characters): a legacy session records
    /// the one it last listed, so another node can tell whether its tools differ.
    pub(crate) fn tools_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let tools: Vec<&serde_json::Value> = self.tools.iter().map(|t| t.listing()).collect();
        hex::encode(Sha256::digest(
            serde_json::json!(tools).to_string().as_bytes(),
        ))
    }

    /// Names of the registered tools, in listing order.
    pub fn tool_names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.info().name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{Context, Error, NoArgs, Output, ToolInfo};

    struct First;
    struct Second;

    impl Tool for First {
        type Args = NoArgs;
        fn info(&self) -> ToolInfo {
            ToolInfo::new("same", "The first.")
        }
        async fn call(&self, _ctx: Context, _args: NoArgs) -> Result<Output, Error> {
            Ok(Output::text("first"))
        }
    }

    impl Tool for Second {
        type Args = NoArgs;
        fn info(&self) -> ToolInfo {
            ToolInfo::new("same", "The second.")
        }
        async fn call(&self, _ctx: Context, _args: NoArgs) -> Result<Output, Error> {
            Ok(Output::text("second"))
        }
    }

    #[test]
    fn a_tool_name_registered_twice_is_refused_naming_both_registrations() {
        let mut registry = Registry::new();
        registry.tool(First).tool(Second);
        let error = registry
            .check()
            .expect_err("a duplicate is refused")
            .to_string();
        assert!(error.contains("tool `same` is registered twice"), "{error}");
        assert!(
            error.contains("First") && error.contains("Second"),
            "{error}"
        );
    }

    #[test]
    fn the_digest_changes_with_the_offer_and_not_with_registration_order() {
        let mut one = Registry::new();
        one.tool(First)
            .resource(crate::tools::Resource::text(
                "a://1",
                "one",
                "text/plain",
                "1",
            ))
            .resource(crate::tools::Resource::text(
                "a://2",
                "two",
                "text/plain",
                "2",
            ));
        let mut other = Registry::new();
        other
            .resource(crate::tools::Resource::text(
                "a://2",
                "two",
                "text/plain",
                "2",
            ))
            .resource(crate::tools::Resource::text(
                "a://1",
                "one",
                "text/plain",
                "1",
            ))
            .tool(First);
        assert_eq!(one.digest(), other.digest());
        let mut fewer = Registry::new();
        fewer.tool(First);
        assert_ne!(one.digest(), fewer.digest());
        assert_eq!(one.digest().len(), 64);
    }

    #[test]
    fn distinct_tool_names_pass_the_check() {
        let mut registry = Registry::new();
        registry.tool(First);
        registry.check().expect("one tool of each name");
    }
}
