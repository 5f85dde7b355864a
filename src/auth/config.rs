//! Settings of authentication: trusted issuers, how their claims map to a principal, and
//! the limits of each tier.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::IssuerCas;

/// The `[auth]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How callers are authenticated.
    pub mode: super::Mode,
    /// Trusted issuers; tokens from any other issuer are refused. Several may be listed
    /// (one per tenant, say).
    pub issuers: Vec<IssuerConfig>,
    /// Scopes every MCP request needs; asked for in `WWW-Authenticate` challenges.
    pub required_scopes: Vec<String>,
    /// Scopes each tool needs besides `required_scopes`, by tool name. `tools/list` shows a
    /// caller only the tools it may call.
    pub tool_scopes: BTreeMap<String, Vec<String>>,
    /// Extra scopes to list in the protected-resource metadata (the required and per-tool
    /// scopes are always listed).
    pub scopes_supported: Vec<String>,
    /// Clock skew allowed when checking `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How often each issuer's key set is fetched again.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// The least time between two fetches of one issuer's key set caused by tokens naming
    /// an unknown key id, so a flood of made-up `kid`s cannot make us flood the issuer.
    #[serde(with = "humantime_serde")]
    pub jwks_refetch_interval: Duration,
    /// How long a key-set fetch may take.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// Validated tokens each node keeps in memory. Default 20,000, at about 320 bytes
    /// each (≈ 6 MB). A token past it costs on its next use one full check again: a
    /// signature (≈ 20 µs of CPU for RS256) for a JWT, or a read of the fleet's store for
    /// an introspected token, whose result the fleet shares. A larger tier buys little
    /// and held 32 MB once a node had seen 100,000 distinct tokens.
    pub memory_capacity: usize,
    /// The longest an introspection result is trusted, even if the token lives longer.
    #[serde(with = "humantime_serde")]
    pub introspection_cache: Duration,
    /// How long this node remembers that an opaque token was refused (inactive, for
    /// another audience, missing claims, revoked), so the same bad bearer sent again
    /// costs one introspection per period instead of one per request. Default 30 s: short
    /// enough that a token an issuer had not yet replicated when first asked works again
    /// soon (a client told 401 usually fetches a new token anyway). Zero turns it off.
    #[serde(with = "humantime_serde")]
    pub negative_cache_ttl: Duration,
    /// Refused opaque tokens each node remembers (by SHA-256 of the token, never the
    /// token), about 100 bytes each. Default 10,000 (~1 MB); past it the least useful
    /// entries make room, which costs at most one more introspection each.
    pub max_negative_cache: usize,
    /// Introspection requests one node runs at once. Default 16: a token introspected
    /// once is reused fleet-wide until `introspection_cache` passes, so honest traffic
    /// needs few, while a flood of made-up bearers (each one new, so never cached) can
    /// neither make a node hold unbounded pending calls nor hammer the issuers.
    pub max_concurrent_introspections: usize,
    /// How long a token waits for one of those slots before its request is refused with
    /// 503 (retry later). Default 1 s.
    #[serde(with = "humantime_serde")]
    pub introspection_wait: Duration,
    /// How long a revocation of a user is kept; it refuses that user's tokens issued before
    /// it, so keep it at least as long as your issuers' longest token lifetime.
    #[serde(with = "humantime_serde")]
    pub revocation_ttl: Duration,
    /// A PEM file of one or more CA certificates trusted, besides the system's roots, for
    /// every call to issuers: metadata discovery, key sets, introspection and token
    /// exchange. None by default; an empty value is the same as none, so a deployment
    /// can pass an unset variable through (`MCP_FLEET_AUTH__CA_FILE: ${X:-}`). For
    /// identity providers behind a private CA, as on-prem ones often are. Read once at
    /// start: a file that cannot be read, holds no certificate or a broken one stops
    /// the node with an error naming this key.
    #[serde(
        deserialize_with = "empty_is_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_file: Option<PathBuf>,
    /// The certificates of `ca_file`, read when configuration is validated (see
    /// [`IssuerCas::load`]); never read from the file or the environment themselves.
    #[serde(skip)]
    pub ca_certs: IssuerCas,
}

/// An absent or empty path is no path.
fn empty_is_none<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    let path = Option::<String>::deserialize(deserializer)?;
    Ok(path.filter(|p| !p.trim().is_empty()).map(PathBuf::from))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: super::Mode::None,
            issuers: Vec::new(),
            required_scopes: Vec::new(),
            tool_scopes: BTreeMap::new(),
            scopes_supported: Vec::new(),
            leeway: Duration::from_secs(30),
            jwks_refresh: Duration::from_secs(15 * 60),
            jwks_refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            memory_capacity: 20_000,
            introspection_cache: Duration::from_secs(5 * 60),
            negative_cache_ttl: Duration::from_secs(30),
            max_negative_cache: 10_000,
            max_concurrent_introspections: 16,
            introspection_wait: Duration::from_secs(1),
            revocation_ttl: Duration::from_secs(24 * 3600),
            ca_file: None,
            ca_certs: IssuerCas::default(),
        }
    }
}

impl Config {
    /// Every scope a caller may need: required ones first, then per-tool ones, then extras,
    /// each once.
    pub fn all_scopes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let all = self
            .required_scopes
            .iter()
            .chain(self.tool_scopes.values().flatten())
            .chain(&self.scopes_supported);
        for scope in all {
            if !out.contains(scope) {
                out.push(scope.clone());
            }
        }
        out
    }

    /// The scopes calling `tool` needs: the required ones and the tool's own.
    pub fn scopes_for_tool(&self, tool: &str) -> Vec<String> {
        let mut out = self.required_scopes.clone();
        for scope in self.tool_scopes.get(tool).into_iter().flatten() {
            if !out.contains(scope) {
                out.push(scope.clone());
            }
        }
        out
    }
}

/// One trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer identifier, exactly as tokens carry it in `iss`.
    pub issuer: String,
    /// Where its key set is; by default read from the issuer's metadata
    /// (`/.well-known/openid-configuration`, then `/.well-known/oauth-authorization-server`).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Accepted `aud` values; by default the public MCP URL (RFC 8707).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted signature algorithms, from `RS256`, `RS384`, `RS512`, `PS256`, `PS384`,
    /// `PS512`, `ES256`, `ES384`, `EdDSA`. Never `none`, never HMAC.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Which provider's claim names to expect.
    #[serde(default)]
    pub preset: Preset,
    /// Claim names that override the preset's.
    #[serde(default)]
    pub claims: ClaimNames,
    /// Claims a token must carry besides `iss`, `exp` and the subject claim.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// A tenant given to every principal of this issuer, when its tokens name none.
    #[serde(default)]
    pub tenant: Option<String>,
    /// How to ask about tokens that are not JWTs (RFC 7662).
    #[serde(default)]
    pub introspection: Option<Introspection>,
    /// How tools get tokens for upstream APIs on behalf of this issuer's callers
    /// (`ctx.token_for`, RFC 8693 token exchange). None by default: `ctx.token_for` is a
    /// tool error for them.
    #[serde(default)]
    pub token_exchange: Option<TokenExchange>,
    /// Whether `ctx.token_for` hands tools the caller's own token, unchanged, instead of
    /// exchanging it. Default `false`: the MCP security guidance calls token passthrough
    /// an anti-pattern, since the upstream then accepts a token that was not issued for
    /// it (its audience is this server). Only for an upstream that is, on purpose, in
    /// this server's audience. Cannot be combined with `token_exchange`.
    #[serde(default)]
    pub forward_token: bool,
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"]
        .map(str::to_owned)
        .to_vec()
}

impl IssuerConfig {
    /// An issuer with defaults for everything but its identifier.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            jwks_uri: None,
            audiences: Vec::new(),
            algorithms: default_algorithms(),
            preset: Preset::default(),
            claims: ClaimNames::default(),
            required_claims: Vec::new(),
            tenant: None,
            introspection: None,
            token_exchange: None,
            forward_token: false,
        }
    }

    /// The accepted signature algorithms this build can check. Names that are unknown,
    /// `none` or HMAC are left out: a shared secret has no place in a JWKS, and an HMAC
    /// check keyed with a public key is the classic algorithm-confusion forgery.
    pub fn signing_algorithms(&self) -> Vec<jsonwebtoken::Algorithm> {
        use jsonwebtoken::{Algorithm, AlgorithmFamily};
        let mut out: Vec<Algorithm> = Vec::new();
        for name in &self.algorithms {
            match name.parse::<Algorithm>() {
                Ok(alg) if alg.family() != AlgorithmFamily::Hmac && !out.contains(&alg) => {
                    out.push(alg)
                }
                _ => {}
            }
        }
        out
    }

    /// The configured algorithm names [`IssuerConfig::signing_algorithms`] leaves out.
    pub fn refused_algorithms(&self) -> Vec<&str> {
        let kept = self.signing_algorithms();
        self.algorithms
            .iter()
            .filter(|name| !name.parse().is_ok_and(|alg| kept.contains(&alg)))
            .map(String::as_str)
            .collect()
    }

    /// The claim names in force: the preset's, overridden where configured.
    pub fn claim_names(&self) -> ResolvedClaims {
        let preset = self.preset.claims();
        ResolvedClaims {
            subject: self.claims.subject.clone().unwrap_or(preset.subject),
            email: self.claims.email.clone().or(preset.email),
            tenant: self.claims.tenant.clone().or(preset.tenant),
            scopes: self.claims.scopes.clone().unwrap_or(preset.scopes),
        }
    }
}

/// Where a provider puts what a principal is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// `sub`, `email`, no tenant, `scope`.
    #[default]
    Generic,
    /// WorkOS AuthKit: `sub`, `email`, `org_id`, `scope` and `permissions`.
    Workos,
    /// Auth0: `sub`, `email`, `org_id`, `scope` and `permissions`.
    Auth0,
    /// Keycloak: `sub`, `email`, no tenant, `scope`.
    Keycloak,
    /// Microsoft Entra ID: `oid`, `preferred_username`, `tid`, `scp` and `roles`.
    Entra,
}

impl Preset {
    fn claims(self) -> ResolvedClaims {
        let names =
            |subject: &str, email: &str, tenant: Option<&str>, scopes: &[&str]| ResolvedClaims {
                subject: subject.to_owned(),
                email: Some(email.to_owned()),
                tenant: tenant.map(str::to_owned),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            };
        match self {
            Preset::Generic | Preset::Keycloak => names("sub", "email", None, &["scope"]),
            Preset::Workos | Preset::Auth0 => {
                names("sub", "email", Some("org_id"), &["scope", "permissions"])
            }
            Preset::Entra => names("oid", "preferred_username", Some("tid"), &["scp", "roles"]),
        }
    }
}

/// Claim-name overrides; a dotted name (`realm_access.roles`) reaches into objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimNames {
    /// The subject claim.
    pub subject: Option<String>,
    /// The email claim.
    pub email: Option<String>,
    /// The tenant or organisation claim.
    pub tenant: Option<String>,
    /// Claims holding scopes: space-separated strings or arrays, merged in order.
    pub scopes: Option<Vec<String>>,
}

/// The claim names in force for one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedClaims {
    /// The subject claim.
    pub subject: String,
    /// The email claim.
    pub email: Option<String>,
    /// The tenant claim.
    pub tenant: Option<String>,
    /// The scope claims.
    pub scopes: Vec<String>,
}

/// An RFC 7662 introspection client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Introspection {
    /// The introspection endpoint.
    pub endpoint: String,
    /// Our client id at the issuer.
    pub client_id: String,
    /// Our client secret at the issuer.
    pub client_secret: String,
    /// Whether an active answer must carry an `aud` naming one of the issuer's accepted
    /// audiences (by default the public MCP URL). Default `true`: an introspection
    /// endpoint answers for every token of its issuer, so without it a token issued to
    /// another application of the same identity provider would be accepted here. Set it
    /// to `false` only for an issuer whose answers never carry `aud` and whose tokens are
    /// all meant for this server; an `aud` that is present is checked either way.
    #[serde(default = "default_true")]
    pub require_audience: bool,
    /// Client ids (the answer's `client_id`) whose tokens are accepted without an `aud`:
    /// for providers that name the client a token was issued to, but not its audience.
    /// Empty by default.
    #[serde(default)]
    pub allowed_client_ids: Vec<String>,
}

fn default_true() -> bool {
    true
}

impl Introspection {
    /// A client of `endpoint` with the default answer rules: `aud` required, no client ids
    /// allowed in its place.
    pub fn new(
        endpoint: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            require_audience: true,
            allowed_client_ids: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("require_audience", &self.require_audience)
            .field("allowed_client_ids", &self.allowed_client_ids)
            .finish()
    }
}

/// An RFC 8693 token exchange client: how this server trades a caller's token for one
/// meant for an upstream API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchange {
    /// The token endpoint; by default the `token_endpoint` of the issuer's metadata.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Our client id at the issuer (sent with HTTP Basic).
    pub client_id: String,
    /// Our client secret at the issuer; never logged.
    pub client_secret: String,
}

impl TokenExchange {
    /// A client with these credentials, at the endpoint the issuer's metadata names.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            endpoint: None,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }
}

impl std::fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExchange")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_overrides() {
        let mut entra = IssuerConfig::new("https://login.microsoftonline.com/t/v2.0");
        entra.preset = Preset::Entra;
        let names = entra.claim_names();
        assert_eq!(names.subject, "oid");
        assert_eq!(names.tenant.as_deref(), Some("tid"));
        entra.claims.subject = Some("sub".into());
        assert_eq!(entra.claim_names().subject, "sub");
        assert_eq!(entra.claim_names().scopes, vec!["scp", "roles"]);
    }

    #[test]
    fn hmac_and_none_are_never_signing_algorithms() {
        let mut issuer = IssuerConfig::new("https://id.example.com");
        issuer.algorithms = ["RS256", "HS256", "none", "ES256", "RS256", "XX1"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(
            issuer.signing_algorithms(),
            vec![
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::ES256
            ]
        );
        assert_eq!(issuer.refused_algorithms(), vec!["HS256", "none", "XX1"]);
    }

    #[test]
    fn scopes_for_tools() {
        let config = Config {
            required_scopes: vec!["mcp".into()],
            tool_scopes: BTreeMap::from([("admin".into(), vec!["mcp".into(), "admin".into()])]),
            ..Config::default()
        };
        assert_eq!(config.scopes_for_tool("admin"), vec!["mcp", "admin"]);
        assert_eq!(config.scopes_for_tool("echo"), vec!["mcp"]);
        assert_eq!(config.all_scopes(), vec!["mcp", "admin"]);
        let secret = Introspection::new("e", "c", "hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        let secret = TokenExchange::new("c", "hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
