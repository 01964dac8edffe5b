//! The durable Raft log: entries, vote, committed and last-purged log ids.
//!
//! Owns: [`LogStore`] (openraft's `RaftLogStorage`) and [`LogReader`]
//! (openraft's `RaftLogReader`, handed to replication tasks), and the layout
//! of the `log` tree and of the log's keys in the `meta` tree:
//!
//! - `log`: key = the entry's index as 8 big-endian bytes (so byte order is
//!   index order), value = the [`Entry`] through [`crate::codec`].
//! - `meta`: `vote`, `committed`, `last_purged`, each a codec-encoded value.
//!
//! Does not own: the state machine or snapshots ([`crate::sm_store`]), the
//! engine ([`crate::engine`]) or the value encoding ([`crate::codec`]).
//!
//! Every engine call runs on tokio's blocking pool (`spawn_blocking`), so a
//! slow fsync never stalls the async runtime. Decoding failures are returned
//! as [`StorageError`]s (openraft then shuts the node down), never panics.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::time::Instant;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::engine::{Engine, SharedEngine, Tree, WriteBatch};
use crate::failure::{blocking, Failure};
use crate::types::{Entry, LogId, LogState, StorageError, StorageIOError, TypeConfig, Vote};
use crate::OpenError;

/// `meta` key of the persisted vote.
const VOTE_KEY: &[u8] = b"vote";
/// `meta` key of the last committed log id.
const COMMITTED_KEY: &[u8] = b"committed";
/// `meta` key of the last purged log id.
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// The `log` key of index `index`.
fn index_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

/// The index a `log` key encodes, if it is a well-formed key.
fn key_index(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// Maps an index bound to a key bound.
fn key_bound(bound: Bound<&u64>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Runs `f` against the engine on tokio's blocking pool.
async fn on_engine<T, F>(engine: &SharedEngine, f: F) -> Result<T, Failure>
where
    F: FnOnce(&dyn Engine) -> Result<T, Failure> + Send + 'static,
    T: Send + 'static,
{
    let limit = engine.io_time_limit();
    let engine = SharedEngine::clone(engine);
    blocking(limit, move || f(engine.as_ref())).await
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, Failure> {
    codec::encode(value).map_err(|source| Failure::Codec { what: what.to_string(), source })
}

/// Reads and decodes one `meta` value.
fn read_meta<T: DeserializeOwned>(
    engine: &dyn Engine,
    key: &'static [u8],
) -> Result<Option<T>, Failure> {
    let Some(bytes) = engine.get(Tree::Meta, key)? else {
        return Ok(None);
    };
    let what = format!("`{}` in {}", String::from_utf8_lossy(key), engine.path().display());
    codec::decode(&bytes).map(Some).map_err(|source| Failure::Codec { what, source })
}

/// Decodes one `log` pair, checking that the key matches the entry.
fn decode_entry(engine: &dyn Engine, key: &[u8], value: &[u8]) -> Result<Entry, Failure> {
    let Some(index) = key_index(key) else {
        return Err(Failure::Corrupt(format!(
            "malformed log key {key:02x?} in {}",
            engine.path().display()
        )));
    };
    let entry: Entry = codec::decode(value).map_err(|source| Failure::Codec {
        what: format!("log entry {index} in {}", engine.path().display()),
        source,
    })?;
    if entry.log_id.index != index {
        return Err(Failure::Corrupt(format!(
            "log key {index} holds the entry with log id {} in {}",
            entry.log_id,
            engine.path().display()
        )));
    }
    Ok(entry)
}

fn read_entries(
    engine: &dyn Engine,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
) -> Result<Vec<Entry>, Failure> {
    engine
        .range(Tree::Log, start, end)?
        .iter()
        .map(|(key, value)| decode_entry(engine, key, value))
        .collect()
}

fn read_log_state(engine: &dyn Engine) -> Result<LogState, Failure> {
    let last_purged: Option<LogId> = read_meta(engine, LAST_PURGED_KEY)?;
    let last_entry = match engine.last(Tree::Log)? {
        Some((key, value)) => Some(decode_entry(engine, &key, &value)?.log_id),
        None => None,
    };
    // With no entry left (everything purged, or a purge past the end), the
    // last log id is the last purged one, as openraft requires.
    let last_log_id = match (last_entry, last_purged) {
        (Some(entry), Some(purged)) if entry.index <= purged.index => Some(purged),
        (Some(entry), _) => Some(entry),
        (None, purged) => purged,
    };
    Ok(LogState { last_purged_log_id: last_purged, last_log_id })
}

/// Lowers the persisted committed log id to that of the entry at `index`
/// when it is above it, and syncs; returns the committed index left.
///
/// A legal crash state: [`LogStore`]'s `save_committed` does not sync, so a
/// power loss can leave any earlier committed log id on disk. For the
/// test-only [`crate::failpoint::roll_back_committed`].
#[cfg(feature = "failpoints")]
pub(crate) fn roll_back_committed(engine: &dyn Engine, index: u64) -> Result<Option<u64>, Failure> {
    let committed: Option<LogId> = read_meta(engine, COMMITTED_KEY)?;
    if committed.is_none_or(|c| c.index <= index) {
        return Ok(committed.map(|c| c.index));
    }
    let Some(value) = engine.get(Tree::Log, &index_key(index))? else {
        return Err(Failure::Corrupt(format!(
            "no log entry {index} to roll the committed log id back to in {}",
            engine.path().display()
        )));
    };
    let entry = decode_entry(engine, &index_key(index), &value)?;
    engine.insert(Tree::Meta, COMMITTED_KEY, &encode("committed log id", &entry.log_id)?)?;
    engine.sync()?;
    Ok(Some(index))
}

/// A cheap, cloneable reader of the log, sharing the [`LogStore`]'s engine.
#[derive(Clone)]
pub struct LogReader {
    engine: SharedEngine,
}

impl Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader").field("path", &self.engine.path()).finish()
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = key_bound(range.start_bound());
        let end = key_bound(range.end_bound());
        on_engine(&self.engine, move |engine| read_entries(engine, start, end))
            .await
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

/// The Raft log store (openraft storage-v2 `RaftLogStorage`) on an [`Engine`].
///
/// Not `Clone` on purpose: openraft requires every write (vote and log) to
/// go through one serialised writer. Readers use [`LogReader`].
#[derive(Debug)]
pub struct LogStore {
    reader: LogReader,
}

impl LogStore {
    /// Opens the log kept in `engine`.
    ///
    /// Checks that the vote, committed and last-purged values and the first
    /// and last entries decode (a corrupt one is an error now, not at the
    /// first election), and finishes a purge interrupted by a crash (see
    /// [`RaftLogStorage::purge`] below). Blocks on disk I/O.
    pub fn open(engine: SharedEngine) -> Result<Self, OpenError> {
        let corrupt = |failure: Failure| failure.into_open_error(engine.as_ref());

        read_meta::<Vote>(engine.as_ref(), VOTE_KEY).map_err(corrupt)?;
        read_meta::<LogId>(engine.as_ref(), COMMITTED_KEY).map_err(corrupt)?;
        let last_purged = read_meta::<LogId>(engine.as_ref(), LAST_PURGED_KEY).map_err(corrupt)?;

        if let Some(purged) = last_purged {
            // `purge` records last_purged durably before deleting; a crash in
            // between leaves entries <= last_purged behind. Delete them again
            // (synced now, or the first append would sync it: see `purge`).
            let removed = engine.remove_range(
                Tree::Log,
                Bound::Unbounded,
                Bound::Included(index_key(purged.index)),
            )?;
            if removed > 0 {
                engine.sync_log()?;
            }
        }
        for (key, value) in
            [engine.first(Tree::Log)?, engine.last(Tree::Log)?].into_iter().flatten()
        {
            decode_entry(engine.as_ref(), &key, &value).map_err(corrupt)?;
        }
        Ok(LogStore { reader: LogReader { engine } })
    }

    fn engine(&self) -> &SharedEngine {
        &self.reader.engine
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        on_engine(self.engine(), read_log_state)
            .await
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode("vote", vote).map_err(|e| StorageIOError::write_vote(&e))?;
        on_engine(self.engine(), move |engine| {
            engine.insert(Tree::Meta, VOTE_KEY, &bytes)?;
            // Guarantee: the vote is on stable storage before we return.
            engine.sync()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        on_engine(self.engine(), |engine| read_meta(engine, VOTE_KEY))
            .await
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// Records the committed log id, without syncing.
    ///
    /// Not syncing is safe: `committed` only tells a restarting node how far
    /// it may re-apply its own log without hearing from a leader. If the
    /// write is lost, the node restarts with an older (or no) committed id,
    /// applies less at start-up and learns the rest from the next leader
    /// heartbeat; a committed entry is never lost, since entries are synced
    /// on append and `committed` never points past them. Any later sync (the
    /// next append or vote) makes it durable anyway.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = committed
            .map(|c| encode("committed log id", &c))
            .transpose()
            .map_err(|e| StorageIOError::write(&e))?;
        on_engine(self.engine(), move |engine| match bytes {
            Some(bytes) => Ok(engine.insert(Tree::Meta, COMMITTED_KEY, &bytes)?),
            None => Ok(engine.remove(Tree::Meta, COMMITTED_KEY)?),
        })
        .await
        .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        on_engine(self.engine(), |engine| read_meta(engine, COMMITTED_KEY))
            .await
            .map_err(|e| StorageIOError::read(&e).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        for entry in entries {
            let bytes = encode("log entry", &entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(index_key(entry.log_id.index), bytes);
        }
        let started = Instant::now();
        let written = on_engine(self.engine(), move |engine| {
            engine.apply_batch(Tree::Log, batch)?;
            let synced = Instant::now();
            // The log alone (one fdatasync of its segment file): the vote
            // and the other meta values are synced where they are written.
            engine.sync_log()?;
            metrics::histogram!("switchboard_log_sync_seconds").record(synced.elapsed());
            Ok(())
        })
        .await;
        // Encode, write and sync, including the wait for a blocking thread:
        // what one append holds openraft's log I/O for.
        metrics::histogram!("switchboard_log_append_seconds").record(started.elapsed());
        match written {
            Ok(()) => {
                // Guarantee: the callback fires only after the entries were
                // written AND `sync_log()` returned, i.e. they are on stable
                // storage. (It fires before `append` returns, which openraft
                // allows.)
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    /// Removes every entry with index >= `log_id.index`, durably.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let start = index_key(log_id.index);
        on_engine(self.engine(), move |engine| {
            engine.remove_range(Tree::Log, Bound::Included(start), Bound::Unbounded)?;
            // Synced so that a conflicting suffix, once removed, cannot come
            // back after a crash before the replacement entries are appended.
            engine.sync_log()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// Removes every entry with index <= `log_id.index`.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let marker =
            encode("last purged log id", &log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        on_engine(self.engine(), move |engine| {
            let previous: Option<LogId> = read_meta(engine, LAST_PURGED_KEY)?;
            if previous.is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            // Guarantee: last_purged is persisted and synced BEFORE any entry
            // is deleted, so after a crash the log never looks like it starts
            // earlier than it does; a half-done deletion is finished by
            // `LogStore::open`.
            engine.insert(Tree::Meta, LAST_PURGED_KEY, &marker)?;
            engine.sync()?;
            engine.remove_range(
                Tree::Log,
                Bound::Unbounded,
                Bound::Included(index_key(log_id.index)),
            )?;
            // The deletion needs no sync for itself (if it is lost, `open`
            // repeats it), but the log keeps at most one frame unsynced for
            // its torn-write rule (`wal.rs`, "Replay"): synced here, so that
            // the next append does not wait for it in `Wal::write`.
            engine.sync_log()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
