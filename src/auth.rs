//! Who is calling: the principal every request, session and tool call is bound to.

use serde::{Deserialize, Serialize};

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
}

impl Principal {
    /// The principal used when authentication is off.
    pub fn anonymous() -> Self {
        Self {
            subject: "anonymous".to_owned(),
            tenant: None,
            email: None,
            scopes: Vec::new(),
        }
    }

    /// A stable string that binds sealed state and sessions to this principal.
    pub fn binding(&self) -> String {
        match &self.tenant {
            Some(tenant) => format!("{tenant}/{}", self.subject),
            None => self.subject.clone(),
        }
    }
}

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No authentication; every caller is anonymous. Only allowed on loopback.
    None,
}
