//! Writes every node reads back at once, and reads of a whole table: what tool state and
//! tenant credentials need from the store beyond [`Store::put`] and [`Store::get`].
//!
//! Read-your-writes from any node is bought on the write side: each of these writes returns
//! only once every member that answers within a second has applied it (as session deletes
//! and revocations already do), so a plain local read on any node afterwards sees it. The
//! alternative, a read barrier on every read, costs a leader round trip on each tool call
//! that reads a secret or its state; writes of these tables are far rarer than reads (see
//! the README's "Tool state and tenant secrets" for the figures).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::command::storage_key;
use super::store::{decode, Error};
use super::{Command, NodeId, Owner, Store, Table};

impl Store {
    /// Seals and stores `value` under `natural` only if no record is there yet; returns
    /// whether this write created it. Of writers racing through different nodes, the
    /// first in the log wins on every replica: a claim that exactly one node acts on.
    pub async fn create<T: Serialize>(
        &self,
        table: Table,
        natural: &[u8],
        value: &T,
        deadline_ms: Option<u64>,
    ) -> Result<bool, Error> {
        let (key, sealed) = self.key_and_sealed(table, natural, value)?;
        let outcome = self
            .write(Command::Create {
                table,
                key,
                deadline_ms,
                sealed,
            })
            .await?;
        Ok(!outcome.refused)
    }

    /// Seals and stores `value` under `natural` for `owner`, like [`Store::put_owned`]
    /// (refused when `owner` already holds `limit` other records of `table`), and returns
    /// only once every member that answers has applied the decision. Returns whether it
    /// was stored and the members that did not confirm.
    pub async fn put_owned_everywhere<T: Serialize>(
        &self,
        table: Table,
        natural: &[u8],
        value: &T,
        deadline_ms: Option<u64>,
        owner: Owner,
        limit: u64,
    ) -> Result<(bool, Vec<NodeId>), Error> {
        let (key, sealed) = self.key_and_sealed(table, natural, value)?;
        let (outcome, unconfirmed) = self
            .write_everywhere(Command::PutOwned {
                table,
                key,
                deadline_ms,
                sealed,
                owner,
                limit,
            })
            .await?;
        Ok((!outcome.refused, unconfirmed))
    }

    /// Every live record of `table` on this replica, opened: for operator listings of small
    /// tables, never for a request's hot path.
    pub fn open_all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, Error> {
        let now = super::now_ms();
        let records = self.0.reader.scan(table)?;
        let mut out = Vec::with_capacity(records.len());
        for (key, record) in records {
            if record.is_expired(now) {
                continue;
            }
            let plain = self
                .0
                .ring
                .sealer
                .open(&storage_key(table, &key), &record.sealed)
                .map_err(|_| Error::Sealed {
                    table: table.name(),
                })?;
            out.push(decode(&plain)?);
        }
        Ok(out)
    }
}
