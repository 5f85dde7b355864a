//! The local durable store behind the session actor: sled, postcard-encoded records with a
//! format byte in front.
//!
//! The replicated store (see [`crate::raft`]) will take its place behind the same handle.

use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

/// Format byte of stored records; bump it when a record's shape changes.
const RECORD_V1: u8 = 1;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled failed.
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be encoded or decoded.
    #[error("record encoding: {0}")]
    Encoding(#[from] postcard::Error),
    /// A record has a format this build does not know.
    #[error("record has unknown format {0}")]
    Format(u8),
}

/// Named tables.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    /// Legacy MCP sessions, by session id.
    McpSessions,
}

impl Table {
    fn tree_name(self) -> &'static str {
        match self {
            Table::McpSessions => "mcp_sessions",
        }
    }
}

/// A sled database on this node.
#[derive(Clone)]
pub struct LocalStore {
    db: sled::Db,
}

impl LocalStore {
    /// Opens (or creates) the store under `dir`, with a bounded page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        Ok(Self { db })
    }

    /// A store that lives in memory and a temporary file, gone when the process ends.
    pub fn temporary() -> Result<Self, Error> {
        let db = sled::Config::new()
            .temporary(true)
            .cache_capacity(8 << 20)
            .open()?;
        Ok(Self { db })
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, Error> {
        let tree = self.db.open_tree(table.tree_name())?;
        match tree.get(key.as_bytes())? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }

    /// Writes one record and waits until it is on disk.
    pub async fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), Error> {
        let tree = self.db.open_tree(table.tree_name())?;
        tree.insert(key.as_bytes(), encode(value)?)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Removes one record and waits until the removal is on disk; returns whether it existed.
    pub async fn remove(&self, table: Table, key: &str) -> Result<bool, Error> {
        let tree = self.db.open_tree(table.tree_name())?;
        let existed = tree.remove(key.as_bytes())?.is_some();
        self.db.flush_async().await?;
        Ok(existed)
    }

    /// Every record of a table, for sweeps.
    pub fn scan<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, Error> {
        let tree = self.db.open_tree(table.tree_name())?;
        tree.iter()
            .map(|item| {
                let (k, v) = item?;
                Ok((String::from_utf8_lossy(&k).into_owned(), decode(&v)?))
            })
            .collect()
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = vec![RECORD_V1];
    out.extend(postcard::to_stdvec(value)?);
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        Some((&RECORD_V1, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&other, _)) => Err(Error::Format(other)),
        None => Err(Error::Format(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Rec {
        a: String,
        b: Option<u64>,
    }

    #[test]
    fn golden_bytes() {
        // A change to the record format must be deliberate: this pins the bytes on disk.
        let bytes = encode(&Rec {
            a: "hi".into(),
            b: Some(300),
        })
        .unwrap();
        assert_eq!(bytes, vec![1, 2, b'h', b'i', 1, 0xac, 0x02]);
        assert_eq!(decode::<Rec>(&bytes).unwrap().b, Some(300));
        assert!(matches!(decode::<Rec>(&[9, 0]), Err(Error::Format(9))));
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LocalStore::open(dir.path(), 1 << 20).unwrap();
            store
                .put(
                    Table::McpSessions,
                    "k",
                    &Rec {
                        a: "v".into(),
                        b: None,
                    },
                )
                .await
                .unwrap();
        }
        let store = LocalStore::open(dir.path(), 1 << 20).unwrap();
        let got: Rec = store.get(Table::McpSessions, "k").unwrap().unwrap();
        assert_eq!(got.a, "v");
        assert!(store.remove(Table::McpSessions, "k").await.unwrap());
        assert!(store.get::<Rec>(Table::McpSessions, "k").unwrap().is_none());
    }
}
