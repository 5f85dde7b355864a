//! Acknowledged writes survive SIGKILL at any moment: clients keep creating sessions while
//! nodes, leader or not, are killed and restarted in a loop; every session a client was
//! given an id for is then served by every node.
//!
//! SIGKILL leaves the page cache alone, so this proves restart and catch-up logic, not
//! fsync; the log store flushes before it acknowledges either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::Session;
use crate::harness::{Cluster, READY_DEADLINE};

/// Kill-and-restart rounds.
const ROUNDS: usize = 6;

#[test]
fn acknowledged_sessions_survive_nodes_killed_in_a_loop() {
    // The writers are one anonymous principal creating sessions for as long as the test
    // runs: lift the per-principal cap, which is not what this test is about.
    let mut cluster = Cluster::builder()
        .env("MCP_FLEET_SESSIONS__MAX_PER_PRINCIPAL", "100000000")
        .start(3);
    let urls: Vec<String> = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.node(id).mcp_url())
        .collect();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let failed = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (urls, acknowledged, failed, stop) = (
                urls.clone(),
                acknowledged.clone(),
                failed.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    // Round robin over every node, dead or alive: a refused request is
                    // simply not acknowledged.
                    match Session::open(&urls[i % urls.len()], "durability") {
                        Ok(session) => acknowledged.lock().unwrap().push(session.id),
                        Err(_) => {
                            *failed.lock().unwrap() += 1;
                            // A dead node refuses at once: don't spin on it.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();

    for round in 0..ROUNDS {
        // Alternate between the leader and a follower.
        let leader = cluster.leader();
        let victim = if round % 2 == 0 {
            leader
        } else {
            *cluster.live().iter().find(|&&id| id != leader).unwrap()
        };
        let before = acknowledged.lock().unwrap().len();
        cluster.kill(victim);
        // Writes keep being acknowledged by the survivors while the victim is down.
        cluster.eventually(
            &format!("writes to resume after node {victim} was killed"),
            READY_DEADLINE,
            || (acknowledged.lock().unwrap().len() > before + 40).then_some(()),
        );
        cluster.restart(victim);
        cluster.wait_ready(victim);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!(
        "{} sessions acknowledged, {} requests refused during {ROUNDS} kill/restart rounds",
        acknowledged.len(),
        failed.lock().unwrap()
    );
    assert!(acknowledged.len() > ROUNDS * 40);
    let leader = cluster.leader();
    let applied = cluster.status(leader)["last_log_index"].as_u64().unwrap();
    cluster.wait_applied(applied);
    for id in cluster.ids() {
        let url = cluster.node(id).mcp_url();
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|sid| {
                Session::with_id(sid)
                    .echo_reply(&url, "x")
                    .map_or(true, |r| r.status != 200)
            })
            .collect();
        assert!(
            lost.is_empty(),
            "node {id} lost {} of {} acknowledged sessions, e.g. {:?}\n{}",
            lost.len(),
            acknowledged.len(),
            lost.first(),
            cluster.logs()
        );
    }
}
