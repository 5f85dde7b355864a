//! The Raft log's files: one ordered stream of framed records (entries, the vote, the
//! committed and purged log ids, truncations) over numbered segment files in
//! `<data_dir>/raft-log/`, replayed on open.
//!
//! A frame is the payload's length (u32, little-endian), its CRC-32 (u32, little-endian),
//! then the payload: a kind byte and the value's stored bytes (format byte and postcard,
//! as `command::to_stored` writes them; an entry's are the bytes sled held before).
//!
//! - Records are written in order, so whatever survives a crash is a prefix of what was
//!   written: a committed id or vote never outlives the entries written before it.
//! - On open the last segment is cut at its first frame that is short or fails its CRC (a
//!   write torn by a crash); damage in any earlier segment is an error.
//! - A new segment begins with the vote and the committed and purged ids, so a segment
//!   whose entries are all purged can be deleted with everything before it.
//! - Only the position of each entry is kept in memory; entries are read from the files.

// openraft's storage traits return its `StorageError` (224 bytes); the helpers here return
// the same type so `?` needs no conversions.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::{AnyError, LogId, StorageIOError, Vote};
use serde::Serialize;

use super::command::{from_stored, to_stored};
use super::{NodeId, StorageError};

/// Format byte in front of every stored value (the same as sled's log trees used).
pub(super) const FORMAT_V1: u8 = 1;

/// A segment is closed and a new one begun once it holds this many bytes.
const SEGMENT_BYTES: u64 = 16 << 20;

/// A frame longer than this is damage, not a record (entries are capped far below it by
/// `raft.max_entry_bytes`).
const MAX_PAYLOAD: u32 = 1 << 30;

/// Bytes in front of a payload: its length and CRC-32.
const FRAME_HEAD: u64 = 8;

const ENTRY: u8 = 1;
const VOTE: u8 = 2;
const COMMITTED: u8 = 3;
const PURGED: u8 = 4;
/// Entries from this index on are gone.
const TRUNCATE: u8 = 5;

/// Where one entry's stored bytes are.
#[derive(Clone, Copy, Debug)]
struct Place {
    log_id: LogId<NodeId>,
    segment: u64,
    /// Offset of the frame in its segment.
    offset: u64,
    /// Length of the payload (kind byte included).
    len: u32,
}

struct Segment {
    file: Arc<File>,
    /// The highest entry index ever written to it, truncated or not.
    max_index: Option<u64>,
}

/// What the log holds, as replayed and kept up to date by every write.
struct State {
    segments: BTreeMap<u64, Segment>,
    /// The segment written to, and its length.
    active: u64,
    active_len: u64,
    /// Present entries, consecutive indexes.
    entries: VecDeque<Place>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

/// One entry to read: where, and its stored size.
pub(super) struct Slot {
    file: Arc<File>,
    offset: u64,
    len: u32,
    pub(super) index: u64,
}

impl Slot {
    /// The entry's stored bytes (format byte and postcard), its frame checked.
    pub(super) fn read(&self) -> Result<Vec<u8>, StorageError> {
        let fail =
            |e: &io::Error| StorageError::from(StorageIOError::read_log_at_index(self.index, e));
        let mut frame = vec![0u8; FRAME_HEAD as usize + self.len as usize];
        self.file
            .read_exact_at(&mut frame, self.offset)
            .map_err(|e| fail(&e))?;
        match check_frame(&frame) {
            Some(payload) if payload.first() == Some(&ENTRY) => Ok(payload[1..].to_vec()),
            _ => Err(StorageIOError::read_log_at_index(
                self.index,
                AnyError::error("damaged log entry frame"),
            )
            .into()),
        }
    }

    /// Bytes of the stored entry.
    pub(super) fn size(&self) -> usize {
        self.len as usize - 1
    }
}

/// The payload of a whole frame whose length and CRC match, if they do.
fn check_frame(frame: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(frame.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(frame.get(4..8)?.try_into().ok()?);
    let payload = frame.get(8..8 + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

fn frame(kind: u8, value: &[u8], out: &mut Vec<u8>) {
    let len = (value.len() + 1) as u32;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(value);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(value);
}

/// Appends `value`, stored as `command::to_stored` does, framed as a record of `kind`.
fn record<T: Serialize>(kind: u8, value: &T, out: &mut Vec<u8>) -> Result<(), AnyError> {
    frame(kind, &to_stored(FORMAT_V1, value)?, out);
    Ok(())
}

fn segment_name(id: u64) -> String {
    format!("{id:020}.wal")
}

fn segment_id(name: &str) -> Option<u64> {
    let id = name.strip_suffix(".wal")?;
    (id.len() == 20).then(|| id.parse().ok()).flatten()
}

use crate::durable::sync_dir;

fn write_err(e: impl Into<AnyError>) -> StorageError {
    StorageIOError::write_logs(e).into()
}

fn read_err(e: impl Into<AnyError>) -> StorageError {
    StorageIOError::read_logs(e).into()
}

/// The log id at the front of an entry's stored bytes, without decoding the payload.
fn entry_log_id(stored: &[u8]) -> Result<LogId<NodeId>, AnyError> {
    match stored.split_first() {
        Some((&FORMAT_V1, rest)) => postcard::take_from_bytes::<LogId<NodeId>>(rest)
            .map(|(id, _)| id)
            .map_err(|e| AnyError::new(&e)),
        _ => Err(AnyError::error("log entry with an unknown format byte")),
    }
}

/// The log's files, shared by the store's clones and its flusher.
pub(super) struct Wal {
    dir: PathBuf,
    state: Mutex<State>,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: AtomicU64,
}

impl Wal {
    /// Opens (creating it if need be) the log in `dir`, replaying every segment.
    pub(super) fn open(dir: &Path) -> Result<Wal, StorageError> {
        let created = !dir.is_dir();
        std::fs::create_dir_all(dir).map_err(|e| read_err(&e))?;
        if created {
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(|e| write_err(&e))?;
            }
        }
        let mut ids = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| read_err(&e))? {
            let item = item.map_err(|e| read_err(&e))?;
            if let Some(id) = item.file_name().to_str().and_then(segment_id) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut state = State {
            segments: BTreeMap::new(),
            active: 0,
            active_len: 0,
            entries: VecDeque::new(),
            vote: None,
            committed: None,
            purged: None,
        };
        for (n, &id) in ids.iter().enumerate() {
            let last = n + 1 == ids.len();
            let path = dir.join(segment_name(id));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| read_err(&e))?;
            let good = state.replay(id, &file)?;
            let len = file.metadata().map_err(|e| read_err(&e))?.len();
            if good < len {
                if !last {
                    let msg = format!("damaged record in log segment {} at {good}", path.display());
                    return Err(read_err(AnyError::error(msg)));
                }
                tracing::warn!(
                    segment = %path.display(),
                    kept = good,
                    dropped = len - good,
                    "the log's last segment ends in a torn write; cutting it there"
                );
                file.set_len(good).map_err(|e| write_err(&e))?;
                file.sync_all().map_err(|e| write_err(&e))?;
            }
            state.active = id;
            state.active_len = good;
        }
        let wal = Wal {
            dir: dir.to_owned(),
            state: Mutex::new(state),
            segment_bytes: AtomicU64::new(SEGMENT_BYTES),
        };
        let mut state = wal.lock();
        if ids.is_empty() {
            wal.begin_segment(&mut state, 1)?;
        } else if state.active_len == 0 {
            // A crash tore the header of a segment just begun: write it again, or a purge
            // could delete the segments before it and the vote with them.
            let buf = state.header()?;
            let file = state.segments[&state.active].file.clone();
            file.write_all_at(&buf, 0).map_err(|e| write_err(&e))?;
            file.sync_data().map_err(|e| write_err(&e))?;
            state.active_len = buf.len() as u64;
        }
        drop(state);
        Ok(wal)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state follows a completed write; a panic leaves it whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts segment `id` with the vote and the committed and purged ids, durably.
    fn begin_segment(&self, state: &mut State, id: u64) -> Result<(), StorageError> {
        let path = self.dir.join(segment_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| write_err(&e))?;
        let buf = state.header()?;
        file.write_all_at(&buf, 0).map_err(|e| write_err(&e))?;
        file.sync_data().map_err(|e| write_err(&e))?;
        sync_dir(&self.dir).map_err(|e| write_err(&e))?;
        state.segments.insert(
            id,
            Segment {
                file: Arc::new(file),
                max_index: None,
            },
        );
        state.active = id;
        state.active_len = buf.len() as u64;
        Ok(())
    }

    /// Writes `buf` (whole frames) at the end of the active segment, first moving to a new
    /// segment if the active one is full. Returns the segment and offset written at.
    fn write(&self, state: &mut State, buf: &[u8]) -> Result<(u64, u64), StorageError> {
        if state.active_len >= self.segment_bytes.load(Ordering::Relaxed) {
            // Everything in the full segment is made durable before the next begins, so
            // the flusher only ever needs to sync the active one.
            let old = &state.segments[&state.active].file;
            old.sync_data().map_err(|e| write_err(&e))?;
            let next = state.active + 1;
            self.begin_segment(state, next)?;
        }
        let segment = &state.segments[&state.active];
        let offset = state.active_len;
        segment
            .file
            .write_all_at(buf, offset)
            .map_err(|e| write_err(&e))?;
        state.active_len += buf.len() as u64;
        Ok((state.active, offset))
    }

    /// Writes `value` as one record of `kind` (see [`Wal::write`]).
    fn write_record<T: Serialize>(
        &self,
        state: &mut State,
        kind: u8,
        value: &T,
    ) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        record(kind, value, &mut buf).map_err(write_err)?;
        self.write(state, &buf).map(drop)
    }

    /// Appends entries given as (log id, stored bytes). An entry at or below the last
    /// present one first truncates the log there.
    pub(super) fn append(&self, entries: &[(LogId<NodeId>, Vec<u8>)]) -> Result<(), StorageError> {
        let Some((first, _)) = entries.first() else {
            return Ok(());
        };
        let mut state = self.lock();
        if let Some(last) = state.entries.back() {
            if first.index > last.log_id.index + 1 {
                let msg = format!(
                    "log entry {} would follow {}",
                    first.index, last.log_id.index
                );
                return Err(write_err(AnyError::error(msg)));
            }
        }
        let mut buf = Vec::with_capacity(entries.iter().map(|(_, b)| b.len() + 9).sum());
        let truncate = state
            .entries
            .back()
            .is_some_and(|last| last.log_id.index >= first.index);
        if truncate {
            frame(
                TRUNCATE,
                &to_stored(FORMAT_V1, &first.index).map_err(write_err)?,
                &mut buf,
            );
        }
        let mut frames = Vec::with_capacity(entries.len());
        for (log_id, bytes) in entries {
            frames.push((*log_id, buf.len() as u64, (bytes.len() + 1) as u32));
            frame(ENTRY, bytes, &mut buf);
        }
        let (segment, offset) = self.write(&mut state, &buf)?;
        if truncate {
            state.truncate(first.index);
        }
        for (log_id, at, len) in frames {
            let seg = state
                .segments
                .get_mut(&segment)
                .expect("the active segment");
            seg.max_index = seg.max_index.max(Some(log_id.index));
            state.push(Place {
                log_id,
                segment,
                offset: offset + at,
                len,
            })?;
        }
        Ok(())
    }

    /// Removes entries from `index` on.
    pub(super) fn truncate(&self, index: u64) -> Result<(), StorageError> {
        let mut state = self.lock();
        self.write_record(&mut state, TRUNCATE, &index)?;
        state.truncate(index);
        Ok(())
    }

    /// Records the purge point durably, then deletes every segment before the active one
    /// whose entries it covers (and every segment before those).
    pub(super) fn purge(&self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let mut state = self.lock();
        self.write_record(&mut state, PURGED, &log_id)?;
        // Durable before any file goes: the segments left must say where the log starts.
        let active = state.segments[&state.active].file.clone();
        active.sync_data().map_err(|e| write_err(&e))?;
        state.purge(log_id);
        let doomed: Vec<u64> = state
            .segments
            .iter()
            .take_while(|(&id, s)| {
                id != state.active && s.max_index.is_none_or(|max| max <= log_id.index)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in doomed {
            std::fs::remove_file(self.dir.join(segment_name(id))).map_err(|e| write_err(&e))?;
            state.segments.remove(&id);
        }
        Ok(())
    }

    /// Writes the vote; the caller makes it durable (see [`Wal::sync`]).
    pub(super) fn save_vote(&self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut state = self.lock();
        let mut buf = Vec::new();
        record(VOTE, vote, &mut buf).map_err(StorageIOError::write_vote)?;
        self.write(&mut state, &buf)?;
        state.vote = Some(*vote);
        Ok(())
    }

    /// Writes the committed id, not synced: it is made durable by the next sync, and a lost
    /// one only means openraft re-learns it from the leader.
    pub(super) fn save_committed(
        &self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        let mut state = self.lock();
        self.write_record(&mut state, COMMITTED, &committed)?;
        state.committed = committed;
        Ok(())
    }

    /// Makes everything written so far durable: `fdatasync` of the active segment (the
    /// ones before it were synced when they were closed).
    pub(super) fn sync(&self) -> io::Result<()> {
        let file = {
            let state = self.lock();
            state.segments[&state.active].file.clone()
        };
        file.sync_data()
    }

    pub(super) fn vote(&self) -> Option<Vote<NodeId>> {
        self.lock().vote
    }

    pub(super) fn committed(&self) -> Option<LogId<NodeId>> {
        self.lock().committed
    }

    pub(super) fn purged(&self) -> Option<LogId<NodeId>> {
        self.lock().purged
    }

    /// The log id of the last present entry.
    pub(super) fn last(&self) -> Option<LogId<NodeId>> {
        self.lock().entries.back().map(|p| p.log_id)
    }

    /// The entries present with indexes in `[start, end)`.
    pub(super) fn slots(&self, start: u64, end: u64) -> Vec<Slot> {
        let state = self.lock();
        let Some(first) = state.entries.front().map(|p| p.log_id.index) else {
            return Vec::new();
        };
        let from = start.saturating_sub(first).min(state.entries.len() as u64) as usize;
        let to = end.saturating_sub(first).min(state.entries.len() as u64) as usize;
        state
            .entries
            .range(from..to.max(from))
            .map(|p| Slot {
                file: state.segments[&p.segment].file.clone(),
                offset: p.offset,
                len: p.len,
                index: p.log_id.index,
            })
            .collect()
    }

    /// How many segment files the log has.
    #[cfg(test)]
    pub(super) fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    /// Begins a new segment once the active one holds `bytes`.
    #[cfg(test)]
    pub(super) fn set_segment_bytes(&self, bytes: u64) {
        self.segment_bytes.store(bytes, Ordering::Relaxed);
    }
}

impl State {
    /// The records a segment begins with: the vote and the committed and purged ids.
    fn header(&self) -> Result<Vec<u8>, StorageError> {
        let mut buf = Vec::new();
        if let Some(vote) = &self.vote {
            record(VOTE, vote, &mut buf).map_err(write_err)?;
        }
        record(COMMITTED, &self.committed, &mut buf).map_err(write_err)?;
        if let Some(purged) = &self.purged {
            record(PURGED, purged, &mut buf).map_err(write_err)?;
        }
        Ok(buf)
    }

    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|p| p.log_id.index >= index) {
            self.entries.pop_back();
        }
    }

    fn purge(&mut self, log_id: LogId<NodeId>) {
        while self
            .entries
            .front()
            .is_some_and(|p| p.log_id.index <= log_id.index)
        {
            self.entries.pop_front();
        }
        if self.purged.is_none_or(|p| p < log_id) {
            self.purged = Some(log_id);
        }
    }

    /// Adds an entry after the last present one.
    fn push(&mut self, place: Place) -> Result<(), StorageError> {
        let index = place.log_id.index;
        if self.purged.is_some_and(|p| index <= p.index) {
            // Covered by a purge written after it (replaying an older segment).
            return Ok(());
        }
        if let Some(last) = self.entries.back() {
            if index <= last.log_id.index {
                self.truncate(index);
            } else if index != last.log_id.index + 1 {
                let msg = format!("log entry {index} follows {}", last.log_id.index);
                return Err(read_err(AnyError::error(msg)));
            }
        }
        self.entries.push_back(place);
        Ok(())
    }

    /// Applies every whole, intact record of segment `id`; returns the length they span.
    fn replay(&mut self, id: u64, file: &File) -> Result<u64, StorageError> {
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut offset = 0u64;
        let mut payload = Vec::new();
        let mut max_index = None;
        loop {
            let mut head = [0u8; FRAME_HEAD as usize];
            if read_full(&mut reader, &mut head).map_err(|e| read_err(&e))? < head.len() {
                break;
            }
            let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
            if len == 0 || len > MAX_PAYLOAD {
                break;
            }
            payload.resize(len as usize, 0);
            if read_full(&mut reader, &mut payload).map_err(|e| read_err(&e))? < payload.len() {
                break;
            }
            if crc32fast::hash(&payload) != crc {
                break;
            }
            let (kind, value) = (payload[0], &payload[1..]);
            let at = |e: AnyError| {
                let msg = format!("log segment {id} at {offset}: {e}");
                read_err(AnyError::error(msg))
            };
            match kind {
                ENTRY => {
                    let log_id = entry_log_id(value).map_err(at)?;
                    max_index = max_index.max(Some(log_id.index));
                    self.push(Place {
                        log_id,
                        segment: id,
                        offset,
                        len,
                    })?;
                }
                VOTE => self.vote = Some(from_stored(FORMAT_V1, value).map_err(at)?),
                COMMITTED => self.committed = from_stored(FORMAT_V1, value).map_err(at)?,
                PURGED => self.purge(from_stored(FORMAT_V1, value).map_err(at)?),
                TRUNCATE => self.truncate(from_stored(FORMAT_V1, value).map_err(at)?),
                other => {
                    let msg = format!("unknown log record kind {other}");
                    return Err(at(AnyError::error(msg)));
                }
            }
            offset += FRAME_HEAD + u64::from(len);
        }
        self.segments.insert(
            id,
            Segment {
                file: Arc::new(file.try_clone().map_err(|e| read_err(&e))?),
                max_index,
            },
        );
        Ok(offset)
    }
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
