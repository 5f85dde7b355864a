//! Resources: fixed URIs and URI templates, read by `resources/read`.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::{CompleteFn, Context, Error};

/// Reads a resource: given the URI and the template's variables, returns `contents`.
pub type ReadFn = Arc<
    dyn Fn(
            Context,
            String,
            HashMap<String, String>,
        ) -> BoxFuture<'static, Result<Vec<Value>, Error>>
        + Send
        + Sync,
>;

/// A resource with a fixed URI.
#[derive(Clone)]
pub struct Resource {
    /// Its URI.
    pub uri: String,
    pub(crate) listing: Value,
    pub(crate) read: ReadFn,
}

impl Resource {
    /// A resource whose listing is `listing` (must hold `uri` and `name`) and that `read` serves.
    pub fn new(listing: Value, read: ReadFn) -> Self {
        let uri = listing["uri"].as_str().unwrap_or_default().to_owned();
        Self { uri, listing, read }
    }

    /// A resource that always reads as the same text.
    pub fn text(uri: &str, name: &str, mime_type: &str, text: &str) -> Self {
        let contents = json!({ "uri": uri, "mimeType": mime_type, "text": text });
        Self::new(
            json!({ "uri": uri, "name": name, "mimeType": mime_type }),
            Arc::new(move |_, _, _| {
                let contents = contents.clone();
                Box::pin(async move { Ok(vec![contents]) })
            }),
        )
    }
}

/// A family of resources named by an RFC 6570 level-1 URI template (`test://items/{id}`).
#[derive(Clone)]
pub struct ResourceTemplate {
    pub(crate) listing: Value,
    pattern: Vec<Segment>,
    pub(crate) read: ReadFn,
    pub(crate) complete: Option<CompleteFn>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Var(String),
}

impl ResourceTemplate {
    /// A template whose listing is `listing` (must hold `uriTemplate` and `name`).
    pub fn new(listing: Value, read: ReadFn) -> Self {
        let template = listing["uriTemplate"].as_str().unwrap_or_default();
        Self {
            pattern: parse_template(template),
            listing,
            read,
            complete: None,
        }
    }

    /// Offers completions for the template's variables.
    pub fn with_completion(mut self, complete: CompleteFn) -> Self {
        self.complete = Some(complete);
        self
    }

    /// The template string.
    pub fn uri_template(&self) -> &str {
        self.listing["uriTemplate"].as_str().unwrap_or_default()
    }

    /// The variables, when `uri` matches this template.
    pub fn matches(&self, uri: &str) -> Option<HashMap<String, String>> {
        let mut vars = HashMap::new();
        let mut rest = uri;
        let mut segments = self.pattern.iter().peekable();
        while let Some(seg) = segments.next() {
            match seg {
                Segment::Literal(lit) => rest = rest.strip_prefix(lit.as_str())?,
                Segment::Var(name) => {
                    let end = match segments.peek() {
                        Some(Segment::Literal(next)) => rest.find(next.as_str())?,
                        _ => rest.len(),
                    };
                    let value = &rest[..end];
                    if value.is_empty() || value.contains('/') {
                        return None;
                    }
                    vars.insert(name.clone(), value.to_owned());
                    rest = &rest[end..];
                }
            }
        }
        rest.is_empty().then_some(vars)
    }
}

fn parse_template(template: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        if start > 0 {
            out.push(Segment::Literal(rest[..start].to_owned()));
        }
        match rest[start..].find('}') {
            Some(len) => {
                out.push(Segment::Var(rest[start + 1..start + len].to_owned()));
                rest = &rest[start + len + 1..];
            }
            None => {
                out.push(Segment::Literal(rest[start..].to_owned()));
                rest = "";
            }
        }
    }
    if !rest.is_empty() {
        out.push(Segment::Literal(rest.to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(t: &str) -> ResourceTemplate {
        ResourceTemplate::new(
            json!({ "uriTemplate": t, "name": "t" }),
            Arc::new(|_, _, _| Box::pin(async { Ok(vec![]) })),
        )
    }

    #[test]
    fn matches_variables() {
        let t = template("test://template/{id}/data");
        let vars = t.matches("test://template/42/data").unwrap();
        assert_eq!(vars["id"], "42");
        assert!(t.matches("test://template//data").is_none());
        assert!(t.matches("test://template/4/2/data").is_none());
        assert!(t.matches("test://template/42/data/x").is_none());
        let t = template("file:///{path}");
        assert_eq!(t.matches("file:///a.txt").unwrap()["path"], "a.txt");
    }
}
