//! What a node says about itself on `GET /cluster`, and `cluster status`: every member's
//! report, gathered by the node asked, with the members that did not answer shown as
//! unreachable rather than left out.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::internal::Internal;
use crate::raft::{NodeId, Standing, Status};

/// How long the node asked waits for each other member's report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// What one node says about itself on `GET /cluster`.
#[derive(Debug, Serialize)]
pub(crate) struct NodeReport {
    /// Its view of the group (flattened: `node_id`, `state`, `members`, indexes, ...).
    #[serde(flatten)]
    pub raft: Status,
    /// `member`, `waiting` (to be added to a group) or `removed`.
    pub standing: &'static str,
    /// Why it serves nothing, when it is not a member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_serving: Option<String>,
    /// What it holds that must agree across the fleet (flattened).
    #[serde(flatten)]
    pub holdings: Holdings,
}

/// What a node holds that every node of a fleet must agree on, so that `cluster status`
/// shows a roll that is out of step: the sealing keys in force (active key id, ring
/// fingerprint) and the catalog's digest go here, filled in by [`holdings`].
#[derive(Debug, Default, Serialize, Clone)]
pub(crate) struct Holdings {
    /// The server's name and version, as `serverInfo` gives them.
    pub server: ServerLine,
    /// A digest of the tools, resources and prompts this node offers.
    pub catalog: String,
}

/// A server's name and version.
#[derive(Debug, Default, Serialize, Clone, PartialEq, Eq)]
pub(crate) struct ServerLine {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// What this node holds that must agree across the fleet, for its own report.
fn holdings(state: &Internal) -> Holdings {
    state.holdings.clone()
}

/// This node's own report.
pub(crate) fn own(state: &Internal) -> NodeReport {
    NodeReport {
        raft: state.store.status(),
        standing: match state.store.standing() {
            Standing::Member => "member",
            Standing::Waiting => "waiting",
            Standing::Removed => "removed",
        },
        not_serving: state.store.not_serving(),
        holdings: holdings(state),
    }
}

/// One member as `cluster status` shows it.
#[derive(Debug, Serialize)]
struct MemberLine {
    id: NodeId,
    addr: String,
    voter: bool,
    /// `leader`, `follower`, `candidate`, `learner`, `unreachable`, or its standing when it
    /// is not a member (`waiting`, `removed`).
    state: String,
    /// The last log index it applied, as it reports.
    applied_index: Option<u64>,
    /// Why it could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Its whole report, as `GET /cluster` on it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<Value>,
}

/// Every member of the group this node holds, each with its own report; members that do
/// not answer are listed as `unreachable`.
pub(crate) async fn members(state: &Internal) -> Value {
    let own = serde_json::to_value(own(state)).unwrap_or(Value::Null);
    let me = state.store.id();
    let status = state.store.status();
    let client = state.store.client().clone();
    let asks = status.members.iter().map(|member| {
        let client = client.clone();
        let own = own.clone();
        async move {
            let answer = if member.id == me {
                Ok(own)
            } else {
                match client
                    .json(&member.addr, "/cluster", None, REPORT_TIMEOUT)
                    .await
                {
                    Ok((200, report)) => Ok(report),
                    Ok((status, body)) => Err(format!("answered HTTP {status}: {body}")),
                    Err(e) => Err(e.to_string()),
                }
            };
            line(member.id, &member.addr, member.voter, answer)
        }
    });
    let lines = futures_util::future::join_all(asks).await;
    let unreachable: Vec<NodeId> = lines
        .iter()
        .filter(|l| l.state == "unreachable")
        .map(|l| l.id)
        .collect();
    let differing = differing_catalogs(&lines);
    let mut answer = json!({
        "asked_node": me,
        "leader_id": status.leader_id,
        "term": status.term,
        "members": lines,
        "unreachable": unreachable,
        "catalogs_agree": differing.is_none(),
    });
    if let Some(differing) = differing {
        // A rolling upgrade shows here while it lasts; each node keeps serving its own.
        answer["catalog_warning"] = json!(differing);
    }
    if status.members.is_empty() {
        // A node outside any group has no members to ask: show what it says of itself.
        answer["asked_report"] = own;
    }
    answer
}

/// When the members that answered do not all serve the same server version and catalog:
/// which node serves what.
fn differing_catalogs(lines: &[MemberLine]) -> Option<String> {
    let offers: Vec<(NodeId, String, String, String)> = lines
        .iter()
        .filter_map(|l| {
            let report = l.report.as_ref()?;
            let catalog = report["catalog"].as_str()?;
            let name = report["server"]["name"].as_str().unwrap_or_default();
            let version = report["server"]["version"].as_str().unwrap_or_default();
            Some((
                l.id,
                name.to_owned(),
                version.to_owned(),
                catalog.to_owned(),
            ))
        })
        .collect();
    let first = offers.first()?;
    if offers
        .iter()
        .all(|o| (&o.1, &o.2, &o.3) == (&first.1, &first.2, &first.3))
    {
        return None;
    }
    let each: Vec<String> = offers
        .iter()
        .map(|(id, name, version, catalog)| {
            format!(
                "node {id}: {name} {version}, catalog {}",
                &catalog[..catalog.len().min(12)]
            )
        })
        .collect();
    Some(format!(
        "the nodes serve different versions or catalogs: {}",
        each.join("; ")
    ))
}

fn line(id: NodeId, addr: &str, voter: bool, answer: Result<Value, String>) -> MemberLine {
    let report = match answer {
        Ok(report) => report,
        Err(error) => {
            return MemberLine {
                id,
                addr: addr.to_owned(),
                voter,
                state: "unreachable".to_owned(),
                applied_index: None,
                error: Some(error),
                report: None,
            }
        }
    };
    let standing = report["standing"].as_str().unwrap_or("member");
    let state = match (standing, report["state"].as_str()) {
        ("member", Some("Follower")) if !voter => "learner".to_owned(),
        ("member", Some(state)) => state.to_ascii_lowercase(),
        (standing, _) => standing.to_owned(),
    };
    MemberLine {
        id,
        addr: addr.to_owned(),
        voter,
        state,
        applied_index: report["applied_index"].as_u64(),
        error: None,
        report: Some(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(voter: bool, answer: Result<Value, String>) -> String {
        line(7, "127.0.0.1:7007", voter, answer).state
    }

    #[test]
    fn each_member_reads_as_its_role_its_standing_or_unreachable() {
        let report = |state: &str, standing: &str| {
            Ok(json!({ "state": state, "standing": standing, "applied_index": 12 }))
        };
        assert_eq!(state(true, report("Leader", "member")), "leader");
        assert_eq!(state(true, report("Follower", "member")), "follower");
        assert_eq!(state(true, report("Candidate", "member")), "candidate");
        assert_eq!(state(false, report("Learner", "member")), "learner");
        assert_eq!(state(false, report("Follower", "member")), "learner");
        assert_eq!(state(true, report("Follower", "removed")), "removed");
        assert_eq!(state(true, report("Learner", "waiting")), "waiting");
        assert_eq!(state(true, Err("refused".into())), "unreachable");
        let line = line(7, "a:1", true, report("Leader", "member"));
        assert_eq!(line.applied_index, Some(12));
        assert!(line.report.is_some() && line.error.is_none());
    }

    fn offering(id: NodeId, version: &str, catalog: &str) -> MemberLine {
        let report = json!({ "state": "Follower", "standing": "member",
            "server": { "name": "acme-mcp", "version": version }, "catalog": catalog });
        line(id, "a:1", true, Ok(report))
    }

    #[test]
    fn a_fleet_whose_nodes_serve_different_catalogs_is_flagged_naming_each() {
        let same = [offering(1, "1.0", "aaaa"), offering(2, "1.0", "aaaa")];
        assert_eq!(differing_catalogs(&same), None);
        let rolling = [offering(1, "1.0", "aaaa"), offering(2, "1.1", "bbbb")];
        let warning = differing_catalogs(&rolling).expect("flagged");
        assert!(
            warning.contains("node 1: acme-mcp 1.0, catalog aaaa"),
            "{warning}"
        );
        assert!(
            warning.contains("node 2: acme-mcp 1.1, catalog bbbb"),
            "{warning}"
        );
        let unreachable = [
            offering(1, "1.0", "aaaa"),
            line(2, "a:2", true, Err("x".into())),
        ];
        assert_eq!(differing_catalogs(&unreachable), None);
    }
}
