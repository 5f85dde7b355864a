//! Settings of the replicated store.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NodeId;

/// Settings of the Raft group, as read from file, environment and flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's id in the group; never reuse the id of a node whose disk was lost.
    pub node_id: NodeId,
    /// Address of the internal listener (Raft, forwarded writes, cluster status).
    pub listen: String,
    /// Address other nodes use to reach this node's internal listener, when it differs
    /// from `listen` (containers, NAT); defaults to the bound address.
    pub advertise: Option<String>,
    /// The initial voters, by id, as internal addresses. Every node of a new fleet gets the
    /// same list; empty means "wait to be added with `cluster join`".
    #[serde(deserialize_with = "peers_by_id")]
    pub peers: BTreeMap<NodeId, String>,
    /// How often the leader sends heartbeats (default 100 ms). openraft 0.9 checks its
    /// timers on a tick of 3/2 of this, so heartbeats go out every 150 ms and a follower
    /// notices an election timeout up to a tick late. openraft also gives every
    /// AppendEntries this long to complete, and we answer at 3/4 of it (75 ms): hence
    /// `max_append_bytes` 320 KiB (see there). README ("Running a fleet") has the figures.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Lower bound of the election timeout (default 250 ms); the upper bound is 6/5 of it
    /// ([`Config::election_timeout_max`]). A follower that knew a leader stands for
    /// election once it has heard nothing from it for openraft's leader lease (the upper
    /// bound) plus its own timeout, drawn once per process between the bounds: 550–600 ms
    /// of silence by default, nearly four heartbeats, so late heartbeats under load do not
    /// start elections, while a SIGKILLed leader is replaced within a second (`cargo bench
    /// --bench fleet`: README has the trade-off measured). The tick's own jitter (up to
    /// 150 ms) is what keeps the survivors from standing at once, so the bounds need not
    /// be far apart. Also how long without news from a quorum before a leader reports
    /// itself cut off, and without news from the leader before a follower's replica may
    /// be stale.
    #[serde(with = "humantime_serde")]
    pub election_timeout: Duration,
    /// Least log entries between snapshots (default 5,000); a snapshot also waits until
    /// the entries since the last one outweigh it in bytes, so that each byte of log costs
    /// at most one byte of snapshot however large the store (see `compaction.rs`). Older
    /// entries are purged after a snapshot, all but the last `min(snapshot_after, 1000)`.
    pub snapshot_after: u64,
    /// How long a write or a leader read may wait (for a leader, a quorum, a forward).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How often the leader proposes the expiry of records past their deadline.
    #[serde(with = "humantime_serde")]
    pub expire_interval: Duration,
    /// Largest AppendEntries request, in encoded bytes (default 320 KiB). openraft gives
    /// each AppendEntries `heartbeat_interval` to complete, decoding and fsync on the
    /// follower included; a larger batch is split (see `network.rs`). On a loaded 2-core
    /// machine (`cargo bench --bench append`) a 256 KiB append took up to 36 ms and a
    /// 512 KiB one up to 73 ms: 320 KiB stays within 2/3 of the 75 ms we allow it, and
    /// still fits one entry of `max_entry_bytes` with its envelope.
    pub max_append_bytes: usize,
    /// Largest log entry (an encoded command), in bytes (default 256 KiB). A write above
    /// it is refused where it is proposed or forwarded, so that one entry always fits
    /// `max_append_bytes`: with an entry larger than the budget, no split can help. The
    /// largest entry a caller can make is a legacy session: 16 KiB of `clientInfo` and
    /// `capabilities`, its subscriptions, and a principal from a token that fits a
    /// request head (128 KiB).
    pub max_entry_bytes: usize,
    /// Bytes of sled's page cache: the replica's pages (records, indexes, log) this node
    /// keeps decoded in memory; pages beyond it are read again from the data dir (the
    /// operating system's file cache, for a hot one) when next needed. Default 16 MiB (was
    /// 64): sled weighs pages by their size on disk, which understates what a decoded page
    /// takes, and with malloc's arenas capped (the binary does it, `src/alloc.rs`) 16 MiB
    /// took a node holding 100,000 sessions (`scripts/memory`) from about 200 MB to about
    /// 167 MB. Hot sessions are served from the session tier (`sessions.memory_bytes`),
    /// not from these pages. (Without the arena cap a smaller cache made a larger node:
    /// pages evicted and read back churned glibc's per-thread arenas.)
    pub cache_bytes: u64,
    /// Most writes one log entry carries (default 128). Writes that wait at the same moment
    /// (on the leader, or forwarded together by a follower) share one entry, which is
    /// appended, fsynced, replicated and applied once for all of them; each keeps its own
    /// outcome. An entry also stays within `max_entry_bytes`. 1 proposes every write alone.
    /// 128 bounds the time one entry holds the state machine (128 session creates apply in
    /// about a millisecond) well under `heartbeat_interval`.
    pub max_entry_writes: usize,
    /// Entries of gathered writes a node has proposed (or requests of them it has forwarded
    /// to the leader) and not yet seen answered, at once (default 2). Writes arriving while
    /// that many are under way wait and go together in the next; a write arriving when
    /// fewer are under way goes at once, so a quiet node adds no wait. 2 lets one entry be
    /// gathered and appended while the one before is replicated and fsynced.
    pub max_proposed_entries: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: "127.0.0.1:0".to_owned(),
            advertise: None,
            peers: BTreeMap::new(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(250),
            snapshot_after: 5000,
            write_timeout: Duration::from_secs(5),
            expire_interval: Duration::from_secs(10),
            max_append_bytes: 320 * 1024,
            max_entry_bytes: 256 * 1024,
            cache_bytes: 16 * 1024 * 1024,
            max_entry_writes: 128,
            max_proposed_entries: 2,
        }
    }
}

/// Bytes an AppendEntries request needs besides its commands: its own fields (vote, log
/// ids, the length of the list) and one entry's log id and payload tag, with room to
/// spare (they are about 100 bytes).
pub const APPEND_ENVELOPE_BYTES: usize = 1024;

/// Size of the snapshot chunks a leader sends to a follower that fell behind the log.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// What the internal listener accepts beyond its largest Raft message: the envelope of a
/// snapshot chunk (its metadata names every member) and HTTP framing, with room to spare.
pub const INTERNAL_BODY_SLACK: usize = 64 * 1024;

impl Config {
    /// Upper bound of the election timeout, which is also openraft's leader lease: a
    /// follower refuses to vote until it has heard nothing from its leader for this long.
    pub fn election_timeout_max(&self) -> Duration {
        election_timeout_max(self.election_timeout)
    }

    /// Largest body the internal listener takes on its Raft and forwarded-write routes:
    /// a full AppendEntries batch or a snapshot chunk, whichever is larger, plus slack.
    pub fn internal_body_bytes(&self) -> usize {
        self.max_append_bytes.max(SNAPSHOT_CHUNK_BYTES) + INTERNAL_BODY_SLACK
    }
}

/// The upper bound of the election timeout whose lower bound is `min`: 6/5 of it, at
/// least a millisecond more (openraft wants the bounds distinct, in whole milliseconds).
pub(super) fn election_timeout_max(min: Duration) -> Duration {
    min + (min / 5).max(Duration::from_millis(1))
}

/// Reads peers from a table whose keys are ids: TOML and environment keys are strings.
fn peers_by_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<NodeId, String>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(id, addr)| {
            id.trim()
                .parse()
                .map(|id| (id, addr))
                .map_err(|_| serde::de::Error::custom(format!("`{id}` is not a node id")))
        })
        .collect()
}

/// Parses `1=host:port,2=host:port` into peers.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("`{id}` is not a node id"))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("`{addr}` is not HOST:PORT"));
        }
        if peers.insert(id, addr.to_owned()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        let peers = parse_peers("1=a:1, 2=127.0.0.1:7000").unwrap();
        assert_eq!(peers[&1], "a:1");
        assert_eq!(peers[&2], "127.0.0.1:7000");
        assert!(parse_peers("1=a").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("").unwrap().is_empty());
    }

    #[test]
    fn by_default_three_late_heartbeats_do_not_start_an_election_and_one_append_fits_its_time() {
        let config = Config::default();
        // openraft's tick, on which heartbeats go out and election timers are checked.
        let tick = config.heartbeat_interval * 3 / 2;
        let max = config.election_timeout_max();
        assert!(max > config.election_timeout);
        // A follower stands after the lease (the upper bound) plus its own timeout.
        let silence = max + config.election_timeout;
        assert!(silence > tick * 3, "{silence:?} against ticks of {tick:?}");
        assert!(silence + tick <= Duration::from_millis(750), "{silence:?}");
        assert!(config.max_entry_bytes + APPEND_ENVELOPE_BYTES <= config.max_append_bytes);
    }

    #[test]
    fn the_upper_election_bound_is_distinct_in_whole_milliseconds() {
        assert_eq!(
            election_timeout_max(Duration::from_millis(250)),
            Duration::from_millis(300)
        );
        assert_eq!(
            election_timeout_max(Duration::from_millis(2)),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn the_internal_body_limit_covers_a_full_append_and_a_snapshot_chunk() {
        let config = Config::default();
        assert!(config.internal_body_bytes() > config.max_append_bytes);
        assert!(config.internal_body_bytes() > SNAPSHOT_CHUNK_BYTES);
        let small = Config {
            max_append_bytes: 64 * 1024,
            ..Config::default()
        };
        assert_eq!(
            small.internal_body_bytes(),
            SNAPSHOT_CHUNK_BYTES + INTERNAL_BODY_SLACK
        );
    }
}
