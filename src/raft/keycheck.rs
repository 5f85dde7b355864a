//! The key check: a node serves only once it has shown that its key ring is the fleet's.
//!
//! A ring that opens nothing, or indexes under another key, does not fail loudly by
//! itself: every session reads as absent (404, and the client drops it) and every
//! revocation is looked up under the wrong stored key (so a revoked user is accepted).
//! So the fleet keeps a key-check record in the replicated store, in its own table under
//! fixed keys that any ring can find:
//! - `index`: the fingerprint of the index key (a keyed hash of a label, never the key);
//! - `key/<id>`: a fixed value sealed with key `id`, one per key id any ring ever held;
//! - `group`: the group's id, random, written once by the first node to check its keys. Each
//!   node records it in its data directory (`identity.json`) and refuses to serve a
//!   replica of another group, as it refuses a ring that is not the fleet's.
//!
//! Each piece also names the node that wrote it. A node checks the record against its ring
//! every few seconds (see [`Store::check_keys`]): the index fingerprint must be its own,
//! and each key id it holds must open its entry. An entry missing for a key id it holds
//! (the fleet's first start, a key added by a rotation) or a missing index fingerprint is
//! written by this node once a read barrier has shown that the fleet has none, so a node
//! never writes over a record it has not yet applied. Entries for key ids a ring no longer
//! holds (retired keys) are kept and ignored: a retired id can never come back as another
//! key. Until its ring passes, a node is not ready and refuses MCP requests with 503 and the
//! reason, and while it fails it says why in its log every few seconds.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::command::storage_key;
use super::store::{Inner, Store};
use super::{Command, NodeId, Reader, Table};
use crate::crypto::{Ring, Sealer};

/// The stored key of the index key's fingerprint.
const INDEX: &[u8] = b"index";
/// The stored key of the group's id.
const GROUP: &[u8] = b"group";
/// What every stored key of a key id's entry starts with; the id follows, big-endian.
const ENTRY_PREFIX: &[u8] = b"key/";
/// Format byte of a key-check value: then the writer's id (8 bytes, big-endian), then the
/// payload (the fingerprint, or the sealed check value).
const CHECK_V1: u8 = 1;
/// What each entry seals.
const CHECK_PLAINTEXT: &[u8] = b"mcp-fleet key check v1";

/// How often a node whose keys passed checks them again (the record may change: a key
/// added by another node, or one written over).
const RECHECK: Duration = Duration::from_secs(2);
/// How often a node whose keys have not passed tries again.
const RETRY: Duration = Duration::from_millis(250);
/// How often a failing node repeats its error in the log.
const LOUD_EVERY: Duration = Duration::from_secs(5);

/// Where this node's keys stand against the fleet's key-check record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Not decided yet: the record is not applied here, or this node is adding to it.
    Checking(String),
    /// The ring opens the entry of every key id it holds and its index key is the fleet's.
    Verified,
    /// The ring is not the fleet's; the reason names the key ids that fail or says the
    /// index key differs.
    Failed(String),
}

/// What this node reports of its keys in `GET /cluster`: never key material.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// The key id new records are sealed with.
    pub active_key: u32,
    /// Every key id the ring opens with.
    pub readable_keys: Vec<u32>,
    /// A one-way fingerprint of the whole ring (active id, every key, index key), as 16
    /// hex characters: equal on two nodes when their rings are the same.
    pub ring_fingerprint: String,
    /// Whether the ring passed the fleet's key check.
    pub verified: bool,
    /// Why it has not, when it has not.
    pub problem: Option<String>,
}

/// The key-check record as this replica holds it.
#[derive(Debug, Default)]
struct Record {
    /// The index key's fingerprint and who wrote it.
    index: Option<(NodeId, Vec<u8>)>,
    /// Each key id's sealed check value and who wrote it.
    entries: BTreeMap<u32, (NodeId, Vec<u8>)>,
    /// The group's id (hex text) and who wrote it.
    group: Option<(NodeId, Vec<u8>)>,
}

impl Record {
    /// The group's id, when it is written and readable.
    fn group_id(&self) -> Option<String> {
        let (_, id) = self.group.as_ref()?;
        String::from_utf8(id.clone()).ok()
    }
}

/// How a ring compares with the record.
#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    /// The index fingerprint differs: written by this node.
    index_differs: Option<NodeId>,
    /// There is no index fingerprint yet.
    index_missing: bool,
    /// Key ids whose entry this ring does not open, with each entry's writer.
    failing: Vec<(u32, NodeId)>,
    /// Key ids of this ring without an entry.
    missing: Vec<u32>,
    /// There is no group id yet.
    group_missing: bool,
    /// The group this node's data directory belongs to, when the record names another:
    /// (the data directory's, the replica's).
    group_differs: Option<(String, String)>,
}

impl Verdict {
    /// How `ring` compares with `record`, for a node whose data directory belongs to the
    /// group `expected_group` (`None` before it has learnt one).
    fn of(ring: &Ring, record: &Record, expected_group: Option<&str>) -> Verdict {
        let mut verdict = Verdict::default();
        match (record.group_id(), expected_group) {
            (None, _) => verdict.group_missing = true,
            (Some(found), Some(expected)) if found != expected => {
                verdict.group_differs = Some((expected.to_owned(), found));
            }
            _ => {}
        }
        match &record.index {
            None => verdict.index_missing = true,
            Some((writer, fingerprint)) => {
                if fingerprint.as_slice() != ring.index.fingerprint() {
                    verdict.index_differs = Some(*writer);
                }
            }
        }
        for id in ring.sealer.ids() {
            match record.entries.get(&id) {
                None => verdict.missing.push(id),
                Some((writer, sealed)) => {
                    if !opens(&ring.sealer, id, sealed) {
                        verdict.failing.push((id, *writer));
                    }
                }
            }
        }
        verdict
    }

    /// Why the ring is not the fleet's, if it is not.
    fn failure(&self) -> Option<String> {
        let mut reasons = Vec::new();
        for (id, writer) in &self.failing {
            reasons.push(format!(
                "key {id} does not open the fleet's check value for key {id} (written by \
                 node {writer}): this node's key {id} is not the fleet's"
            ));
        }
        if let Some(writer) = self.index_differs {
            reasons.push(format!(
                "the index key differs from the fleet's (recorded by node {writer}): without \
                 index_key the index key is derived from the key with the lowest id, so keep \
                 that key or pin index_key (`mcp-fleet keys index-key` prints it from a ring \
                 that still holds that key)"
            ));
        }
        if let Some((expected, found)) = &self.group_differs {
            reasons.push(format!(
                "this data directory belongs to group {expected} (identity.json) but its \
                 replica is of group {found}: the replica was replaced or the node joined \
                 another fleet; give this node the data directory of its own group, or an \
                 empty one and a new id"
            ));
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    fn complete(&self) -> bool {
        !self.index_missing && !self.group_missing && self.missing.is_empty()
    }
}

/// Whether `sealed` is the check value sealed with key `id` of `sealer`.
fn opens(sealer: &Sealer, id: u32, sealed: &[u8]) -> bool {
    Sealer::key_id(sealed) == Some(id)
        && sealer
            .open(&storage_key(Table::KeyCheck, &entry_key(id)), sealed)
            .is_ok_and(|plain| plain == CHECK_PLAINTEXT)
}

fn entry_key(id: u32) -> Vec<u8> {
    [ENTRY_PREFIX, &id.to_be_bytes()].concat()
}

fn value(writer: NodeId, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.push(CHECK_V1);
    out.extend_from_slice(&writer.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The writer and payload of a stored key-check value.
fn parse(bytes: &[u8]) -> Option<(NodeId, Vec<u8>)> {
    let (&format, rest) = bytes.split_first()?;
    if format != CHECK_V1 || rest.len() < 8 {
        return None;
    }
    let (writer, payload) = rest.split_at(8);
    Some((
        u64::from_be_bytes(writer.try_into().ok()?),
        payload.to_vec(),
    ))
}

fn read(reader: &Reader) -> Result<Record, String> {
    let mut record = Record::default();
    let scan = reader
        .scan(Table::KeyCheck)
        .map_err(|e| format!("cannot read the key-check record: {e}"))?;
    for (key, stored) in scan {
        // An unreadable piece counts as absent: it is written again, never trusted.
        let Some(piece) = parse(&stored.sealed) else {
            continue;
        };
        if key == INDEX {
            record.index = Some(piece);
        } else if key == GROUP {
            record.group = Some(piece);
        } else if let Some(id) = key
            .strip_prefix(ENTRY_PREFIX)
            .and_then(|id| <[u8; 4]>::try_from(id).ok())
        {
            record.entries.insert(u32::from_be_bytes(id), piece);
        }
    }
    Ok(record)
}

/// The writes that complete the record for `ring`, by node `writer`: creates, so that of
/// nodes racing to write a piece the first in the log wins everywhere and a later one,
/// with another ring, fails its check instead of writing over it.
fn completion(ring: &Ring, writer: NodeId, verdict: &Verdict) -> Vec<Command> {
    let mut writes = Vec::new();
    if verdict.index_missing {
        let fingerprint = value(writer, &ring.index.fingerprint());
        writes.push(create(INDEX.to_vec(), fingerprint));
    }
    if verdict.group_missing {
        let group = crate::crypto::random_hex(16);
        writes.push(create(GROUP.to_vec(), value(writer, group.as_bytes())));
    }
    for &id in &verdict.missing {
        let key = entry_key(id);
        let aad = storage_key(Table::KeyCheck, &key);
        if let Some(sealed) = ring.sealer.seal_with(id, &aad, CHECK_PLAINTEXT) {
            writes.push(create(key, value(writer, &sealed)));
        }
    }
    writes
}

fn create(key: Vec<u8>, sealed: Vec<u8>) -> Command {
    Command::Create {
        table: Table::KeyCheck,
        key,
        deadline_ms: None,
        sealed,
    }
}

/// Where this node's keys stand, shared between the checker and readers, and the group
/// its data directory belongs to.
pub(super) struct Keys {
    state: RwLock<KeyState>,
    /// Told each time `state` is set: what waiters for a decision watch.
    changed: tokio::sync::watch::Sender<()>,
    /// How long an MCP request waits for a check under way before it is refused; see
    /// [`Store::hold_requests_for_key_check`].
    hold_ms: std::sync::atomic::AtomicU64,
    /// The group the data directory belongs to, once recorded there.
    expected_group: RwLock<Option<String>>,
    /// The group's id as the applied record names it.
    group: RwLock<Option<String>>,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            state: RwLock::new(KeyState::Checking(
                "the fleet's key-check record has not been checked yet".to_owned(),
            )),
            changed: tokio::sync::watch::Sender::new(()),
            hold_ms: std::sync::atomic::AtomicU64::new(0),
            expected_group: RwLock::new(None),
            group: RwLock::new(None),
        }
    }
}

impl Keys {
    fn get(&self) -> KeyState {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, state: KeyState) -> KeyState {
        let before = std::mem::replace(
            &mut *self.state.write().unwrap_or_else(PoisonError::into_inner),
            state,
        );
        self.changed.send_replace(());
        before
    }

    fn expected_group(&self) -> Option<String> {
        self.expected_group
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Notes the group `record` names and compares `ring` with it.
    fn judge(&self, ring: &Ring, record: &Record) -> Verdict {
        *self.group.write().unwrap_or_else(PoisonError::into_inner) = record.group_id();
        Verdict::of(ring, record, self.expected_group().as_deref())
    }
}

impl Inner {
    /// One check of the ring against the record, completing the record when this ring
    /// holds what it lacks and nothing fails.
    async fn check_keys_once(self: &Arc<Self>) -> KeyState {
        let verdict = match read(&self.reader) {
            Ok(record) => self.keys.judge(&self.ring, &record),
            Err(e) => return KeyState::Checking(e),
        };
        if let Some(why) = verdict.failure() {
            return KeyState::Failed(why);
        }
        if verdict.complete() {
            return KeyState::Verified;
        }
        // Absent here may only mean not applied yet: write nothing before a read barrier
        // shows this replica holds everything the fleet committed. (It can take up to
        // `raft.write_timeout`; say meanwhile what is awaited.)
        if matches!(self.keys.get(), KeyState::Checking(_)) {
            self.keys.set(KeyState::Checking(
                "catching up with the fleet to read its key-check record".to_owned(),
            ));
        }
        if let Err(e) = self.shared_read_barrier().await {
            return KeyState::Checking(format!(
                "waiting to read the fleet's key-check record: {e}"
            ));
        }
        let verdict = match read(&self.reader) {
            Ok(record) => self.keys.judge(&self.ring, &record),
            Err(e) => return KeyState::Checking(e),
        };
        if let Some(why) = verdict.failure() {
            return KeyState::Failed(why);
        }
        if verdict.complete() {
            return KeyState::Verified;
        }
        tracing::info!(
            index = verdict.index_missing,
            group = verdict.group_missing,
            key_ids = ?verdict.missing,
            "adding to the fleet's key-check record"
        );
        // All at once: the pieces are independent, and writes proposed together share a
        // log append and its fsync (a node of one writes all three before it first serves).
        let writes = completion(&self.ring, self.id, &verdict)
            .into_iter()
            .map(|write| self.write(write));
        for written in futures_util::future::join_all(writes).await {
            // A refusal means another node created that piece first: checked below.
            if let Err(e) = written {
                return KeyState::Checking(format!(
                    "could not add key ids {:?} to the fleet's key-check record: {e}",
                    verdict.missing
                ));
            }
        }
        match read(&self.reader) {
            Ok(record) => {
                let verdict = self.keys.judge(&self.ring, &record);
                match verdict.failure() {
                    Some(why) => KeyState::Failed(why),
                    None if verdict.complete() => KeyState::Verified,
                    None => KeyState::Checking("the key-check record is being written".into()),
                }
            }
            Err(e) => KeyState::Checking(e),
        }
    }
}

impl Store {
    /// Checks this node's key ring against the fleet's key-check record now and every few
    /// seconds from now on, completing the record when this ring adds a key id, and
    /// logging an error every few seconds while the ring fails. Until it passes,
    /// [`Store::key_problem`] says why the node must not serve.
    pub fn check_keys(&self) {
        let weak = Arc::downgrade(&self.0);
        self.0.runtime.spawn(async move {
            let mut last_loud: Option<Instant> = None;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let state = inner.check_keys_once().await;
                let before = inner.keys.set(state.clone());
                match &state {
                    KeyState::Verified if before != KeyState::Verified => {
                        last_loud = None;
                        tracing::info!(
                            active = inner.ring.sealer.active(),
                            readable = ?inner.ring.sealer.ids().collect::<Vec<_>>(),
                            "the key ring matches the fleet's key-check record"
                        );
                    }
                    KeyState::Failed(why)
                        if last_loud.is_none_or(|at| at.elapsed() >= LOUD_EVERY) =>
                    {
                        last_loud = Some(Instant::now());
                        tracing::error!(
                            problem = %why,
                            "this node's key ring is not the fleet's: it refuses every MCP \
                             request (503) until it is restarted with the fleet's keys"
                        );
                    }
                    KeyState::Checking(why) if before != state => {
                        tracing::info!(reason = %why, "checking the key ring");
                    }
                    _ => {}
                }
                let pause = if state == KeyState::Verified {
                    RECHECK
                } else {
                    RETRY
                };
                drop(inner);
                tokio::time::sleep(pause).await;
            }
        });
    }

    /// Waits (up to `within`) until the key check has decided, one way or the other;
    /// returns where the keys stand then. For a node of one, which can decide at once.
    pub async fn keys_decided(&self, within: Duration) -> KeyState {
        let until = tokio::time::Instant::now() + within;
        // Subscribed before the first look, so a decision made in between still wakes us.
        let mut changed = self.0.keys.changed.subscribe();
        loop {
            let state = self.key_state();
            if !matches!(state, KeyState::Checking(_)) {
                return state;
            }
            match tokio::time::timeout_at(until, changed.changed()).await {
                Ok(Ok(())) => {}
                // Out of time (or the checker is gone): say where the keys stand now.
                _ => return self.key_state(),
            }
        }
    }

    /// Makes MCP requests that arrive while the key check is still under way wait for its
    /// decision, up to `within`, instead of being refused at once (see
    /// [`Store::key_problem_held`]). For a node of one, which decides within milliseconds
    /// of starting: it can then serve before its check has written the fleet's record.
    /// A fleet node keeps the default (no wait): a balancer sends nothing to a node whose
    /// `/ready` says it is checking keys, and a 503 makes a client try elsewhere.
    pub fn hold_requests_for_key_check(&self, within: Duration) {
        let ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        self.0
            .keys
            .hold_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Like [`Store::key_problem`], after waiting for a check under way as long as
    /// [`Store::hold_requests_for_key_check`] allows.
    pub async fn key_problem_held(&self) -> Option<String> {
        let problem = self.key_problem()?;
        let hold = self
            .0
            .keys
            .hold_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if hold == 0 || !matches!(self.key_state(), KeyState::Checking(_)) {
            return Some(problem);
        }
        self.keys_decided(Duration::from_millis(hold)).await;
        self.key_problem()
    }

    /// Makes the key check also require the group `group` (the one this node's data
    /// directory belongs to): a replica of another group fails it. Call before
    /// [`Store::check_keys`].
    pub fn expect_group(&self, group: Option<String>) {
        *self
            .0
            .keys
            .expected_group
            .write()
            .unwrap_or_else(PoisonError::into_inner) = group;
    }

    /// The group's id as this replica's key-check record names it, once written.
    pub fn group_id(&self) -> Option<String> {
        self.0
            .keys
            .group
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where this node's keys stand against the fleet's key-check record.
    pub fn key_state(&self) -> KeyState {
        self.0.keys.get()
    }

    /// Why this node must not serve yet because of its keys; `None` once its ring passed
    /// the fleet's key check.
    pub fn key_problem(&self) -> Option<String> {
        match self.key_state() {
            KeyState::Verified => None,
            KeyState::Checking(why) => Some(format!("the key ring is being checked: {why}")),
            KeyState::Failed(why) => Some(why),
        }
    }

    /// What this node reports of its keys (for `GET /cluster`): the active key id, the
    /// readable ones, a ring fingerprint, and whether the ring passed the key check.
    pub fn key_report(&self) -> KeyReport {
        let ring = &self.0.ring;
        let problem = self.key_problem();
        KeyReport {
            active_key: ring.sealer.active(),
            readable_keys: ring.sealer.ids().collect(),
            ring_fingerprint: hex::encode(&ring.fingerprint()[..8]),
            verified: problem.is_none(),
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    fn ring_file(active: u32, keys: &[(u32, &Key)], index: Option<&str>) -> Ring {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ring.toml");
        let mut text = format!("active = {active}\n");
        if let Some(index) = index {
            text.push_str(&format!("index_key = \"{index}\"\n"));
        }
        text.push_str("[keys]\n");
        for (id, key) in keys {
            text.push_str(&format!("{id} = \"{}\"\n", key.to_hex()));
        }
        std::fs::write(&path, text).expect("write ring");
        Ring::from_config(path.to_str().expect("utf-8")).expect("ring")
    }

    /// The record `ring` writes on an empty store, as node `writer`.
    fn written(ring: &Ring, writer: NodeId) -> Record {
        let mut record = Record::default();
        let ops = completion(ring, writer, &Verdict::of(ring, &record, None));
        apply(&mut record, ops);
        record
    }

    fn apply(record: &mut Record, writes: Vec<Command>) {
        for write in writes {
            let Command::Create { key, sealed, .. } = write else {
                panic!("only creates")
            };
            let piece = parse(&sealed).expect("a check value");
            // As the log applies a create: the first piece stays.
            if key == INDEX {
                record.index.get_or_insert(piece);
            } else if key == GROUP {
                record.group.get_or_insert(piece);
            } else {
                let id = u32::from_be_bytes(key[ENTRY_PREFIX.len()..].try_into().unwrap());
                record.entries.entry(id).or_insert(piece);
            }
        }
    }

    #[test]
    fn the_ring_that_wrote_the_record_passes_it() {
        let ring = Ring::single(Key::generate());
        let record = written(&ring, 1);
        let verdict = Verdict::of(&ring, &record, None);
        assert!(
            verdict.complete() && verdict.failure().is_none(),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_mistyped_key_fails_naming_its_id_and_the_index_key() {
        let ring = Ring::single(Key::generate());
        let record = written(&ring, 1);
        let other = Ring::single(Key::generate());
        let why = Verdict::of(&other, &record, None).failure().expect("fails");
        assert!(why.contains("key 1 does not open"), "{why}");
        assert!(why.contains("index key differs"), "{why}");
        assert!(!why.contains(&other.index.to_hex()), "{why}");
    }

    #[test]
    fn dropping_the_lowest_key_without_pinning_the_index_fails() {
        let (k1, k2) = (Key::generate(), Key::generate());
        let both = ring_file(2, &[(1, &k1), (2, &k2)], None);
        let record = written(&both, 1);
        let dropped = ring_file(2, &[(2, &k2)], None);
        let why = Verdict::of(&dropped, &record, None)
            .failure()
            .expect("fails");
        assert!(why.contains("index key differs") && !why.contains("key 2 does not"));
        let pinned = ring_file(2, &[(2, &k2)], Some(&both.index.to_hex()));
        let verdict = Verdict::of(&pinned, &record, None);
        assert!(
            verdict.failure().is_none() && verdict.complete(),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_readable_key_the_record_lacks_is_added_and_retired_ones_are_ignored() {
        let (k1, k2) = (Key::generate(), Key::generate());
        let one = ring_file(1, &[(1, &k1)], None);
        let mut record = written(&one, 1);
        let added = ring_file(1, &[(1, &k1), (2, &k2)], None);
        let verdict = Verdict::of(&added, &record, None);
        assert_eq!(verdict.missing, vec![2]);
        assert!(verdict.failure().is_none());
        apply(&mut record, completion(&added, 2, &verdict));
        assert!(Verdict::of(&added, &record, None).complete());
        // The old ring still passes: it checks only the ids it holds.
        assert!(Verdict::of(&one, &record, None).complete());
        let retired = ring_file(2, &[(2, &k2)], Some(&one.index.to_hex()));
        let verdict = Verdict::of(&retired, &record, None);
        assert!(
            verdict.complete() && verdict.failure().is_none(),
            "{verdict:?}"
        );
        // A retired id can never come back as another key.
        let reused = ring_file(
            1,
            &[(1, &Key::generate()), (2, &k2)],
            Some(&one.index.to_hex()),
        );
        let why = Verdict::of(&reused, &record, None)
            .failure()
            .expect("fails");
        assert!(
            why.contains("key 1 does not open") && why.contains("node 1"),
            "{why}"
        );
    }

    #[test]
    fn an_entry_sealed_with_another_key_id_fails() {
        let (k1, k2) = (Key::generate(), Key::generate());
        let ring = ring_file(1, &[(1, &k1), (2, &k2)], None);
        let mut record = written(&ring, 1);
        let moved = record.entries[&1].clone();
        record.entries.insert(2, moved);
        let verdict = Verdict::of(&ring, &record, None);
        assert_eq!(verdict.failing, vec![(2, 1)]);
    }

    #[test]
    fn the_first_check_writes_a_group_id_and_another_group_fails() {
        let ring = Ring::single(Key::generate());
        let record = written(&ring, 1);
        let group = record.group_id().expect("a group id");
        assert_eq!(group.len(), 32, "{group}");
        let same = Verdict::of(&ring, &record, Some(&group));
        assert!(same.complete() && same.failure().is_none(), "{same:?}");
        let other = Verdict::of(&ring, &record, Some("0123456789abcdef0123456789abcdef"));
        let why = other.failure().expect("fails");
        assert!(
            why.contains("belongs to group 0123456789abcdef") && why.contains(&group),
            "{why}"
        );
        // A second writer's group id never replaces the first one.
        let mut again = record;
        apply(
            &mut again,
            completion(
                &ring,
                2,
                &Verdict {
                    group_missing: true,
                    ..Verdict::default()
                },
            ),
        );
        assert_eq!(again.group_id(), Some(group));
    }
}
