//! Who a node is: its id in the group, recorded in its data directory on first start.
//!
//! The replica under `data_dir/raft` holds one member's log and vote. Started under
//! another member's id, it would vote and count itself as that member: a node restarted
//! with a default id once committed alone in a group of three. So the id is written next
//! to the replica before the replica takes its first vote or entry (while it opens), and
//! every later start takes it from there: a configured id that differs is refused, a
//! missing one is filled in. A data directory therefore belongs to exactly one id, and no
//! configuration can make it speak for another member.
//!
//! The record also keeps the membership the node first found itself in (the group it was
//! formed with or joined), for operators: it says which group a data directory belongs to.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

/// The record's file name, inside the data directory.
pub const FILE: &str = "identity.json";

/// Format of the record.
const VERSION: u8 = 1;

/// Why a node's identity could not be settled. Every case but [`Error::Io`] and
/// [`Error::Corrupt`] is a configuration error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured id is not the one the data directory belongs to.
    #[error(
        "node id {given} was given (--node-id, raft.node_id or MCP_FLEET_RAFT__NODE_ID), but \
         data directory {dir} belongs to node {stored}: start it as node {stored} (or without \
         an id), or give node {given} its own data directory"
    )]
    Mismatch {
        /// The data directory.
        dir: String,
        /// The id recorded there.
        stored: NodeId,
        /// The id configured.
        given: NodeId,
    },
    /// A first start without an id: nothing says which member this node is.
    #[error(
        "data directory {dir} has no node id yet: give this node its id on its first start \
         with --node-id N (or raft.node_id, or MCP_FLEET_RAFT__NODE_ID); it is remembered there"
    )]
    Missing {
        /// The data directory.
        dir: String,
    },
    /// A replica written before ids were recorded, started without an id.
    #[error(
        "data directory {dir} holds a replica but no record of its node id (it was written by \
         an older version): start it once with --node-id N, the id it has in the group"
    )]
    Unrecorded {
        /// The data directory.
        dir: String,
    },
    /// The initial voters do not include this node.
    #[error("configuration key `raft.peers` does not list this node (node id {id})")]
    NotInPeers {
        /// This node's id.
        id: NodeId,
    },
    /// The record could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The record is not one this version can read.
    #[error("{path} is not a node identity record: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    /// Whether the fault is in the configuration (the operator's to fix) rather than on disk.
    pub fn is_config(&self) -> bool {
        !matches!(self, Error::Io { .. } | Error::Corrupt { .. })
    }
}

/// What is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    version: u8,
    node_id: NodeId,
    /// The members (id → internal address) when this node first found itself among them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_membership: Option<BTreeMap<NodeId, String>>,
    /// The id of the group this data directory belongs to, once the node has learnt it
    /// (the first node to check its keys draws it; see `raft::keycheck`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group_id: Option<String>,
}

/// A node's settled identity and where it is recorded.
#[derive(Debug, Clone)]
pub struct Identity {
    path: PathBuf,
    node_id: NodeId,
    /// Whether the record holds the first membership already.
    has_first_membership: bool,
    /// The group this data directory belongs to, once recorded.
    group_id: Option<String>,
}

/// An identity settled on a first start whose record is not written yet; see
/// [`Identity::settle_unwritten`].
#[derive(Debug)]
#[must_use = "the id is not recorded until this is written"]
pub struct Unwritten {
    path: PathBuf,
    record: Record,
    /// The directory held a replica already (written by a version before the record).
    had_replica: bool,
}

impl Unwritten {
    /// Records the id durably (the file and its directory fsynced).
    pub fn write(self) -> Result<(), Error> {
        write(&self.path, &self.record)?;
        let (node_id, dir) = (
            self.record.node_id,
            self.path.parent().unwrap_or(&self.path),
        );
        if self.had_replica {
            tracing::info!(node_id, dir = %dir.display(), "recorded the node id of an existing replica");
        } else {
            tracing::info!(node_id, dir = %dir.display(), "recorded this node's id in a new data directory");
        }
        Ok(())
    }
}

impl Identity {
    /// Settles the id of the node whose data directory is `dir` (which must exist):
    /// the recorded id, which `given` (the configured id) must match; on a first start,
    /// `given`, else `default` (dev mode's 1), with its record handed back unwritten
    /// ([`Unwritten::write`] records it durably), for the caller to write while it does
    /// other work. The caller writes it before the replica under `dir` takes any vote or
    /// entry: until then a crash leaves a replica with nothing in it, which the next start
    /// treats like an empty directory.
    pub fn settle_unwritten(
        dir: &Path,
        given: Option<NodeId>,
        default: Option<NodeId>,
    ) -> Result<(Self, Option<Unwritten>), Error> {
        let path = dir.join(FILE);
        let shown = || dir.display().to_string();
        if let Some(record) = read(&path)? {
            return match given {
                Some(given) if given != record.node_id => Err(Error::Mismatch {
                    dir: shown(),
                    stored: record.node_id,
                    given,
                }),
                _ => Ok((
                    Self {
                        path,
                        node_id: record.node_id,
                        has_first_membership: record.first_membership.is_some(),
                        group_id: record.group_id,
                    },
                    None,
                )),
            };
        }
        let has_replica = dir
            .join("raft")
            .read_dir()
            .is_ok_and(|mut entries| entries.next().is_some());
        let node_id = match (given, default) {
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) if has_replica => return Err(Error::Unrecorded { dir: shown() }),
            (None, None) => return Err(Error::Missing { dir: shown() }),
        };
        let unwritten = Unwritten {
            path: path.clone(),
            record: Record {
                version: VERSION,
                node_id,
                first_membership: None,
                group_id: None,
            },
            had_replica: has_replica,
        };
        Ok((
            Self {
                path,
                node_id,
                has_first_membership: false,
                group_id: None,
            },
            Some(unwritten),
        ))
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Whether the first membership is recorded already.
    pub fn has_first_membership(&self) -> bool {
        self.has_first_membership
    }

    /// The group this data directory belongs to, once recorded.
    pub fn group_id(&self) -> Option<&str> {
        self.group_id.as_deref()
    }

    /// Records `group` as the group this data directory belongs to, unless one is recorded
    /// already (which is never replaced). Returns whether it wrote.
    pub fn record_group(&mut self, group: &str) -> Result<bool, Error> {
        if self.group_id.is_some() {
            return Ok(false);
        }
        let mut record = read(&self.path)?.ok_or_else(|| Error::Corrupt {
            path: self.path.display().to_string(),
            message: "the record disappeared".to_owned(),
        })?;
        let wrote = record.group_id.is_none();
        if wrote {
            record.group_id = Some(group.to_owned());
            write(&self.path, &record)?;
        }
        self.group_id = record.group_id;
        Ok(wrote)
    }

    /// Records `members` as the first membership this node found itself in, unless one is
    /// recorded already. Returns whether it wrote.
    pub fn record_first_membership(
        &mut self,
        members: BTreeMap<NodeId, String>,
    ) -> Result<bool, Error> {
        if self.has_first_membership {
            return Ok(false);
        }
        let mut record = read(&self.path)?.ok_or_else(|| Error::Corrupt {
            path: self.path.display().to_string(),
            message: "the record disappeared".to_owned(),
        })?;
        if record.first_membership.is_none() {
            record.first_membership = Some(members);
            write(&self.path, &record)?;
        }
        self.has_first_membership = true;
        Ok(true)
    }
}

fn read(path: &Path) -> Result<Option<Record>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let record: Record = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if record.version != VERSION {
        return Err(Error::Corrupt {
            path: path.display().to_string(),
            message: format!("version {} (this build reads {VERSION})", record.version),
        });
    }
    Ok(Some(record))
}

/// Writes `record` to `path` so that a crash leaves either the old record or the new one:
/// a temporary file, fsynced, renamed over, and the directory fsynced so the rename lasts.
fn write(path: &Path, record: &Record) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut text = serde_json::to_string_pretty(record).map_err(|e| Error::Corrupt {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    text.push('\n');
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        crate::durable::sync_dir(dir).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Identity {
        /// [`Identity::settle_unwritten`], its record written at once.
        fn settle(
            dir: &Path,
            given: Option<NodeId>,
            default: Option<NodeId>,
        ) -> Result<Self, Error> {
            let (identity, unwritten) = Self::settle_unwritten(dir, given, default)?;
            if let Some(unwritten) = unwritten {
                unwritten.write()?;
            }
            Ok(identity)
        }
    }

    #[test]
    fn a_first_start_records_the_given_id_and_a_restart_without_one_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::settle(dir.path(), Some(2), None).unwrap();
        assert_eq!(first.node_id(), 2);
        let again = Identity::settle(dir.path(), None, None).unwrap();
        assert_eq!(again.node_id(), 2);
        // Dev mode's default never overrides what is recorded.
        assert_eq!(
            Identity::settle(dir.path(), None, Some(1))
                .unwrap()
                .node_id(),
            2
        );
    }

    #[test]
    fn another_id_is_refused_naming_both_and_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        Identity::settle(dir.path(), Some(2), None).unwrap();
        let err = Identity::settle(dir.path(), Some(1), None).unwrap_err();
        let text = err.to_string();
        assert!(err.is_config());
        assert!(
            text.contains("node id 1")
                && text.contains("node 2")
                && text.contains(&dir.path().display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn an_empty_directory_without_an_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Identity::settle(dir.path(), None, None).unwrap_err();
        assert!(matches!(err, Error::Missing { .. }), "{err}");
        assert!(!dir.path().join(FILE).exists());
        // A replica from before ids were recorded says so.
        std::fs::create_dir(dir.path().join("raft")).unwrap();
        std::fs::write(dir.path().join("raft").join("db"), b"x").unwrap();
        let err = Identity::settle(dir.path(), None, None).unwrap_err();
        assert!(matches!(err, Error::Unrecorded { .. }), "{err}");
        assert_eq!(
            Identity::settle(dir.path(), Some(3), None)
                .unwrap()
                .node_id(),
            3
        );
    }

    #[test]
    fn the_first_membership_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut identity = Identity::settle(dir.path(), Some(1), None).unwrap();
        assert!(!identity.has_first_membership());
        let first = BTreeMap::from([(1, "a:1".to_owned()), (2, "b:2".to_owned())]);
        assert!(identity.record_first_membership(first.clone()).unwrap());
        assert!(!identity
            .record_first_membership(BTreeMap::from([(9, "z:9".to_owned())]))
            .unwrap());
        let record = read(&dir.path().join(FILE)).unwrap().unwrap();
        assert_eq!(record.first_membership, Some(first));
        assert_eq!(record.node_id, 1);
        // A restart knows without being told again.
        let mut again = Identity::settle(dir.path(), None, None).unwrap();
        assert!(again.has_first_membership());
        assert!(!again.record_first_membership(BTreeMap::new()).unwrap());
    }

    #[test]
    fn the_group_is_recorded_once_and_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut identity = Identity::settle(dir.path(), Some(2), None).unwrap();
        assert_eq!(identity.group_id(), None);
        assert!(identity.record_group("aa").unwrap());
        assert!(!identity.record_group("bb").unwrap());
        assert_eq!(identity.group_id(), Some("aa"));
        let again = Identity::settle(dir.path(), None, None).unwrap();
        assert_eq!(again.group_id(), Some("aa"));
        assert_eq!(again.node_id(), 2);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        let err = Identity::settle(dir.path(), Some(1), None).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { .. }) && !err.is_config(),
            "{err}"
        );
    }
}
