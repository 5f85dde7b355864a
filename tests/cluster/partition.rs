//! A follower is cut off (SIGSTOP) while the majority goes on: the majority keeps serving
//! and committing; sessions are deleted and a user is revoked through it. When the
//! follower runs again it catches up, and once it reports ready it never serves a deleted
//! session nor accepts the revoked user's old token.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{modern_call, Session};
use crate::fleet::Fleet;
use crate::harness::READY_DEADLINE;

/// Sessions made (and used on the follower) before it is paused.
const SESSIONS: usize = 6;
/// Of those, how many are deleted while it is paused.
const DELETED: usize = 3;
/// Sessions made through the balancer while the follower is paused.
const DURING: usize = 10;
/// Probe rounds on the resumed node after it has applied everything.
const ROUNDS_AFTER_CATCH_UP: usize = 10;

/// What a probe of the resumed node saw, in order.
#[derive(Debug)]
struct Probe {
    at: Duration,
    /// Whether `/ready` had answered 200 before this probe's requests were sent.
    after_ready: bool,
    /// Statuses of `echo` on each deleted session.
    deleted: Vec<u16>,
    /// Status of `whoami` with the revoked user's token.
    revoked_token: u16,
    /// Status of `echo` on the revoked user's session, with her token.
    revoked_session: u16,
}

impl Probe {
    fn stale(&self) -> bool {
        self.deleted.contains(&200) || self.revoked_token == 200 || self.revoked_session == 200
    }
}

/// The status of a request, 0 when it got no HTTP answer.
fn status(reply: Result<crate::client::Reply, ureq::Error>) -> u16 {
    reply.map_or(0, |r| r.status)
}

#[test]
fn a_paused_minority_rejoins_without_serving_what_the_majority_ended() {
    let Some(mut fleet) = Fleet::builder().start(3) else {
        return;
    };
    let leader = fleet.cluster.leader();
    let ids = fleet.cluster.ids();
    let victim = *ids.iter().find(|&&id| id != leader).expect("a follower");
    let majority: Vec<u64> = ids.iter().copied().filter(|&id| id != victim).collect();
    let urls: BTreeMap<u64, String> = ids
        .iter()
        .map(|&id| (id, fleet.cluster.node(id).mcp_url()))
        .collect();
    let url = |id: u64| urls[&id].clone();
    let (alice, bob) = (fleet.token("alice"), fleet.token("bob"));

    // Sessions made all over, each used on the follower so it holds them in memory; alice
    // (to be revoked) is known to it too.
    let sessions: Vec<Session> = (0..SESSIONS)
        .map(|i| {
            Session::create_as(&url(ids[i % ids.len()]), "partition", &bob)
                .unwrap_or_else(|e| panic!("session {i}: {e}"))
        })
        .collect();
    let alice_session = Session::create_as(&url(victim), "partition", &alice)
        .unwrap_or_else(|e| panic!("alice's session: {e}"));
    for session in sessions.iter().chain([&alice_session]) {
        assert_eq!(
            session.echo(&url(victim), "before"),
            Ok("before".to_owned())
        );
    }
    let reply = modern_call(&url(victim), Some(&alice), "whoami", json!({})).expect("whoami");
    assert_eq!(reply.status, 200, "alice before the revocation: {reply:?}");
    let last = fleet.cluster.status(leader)["last_log_index"]
        .as_u64()
        .expect("an index");
    fleet.cluster.wait_applied(last);

    fleet.cluster.pause(victim);
    fleet.wait_lb(victim, false);

    // The majority keeps serving and committing, through the balancer and directly.
    let during: Vec<Session> = (0..DURING)
        .map(|i| {
            Session::create_as(&fleet.url(), "partition", &bob)
                .unwrap_or_else(|e| panic!("session {i} during the pause: {e}\n{}", fleet.logs()))
        })
        .collect();
    for (i, session) in during.iter().enumerate() {
        let target = if i % 2 == 0 {
            fleet.url()
        } else {
            url(majority[i % majority.len()])
        };
        assert_eq!(session.echo(&target, "during"), Ok("during".to_owned()));
    }
    let (deleted, kept) = sessions.split_at(DELETED);
    for (i, session) in deleted.iter().enumerate() {
        let via = url(majority[i % majority.len()]);
        let reply = session.delete(&via).expect("DELETE");
        assert_eq!(reply.status, 204, "delete via {via}: {reply:?}");
    }
    let via = fleet.cluster.node(majority[0]).internal().to_string();
    let issuer = fleet.issuer.url().to_owned();
    let out = fleet.cluster.cli(&[
        "revoke",
        "--via",
        &via,
        "--issuer",
        &issuer,
        "--subject",
        "alice",
    ]);
    fleet
        .cluster
        .assert_success(&out, "cluster revoke of alice through the majority");
    for &id in &majority {
        fleet.eventually(
            &format!("node {id} to refuse alice"),
            READY_DEADLINE,
            || {
                let reply = modern_call(&url(id), Some(&alice), "whoami", json!({})).ok()?;
                (reply.status == 401).then_some(())
            },
        );
    }
    let majority_leader = fleet.cluster.leader();
    let target = fleet.cluster.status(majority_leader)["last_log_index"]
        .as_u64()
        .expect("an index");

    // Probe the resumed node directly, from the moment it runs again.
    fleet.cluster.resume(victim);
    let resumed_at = Instant::now();
    let mut probes: Vec<Probe> = Vec::new();
    let mut ready_at = None;
    let mut caught_up_at = None;
    let mut rounds_after = 0;
    let deadline = resumed_at + READY_DEADLINE;
    while rounds_after < ROUNDS_AFTER_CATCH_UP {
        assert!(
            Instant::now() < deadline,
            "node {victim} did not catch up\n{}",
            fleet.logs()
        );
        if ready_at.is_none() && fleet.cluster.is_ready(victim) {
            ready_at = Some(resumed_at.elapsed());
        }
        let probe = Probe {
            at: resumed_at.elapsed(),
            after_ready: ready_at.is_some(),
            deleted: deleted
                .iter()
                .map(|s| status(s.echo_reply(&url(victim), "stale?")))
                .collect(),
            revoked_token: status(modern_call(&url(victim), Some(&alice), "whoami", json!({}))),
            revoked_session: status(alice_session.echo_reply(&url(victim), "stale?")),
        };
        probes.push(probe);
        if caught_up_at.is_none() {
            let applied = fleet
                .cluster
                .try_status(victim)
                .and_then(|s| s["applied_index"].as_u64());
            if applied.is_some_and(|a| a >= target) {
                caught_up_at = Some(resumed_at.elapsed());
            }
        }
        if caught_up_at.is_some() && ready_at.is_some() {
            rounds_after += 1;
        }
    }
    let stale_before_ready: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.stale() && !p.after_ready)
        .collect();
    let stale_after_ready: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.stale() && p.after_ready)
        .collect();
    let stale_until = probes.iter().filter(|p| p.stale()).map(|p| p.at).max();
    eprintln!(
        "partition: node {victim} paused while the majority made {DURING} sessions, deleted \
         {DELETED} and revoked alice; after SIGCONT it was ready after {:?} and had applied \
         index {target} after {:?}; {} probe rounds, {} stale before ready, {} stale after \
         ready (the last {:?} after SIGCONT); first probes: {:?}",
        ready_at.expect("ready"),
        caught_up_at.expect("caught up"),
        probes.len(),
        stale_before_ready.len(),
        stale_after_ready.len(),
        stale_until,
        &probes[..probes.len().min(3)],
    );
    assert!(
        stale_after_ready.is_empty(),
        "node {victim} reported ready, then served what the majority had ended: {stale_after_ready:#?}"
    );
    // Every probe was answered: no deleted session came back as anything but 404, no
    // revoked token as anything but 401.
    let last = probes.last().expect("probes");
    assert_eq!(last.deleted, vec![404; DELETED], "{last:?}");
    assert_eq!(
        (last.revoked_token, last.revoked_session),
        (401, 401),
        "{last:?}"
    );

    // It serves everything else, including what was made while it was paused.
    for session in kept.iter().chain(&during) {
        assert_eq!(
            session.echo(&url(victim), "after"),
            Ok("after".to_owned()),
            "session {} on node {victim}",
            session.id
        );
    }
    let reply = modern_call(&url(victim), Some(&bob), "whoami", json!({})).expect("whoami");
    assert_eq!(reply.status, 200, "bob on node {victim}: {reply:?}");
}

/// A node cut off from the majority (here: the other two nodes paused) refuses the writes
/// it cannot commit: a new session through it is refused with a 503 within the write
/// timeout, never acknowledged. Once the majority is back, writes through it succeed, and
/// the refused attempt left nothing behind.
#[test]
fn a_minority_refuses_writes_it_cannot_commit() {
    let mut cluster = crate::harness::Cluster::builder()
        .env("MCP_FLEET_RAFT__WRITE_TIMEOUT", "2s")
        .start(3);
    let leader = cluster.leader();
    let lonely = *cluster.live().iter().find(|&&id| id != leader).unwrap();
    let url = cluster.node(lonely).mcp_url();
    let others: Vec<u64> = cluster.live_except(lonely);
    for &id in &others {
        cluster.pause(id);
    }
    let started = Instant::now();
    let refused = Session::open(&url, "minority");
    let took = started.elapsed();
    eprintln!("minority: a create through the lone node answered after {took:?}: {refused:?}");
    let err = refused.expect_err("a write the node could not commit was acknowledged");
    assert!(
        err.contains("status: 503"),
        "expected a 503 for an uncommittable write, got: {err}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the refusal took {took:?}, beyond any write timeout"
    );
    for &id in &others {
        cluster.resume(id);
    }
    let session = cluster.eventually("writes through the node to resume", READY_DEADLINE, || {
        Session::open(&url, "minority").ok()
    });
    for id in cluster.live() {
        let via = cluster.node(id).mcp_url();
        assert_eq!(session.echo(&via, "back"), Ok("back".to_owned()));
    }
}
