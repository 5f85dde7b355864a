//! Sealing: authenticated encryption (AES-256-GCM-SIV) of state that leaves this process,
//! with a key ring so keys can rotate while old ciphertexts stay readable, and a keyed hash
//! so stored keys never reveal tokens or session ids.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Format byte in front of every sealed blob, so a later format can be told apart.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

/// Errors from building a key ring or opening sealed data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key was not 64 hex characters (32 bytes).
    #[error("an encryption key must be 64 hex characters (32 bytes)")]
    BadKey,
    /// The key ring has no keys.
    #[error("the key ring is empty")]
    EmptyRing,
    /// The sealed data was truncated, tampered with, bound to other data, or sealed with a
    /// key this ring does not hold.
    #[error("sealed data failed authentication")]
    Open,
    /// A key-ring file is malformed.
    #[error("key ring: {0}")]
    Ring(String),
    /// The value is neither a key nor the name of a readable key-ring file. The value
    /// itself is never repeated: it may be a mistyped key.
    #[error("it is neither 64 hex characters nor a readable key-ring file ({0})")]
    NotAKey(std::io::ErrorKind),
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// A 32-byte key; its bytes never appear in `Debug` output.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    /// Parses 64 hex characters.
    pub fn from_hex(hex_str: &str) -> Result<Self, Error> {
        let bytes = hex::decode(hex_str.trim()).map_err(|_| Error::BadKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| Error::BadKey)?;
        Ok(Self(arr))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut arr = [0u8; 32];
        fill_random(&mut arr);
        Self(arr)
    }

    /// The key as 64 hex characters, for writing to a key file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A one-way fingerprint of the key: HMAC-SHA-256 under the key of a fixed label, so
    /// two nodes can compare keys without either showing one.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(b"mcp-fleet key fingerprint v1");
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Loads the key in `path`, or generates one when the file is absent and hands its file
/// back unwritten ([`UnwrittenKey::write`] makes it, owner-only), for the caller to write
/// while it does other work. Nothing may be sealed with the key for keeps before then.
///
/// Used by dev mode so a developer never has to make a key by hand.
pub fn load_or_generate_key_file(path: &Path) -> Result<(Key, Option<UnwrittenKey>), Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((Key::from_hex(&text)?, None)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::generate();
            let unwritten = UnwrittenKey {
                path: path.to_owned(),
                hex: key.to_hex(),
            };
            Ok((key, Some(unwritten)))
        }
        Err(source) => Err(Error::KeyFile {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// A generated key whose file is not written yet; see [`load_or_generate_key_file`].
#[must_use = "the key is lost at exit unless its file is written"]
pub struct UnwrittenKey {
    path: std::path::PathBuf,
    hex: String,
}

impl UnwrittenKey {
    /// Writes the key's file, readable by the owner only, durably ([`write_owner_only`]).
    pub fn write(self) -> Result<(), Error> {
        write_owner_only(&self.path, self.hex.as_bytes()).map_err(|source| Error::KeyFile {
            path: self.path.display().to_string(),
            source,
        })
    }
}

impl std::fmt::Debug for UnwrittenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("UnwrittenKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Creates `path` with `bytes`, readable and writable by the owner only; refuses to
/// replace an existing file. A crash leaves the file whole or absent, never empty or cut
/// short, and once this returns the file survives a power loss: it is written in full to
/// a temporary file and fsynced, linked in under its name (which fails if the name is
/// taken), and the directory is fsynced. A key that vanished while the records sealed
/// with it stayed would leave them unreadable.
#[cfg(unix)]
pub(crate) fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    // A temporary file left by a crash holds nothing anyone relies on.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    linked?;
    if let Some(dir) = path.parent() {
        crate::durable::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// `bytes` random bytes from the operating system, as lowercase hex: ids, secrets, nonces.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    hex::encode(buf)
}

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) {
    // The OS generator failing is unrecoverable: nothing secure can be made without it.
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// A key ring: every key it can open with, and the one new data is sealed with.
#[derive(Clone)]
pub struct Sealer {
    keys: BTreeMap<u32, Aes256GcmSiv>,
    /// Each key's fingerprint (see [`Key::fingerprint`]), to tell rings apart without keys.
    fingerprints: BTreeMap<u32, [u8; 32]>,
    active: u32,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl Sealer {
    /// A ring of `(key id, key)` pairs sealing new data with `active`.
    pub fn new(keys: impl IntoIterator<Item = (u32, Key)>, active: u32) -> Result<Self, Error> {
        let keys: BTreeMap<u32, Key> = keys.into_iter().collect();
        if !keys.contains_key(&active) {
            return Err(Error::EmptyRing);
        }
        Ok(Self {
            fingerprints: keys
                .iter()
                .map(|(id, key)| (*id, key.fingerprint()))
                .collect(),
            keys: keys
                .iter()
                .map(|(id, key)| (*id, Aes256GcmSiv::new(&key.0.into())))
                .collect(),
            active,
        })
    }

    /// A ring holding one key, with id 1.
    pub fn single(key: Key) -> Self {
        Self::new([(1, key)], 1).expect("a one-key ring always holds its active key")
    }

    /// Seals `plaintext`, binding it to `aad` (which is authenticated but not stored).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_with(self.active, aad, plaintext)
            .expect("the active key is always in the ring")
    }

    /// Seals `plaintext` with key `key_id` rather than the active one (key-check records
    /// hold one value sealed with each key); `None` when the ring lacks that key.
    pub fn seal_with(&self, key_id: u32, aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let cipher = self.keys.get(&key_id)?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM-SIV encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&key_id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Some(out)
    }

    /// The id of the key new data is sealed with.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// The ids of every key this ring opens with, in order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    /// The fingerprint of each key, by id (see [`Key::fingerprint`]).
    pub fn fingerprints(&self) -> &BTreeMap<u32, [u8; 32]> {
        &self.fingerprints
    }

    /// The id of the key `sealed` was sealed with, when it has a known format.
    pub fn key_id(sealed: &[u8]) -> Option<u32> {
        if sealed.len() < HEADER_LEN || sealed[0] != FORMAT_V1 {
            return None;
        }
        Some(u32::from_be_bytes(sealed[1..5].try_into().ok()?))
    }

    /// Opens data made by [`Sealer::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
        if sealed.len() < HEADER_LEN || sealed[0] != FORMAT_V1 {
            return Err(Error::Open);
        }
        let key_id = u32::from_be_bytes(sealed[1..5].try_into().map_err(|_| Error::Open)?);
        let cipher = self.keys.get(&key_id).ok_or(Error::Open)?;
        cipher
            .decrypt(
                Nonce::from_slice(&sealed[5..HEADER_LEN]),
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad,
                },
            )
            .map_err(|_| Error::Open)
    }
}

/// A keyed hash (HMAC-SHA-256) turning tokens and ids into stored keys, so the store can be
/// looked up by them without ever holding them.
#[derive(Clone)]
pub struct IndexKey {
    mac: Hmac<Sha256>,
    /// The key itself, for `mcp-fleet keys index-key` to print so it can be pinned.
    key: Key,
}

impl fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IndexKey(<redacted>)")
    }
}

impl IndexKey {
    /// The index key derived from a sealing key (HMAC of a fixed label under that key).
    pub fn derive(key: &Key) -> Self {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC accepts keys of any length");
        mac.update(b"mcp-fleet index key v1");
        let derived: [u8; 32] = mac.finalize().into_bytes().into();
        Self::from_key(&Key(derived))
    }

    fn from_key(key: &Key) -> Self {
        Self {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&key.0)
                .expect("HMAC accepts keys of any length"),
            key: key.clone(),
        }
    }

    /// The index key as 64 hex characters: the value of `index_key` in a key-ring file
    /// that pins it.
    pub fn to_hex(&self) -> String {
        self.key.to_hex()
    }

    /// A one-way fingerprint of the index key, to compare it across nodes without
    /// showing it. (One part longer than a table byte: never equal to a stored key.)
    pub fn fingerprint(&self) -> [u8; 32] {
        self.hash(&[b"mcp-fleet index key fingerprint v1"])
    }

    /// The keyed hash of `parts`, each length-prefixed so no two inputs collide.
    pub fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// The fleet's keys: the sealing key ring and the index key.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Seals and opens records.
    pub sealer: Sealer,
    /// Hashes natural keys into stored keys; it must stay the same for the fleet's life.
    pub index: IndexKey,
}

/// The on-disk form of a key-ring file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    active: u32,
    #[serde(default)]
    index_key: Option<String>,
    keys: BTreeMap<String, String>,
}

impl Ring {
    /// A one-way fingerprint of the whole ring: which key is active, every key by id, and
    /// the index key. Two nodes with equal fingerprints seal, open and index alike; no key
    /// can be learnt from it.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut digest = Sha256::new();
        digest.update(b"mcp-fleet ring fingerprint v1");
        digest.update(self.sealer.active().to_be_bytes());
        for (id, fingerprint) in self.sealer.fingerprints() {
            digest.update(id.to_be_bytes());
            digest.update(fingerprint);
        }
        digest.update(self.index.fingerprint());
        digest.finalize().into()
    }

    /// A ring of one key (id 1), whose index key is derived from it.
    pub fn single(key: Key) -> Self {
        Self {
            index: IndexKey::derive(&key),
            sealer: Sealer::single(key),
        }
    }

    /// Reads `value`: 64 hex characters (one key), or the path of a key-ring file.
    ///
    /// A key-ring file is TOML: `active = 2`, a `[keys]` table of `id = "64 hex"`, and an
    /// optional `index_key = "64 hex"`. Every key in `[keys]` opens records; only `active`
    /// seals new ones, so a key listed but not active is readable only (the first phase
    /// of a rotation). Without `index_key` the index key is derived from the
    /// key with the lowest id, so that key must stay in the ring, or its derived index key be
    /// pinned as `index_key`, for as long as the fleet's data lives.
    pub fn from_config(value: &str) -> Result<Self, Error> {
        let value = value.trim();
        if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Key::from_hex(value).map(Self::single);
        }
        let text = std::fs::read_to_string(value).map_err(|e| Error::NotAKey(e.kind()))?;
        Self::from_ring_file(&text)
    }

    fn from_ring_file(text: &str) -> Result<Self, Error> {
        use figment::providers::{Format, Toml};
        let file: RingFile = figment::Figment::from(Toml::string(text))
            .extract()
            // Figment errors can quote values; the values here are keys.
            .map_err(|e| Error::Ring(format!("not a key-ring file ({})", e.kind)))?;
        let mut keys = BTreeMap::new();
        for (id, hex_key) in &file.keys {
            let id: u32 = id
                .parse()
                .map_err(|_| Error::Ring(format!("key id `{id}` is not a number")))?;
            keys.insert(id, Key::from_hex(hex_key)?);
        }
        let first = keys.values().next().ok_or(Error::EmptyRing)?;
        let index = match &file.index_key {
            Some(hex_key) => IndexKey::from_key(&Key::from_hex(hex_key)?),
            None => IndexKey::derive(first),
        };
        if !keys.contains_key(&file.active) {
            return Err(Error::Ring(format!(
                "the active key {} is not in [keys]",
                file.active
            )));
        }
        Ok(Self {
            sealer: Sealer::new(keys, file.active)?,
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Sealer {
        Sealer::single(Key::generate())
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_is_made_whole_for_its_owner_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.key");
        // What a crash while writing the temporary file left behind.
        std::fs::write(dir.path().join("encryption.key.tmp"), b"half a ke").unwrap();
        let (key, unwritten) = load_or_generate_key_file(&path).unwrap();
        // Nothing on disk until the file is written.
        assert!(!path.exists());
        unwritten.expect("a new key").write().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key.to_hex());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("encryption.key.tmp").exists());
        // The same key on the next start, nothing to write; another write never replaces it.
        let (again, unwritten) = load_or_generate_key_file(&path).unwrap();
        assert_eq!(again.to_hex(), key.to_hex());
        assert!(unwritten.is_none());
        let taken = write_owner_only(&path, b"another").unwrap_err();
        assert_eq!(taken.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key.to_hex());
        assert!(!dir.path().join("encryption.key.tmp").exists());
    }

    #[test]
    fn round_trip() {
        let s = ring();
        let sealed = s.seal(b"aad", b"secret");
        assert_eq!(s.open(b"aad", &sealed).unwrap(), b"secret");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let s = ring();
        let sealed = s.seal(b"aad", b"secret");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                s.open(b"aad", &bad).is_err(),
                "byte {i} flipped was accepted"
            );
        }
    }

    #[test]
    fn other_associated_data_is_rejected() {
        let s = ring();
        let sealed = s.seal(b"alice", b"secret");
        assert!(matches!(s.open(b"bob", &sealed), Err(Error::Open)));
    }

    #[test]
    fn rotation_keeps_old_data_readable_and_retired_keys_fail() {
        let old = Key::generate();
        let new = Key::generate();
        let before = Sealer::single(old.clone());
        let sealed_old = before.seal(b"", b"v1");
        let rotated = Sealer::new([(1, old), (2, new.clone())], 2).unwrap();
        assert_eq!(rotated.open(b"", &sealed_old).unwrap(), b"v1");
        let sealed_new = rotated.seal(b"", b"v2");
        assert_eq!(sealed_new[1..5], 2u32.to_be_bytes());
        let retired = Sealer::new([(2, new)], 2).unwrap();
        assert!(retired.open(b"", &sealed_old).is_err());
        assert_eq!(retired.open(b"", &sealed_new).unwrap(), b"v2");
    }

    #[test]
    fn bad_keys_and_truncation() {
        assert!(Key::from_hex("abcd").is_err());
        assert!(Key::from_hex(&"zz".repeat(32)).is_err());
        assert!(ring().open(b"", &[1, 0, 0]).is_err());
        assert_eq!(format!("{:?}", Key::generate()), "Key(<redacted>)");
    }

    #[test]
    fn ring_files_rotate_without_moving_the_index() {
        let k1 = Key::generate();
        let k2 = Key::generate();
        let one = Ring::from_config(&k1.to_hex()).unwrap();
        let two = Ring::from_ring_file(&format!(
            "active = 2\n[keys]\n1 = \"{}\"\n2 = \"{}\"\n",
            k1.to_hex(),
            k2.to_hex()
        ))
        .unwrap();
        assert_eq!(one.index.hash(&[b"a"]), two.index.hash(&[b"a"]));
        assert_ne!(one.index.hash(&[b"a", b"b"]), one.index.hash(&[b"ab"]));
        let sealed = two.sealer.seal(b"", b"v");
        assert_eq!(Sealer::key_id(&sealed), Some(2));
        assert_eq!(
            one.sealer.open(b"", &one.sealer.seal(b"", b"w")).unwrap(),
            b"w"
        );
        let err = Ring::from_ring_file(&format!("active = 3\n[keys]\n1 = \"{}\"\n", k1.to_hex()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("active key 3") && !err.contains(&k1.to_hex()),
            "{err}"
        );
        assert!(Ring::from_ring_file("active = 1\n[keys]\n").is_err());
        assert!(Ring::from_config("/no/such/ring.toml").is_err());
    }

    #[test]
    fn a_key_listed_but_not_active_opens_but_never_seals() {
        let (k1, k2) = (Key::generate(), Key::generate());
        let readable = Ring::from_ring_file(&format!(
            "active = 1\n[keys]\n1 = \"{}\"\n2 = \"{}\"\n",
            k1.to_hex(),
            k2.to_hex()
        ))
        .unwrap();
        let active = Ring::from_ring_file(&format!(
            "active = 2\n[keys]\n1 = \"{}\"\n2 = \"{}\"\n",
            k1.to_hex(),
            k2.to_hex()
        ))
        .unwrap();
        assert_eq!(Sealer::key_id(&readable.sealer.seal(b"", b"v")), Some(1));
        let sealed_by_new = active.sealer.seal(b"", b"v");
        assert_eq!(readable.sealer.open(b"", &sealed_by_new).unwrap(), b"v");
        assert_ne!(readable.fingerprint(), active.fingerprint());
        assert_eq!(readable.index.to_hex(), Ring::single(k1).index.to_hex());
    }
}
