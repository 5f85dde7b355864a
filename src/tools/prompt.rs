//! Prompts: named message templates returned by `prompts/get`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};

use super::{CompleteFn, Context, Error};

/// Builds a prompt's `GetPromptResult` (`messages`, optional `description`) from arguments.
pub type GetFn = Arc<
    dyn Fn(Context, Map<String, Value>) -> BoxFuture<'static, Result<Value, Error>> + Send + Sync,
>;

/// One argument a prompt takes.
#[derive(Debug, Clone)]
pub struct PromptArgument {
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// Whether `prompts/get` must supply it.
    pub required: bool,
}

/// A prompt.
#[derive(Clone)]
pub struct Prompt {
    /// Unique name.
    pub name: String,
    pub(crate) arguments: Vec<PromptArgument>,
    pub(crate) listing: Value,
    pub(crate) get: GetFn,
    pub(crate) complete: Option<CompleteFn>,
}

impl Prompt {
    /// A prompt with a name, description, arguments and builder.
    pub fn new(name: &str, description: &str, arguments: Vec<PromptArgument>, get: GetFn) -> Self {
        let args: Vec<Value> = arguments
            .iter()
            .map(|a| {
                let mut obj = Map::new();
                obj.insert("name".into(), json!(a.name));
                if let Some(d) = &a.description {
                    obj.insert("description".into(), json!(d));
                }
                obj.insert("required".into(), json!(a.required));
                Value::Object(obj)
            })
            .collect();
        let mut listing = json!({ "name": name, "description": description });
        if !args.is_empty() {
            listing["arguments"] = Value::Array(args);
        }
        Self {
            name: name.to_owned(),
            arguments,
            listing,
            get,
            complete: None,
        }
    }

    /// Offers completions for the prompt's arguments.
    pub fn with_completion(mut self, complete: CompleteFn) -> Self {
        self.complete = Some(complete);
        self
    }

    /// The first required argument missing from `args`, if any.
    pub(crate) fn missing_argument(&self, args: &Map<String, Value>) -> Option<&str> {
        self.arguments
            .iter()
            .find(|a| a.required && !args.contains_key(&a.name))
            .map(|a| a.name.as_str())
    }
}
