//! Tool state: a small key-value space per (tool, principal) and per (tool, tenant), sealed
//! in the replicated `tool_state` table, reached by tools as
//! [`Context::state`](super::Context::state).
//!
//! Every write (create, overwrite, delete) returns only once every member that answers has
//! applied it, so a read on any node afterwards sees it from its own replica (see
//! `raft::fleetwide` and the README for why this side rather than a read barrier).
//! Records end after their TTL; each principal (and each tenant, for tenant-wide state)
//! holds at most `tool_state.max_keys_per_principal` keys across tools, each value at most
//! `tool_state.max_value_bytes`, so what one principal stores is bounded by their product.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Error;
use crate::auth::Principal;
use crate::limits::Limits;
use crate::raft::{self, Store, Table};

/// Config key of the state key length cap.
pub const MAX_KEY_BYTES: &str = "tool_state.max_key_bytes";
/// Config key of the state value size cap.
pub const MAX_VALUE_BYTES: &str = "tool_state.max_value_bytes";
/// Config key of the count cap of keys per principal (or tenant).
pub const MAX_KEYS_PER_PRINCIPAL: &str = "tool_state.max_keys_per_principal";

/// Caps and lifetime of tool state (`[tool_state]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Longest key, in bytes. Default 256.
    pub max_key_bytes: usize,
    /// Largest value (its JSON text), in bytes. Default 16 KiB: state is a cursor, a
    /// preference, an id from an upstream, not a document store.
    pub max_value_bytes: usize,
    /// Most keys one principal holds across tools, counted fleet-wide (tenant-wide state
    /// is counted under the tenant the same way). Default 100; with `max_value_bytes` it
    /// bounds one principal's state at about 1.6 MiB.
    pub max_keys_per_principal: usize,
    /// How long a value lives after its last write, and the longest TTL a tool may ask
    /// for. Default 7 days.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: 256,
            max_value_bytes: 16 * 1024,
            max_keys_per_principal: 100,
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Where tool state is kept: the fleet store, or under stdio a local one.
#[derive(Clone)]
pub struct StateStore {
    store: Store,
    config: StateConfig,
    limits: Limits,
}

impl StateStore {
    /// State in `store`, capped by `config`, refusals counted in `limits`.
    pub fn new(store: Store, config: StateConfig, limits: Limits) -> Self {
        for key in [MAX_KEY_BYTES, MAX_VALUE_BYTES, MAX_KEYS_PER_PRINCIPAL] {
            limits.declare(key);
        }
        Self {
            store,
            config,
            limits,
        }
    }
}

/// One tool's state for one caller ([`State::tenant`] for the caller's tenant).
pub struct State {
    store: Option<StateStore>,
    tool: Arc<str>,
    principal: Arc<Principal>,
    tenant_wide: bool,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    json: String,
}

impl State {
    pub(crate) fn new(
        store: Option<StateStore>,
        tool: Arc<str>,
        principal: Arc<Principal>,
    ) -> Self {
        Self {
            store,
            tool,
            principal,
            tenant_wide: false,
        }
    }

    /// The same tool's state shared by everyone in the caller's tenant.
    pub fn tenant(self) -> Self {
        Self {
            tenant_wide: true,
            ..self
        }
    }

    /// The value under `key`, if set and not expired.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let (store, natural, _) = self.locate(key)?;
        super::secrets::fresh(&store.store).await.map_err(failed)?;
        let found = store
            .store
            .get::<Stored>(Table::ToolState, &natural)
            .map_err(failed)?;
        found
            .map(|f| serde_json::from_str(&f.value.json))
            .transpose()
            .map_err(|e| Error::Failed(format!("state `{key}` is not of the type asked: {e}")))
    }

    /// Sets `key` to `value` for `tool_state.ttl`; every node reads it once this returns.
    pub async fn set<T: Serialize>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.set_for(key, value, None).await
    }

    /// Sets `key` to `value` for `ttl` (at most `tool_state.ttl`; `None` is that).
    pub async fn set_for<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let (store, natural, owner) = self.locate(key)?;
        let config = &store.config;
        let ttl = ttl.unwrap_or(config.ttl);
        if ttl.is_zero() || ttl > config.ttl {
            return Err(Error::Failed(format!(
                "state `{key}`: a TTL must be above zero and at most {:?} (tool_state.ttl)",
                config.ttl
            )));
        }
        let json = serde_json::to_string(value)
            .map_err(|e| Error::Failed(format!("state `{key}`: {e}")))?;
        if json.len() > config.max_value_bytes {
            store.limits.refused(MAX_VALUE_BYTES);
            return Err(Error::Failed(format!(
                "state `{key}`: the value is {} bytes; the limit is {} bytes ({MAX_VALUE_BYTES})",
                json.len(),
                config.max_value_bytes
            )));
        }
        let deadline = raft::now_ms().saturating_add(ttl.as_millis() as u64);
        let (stored, _) = store
            .store
            .put_owned_everywhere(
                Table::ToolState,
                &natural,
                &Stored { json },
                Some(deadline),
                store.store.owner(&owner),
                config.max_keys_per_principal as u64,
            )
            .await
            .map_err(failed)?;
        if !stored {
            store.limits.refused(MAX_KEYS_PER_PRINCIPAL);
            return Err(Error::Failed(format!(
                "state `{key}`: {} keys are already held, the limit ({MAX_KEYS_PER_PRINCIPAL}); \
                 delete one first",
                config.max_keys_per_principal
            )));
        }
        Ok(())
    }

    /// Removes `key`; returns whether it was set. Every node reads it absent once this
    /// returns.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        let (store, natural, _) = self.locate(key)?;
        store
            .store
            .delete(Table::ToolState, &natural)
            .await
            .map_err(failed)
    }

    /// The design not taken, kept for `cargo bench --bench state` to measure against: a
    /// write acknowledged once a majority has it (no wait for every member)...
    #[doc(hidden)]
    pub async fn set_majority_only<T: Serialize>(&self, key: &str, value: &T) -> Result<(), Error> {
        let (store, natural, owner) = self.locate(key)?;
        let json = serde_json::to_string(value)
            .map_err(|e| Error::Failed(format!("state `{key}`: {e}")))?;
        let deadline = raft::now_ms().saturating_add(store.config.ttl.as_millis() as u64);
        store
            .store
            .put_owned(
                Table::ToolState,
                &natural,
                &Stored { json },
                Some(deadline),
                store.store.owner(&owner),
                store.config.max_keys_per_principal as u64,
            )
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// ...and a read that asks the leader for a read index on every call.
    #[doc(hidden)]
    pub async fn get_after_barrier<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let (store, natural, _) = self.locate(key)?;
        store.store.read_barrier().await.map_err(failed)?;
        let found = store
            .store
            .get::<Stored>(Table::ToolState, &natural)
            .map_err(failed)?;
        found
            .map(|f| serde_json::from_str(&f.value.json))
            .transpose()
            .map_err(|e| Error::Failed(format!("state `{key}` is not of the type asked: {e}")))
    }

    /// The store, the natural key of `key` and the owner binding it is counted under.
    fn locate(&self, key: &str) -> Result<(&StateStore, Vec<u8>, Vec<u8>), Error> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| Error::Failed("this server keeps no tool state".into()))?;
        if key.is_empty() {
            return Err(Error::Failed("a state key must not be empty".into()));
        }
        if key.len() > store.config.max_key_bytes {
            store.limits.refused(MAX_KEY_BYTES);
            return Err(Error::Failed(format!(
                "a state key is {} bytes; the limit is {} bytes ({MAX_KEY_BYTES})",
                key.len(),
                store.config.max_key_bytes
            )));
        }
        // Each part is length-prefixed, so no choice of binding, tool and key can name
        // another principal's (or tenant's) record; the first byte keeps the two spaces apart.
        let owner = if self.tenant_wide {
            let tenant = self
                .principal
                .tenant
                .as_deref()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Error::Failed("the caller belongs to no tenant".into()))?;
            let issuer = self.principal.issuer.as_deref().unwrap_or("");
            format!("t{}:{issuer}{}:{tenant}", issuer.len(), tenant.len())
        } else {
            format!("p{}", self.principal.binding())
        };
        let natural = format!(
            "{}:{owner}{}:{}{key}",
            owner.len(),
            self.tool.len(),
            self.tool
        );
        Ok((store, natural.into_bytes(), owner.into_bytes()))
    }
}

fn failed(e: raft::Error) -> Error {
    Error::Failed(format!("tool state: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Key, Ring};

    fn principal(subject: &str, tenant: &str) -> Arc<Principal> {
        Arc::new(Principal {
            subject: subject.to_owned(),
            tenant: Some(tenant.to_owned()),
            ..Principal::anonymous()
        })
    }

    #[actix_web::test]
    async fn state_ends_after_its_ttl_and_belongs_to_its_tool_and_caller() {
        crate::actors::install_tls_provider();
        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = Store::open_single(dir.path(), Ring::single(Key::generate()))
            .await
            .unwrap();
        let config = StateConfig {
            max_keys_per_principal: 2,
            ..StateConfig::default()
        };
        let states = StateStore::new(store, config, Limits::default());
        let alice = principal("alice", "acme");
        let state = |tool: &str, who: &Arc<Principal>| {
            State::new(Some(states.clone()), Arc::from(tool), who.clone())
        };
        state("a", &alice).set("k", &1).await.unwrap();
        assert_eq!(state("a", &alice).get::<u32>("k").await.unwrap(), Some(1));
        assert_eq!(
            state("b", &alice).get::<u32>("k").await.unwrap(),
            None,
            "another tool"
        );
        let bob = principal("bob", "acme");
        assert_eq!(
            state("a", &bob).get::<u32>("k").await.unwrap(),
            None,
            "another caller"
        );

        let too_long = state("a", &alice)
            .set_for("t", &1, Some(Duration::from_secs(8 * 24 * 3600)))
            .await
            .unwrap_err();
        assert!(
            too_long.to_string().contains("tool_state.ttl"),
            "{too_long}"
        );
        state("a", &alice)
            .set_for("short", &1, Some(Duration::from_millis(1)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(state("a", &alice).get::<u32>("short").await.unwrap(), None);

        // The cap counts keys across tools: with `short` deleted, alice holds `k` of tool a
        // and `k2` of tool b, and a third is refused.
        state("a", &alice).delete("short").await.unwrap();
        state("b", &alice).set("k2", &2).await.unwrap();
        let full = state("a", &alice).set("k3", &3).await.unwrap_err();
        assert!(full.to_string().contains(MAX_KEYS_PER_PRINCIPAL), "{full}");
        // Overwriting a key held is no new key; bob has his own count.
        state("a", &alice).set("k", &4).await.unwrap();
        state("a", &bob).set("k3", &3).await.unwrap();
    }
}
