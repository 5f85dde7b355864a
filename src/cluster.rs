//! The `cluster` command: status and membership changes of a running fleet, through any
//! node's internal listener.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{ClusterAction, ClusterArgs};
use crate::raft::network::CallError;
use crate::raft::Client;

/// A join waits for the new node to catch up, which may take a while on a large store.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Why a cluster command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No cluster secret was given.
    #[error("the cluster secret is required: set MCP_FLEET_CLUSTER_SECRET or --cluster-secret")]
    NoSecret,
    /// The node could not be reached.
    #[error("{via}: {error}")]
    Call {
        /// The node asked.
        via: String,
        /// What went wrong.
        error: CallError,
    },
    /// The node refused.
    #[error("{via} answered HTTP {status}: {body}")]
    Refused {
        /// The node asked.
        via: String,
        /// The HTTP status.
        status: u16,
        /// Its answer.
        body: Value,
    },
}

/// Runs `args` and prints the node's answer as JSON on standard output.
pub async fn run(args: &ClusterArgs, configured_secret: Option<&str>) -> Result<(), Error> {
    let secret = args
        .cluster_secret
        .as_deref()
        .or(configured_secret)
        .ok_or(Error::NoSecret)?;
    let client = Client::new(secret);
    let (path, body) = match &args.action {
        ClusterAction::Status => ("/cluster", None),
        ClusterAction::Init { peers } => ("/cluster/init", Some(json!({ "peers": peers }))),
        ClusterAction::Join { node_id, raft_addr } => (
            "/cluster/join",
            Some(json!({ "node_id": node_id, "addr": raft_addr })),
        ),
        ClusterAction::Leave { node_id } => ("/cluster/leave", Some(json!({ "node_id": node_id }))),
        ClusterAction::Reseal => ("/fleet/reseal", Some(json!({}))),
        ClusterAction::Revoke {
            issuer,
            subject,
            token_id,
            session,
        } => {
            let mut body = serde_json::Map::new();
            for (key, value) in [
                ("issuer", issuer),
                ("subject", subject),
                ("token_id", token_id),
                ("session", session),
            ] {
                if let Some(value) = value {
                    body.insert(key.to_owned(), json!(value));
                }
            }
            ("/auth/revoke", Some(Value::Object(body)))
        }
    };
    let (status, answer) = client
        .json(&args.via, path, body.as_ref(), TIMEOUT)
        .await
        .map_err(|error| Error::Call {
            via: args.via.clone(),
            error,
        })?;
    if !(200..300).contains(&status) {
        return Err(Error::Refused {
            via: args.via.clone(),
            status,
            body: answer,
        });
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_else(|_| answer.to_string())
    );
    Ok(())
}
