//! Certificate authorities trusted for calls to issuers besides the system's roots
//! (`auth.ca_file`): on-prem identity providers often sit behind a private CA.
//!
//! The file is read once, when configuration is validated, so a missing or broken file
//! stops the node at start with an error naming the key, instead of every token failing
//! later with a TLS error. The extra authorities are added to the system's roots, never
//! in place of them, and no other TLS check changes: certificates are still verified,
//! host names still matched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Why `auth.ca_file` cannot be used; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// The file holds no `CERTIFICATE` section.
    #[error(
        "{} holds no PEM certificate (a -----BEGIN CERTIFICATE----- section)",
        .path.display()
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A section of the file is not valid PEM.
    #[error("{} is not a valid PEM file: {message}", .path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A certificate in the file cannot be parsed as an X.509 trust anchor.
    #[error("certificate {index} of {} is not a usable CA certificate: {message}", .path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Which certificate, counting from 1.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// CA certificates trusted, besides the system's roots, for every call to issuers:
/// metadata discovery, key sets, introspection and token exchange. Empty by default.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IssuerCas {
    certs: Arc<[CertificateDer<'static>]>,
}

impl IssuerCas {
    /// Reads the PEM file at `path`: one or more certificates, each usable as a trust
    /// anchor. Sections other than certificates (a key left in the bundle) are skipped.
    pub fn load(path: &Path) -> Result<Self, CaFileError> {
        let pem = std::fs::read(path).map_err(|source| CaFileError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(path, &pem)
    }

    fn from_pem(path: &Path, pem: &[u8]) -> Result<Self, CaFileError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CaFileError::BadPem {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(CaFileError::NoCertificate {
                path: path.to_owned(),
            });
        }
        // The same parse the TLS client makes of its roots: a certificate refused here
        // would fail every connection to the issuer later.
        let mut store = rustls::RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            store
                .add(cert.clone())
                .map_err(|e| CaFileError::BadCertificate {
                    path: path.to_owned(),
                    index: i + 1,
                    message: e.to_string(),
                })?;
        }
        Ok(Self {
            certs: certs.into(),
        })
    }

    /// How many certificates are trusted besides the system's roots.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether only the system's roots are trusted.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// `builder` trusting these certificates too, besides the system's roots.
    pub(crate) fn trust(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        if self.is_empty() {
            return builder;
        }
        // With rustls, a DER certificate is only wrapped here; it was parsed at load.
        let certs = self
            .certs
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok());
        builder.tls_certs_merge(certs)
    }
}

impl std::fmt::Debug for IssuerCas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerCas")
            .field("certificates", &self.certs.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pem: &str) -> Result<IssuerCas, CaFileError> {
        IssuerCas::from_pem(Path::new("/etc/ca.pem"), pem.as_bytes())
    }

    fn ca_pem() -> (String, String) {
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a certificate");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_bundle_of_certificates_is_trusted_and_other_sections_are_skipped() {
        let ((first, key), (second, _)) = (ca_pem(), ca_pem());
        let cas = load(&format!("{first}{key}{second}")).expect("a usable bundle");
        assert_eq!(cas.len(), 2);
        assert_eq!(format!("{cas:?}"), "IssuerCas { certificates: 2 }");
        assert!(IssuerCas::default().is_empty());
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &first).expect("write");
        assert_eq!(IssuerCas::load(&path).expect("a usable file").len(), 1);
    }

    #[test]
    fn a_file_without_certificates_or_with_garbage_is_refused_naming_the_file() {
        let none = load("just text\n").unwrap_err().to_string();
        assert!(
            none.contains("/etc/ca.pem") && none.contains("no PEM"),
            "{none}"
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let bad = load(garbage).unwrap_err();
        assert!(
            matches!(bad, CaFileError::BadCertificate { index: 1, .. }),
            "{bad}"
        );
        let truncated = "-----BEGIN CERTIFICATE-----\nMIIB\n";
        let bad = load(truncated).unwrap_err();
        assert!(matches!(bad, CaFileError::BadPem { .. }), "{bad}");
        let missing = IssuerCas::load(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
    }
}
