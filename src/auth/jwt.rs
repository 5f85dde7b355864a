//! Verifies signed tokens (compact JWS JWTs) against the keys of trusted issuers.
//!
//! The order of checks matters: the unverified `iss` only picks which issuer's rules and
//! keys apply; nothing from the token is believed until its signature has been checked
//! with a key that issuer publishes, under an algorithm that issuer allows and that fits
//! the key.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::claims::{self, Facts};
use super::config::{Config, IssuerConfig, ResolvedClaims};
use super::jwt_crypto::{self, MAX_RSA_BITS};
use super::{AuthError, Principal};
use crate::actors::JwksHandle;

/// Smallest RSA modulus we accept, in bits (also the least `ring` checks with).
const MIN_RSA_BITS: usize = 2048;

/// Whether `token` is a JWT rather than an opaque token: three dot-separated parts whose
/// first is base64url-encoded JSON. A JWT that fails any later check is refused; it is
/// never sent to introspection.
pub(crate) fn is_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    json_object(header).is_some()
}

fn json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// Who it speaks for.
    pub principal: Principal,
    /// Its `jti`, `iat` and `exp`; `exp` is always present.
    pub facts: Facts,
}

/// One trusted issuer, its settings resolved once.
struct Trusted {
    config: IssuerConfig,
    names: ResolvedClaims,
    algorithms: Vec<Algorithm>,
    audiences: Vec<String>,
}

/// Checks JWTs from the configured issuers.
pub(crate) struct Verifier {
    issuers: Vec<Trusted>,
    leeway_secs: u64,
    jwks: JwksHandle,
}

fn invalid(reason: impl Into<String>) -> AuthError {
    AuthError::Invalid(reason.into())
}

impl Verifier {
    /// A verifier for the issuers of `config`; `resource` is the default audience.
    pub fn new(config: &Config, resource: &str, jwks: JwksHandle) -> Self {
        jwt_crypto::install();
        if !jwt_crypto::installed() {
            tracing::warn!(
                "JWT signatures are checked with RustCrypto, several times slower than ring: \
                 jsonwebtoken was used before jwt_crypto::install"
            );
        }
        let issuers = config
            .issuers
            .iter()
            .map(|issuer| Trusted {
                names: issuer.claim_names(),
                algorithms: issuer.signing_algorithms(),
                audiences: claims::audiences(issuer, resource),
                config: issuer.clone(),
            })
            .collect();
        Self {
            issuers,
            leeway_secs: config.leeway.as_secs(),
            jwks,
        }
    }

    /// Checks `token` completely: header, issuer, key, signature, time, audience, claims.
    pub async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let Claimed { alg, kid, iss } = claimed(token)?;
        let trusted = self
            .issuers
            .iter()
            .find(|t| t.config.issuer == iss)
            .ok_or_else(|| invalid("untrusted issuer"))?;
        if !trusted.algorithms.contains(&alg) {
            return Err(invalid(format!(
                "algorithm {alg:?} is not allowed for this issuer"
            )));
        }
        let key = self
            .jwks
            .key(&trusted.config.issuer, kid.as_deref(), alg)
            .await
            .map_err(|e| match e {
                KeyError::NoKey(why) => invalid(why),
                KeyError::Unavailable(why) => AuthError::Unavailable(why),
            })?;
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.required_spec_claims = HashSet::from(["exp", "iss", "aud"].map(str::to_owned));
        validation.set_issuer(&[&trusted.config.issuer]);
        validation.set_audience(&trusted.audiences);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding(), &validation)
            .map_err(|e| invalid(reason(e.kind())))?
            .claims;
        let (principal, facts) =
            claims::principal(&claims, &trusted.config, &trusted.names).map_err(invalid)?;
        if facts.expires_at.is_none() {
            return Err(invalid("missing claim exp"));
        }
        Ok(Verified { principal, facts })
    }
}

/// What a token says about itself before anything in it is believed: only enough to pick
/// the issuer's rules and the key that will check its signature.
#[derive(Debug)]
pub(crate) struct Claimed {
    /// The signature algorithm its header names: never `none`, never HMAC.
    pub alg: Algorithm,
    /// The key id its header names.
    pub kid: Option<String>,
    /// The issuer its payload names.
    pub iss: String,
}

/// Reads the header and the unverified issuer of `token`, refusing what no issuer may
/// accept. Everything here runs on untrusted bytes (the fuzz target `jwt` feeds it).
pub(crate) fn claimed(token: &str) -> Result<Claimed, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
        return Err(invalid("malformed token"));
    };
    let header = json_object(header).ok_or_else(|| invalid("malformed token header"))?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        None => return Err(invalid("the token names no algorithm")),
        Some(name) if name.eq_ignore_ascii_case("none") => {
            return Err(invalid("unsigned tokens (alg none) are not accepted"))
        }
        Some(name) => name
            .parse::<Algorithm>()
            .map_err(|_| invalid("unsupported algorithm"))?,
    };
    if alg.family() == AlgorithmFamily::Hmac {
        return Err(invalid("HMAC-signed tokens are not accepted"));
    }
    if header.contains_key("crit") {
        // RFC 7515 4.1.11: extensions we do not understand make the token invalid.
        return Err(invalid("critical header extensions are not supported"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(invalid("malformed key id")),
    };
    let unverified = json_object(payload).ok_or_else(|| invalid("malformed token payload"))?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("missing claim iss"))?
        .to_owned();
    Ok(Claimed { alg, kid, iss })
}

/// A verification key from an issuer's key set.
#[derive(Debug)]
pub(crate) struct Key {
    decoding: DecodingKey,
    algorithm: Option<Algorithm>,
    curve: Option<EllipticCurve>,
    /// The key as published, to tell when a refresh drops it.
    source: Jwk,
}

impl Key {
    /// The key for signature checks.
    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Whether this key may check a signature made with `alg`: same family, same
    /// algorithm when the key names one, and the curve that algorithm uses.
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        self.decoding.family() == alg.family()
            && self.algorithm.is_none_or(|a| a == alg)
            && match (alg, &self.curve) {
                (Algorithm::ES256, Some(c)) => *c == EllipticCurve::P256,
                (Algorithm::ES384, Some(c)) => *c == EllipticCurve::P384,
                (Algorithm::EdDSA, Some(c)) => *c == EllipticCurve::Ed25519,
                (_, curve) => curve.is_none(),
            }
    }
}

/// Why no key was found for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// The token names a key the issuer does not publish, or none that fits: the
    /// token is refused.
    NoKey(&'static str),
    /// The issuer's keys could not be fetched and none are cached: nothing can be said
    /// about the token.
    Unavailable(String),
}

/// One issuer's usable keys.
#[derive(Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Vec<Arc<Key>>>,
    all: Vec<Arc<Key>>,
}

/// What a key set says about a token's key.
pub(crate) enum Lookup {
    /// This key checks it.
    Found(Arc<Key>),
    /// The set does not hold the key: a newer set might.
    Unknown,
    /// The set holds no key that may check it, and never will.
    Refused(&'static str),
}

impl KeySet {
    /// The usable keys of a JWKS document: signing keys of an allowed algorithm. Keys
    /// that do not parse, are meant for encryption, or are symmetric are skipped, each on
    /// its own.
    pub(crate) fn parse(document: &Value, allowed: &[Algorithm]) -> KeySet {
        let mut set = KeySet::default();
        let entries = document.get("keys").and_then(Value::as_array);
        for entry in entries.into_iter().flatten() {
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
                continue;
            };
            let Some(key) = usable(jwk, allowed) else {
                continue;
            };
            let key = Arc::new(key);
            if let Some(kid) = &key.source.common.key_id {
                set.by_kid.entry(kid.clone()).or_default().push(key.clone());
            }
            set.all.push(key);
        }
        set
    }

    /// How many usable keys it holds.
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether `newer` lacks a key this set holds.
    pub(crate) fn withdrawn_in(&self, newer: &KeySet) -> bool {
        self.all
            .iter()
            .any(|k| !newer.all.iter().any(|n| n.source == k.source))
    }

    /// The key for a token naming `kid` (or none) signed with `alg`.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(keys) => keys.iter().find(|k| k.fits(alg)).map_or(
                    Lookup::Refused("the named key does not fit the algorithm"),
                    |k| Lookup::Found(k.clone()),
                ),
                None => Lookup::Unknown,
            },
            // Without a kid, only an unambiguous set will do.
            None => match self.all.as_slice() {
                [] => Lookup::Unknown,
                [only] if only.fits(alg) => Lookup::Found(only.clone()),
                [_] => Lookup::Refused("the only key does not fit the algorithm"),
                _ => Lookup::Refused("the token names no key id and the issuer has several keys"),
            },
        }
    }
}

/// The key `jwk` describes, if it may check signatures under one of `allowed`.
fn usable(jwk: Jwk, allowed: &[Algorithm]) -> Option<Key> {
    let common = &jwk.common;
    if !matches!(common.public_key_use, None | Some(PublicKeyUse::Signature)) {
        return None;
    }
    if common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let algorithm = match common.key_algorithm {
        Some(named) => Some(Algorithm::from_str(&named.to_string()).ok()?),
        None => None,
    };
    let (family, curve) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = URL_SAFE_NO_PAD.decode(&rsa.n).ok()?;
            let bits = jwt_crypto::bits(jwt_crypto::minimal(&n));
            (MIN_RSA_BITS..=MAX_RSA_BITS)
                .contains(&bits)
                .then_some((AlgorithmFamily::Rsa, None))?
        }
        AlgorithmParameters::EllipticCurve(ec) => (AlgorithmFamily::Ec, Some(ec.curve.clone())),
        AlgorithmParameters::OctetKeyPair(okp) => (AlgorithmFamily::Ed, Some(okp.curve.clone())),
        // Symmetric keys are never used to check a signature.
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let decoding = DecodingKey::from_jwk(&jwk).ok()?;
    if decoding.family() != family {
        return None;
    }
    let key = Key {
        decoding,
        algorithm,
        curve,
        source: jwk,
    };
    // Keep it only if some allowed algorithm may use it.
    allowed.iter().any(|a| key.fits(*a)).then_some(key)
}

/// A refusal reason fit for logs.
fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not yet valid (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim {claim}"),
        ErrorKind::InvalidAlgorithm => "the algorithm does not fit the key".into(),
        _ => "malformed token".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::auth::test_issuer::{forge, now, TestIssuer, TestKey};
    use crate::auth::Preset;

    const RESOURCE: &str = "https://mcp.example.com/mcp";

    fn verifier(issuer: &TestIssuer, tune: impl FnOnce(&mut IssuerConfig)) -> Verifier {
        let mut trusted = IssuerConfig::new(issuer.issuer());
        trusted.jwks_uri = Some(issuer.jwks_uri());
        tune(&mut trusted);
        let config = Config {
            issuers: vec![trusted],
            jwks_refetch_interval: Duration::from_secs(3600),
            ..Config::default()
        };
        Verifier::new(&config, RESOURCE, JwksHandle::start(&config))
    }

    async fn refusal(verifier: &Verifier, token: &str) -> String {
        match verifier.verify(token).await {
            Err(AuthError::Invalid(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn with(mut claims: Value, changes: Value) -> Value {
        for (name, value) in changes.as_object().unwrap() {
            match value {
                Value::Null => claims.as_object_mut().unwrap().remove(name),
                _ => claims
                    .as_object_mut()
                    .unwrap()
                    .insert(name.clone(), value.clone()),
            };
        }
        claims
    }

    #[test]
    fn tells_jwts_from_opaque_tokens() {
        let rsa1 = TestKey::rsa1();
        assert!(is_jwt(&rsa1.sign(&json!({"sub": "x"}))));
        assert!(is_jwt(&forge(&json!({"alg": "none"}), &json!({}), "")));
        assert!(!is_jwt("2YotnFZFEjr1zCsicMWpAA"));
        assert!(!is_jwt("a.b.c"));
        assert!(!is_jwt("e30.e30.e30.e30"));
        assert!(!is_jwt(""));
    }

    #[actix_web::test]
    async fn accepts_rs256_and_es256_and_maps_presets() {
        let (rsa1, ec1) = (TestKey::rsa1(), TestKey::ec1());
        let issuer = TestIssuer::start(&[&rsa1, &ec1]);
        let generic = verifier(&issuer, |_| {});
        let claims = with(
            issuer.claims(RESOURCE, "alice"),
            json!({"email": "alice@example.com", "scope": "mcp read"}),
        );
        let verified = generic.verify(&rsa1.sign(&claims)).await.unwrap();
        let p = &verified.principal;
        assert_eq!(p.subject, "alice");
        assert_eq!(p.email.as_deref(), Some("alice@example.com"));
        assert_eq!(p.tenant, None);
        assert_eq!(p.scopes, vec!["mcp", "read"]);
        assert_eq!(p.issuer.as_deref(), Some(issuer.issuer().as_str()));
        assert_eq!(verified.facts.token_id.as_deref(), claims["jti"].as_str());
        assert_eq!(verified.facts.issued_at, claims["iat"].as_u64());
        assert_eq!(verified.facts.expires_at, claims["exp"].as_u64());
        let verified = generic.verify(&ec1.sign(&claims)).await.unwrap();
        assert_eq!(verified.principal.subject, "alice");

        let workos = verifier(&issuer, |i| i.preset = Preset::Workos);
        let claims = with(
            issuer.claims(RESOURCE, "user_01"),
            json!({"org_id": "org_01", "scope": "mcp", "permissions": ["tools:call", "mcp"]}),
        );
        let p = workos.verify(&ec1.sign(&claims)).await.unwrap().principal;
        assert_eq!(p.tenant.as_deref(), Some("org_01"));
        assert_eq!(p.scopes, vec!["mcp", "tools:call"]);

        let entra = verifier(&issuer, |i| {
            i.preset = Preset::Entra;
            i.audiences = vec!["api://mcp-fleet".into()];
        });
        let claims = with(
            issuer.claims("api://mcp-fleet", "pairwise-sub"),
            json!({
                "oid": "oid-1", "tid": "tenant-1", "scp": "mcp.read mcp.write",
                "roles": ["Admin"], "preferred_username": "bob@contoso.com",
            }),
        );
        let p = entra.verify(&rsa1.sign(&claims)).await.unwrap().principal;
        assert_eq!(p.subject, "oid-1");
        assert_eq!(p.tenant.as_deref(), Some("tenant-1"));
        assert_eq!(p.email.as_deref(), Some("bob@contoso.com"));
        assert_eq!(p.scopes, vec!["mcp.read", "mcp.write", "Admin"]);
        // The configured audience replaces the default one.
        let default_aud = rsa1.sign(&with(claims, json!({"aud": RESOURCE})));
        assert_eq!(refusal(&entra, &default_aud).await, "wrong audience");
    }

    #[actix_web::test]
    async fn refuses_forgeries() {
        let (rsa1, rsa2, ec1) = (TestKey::rsa1(), TestKey::rsa2(), TestKey::ec1());
        let issuer = TestIssuer::start(&[&rsa1, &ec1]);
        // Even an issuer configured to allow HS256 never checks HMAC signatures.
        let verifier = verifier(&issuer, |i| i.algorithms.push("HS256".into()));
        let claims = issuer.claims(RESOURCE, "alice");

        let unsigned = forge(&json!({"alg": "none", "kid": "rsa1"}), &claims, "");
        assert!(refusal(&verifier, &unsigned).await.contains("alg none"));

        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa1".into());
        let public = EncodingKey::from_secret(TestKey::rsa1_public_pem().as_bytes());
        let confused = jsonwebtoken::encode(&header, &claims, &public).unwrap();
        assert!(refusal(&verifier, &confused).await.contains("HMAC"));

        let genuine = rsa1.sign(&claims);
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(with(claims.clone(), json!({"sub": "root"})).to_string());
        parts[1] = &evil;
        assert_eq!(refusal(&verifier, &parts.join(".")).await, "bad signature");

        // Signed by another key while naming ours; an embedded key is never trusted.
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa1".into());
        header.jwk = Some(serde_json::from_value(rsa2.jwk().clone()).unwrap());
        let impostor = rsa2.sign_with(&header, &claims);
        assert_eq!(refusal(&verifier, &impostor).await, "bad signature");

        // The algorithm must fit the key the token names.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("rsa1".into());
        let mismatched = ec1.sign_with(&header, &claims);
        assert!(refusal(&verifier, &mismatched)
            .await
            .contains("does not fit"));

        let critical = forge(
            &json!({"alg": "RS256", "kid": "rsa1", "crit": ["exp"]}),
            &claims,
            "c2ln",
        );
        assert!(refusal(&verifier, &critical).await.contains("critical"));

        let es_only = self::verifier(&issuer, |i| i.algorithms = vec!["ES256".into()]);
        assert!(refusal(&es_only, &genuine).await.contains("not allowed"));
    }

    #[actix_web::test]
    async fn refuses_bad_claims() {
        let rsa1 = TestKey::rsa1();
        let issuer = TestIssuer::start(&[&rsa1]);
        let verifier = verifier(&issuer, |i| i.required_claims = vec!["org_id".into()]);
        let good = with(issuer.claims(RESOURCE, "alice"), json!({"org_id": "o"}));
        let now = now();
        let cases = [
            (
                json!({"iss": "https://evil.example.com"}),
                "untrusted issuer",
            ),
            (json!({"iss": null}), "missing claim iss"),
            (
                json!({"aud": "https://other.example.com/mcp"}),
                "wrong audience",
            ),
            (json!({"aud": ["a", "b"]}), "wrong audience"),
            (json!({"aud": null}), "missing claim aud"),
            (json!({"exp": now - 3600}), "expired"),
            (json!({"exp": null}), "missing claim exp"),
            (json!({"nbf": now + 3600}), "not yet valid (nbf)"),
            (json!({"org_id": null}), "missing claim org_id"),
            (json!({"sub": null}), "missing claim sub"),
        ];
        for (change, reason) in cases {
            let token = rsa1.sign(&with(good.clone(), change.clone()));
            assert_eq!(refusal(&verifier, &token).await, reason, "{change}");
        }
        // Within the leeway (30 s by default), and with several audiences.
        let lenient = json!({"exp": now - 5, "nbf": now + 5, "aud": ["x", RESOURCE]});
        let token = rsa1.sign(&with(good, lenient));
        verifier.verify(&token).await.unwrap();
    }

    #[actix_web::test]
    async fn a_token_without_kid_needs_a_single_key() {
        let (rsa1, rsa2) = (TestKey::rsa1(), TestKey::rsa2());
        let issuer = TestIssuer::start(&[&rsa1]);
        let verifier = verifier(&issuer, |_| {});
        let claims = issuer.claims(RESOURCE, "alice");
        let no_kid = rsa1.sign_with(&Header::new(Algorithm::RS256), &claims);
        verifier.verify(&no_kid).await.unwrap();

        let issuer = TestIssuer::start(&[&rsa1, &rsa2]);
        let verifier = self::verifier(&issuer, |_| {});
        let claims = issuer.claims(RESOURCE, "alice");
        let no_kid = rsa1.sign_with(&Header::new(Algorithm::RS256), &claims);
        assert!(refusal(&verifier, &no_kid).await.contains("several keys"));
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let rsa_n = URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
        let short_n = URL_SAFE_NO_PAD.encode([0xc5u8; 128]);
        let document = json!({"keys": [
            {"kty": "RSA", "kid": "sig", "use": "sig", "alg": "RS256", "n": rsa_n, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_n, "e": "AQAB"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": rsa_n, "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS512", "n": rsa_n, "e": "AQAB"},
            {"kty": "RSA", "kid": "short", "n": short_n, "e": "AQAB"},
            {"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": rsa_n, "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "x"},
            "not even an object",
        ]});
        let set = KeySet::parse(&document, &[Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(set.len(), 1);
        assert!(matches!(
            set.find(Some("sig"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        // A key that names RS256 never checks PS256; an RSA key never checks ES256.
        assert!(matches!(
            set.find(Some("sig"), Algorithm::PS256),
            Lookup::Refused(_)
        ));
        assert!(matches!(
            set.find(None, Algorithm::ES256),
            Lookup::Refused(_)
        ));
        assert!(matches!(
            set.find(Some("nope"), Algorithm::RS256),
            Lookup::Unknown
        ));
        // An EC key for the wrong curve is no key for ES256.
        let ec1 = TestKey::ec1();
        let mut p384 = ec1.jwk().clone();
        p384["crv"] = json!("P-384");
        p384["alg"] = Value::Null;
        let set = KeySet::parse(&json!({"keys": [p384]}), &[Algorithm::ES256]);
        assert_eq!(set.len(), 0);
    }
    #[test]
    fn rsa_keys_outside_2048_to_4096_bits_are_skipped() {
        let key = |kid: &str, n: &[u8]| json!({"kty": "RSA", "kid": kid, "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"});
        let mut padded = vec![0u8];
        padded.extend([0xc5u8; 256]);
        let document = json!({"keys": [
            key("2047", &[0x7fu8; 256]),
            key("2048", &[0x80u8; 256]),
            key("padded", &padded),
            key("4096", &[0xffu8; 512]),
            key("4104", &[0x80u8; 513]),
        ]});
        let set = KeySet::parse(&document, &[Algorithm::RS256]);
        let found = |kid| matches!(set.find(Some(kid), Algorithm::RS256), Lookup::Found(_));
        assert!(!found("2047"));
        assert!(found("2048"));
        assert!(found("padded"));
        assert!(found("4096"));
        assert!(!found("4104"));
        assert_eq!(set.len(), 3);
    }
}
