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
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tool, replacing one of the same name.
    ///
    /// # Panics
    ///
    /// When the tool's input schema carries invalid `x-mcp-header` annotations: clients
    /// would refuse the tool, so the server refuses to start with it.
    pub fn tool<T: Tool>(&mut self, tool: T) -> &mut Self {
        let adapter = Adapter::new(tool).unwrap_or_else(|e| panic!("{e}"));
        let adapter: Arc<dyn DynTool> = Arc::new(adapter);
        self.tools.retain(|t| t.info().name != adapter.info().name);
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

    /// Names of the registered tools, in listing order.
    pub fn tool_names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.info().name.as_str()).collect()
    }
}
