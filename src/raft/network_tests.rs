//! A leader's AppendEntries against real sockets: over the budget, too slow, refused and
//! down, each answered the way openraft can act on.

use std::io::{Read, Write};
use std::net::TcpListener;

use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

use super::*;
use crate::raft::budget::AppendMetrics;
use crate::raft::{Command, Table};

/// openraft's TTL where the peer must time out; the soft one, 3/4 of it, is what it waits.
const TTL: Duration = Duration::from_millis(200);
/// openraft's TTL where the peer must not time out, however loaded the machine.
const PATIENT: Duration = Duration::from_secs(30);

fn entry(index: u64, bytes: usize) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Put {
            table: Table::McpSessions,
            key: vec![1; 32],
            deadline_ms: None,
            sealed: vec![7; bytes],
        }),
    }
}

fn request(entries: u64, bytes: usize) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: (1..=entries).map(|i| entry(i, bytes)).collect(),
    }
}

fn peer(addr: String, max_append_bytes: usize) -> (Peer, AppendMetrics) {
    let metrics = AppendMetrics::default();
    let budget = Budget {
        max_append_bytes,
        max_entries: 300,
        metrics: metrics.clone(),
    };
    let peer = Peer {
        client: Client::new("secret-for-tests"),
        id: 1,
        target: 2,
        append_url: Client::url(&addr, path::APPEND).ok(),
        addr,
        budget,
        window: Window::default(),
        not_member: Arc::default(),
        ballots: Arc::default(),
    };
    (peer, metrics)
}

/// The entries hint of a PayloadTooLarge, or a description of what came instead.
fn hint(result: AppendResult) -> Result<u64, String> {
    match result {
        Err(RPCError::PayloadTooLarge(e)) => Ok(e.entries_hint()),
        other => Err(format!("{other:?}")),
    }
}

/// A socket that completes connections (the kernel's backlog) and never answers.
fn silent() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// A server that answers every request with `413 Payload Too Large` without reading its
/// body, as actix does past its body limit.
fn refusing() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head);
            let _ = stream.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    addr
}

/// An address where nothing listens.
fn nobody() -> String {
    let (listener, addr) = silent();
    drop(listener);
    addr
}

#[tokio::test]
async fn a_batch_over_the_budget_is_split_before_anything_is_sent() {
    // Nothing listens: had the batch been sent, the answer would be Unreachable.
    let (mut peer, metrics) = peer(nobody(), 64 * 1024);
    let result = peer
        .append_entries(request(10, 20_000), RPCOption::new(PATIENT))
        .await;
    assert_eq!(hint(result), Ok(3), "three 20 kB entries fit 64 KiB");
    assert_eq!(metrics.splits(Split::Budget), 1);
    let result = peer
        .append_entries(request(3, 20_000), RPCOption::new(PATIENT))
        .await;
    assert!(
        matches!(result, Err(RPCError::Unreachable(_))),
        "within the budget it is sent: {result:?}"
    );
}

#[tokio::test]
async fn a_batch_that_times_out_is_retried_with_half_as_many_entries() {
    let (_listener, addr) = silent();
    let (mut peer, metrics) = peer(addr, 1024 * 1024);
    let result = peer
        .append_entries(request(8, 100), RPCOption::new(TTL))
        .await;
    assert_eq!(hint(result), Ok(4));
    assert_eq!(metrics.splits(Split::Timeout), 1);
    // openraft's own hint lapses after a few RPCs and the whole range comes back: the
    // window holds it to what was learned, without sending it again.
    let result = peer
        .append_entries(request(8, 100), RPCOption::new(TTL))
        .await;
    assert_eq!(hint(result), Ok(4));
    assert_eq!(metrics.splits(Split::Window), 1);
    let result = peer
        .append_entries(request(4, 100), RPCOption::new(TTL))
        .await;
    assert_eq!(hint(result), Ok(2));
}

#[tokio::test]
async fn a_single_entry_that_times_out_is_an_ordinary_timeout() {
    let (_listener, addr) = silent();
    let (mut peer, metrics) = peer(addr, 1024 * 1024);
    let result = peer
        .append_entries(request(1, 100), RPCOption::new(TTL))
        .await;
    assert!(
        matches!(result, Err(RPCError::Timeout(_))),
        "one entry cannot be split: {result:?}"
    );
    let result = peer
        .append_entries(request(0, 0), RPCOption::new(TTL))
        .await;
    assert!(
        matches!(result, Err(RPCError::Timeout(_))),
        "a heartbeat: {result:?}"
    );
    assert_eq!(metrics.splits(Split::Timeout), 0);
}

#[tokio::test]
async fn a_batch_the_peer_refuses_is_retried_with_half_as_many_entries() {
    let (mut peer, metrics) = peer(refusing(), 64 * 1024 * 1024);
    let result = peer
        .append_entries(request(6, 100_000), RPCOption::new(PATIENT))
        .await;
    assert_eq!(hint(result), Ok(3));
    assert_eq!(metrics.splits(Split::Failure), 1);
    let result = peer
        .append_entries(request(1, 100), RPCOption::new(PATIENT))
        .await;
    assert!(
        matches!(result, Err(RPCError::Network(_))),
        "one refused entry is an ordinary network error: {result:?}"
    );
}

#[tokio::test]
async fn a_peer_that_is_down_is_unreachable_whatever_the_batch() {
    let (mut peer, metrics) = peer(nobody(), 1024 * 1024);
    let result = peer
        .append_entries(request(8, 100), RPCOption::new(PATIENT))
        .await;
    assert!(
        matches!(result, Err(RPCError::Unreachable(_))),
        "openraft backs off from an unreachable peer: {result:?}"
    );
    // Nothing was learned about sizes.
    let result = peer
        .append_entries(request(8, 100), RPCOption::new(PATIENT))
        .await;
    assert!(
        matches!(result, Err(RPCError::Unreachable(_))),
        "{result:?}"
    );
    for why in [Split::Budget, Split::Window, Split::Timeout, Split::Failure] {
        assert_eq!(metrics.splits(why), 0, "{why:?}");
    }
}
