//! The `cluster` command: status and membership changes of a running fleet, through any
//! node's internal listener. Every subcommand says on standard error which node it asked;
//! the node's answer goes to standard output as JSON.

use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{ClusterAction, ClusterArgs};
use crate::raft::network::{path, CallError};
use crate::raft::Client;

/// A join waits for the new node to catch up, which may take a while on a large store.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Why a cluster command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No cluster secret was given.
    #[error("the cluster secret is required: set MCP_FLEET_CLUSTER_SECRET or --cluster-secret")]
    NoSecret,
    /// No node to ask was given.
    #[error(
        "--via is required: the internal address (HOST:PORT) of any node of the fleet, \
         as its `--raft-listen` or `--raft-advertise` says"
    )]
    NoVia,
    /// `--via` is not an internal address.
    #[error("--via `{0}`: give the internal listener as HOST:PORT or http://HOST:PORT")]
    BadVia(String),
    /// The node could not be reached.
    #[error("{via}: {error}")]
    Call {
        /// The node asked.
        via: String,
        /// What went wrong.
        error: CallError,
    },
    /// The node refused the cluster secret presented.
    #[error("the node at {via} refused the cluster secret (wrong secret?)")]
    Secret {
        /// The node asked.
        via: String,
    },
    /// The node refused.
    #[error("{via} answered HTTP {status}: {}", reason(.body))]
    Refused {
        /// The node asked.
        via: String,
        /// The HTTP status.
        status: u16,
        /// Its answer.
        body: Value,
    },
}

impl Error {
    /// Whether the command line was incomplete or malformed (exit status 2), rather than
    /// the node unreachable or refusing (exit status 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::NoSecret | Error::NoVia | Error::BadVia(_))
    }
}

/// The `error` of a refusal, or the whole answer when it has none.
fn reason(body: &Value) -> String {
    body["error"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned)
}

/// The `HOST:PORT` of `--via`, given as such or as an `http://` URL (a trailing slash
/// allowed); anything else, `https://` included (the internal listener speaks plain HTTP),
/// is refused rather than turned into a URL that names another host.
pub fn via_addr(given: &str) -> Result<String, Error> {
    let bad = || Error::BadVia(given.to_owned());
    let rest = match given.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return Err(bad()),
        None => given,
    };
    let addr = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || addr.contains(['/', '?', '#', '@']) || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(addr.to_owned())
}

/// Runs `args` and prints the node's answer as JSON on standard output.
pub async fn run(args: &ClusterArgs, configured_secret: Option<&str>) -> Result<(), Error> {
    let via = via_addr(args.remote.via.as_deref().ok_or(Error::NoVia)?)?;
    let secret = args
        .remote
        .cluster_secret
        .as_deref()
        .or(configured_secret)
        .ok_or(Error::NoSecret)?;
    let client = Client::new(secret);
    let (path, body) = match &args.action {
        ClusterAction::Status => (path::MEMBERS, None),
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
    let answer = ask(&client, &via, path, body.as_ref()).await?;
    warn(&answer);
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_else(|_| answer.to_string())
    );
    Ok(())
}

/// Asks the node at `via` (already checked by [`via_addr`]) to run `path` with `body`;
/// the node's JSON answer, or why it failed (a refused cluster secret said as such).
pub(crate) async fn ask(
    client: &Client,
    via: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, Error> {
    let via = via.to_owned();
    eprintln!("mcp-fleet: asking the node at {via}");
    let (status, answer) = client
        .json(&via, path, body, TIMEOUT)
        .await
        .map_err(|error| Error::Call {
            via: via.clone(),
            error,
        })?;
    if status == 401 && body_says_wrong_secret(&answer) {
        return Err(Error::Secret { via });
    }
    if !(200..300).contains(&status) {
        return Err(Error::Refused {
            via,
            status,
            body: answer,
        });
    }
    Ok(answer)
}

/// Whether a 401 is the internal listener refusing the secret presented (not a proxy's).
fn body_says_wrong_secret(answer: &Value) -> bool {
    answer["error"]
        .as_str()
        .is_some_and(|e| e.contains("cluster secret"))
}

/// Repeats on standard error which node made a change it was forwarded to, and what the
/// answer warns of, where a person running the command sees it even when standard output
/// goes to a script.
fn warn(answer: &Value) {
    let forwarded = &answer["forwarded_to"];
    if let (Some(id), Some(addr)) = (forwarded["node_id"].as_u64(), forwarded["addr"].as_str()) {
        eprintln!("mcp-fleet: the node asked forwarded it to the leader, node {id} at {addr}");
    }
    if let Some(warning) = answer["warning"].as_str() {
        eprintln!("mcp-fleet: warning: {warning}");
    }
    let unconfirmed = answer["unconfirmed_members"]
        .as_array()
        .filter(|ids| !ids.is_empty());
    if let Some(ids) = unconfirmed {
        eprintln!(
            "mcp-fleet: warning: members {} did not confirm they applied it (unreachable?); \
             each applies it once it hears from the leader",
            Value::Array(ids.clone())
        );
    }
    let unreachable = answer["unreachable"]
        .as_array()
        .filter(|ids| !ids.is_empty());
    if let Some(ids) = unreachable {
        eprintln!(
            "mcp-fleet: warning: members {} did not answer",
            Value::Array(ids.clone())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_takes_an_address_or_an_http_url() {
        assert_eq!(via_addr("127.0.0.1:7000").unwrap(), "127.0.0.1:7000");
        assert_eq!(via_addr("http://127.0.0.1:7000").unwrap(), "127.0.0.1:7000");
        assert_eq!(via_addr("http://node-2:7000/").unwrap(), "node-2:7000");
        assert_eq!(via_addr("[::1]:7000").unwrap(), "[::1]:7000");
        for bad in [
            "https://127.0.0.1:7000",
            "http://127.0.0.1:7000/cluster",
            "127.0.0.1",
            "http://127.0.0.1",
            ":7000",
            "127.0.0.1:port",
            "http://user@127.0.0.1:7000",
        ] {
            assert!(via_addr(bad).is_err(), "{bad}");
        }
    }
}
