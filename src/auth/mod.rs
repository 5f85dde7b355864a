//! Who is calling: the OAuth 2.1 resource server side of a node.
//!
//! - [`Principal`] is the caller every request, session, request state and tool call is
//!   bound to.
//! - [`config`] holds the trusted issuers, their claim mappings and introspection clients.
//! - `claims` maps a token's claims to a principal (presets for WorkOS, Auth0, Keycloak,
//!   Entra).
//! - `jwt` verifies signed tokens against keys from the JWKS actor.
//! - `introspect` asks an issuer about opaque tokens (RFC 7662).
//! - [`Authenticator`] ties them together behind tiers chosen by cost.
//! - [`dev`] is the development issuer of `--auth dev`.

mod authenticator;
mod claims;
pub mod config;
pub mod dev;
mod introspect;
pub(crate) mod jwt;
mod revocation;
#[cfg(test)]
pub(crate) mod test_issuer;

use serde::{Deserialize, Serialize};

pub use authenticator::{AuthError, AuthStats, Authenticator};
pub use config::{ClaimNames, Config, Introspection, IssuerConfig, Preset};
pub use revocation::Revocation;

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
    pub fn binding(&self) -> String {
        format!(
            "{}|{}|{}",
            self.issuer.as_deref().unwrap_or(""),
            self.tenant.as_deref().unwrap_or(""),
            self.subject
        )
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
