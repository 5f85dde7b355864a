//! Acknowledged writes survive SIGKILL at any moment: clients keep creating sessions while
//! nodes, leader or not, are killed and restarted in a loop; every session a client was
//! given an id for is then served by every node. Writes that waited together share a log
//! entry; those survive a leader killed mid-stream alike.
//!
//! SIGKILL leaves the page cache alone, so this proves restart and catch-up logic, not
//! fsync; the log store flushes before it acknowledges either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::Session;
use crate::harness::{sample, Cluster, READY_DEADLINE};

/// Kill-and-restart rounds.
const ROUNDS: usize = 6;

#[test]
fn acknowledged_sessions_survive_nodes_killed_in_a_loop() {
    let mut cluster = cluster();
    let writers = Writers::start(&cluster, 3);
    for round in 0..ROUNDS {
        // Alternate between the leader and a follower.
        let leader = cluster.leader();
        let victim = if round % 2 == 0 {
            leader
        } else {
            *cluster.live().iter().find(|&&id| id != leader).unwrap()
        };
        kill_and_restart(&mut cluster, &writers, victim);
    }
    let acknowledged = writers.finish(ROUNDS);
    assert_every_node_serves(&cluster, &acknowledged);
}

#[test]
fn acknowledged_writes_that_shared_entries_survive_the_leader_killed() {
    let mut cluster = cluster();
    // Enough writers, through every node, that writes wait together on the leader.
    let writers = Writers::start(&cluster, 12);
    for _ in 0..2 {
        let leader = cluster.leader();
        // Killed only once its entries carry several writes each, so some of what it
        // acknowledged went in shared entries.
        cluster.eventually(
            &format!("leader {leader} to propose entries of several writes"),
            READY_DEADLINE,
            || {
                let metrics = cluster.try_metrics(leader)?;
                let writes = sample(&metrics, "mcp_fleet_raft_entry_writes_sum")?;
                let entries = sample(&metrics, "mcp_fleet_raft_entry_writes_count")?;
                (writes > entries + 20.0).then_some(())
            },
        );
        kill_and_restart(&mut cluster, &writers, leader);
    }
    let acknowledged = writers.finish(2);
    assert_every_node_serves(&cluster, &acknowledged);
}

/// Three nodes whose one anonymous principal may create sessions for as long as a test
/// runs: the per-principal cap is not what these tests are about.
fn cluster() -> Cluster {
    Cluster::builder()
        .env("MCP_FLEET_SESSIONS__MAX_PER_PRINCIPAL", "100000000")
        .start(3)
}

/// Client threads creating sessions round robin over every node, dead or alive, keeping
/// the ids they were given.
struct Writers {
    acknowledged: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(cluster: &Cluster, count: usize) -> Self {
        let urls: Vec<String> = cluster
            .ids()
            .into_iter()
            .map(|id| cluster.node(id).mcp_url())
            .collect();
        let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
        let failed = Arc::new(Mutex::new(0usize));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
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
                        // A refused request is simply not acknowledged.
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
        Self {
            acknowledged,
            failed,
            stop,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Stops the writers; the ids acknowledged over `rounds` kill/restart rounds.
    fn finish(self, rounds: usize) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        eprintln!(
            "{} sessions acknowledged, {} requests refused during {rounds} kill/restart rounds",
            acknowledged.len(),
            self.failed.lock().unwrap()
        );
        assert!(acknowledged.len() > rounds * 40);
        acknowledged
    }
}

/// SIGKILLs `victim`, waits until the survivors acknowledge more writes, and restarts it.
fn kill_and_restart(cluster: &mut Cluster, writers: &Writers, victim: u64) {
    let before = writers.count();
    cluster.kill(victim);
    // Writes keep being acknowledged by the survivors while the victim is down.
    cluster.eventually(
        &format!("writes to resume after node {victim} was killed"),
        READY_DEADLINE,
        || (writers.count() > before + 40).then_some(()),
    );
    cluster.restart(victim);
    cluster.wait_ready(victim);
}

/// Every node, once it has applied all the leader has, serves every acknowledged session.
fn assert_every_node_serves(cluster: &Cluster, acknowledged: &[String]) {
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
