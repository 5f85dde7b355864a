//! The internal listener refuses callers without the cluster secret, the public listener
//! exposes no internal route, and nothing a client sent reaches disk in plaintext.

use std::path::{Path, PathBuf};

use crate::client::{get, post, Session};
use crate::harness::{random_hex, Cluster};

#[test]
fn requests_without_the_cluster_secret_are_refused() {
    let cluster = Cluster::start(1);
    let node = cluster.node(1);
    let secret = cluster.secret();
    let wrong = [
        "Bearer not-the-cluster-secret".to_owned(),
        // Comparisons must be exact, not by prefix.
        format!("Bearer {secret}x"),
        format!("Bearer {}", &secret[..secret.len() - 1]),
        // The secret without the scheme.
        secret.to_owned(),
    ];
    let cluster_url = format!("{}/cluster", node.internal_url());
    let append_url = format!("{}/raft/append", node.internal_url());

    let reply = get(&cluster_url, &[]).expect("GET /cluster");
    assert_eq!(reply.status, 401, "/cluster without a secret: {reply:?}");
    assert!(
        reply.body.contains("requires the cluster secret"),
        "{reply:?}"
    );
    // Nobody without the secret can tell a node it was removed, or list the members.
    let removed_url = format!("{}/cluster/removed", node.internal_url());
    let members_url = format!("{}/cluster/members", node.internal_url());
    for bearer in ["", "Bearer not-the-cluster-secret"] {
        let headers: Vec<(&str, &str)> = Some(("Authorization", bearer))
            .filter(|_| !bearer.is_empty())
            .into_iter()
            .collect();
        let reply = post(&removed_url, &headers, "").expect("POST /cluster/removed");
        assert_eq!(
            reply.status, 401,
            "/cluster/removed with {bearer:?}: {reply:?}"
        );
        let reply = get(&members_url, &headers).expect("GET /cluster/members");
        assert_eq!(
            reply.status, 401,
            "/cluster/members with {bearer:?}: {reply:?}"
        );
    }
    assert!(cluster.is_ready(1), "node 1 still serves");
    let reply = post(&append_url, &[], "{}").expect("POST /raft/append");
    assert_eq!(
        reply.status, 401,
        "/raft/append without a secret: {reply:?}"
    );
    for bearer in &wrong {
        let headers = [("Authorization", bearer.as_str())];
        let reply = get(&cluster_url, &headers).expect("GET /cluster");
        assert_eq!(reply.status, 401, "/cluster with {bearer:?}: {reply:?}");
        // A secret was presented: the refusal says it was wrong, not missing.
        assert!(reply.body.contains("(wrong secret?)"), "{reply:?}");
        let reply = post(&append_url, &headers, "{}").expect("POST /raft/append");
        assert_eq!(reply.status, 401, "/raft/append with {bearer:?}: {reply:?}");
    }

    // The routes exist: with the secret they are not refused.
    let bearer = format!("Bearer {secret}");
    let headers = [("Authorization", bearer.as_str())];
    let reply = get(&cluster_url, &headers).expect("GET /cluster");
    assert_eq!(reply.status, 200, "/cluster with the secret: {reply:?}");
    // A body that is not a postcard-encoded append request is refused, not obeyed or
    // fatal: the node answers 400 and keeps serving.
    let reply = post(&append_url, &headers, "{}").expect("POST /raft/append");
    assert_eq!(
        reply.status, 400,
        "/raft/append with a bogus body: {reply:?}"
    );
    let reply = get(&cluster_url, &headers).expect("GET /cluster");
    assert_eq!(
        reply.status, 200,
        "/cluster after a bogus append: {reply:?}"
    );

    // The public listener never serves internal routes, secret or not.
    for headers in [&[][..], &headers[..]] {
        let reply = get(&format!("{}/cluster", node.base()), headers).expect("GET");
        assert_eq!(reply.status, 404, "public /cluster: {reply:?}");
        let reply = post(&format!("{}/raft/append", node.base()), headers, "{}").expect("POST");
        assert_eq!(reply.status, 404, "public /raft/append: {reply:?}");
    }
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read directory {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sealed_data_dir_holds_no_plaintext() {
    let mut cluster = Cluster::start(3);
    let canary = format!("plaintext-canary-{}", random_hex(12));
    let session = Session::create(&cluster.node(1).mcp_url(), &canary)
        .unwrap_or_else(|e| panic!("a session via node 1: {e}"));
    assert_eq!(
        session.echo(&cluster.node(1).mcp_url(), "sealed"),
        Ok("sealed".to_owned())
    );
    // Every node has the session in its log and its state machine before they stop.
    let leader = cluster.leader();
    let last = cluster.status(leader)["last_log_index"]
        .as_u64()
        .expect("the leader has a log");
    cluster.wait_applied(last);
    // SIGKILL leaves what the nodes wrote in the page cache, where reading sees it.
    cluster.kill_all();

    let mut needles = vec![canary.clone(), session.id.clone()];
    for variant in [
        session.id.to_ascii_lowercase(),
        session.id.to_ascii_uppercase(),
    ] {
        if !needles.contains(&variant) {
            needles.push(variant);
        }
    }
    let mut scanned = 0;
    for id in cluster.ids() {
        for file in files_under(&cluster.node(id).data_dir()) {
            let bytes =
                std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            scanned += bytes.len();
            for needle in &needles {
                assert!(
                    !contains(&bytes, needle.as_bytes()),
                    "{} holds {needle:?} in plaintext",
                    file.display()
                );
            }
        }
    }
    assert!(scanned > 0, "the data directories are empty");
}
