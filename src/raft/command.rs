//! What the log carries: commands on sealed records, their outcome, the tables, and the
//! stored form of a record.

use serde::{Deserialize, Serialize};

/// Format byte in front of a stored record without an owner: its deadline and sealed value.
pub(crate) const RECORD_V1: u8 = 1;
/// Format byte in front of a stored record with an owner: deadline, sealed value, owner.
/// Records without one keep the [`RECORD_V1`] bytes, so stores written before owners
/// existed read the same and no record is rewritten to gain the new format.
pub(crate) const RECORD_V2: u8 = 2;

/// The owner tag of a record: a keyed hash of a principal's binding, never the principal.
pub type Owner = [u8; 32];

/// The tables of the replicated store. The discriminant is the first byte of every stored
/// key, so it must never change for an existing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Table {
    /// Validated auth sessions, keyed by a keyed hash of the token.
    AuthSessions = 1,
    /// Legacy MCP sessions, keyed by a keyed hash of the session id.
    McpSessions = 2,
    /// Multi round-trip request state.
    RequestState = 3,
    /// Handles tools keep between calls.
    ToolState = 4,
    /// Credentials of tenants for upstream services.
    TenantCredentials = 5,
    /// Revoked users, token ids and sessions.
    Revocations = 6,
    /// Events kept for legacy stream resumption.
    StreamEvents = 7,
    /// The fleet's key-check record: the index key's fingerprint and one value sealed
    /// with each key id, so a node can tell before serving whether its ring is the
    /// fleet's (see `raft::keycheck`). Under fixed keys, not keyed hashes: a node whose
    /// index key is wrong must still find it.
    KeyCheck = 8,
    /// Tasks (`io.modelcontextprotocol/tasks`): status, input asked and given, result.
    Tasks = 9,
}

impl Table {
    /// Every table, in key order.
    pub const ALL: [Table; 9] = [
        Table::AuthSessions,
        Table::McpSessions,
        Table::RequestState,
        Table::ToolState,
        Table::TenantCredentials,
        Table::Revocations,
        Table::StreamEvents,
        Table::KeyCheck,
        Table::Tasks,
    ];

    /// The byte that starts this table's keys.
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The table whose keys start with `byte`.
    pub fn from_byte(byte: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.byte() == byte)
    }

    /// A short name for logs, metrics and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Table::AuthSessions => "auth_sessions",
            Table::McpSessions => "mcp_sessions",
            Table::RequestState => "request_state",
            Table::ToolState => "tool_state",
            Table::TenantCredentials => "tenant_credentials",
            Table::Revocations => "revocations",
            Table::StreamEvents => "stream_events",
            Table::KeyCheck => "key_check",
            Table::Tasks => "tasks",
        }
    }
}

/// A change to the store, proposed through Raft and applied identically on every node.
///
/// Keys are already hashed and values already sealed: nothing in a command is plaintext.
/// The first five variants are the `Op`s, in the same order with the same fields, so a
/// command and an op that say the same thing have the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Stores a record, replacing any record under the same key. A replaced record's owner
    /// stays the owner: rewriting a session's value does not free its place under a cap.
    Put {
        /// The table.
        table: Table,
        /// The stored key (a keyed hash).
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// When the record ends, in milliseconds since the epoch; `None` never.
        deadline_ms: Option<u64>,
        /// The sealed value.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// Moves the deadline of an existing record; does nothing when it is absent.
    Touch {
        /// The table.
        table: Table,
        /// The stored key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The new deadline.
        deadline_ms: Option<u64>,
    },
    /// Removes a record.
    Delete {
        /// The table.
        table: Table,
        /// The stored key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Replaces a record's sealed value only while it is still the one whose SHA-256 is
    /// `expect`, so re-sealing never overwrites a newer write.
    Reseal {
        /// The table.
        table: Table,
        /// The stored key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// SHA-256 of the sealed value being replaced.
        expect: [u8; 32],
        /// The value sealed again with the active key.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// Removes every record whose deadline is at or before `now_ms`. The leader proposes
    /// it with its clock; replicas never consult their own clocks when applying it.
    Expire {
        /// The cut-off, in milliseconds since the epoch.
        now_ms: u64,
    },
    /// Several operations applied in order as one log entry.
    ///
    /// Flat on purpose: a batch holds ops, never commands, so its bytes cannot nest. A
    /// nested batch, as an older type allowed, would decode by one stack frame per level,
    /// and a 400 KB body nested 200,000 deep overflowed the stack and aborted the node.
    /// Those bytes now fail to decode (variant 5 is no `Op`); flat batches already in a
    /// log or snapshot decode as before.
    Batch(Vec<Op>),
    /// Stores a record owned by `owner`, like `Put`, only while `owner` holds fewer than
    /// `limit` records in `table` besides the one under `key` (so replacing a record the
    /// owner already has never counts it twice); otherwise stores nothing and the outcome
    /// says it was refused. Every replica counts the same applied records, so the cap holds
    /// fleet-wide even when creates race through different nodes.
    ///
    /// Added after `Batch` so the postcard variant indexes of the others stay as they were.
    PutOwned {
        /// The table.
        table: Table,
        /// The stored key (a keyed hash).
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// When the record ends, in milliseconds since the epoch; `None` never.
        deadline_ms: Option<u64>,
        /// The sealed value.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
        /// The owner tag (see `Owner`).
        owner: Owner,
        /// How many records of `table` the owner may hold.
        limit: u64,
    },
    /// Stores a record only while none is under `key`; otherwise stores nothing and the
    /// outcome says it was refused. Of writers racing to create the same record, the
    /// first in the log wins on every replica (the fleet's key-check record uses it, so a
    /// node with a wrong ring can never write over what a right one wrote).
    ///
    /// Added after `PutOwned` so the postcard variant indexes of the others stay as they
    /// were.
    Create {
        /// The table.
        table: Table,
        /// The stored key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// When the record ends, in milliseconds since the epoch; `None` never.
        deadline_ms: Option<u64>,
        /// The sealed value.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// Several writes proposed together as one log entry, each applied on its own, in
    /// order, with an outcome of its own: a capped put refused among them refuses only
    /// itself. The leader gathers into one entry the writes waiting at that moment, so a
    /// busy fleet appends, replicates, fsyncs and applies one entry for many writes.
    ///
    /// Each write is carried as its own encoded command (never a group), so decoding an
    /// entry never recurses whatever its bytes, and groups cannot nest: the state machine
    /// refuses a group inside a group.
    ///
    /// Added after `Create` so the postcard variant indexes of the others stay as they
    /// were.
    Group(#[serde(with = "byte_vecs")] Vec<Vec<u8>>),
}

/// A group's writes, each as bytes (`serde_bytes`): in postcard the same bytes as a
/// sequence of `u8`s, written and read with one copy each rather than byte by byte.
mod byte_vecs {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(writes: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(writes.iter().map(|w| Bytes::new(w)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let writes = Vec::<ByteBuf>::deserialize(d)?;
        Ok(writes.into_iter().map(ByteBuf::into_vec).collect())
    }
}

/// One operation of a [`Command`]: its first five variants. Batches and `PutOwned` are no
/// ops: a batch cannot hold a batch, and a capped put is applied on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Stores a record, replacing any record under the same key; a replaced record's owner
    /// stays the owner.
    Put {
        /// The table.
        table: Table,
        /// The stored key (a keyed hash).
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// When the record ends, in milliseconds since the epoch; `None` never.
        deadline_ms: Option<u64>,
        /// The sealed value.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// Moves the deadline of an existing record; does nothing when it is absent.
    Touch {
        /// The table.
        table: Table,
        /// The stored key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The new deadline.
        deadline_ms: Option<u64>,
    },
    /// Removes a record.
    Delete {
        /// The table.
        table: Table,
        /// The stored key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Replaces a record's sealed value only while it is still the one whose SHA-256 is
    /// `expect`, so re-sealing never overwrites a newer write.
    Reseal {
        /// The table.
        table: Table,
        /// The stored key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// SHA-256 of the sealed value being replaced.
        expect: [u8; 32],
        /// The value sealed again with the active key.
        #[serde(with = "serde_bytes")]
        sealed: Vec<u8>,
    },
    /// Removes every record whose deadline is at or before `now_ms`. The leader proposes
    /// it with its clock; replicas never consult their own clocks when applying it.
    Expire {
        /// The cut-off, in milliseconds since the epoch.
        now_ms: u64,
    },
}

impl Command {
    /// The operations this command applies, in order; the command itself when it is a
    /// `PutOwned`, a `Create` or a `Group`, which have no op.
    pub fn into_ops(self) -> Result<Vec<Op>, Command> {
        let op = match self {
            Command::Put {
                table,
                key,
                deadline_ms,
                sealed,
            } => Op::Put {
                table,
                key,
                deadline_ms,
                sealed,
            },
            Command::Touch {
                table,
                key,
                deadline_ms,
            } => Op::Touch {
                table,
                key,
                deadline_ms,
            },
            Command::Delete { table, key } => Op::Delete { table, key },
            Command::Reseal {
                table,
                key,
                expect,
                sealed,
            } => Op::Reseal {
                table,
                key,
                expect,
                sealed,
            },
            Command::Expire { now_ms } => Op::Expire { now_ms },
            Command::Batch(ops) => return Ok(ops),
            single @ (Command::PutOwned { .. } | Command::Create { .. } | Command::Group(_)) => {
                return Err(single)
            }
        };
        Ok(vec![op])
    }
}

impl From<Op> for Command {
    fn from(op: Op) -> Command {
        match op {
            Op::Put {
                table,
                key,
                deadline_ms,
                sealed,
            } => Command::Put {
                table,
                key,
                deadline_ms,
                sealed,
            },
            Op::Touch {
                table,
                key,
                deadline_ms,
            } => Command::Touch {
                table,
                key,
                deadline_ms,
            },
            Op::Delete { table, key } => Command::Delete { table, key },
            Op::Reseal {
                table,
                key,
                expect,
                sealed,
            } => Command::Reseal {
                table,
                key,
                expect,
                sealed,
            },
            Op::Expire { now_ms } => Command::Expire { now_ms },
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// How many records existed and were replaced, touched, deleted or expired; for a
    /// `Put`, 1 when it replaced a record and 0 when it created one.
    pub affected: u64,
    /// Whether a `PutOwned` stored nothing because its owner already held `limit` records.
    pub refused: bool,
}

/// A record as the state machine stores it: a plaintext deadline (expiry must work without
/// keys), the sealed value, and the owner tag of a record created under a cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the record ends, in milliseconds since the epoch; `None` never.
    pub deadline_ms: Option<u64>,
    /// The sealed value.
    pub sealed: Vec<u8>,
    /// Who the record counts against (see [`Command::PutOwned`]); `None` for records
    /// written by the other commands.
    pub owner: Option<Owner>,
}

impl Record {
    /// Whether the record has ended at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.deadline_ms.is_some_and(|d| d <= now_ms)
    }

    /// The stored bytes: a format byte ([`RECORD_V1`] without an owner, [`RECORD_V2`]
    /// with one), then postcard of the fields in order.
    pub fn encode(&self) -> Vec<u8> {
        // `Bytes`: the same bytes as a sequence of `u8`s, copied at once.
        let sealed = serde_bytes::Bytes::new(&self.sealed);
        let mut out = Vec::with_capacity(self.sealed.len() + 48);
        let encoded = match &self.owner {
            None => {
                out.push(RECORD_V1);
                postcard::to_extend(&(self.deadline_ms, sealed), out)
            }
            Some(owner) => {
                out.push(RECORD_V2);
                postcard::to_extend(&(self.deadline_ms, sealed, owner), out)
            }
        };
        encoded.expect("a record always encodes")
    }

    /// Reads stored bytes of either format; `None` when the format is unknown or the
    /// bytes are damaged.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        use serde_bytes::ByteBuf;
        match bytes.split_first() {
            Some((&RECORD_V1, rest)) => {
                let (deadline_ms, sealed): (_, ByteBuf) = postcard::from_bytes(rest).ok()?;
                Some(Record {
                    deadline_ms,
                    sealed: sealed.into_vec(),
                    owner: None,
                })
            }
            Some((&RECORD_V2, rest)) => {
                let (deadline_ms, sealed, owner): (_, ByteBuf, _) =
                    postcard::from_bytes(rest).ok()?;
                Some(Record {
                    deadline_ms,
                    sealed: sealed.into_vec(),
                    owner: Some(owner),
                })
            }
            _ => None,
        }
    }
}

/// The state machine key of `key` in `table`: the table byte, then the key.
pub fn storage_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(table.byte());
    out.extend_from_slice(key);
    out
}

/// The stored bytes of `value` for sled: the `format` byte, then postcard.
pub(crate) fn to_stored<T: Serialize>(
    format: u8,
    value: &T,
) -> Result<Vec<u8>, openraft::AnyError> {
    postcard::to_extend(value, vec![format]).map_err(|e| openraft::AnyError::new(&e))
}

/// Reads bytes written by [`to_stored`] with `format`; an unknown format byte or damaged
/// bytes are an error, never a panic.
pub(crate) fn from_stored<T: serde::de::DeserializeOwned>(
    format: u8,
    bytes: &[u8],
) -> Result<T, openraft::AnyError> {
    match bytes.split_first() {
        Some((&f, rest)) if f == format => {
            postcard::from_bytes(rest).map_err(|e| openraft::AnyError::new(&e))
        }
        Some((&f, _)) => Err(openraft::AnyError::error(format!(
            "unknown format byte {f} (expected {format})"
        ))),
        None => Err(openraft::AnyError::error("empty stored value")),
    }
}

/// A change applied to the state machine, announced so memory tiers on every node can
/// drop what the log changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The record under `key` in `table` was written, touched, deleted or expired.
    Record {
        /// The table.
        table: Table,
        /// The stored key.
        key: Vec<u8>,
    },
    /// A snapshot replaced the whole state: drop everything.
    Reset,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_golden_bytes() {
        // A change to the stored format must be deliberate: this pins the bytes on disk.
        let record = Record {
            deadline_ms: Some(300),
            sealed: vec![7, 8],
            owner: None,
        };
        assert_eq!(record.encode(), vec![1, 1, 0xac, 0x02, 2, 7, 8]);
        assert_eq!(Record::decode(&record.encode()), Some(record));
        assert_eq!(Record::decode(&[9, 0]), None);
        assert_eq!(Record::decode(&[]), None);
    }

    #[test]
    fn owned_record_golden_bytes() {
        let record = Record {
            deadline_ms: None,
            sealed: vec![7],
            owner: Some([5; 32]),
        };
        // Format 2: no deadline, sealed len 1, sealed, then the 32 owner bytes as they are.
        let mut expected = vec![2, 0, 1, 7];
        expected.extend([5; 32]);
        assert_eq!(record.encode(), expected);
        assert_eq!(Record::decode(&expected), Some(record));
        assert_eq!(
            Record::decode(&expected[..expected.len() - 1]),
            None,
            "short owner"
        );
    }

    #[test]
    fn command_golden_bytes() {
        let put = Command::Put {
            table: Table::McpSessions,
            key: vec![1],
            deadline_ms: None,
            sealed: vec![2],
        };
        // variant 0, table variant 1 (McpSessions), key len 1, key, no deadline, sealed.
        assert_eq!(
            postcard::to_stdvec(&put).unwrap(),
            vec![0, 1, 1, 1, 0, 1, 2]
        );
        let expire = Command::Expire { now_ms: 5 };
        assert_eq!(postcard::to_stdvec(&expire).unwrap(), vec![4, 5]);
        let batch = Command::Batch(vec![]);
        assert_eq!(postcard::to_stdvec(&batch).unwrap(), vec![5, 0]);
        let owned = Command::PutOwned {
            table: Table::McpSessions,
            key: vec![1],
            deadline_ms: Some(3),
            sealed: vec![2],
            owner: [9; 32],
            limit: 300,
        };
        // Variant 6, after Batch; then Put's fields, the 32 owner bytes, limit as a varint.
        let mut expected = vec![6, 1, 1, 1, 1, 3, 1, 2];
        expected.extend([9; 32]);
        expected.extend([0xac, 0x02]);
        assert_eq!(postcard::to_stdvec(&owned).unwrap(), expected);
        assert_eq!(postcard::from_bytes::<Command>(&expected).unwrap(), owned);
        let create = Command::Create {
            table: Table::KeyCheck,
            key: vec![1],
            deadline_ms: None,
            sealed: vec![2],
        };
        // Variant 7, after PutOwned; then Put's fields.
        assert_eq!(
            postcard::to_stdvec(&create).unwrap(),
            vec![7, 7, 1, 1, 0, 1, 2]
        );
        assert_eq!(
            postcard::from_bytes::<Command>(&[7, 7, 1, 1, 0, 1, 2]).unwrap(),
            create
        );
    }

    #[test]
    fn group_golden_bytes() {
        let put = Command::Put {
            table: Table::McpSessions,
            key: vec![1],
            deadline_ms: None,
            sealed: vec![2],
        };
        let expire = Command::Expire { now_ms: 5 };
        let group = Command::Group(vec![
            postcard::to_stdvec(&put).unwrap(),
            postcard::to_stdvec(&expire).unwrap(),
        ]);
        // Variant 8, after Create; two writes, each its length then its own bytes.
        let expected = vec![8, 2, 7, 0, 1, 1, 1, 0, 1, 2, 2, 4, 5];
        assert_eq!(postcard::to_stdvec(&group).unwrap(), expected);
        assert_eq!(postcard::from_bytes::<Command>(&expected).unwrap(), group);
        assert_eq!(group.clone().into_ops(), Err(group));
    }

    /// `Command` as it was before batches became flat: a batch held commands, and so
    /// could hold batches.
    #[derive(Serialize)]
    enum NestableCommand {
        Put {
            table: Table,
            key: Vec<u8>,
            deadline_ms: Option<u64>,
            sealed: Vec<u8>,
        },
        Touch {
            table: Table,
            key: Vec<u8>,
            deadline_ms: Option<u64>,
        },
        Delete {
            table: Table,
            key: Vec<u8>,
        },
        Reseal {
            table: Table,
            key: Vec<u8>,
            expect: [u8; 32],
            sealed: Vec<u8>,
        },
        Expire {
            now_ms: u64,
        },
        Batch(Vec<NestableCommand>),
    }

    #[test]
    fn a_flat_batch_written_before_batches_were_flat_decodes_to_the_same_bytes() {
        let old = NestableCommand::Batch(vec![
            NestableCommand::Put {
                table: Table::McpSessions,
                key: vec![1],
                deadline_ms: Some(300),
                sealed: vec![2, 3],
            },
            NestableCommand::Touch {
                table: Table::AuthSessions,
                key: vec![4],
                deadline_ms: None,
            },
            NestableCommand::Delete {
                table: Table::StreamEvents,
                key: vec![5],
            },
            NestableCommand::Reseal {
                table: Table::TenantCredentials,
                key: vec![6],
                expect: [7; 32],
                sealed: vec![8],
            },
            NestableCommand::Expire { now_ms: 9 },
        ]);
        let new = Command::Batch(vec![
            Op::Put {
                table: Table::McpSessions,
                key: vec![1],
                deadline_ms: Some(300),
                sealed: vec![2, 3],
            },
            Op::Touch {
                table: Table::AuthSessions,
                key: vec![4],
                deadline_ms: None,
            },
            Op::Delete {
                table: Table::StreamEvents,
                key: vec![5],
            },
            Op::Reseal {
                table: Table::TenantCredentials,
                key: vec![6],
                expect: [7; 32],
                sealed: vec![8],
            },
            Op::Expire { now_ms: 9 },
        ]);
        let bytes = postcard::to_stdvec(&old).unwrap();
        let mut golden = vec![5, 5]; // Batch of five
        golden.extend([0, 1, 1, 1, 1, 0xac, 0x02, 2, 2, 3]); // Put
        golden.extend([1, 0, 1, 4, 0]); // Touch
        golden.extend([2, 6, 1, 5]); // Delete
        golden.extend([3, 4, 1, 6]); // Reseal: table, key
        golden.extend([7; 32]); // expect
        golden.extend([1, 8]); // sealed
        golden.extend([4, 9]); // Expire
        assert_eq!(bytes, golden);
        assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), new);
        assert_eq!(postcard::to_stdvec(&new).unwrap(), bytes);
        // Every command outside a batch has the bytes of the same op.
        let Command::Batch(ops) = new else {
            unreachable!()
        };
        for op in ops {
            let command = Command::from(op.clone());
            assert_eq!(
                postcard::to_stdvec(&command).unwrap(),
                postcard::to_stdvec(&op).unwrap()
            );
            assert_eq!(command.into_ops(), Ok(vec![op]));
        }
    }

    #[test]
    fn a_nested_batch_fails_to_decode() {
        let old = NestableCommand::Batch(vec![NestableCommand::Batch(vec![])]);
        let bytes = postcard::to_stdvec(&old).unwrap();
        assert_eq!(bytes, vec![5, 1, 5, 0]);
        assert!(postcard::from_bytes::<Command>(&bytes).is_err());
        // Deep enough to overflow any stack if decoding recursed: it stops at level 2.
        let mut deep = [5u8, 1].repeat(1_000_000);
        deep.extend([5, 0]);
        assert!(postcard::from_bytes::<Command>(&deep).is_err());
    }

    #[test]
    fn table_bytes_are_stable() {
        let bytes: Vec<u8> = Table::ALL.iter().map(|t| t.byte()).collect();
        assert_eq!(bytes, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
        for t in Table::ALL {
            assert_eq!(Table::from_byte(t.byte()), Some(t));
        }
        assert_eq!(Table::from_byte(0), None);
        // The owner index's in-use counts have one slot per table byte below 16.
        assert!(Table::ALL.iter().all(|t| t.byte() < 16));
    }
}
