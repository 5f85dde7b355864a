//! Maps a token's claims (or an introspection response) to a [`Principal`], using the
//! claim names in force for its issuer.

use serde_json::{Map, Value};

use super::config::{IssuerConfig, ResolvedClaims};
use super::Principal;

/// What a validated token says beyond the principal: what revocation checks and the
/// expiry of cached results need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `jti`, when the token carries one.
    pub token_id: Option<String>,
    /// `iat` in seconds since the epoch.
    pub issued_at: Option<u64>,
    /// `exp` in seconds since the epoch.
    pub expires_at: Option<u64>,
}

/// The claim at `name`: a top-level claim of exactly that name first (namespaced claims
/// such as `https://example.com/roles` contain dots), then a dotted path into objects.
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value).filter(|v| !v.is_null());
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current).filter(|v| !v.is_null())
}

/// A claim as text: strings as they are, numbers in decimal (some providers use numeric
/// ids); anything else is not an identifier.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A numeric date claim (`exp`, `iat`) in whole seconds; fractions are allowed by RFC 7519.
pub(crate) fn seconds(claims: &Map<String, Value>, name: &str) -> Option<u64> {
    let value = claims.get(name)?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

/// The audiences `issuer`'s tokens must name: the configured ones, by default the public
/// MCP URL (RFC 8707).
pub(crate) fn audiences(issuer: &IssuerConfig, resource: &str) -> Vec<String> {
    if issuer.audiences.is_empty() {
        vec![resource.to_owned()]
    } else {
        issuer.audiences.clone()
    }
}

/// Whether `aud` (a string or an array of strings) names one of `accepted`.
pub(crate) fn audience_matches(aud: &Value, accepted: &[String]) -> bool {
    match aud {
        Value::String(s) => accepted.contains(s),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|s| accepted.iter().any(|a| a == s)),
        _ => false,
    }
}

/// The principal `claims` describe for `issuer`, and the facts kept beside it.
///
/// Fails with a reason fit for logs when the subject claim or one of the issuer's
/// required claims is missing.
pub(crate) fn principal(
    claims: &Map<String, Value>,
    issuer: &IssuerConfig,
    names: &ResolvedClaims,
) -> Result<(Principal, Facts), String> {
    for required in &issuer.required_claims {
        if lookup(claims, required).is_none() {
            return Err(format!("missing claim {required}"));
        }
    }
    let subject = lookup(claims, &names.subject)
        .and_then(text)
        .ok_or_else(|| format!("missing claim {}", names.subject))?;
    let email = names
        .email
        .as_deref()
        .and_then(|name| lookup(claims, name))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let tenant = names
        .tenant
        .as_deref()
        .and_then(|name| lookup(claims, name))
        .and_then(text)
        .or_else(|| issuer.tenant.clone());
    let mut scopes: Vec<String> = Vec::new();
    let mut add = |scope: &str| {
        if !scope.is_empty() && !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    };
    for name in &names.scopes {
        match lookup(claims, name) {
            Some(Value::String(s)) => s.split_whitespace().for_each(&mut add),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .flat_map(str::split_whitespace)
                .for_each(&mut add),
            _ => {}
        }
    }
    let facts = Facts {
        token_id: claims.get("jti").and_then(text),
        issued_at: seconds(claims, "iat"),
        expires_at: seconds(claims, "exp"),
    };
    Ok((
        Principal {
            subject,
            tenant,
            email,
            scopes,
            issuer: Some(issuer.issuer.clone()),
        },
        facts,
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::Preset;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn issuer(preset: Preset) -> IssuerConfig {
        let mut issuer = IssuerConfig::new("https://id.example.com");
        issuer.preset = preset;
        issuer
    }

    #[test]
    fn generic_claims() {
        let issuer = issuer(Preset::Generic);
        let claims = map(json!({
            "sub": "u1", "email": "u1@example.com", "scope": "read  write read",
            "jti": "t1", "iat": 10, "exp": 20.5,
        }));
        let (p, facts) = principal(&claims, &issuer, &issuer.claim_names()).unwrap();
        assert_eq!(p.subject, "u1");
        assert_eq!(p.email.as_deref(), Some("u1@example.com"));
        assert_eq!(p.tenant, None);
        assert_eq!(p.scopes, vec!["read", "write"]);
        assert_eq!(p.issuer.as_deref(), Some("https://id.example.com"));
        assert_eq!(
            facts,
            Facts {
                token_id: Some("t1".into()),
                issued_at: Some(10),
                expires_at: Some(20),
            }
        );
    }

    #[test]
    fn presets_merge_scope_claims_in_order() {
        let issuer = issuer(Preset::Workos);
        let claims = map(json!({
            "sub": "u", "org_id": "org_1", "scope": "a b", "permissions": ["c", "a"],
        }));
        let (p, _) = principal(&claims, &issuer, &issuer.claim_names()).unwrap();
        assert_eq!(p.tenant.as_deref(), Some("org_1"));
        assert_eq!(p.scopes, vec!["a", "b", "c"]);

        let issuer = self::issuer(Preset::Entra);
        let claims = map(json!({
            "sub": "pairwise", "oid": "o1", "tid": "t1", "scp": "x y",
            "roles": ["Admin"], "preferred_username": "u@contoso.com",
        }));
        let (p, _) = principal(&claims, &issuer, &issuer.claim_names()).unwrap();
        assert_eq!(p.subject, "o1");
        assert_eq!(p.tenant.as_deref(), Some("t1"));
        assert_eq!(p.email.as_deref(), Some("u@contoso.com"));
        assert_eq!(p.scopes, vec!["x", "y", "Admin"]);
    }

    #[test]
    fn dotted_paths_fixed_tenant_and_required_claims() {
        let mut issuer = issuer(Preset::Keycloak);
        issuer.claims.scopes = Some(vec!["scope".into(), "realm_access.roles".into()]);
        issuer.tenant = Some("acme".into());
        issuer.required_claims = vec!["azp".into()];
        let names = issuer.claim_names();
        let mut claims = map(json!({
            "sub": "u", "scope": "openid", "realm_access": {"roles": ["admin"]},
            "https://example.com/claims.x": "namespaced",
        }));
        assert_eq!(
            principal(&claims, &issuer, &names).unwrap_err(),
            "missing claim azp"
        );
        claims.insert("azp".into(), json!("client"));
        let (p, _) = principal(&claims, &issuer, &names).unwrap();
        assert_eq!(p.tenant.as_deref(), Some("acme"));
        assert_eq!(p.scopes, vec!["openid", "admin"]);
        assert_eq!(
            lookup(&claims, "https://example.com/claims.x"),
            Some(&json!("namespaced"))
        );
        claims.remove("sub");
        assert_eq!(
            principal(&claims, &issuer, &names).unwrap_err(),
            "missing claim sub"
        );
    }

    #[test]
    fn audiences() {
        let accepted = vec!["https://mcp.example.com/mcp".to_owned()];
        assert!(audience_matches(
            &json!("https://mcp.example.com/mcp"),
            &accepted
        ));
        assert!(audience_matches(
            &json!(["other", "https://mcp.example.com/mcp"]),
            &accepted
        ));
        assert!(!audience_matches(&json!(["other"]), &accepted));
        assert!(!audience_matches(&json!(7), &accepted));
    }
}
