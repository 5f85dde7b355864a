//! Tenant secrets: credentials an operator stores per tenant (`mcp-fleet secrets set`),
//! sealed in the replicated `tenant_credentials` table, read by tools as
//! [`Context::secret`](super::Context::secret).
//!
//! Every change (set, overwrite, delete) returns only once every member that answers has
//! applied it, so a tool call on any node afterwards reads the new value from its own
//! replica: a rotated key is never used stale. A node that is not current (cut off,
//! paused) asks the leader first. Values never reach logs, errors, metrics or `/cluster`:
//! errors name the secret, never its value, and never another tenant's names.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::limits::Limits;
use crate::raft::{self, Store, Table};

/// Config key of the secret name length cap.
pub const MAX_NAME_BYTES: &str = "secrets.max_name_bytes";
/// Config key of the tenant length cap.
pub const MAX_TENANT_BYTES: &str = "secrets.max_tenant_bytes";
/// Config key of the secret value size cap.
pub const MAX_VALUE_BYTES: &str = "secrets.max_value_bytes";
/// Config key of the count cap of secrets per tenant.
pub const MAX_PER_TENANT: &str = "secrets.max_per_tenant";

/// Caps of tenant secrets (`[secrets]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Longest secret name, in bytes. Default 128: names are identifiers (`crm_api_key`).
    pub max_name_bytes: usize,
    /// Longest tenant, in bytes. Default 256: an organisation id from an issuer claim.
    pub max_tenant_bytes: usize,
    /// Largest value, in bytes. Default 16 KiB: room for a PEM key or a service-account
    /// JSON, while each write stays far below `raft.max_entry_bytes`.
    pub max_value_bytes: usize,
    /// Most secrets one tenant holds, counted fleet-wide. Default 100: a tenant's API keys,
    /// not a database; bounds what `secrets list` scans and what one tenant stores.
    pub max_per_tenant: usize,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            max_name_bytes: 128,
            max_tenant_bytes: 256,
            max_value_bytes: 16 * 1024,
            max_per_tenant: 100,
        }
    }
}

/// A secret's value; its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the request that needs it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret operation failed. No variant carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A name or tenant was empty.
    #[error("the secret's {0} is empty")]
    Empty(&'static str),
    /// A name, tenant or value was over its cap.
    #[error("the secret's {field} is {size} bytes; the limit is {cap} bytes ({key})")]
    TooLarge {
        /// `name`, `tenant` or `value`.
        field: &'static str,
        /// Its size.
        size: usize,
        /// The cap.
        cap: usize,
        /// The cap's config key.
        key: &'static str,
    },
    /// The tenant already holds the most secrets allowed.
    #[error("the tenant already holds {cap} secrets, the limit ({MAX_PER_TENANT})")]
    TooMany {
        /// The cap.
        cap: usize,
    },
    /// The caller belongs to no tenant.
    #[error("secret `{0}`: the caller belongs to no tenant")]
    NoTenant(String),
    /// No secret of that name for the caller's tenant.
    #[error("secret `{0}` is not set for this tenant")]
    Missing(String),
    /// The store failed.
    #[error("secret store: {0}")]
    Store(#[from] raft::Error),
}

/// One secret as stored (sealed): the tenant and name are inside the sealed value, so a
/// listing can tell them while the stored key stays a keyed hash.
#[derive(Serialize, Deserialize)]
struct Stored {
    tenant: String,
    name: String,
    value: String,
    updated_ms: u64,
}

/// A secret's name and when it last changed, as `secrets list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Listed {
    /// The name.
    pub name: String,
    /// When it was last set, in milliseconds since the epoch.
    pub updated_ms: u64,
}

#[derive(Clone)]
enum Backend {
    /// The fleet's replicated store.
    Fleet(Store),
    /// A single local user's secrets (stdio), by name, whatever the tenant.
    Local(Arc<BTreeMap<String, String>>),
}

/// Tenant secrets: the operators' side (set, list, delete) and the tools' side (get).
#[derive(Clone)]
pub struct Secrets {
    backend: Backend,
    config: SecretsConfig,
    limits: Limits,
}

impl Secrets {
    /// Secrets in the fleet store, capped by `config`, refusals counted in `limits`.
    pub fn fleet(store: Store, config: SecretsConfig, limits: Limits) -> Self {
        for key in [
            MAX_NAME_BYTES,
            MAX_TENANT_BYTES,
            MAX_VALUE_BYTES,
            MAX_PER_TENANT,
        ] {
            limits.declare(key);
        }
        Self {
            backend: Backend::Fleet(store),
            config,
            limits,
        }
    }

    /// A single local user's secrets, by name (stdio).
    pub fn local(secrets: BTreeMap<String, String>, config: SecretsConfig, limits: Limits) -> Self {
        Self {
            backend: Backend::Local(Arc::new(secrets)),
            config,
            limits,
        }
    }

    /// Sets `tenant`'s secret `name` to `value`, replacing any; returns once every member
    /// that answers has applied it.
    pub async fn set(&self, tenant: &str, name: &str, value: &str) -> Result<(), SecretError> {
        self.check(tenant, name)?;
        self.cap(
            MAX_VALUE_BYTES,
            "value",
            value.len(),
            self.config.max_value_bytes,
        )?;
        let Backend::Fleet(store) = &self.backend else {
            return Err(SecretError::Store(raft::Error::Unavailable(
                "secrets are read-only here".into(),
            )));
        };
        let stored = Stored {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            value: value.to_owned(),
            updated_ms: raft::now_ms(),
        };
        let (stored, _) = store
            .put_owned_everywhere(
                Table::TenantCredentials,
                &natural(tenant, name),
                &stored,
                None,
                owner(store, tenant),
                self.config.max_per_tenant as u64,
            )
            .await?;
        if !stored {
            self.limits.refused(MAX_PER_TENANT);
            return Err(SecretError::TooMany {
                cap: self.config.max_per_tenant,
            });
        }
        Ok(())
    }

    /// Removes `tenant`'s secret `name`; returns whether it existed, once every member that
    /// answers has applied the removal.
    pub async fn delete(&self, tenant: &str, name: &str) -> Result<bool, SecretError> {
        self.check(tenant, name)?;
        match &self.backend {
            Backend::Fleet(store) => Ok(store
                .delete(Table::TenantCredentials, &natural(tenant, name))
                .await?),
            Backend::Local(_) => Err(SecretError::Store(raft::Error::Unavailable(
                "secrets are read-only here".into(),
            ))),
        }
    }

    /// The names of `tenant`'s secrets and when each changed, by name; never values.
    pub async fn list(&self, tenant: &str) -> Result<Vec<Listed>, SecretError> {
        self.cap(
            MAX_TENANT_BYTES,
            "tenant",
            tenant.len(),
            self.config.max_tenant_bytes,
        )?;
        if tenant.is_empty() {
            return Err(SecretError::Empty("tenant"));
        }
        let Backend::Fleet(store) = &self.backend else {
            return Ok(Vec::new());
        };
        fresh(store).await?;
        let mut out: Vec<Listed> = store
            .open_all::<Stored>(Table::TenantCredentials)?
            .into_iter()
            .filter(|s| s.tenant == tenant)
            .map(|s| Listed {
                name: s.name,
                updated_ms: s.updated_ms,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The secret `name` of `principal`'s tenant (under stdio, of the local user).
    pub async fn get(&self, principal: &Principal, name: &str) -> Result<Secret, SecretError> {
        if name.is_empty() {
            return Err(SecretError::Empty("name"));
        }
        if name.len() > self.config.max_name_bytes {
            return Err(SecretError::Missing(truncated(name)));
        }
        match &self.backend {
            Backend::Local(map) => map
                .get(name)
                .map(|v| Secret(v.clone()))
                .ok_or_else(|| SecretError::Missing(name.to_owned())),
            Backend::Fleet(store) => {
                let tenant = principal
                    .tenant
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| SecretError::NoTenant(name.to_owned()))?;
                fresh(store).await?;
                let found = store
                    .get::<Stored>(Table::TenantCredentials, &natural(tenant, name))?
                    .filter(|f| f.value.tenant == tenant && f.value.name == name);
                found
                    .map(|f| Secret(f.value.value))
                    .ok_or_else(|| SecretError::Missing(name.to_owned()))
            }
        }
    }

    fn check(&self, tenant: &str, name: &str) -> Result<(), SecretError> {
        if tenant.is_empty() {
            return Err(SecretError::Empty("tenant"));
        }
        if name.is_empty() {
            return Err(SecretError::Empty("name"));
        }
        self.cap(
            MAX_TENANT_BYTES,
            "tenant",
            tenant.len(),
            self.config.max_tenant_bytes,
        )?;
        self.cap(
            MAX_NAME_BYTES,
            "name",
            name.len(),
            self.config.max_name_bytes,
        )
    }

    fn cap(
        &self,
        key: &'static str,
        field: &'static str,
        size: usize,
        cap: usize,
    ) -> Result<(), SecretError> {
        if size <= cap {
            return Ok(());
        }
        self.limits.refused(key);
        Err(SecretError::TooLarge {
            field,
            size,
            cap,
            key,
        })
    }
}

/// Waits for the leader only when this replica is not known to be current: every change
/// was applied on every member that answered before it returned, so a current replica
/// already holds it.
pub(crate) async fn fresh(store: &Store) -> Result<(), raft::Error> {
    if store.is_current() {
        return Ok(());
    }
    store.read_barrier().await
}

/// The natural key of a tenant's secret: the tenant's length says where it ends, so no
/// choice of tenant and name can reach another tenant's secret.
fn natural(tenant: &str, name: &str) -> Vec<u8> {
    format!("{}:{tenant}{name}", tenant.len()).into_bytes()
}

/// The owner every secret of `tenant` is counted under. Bindings of principals start with
/// a digit or `-`, so this never equals one.
fn owner(store: &Store, tenant: &str) -> raft::Owner {
    store.owner(format!("tenant-secrets:{}:{tenant}", tenant.len()).as_bytes())
}

/// A name too long to be stored, shortened for an error message.
fn truncated(name: &str) -> String {
    let mut end = 64.min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Key, Ring};

    fn principal(tenant: Option<&str>) -> Principal {
        Principal {
            tenant: tenant.map(str::to_owned),
            ..Principal::anonymous()
        }
    }

    async fn secrets(dir: &std::path::Path, config: SecretsConfig) -> (Secrets, raft::Runtime) {
        crate::actors::install_tls_provider();
        let (store, runtime) = Store::open_single(dir, Ring::single(Key::generate()))
            .await
            .unwrap();
        (Secrets::fleet(store, config, Limits::default()), runtime)
    }

    #[actix_web::test]
    async fn a_tenant_reads_its_own_secrets_and_no_one_elses() {
        let dir = tempfile::tempdir().unwrap();
        let (secrets, _rt) = secrets(dir.path(), SecretsConfig::default()).await;
        secrets.set("acme", "key", "a-1").await.unwrap();
        // A tenant and name that would run together without the length prefix.
        secrets.set("acm", "ekey", "b-1").await.unwrap();
        let acme = principal(Some("acme"));
        assert_eq!(secrets.get(&acme, "key").await.unwrap().expose(), "a-1");
        assert_eq!(
            secrets
                .get(&principal(Some("acm")), "ekey")
                .await
                .unwrap()
                .expose(),
            "b-1"
        );
        let missing = secrets
            .get(&principal(Some("globex")), "key")
            .await
            .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "secret `key` is not set for this tenant"
        );
        let none = secrets.get(&principal(None), "key").await.unwrap_err();
        assert!(matches!(none, SecretError::NoTenant(_)), "{none}");

        secrets.set("acme", "key", "a-2").await.unwrap();
        assert_eq!(secrets.get(&acme, "key").await.unwrap().expose(), "a-2");
        let listed = secrets.list("acme").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "key");
        assert!(secrets.delete("acme", "key").await.unwrap());
        assert!(!secrets.delete("acme", "key").await.unwrap());
        assert!(secrets.get(&acme, "key").await.is_err());
        assert_eq!(format!("{:?}", Secret("hidden".into())), "Secret(..)");
    }

    #[actix_web::test]
    async fn caps_refuse_naming_the_key_and_count_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let config = SecretsConfig {
            max_per_tenant: 2,
            max_value_bytes: 8,
            ..SecretsConfig::default()
        };
        let (secrets, _rt) = secrets(dir.path(), config).await;
        let too_big = secrets.set("acme", "a", "123456789").await.unwrap_err();
        assert!(too_big.to_string().contains(MAX_VALUE_BYTES), "{too_big}");
        assert!(!too_big.to_string().contains("123456789"), "{too_big}");
        let long = "n".repeat(129);
        let err = secrets.set("acme", &long, "v").await.unwrap_err();
        assert!(err.to_string().contains(MAX_NAME_BYTES), "{err}");
        let err = secrets.set("", "a", "v").await.unwrap_err();
        assert_eq!(err.to_string(), "the secret's tenant is empty");
        secrets.set("acme", "a", "v").await.unwrap();
        secrets.set("acme", "b", "v").await.unwrap();
        let full = secrets.set("acme", "c", "v").await.unwrap_err();
        assert!(matches!(full, SecretError::TooMany { cap: 2 }), "{full}");
        // Overwriting one it holds is not one more, and another tenant has its own count.
        secrets.set("acme", "a", "w").await.unwrap();
        secrets.set("globex", "c", "v").await.unwrap();
    }
}
