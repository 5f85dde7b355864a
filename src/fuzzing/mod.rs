//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their
//! corpus: one function per decoder that reads bytes from the network (small decoders of
//! one listener share a function, the first byte choosing which), fed arbitrary bytes the
//! way the node feeds it what it receives.
//!
//! None of them may panic, abort or recurse without bound, whatever the bytes. Beyond
//! that they check properties that must hold for every input: a value that decoded
//! encodes to bytes that decode again to the same encoding; what is sealed opens.
//!
//! Not an API: the functions exist for `fuzz/` and may change with the decoders.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::crypto::{Key, Sealer};
use crate::http::ForwardedAnswer;
use crate::mcp::{Message, ModernMeta};
use crate::raft::network::Reply;
use crate::raft::{wire, Command, NodeId, Outcome, Record, Refusal, Table, TypeConfig};

/// What a fuzz target runs on each input.
pub type Target = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/<name>.rs` file and the
/// `fuzz/corpus/<name>/` folder) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("command", command),
    ("append_entries", append_entries),
    ("vote", vote),
    ("install_snapshot", install_snapshot),
    ("fleet_request", fleet_request),
    ("peer_reply", peer_reply),
    ("sealed", sealed),
    ("request_state", request_state),
    ("jsonrpc", jsonrpc),
    ("jwt", jwt),
    ("jwks", jwks),
];

/// Decodes `data` as another node's postcard body; when it decodes, checks that the
/// value's encoding decodes to the same encoding.
fn postcard<T: Serialize + DeserializeOwned>(data: &[u8]) {
    let Ok(value) = wire::decode::<T>(data) else {
        return;
    };
    let bytes = postcard::to_stdvec(&value).expect("a decoded value encodes");
    let again = wire::decode::<T>(&bytes).expect("an encoded value decodes");
    let twice = postcard::to_stdvec(&again).expect("a decoded value encodes");
    assert_eq!(bytes, twice, "encoding is stable");
}

/// A command, as a log entry carries it and as `/fleet/write` receives it.
pub fn command(data: &[u8]) {
    postcard::<Command>(data);
}

/// The body of `/raft/append`.
pub fn append_entries(data: &[u8]) {
    postcard::<AppendEntriesRequest<TypeConfig>>(data);
}

/// The body of `/raft/vote`.
pub fn vote(data: &[u8]) {
    postcard::<VoteRequest<NodeId>>(data);
}

/// The body of `/raft/snapshot`.
pub fn install_snapshot(data: &[u8]) {
    postcard::<InstallSnapshotRequest<TypeConfig>>(data);
}

/// The other postcard bodies of the internal listener, chosen by the first byte:
/// `/fleet/applied`, `/fleet/read-index`, and `/fleet/answer` with the JSON-RPC message
/// it carries.
pub fn fleet_request(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => postcard::<u64>(body),
        1 => postcard::<()>(body),
        _ => {
            postcard::<ForwardedAnswer>(body);
            if let Ok(answer) = wire::decode::<ForwardedAnswer>(body) {
                jsonrpc(answer.message.as_bytes());
            }
        }
    }
}

/// What a node reads back from a peer, chosen by the first byte: the answers to append,
/// vote and snapshot messages, to forwarded writes, read-index and applied requests, and
/// to a forwarded client answer.
pub fn peer_reply(data: &[u8]) {
    type RaftReply<T, E = RaftError<NodeId>> = Reply<T, E>;
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => postcard::<RaftReply<AppendEntriesResponse<NodeId>>>(body),
        1 => postcard::<RaftReply<VoteResponse<NodeId>>>(body),
        2 => postcard::<
            RaftReply<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
        >(body),
        3 => postcard::<Result<(Outcome, u64), Refusal>>(body),
        4 => postcard::<Result<Option<u64>, Refusal>>(body),
        _ => postcard::<bool>(body),
    }
}

/// A key ring with one fixed key: fuzzing reaches what follows a failed open, and what a
/// sealed value holds when its bytes are sealed here.
fn sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER
        .get_or_init(|| Sealer::single(Key::from_hex(&"5a".repeat(32)).expect("64 hex characters")))
}

/// A stored record (from a snapshot a leader sent, or sled), and sealed bytes opened as a
/// node opens them: arbitrary bytes must be refused, bytes sealed here must open.
pub fn sealed(data: &[u8]) {
    let sealer = sealer();
    let aad = crate::raft::command::storage_key(Table::McpSessions, b"key");
    if let Some(record) = Record::decode(data) {
        assert_eq!(Record::decode(&record.encode()), Some(record.clone()));
        let _ = Sealer::key_id(&record.sealed);
        let _ = sealer.open(&aad, &record.sealed);
    }
    let _ = Sealer::key_id(data);
    let _ = sealer.open(&aad, data);
    let sealed = sealer.seal(&aad, data);
    assert_eq!(Sealer::key_id(&sealed), Some(sealer.active()));
    assert_eq!(sealer.open(&aad, &sealed).ok().as_deref(), Some(data));
}

/// A `requestState` as a client sends it back: any text.
pub fn request_state(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let binding = crate::auth::Principal::anonymous().binding();
    let _ = crate::mcp::mrtr::open(sealer(), &binding, "tools/call:t", &Map::new(), token);
}

/// A JSON-RPC POST body as the MCP endpoint reads it: one message or a batch, each
/// validated as a message, a request's `_meta` read for its era.
pub fn jsonrpc(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    for item in items {
        if let Ok(Message::Request { params, .. } | Message::Notification { params, .. }) =
            Message::from_value(item)
        {
            if ModernMeta::declared(&params) {
                let _ = ModernMeta::parse(&params);
            }
        }
    }
}

/// Keys of every family a token may name, for the signature check that follows the
/// header checks; made of fixed bytes, so no signature ever verifies.
fn keys() -> &'static [DecodingKey; 3] {
    static KEYS: OnceLock<[DecodingKey; 3]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let n = URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
        let coordinate = URL_SAFE_NO_PAD.encode([0x17u8; 32]);
        [
            DecodingKey::from_rsa_components(&n, "AQAB").expect("RSA components"),
            DecodingKey::from_ec_components(&coordinate, &coordinate).expect("EC components"),
            DecodingKey::from_ed_components(&coordinate).expect("Ed25519 component"),
        ]
    })
}

/// A bearer token, as far as a node reads it before its signature is checked: whether it
/// is a JWT, its header and unverified issuer, then the library's decoding with a key of
/// the family its header names, its signature checked by `ring` as on a node.
pub fn jwt(data: &[u8]) {
    crate::auth::jwt_crypto::install();
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::auth::jwt::is_jwt(token);
    let Ok(claimed) = crate::auth::jwt::claimed(token) else {
        return;
    };
    assert!(!matches!(
        claimed.alg,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ));
    let key = match claimed.alg.family() {
        AlgorithmFamily::Rsa => &keys()[0],
        AlgorithmFamily::Ec => &keys()[1],
        _ => &keys()[2],
    };
    let validation = Validation::new(claimed.alg);
    let _ = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation);
}

/// An issuer's key set (JWKS document) as the JWKS actor reads it: every key parsed on
/// its own, then looked up as a token would.
pub fn jwks(data: &[u8]) {
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let allowed: Vec<Algorithm> = crate::auth::ALGORITHMS
        .iter()
        .map(|name| name.parse().expect("an algorithm jsonwebtoken knows"))
        .collect();
    let set = crate::auth::jwt::KeySet::parse(&document, &allowed);
    let kid = document
        .pointer("/keys/0/kid")
        .and_then(Value::as_str)
        .unwrap_or("k");
    for alg in allowed {
        let _ = set.find(Some(kid), alg);
        let _ = set.find(None, alg);
    }
    assert!(!set.withdrawn_in(&set));
}

#[cfg(test)]
mod seeds;
#[cfg(test)]
mod tests;
