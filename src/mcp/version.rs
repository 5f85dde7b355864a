//! Protocol versions this server speaks, and how they differ.

use std::fmt;

/// A protocol version this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// Streamable HTTP with sessions and JSON-RPC batching.
    V2025_03_26,
    /// Adds the `MCP-Protocol-Version` header, structured tool output, elicitation.
    V2025_06_18,
    /// Adds SSE priming events, polling, URL elicitation.
    V2025_11_25,
    /// Stateless: no sessions, per-request `_meta`, Multi Round-Trip Requests.
    V2026_07_28,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 4] = [
        Version::V2025_03_26,
        Version::V2025_06_18,
        Version::V2025_11_25,
        Version::V2026_07_28,
    ];

    /// The newest session-based version, offered to `initialize` when the client asks for
    /// one we do not speak.
    pub const LATEST_LEGACY: Version = Version::V2025_11_25;

    /// Parses a version string.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V2025_03_26 => "2025-03-26",
            Version::V2025_06_18 => "2025-06-18",
            Version::V2025_11_25 => "2025-11-25",
            Version::V2026_07_28 => "2026-07-28",
        }
    }

    /// Whether this version uses `initialize` and sessions.
    pub fn is_legacy(self) -> bool {
        self < Version::V2026_07_28
    }

    /// Whether a POST body may be a JSON-RPC batch.
    pub fn allows_batch(self) -> bool {
        self == Version::V2025_03_26
    }

    /// Whether SSE streams open with a priming event (an id and empty data).
    pub fn primes_streams(self) -> bool {
        self >= Version::V2025_11_25
    }

    /// Every supported version string, newest first, for error data and discovery.
    pub fn supported_strings() -> Vec<&'static str> {
        Self::ALL.iter().rev().map(|v| v.as_str()).collect()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_rejects_unknown() {
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        assert_eq!(Version::parse("2024-11-05"), None);
        assert!(Version::V2025_11_25.is_legacy());
        assert!(!Version::V2026_07_28.is_legacy());
        assert!(Version::V2025_03_26.allows_batch());
        assert!(!Version::V2025_06_18.allows_batch());
    }
}
