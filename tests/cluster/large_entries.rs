//! Seen 1 of issue 9: large entries must not wedge replication. A follower is held
//! (SIGSTOP) while a burst of `initialize` requests, each with a `clientInfo` just under
//! 16 KiB, commits through the leader and the other follower: it falls about 3 MB behind,
//! more than one AppendEntries may carry (the test budget is 256 KiB, and internal
//! listeners refuse bodies over about 1 MiB with 413). Then it runs again and the other
//! follower is held instead, so nothing can commit until the leader has sent it the whole
//! backlog: resent whole, the batch would be refused forever and commits would freeze on
//! every node, as they did in the review. Afterwards a normal `initialize` commits
//! through every node and every node applies what the leader has.

use serde_json::json;

use crate::client::{Reply, Session};
use crate::harness::{sample, Cluster, READY_DEADLINE};

/// Concurrent `initialize` requests in the burst.
const BURST: usize = 200;
/// Size of each burst request's `clientInfo` (its `description`): just under the 16 KiB
/// that `sessions.max_client_bytes` allows for `clientInfo` and `capabilities` together.
const CLIENT_INFO_BYTES: usize = 16 * 1024 - 256;
/// The test's AppendEntries budget: a backlog of 200 such entries needs a dozen appends.
const MAX_APPEND_BYTES: &str = "262144";
/// The entry cap must leave room for the request in the budget.
const MAX_ENTRY_BYTES: &str = "65536";

/// Sends the burst through `url`, all at once, and returns how many were answered 200.
fn burst(url: &str) -> usize {
    let description = "d".repeat(CLIENT_INFO_BYTES);
    let threads: Vec<_> = (0..BURST)
        .map(|i| {
            let url = url.to_owned();
            let info =
                json!({ "name": format!("burst-{i}"), "version": "1", "description": description });
            std::thread::spawn(move || Session::open_described(&url, info, None, json!({})))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a burst thread"))
        .filter(|reply| reply.as_ref().is_ok_and(|r: &Reply| r.status == 200))
        .count()
}

#[test]
fn a_burst_of_large_entries_does_not_wedge_replication() {
    let mut cluster = Cluster::builder()
        .env("MCP_FLEET_RAFT__MAX_APPEND_BYTES", MAX_APPEND_BYTES)
        .env("MCP_FLEET_RAFT__MAX_ENTRY_BYTES", MAX_ENTRY_BYTES)
        .start(3);
    let leader = cluster.leader();
    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader)
        .collect();
    let (behind, other) = (followers[0], followers[1]);
    let base = cluster.status(leader)["last_log_index"]
        .as_u64()
        .expect("an index");

    cluster.pause(behind);
    let url = cluster.node(leader).mcp_url();
    let committed = burst(&url);
    eprintln!("burst: {committed} of {BURST} initialize requests answered 200");
    let backlog = cluster.status(leader)["last_log_index"]
        .as_u64()
        .expect("an index");
    // Writes waiting together share entries of up to MAX_ENTRY_BYTES, so the backlog is
    // counted in the writes the entries carry: at most four of these fit one.
    let per_entry = MAX_ENTRY_BYTES.parse::<usize>().expect("a number") / CLIENT_INFO_BYTES;
    assert!(committed >= BURST / 2, "the burst committed: {committed}");
    assert!(
        backlog >= base + (committed / per_entry) as u64,
        "the burst reached the log: {backlog}"
    );

    // Only the leader and the follower that fell behind run: nothing commits until that
    // follower has the backlog.
    cluster.resume(behind);
    cluster.pause(other);
    cluster.eventually(
        "a write to commit while the follower with the backlog is needed for a quorum",
        READY_DEADLINE,
        || {
            let reply = Session::open_as(&url, "needs-the-backlog", None).ok()?;
            (reply.status == 200).then_some(())
        },
    );
    cluster.resume(other);

    // The fleet commits: every node is ready and a normal session commits through each
    // (the node answers 503 when it cannot commit within raft.write_timeout).
    for id in cluster.ids() {
        cluster.wait_ready(id);
    }
    for id in cluster.ids() {
        let reply = Session::open_as(&cluster.node(id).mcp_url(), "after-the-burst", None)
            .unwrap_or_else(|e| panic!("initialize via node {id}: {e}\n{}", cluster.logs()));
        assert_eq!(
            reply.status,
            200,
            "initialize via node {id} after the burst: {reply:?}\n{}",
            cluster.logs()
        );
    }
    let leader = cluster.leader();
    let last = cluster.status(leader)["last_log_index"]
        .as_u64()
        .expect("an index");
    cluster.wait_applied(last);

    // The backlog went out in pieces within the budget. Whether the leader's log reads
    // or its network split it (an entry carries up to four of these writes, so the reads
    // alone may keep every append within it), no append carried more than the budget,
    // and together they carried more than several appends may.
    let pages: Vec<String> = cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.try_metrics(id))
        .collect();
    let total = |series: &str| {
        pages
            .iter()
            .map(|p| sample(p, series).unwrap_or(0.0))
            .sum::<f64>()
    };
    let within: f64 = pages
        .iter()
        .filter_map(|page| {
            page.lines()
                .find(|l| l.starts_with("mcp_fleet_raft_append_bytes_bucket{le=\"262144"))?
                .split_whitespace()
                .last()?
                .parse::<f64>()
                .ok()
        })
        .sum();
    let appends = total("mcp_fleet_raft_append_bytes_count");
    let budget: f64 = MAX_APPEND_BYTES.parse().expect("a number");
    assert_eq!(within, appends, "an append over the budget went out");
    assert!(
        total("mcp_fleet_raft_append_bytes_sum") > 4.0 * budget,
        "the backlog went out in fewer bytes than four appends may carry"
    );
}
