//! The `keys` command: a new key to add to a ring, and the index key to pin before a
//! rotation retires the key it is derived from.

use crate::cli::KeysAction;
use crate::crypto::{Key, Ring};

/// Why `keys` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key ring is configured.
    #[error(
        "no encryption key is configured: set `encryption_key` in the configuration file \
         or MCP_FLEET_ENCRYPTION_KEY (64 hex characters, or the path of a key-ring file)"
    )]
    NoRing,
}

/// What `mcp-fleet keys <action>` prints, given the configured ring.
pub fn run(action: KeysAction, ring: Option<&Ring>) -> Result<String, Error> {
    match action {
        KeysAction::Generate => Ok(Key::generate().to_hex()),
        KeysAction::IndexKey => ring.map(|r| r.index.to_hex()).ok_or(Error::NoRing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_key_printed_pins_the_same_index() {
        let key = Key::generate();
        let ring = Ring::single(key.clone());
        let printed = run(KeysAction::IndexKey, Some(&ring)).expect("a ring");
        assert_eq!(printed.len(), 64);
        assert_ne!(
            printed,
            key.to_hex(),
            "the index key is derived, not the key"
        );
        assert!(run(KeysAction::IndexKey, None).is_err());
        let generated = run(KeysAction::Generate, None).expect("a key");
        assert!(Key::from_hex(&generated).is_ok());
        assert_ne!(generated, run(KeysAction::Generate, None).expect("a key"));
    }
}
