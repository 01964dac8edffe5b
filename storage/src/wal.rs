//! The Raft log's own files: [`Wal`], an ordered map from `u64` keys (log
//! indexes) to byte values, held whole in memory and persisted as an
//! append-only sequence of checksummed frames in numbered segment files.
//!
//! Owns: the `log/` directory of a data directory, its segment files and
//! their format, replay at start-up (torn tail cut, anything else refused),
//! and reclaiming segments whose keys are all gone.
//!
//! Does not own: what the keys and values mean ([`crate::log_store`]) or
//! which directory it lives in ([`crate::engine::SledEngine`] opens it).
//!
//! Why not sled: an append to sled's log tree cost 0.51 ms where the disk
//! does one write + fdatasync in 0.14 ms. sled's flush goes through its
//! background thread pool (it wakes every idle I/O thread per job), then
//! `sync_file_range`, then our own `fsync` of its data file; on the leader
//! that sat twice on every write's critical path (leader append, then the
//! follower's). Here an append is one `pwrite` and one `fdatasync` on the
//! calling thread. Why hand-written: the format is ~200 lines, the
//! recovery rules (what is a torn tail, what is corruption) are the part we
//! must be able to state exactly, and the available crates either bring
//! their own runtime and threads or do not say what they do on a torn tail.
//!
//! Format. A segment is `log/<seq>.seg` (seq in 20 decimal digits), made
//! of an 8-byte header [`MAGIC`] and then frames; a frame is
//! `len: u32 LE | crc32(payload): u32 LE | payload`, and its payload a
//! sequence of operations: `1 | key: u64 LE | vlen: u32 LE | value` (put)
//! or `2 | lo: u64 LE | hi: u64 LE` (remove every key in `lo..=hi`). A frame
//! is one write batch: replay applies a frame whole or not at all.
//!
//! Durability (what each call guarantees):
//! - [`Wal::write`] appends one frame with `pwrite` and does not sync it;
//!   it first syncs the frame before it if that one is still unsynced, so
//!   that at most one frame is ever unsynced (what replay relies on).
//! - [`Wal::sync`] `fdatasync`s the current segment: every frame written
//!   before the call is then on stable storage. Only the current segment
//!   can hold unsynced frames: a segment is synced before the next one is
//!   started, and a new segment's header, the file and the directory entry
//!   are synced when it is created.
//! - A failed `pwrite` or `fdatasync` poisons the Wal: what is on disk is
//!   unknown (after a failed fsync the kernel may have dropped the dirty
//!   pages), so every later call fails until the node restarts and replays.
//! - A segment is deleted only when no live key remains in it, oldest
//!   first, after syncing the frames that removed its keys.
//!
//! Replay (at open): frames are applied in segment order. A frame that does
//! not check out in the LAST segment is a torn tail, and cut off, when
//! nothing valid follows it: no frame that checks out starts anywhere in
//! the rest of the file. That covers a frame cut short, one followed by
//! zeros, and a torn write, where the disk kept some of an unsynced
//! frame's pages and not others (its header may read as zeros while the
//! rest of its body is there: a kernel writes dirty pages back in any
//! order, a drive reorders its cache). The rule rests on the invariant that
//! at most ONE frame is ever unsynced ([`Wal::write`] keeps it): all the
//! bytes after the last good frame are then one write's, and a valid frame
//! after a bad one proves the bad one was synced, so damaged. Anything else
//! that does not check out (a bad frame in an earlier segment or followed
//! by a valid one, a bad header, a missing segment) is corruption and an
//! error: never silently dropped, since dropping an acknowledged entry can
//! lose a committed write. What this cannot tell apart: the disk damaging
//! the LAST synced frame with nothing valid after it looks like a torn
//! write and is cut (as etcd's WAL does); and a torn write whose own body
//! holds bytes that check out as a frame is refused (safe: the node stops
//! and says why).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::RangeInclusive;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::EngineError;

/// First bytes of every segment: what it is, and the format version.
pub(crate) const MAGIC: &[u8; 8] = b"SBLOG\x00\x00\x01";

/// The directory of the log's segments, inside a data directory.
pub const LOG_DIR: &str = "log";

/// Where a new log directory is assembled before it is renamed into place.
pub(crate) const LOG_TMP_DIR: &str = "log.tmp";

/// A segment is closed and the next one started once it holds this much.
/// Large enough that segment creation (three fsyncs) is rare, small enough
/// that a purged prefix is given back to the file system soon.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Frame header: length and checksum.
const FRAME_HEADER: usize = 8;

/// The largest frame replay accepts. A larger length field is garbage (a
/// log entry is a batch of commands, far below this).
const MAX_FRAME: usize = 1 << 30;

const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;

/// One operation of a write batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalOp {
    /// Sets `key` to the value.
    Put(u64, Vec<u8>),
    /// Removes every key in the range.
    Remove(RangeInclusive<u64>),
}

/// A live value and the segment holding it.
#[derive(Debug)]
struct Live {
    value: Arc<[u8]>,
    segment: u64,
}

/// The live keys, and how many of them each segment on disk holds.
#[derive(Debug, Default)]
struct Keys {
    map: BTreeMap<u64, Live>,
    /// Live keys per segment, for every segment on disk (current included).
    live: BTreeMap<u64, usize>,
}

impl Keys {
    /// Applies replayed or newly written operations of `segment`.
    fn apply(&mut self, segment: u64, ops: Vec<WalOp>) {
        for op in ops {
            match op {
                WalOp::Put(key, value) => {
                    *self.live.entry(segment).or_default() += 1;
                    let old = self.map.insert(key, Live { value: value.into(), segment });
                    if let Some(old) = old {
                        self.forget(old.segment);
                    }
                }
                WalOp::Remove(range) => {
                    let keys: Vec<u64> = self.map.range(range).map(|(k, _)| *k).collect();
                    for key in keys {
                        if let Some(old) = self.map.remove(&key) {
                            self.forget(old.segment);
                        }
                    }
                }
            }
        }
    }

    fn forget(&mut self, segment: u64) {
        if let Some(n) = self.live.get_mut(&segment) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The segment frames are appended to.
#[derive(Debug)]
struct Current {
    seq: u64,
    file: Arc<File>,
    len: u64,
}

/// The log's map and files. Not internally locked: the engine holds it in a
/// mutex, and [`Wal::sync_handle`] lets the fdatasync itself run outside.
#[derive(Debug)]
pub(crate) struct Wal {
    dir: PathBuf,
    keys: Keys,
    current: Current,
    /// When the current segment is closed (see [`SEGMENT_BYTES`]).
    segment_bytes: u64,
    /// Frames written so far, and the count known to be synced.
    written: u64,
    synced: u64,
    /// Set by a failed write or sync: every later call fails with it.
    poisoned: Option<String>,
}

/// What [`Wal::sync_handle`] hands out: the file to `fdatasync` and the
/// frame count that sync makes durable.
pub(crate) struct SyncHandle {
    pub(crate) file: Arc<File>,
    pub(crate) upto: u64,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |source| EngineError::Io { path, action, source }
}

fn sync_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |source| EngineError::Sync { path, action, source }
}

fn fsync_dir(dir: &Path, action: &'static str) -> Result<(), EngineError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(sync_err(dir, action))
}

/// Encodes `ops` as one frame.
pub(crate) fn encode_frame(ops: &[WalOp]) -> Vec<u8> {
    let size: usize = ops
        .iter()
        .map(|op| match op {
            WalOp::Put(_, v) => 13 + v.len(),
            WalOp::Remove(_) => 17,
        })
        .sum();
    let mut frame = Vec::with_capacity(FRAME_HEADER + size);
    frame.extend_from_slice(&[0; FRAME_HEADER]);
    for op in ops {
        match op {
            WalOp::Put(key, value) => {
                frame.push(OP_PUT);
                frame.extend_from_slice(&key.to_le_bytes());
                frame.extend_from_slice(&(value.len() as u32).to_le_bytes());
                frame.extend_from_slice(value);
            }
            WalOp::Remove(range) => {
                frame.push(OP_REMOVE);
                frame.extend_from_slice(&range.start().to_le_bytes());
                frame.extend_from_slice(&range.end().to_le_bytes());
            }
        }
    }
    let payload_len = (frame.len() - FRAME_HEADER) as u32;
    let crc = crc32fast::hash(&frame[FRAME_HEADER..]);
    frame[..4].copy_from_slice(&payload_len.to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    frame
}

/// Why a frame did not check out, and whether it ran past the file's end.
#[derive(Debug)]
struct BadFrame {
    reason: String,
    /// The frame claims bytes beyond the end of the file.
    runs_past_end: bool,
    /// Where the frame would end (when its length field was readable).
    end: Option<usize>,
}

/// The first position after `pos` where a frame that checks out starts:
/// `hint` (where the bad frame at `pos` says it ends) first, then every
/// byte. A random length field rarely fits in the file, so most positions
/// cost a comparison; the ones that fit cost a checksum.
fn first_frame_after(bytes: &[u8], pos: usize, hint: Option<usize>) -> Option<usize> {
    let checks_out = |at: usize| {
        let Some(header) = bytes.get(at..at + FRAME_HEADER) else { return false };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        len != 0
            && len <= MAX_FRAME
            && bytes
                .get(at + FRAME_HEADER..at + FRAME_HEADER + len)
                .is_some_and(|payload| crc32fast::hash(payload) == crc)
    };
    if let Some(end) = hint.filter(|&e| e > pos && checks_out(e)) {
        return Some(end);
    }
    (pos + 1..bytes.len().saturating_sub(FRAME_HEADER)).find(|&at| checks_out(at))
}

/// Parses the frame at `pos`; returns its operations and the next position.
fn parse_frame(bytes: &[u8], pos: usize) -> Result<(Vec<WalOp>, usize), BadFrame> {
    let bad = |reason: String, runs_past_end, end| BadFrame { reason, runs_past_end, end };
    if bytes.len() - pos < FRAME_HEADER {
        return Err(bad("incomplete frame header".into(), true, None));
    }
    let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_FRAME {
        return Err(bad(format!("impossible frame length {len}"), false, None));
    }
    let start = pos + FRAME_HEADER;
    let end = start + len;
    if end > bytes.len() {
        return Err(bad(
            format!("frame of {len} bytes runs past the end of the file"),
            true,
            Some(end),
        ));
    }
    let payload = &bytes[start..end];
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(bad(
            format!("checksum mismatch (stored {crc:08x}, computed {actual:08x})"),
            false,
            Some(end),
        ));
    }
    let ops = parse_ops(payload)
        .map_err(|reason| bad(format!("checksum matches but {reason}"), false, Some(end)))?;
    Ok((ops, end))
}

fn parse_ops(mut p: &[u8]) -> Result<Vec<WalOp>, String> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if p.len() < n {
            return Err("an operation is cut short".into());
        }
        let (head, tail) = p.split_at(n);
        *p = tail;
        Ok(head)
    }
    fn u64_of(b: &[u8]) -> u64 {
        u64::from_le_bytes(b.try_into().expect("8 bytes"))
    }
    let mut ops = Vec::new();
    while !p.is_empty() {
        match take(&mut p, 1)?[0] {
            OP_PUT => {
                let key = u64_of(take(&mut p, 8)?);
                let vlen = u32::from_le_bytes(take(&mut p, 4)?.try_into().expect("4 bytes"));
                ops.push(WalOp::Put(key, take(&mut p, vlen as usize)?.to_vec()));
            }
            OP_REMOVE => {
                let lo = u64_of(take(&mut p, 8)?);
                let hi = u64_of(take(&mut p, 8)?);
                ops.push(WalOp::Remove(lo..=hi));
            }
            tag => return Err(format!("unknown operation tag {tag}")),
        }
    }
    Ok(ops)
}

/// Creates segment `seq` in `dir` holding just the header (and `frame`,
/// if any), synced with its directory entry.
fn create_segment(dir: &Path, seq: u64, frame: &[u8]) -> Result<File, EngineError> {
    let path = dir.join(segment_name(seq));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err(&path, "create a log segment"))?;
    let mut first = MAGIC.to_vec();
    first.extend_from_slice(frame);
    file.write_all_at(&first, 0).map_err(io_err(&path, "write a new log segment"))?;
    file.sync_all().map_err(sync_err(&path, "fsyncing a new log segment"))?;
    fsync_dir(dir, "fsyncing the log directory after creating a segment")?;
    Ok(file)
}

impl Wal {
    /// Creates a new log directory `data/log` holding `initial` (the
    /// entries of a log kept elsewhere before; empty for a new database):
    /// assembled under `data/log.tmp`, synced, then renamed into place and
    /// the data directory synced, so that a crash leaves either no `log`
    /// or a complete one.
    pub(crate) fn create(data: &Path, initial: Vec<(u64, Vec<u8>)>) -> Result<Wal, EngineError> {
        let tmp = data.join(LOG_TMP_DIR);
        match fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&tmp, "remove a half-built log directory")(e)),
        }
        fs::create_dir(&tmp).map_err(io_err(&tmp, "create the log directory"))?;
        let ops: Vec<WalOp> = initial.into_iter().map(|(k, v)| WalOp::Put(k, v)).collect();
        let frame = if ops.is_empty() { Vec::new() } else { encode_frame(&ops) };
        drop(create_segment(&tmp, 1, &frame)?);
        let dir = data.join(LOG_DIR);
        fs::rename(&tmp, &dir).map_err(io_err(&dir, "rename the new log directory into place"))?;
        fsync_dir(data, "fsyncing the data directory after creating the log")?;
        Wal::open(data)
    }

    /// Opens and replays `data/log` (see the module documentation for what
    /// is cut and what is refused).
    pub(crate) fn open(data: &Path) -> Result<Wal, EngineError> {
        let dir = data.join(LOG_DIR);
        let corrupt = |detail: String| EngineError::CorruptLog { path: dir.clone(), detail };

        let mut seqs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir, "list the log directory"))? {
            let entry = entry.map_err(io_err(&dir, "list the log directory"))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let seq = name
                .strip_suffix(".seg")
                .filter(|s| s.len() == 20)
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| corrupt(format!("unexpected file {name:?} in the log directory")))?;
            seqs.push(seq);
        }
        seqs.sort_unstable();
        if seqs.is_empty() {
            return Err(corrupt("no segment files (the log directory is empty)".into()));
        }
        if let Some(w) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
            return Err(corrupt(format!(
                "segments {} and {} are not consecutive: segment files are missing",
                segment_name(w[0]),
                segment_name(w[1])
            )));
        }

        let mut keys = Keys::default();
        let mut current = None;
        let last_seq = *seqs.last().expect("not empty");
        for &seq in &seqs {
            let path = dir.join(segment_name(seq));
            let is_last = seq == last_seq;
            let bytes = fs::read(&path).map_err(io_err(&path, "read a log segment"))?;
            keys.live.insert(seq, 0);
            let mut pos = MAGIC.len();
            let mut cut_at = None;
            if bytes.len() < MAGIC.len() && is_last && MAGIC.starts_with(&bytes) {
                // Created, and the crash came before its header was synced.
                cut_at = Some(0);
            } else if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
                return Err(corrupt(format!("{}: not a log segment (bad header)", path.display())));
            }
            while cut_at.is_none() && pos < bytes.len() {
                match parse_frame(&bytes, pos) {
                    Ok((ops, next)) => {
                        keys.apply(seq, ops);
                        pos = next;
                    }
                    Err(bad) => {
                        // Only the last segment can end in an unsynced
                        // frame (zeros alone never check out as a frame).
                        let only_zeros_after = || {
                            bad.end.is_some_and(|end| {
                                bytes.get(end..).is_some_and(|rest| rest.iter().all(|&b| b == 0))
                            })
                        };
                        let torn = is_last
                            && (bad.runs_past_end
                                || only_zeros_after()
                                || first_frame_after(&bytes, pos, bad.end).is_none());
                        if torn {
                            tracing::warn!(
                                segment = %path.display(),
                                offset = pos,
                                dropped_bytes = bytes.len() - pos,
                                reason = %bad.reason,
                                "log: cutting a torn tail (an append that was never synced)"
                            );
                            cut_at = Some(pos);
                        } else {
                            return Err(corrupt(format!(
                                "{} at byte {pos}: {}{}",
                                path.display(),
                                bad.reason,
                                if is_last { ", and data follows it" } else { "" }
                            )));
                        }
                    }
                }
            }
            if is_last {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path, "open the last log segment"))?;
                let len = match cut_at {
                    Some(0) => {
                        file.set_len(0).map_err(io_err(&path, "cut a torn log tail"))?;
                        file.write_all_at(MAGIC, 0)
                            .map_err(io_err(&path, "rewrite a log segment's header"))?;
                        MAGIC.len() as u64
                    }
                    Some(at) => {
                        file.set_len(at as u64).map_err(io_err(&path, "cut a torn log tail"))?;
                        at as u64
                    }
                    None => bytes.len() as u64,
                };
                if cut_at.is_some() {
                    file.sync_all()
                        .map_err(sync_err(&path, "fsyncing a log segment after a cut"))?;
                }
                current = Some(Current { seq, file: Arc::new(file), len });
            }
        }
        Ok(Wal {
            dir,
            keys,
            current: current.expect("the last segment was opened"),
            segment_bytes: SEGMENT_BYTES,
            written: 0,
            synced: 0,
            poisoned: None,
        })
    }

    fn check(&self) -> Result<(), EngineError> {
        match &self.poisoned {
            None => Ok(()),
            Some(why) => Err(EngineError::CorruptLog {
                path: self.dir.clone(),
                detail: format!("an earlier write or sync failed ({why}); restart the node"),
            }),
        }
    }

    /// Appends `ops` as one frame (not synced: see [`Wal::sync_handle`]),
    /// then deletes segments left without live keys.
    pub(crate) fn write(&mut self, ops: Vec<WalOp>) -> Result<(), EngineError> {
        self.check()?;
        if ops.is_empty() {
            return Ok(());
        }
        // Replay's torn-write rule needs at most one unsynced frame at any
        // time (module header): a frame a caller left unsynced is synced
        // before the next is written. The log store syncs every write
        // itself, so there this never waits.
        if self.synced < self.written {
            self.sync_now()?;
        }
        let frame = encode_frame(&ops);
        if self.current.len > MAGIC.len() as u64
            && self.current.len + frame.len() as u64 > self.segment_bytes
        {
            self.roll()?;
        }
        let path = self.dir.join(segment_name(self.current.seq));
        if let Err(e) = self.current.file.write_all_at(&frame, self.current.len) {
            self.poisoned = Some(format!("writing {}: {e}", path.display()));
            return Err(io_err(&path, "append to the log")(e));
        }
        self.current.len += frame.len() as u64;
        self.written += 1;
        let removes = ops.iter().any(|op| matches!(op, WalOp::Remove(_)));
        self.keys.apply(self.current.seq, ops);
        if removes {
            self.collect_garbage()?;
        }
        Ok(())
    }

    /// Closes the current segment (synced) and starts the next one.
    fn roll(&mut self) -> Result<(), EngineError> {
        self.sync_now()?;
        let seq = self.current.seq + 1;
        let file = create_segment(&self.dir, seq, &[])?;
        self.keys.live.insert(seq, 0);
        self.current = Current { seq, file: Arc::new(file), len: MAGIC.len() as u64 };
        Ok(())
    }

    /// Syncs the current segment on this thread (used under the lock, for
    /// the rare roll and segment deletion).
    fn sync_now(&mut self) -> Result<(), EngineError> {
        if let Some(handle) = self.sync_handle()? {
            let path = self.dir.join(segment_name(self.current.seq));
            let result = handle.file.sync_data();
            self.synced_upto(handle.upto, result.as_ref().err().map(|e| e.to_string()));
            result.map_err(sync_err(&path, "fdatasync of the log"))?;
        }
        Ok(())
    }

    /// Deletes the oldest segments while no live key remains in them (never
    /// the current one), after syncing the frames that emptied them.
    fn collect_garbage(&mut self) -> Result<(), EngineError> {
        let dead: Vec<u64> = self
            .keys
            .live
            .iter()
            .take_while(|(seq, n)| **seq != self.current.seq && **n == 0)
            .map(|(seq, _)| *seq)
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        // The removals that emptied these segments must be durable before
        // the segments go, or a crash could bring back a half-removed range.
        self.sync_now()?;
        for seq in dead {
            let path = self.dir.join(segment_name(seq));
            fs::remove_file(&path).map_err(io_err(&path, "delete a log segment"))?;
            self.keys.live.remove(&seq);
        }
        fsync_dir(&self.dir, "fsyncing the log directory after deleting segments")
    }

    /// What a sync of everything written so far must fsync, or `None` when
    /// all of it is synced already.
    pub(crate) fn sync_handle(&self) -> Result<Option<SyncHandle>, EngineError> {
        self.check()?;
        Ok((self.synced < self.written)
            .then(|| SyncHandle { file: Arc::clone(&self.current.file), upto: self.written }))
    }

    /// Records the outcome of a sync started with [`Wal::sync_handle`].
    pub(crate) fn synced_upto(&mut self, upto: u64, failure: Option<String>) {
        match failure {
            None => self.synced = self.synced.max(upto),
            Some(why) => {
                self.poisoned.get_or_insert(format!("fdatasync of the log: {why}"));
            }
        }
    }

    pub(crate) fn get(&self, key: u64) -> Option<Vec<u8>> {
        self.keys.map.get(&key).map(|l| l.value.to_vec())
    }

    pub(crate) fn range(&self, range: impl std::ops::RangeBounds<u64>) -> Vec<(u64, Vec<u8>)> {
        self.keys.map.range(range).map(|(k, l)| (*k, l.value.to_vec())).collect()
    }

    /// How many live keys `range` holds.
    pub(crate) fn count(&self, range: RangeInclusive<u64>) -> usize {
        self.keys.map.range(range).count()
    }

    pub(crate) fn first(&self) -> Option<(u64, Vec<u8>)> {
        self.keys.map.first_key_value().map(|(k, l)| (*k, l.value.to_vec()))
    }

    pub(crate) fn last(&self) -> Option<(u64, Vec<u8>)> {
        self.keys.map.last_key_value().map(|(k, l)| (*k, l.value.to_vec()))
    }

    /// How many segment files there are (for tests).
    #[cfg(test)]
    fn segments(&self) -> usize {
        self.keys.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: u64, v: &[u8]) -> WalOp {
        WalOp::Put(k, v.to_vec())
    }

    fn sync(wal: &mut Wal) {
        wal.sync_now().unwrap();
    }

    fn keys(wal: &Wal) -> Vec<u64> {
        wal.range(..).into_iter().map(|(k, _)| k).collect()
    }

    /// A new log in `data` holding `frames`, synced and closed.
    fn write_synced(data: &Path, frames: Vec<Vec<WalOp>>) {
        let mut wal = Wal::create(data, Vec::new()).unwrap();
        for ops in frames {
            wal.write(ops).unwrap();
        }
        sync(&mut wal);
    }

    fn segment_path(data: &Path, seq: u64) -> PathBuf {
        data.join(LOG_DIR).join(segment_name(seq))
    }

    #[test]
    fn writes_removals_and_replay() {
        let data = tempfile::tempdir().unwrap();
        {
            let mut wal = Wal::create(data.path(), vec![(1, b"a".to_vec())]).unwrap();
            wal.write(vec![put(2, b"b"), put(3, b"c"), put(4, b"d")]).unwrap();
            wal.write(vec![WalOp::Remove(3..=u64::MAX)]).unwrap();
            wal.write(vec![put(3, b"C")]).unwrap();
            wal.write(vec![WalOp::Remove(0..=1)]).unwrap();
            sync(&mut wal);
            assert_eq!(keys(&wal), vec![2, 3]);
        }
        let wal = Wal::open(data.path()).unwrap();
        assert_eq!(keys(&wal), vec![2, 3]);
        assert_eq!(wal.get(3), Some(b"C".to_vec()));
        assert_eq!(wal.first().unwrap().0, 2);
        assert_eq!(wal.last().unwrap().0, 3);
    }

    #[test]
    fn a_torn_tail_is_cut_and_writing_resumes() {
        let data = tempfile::tempdir().unwrap();
        let seg = segment_path(data.path(), 1);
        write_synced(data.path(), vec![vec![put(1, b"one")], vec![put(2, &[9; 100])]]);
        // The second frame lost its last 10 bytes, as an unsynced append can.
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 10).unwrap();
        let mut wal = Wal::open(data.path()).unwrap();
        assert_eq!(keys(&wal), vec![1]);
        wal.write(vec![put(2, b"two")]).unwrap();
        sync(&mut wal);
        drop(wal);
        let wal = Wal::open(data.path()).unwrap();
        assert_eq!(keys(&wal), vec![1, 2]);
        assert_eq!(wal.get(2), Some(b"two".to_vec()));
    }

    #[test]
    fn a_zero_filled_tail_is_cut() {
        let data = tempfile::tempdir().unwrap();
        let seg = segment_path(data.path(), 1);
        write_synced(data.path(), vec![vec![put(1, b"one")]]);
        // The file grew but the data never arrived (extended with zeros).
        let file = OpenOptions::new().write(true).open(&seg).unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len + 4096).unwrap();
        let wal = Wal::open(data.path()).unwrap();
        assert_eq!(keys(&wal), vec![1]);
        assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    }

    #[test]
    fn a_bad_frame_followed_by_data_is_corruption_not_a_tail() {
        let data = tempfile::tempdir().unwrap();
        let seg = segment_path(data.path(), 1);
        write_synced(data.path(), vec![vec![put(1, b"one")], vec![put(2, b"two")]]);
        // Flip a byte in the FIRST frame's value: acknowledged data is bad.
        let mut bytes = fs::read(&seg).unwrap();
        let at = MAGIC.len() + FRAME_HEADER + 13;
        bytes[at] ^= 0xff;
        fs::write(&seg, &bytes).unwrap();
        let err = Wal::open(data.path()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EngineError::CorruptLog { .. }), "{text}");
        assert!(text.contains("checksum mismatch") && text.contains("data follows"), "{text}");
        // Nothing was cut.
        assert_eq!(fs::read(&seg).unwrap(), bytes);
    }

    /// A power cut during an append whose frame spans pages: the disk kept
    /// the frame's later page but not its first, so the header reads as
    /// zeros and the rest of the body follows it.
    #[test]
    fn a_torn_write_that_lost_its_first_page_is_cut() {
        let data = tempfile::tempdir().unwrap();
        let seg = segment_path(data.path(), 1);
        let synced_len;
        {
            let mut wal = Wal::create(data.path(), Vec::new()).unwrap();
            wal.write(vec![put(1, b"one")]).unwrap();
            wal.write(vec![put(2, b"two")]).unwrap();
            sync(&mut wal);
            synced_len = fs::metadata(&seg).unwrap().len() as usize;
            wal.write(vec![put(3, &[7; 6000])]).unwrap();
        }
        let mut bytes = fs::read(&seg).unwrap();
        // The page holding the synced frames and the new header was not
        // written back: the new frame's first bytes read as zeros.
        bytes[synced_len..4096].fill(0);
        fs::write(&seg, &bytes).unwrap();
        let mut wal = Wal::open(data.path()).unwrap();
        assert_eq!(keys(&wal), vec![1, 2]);
        assert_eq!(fs::metadata(&seg).unwrap().len() as usize, synced_len, "the tail is cut");
        wal.write(vec![put(3, b"three")]).unwrap();
        sync(&mut wal);
        drop(wal);
        let wal = Wal::open(data.path()).unwrap();
        assert_eq!(keys(&wal), vec![1, 2, 3]);

        // Its header survived but a middle page did not: the checksum fails
        // and nothing that checks out follows.
        let data = tempfile::tempdir().unwrap();
        let seg = segment_path(data.path(), 1);
        {
            let mut wal = Wal::create(data.path(), Vec::new()).unwrap();
            wal.write(vec![put(1, b"one")]).unwrap();
            sync(&mut wal);
            wal.write(vec![put(2, &[7; 10_000])]).unwrap();
        }
        let mut bytes = fs::read(&seg).unwrap();
        bytes[4096..8192].fill(0);
        fs::write(&seg, &bytes).unwrap();
        assert_eq!(keys(&Wal::open(data.path()).unwrap()), vec![1]);
    }

    /// What replay's torn-write rule rests on: writing a frame first syncs
    /// the one before it if its caller left it unsynced.
    #[test]
    fn at_most_one_frame_is_ever_unsynced() {
        let data = tempfile::tempdir().unwrap();
        let mut wal = Wal::create(data.path(), Vec::new()).unwrap();
        for k in 1..=5 {
            wal.write(vec![put(k, b"v")]).unwrap();
            assert_eq!(wal.written - wal.synced, 1, "after frame {k}");
        }
        sync(&mut wal);
        assert_eq!(wal.written, wal.synced);
    }

    /// A damaged header with a good frame after it: the damaged frame was
    /// synced (a later frame was written after it), so this is corruption,
    /// even though the damaged frame's own length can no longer be read.
    #[test]
    fn a_damaged_header_before_a_good_frame_is_corruption() {
        let data = tempfile::tempdir().unwrap();
        let seg = segment_path(data.path(), 1);
        write_synced(
            data.path(),
            vec![vec![put(1, b"one")], vec![put(2, b"two")], vec![put(3, b"three")]],
        );
        let mut bytes = fs::read(&seg).unwrap();
        let second = MAGIC.len() + encode_frame(&[put(1, b"one")]).len();
        bytes[second..second + 4].fill(0);
        fs::write(&seg, &bytes).unwrap();
        let err = Wal::open(data.path()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EngineError::CorruptLog { .. }), "{text}");
        assert!(text.contains("impossible frame length 0"), "{text}");
        assert_eq!(fs::read(&seg).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn segments_roll_and_emptied_ones_are_deleted() {
        let data = tempfile::tempdir().unwrap();
        let value = vec![5u8; 1 << 16];
        let mut wal = Wal::create(data.path(), Vec::new()).unwrap();
        wal.segment_bytes = 1 << 20;
        // ~3 segments' worth of 64 KiB values.
        let n = 3 * (1 << 20) / (1 << 16);
        for k in 1..=n {
            wal.write(vec![WalOp::Put(k, value.clone())]).unwrap();
        }
        assert!(wal.segments() >= 3, "{} segments", wal.segments());
        sync(&mut wal);
        let segments_before = wal.segments();
        wal.write(vec![WalOp::Remove(0..=n - 5)]).unwrap();
        assert!(wal.segments() < segments_before, "emptied segments are deleted");
        sync(&mut wal);
        drop(wal);
        let wal = Wal::open(data.path()).unwrap();
        assert_eq!(keys(&wal), ((n - 4)..=n).collect::<Vec<_>>());
        assert_eq!(wal.get(n).map(|v| v.len()), Some(1 << 16));
    }

    #[test]
    fn a_missing_segment_is_refused() {
        let data = tempfile::tempdir().unwrap();
        {
            let mut wal = Wal::create(data.path(), Vec::new()).unwrap();
            wal.roll().unwrap();
            wal.roll().unwrap();
        }
        fs::remove_file(segment_path(data.path(), 2)).unwrap();
        let err = Wal::open(data.path()).unwrap_err().to_string();
        assert!(err.contains("not consecutive"), "{err}");
    }

    #[test]
    fn a_stray_file_is_refused() {
        let data = tempfile::tempdir().unwrap();
        drop(Wal::create(data.path(), Vec::new()).unwrap());
        fs::write(data.path().join(LOG_DIR).join("notes.txt"), b"x").unwrap();
        let err = Wal::open(data.path()).unwrap_err().to_string();
        assert!(err.contains("unexpected file \"notes.txt\""), "{err}");
    }

    #[test]
    fn frames_round_trip() {
        let ops = vec![put(7, b""), WalOp::Remove(1..=u64::MAX), put(u64::MAX, &[1, 2, 3])];
        let frame = encode_frame(&ops);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&frame);
        let (parsed, next) = parse_frame(&bytes, MAGIC.len()).unwrap();
        assert_eq!(parsed, ops);
        assert_eq!(next, bytes.len());
    }
}
