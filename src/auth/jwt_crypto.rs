//! The signature step of JWT verification on `ring`, plugged into `jsonwebtoken` as its
//! process-wide crypto provider.
//!
//! `jsonwebtoken` keeps parsing the token and checking its claims; only the public-key
//! signature check (RS*, PS*, ES256, ES384, EdDSA) runs on `ring`, which the TLS stack
//! already links. Its assembly RSA and P-256 code checks a signature several times faster
//! than the pure-Rust `RustCrypto` backend, which still signs (the `dev` issuer, tests)
//! and still does whatever this provider does not (HMAC, DER-encoded RSA keys).
//!
//! The keys accepted stay those the `RustCrypto` backend accepted: an RSA modulus of at
//! most [`MAX_RSA_BITS`], leading zero bytes of a JWK's `n` or `e` ignored.

use std::sync::atomic::{AtomicBool, Ordering};

use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwkUtils, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use ring::signature::{self as ring_sig, RsaParameters, RsaPublicKeyComponents};

/// Largest RSA modulus a signature is checked with, in bits: the cap the `RustCrypto`
/// backend applied (`ring` alone would go to 8192), so no key changes from accepted to
/// refused or back with the backend. Bigger keys cost time per check and no issuer needs
/// them.
pub(crate) const MAX_RSA_BITS: usize = 4096;

/// The provider: `ring` verifiers, everything else from `RustCrypto`.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: new_verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components: rust_crypto::DEFAULT_PROVIDER
            .jwk_utils
            .extract_rsa_public_key_components,
        extract_ec_public_key_coordinates: rust_crypto::DEFAULT_PROVIDER
            .jwk_utils
            .extract_ec_public_key_coordinates,
        compute_digest: rust_crypto::DEFAULT_PROVIDER.jwk_utils.compute_digest,
    },
};

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Makes `ring` check JWT signatures in this process. Call it before anything else uses
/// `jsonwebtoken`: the first use fixes the provider for the life of the process. Calling
/// it again is harmless.
pub fn install() {
    match PROVIDER.install_default() {
        Ok(()) => INSTALLED.store(true, Ordering::Relaxed),
        Err(current) if std::ptr::eq(current, &PROVIDER) => {}
        // Something used `jsonwebtoken` first: signatures are still checked, by
        // `RustCrypto`, only more slowly.
        Err(_) => {}
    }
}

/// Whether [`install`] made `ring` the provider of this process.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// A `ring` verifier for `algorithm` with `key`, or the `RustCrypto` one where this
/// provider has none.
fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if key.family() != algorithm.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let verifier: Box<dyn JwtVerifier> = match (algorithm.family(), key.kind()) {
        (AlgorithmFamily::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            let (n, e) = (minimal(n), minimal(e));
            if bits(n) > MAX_RSA_BITS {
                return Err(ErrorKind::InvalidRsaKey("modulus too large".into()).into());
            }
            Box::new(Rsa {
                algorithm: *algorithm,
                params: rsa_params(*algorithm),
                n: n.to_vec(),
                e: e.to_vec(),
            })
        }
        (AlgorithmFamily::Ec, DecodingKeyKind::SecretOrDer(point)) => {
            // An uncompressed point (0x04, x, y) of the algorithm's curve, as a JWK gives.
            let (params, len): (&'static dyn ring_sig::VerificationAlgorithm, _) = match algorithm {
                Algorithm::ES384 => (&ring_sig::ECDSA_P384_SHA384_FIXED, 97),
                _ => (&ring_sig::ECDSA_P256_SHA256_FIXED, 65),
            };
            if point.len() != len || point[0] != 0x04 {
                return Err(ErrorKind::InvalidEcdsaKey.into());
            }
            Box::new(Unparsed {
                algorithm: *algorithm,
                params,
                key: point.clone(),
            })
        }
        (AlgorithmFamily::Ed, DecodingKeyKind::SecretOrDer(x)) => {
            if x.len() != 32 {
                return Err(ErrorKind::InvalidEddsaKey.into());
            }
            Box::new(Unparsed {
                algorithm: *algorithm,
                params: &ring_sig::ED25519,
                key: x.clone(),
            })
        }
        // HMAC, and RSA keys given as DER (never from a JWKS).
        _ => return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key),
    };
    Ok(verifier)
}

fn rsa_params(algorithm: Algorithm) -> &'static RsaParameters {
    match algorithm {
        Algorithm::RS384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
        _ => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
    }
}

/// `bytes` without leading zeros: `ring` wants minimal big-endian integers, and some
/// issuers pad `n` with a zero byte.
pub(crate) fn minimal(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// The bit length of the minimal big-endian integer `bytes`.
pub(crate) fn bits(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 0,
        Some(first) => (bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

struct Rsa {
    algorithm: Algorithm,
    params: &'static RsaParameters,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for Rsa {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let key = RsaPublicKeyComponents {
            n: &self.n,
            e: &self.e,
        };
        key.verify(self.params, message, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Rsa {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// An ECDSA or Ed25519 public key in the encoding `ring` reads: the uncompressed point
/// for ECDSA, the 32 bytes of `x` for Ed25519.
struct Unparsed {
    algorithm: Algorithm,
    params: &'static dyn ring_sig::VerificationAlgorithm,
    key: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for Unparsed {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        ring_sig::UnparsedPublicKey::new(self.params, &self.key)
            .verify(message, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Unparsed {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::EncodingKey;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

    use super::*;
    use crate::auth::test_issuer::TestKey;

    const MESSAGE: &[u8] = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";

    fn rsa1() -> (EncodingKey, DecodingKey) {
        let pem = include_str!("../../tests/fixtures/keys/rsa1.pem");
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        (encoding, decoding(&TestKey::rsa1()))
    }

    fn decoding(key: &TestKey) -> DecodingKey {
        let jwk: Jwk = serde_json::from_value(key.jwk().clone()).unwrap();
        DecodingKey::from_jwk(&jwk).unwrap()
    }

    /// The signature `RustCrypto` makes over `message`.
    fn sign(alg: Algorithm, key: &EncodingKey, message: &[u8]) -> Vec<u8> {
        let signer = (rust_crypto::DEFAULT_PROVIDER.signer_factory)(&alg, key).unwrap();
        signature::Signer::try_sign(&*signer, message).unwrap()
    }

    /// Whether `ring` (through this provider) and `RustCrypto` each accept `sig`.
    fn checks(alg: Algorithm, key: &DecodingKey, sig: &[u8]) -> (bool, bool) {
        let sig = sig.to_vec();
        let ours = new_verifier(&alg, key).unwrap();
        let theirs = (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&alg, key).unwrap();
        (
            ours.verify(MESSAGE, &sig).is_ok(),
            theirs.verify(MESSAGE, &sig).is_ok(),
        )
    }

    /// Genuine signatures pass, tampered ones and those over another message fail, and
    /// `ring` agrees with `RustCrypto` on each.
    fn agree_on(alg: Algorithm, encoding: &EncodingKey, decoding: &DecodingKey) {
        let genuine = sign(alg, encoding, MESSAGE);
        assert_eq!(checks(alg, decoding, &genuine), (true, true), "{alg:?}");
        let mut flipped = genuine.clone();
        flipped[genuine.len() / 2] ^= 1;
        assert_eq!(checks(alg, decoding, &flipped), (false, false), "{alg:?}");
        let other = sign(alg, encoding, b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyb290In0");
        assert_eq!(checks(alg, decoding, &other), (false, false), "{alg:?}");
        assert_eq!(checks(alg, decoding, &[]), (false, false), "{alg:?}");
    }

    #[test]
    fn ring_checks_every_public_key_algorithm_as_rust_crypto_did() {
        let (encoding, rsa) = rsa1();
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ] {
            agree_on(alg, &encoding, &rsa);
        }

        let pem = include_str!("../../tests/fixtures/keys/ec1.pem");
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        agree_on(Algorithm::ES256, &encoding, &decoding(&TestKey::ec1()));

        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let p384 = DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(&point[1..49]),
            &URL_SAFE_NO_PAD.encode(&point[49..]),
        )
        .unwrap();
        agree_on(
            Algorithm::ES384,
            &EncodingKey::from_ec_der(pkcs8.as_ref()),
            &p384,
        );

        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        agree_on(
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(pkcs8.as_ref()),
            &DecodingKey::from_ed_components(&x).unwrap(),
        );
    }

    #[test]
    fn a_key_of_another_family_checks_nothing() {
        let ec = decoding(&TestKey::ec1());
        assert!(new_verifier(&Algorithm::RS256, &ec).is_err());
        let (_, rsa) = rsa1();
        assert!(new_verifier(&Algorithm::ES256, &rsa).is_err());
        assert!(new_verifier(&Algorithm::EdDSA, &rsa).is_err());
        // A P-256 point is no P-384 key.
        assert!(new_verifier(&Algorithm::ES384, &ec).is_err());
    }

    #[test]
    fn rsa_moduli_over_4096_bits_stay_refused() {
        let e = [1, 0, 1];
        let largest = DecodingKey::from_rsa_raw_components(&[0xc5; 512], &e);
        assert!(new_verifier(&Algorithm::RS256, &largest).is_ok());
        // `ring` alone would take it; `RustCrypto` refused it, and so do we.
        let larger = DecodingKey::from_rsa_raw_components(&[0xc5; 513], &e);
        assert!(new_verifier(&Algorithm::RS256, &larger).is_err());
        let theirs = (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&Algorithm::RS256, &larger)
            .unwrap()
            .verify(MESSAGE, &vec![1; 513]);
        assert!(theirs.is_err());
    }

    #[test]
    fn a_modulus_padded_with_a_zero_byte_still_checks() {
        let (encoding, _) = rsa1();
        let jwk = TestKey::rsa1().jwk().clone();
        let mut n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        n.insert(0, 0);
        let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
        let padded = DecodingKey::from_rsa_raw_components(&n, &e);
        agree_on(Algorithm::RS256, &encoding, &padded);
    }

    #[test]
    fn hmac_is_left_to_rust_crypto() {
        let secret = b"a secret of the test";
        let sig = sign(Algorithm::HS256, &EncodingKey::from_secret(secret), MESSAGE);
        let key = DecodingKey::from_secret(secret);
        assert_eq!(checks(Algorithm::HS256, &key, &sig), (true, true));
        assert_eq!(checks(Algorithm::HS256, &key, &sig[1..]), (false, false));
    }

    #[test]
    fn bit_lengths_ignore_leading_zeros() {
        assert_eq!(bits(minimal(&[0, 0, 1, 0])), 9);
        assert_eq!(bits(minimal(&[0x80; 256])), 2048);
        assert_eq!(bits(minimal(&[0x7f; 256])), 2047);
        assert_eq!(bits(minimal(&[0, 0])), 0);
    }
}
