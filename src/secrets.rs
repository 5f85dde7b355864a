//! The `secrets` command: set, list and delete tenants' secrets through any node's
//! internal listener, as `cluster` does (same `--via`, cluster secret and exit status).
//! A value is read from standard input or a file, never from the command line, where
//! other users of the machine and shell history would see it.

use std::io::Read;

use serde_json::{json, Value};

use crate::cli::{SecretsAction, SecretsArgs};
use crate::cluster;
use crate::raft::Client;

/// Why a secrets command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// As for `cluster`: no secret, no `--via`, unreachable or refusing node.
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// The value could not be read.
    #[error("reading the secret's value: {0}")]
    Read(std::io::Error),
    /// The value read was empty.
    #[error("the secret's value is empty (give it on standard input or with --from-file)")]
    EmptyValue,
}

impl Error {
    /// Whether the command line was incomplete or malformed (exit status 2), rather than
    /// the node unreachable or refusing (exit status 1).
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Cluster(e) => e.is_usage(),
            Error::Read(_) | Error::EmptyValue => true,
        }
    }
}

/// Runs `args` and prints the node's answer as JSON on standard output.
pub async fn run(args: &SecretsArgs, configured_secret: Option<&str>) -> Result<(), Error> {
    let via = cluster::via_addr(args.remote.via.as_deref().ok_or(cluster::Error::NoVia)?)?;
    let secret = args
        .remote
        .cluster_secret
        .as_deref()
        .or(configured_secret)
        .ok_or(cluster::Error::NoSecret)?;
    let (path, body) = match &args.action {
        SecretsAction::Set {
            tenant,
            name,
            from_file,
        } => {
            let value = match from_file {
                Some(path) => std::fs::read_to_string(path).map_err(Error::Read)?,
                None => {
                    let mut value = String::new();
                    std::io::stdin()
                        .read_to_string(&mut value)
                        .map_err(Error::Read)?;
                    value
                }
            };
            let value = strip_newline(&value);
            if value.is_empty() {
                return Err(Error::EmptyValue);
            }
            (
                crate::http::secrets_path::SET,
                json!({ "tenant": tenant, "name": name, "value": value }),
            )
        }
        SecretsAction::List { tenant } => {
            (crate::http::secrets_path::LIST, json!({ "tenant": tenant }))
        }
        SecretsAction::Delete { tenant, name } => (
            crate::http::secrets_path::DELETE,
            json!({ "tenant": tenant, "name": name }),
        ),
    };
    let client = Client::new(secret);
    let answer: Value = cluster::ask(&client, &via, path, Some(&body)).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_else(|_| answer.to_string())
    );
    Ok(())
}

/// `value` without one trailing newline, which `echo` and editors add.
fn strip_newline(value: &str) -> &str {
    let value = value.strip_suffix('\n').unwrap_or(value);
    value.strip_suffix('\r').unwrap_or(value)
}
