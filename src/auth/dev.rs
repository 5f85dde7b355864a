//! The development issuer of `--auth dev`: an Ed25519 key kept in the data directory, its
//! key set and metadata served by the node itself, and tokens minted on request, so the
//! whole resource-server path runs on a laptop without an identity provider.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{IssuerConfig, Principal};
use crate::crypto;

/// Where the issuer lives under the node's public URL.
pub const PATH: &str = "/dev-issuer";

/// The subject of the token printed at start.
pub const DEV_SUBJECT: &str = "dev-user";

/// How long minted tokens live.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the development issuer could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file could not be read or written.
    #[error("development issuer key {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("development issuer key {0} is damaged; delete it to make a new one")]
    Damaged(String),
}

/// A development issuer.
pub struct DevIssuer {
    key: EncodingKey,
    public: [u8; 32],
    kid: String,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Loads the key in `data_dir` (or makes one, owner-only), for an issuer at
    /// `origin` + [`PATH`] minting tokens for `audience`. Keeping the key means tokens
    /// printed before a restart keep working after it.
    pub fn open(data_dir: &Path, origin: &str, audience: &str) -> Result<Self, Error> {
        let path = data_dir.join("dev-issuer.key");
        let io = |source| Error::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let seed: [u8; 32] = match std::fs::read_to_string(&path) {
            Ok(text) => hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::Damaged(path.display().to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                crypto::fill_random(&mut seed);
                crypto::write_owner_only(&path, hex::encode(seed).as_bytes()).map_err(io)?;
                seed
            }
            Err(e) => return Err(io(e)),
        };
        let signing = SigningKey::from_bytes(&seed);
        let der = signing
            .to_pkcs8_der()
            .map_err(|_| Error::Damaged(path.display().to_string()))?;
        let public = signing.verifying_key().to_bytes();
        Ok(Self {
            key: EncodingKey::from_ed_der(der.as_bytes()),
            kid: hex::encode(&sha2_digest(&public)[..8]),
            public,
            issuer: format!("{}{PATH}", origin.trim_end_matches('/')),
            audience: audience.to_owned(),
        })
    }

    /// How the authenticator should trust this issuer.
    pub fn config(&self) -> IssuerConfig {
        let mut config = IssuerConfig::new(self.issuer.clone());
        config.jwks_uri = Some(format!("{}/jwks.json", self.issuer));
        config.algorithms = vec!["EdDSA".to_owned()];
        config.audiences = vec![self.audience.clone()];
        config.claims.tenant = Some("tenant".to_owned());
        config
    }

    /// The key set (RFC 7517), one Ed25519 key.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }]})
    }

    /// Authorization-server metadata (RFC 8414 / OpenID discovery subset).
    pub fn metadata(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks.json", self.issuer),
            "token_endpoint": format!("{}/token", self.issuer),
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        })
    }

    /// A token for `who`, valid for [`TOKEN_TTL`].
    pub fn mint(&self, who: &Principal) -> String {
        let now = crate::raft::now_ms() / 1000;
        let mut claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": who.subject,
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_TTL.as_secs(),
            "jti": crypto::random_hex(16),
            "scope": who.scopes.join(" "),
        });
        if let Some(email) = &who.email {
            claims["email"] = json!(email);
        }
        if let Some(tenant) = &who.tenant {
            claims["tenant"] = json!(tenant);
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .expect("signing with a well-formed Ed25519 key cannot fail")
    }
}

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_against_the_published_key_and_the_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let issuer =
            DevIssuer::open(dir.path(), "http://127.0.0.1:1", "http://127.0.0.1:1/mcp").unwrap();
        let token = issuer.mint(&Principal {
            scopes: vec!["a".into(), "b".into()],
            ..Principal::anonymous()
        });
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(issuer.jwks()["keys"][0].clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["http://127.0.0.1:1/mcp"]);
        validation.set_issuer(&["http://127.0.0.1:1/dev-issuer"]);
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims["scope"], "a b");
        assert_eq!(data.claims["sub"], "anonymous");

        let again = DevIssuer::open(dir.path(), "http://127.0.0.1:1", "x").unwrap();
        assert_eq!(again.jwks()["keys"][0]["x"], issuer.jwks()["keys"][0]["x"]);
        std::fs::write(dir.path().join("dev-issuer.key"), "zz").unwrap();
        assert!(DevIssuer::open(dir.path(), "http://127.0.0.1:1", "x").is_err());
    }
}
