//! Reading and parsing a request body, within the caps on its size, the time it takes
//! to arrive, and the memory it takes once parsed.
//!
//! Parsed JSON can take far more memory than its text: each object is a B-tree whose
//! first node takes 632 bytes, so a 4 MiB body of `{"a":1}` objects parses into 349 MB
//! (measured). [`parse_message`] builds the same `serde_json::Value`s as
//! `serde_json::from_slice` while charging each value what it will take, and stops once
//! `http.max_parsed_body_bytes` is spent, before the memory is taken. Of a body that is
//! one object it keeps only the members of a JSON-RPC message, without the object itself.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::HttpRequest;
use futures_util::StreamExt;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::de::SliceRead;
use serde_json::{Deserializer, Map, Number, Value};

use super::mcp::header;
use crate::mcp::jsonrpc::Members;

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
    let declared = header(req, CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
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
/// bytes (by the same estimate the session tier weighs capabilities with). What
/// [`parse_message`] is held to in the tests.
#[cfg(test)]
pub(super) fn parse(body: &[u8], budget: usize) -> Result<Value, ParseError> {
    within(body, budget, |left, d| Charged(left).deserialize(d))
}

/// A body parsed by [`parse_message`].
#[derive(Debug)]
pub(super) enum Parsed {
    /// An object: the members that make it a JSON-RPC message, each already parsed.
    Object(Members),
    /// Anything else (a batch, or not a message at all).
    Other(Value),
}

/// Parses `body` as [`parse`] does, within the same budget and with the same errors, but
/// keeps only the members of a JSON-RPC message when the body is one object: its other
/// members are parsed, charged and dropped, and no object of the whole message is built.
pub(super) fn parse_message(body: &[u8], budget: usize) -> Result<Parsed, ParseError> {
    within(body, budget, |left, d| Top(left).deserialize(d))
}

/// Parses the whole of `body` with `run`, given a budget of `budget` bytes, telling a
/// body over the budget from one that is not JSON.
fn within<T>(
    body: &[u8],
    budget: usize,
    run: impl FnOnce(&Budget, &mut Deserializer<SliceRead<'_>>) -> serde_json::Result<T>,
) -> Result<T, ParseError> {
    let left = Budget {
        left: Cell::new(budget),
        exceeded: Cell::new(false),
    };
    let mut deserializer = Deserializer::from_slice(body);
    let parsed = run(&left, &mut deserializer).and_then(|value| deserializer.end().map(|()| value));
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

/// The top level of a body: an object becomes [`Members`], charged as [`Charged`] charges
/// the object it would build; anything else is built by [`Charged`].
#[derive(Clone, Copy)]
struct Top<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Parsed;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Parsed, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Forwards a visit of a value that is not an object to [`Charged`].
macro_rules! other {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(fn $name<E: de::Error>(self, v: $ty) -> Result<Parsed, E> {
            Charged(self.0).$name(v).map(Parsed::Other)
        })*
    };
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    other!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str),
        visit_string(String),
    );

    fn visit_none<E: de::Error>(self) -> Result<Parsed, E> {
        Charged(self.0).visit_none().map(Parsed::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Parsed, E> {
        Charged(self.0).visit_unit().map(Parsed::Other)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Parsed, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Parsed, A::Error> {
        Charged(self.0).visit_seq(seq).map(Parsed::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        self.0.charge(VALUE)?;
        let mut members = Members::default();
        // The object's length as `Charged` would count it, duplicates once: the six
        // members by their slots, any other key in a set (only bodies with other members
        // build one).
        let mut known = 0;
        let mut others: Option<HashSet<String>> = None;
        while let Some(key) = map.next_key_seed(Key)? {
            let len = known + others.as_ref().map_or(0, HashSet::len);
            let node = match len {
                0 => NODE,
                n if n >= 11 && n % 6 == 0 => NODE,
                _ => 0,
            };
            self.0.charge(node + key.len())?;
            let value = map.next_value_seed(Charged(self.0))?;
            match members.slot(&key) {
                Some(slot) => {
                    known += usize::from(slot.is_none());
                    *slot = Some(value);
                }
                None => {
                    others
                        .get_or_insert_with(HashSet::new)
                        .insert(key.into_owned());
                }
            }
        }
        Ok(Parsed::Object(members))
    }
}

/// An object's key, borrowed from the body when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::{Message, RpcError};

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

    /// What `post` makes of a body: the message, or its error, or the parse failure.
    fn message_of(
        parsed: Result<Parsed, ParseError>,
    ) -> Result<Result<Message, (Option<Value>, RpcError)>, String> {
        match parsed {
            Ok(Parsed::Object(members)) => Ok(Message::from_members(members)),
            Ok(Parsed::Other(value)) => Ok(Message::from_value(value)),
            Err(ParseError::OverBudget) => Err("over budget".into()),
            Err(ParseError::Syntax(e)) => Err(e.to_string()),
        }
    }

    #[test]
    fn a_message_parsed_by_its_members_is_what_the_whole_value_makes() {
        let huge_id = format!(
            r#"{{"jsonrpc":"2.0","id":"{}","method":"ping"}}"#,
            "9".repeat(5000)
        );
        let cases = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":"a","result":{"x":[1,2]}}"#,
            r#"{"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"no","data":7}}"#,
            r#"{"jsonrpc":"2.0","id":"a","result":{},"error":{}}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":184467440737095516150,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":-9223372036854775808,"method":"x"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            r#"{"jsonrpc":2.0,"id":1,"method":"x"}"#,
            r#"{"id":1,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":"p"}"#,
            r#"{"jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":"two","method":"a","method":"b","extra":{"deep":[{}]},"extra":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"k":1,"k":2}}"#,
            &huge_id,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            "[]",
            "7",
            "\"text\"",
            "null",
            "true",
            // Not JSON: the same error, at the same place.
            "{",
            r#"{"jsonrpc":"2.0","id":1,"method":"x""#,
            r#"{"jsonrpc":"2.0",}"#,
            r#"{"jsonrpc":"2.0"} {}"#,
            r#"{1:2}"#,
            "",
        ];
        for text in cases {
            let theirs = message_of(parse(text.as_bytes(), 1 << 20).map(Parsed::Other));
            let ours = message_of(parse_message(text.as_bytes(), 1 << 20));
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{text}");
        }
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{}"#,
            "[".repeat(10_000)
        );
        assert!(matches!(
            parse_message(deep.as_bytes(), usize::MAX),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn a_message_parsed_by_its_members_is_charged_as_its_whole_value() {
        // Objects of every size around where another node is charged, with duplicate and
        // unknown members, each at every budget around what it takes.
        for members in [1, 5, 11, 12, 13, 17, 18, 24, 30] {
            let mut text = String::from(r#"{"jsonrpc":"2.0","id":1,"method":"x""#);
            for i in 0..members {
                text.push_str(&format!(r#","m{}":{{"a":[{i}]}}"#, i % 7));
            }
            text.push_str(r#","id":2}"#);
            let budgets: Vec<usize> = (0..1 << 16).collect();
            let needed = budgets.partition_point(|&budget| parse(text.as_bytes(), budget).is_err());
            assert!(needed < budgets.len(), "fits in 64 KiB");
            for budget in needed.saturating_sub(40)..needed + 40 {
                assert_eq!(
                    parse_message(text.as_bytes(), budget).is_ok(),
                    budget >= needed,
                    "{members} members, budget {budget}"
                );
            }
        }
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
