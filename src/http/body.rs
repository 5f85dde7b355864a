//! Reading and parsing a request body, within the caps on its size, the time it takes
//! to arrive, and the memory it takes once parsed.
//!
//! Parsed JSON can take far more memory than its text: each object is a B-tree whose
//! first node takes 632 bytes, so a 4 MiB body of `{"a":1}` objects parses into 349 MB
//! (measured). [`parse`] builds the same `serde_json::Value` as `serde_json::from_slice`
//! while charging each value what it will take, and stops once `http.max_parsed_body_bytes`
//! is spent, before the memory is taken.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::HttpRequest;
use futures_util::StreamExt;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::mcp::header;

/// Why a body could not be read.
pub(super) enum ReadError {
    /// Over `http.max_body_bytes`.
    TooLarge,
    /// The connection failed while the body arrived.
    Broken,
    /// Not all of it arrived within `http.body_read_timeout`.
    TimedOut,
}

/// Reads a request body of at most `limit` bytes, all of it within `timeout`: a client
/// trickling its body would otherwise hold the connection (and the handler) for ever.
pub(super) async fn read(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ReadError> {
    let declared = header(req, CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge);
    }
    let read = async {
        let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| ReadError::Broken)?;
            if body.len() + chunk.len() > limit {
                return Err(ReadError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(ReadError::TimedOut))
}

/// Why a body could not be parsed.
#[derive(Debug)]
pub(super) enum ParseError {
    /// Not JSON.
    Syntax(serde_json::Error),
    /// JSON that would take more than the budget once parsed.
    OverBudget,
}

/// Parses `body` as JSON, refusing it once the parsed value would take more than `budget`
/// bytes (by the same estimate the session tier weighs capabilities with).
pub(super) fn parse(body: &[u8], budget: usize) -> Result<Value, ParseError> {
    let left = Budget {
        left: Cell::new(budget),
        exceeded: Cell::new(false),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = Charged(&left)
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        Err(_) if left.exceeded.get() => Err(ParseError::OverBudget),
        Err(e) => Err(ParseError::Syntax(e)),
    }
}

/// Bytes of the inline part of every JSON value.
const VALUE: usize = std::mem::size_of::<Value>();
/// Bytes of one node of an object's B-tree (up to 11 entries).
const NODE: usize = 632;

struct Budget {
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

impl Budget {
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        match self.left.get().checked_sub(bytes) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom(
                    "the request body takes too much memory once parsed",
                ))
            }
        }
    }
}

/// Builds a `Value` exactly as serde_json does, charging the budget as it goes.
#[derive(Clone, Copy)]
struct Charged<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for Charged<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Charged<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.charge(VALUE)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.charge(VALUE)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.charge(VALUE)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.charge(VALUE)?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.charge(VALUE + v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.charge(VALUE + v.len())?;
        Ok(Value::String(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.charge(VALUE)?;
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.charge(VALUE)?;
        let mut items = Vec::new();
        // Each element charges its own inline part, which is what it takes in the Vec.
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.charge(VALUE)?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // The first node when the first entry arrives, then another about every six
            // entries (nodes past the first are about half full), as `json_heap` weighs.
            let node = match object.len() {
                0 => NODE,
                n if n >= 11 && n % 6 == 0 => NODE,
                _ => 0,
            };
            self.0.charge(node + key.len())?;
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_serde_json_does() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
            r#"[1, -2, 3.5, 1e300, true, false, null, "s\u00e9", {"a": {"b": []}}, {"k": 1, "k": 2}]"#,
            "18446744073709551615",
            "  \"x\"  ",
        ] {
            let ours = parse(text.as_bytes(), 1 << 20).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
        for bad in ["{", "[1,]", "{} {}", "", "nul"] {
            assert!(
                matches!(parse(bad.as_bytes(), 1 << 20), Err(ParseError::Syntax(_))),
                "{bad}"
            );
        }
        // serde_json's nesting limit still holds.
        let deep = "[".repeat(10_000);
        assert!(matches!(
            parse(deep.as_bytes(), usize::MAX),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn a_body_of_small_objects_is_refused_before_it_takes_its_memory() {
        // 100 KB of `{"a":1}` objects: about 8.3 MB once parsed (83 times its text).
        let items = vec![r#"{"a":1}"#; 12_500].join(",");
        let body = format!("[{items}]");
        assert!(matches!(
            parse(body.as_bytes(), 4 << 20),
            Err(ParseError::OverBudget)
        ));
        let parsed = parse(body.as_bytes(), 16 << 20).expect("within 16 MiB");
        assert_eq!(parsed.as_array().map(Vec::len), Some(12_500));
        // Text and numbers cost about their size: 1 MB of string fits in 2 MB.
        let text = format!(r#"{{"text":"{}"}}"#, "x".repeat(1 << 20));
        assert!(parse(text.as_bytes(), 2 << 20).is_ok());
    }
}
