//! Tool parameters mirrored into HTTP headers: a property of a tool's input schema marked
//! `"x-mcp-header": "Region"` travels as `Mcp-Param-Region` on 2026-07-28 requests, and
//! the server checks that the header and the body agree.

use serde_json::{Map, Value};

/// One parameter a tool mirrors into a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderParam {
    /// The full header name, `Mcp-Param-{x-mcp-header}`.
    pub header: String,
    /// The chain of `properties` keys leading to the parameter.
    pub path: Vec<String>,
}

impl HeaderParam {
    /// Checks a header value (already decoded from any base64 form; `None` when absent)
    /// against the call's arguments. The error says what disagrees.
    pub fn check(&self, header: Option<&str>, args: &Map<String, Value>) -> Result<(), String> {
        let mut value = args.get(&self.path[0]);
        for key in &self.path[1..] {
            value = value.and_then(|v| v.get(key));
        }
        let value = value.filter(|v| !v.is_null());
        match (header, value) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(format!("the {} header is required", self.header)),
            (Some(_), None) => Err(format!(
                "the {} header is present but the argument is not",
                self.header
            )),
            (Some(h), Some(v)) => {
                // Optional whitespace around a field value is not part of it (RFC 9110).
                let h = h.trim_matches([' ', '\t']);
                let equal = match v {
                    Value::String(s) => h == s,
                    Value::Bool(b) => h == if *b { "true" } else { "false" },
                    // Integers compare as numbers, so `42.0` matches `42`.
                    Value::Number(n) => h.parse::<f64>().ok() == n.as_f64(),
                    _ => false,
                };
                if equal {
                    return Ok(());
                }
                let body = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                Err(format!(
                    "{} header value '{h}' does not match body value '{body}'",
                    self.header
                ))
            }
        }
    }
}

/// The header parameters of a tool's input schema, or why its annotations are invalid.
pub(crate) fn collect(schema: &Value) -> Result<Vec<HeaderParam>, String> {
    let mut found = Vec::new();
    walk(schema, &mut Vec::new(), &mut found)?;
    // Annotations anywhere but a chain of `properties` (items, anyOf, $ref targets…) are
    // not allowed: every annotation in the schema must have been reached by the walk.
    if count_annotations(schema) != found.len() {
        return Err(
            "x-mcp-header may only annotate properties reachable through `properties` alone".into(),
        );
    }
    let mut names: Vec<String> = found
        .iter()
        .map(|p| p.header.to_ascii_lowercase())
        .collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err("x-mcp-header values must be unique, ignoring case".into());
    }
    Ok(found)
}

fn walk(
    schema: &Value,
    path: &mut Vec<String>,
    found: &mut Vec<HeaderParam>,
) -> Result<(), String> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (key, property) in properties {
        path.push(key.clone());
        if let Some(name) = property.get("x-mcp-header") {
            let name = name
                .as_str()
                .filter(|n| !n.is_empty() && n.bytes().all(is_tchar))
                .ok_or_else(|| format!("x-mcp-header of `{key}` must be a non-empty HTTP token"))?;
            let primitive = is_primitive(property.get("type"));
            if !primitive {
                return Err(format!(
                    "x-mcp-header annotates `{key}`, which is not a string, integer or boolean"
                ));
            }
            found.push(HeaderParam {
                header: format!("Mcp-Param-{name}"),
                path: path.clone(),
            });
        }
        walk(property, path, found)?;
        path.pop();
    }
    Ok(())
}

/// Whether a `type` names a string, integer or boolean (optionally also `null`, the value
/// for which the header is omitted).
fn is_primitive(ty: Option<&Value>) -> bool {
    let allowed = |t: &str| matches!(t, "string" | "integer" | "boolean");
    match ty {
        Some(Value::String(t)) => allowed(t),
        Some(Value::Array(types)) => {
            let named: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            named.len() == types.len()
                && named.iter().any(|t| *t != "null")
                && named.iter().all(|t| *t == "null" || allowed(t))
        }
        _ => false,
    }
}

fn count_annotations(value: &Value) -> usize {
    match value {
        Value::Object(map) => {
            usize::from(map.contains_key("x-mcp-header"))
                + map.values().map(count_annotations).sum::<usize>()
        }
        Value::Array(items) => items.iter().map(count_annotations).sum(),
        _ => 0,
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn collects_nested_properties() {
        let schema = json!({
            "type": "object",
            "properties": {
                "region": { "type": "string", "x-mcp-header": "Region" },
                "opts": { "type": "object", "properties": {
                    "dry": { "type": "boolean", "x-mcp-header": "Dry-Run" }
                }},
                "limit": { "type": ["integer", "null"], "x-mcp-header": "Limit" },
                "query": { "type": "string" }
            }
        });
        let found = collect(&schema).unwrap();
        assert_eq!(found.len(), 3);
        let dry = found
            .iter()
            .find(|p| p.header == "Mcp-Param-Dry-Run")
            .unwrap();
        assert_eq!(dry.path, ["opts", "dry"]);
    }

    #[test]
    fn refuses_invalid_annotations() {
        for schema in [
            json!({"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": ["number", "null"], "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": ["null"], "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "X"},
                                  "b": {"type": "string", "x-mcp-header": "x"}}}),
            json!({"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "I"}}}}),
        ] {
            assert!(collect(&schema).is_err(), "{schema}");
        }
    }

    #[test]
    fn checks_values_by_type() {
        let p = |path: &[&str]| HeaderParam {
            header: "Mcp-Param-X".into(),
            path: path.iter().map(|s| s.to_string()).collect(),
        };
        let a = args(json!({"s": "us-west1", "n": 42, "b": true, "o": {"d": false}, "z": null}));
        assert!(p(&["s"]).check(Some("us-west1"), &a).is_ok());
        assert!(p(&["s"]).check(Some(" us-west1 "), &a).is_ok());
        assert!(p(&["s"]).check(Some("eu"), &a).is_err());
        assert!(p(&["s"]).check(None, &a).is_err());
        assert!(p(&["n"]).check(Some("42.0"), &a).is_ok());
        assert!(p(&["n"]).check(Some("43"), &a).is_err());
        assert!(p(&["b"]).check(Some("true"), &a).is_ok());
        assert!(p(&["o", "d"]).check(Some("false"), &a).is_ok());
        assert!(p(&["z"]).check(None, &a).is_ok());
        assert!(p(&["missing"]).check(None, &a).is_ok());
        assert!(p(&["missing"]).check(Some("x"), &a).is_err());
    }
}
