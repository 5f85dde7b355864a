//! How bytes from another node become values: every postcard body the internal listener
//! receives and every answer a node reads from a peer goes through [`decode`].
//!
//! postcard decodes by recursion, one stack frame per level of nesting, and has no limit
//! of its own. Commands are flat, but a peer's answer carries openraft's errors, and
//! `AnyError` holds its source as another `AnyError`: three bytes per level, so 400 KB
//! nest 130,000 deep and overflow any thread's stack, which aborts the process. [`decode`]
//! refuses anything nested deeper than [`MAX_DEPTH`] instead, whatever the type.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// How deep values from another node may nest: each struct, tuple, sequence, map, enum
/// variant and `Some` is one level. The deepest message nodes send is an append-entries
/// request at about 10 levels; openraft's errors add two per cause.
pub const MAX_DEPTH: usize = 64;

/// Why bytes from another node did not decode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a postcard encoding of the expected type.
    #[error("{0}")]
    Malformed(postcard::Error),
    /// The value nests deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Decodes `bytes` (a whole postcard body, trailing bytes ignored) from another node,
/// refusing values nested deeper than [`MAX_DEPTH`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let depth = Depth {
        left: Cell::new(MAX_DEPTH),
        exceeded: Cell::new(false),
    };
    let mut inner = postcard::Deserializer::from_bytes(bytes);
    let result = T::deserialize(Limited {
        inner: &mut inner,
        left: &depth,
    });
    // The depth error travels through postcard's error type, which keeps no message.
    result.map_err(|e| match depth.exceeded.get() {
        true => Error::TooDeep,
        false => Error::Malformed(e),
    })
}

/// The depth left to one decoding, shared by all its adapters.
struct Depth {
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

type Budget<'b> = &'b Depth;

/// Runs `f` one level deeper, or fails when no depth is left.
fn nested<T, E: de::Error>(depth: Budget<'_>, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let Some(left) = depth.left.get().checked_sub(1) else {
        depth.exceeded.set(true);
        return Err(E::custom("nested too deeply"));
    };
    depth.left.set(left);
    let result = f();
    depth.left.set(left + 1);
    result
}

/// A deserializer whose compound values count against the budget.
struct Limited<'b, D> {
    inner: D,
    left: Budget<'b>,
}

/// A visitor that hands what it visits on through [`Limited`] adapters.
struct LimitedVisitor<'b, V> {
    inner: V,
    left: Budget<'b>,
}

/// A seed whose deserializer is wrapped in [`Limited`].
struct LimitedSeed<'b, S> {
    inner: S,
    left: Budget<'b>,
}

/// Sequence, map, enum and variant access whose elements are decoded through [`Limited`].
struct LimitedAccess<'b, A> {
    inner: A,
    left: Budget<'b>,
}

impl<'b, V> LimitedVisitor<'b, V> {
    fn new(inner: V, left: Budget<'b>) -> Self {
        Self { inner, left }
    }
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.inner.$method($($arg,)* LimitedVisitor::new(visitor, self.left))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str), deserialize_seq(),
        deserialize_tuple(len: usize), deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(), deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(), deserialize_ignored_any(),
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for LimitedVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64),
        visit_i128(i128), visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64),
        visit_u128(u128), visit_f32(f32), visit_f64(f64), visit_char(char),
        visit_str(&str), visit_borrowed_str(&'de str), visit_string(String),
        visit_bytes(&[u8]), visit_borrowed_bytes(&'de [u8]), visit_byte_buf(Vec<u8>),
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        let left = self.left;
        nested(left, || self.inner.visit_some(Limited { inner, left }))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        let left = self.left;
        nested(left, || {
            self.inner.visit_newtype_struct(Limited { inner, left })
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let left = self.left;
        nested(left, || self.inner.visit_seq(LimitedAccess { inner, left }))
    }

    fn visit_map<A: MapAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let left = self.left;
        nested(left, || self.inner.visit_map(LimitedAccess { inner, left }))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, inner: A) -> Result<V::Value, A::Error> {
        let left = self.left;
        nested(left, || {
            self.inner.visit_enum(LimitedAccess { inner, left })
        })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for LimitedSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, inner: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Limited {
            inner,
            left: self.left,
        })
    }
}

impl<'b, S> LimitedSeed<'b, S> {
    fn new(inner: S, left: Budget<'b>) -> Self {
        Self { inner, left }
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for LimitedAccess<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner
            .next_element_seed(LimitedSeed::new(seed, self.left))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for LimitedAccess<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(LimitedSeed::new(seed, self.left))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner
            .next_value_seed(LimitedSeed::new(seed, self.left))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'b, 'de, A: EnumAccess<'de>> EnumAccess<'de> for LimitedAccess<'b, A> {
    type Error = A::Error;
    type Variant = LimitedAccess<'b, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let left = self.left;
        let (value, inner) = self.inner.variant_seed(LimitedSeed::new(seed, left))?;
        Ok((value, LimitedAccess { inner, left }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for LimitedAccess<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner
            .newtype_variant_seed(LimitedSeed::new(seed, self.left))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner
            .tuple_variant(len, LimitedVisitor::new(visitor, self.left))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner
            .struct_variant(fields, LimitedVisitor::new(visitor, self.left))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::error::{Fatal, RaftError};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    use openraft::{
        AnyError, BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership,
        StorageError, StorageIOError, Vote,
    };

    use super::{decode, Error, MAX_DEPTH};
    use crate::raft::network::Reply;
    use crate::raft::{Command, NodeId, Op, Table, TypeConfig};

    /// postcard of an `AnyError` whose source is an `AnyError`, `links` deep: each link is
    /// no type, an empty message and `Some` source; the last has no source; then each
    /// level's empty context and no backtrace.
    fn any_error_chain(links: usize) -> Vec<u8> {
        let mut bytes = [0u8, 0, 1].repeat(links);
        bytes.extend([0, 0, 0, 0, 0]);
        bytes.extend([0u8, 0].repeat(links));
        bytes
    }

    #[test]
    fn a_peer_error_nested_130_000_deep_is_refused_instead_of_overflowing_the_stack() {
        let bytes = any_error_chain(130_000);
        assert!(bytes.len() > 400_000);
        assert!(matches!(decode::<AnyError>(&bytes), Err(Error::TooDeep)));
        // The same inside the reply to an append-entries request: Err, Fatal, storage
        // error, I/O error, then the chain.
        let failure = StorageIOError::write_state_machine(AnyError::error("x"));
        let reply: Reply<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = Reply(Err(
            RaftError::Fatal(Fatal::StorageError(StorageError::from(failure))),
        ));
        let mut wrapped = postcard::to_stdvec(&reply).unwrap();
        let single = postcard::to_stdvec(&AnyError::error("x")).unwrap();
        let at = wrapped.len() - 1 - single.len(); // the backtrace of the storage error follows
        assert_eq!(wrapped[at..at + single.len()], single[..]);
        wrapped.splice(at..at + single.len(), bytes);
        let decoded = decode::<Reply<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>(&wrapped);
        assert!(matches!(decoded, Err(Error::TooDeep)));
    }

    #[test]
    fn a_short_chain_of_causes_decodes() {
        let error: AnyError = decode(&any_error_chain(10)).expect("10 causes");
        let mut depth = 0;
        let mut next = std::error::Error::source(&error);
        while let Some(cause) = next {
            depth += 1;
            next = cause.source();
        }
        assert_eq!(depth, 10);
    }

    #[test]
    fn depth_is_counted_along_a_path_not_across_siblings() {
        // Ten thousand values each two levels deep: wide, not deep.
        let wide: Vec<Option<Option<u8>>> = vec![Some(Some(7)); 10_000];
        let bytes = postcard::to_stdvec(&wide).unwrap();
        assert_eq!(decode::<Vec<Option<Option<u8>>>>(&bytes).unwrap(), wide);
        // `Nest(Some(Nest(… None)))`: k `Some`s and k + 1 newtypes are 2k + 1 levels.
        #[derive(serde::Deserialize)]
        struct Nest(Option<Box<Nest>>);
        impl Nest {
            fn somes(&self) -> usize {
                self.0.as_ref().map_or(0, |inner| 1 + inner.somes())
            }
        }
        let nest = |k: usize| {
            let mut bytes = vec![1u8; k];
            bytes.push(0);
            decode::<Nest>(&bytes)
        };
        let deepest = (MAX_DEPTH - 1) / 2;
        assert_eq!(nest(deepest).expect("at the limit").somes(), deepest);
        assert!(matches!(nest(deepest + 1), Err(Error::TooDeep)));
    }

    #[test]
    fn malformed_bytes_are_told_apart_from_deep_ones() {
        assert!(matches!(decode::<Command>(&[9]), Err(Error::Malformed(_))));
        assert!(matches!(decode::<Command>(&[]), Err(Error::Malformed(_))));
        // A nested batch is malformed at its second level, long before any limit.
        assert!(matches!(
            decode::<Command>(&[5, 1, 5, 0]),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn the_deepest_messages_nodes_send_decode() {
        let log_id = |index| LogId::new(CommittedLeaderId::new(3, 1), index);
        let nodes = BTreeMap::from([(1, BasicNode::new("a:1")), (2, BasicNode::new("b:2"))]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        let batch = Command::Batch(vec![
            Op::Put {
                table: Table::McpSessions,
                key: vec![1],
                deadline_ms: Some(5),
                sealed: vec![2],
            },
            Op::Expire { now_ms: 5 },
        ]);
        let request = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(1)),
            entries: vec![
                Entry {
                    log_id: log_id(2),
                    payload: EntryPayload::Normal(batch),
                },
                Entry {
                    log_id: log_id(3),
                    payload: EntryPayload::Membership(membership),
                },
            ],
            leader_commit: Some(log_id(1)),
        };
        let bytes = postcard::to_stdvec(&request).unwrap();
        let decoded: AppendEntriesRequest<TypeConfig> = decode(&bytes).expect("decodes");
        assert_eq!(postcard::to_stdvec(&decoded).unwrap(), bytes);
        // A storage error with a few causes, as a failing peer answers.
        let bytes = any_error_chain(8);
        let cause: AnyError = decode(&bytes).unwrap();
        let failure = StorageIOError::write_state_machine(cause);
        let reply: Reply<AppendEntriesResponse<NodeId>, RaftError<NodeId>> = Reply(Err(
            RaftError::Fatal(Fatal::StorageError(StorageError::from(failure))),
        ));
        let bytes = postcard::to_stdvec(&reply).unwrap();
        let decoded: Reply<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            decode(&bytes).expect("decodes");
        assert_eq!(postcard::to_stdvec(&decoded).unwrap(), bytes);
    }
}
