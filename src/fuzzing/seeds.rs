//! Valid examples of what each target reads, the fuzzers' starting points: written to
//! `fuzz/corpus/<target>/seed-<name>` by `scripts/fuzz --seed`, and replayed by the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta,
    SnapshotSegmentId, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::Serialize;
use serde_json::json;

use crate::http::ForwardedAnswer;
use crate::raft::network::Reply;
use crate::raft::{Command, NodeId, Op, Outcome, Record, Refusal, Table, TypeConfig};

/// One seed: its target, a name for its file, its bytes.
pub(super) type Seed = (&'static str, String, Vec<u8>);

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("a seed encodes")
}

/// `which` (the selector byte of a multi-decoder target), then `value` encoded.
fn selected<T: Serialize>(which: u8, value: &T) -> Vec<u8> {
    let mut bytes = vec![which];
    bytes.extend(encode(value));
    bytes
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn put() -> Op {
    Op::Put {
        table: Table::McpSessions,
        key: vec![0xab; 32],
        deadline_ms: Some(1_800_000_000_000),
        sealed: super::sealer().seal(b"aad", b"{\"clientInfo\":{}}"),
    }
}

fn ops() -> Vec<Op> {
    vec![
        put(),
        Op::Touch {
            table: Table::AuthSessions,
            key: vec![1; 32],
            deadline_ms: None,
        },
        Op::Delete {
            table: Table::StreamEvents,
            key: vec![2; 40],
        },
        Op::Reseal {
            table: Table::TenantCredentials,
            key: vec![3; 32],
            expect: [4; 32],
            sealed: vec![1, 0, 0, 0, 2, 9, 9, 9],
        },
        Op::Expire {
            now_ms: 1_800_000_000_000,
        },
    ]
}

fn membership() -> Membership<NodeId, BasicNode> {
    let nodes = BTreeMap::from([
        (1, BasicNode::new("127.0.0.1:7001")),
        (2, BasicNode::new("127.0.0.1:7002")),
        (3, BasicNode::new("127.0.0.1:7003")),
    ]);
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

/// An error with a cause with a cause, as storage errors arrive from a peer.
#[derive(Debug)]
struct Cause(&'static str, Option<Box<Cause>>);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|c| c as _)
    }
}

fn storage_failure() -> RaftError<NodeId> {
    let cause = Cause(
        "flush failed",
        Some(Box::new(Cause(
            "I/O error",
            Some(Box::new(Cause("EIO", None))),
        ))),
    );
    let io = StorageIOError::write_state_machine(AnyError::new(&cause));
    RaftError::Fatal(Fatal::StorageError(StorageError::from(io)))
}

fn token(header: serde_json::Value, payload: serde_json::Value, signature: &str) -> Vec<u8> {
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{signature}", part(header), part(payload)).into_bytes()
}

/// Every seed.
pub(super) fn all() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push((target, name.to_owned(), bytes));
    };

    // Commands, as in a log entry and a /fleet/write body.
    for (i, op) in ops().into_iter().enumerate() {
        add("command", &format!("op-{i}"), encode(&Command::from(op)));
    }
    add("command", "batch", encode(&Command::Batch(ops())));
    let owned = Command::PutOwned {
        table: Table::McpSessions,
        key: vec![0xcd; 32],
        deadline_ms: Some(1_800_000_000_000),
        sealed: super::sealer().seal(b"aad", b"{}"),
        owner: [7; 32],
        limit: 1000,
    };
    add("command", "put-owned", encode(&owned));
    let create = Command::Create {
        table: Table::KeyCheck,
        key: b"index".to_vec(),
        deadline_ms: None,
        sealed: vec![1; 41],
    };
    add("command", "create", encode(&create));

    let vote = Vote::new_committed(3, 1);
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(3, 10)),
        entries: Vec::new(),
        leader_commit: Some(log_id(3, 10)),
    };
    add("append_entries", "heartbeat", encode(&heartbeat));
    let entries = vec![
        Entry::<TypeConfig> {
            log_id: log_id(3, 11),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(3, 12),
            payload: EntryPayload::Normal(Command::from(put())),
        },
        Entry {
            log_id: log_id(3, 13),
            payload: EntryPayload::Normal(Command::Batch(ops())),
        },
        Entry {
            log_id: log_id(3, 14),
            payload: EntryPayload::Membership(membership()),
        },
    ];
    let append = AppendEntriesRequest::<TypeConfig> {
        vote,
        prev_log_id: Some(log_id(3, 10)),
        entries,
        leader_commit: Some(log_id(3, 12)),
    };
    add("append_entries", "entries", encode(&append));

    add(
        "vote",
        "request",
        encode(&VoteRequest::new(Vote::new(4, 2), Some(log_id(3, 14)))),
    );

    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 14)),
            last_membership: StoredMembership::new(Some(log_id(3, 14)), membership()),
            snapshot_id: "3-14-1800000000000000000".to_owned(),
        },
        offset: 0,
        data: vec![1, 1, 2, 0xab, 0xcd, 7, 1, 1, 0xac, 0x02, 2, 7, 8],
        done: true,
    };
    add("install_snapshot", "chunk", encode(&snapshot));

    add("fleet_request", "applied", selected(0, &17u64));
    add("fleet_request", "read-index", selected(1, &()));
    let answer = ForwardedAnswer {
        session: "9f86d081884c7d659a2feaa0c55ad015".to_owned(),
        message: json!({"jsonrpc": "2.0", "id": 3, "result": {"action": "accept"}}).to_string(),
    };
    add("fleet_request", "answer", selected(2, &answer));

    type Raft<T> = Reply<T, RaftError<NodeId>>;
    let success: Raft<AppendEntriesResponse<NodeId>> = Reply(Ok(AppendEntriesResponse::Success));
    add("peer_reply", "append-success", selected(0, &success));
    let higher: Raft<AppendEntriesResponse<NodeId>> =
        Reply(Ok(AppendEntriesResponse::HigherVote(Vote::new(5, 2))));
    add("peer_reply", "append-higher-vote", selected(0, &higher));
    let failed: Raft<AppendEntriesResponse<NodeId>> = Reply(Err(storage_failure()));
    add("peer_reply", "append-storage-error", selected(0, &failed));
    let granted: Raft<VoteResponse<NodeId>> = Reply(Ok(VoteResponse::new(
        Vote::new(4, 2),
        Some(log_id(3, 14)),
        true,
    )));
    add("peer_reply", "vote-granted", selected(1, &granted));
    let installed: Reply<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
        Reply(Ok(InstallSnapshotResponse { vote }));
    add("peer_reply", "snapshot-installed", selected(2, &installed));
    let segment = |offset| SnapshotSegmentId {
        id: "3-14-1800000000000000000".to_owned(),
        offset,
    };
    let mismatch: Reply<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
        Reply(Err(RaftError::APIError(
            InstallSnapshotError::SnapshotMismatch(SnapshotMismatch {
                expect: segment(0),
                got: segment(4096),
            }),
        )));
    add("peer_reply", "snapshot-mismatch", selected(2, &mismatch));
    let written: Result<(Outcome, u64), Refusal> = Ok((
        Outcome {
            affected: 1,
            refused: false,
        },
        15,
    ));
    add("peer_reply", "write-done", selected(3, &written));
    let refused: Result<(Outcome, u64), Refusal> = Err(Refusal::Failed("no quorum".into()));
    add("peer_reply", "write-refused", selected(3, &refused));
    let capped: Result<(Outcome, u64), Refusal> = Ok((
        Outcome {
            affected: 0,
            refused: true,
        },
        16,
    ));
    add("peer_reply", "write-over-owner-cap", selected(3, &capped));
    let too_large: Result<(Outcome, u64), Refusal> = Err(Refusal::TooLarge {
        size: 300_000,
        cap: 262_144,
    });
    add("peer_reply", "write-too-large", selected(3, &too_large));
    let read: Result<Option<u64>, Refusal> = Ok(Some(15));
    add("peer_reply", "read-index", selected(4, &read));
    let not_leader: Result<Option<u64>, Refusal> = Err(Refusal::NotLeader);
    add(
        "peer_reply",
        "read-index-not-leader",
        selected(4, &not_leader),
    );
    add("peer_reply", "taken", selected(5, &true));

    let sealer = super::sealer();
    let aad = crate::raft::command::storage_key(Table::McpSessions, b"key");
    let record = Record {
        deadline_ms: Some(1_800_000_000_000),
        sealed: sealer.seal(&aad, b"{\"principal\":\"alice\"}"),
        owner: None,
    };
    add("sealed", "record", record.encode());
    let forever = Record {
        deadline_ms: None,
        sealed: sealer.seal(b"another table", b"x"),
        owner: None,
    };
    add("sealed", "record-without-deadline", forever.encode());
    let owned = Record {
        owner: Some([7; 32]),
        ..record.clone()
    };
    add("sealed", "record-with-owner", owned.encode());
    add("sealed", "sealed", sealer.seal(&aad, b"plaintext"));

    // Sealed for the principal the target opens it as, so inputs reach the decoder.
    let mut state_aad = b"mcp-fleet/requestState/v2\0".to_vec();
    state_aad.extend_from_slice(crate::auth::Principal::anonymous().binding().as_bytes());
    let state = URL_SAFE_NO_PAD.encode(sealer.seal(&state_aad, b"\x01t"));
    add("request_state", "sealed", state.into_bytes());
    add("request_state", "not-base64", b"not base64!".to_vec());

    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "fuzz", "version": "1"},
    });
    let messages = [
        (
            "initialize",
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "fuzz", "version": "1"}}}),
        ),
        (
            "modern-call",
            json!({"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {
                "name": "echo", "arguments": {"text": "hi"}, "_meta": meta,
                "requestState": "AAAA", "inputResponses": {"q": {"action": "accept"}}}}),
        ),
        (
            "notification",
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        ),
        (
            "error-response",
            json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": "no"}}),
        ),
        (
            "batch",
            json!([
                {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                {"jsonrpc": "2.0", "id": 3, "result": {"content": []}},
            ]),
        ),
    ];
    for (name, message) in messages {
        add("jsonrpc", name, message.to_string().into_bytes());
    }

    let claims = json!({
        "iss": "https://issuer.example.com", "sub": "alice", "aud": "https://mcp.example.com/mcp",
        "exp": 2_000_000_000u64, "iat": 1_800_000_000u64, "jti": "t1", "scope": "mcp",
    });
    let headers = [
        (
            "rs256",
            json!({"alg": "RS256", "kid": "rsa1", "typ": "JWT"}),
        ),
        ("es256", json!({"alg": "ES256", "kid": "ec1"})),
        ("eddsa", json!({"alg": "EdDSA"})),
        ("none", json!({"alg": "none"})),
        ("hs256", json!({"alg": "HS256", "kid": "rsa1"})),
        ("crit", json!({"alg": "RS256", "crit": ["exp"]})),
    ];
    for (name, header) in headers {
        add("jwt", name, token(header, claims.clone(), "c2lnbmF0dXJl"));
    }
    add("jwt", "opaque", b"2YotnFZFEjr1zCsicMWpAA".to_vec());

    let n = URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
    let coordinate = URL_SAFE_NO_PAD.encode([0x17u8; 32]);
    let keys = json!({"keys": [
        {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"},
        {"kty": "EC", "kid": "ec1", "crv": "P-256", "x": coordinate, "y": coordinate},
        {"kty": "OKP", "kid": "ed1", "crv": "Ed25519", "x": coordinate},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": "AQAB"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
    ]});
    add("jwks", "keys", keys.to_string().into_bytes());

    seeds
}
