//! Revocations: records in the fleet store that refuse a subject's earlier tokens or one
//! token id, enforced by every node once the log has applied them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::claims::Facts;
use super::AuthError;
use crate::raft::{self, now_ms, Store, Table};

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Every token of `subject` from `issuer` issued at or before the revocation (and every
    /// token of theirs that does not say when it was issued). Later tokens are accepted.
    Subject {
        /// The issuer, exactly as tokens carry it in `iss`.
        issuer: String,
        /// The subject as the principal names it (the mapped subject claim).
        subject: String,
    },
    /// The token whose `jti` is `token_id`.
    TokenId {
        /// The issuer, exactly as tokens carry it in `iss`.
        issuer: String,
        /// The token's `jti`.
        token_id: String,
    },
}

/// The stored value of a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Revoked {
    /// When it was recorded, in milliseconds since the epoch.
    pub at_ms: u64,
}

/// The natural key of a revocation. The issuer's length goes first so that no choice of
/// issuer and subject (Auth0 subjects contain `|`) can name another pair's record.
fn natural(kind: &str, issuer: &str, id: &str) -> Vec<u8> {
    format!("{kind}|{}|{issuer}|{id}", issuer.len()).into_bytes()
}

impl Revocation {
    fn key(&self) -> Vec<u8> {
        match self {
            Revocation::Subject { issuer, subject } => natural("sub", issuer, subject),
            Revocation::TokenId { issuer, token_id } => natural("jti", issuer, token_id),
        }
    }

    /// Stores the revocation for `ttl`; returns once this node and every member that
    /// answers within a second have applied it (so each refuses what it covers), with the
    /// members that did not confirm.
    pub(crate) async fn record(
        &self,
        store: &Store,
        ttl: Duration,
    ) -> Result<Vec<raft::NodeId>, raft::Error> {
        let now = now_ms();
        let deadline = now.saturating_add(ttl.as_millis() as u64);
        store
            .put_everywhere(
                Table::Revocations,
                &self.key(),
                &Revoked { at_ms: now },
                Some(deadline),
            )
            .await
    }
}

/// A revocation named an issuer this node does not trust.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a configured issuer; the configured issuers are: {}", list(.configured))]
pub struct UnknownIssuer {
    /// The issuer given.
    pub given: String,
    /// The issuers this node trusts.
    pub configured: Vec<String>,
}

fn list(issuers: &[String]) -> String {
    if issuers.is_empty() {
        return "none".to_owned();
    }
    issuers
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configured issuer that `given` names, exactly as tokens from it carry `iss` (and
/// as principals and revocation records name it). Token validation compares `iss` with
/// the configured value byte for byte, so a revocation stored under any other spelling
/// would never match a token: `given` is resolved to the configured spelling, tolerating
/// only a trailing slash more or less, and refused when it names no configured issuer.
pub fn resolve_issuer(configured: &[String], given: &str) -> Result<String, UnknownIssuer> {
    if let Some(exact) = configured.iter().find(|c| *c == given) {
        return Ok(exact.clone());
    }
    let trimmed = given.trim_end_matches('/');
    let mut near = configured
        .iter()
        .filter(|c| c.trim_end_matches('/') == trimmed);
    match (near.next(), near.next()) {
        (Some(one), None) => Ok(one.clone()),
        _ => Err(UnknownIssuer {
            given: given.to_owned(),
            configured: configured.to_vec(),
        }),
    }
}

/// Refuses a token of `subject` from `issuer` if a revocation on this node's replica
/// covers it. An unreadable replica fails closed.
pub(crate) fn check(
    store: &Store,
    issuer: &str,
    subject: &str,
    facts: &Facts,
) -> Result<(), AuthError> {
    let read = |key: Vec<u8>| {
        store
            .get::<Revoked>(Table::Revocations, &key)
            .map_err(|e| AuthError::Unavailable(format!("cannot read revocations: {e}")))
    };
    if let Some(found) = read(natural("sub", issuer, subject))? {
        // `iat` has whole seconds: a token from the revocation's own second is refused.
        let before = facts
            .issued_at
            .is_none_or(|iat| iat.saturating_mul(1000) <= found.value.at_ms);
        if before {
            return Err(AuthError::Invalid("revoked".into()));
        }
    }
    if let Some(token_id) = &facts.token_id {
        if read(natural("jti", issuer, token_id))?.is_some() {
            return Err(AuthError::Invalid("revoked".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::authenticator::tests::{config, reason, store, RESOURCE};
    use crate::auth::test_issuer::{now, TestIssuer, TestKey};
    use crate::auth::Authenticator;
    use crate::limits::Limits;

    #[test]
    fn an_issuer_resolves_to_its_configured_spelling_or_is_refused() {
        let configured = vec![
            "https://a.example.com".to_owned(),
            "https://b.example.com/".to_owned(),
        ];
        let resolve = |given: &str| resolve_issuer(&configured, given);
        assert_eq!(resolve("https://a.example.com").unwrap(), configured[0]);
        assert_eq!(resolve("https://a.example.com/").unwrap(), configured[0]);
        assert_eq!(resolve("https://b.example.com").unwrap(), configured[1]);
        assert_eq!(resolve("https://b.example.com/").unwrap(), configured[1]);
        let unknown = resolve("https://c.example.com").unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "`https://c.example.com` is not a configured issuer; the configured issuers \
             are: `https://a.example.com`, `https://b.example.com/`"
        );
        assert!(resolve("https://A.example.com").is_err());
        assert!(resolve_issuer(&[], "https://a.example.com").is_err());
    }

    #[test]
    fn keys_cannot_collide() {
        let a = Revocation::Subject {
            issuer: "https://a|b".into(),
            subject: "c".into(),
        };
        let b = Revocation::Subject {
            issuer: "https://a".into(),
            subject: "b|c".into(),
        };
        let c = Revocation::TokenId {
            issuer: "https://a|b".into(),
            token_id: "c".into(),
        };
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        assert_eq!(a.key(), b"sub|11|https://a|b|c".to_vec());
    }

    #[actix_web::test]
    async fn revocations_refuse_tokens_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = store(dir.path()).await;
        let rsa1 = TestKey::rsa1();
        let issuer = TestIssuer::start(&[&rsa1]);
        let a = Authenticator::start(&config(&issuer), RESOURCE, store.clone(), Limits::default());
        let b = Authenticator::start(&config(&issuer), RESOURCE, store, Limits::default());
        let mut claims = issuer.claims(RESOURCE, "alice");
        claims["iat"] = json!(now() - 10);
        let old = rsa1.sign(&claims);
        issuer.activate("opaque-alice", json!({"sub": "alice", "aud": RESOURCE}));
        for auth in [&a, &b] {
            auth.authenticate(&old).await.unwrap();
            auth.authenticate("opaque-alice").await.unwrap();
        }
        let subject = Revocation::Subject {
            issuer: issuer.issuer(),
            subject: "alice".into(),
        };
        a.revoke(subject).await.unwrap();
        assert_eq!(reason(a.authenticate(&old).await), "revoked");
        // An introspected token that does not say when it was issued is covered too.
        assert_eq!(reason(a.authenticate("opaque-alice").await), "revoked");
        // The other authenticator's memory tier is emptied by the log.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while b.authenticate(&old).await.is_ok() {
            assert!(std::time::Instant::now() < until, "b still accepts");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(reason(b.authenticate(&old).await), "revoked");
        // Tokens issued after the revocation are accepted.
        claims["iat"] = json!(now() + 2);
        a.authenticate(&rsa1.sign(&claims)).await.unwrap();

        let mut claims = issuer.claims(RESOURCE, "bob");
        claims["jti"] = json!("bob-1");
        let bob1 = rsa1.sign(&claims);
        a.authenticate(&bob1).await.unwrap();
        let token_id = Revocation::TokenId {
            issuer: issuer.issuer(),
            token_id: "bob-1".into(),
        };
        b.revoke(token_id).await.unwrap();
        assert_eq!(reason(b.authenticate(&bob1).await), "revoked");
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while a.authenticate(&bob1).await.is_ok() {
            assert!(std::time::Instant::now() < until, "a still accepts");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        claims["jti"] = json!("bob-2");
        a.authenticate(&rsa1.sign(&claims)).await.unwrap();
    }

    #[actix_web::test]
    async fn a_revocation_this_ring_cannot_open_refuses_as_unavailable_not_accepted() {
        use crate::crypto::{Key, Sealer};
        use crate::raft::command::storage_key;
        use crate::raft::Command;

        let dir = tempfile::tempdir().unwrap();
        let (store, _rt) = store(dir.path()).await;
        let issuer = "https://issuer.example";
        let facts = Facts {
            token_id: Some("t-1".into()),
            issued_at: Some(now() - 10),
            expires_at: None,
        };
        assert!(check(&store, issuer, "erin", &facts).is_ok());
        // Erin's revocation as a node with another key sealed it, under this ring's key.
        let key = store.key(Table::Revocations, &natural("sub", issuer, "erin"));
        let value = [
            &[1u8][..],
            &postcard::to_stdvec(&Revoked { at_ms: now_ms() }).unwrap(),
        ]
        .concat();
        let sealed =
            Sealer::single(Key::generate()).seal(&storage_key(Table::Revocations, &key), &value);
        store
            .write(Command::Put {
                table: Table::Revocations,
                key,
                deadline_ms: None,
                sealed,
            })
            .await
            .unwrap();
        match check(&store, issuer, "erin", &facts) {
            Err(AuthError::Unavailable(why)) => {
                assert!(why.contains("failed authentication"), "{why}")
            }
            other => panic!("a revocation that cannot be read must refuse, got {other:?}"),
        }
        // Nobody else is affected.
        assert!(check(&store, issuer, "frank", &facts).is_ok());
    }
}
