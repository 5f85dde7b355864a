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
#[derive(Debug, Default, Serialize)]
pub(crate) struct Holdings {}

/// What this node holds that must agree across the fleet, for its own report.
fn holdings(_state: &Internal) -> Holdings {
    Holdings::default()
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
    let mut answer = json!({
        "asked_node": me,
        "leader_id": status.leader_id,
        "term": status.term,
        "members": lines,
        "unreachable": unreachable,
    });
    if status.members.is_empty() {
        // A node outside any group has no members to ask: show what it says of itself.
        answer["asked_report"] = own;
    }
    answer
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
}
