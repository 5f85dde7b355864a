//! Who is calling: the OAuth 2.1 resource server side of a node.
//!
//! - [`Principal`] is the caller every request, session, request state and tool call is
//!   bound to.
//! - [`config`] holds the trusted issuers, their claim mappings and introspection clients.
//! - `claims` maps a token's claims to a principal (presets for WorkOS, Auth0, Keycloak,
//!   Entra).
//! - `jwt` verifies signed tokens against keys from the JWKS actor.
//! - [`jwt_crypto`] checks their signatures with `ring`.
//! - `introspect` asks an issuer about opaque tokens (RFC 7662).
//! - [`Authenticator`] ties them together behind tiers chosen by cost.
//! - [`Exchanger`] gets tokens for upstream APIs on a caller's behalf (RFC 8693).
//! - [`IssuerCas`] are the private CAs trusted for calls to issuers (`auth.ca_file`).
//! - [`dev`] is the development issuer of `--auth dev`.

mod authenticator;
mod claims;
pub mod config;
pub mod dev;
mod exchange;
mod introspect;
pub(crate) mod jwt;
pub mod jwt_crypto;
mod revocation;
#[cfg(test)]
pub(crate) mod test_issuer;
mod trust;

use serde::{Deserialize, Serialize};

pub use authenticator::{AuthError, Authenticator};
pub use config::{Config, Introspection, IssuerConfig, Preset};
pub use exchange::Exchanger;
pub use revocation::{resolve_issuer, Revocation};
pub use trust::{CaFileError, IssuerCas};

/// The authenticated caller of a request.
///
/// With `--auth none` every caller is [`Principal::anonymous`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Stable subject identifier from the identity provider.
    pub subject: String,
    /// Tenant or organisation the subject belongs to, when the provider names one.
    pub tenant: Option<String>,
    /// Email address, when the provider shares it.
    pub email: Option<String>,
    /// Scopes granted to the token.
    pub scopes: Vec<String>,
    /// The issuer that vouched for the subject; `None` when authentication is off.
    pub issuer: Option<String>,
}

impl Principal {
    /// The principal used when authentication is off.
    pub fn anonymous() -> Self {
        Self {
            subject: "anonymous".to_owned(),
            tenant: None,
            email: None,
            scopes: Vec::new(),
            issuer: None,
        }
    }

    /// A stable string that binds sealed state and sessions to this principal: the same
    /// subject from two issuers, or in two tenants, is two principals.
    ///
    /// Issuer, tenant and subject are each written as `<byte length>:<bytes>`, or `-` when
    /// absent, one after the other. Each part says where it ends, so no choice of values
    /// can make two principals share a binding: tenant `x|y` with subject `z` and tenant
    /// `x` with subject `y|z` (Auth0 subjects contain `|`) differ, and so do no tenant and
    /// an empty one. The binding of one principal never changes, so it may be hashed
    /// into keys and associated data.
    pub fn binding(&self) -> String {
        let parts = [
            self.issuer.as_deref(),
            self.tenant.as_deref(),
            Some(self.subject.as_str()),
        ];
        let mut out = String::with_capacity(parts.iter().flatten().map(|p| p.len() + 8).sum());
        for part in parts {
            match part {
                Some(text) => {
                    out.push_str(&text.len().to_string());
                    out.push(':');
                    out.push_str(text);
                }
                None => out.push('-'),
            }
        }
        out
    }

    /// Whether `other` is the same caller: the same issuer, tenant and subject (scopes and
    /// email may differ between two of its tokens). What owns a session or a task.
    pub fn same_as(&self, other: &Principal) -> bool {
        self.issuer == other.issuer && self.tenant == other.tenant && self.subject == other.subject
    }

    /// Whether the principal holds every scope in `needed`.
    pub fn has_scopes<'a>(&self, needed: impl IntoIterator<Item = &'a String>) -> bool {
        needed.into_iter().all(|s| self.scopes.contains(s))
    }
}

/// Signature algorithms an issuer may be configured to use: asymmetric only, so a
/// public key can never double as an HMAC secret, and never `none`.
pub const ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No authentication; every caller is anonymous. Only allowed on loopback.
    None,
    /// Bearer tokens from the configured issuers: JWTs checked against their keys, opaque
    /// tokens introspected.
    Jwt,
    /// Like `jwt`, with a built-in development issuer whose token is printed at start.
    Dev,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(issuer: Option<&str>, tenant: Option<&str>, subject: &str) -> Principal {
        Principal {
            subject: subject.to_owned(),
            tenant: tenant.map(str::to_owned),
            issuer: issuer.map(str::to_owned),
            ..Principal::anonymous()
        }
    }

    #[test]
    fn a_separator_inside_a_part_cannot_make_two_principals_one() {
        let iss = Some("https://id.example.com");
        let a = principal(iss, Some("x|y"), "z");
        let b = principal(iss, Some("x"), "y|z");
        assert_ne!(a.binding(), b.binding());
        assert!(!a.same_as(&b));
        // The same shapes with the old separator-free concatenation in mind, across parts.
        let c = principal(Some("a"), Some("bc"), "d");
        let d = principal(Some("ab"), Some("c"), "d");
        assert_ne!(c.binding(), d.binding());
        // A length-prefixed-looking value inside a part is still just bytes.
        let e = principal(iss, Some("1:x"), "1:y");
        let f = principal(iss, Some("1:x1:y"), "");
        assert_ne!(e.binding(), f.binding());
    }

    #[test]
    fn an_absent_part_is_not_an_empty_one() {
        let none = principal(None, None, "alice");
        let empty = principal(Some(""), Some(""), "alice");
        let tenant_only = principal(None, Some(""), "alice");
        let bindings = [none.binding(), empty.binding(), tenant_only.binding()];
        assert_eq!(bindings[0], "--5:alice");
        assert_eq!(bindings[1], "0:0:5:alice");
        assert_eq!(bindings[2], "-0:5:alice");
        assert!(!none.same_as(&tenant_only));
    }

    #[test]
    fn the_binding_names_issuer_tenant_and_subject_and_nothing_else() {
        let a = principal(Some("https://i"), Some("acme"), "alice");
        assert_eq!(a.binding(), "9:https://i4:acme5:alice");
        // Scopes and email change from token to token; the caller stays the same.
        let b = Principal {
            scopes: vec!["mcp".into()],
            email: Some("alice@example.com".into()),
            ..a.clone()
        };
        assert_eq!(a.binding(), b.binding());
        assert!(a.same_as(&b));
        for other in [
            principal(Some("https://j"), Some("acme"), "alice"),
            principal(Some("https://i"), Some("acmf"), "alice"),
            principal(Some("https://i"), Some("acme"), "alicf"),
        ] {
            assert_ne!(a.binding(), other.binding());
            assert!(!a.same_as(&other));
        }
    }
}
