//! Seen 1 of issue 9: large entries must not wedge replication. A follower is held
//! (SIGSTOP) while a burst of `initialize` requests (200, from 20 clients at once), each
//! with a `clientInfo` just under 16 KiB, commits through the leader and the other
//! follower: it falls about 3 MB behind, more than one AppendEntries may carry (the test
//! budget is 256 KiB, and internal listeners refuse bodies over about 1 MiB with 413). Then it runs again and the other
//! follower is held instead, so nothing can commit until the leader has sent it the whole
//! backlog: resent whole, the batch would be refused forever and commits would freeze on
//! every node, as they did in the review. Afterwards a normal `initialize` commits
//! through every node and every node applies what the leader has.

use serde_json::json;

use crate::client::{Reply, Session};
use crate::harness::{sample, Cluster, READY_DEADLINE};

/// `initialize` requests in the burst.
const BURST: usize = 200;
/// Clients sending the burst at once, each its share one request after another. All 200
/// at once made the test measure speed: on a loaded machine (a CI run, debug builds) the
/// writes queued behind each other past `raft.write_timeout` and half were refused 503,
/// again on every retry. What the test needs is the backlog, and 20 clients make it.
const CLIENTS: usize = 20;
/// How many times a burst request is sent when it is answered 503 anyway.
const TRIES: usize = 5;
/// Size of each burst request's `clientInfo` (its `description`): just under the 16 KiB
/// that `sessions.max_client_bytes` allows for `clientInfo` and `capabilities` together.
const CLIENT_INFO_BYTES: usize = 16 * 1024 - 256;
/// The test's AppendEntries budget: a backlog of 200 such entries needs a dozen appends.
const MAX_APPEND_BYTES: &str = "262144";
/// The entry cap must leave room for the request in the budget.
const MAX_ENTRY_BYTES: &str = "65536";

/// Sends the burst through `url` and returns how many requests were answered 200, and
/// what the others got (status or error, with how many of each).
fn burst(url: &str) -> (usize, std::collections::BTreeMap<String, usize>) {
    let description = "d".repeat(CLIENT_INFO_BYTES);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let url = url.to_owned();
            let description = description.clone();
            std::thread::spawn(move || {
                (client..BURST)
                    .step_by(CLIENTS)
                    .map(|i| {
                        let info = json!({
                            "name": format!("burst-{i}"), "version": "1", "description": description,
                        });
                        initialize(&url, &info)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ok = 0;
    let mut others = std::collections::BTreeMap::new();
    for client in clients {
        for reply in client.join().expect("a burst client") {
            match reply {
                Ok(Reply { status: 200, .. }) => ok += 1,
                Ok(reply) => {
                    let why: String = reply.body.chars().take(160).collect();
                    *others
                        .entry(format!("HTTP {} {why}", reply.status))
                        .or_insert(0) += 1
                }
                Err(e) => *others.entry(e.to_string()).or_insert(0) += 1,
            }
        }
    }
    (ok, others)
}

/// One `initialize` with `info`, sent again after a second when refused 503 (as the
/// refusal's `Retry-After` asks), up to [`TRIES`] times.
fn initialize(url: &str, info: &serde_json::Value) -> Result<Reply, ureq::Error> {
    let mut tries = 1;
    loop {
        let reply = Session::open_described(url, info.clone(), None, json!({}));
        match &reply {
            Ok(r) if r.status == 503 && tries < TRIES => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            _ => return reply,
        }
    }
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
    let (committed, others) = burst(&url);
    eprintln!("burst: {committed} of {BURST} initialize requests answered 200; others {others:?}");
    let backlog = cluster.status(leader)["last_log_index"]
        .as_u64()
        .expect("an index");
    // Writes waiting together share entries of up to MAX_ENTRY_BYTES, so the backlog is
    // counted in the writes the entries carry: at most four of these fit one.
    let per_entry = MAX_ENTRY_BYTES.parse::<usize>().expect("a number") / CLIENT_INFO_BYTES;
    assert!(
        committed >= BURST / 2,
        "the burst committed: {committed}; the others got {others:?}; the nodes said:\n{}",
        cluster
            .logs()
            .lines()
            .filter(|l| l.contains("could not commit"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
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
