//! Snapshot files: the state machine's records streamed to and from disk one at a time, so
//! no snapshot is ever held in memory whole, on the node that builds it, sends it or
//! installs it.
//!
//! A file is a header (magic, format byte, the snapshot's metadata), then one
//! length-prefixed record per stored key in key order, then an end marker with the record
//! count and a SHA-256 of every byte before it:
//!
//! ```text
//! "mcpfsnap" | 2 | meta len u32 | meta (postcard)
//! { 1 | key len u32 | key | value len u32 | value }*
//! 0 | record count u64 | sha256 of all of the above
//! ```
//!
//! Integers are big-endian. Format 1 was the postcard blob that older versions kept in
//! sled; [`write_legacy`] turns one into a file.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use openraft::{BasicNode, SnapshotMeta};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::NodeId;

/// The first bytes of every snapshot file.
const MAGIC: &[u8; 8] = b"mcpfsnap";
/// The format of snapshot files; 1 was the in-sled blob.
const FORMAT: u8 = 2;
/// Tag in front of each record.
const RECORD: u8 = 1;
/// Tag in front of the end marker.
const END: u8 = 0;
/// Buffer of file reads and writes: large enough that a record costs no system call.
const BUFFER: usize = 256 * 1024;

type Meta = SnapshotMeta<NodeId, BasicNode>;

fn damaged(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The directory of one state machine's snapshot files: at most one current file (named in
/// sled), and while they last, files being built or received.
#[derive(Clone, Debug)]
pub(super) struct Dir {
    path: PathBuf,
}

impl Dir {
    /// Opens (creating it if needed) the directory at `path`.
    pub(super) fn open(path: PathBuf) -> io::Result<Dir> {
        std::fs::create_dir_all(&path)?;
        Ok(Dir { path })
    }

    /// The path of file `name` in this directory.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A new, unused path for a file that is not a snapshot yet: `<what>-<random>.tmp`.
    pub(super) fn temp(&self, what: &str) -> PathBuf {
        self.path
            .join(format!("{what}-{}.tmp", crate::crypto::random_hex(8)))
    }

    /// A new, unused name for a complete snapshot file.
    pub(super) fn new_name(&self, meta: &Meta) -> String {
        let index = meta
            .last_log_id
            .map_or_else(|| "none".to_owned(), |id| id.index.to_string());
        format!("snapshot-{index}-{}.snap", crate::crypto::random_hex(8))
    }

    /// Whether `path` is a file this directory holds.
    pub(super) fn holds(&self, path: &Path) -> bool {
        path.parent() == Some(self.path.as_path())
    }

    /// Makes renames and removals in the directory durable.
    pub(super) fn sync(&self) -> io::Result<()> {
        crate::durable::sync_dir(&self.path)
    }

    /// Renames `from` (a file in this directory) to `name`, durably.
    pub(super) fn publish(&self, from: &Path, name: &str) -> io::Result<PathBuf> {
        let to = self.path(name);
        std::fs::rename(from, &to)?;
        self.sync()?;
        Ok(to)
    }

    /// Removes every file but `keep`: leftovers of builds and transfers a crash
    /// interrupted, and snapshots replaced just before one. A file that cannot be removed
    /// is logged and left; only the named one is ever read.
    pub(super) fn sweep(&self, keep: Option<&str>) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            if keep.is_some_and(|k| entry.file_name() == k) {
                continue;
            }
            tracing::debug!(file = ?entry.path(), "removing a stale snapshot file");
            self.remove(&entry.path());
        }
        Ok(())
    }

    /// Removes file `path`, logging rather than failing: a file left behind is swept at
    /// the next start.
    pub(super) fn remove(&self, path: &Path) {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(file = ?path, error = %e, "could not remove a snapshot file");
            }
        }
    }
}

/// Writes a snapshot file record by record; nothing is durable before [`Writer::finish`].
pub(super) struct Writer {
    out: BufWriter<File>,
    hash: Sha256,
    records: u64,
    bytes: u64,
}

impl Writer {
    /// Creates the file at `path` and writes the header for `meta`.
    pub(super) fn create(path: &Path, meta: &Meta) -> io::Result<Writer> {
        let file = File::options().write(true).create_new(true).open(path)?;
        let mut writer = Writer {
            out: BufWriter::with_capacity(BUFFER, file),
            hash: Sha256::new(),
            records: 0,
            bytes: 0,
        };
        let meta = postcard::to_stdvec(meta).map_err(|e| damaged(e.to_string()))?;
        writer.put(MAGIC)?;
        writer.put(&[FORMAT])?;
        writer.put(&length(meta.len())?)?;
        writer.put(&meta)?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// Appends the record `value` under storage key `key`.
    pub(super) fn record(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.put(&[RECORD])?;
        self.put(&length(key.len())?)?;
        self.put(key)?;
        self.put(&length(value.len())?)?;
        self.put(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end marker and checksum and makes the file durable; returns its size.
    pub(super) fn finish(mut self) -> io::Result<u64> {
        self.put(&[END])?;
        self.put(&self.records.to_be_bytes())?;
        let digest = self.hash.finalize_reset();
        self.out.write_all(&digest)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.bytes + digest.len() as u64)
    }
}

fn length(len: usize) -> io::Result<[u8; 4]> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| damaged("a snapshot field is longer than 4 GiB"))
}

/// Reads a snapshot file record by record, checking everything as it goes: the header,
/// every length against what the file still holds, and at the end the record count, the
/// checksum and that nothing follows. A caller that reads to the end ([`Reader::next`]
/// returning `None`) has read a whole, undamaged file.
pub(super) struct Reader {
    input: BufReader<File>,
    hash: Sha256,
    /// Bytes of the file not read yet.
    left: u64,
    records: u64,
    meta: Meta,
    ended: bool,
}

impl Reader {
    /// Opens the file at `path` and reads its header.
    pub(super) fn open(path: &Path) -> io::Result<Reader> {
        let file = File::open(path)?;
        let left = file.metadata()?.len();
        let mut reader = Reader {
            input: BufReader::with_capacity(BUFFER, file),
            hash: Sha256::new(),
            left,
            records: 0,
            meta: Meta::default(),
            ended: false,
        };
        let magic = reader.take(MAGIC.len())?;
        if magic != MAGIC {
            return Err(damaged("not a snapshot file"));
        }
        let format = reader.byte()?;
        if format != FORMAT {
            return Err(damaged(format!(
                "unknown snapshot format {format} (expected {FORMAT})"
            )));
        }
        let len = reader.length()?;
        let meta = reader.take(len)?;
        reader.meta =
            postcard::from_bytes(&meta).map_err(|e| damaged(format!("snapshot metadata: {e}")))?;
        Ok(reader)
    }

    /// The metadata in the header.
    pub(super) fn meta(&self) -> &Meta {
        &self.meta
    }

    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() as u64 > self.left {
            return Err(damaged("the snapshot file ends early"));
        }
        self.input.read_exact(buf)?;
        self.left -= buf.len() as u64;
        self.hash.update(&*buf);
        Ok(())
    }

    fn take(&mut self, len: usize) -> io::Result<Vec<u8>> {
        // The length was checked against what is left, so a damaged length cannot make
        // this allocate more than the file holds.
        if len as u64 > self.left {
            return Err(damaged("a snapshot field runs past the end of the file"));
        }
        let mut buf = vec![0; len];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn length(&mut self) -> io::Result<usize> {
        let mut b = [0; 4];
        self.fill(&mut b)?;
        Ok(u32::from_be_bytes(b) as usize)
    }

    /// The next record as (storage key, stored value), or `None` after the last one once
    /// the end marker, the count and the checksum have been checked.
    pub(super) fn next(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.ended {
            return Ok(None);
        }
        match self.byte()? {
            RECORD => {
                let len = self.length()?;
                let key = self.take(len)?;
                let len = self.length()?;
                let value = self.take(len)?;
                self.records += 1;
                Ok(Some((key, value)))
            }
            END => {
                let mut count = [0; 8];
                self.fill(&mut count)?;
                if u64::from_be_bytes(count) != self.records {
                    return Err(damaged("the snapshot's record count does not match"));
                }
                let computed = self.hash.finalize_reset();
                let mut stored = [0; 32];
                if self.left != stored.len() as u64 {
                    return Err(damaged(
                        "the snapshot's checksum is missing or followed by more",
                    ));
                }
                self.input.read_exact(&mut stored)?;
                self.left = 0;
                if computed.as_slice() != stored {
                    return Err(damaged("the snapshot's checksum does not match"));
                }
                self.ended = true;
                Ok(None)
            }
            tag => Err(damaged(format!("unknown tag {tag} in the snapshot"))),
        }
    }
}

/// Turns a format-1 snapshot (the postcard blob older versions kept in sled: a format byte,
/// then a sequence of (key, value) pairs) into a snapshot file at `path`, a pair at a time.
pub(super) fn write_legacy(path: &Path, meta: &Meta, blob: &[u8]) -> io::Result<()> {
    let bad = |e: postcard::Error| damaged(format!("the stored snapshot is damaged: {e}"));
    let body = match blob.split_first() {
        Some((1, body)) => body,
        _ => return Err(damaged("the stored snapshot has an unknown format")),
    };
    let mut writer = Writer::create(path, meta)?;
    // A sequence's length is a varint, like a u64's.
    let (count, mut rest) = postcard::take_from_bytes::<u64>(body).map_err(bad)?;
    for _ in 0..count {
        let ((key, value), more) =
            postcard::take_from_bytes::<(&[u8], &[u8])>(rest).map_err(bad)?;
        writer.record(key, value)?;
        rest = more;
    }
    writer.finish()?;
    Ok(())
}

/// A snapshot's bytes in a file: openraft reads the chunks it sends from one, and writes
/// the chunks it receives into one. A file being received is removed when dropped unless
/// it was installed (openraft drops one when the leader starts another snapshot).
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
    incoming: bool,
}

impl SnapshotFile {
    /// A snapshot to read from the file at `path`.
    pub(super) fn reading(path: &Path) -> io::Result<SnapshotFile> {
        Ok(SnapshotFile {
            file: tokio::fs::File::from_std(File::open(path)?),
            path: path.to_owned(),
            incoming: false,
        })
    }

    /// A new, empty file at `path` to receive a snapshot into.
    pub(super) async fn receiving(path: PathBuf) -> io::Result<SnapshotFile> {
        let file = tokio::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(SnapshotFile {
            file,
            path,
            incoming: true,
        })
    }

    /// Where the bytes are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this file was made to receive a snapshot and is not installed yet.
    pub(super) fn is_receiving(&self) -> bool {
        self.incoming
    }

    /// Makes what was written durable and hands over the file at [`SnapshotFile::path`]:
    /// it is no longer removed on drop.
    pub(super) async fn keep(mut self) -> io::Result<PathBuf> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.file.sync_all().await?;
        self.incoming = false;
        Ok(self.path.clone())
    }

    /// Copies the whole snapshot, from its start, into a new durable file at `to`.
    pub(super) async fn copy_to(mut self, to: &Path) -> io::Result<()> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        self.file.flush().await?;
        self.file.seek(io::SeekFrom::Start(0)).await?;
        let mut out = tokio::fs::File::options()
            .write(true)
            .create_new(true)
            .open(to)
            .await?;
        tokio::io::copy(&mut self.file, &mut out).await?;
        out.flush().await?;
        out.sync_all().await
    }

    /// Reads the whole snapshot into memory; for tests that compare snapshots.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read the snapshot file")
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.incoming {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().file).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.get_mut().file).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.get_mut().file).poll_complete(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            snapshot_id: "t".to_owned(),
            ..Meta::default()
        }
    }

    fn write(dir: &Path, records: &[(&[u8], &[u8])]) -> PathBuf {
        let path = dir.join("s.snap");
        let mut w = Writer::create(&path, &meta()).unwrap();
        for (k, v) in records {
            w.record(k, v).unwrap();
        }
        let size = w.finish().unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        path
    }

    fn read_all(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut r = Reader::open(path)?;
        let mut out = Vec::new();
        while let Some(pair) = r.next()? {
            out.push(pair);
        }
        Ok(out)
    }

    #[test]
    fn records_come_back_in_order_with_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &[(b"\x01a", b"x"), (b"\x02b", b"")]);
        assert_eq!(Reader::open(&path).unwrap().meta(), &meta());
        assert_eq!(
            read_all(&path).unwrap(),
            vec![
                (b"\x01a".to_vec(), b"x".to_vec()),
                (b"\x02b".to_vec(), vec![])
            ]
        );
        let empty = dir.path().join("empty");
        Writer::create(&empty, &meta()).unwrap().finish().unwrap();
        assert!(read_all(&empty).unwrap().is_empty());
    }

    #[test]
    fn any_damaged_byte_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &[(b"\x01key", b"value"), (b"\x01lock", b"v2")]);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                read_all(&path).is_err(),
                "a flipped byte {i} went unnoticed"
            );
        }
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(
                read_all(&path).is_err(),
                "truncation to {len} went unnoticed"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(read_all(&path).is_err(), "a trailing byte went unnoticed");
    }
}
