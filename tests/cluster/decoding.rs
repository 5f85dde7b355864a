//! What the internal listener decodes cannot crash a node: a hostile body from a holder of
//! the cluster secret is refused with 400, and the node keeps serving.

use mcp_fleet::internals::raft::{Command, TypeConfig};
use openraft::raft::AppendEntriesRequest;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

use crate::client::{get, post, Session};
use crate::harness::Cluster;

/// About 400 KB of postcard: a `Command::Batch` (variant 5) holding one batch, holding one
/// batch, and so on, ending with an empty one. Decoding it by recursion takes one stack
/// frame per level, far more than a thread's stack holds.
fn nested_batch() -> Vec<u8> {
    let mut bytes = [5u8, 1].repeat(200_000);
    bytes.extend([5, 0]);
    bytes
}

/// An append-entries request whose one entry is [`nested_batch`].
fn append_with_nested_entry() -> Vec<u8> {
    let entry = Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Normal(Command::Expire { now_ms: 0 }),
    };
    let request = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![entry],
        leader_commit: None,
    };
    let mut bytes = postcard::to_stdvec(&request).expect("a request encodes");
    // The encoding ends with the entry's command (Expire, now_ms 0) and no leader commit.
    assert_eq!(bytes.split_off(bytes.len() - 3), [4, 0, 0]);
    bytes.extend(nested_batch());
    bytes.push(0);
    bytes
}

#[test]
fn a_deeply_nested_batch_is_refused_and_the_node_keeps_serving() {
    let cluster = Cluster::start(1);
    let node = cluster.node(1);
    let bearer = format!("Bearer {}", cluster.secret());
    let headers = [("Authorization", bearer.as_str())];
    // Writes forwarded together: a list of one command, that batch.
    let mut forwarded_together = vec![1u8];
    forwarded_together.extend(nested_batch());
    let bodies = [
        ("/fleet/write", nested_batch()),
        ("/fleet/writes", forwarded_together),
        ("/raft/append", append_with_nested_entry()),
    ];
    for (path, body) in bodies {
        assert!(body.len() > 400_000, "{path}: {} bytes", body.len());
        // Small varints and enum tags only: every byte is ASCII.
        let body = String::from_utf8(body).expect("an ASCII body");
        let url = format!("{}{path}", node.internal_url());
        let reply = post(&url, &headers, &body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", cluster.logs()));
        assert_eq!(reply.status, 400, "{path}: {reply:?}");

        // The same process still answers, and still commits writes.
        let status = get(&format!("{}/cluster", node.internal_url()), &headers)
            .unwrap_or_else(|e| panic!("/cluster after {path}: {e}\n{}", cluster.logs()));
        assert_eq!(status.status, 200, "/cluster after {path}: {status:?}");
        let session = Session::create(&node.mcp_url(), "after-nested-batch")
            .unwrap_or_else(|e| panic!("a session after {path}: {e}\n{}", cluster.logs()));
        assert_eq!(session.echo(&node.mcp_url(), "alive"), Ok("alive".into()));
    }
}
