//! The state machine: the applied [`State`] in memory, persisted as snapshots.
//!
//! Owns: [`StateMachineStore`] (openraft's `RaftStateMachine`),
//! [`SnapshotBuilder`] (openraft's `RaftSnapshotBuilder`), [`StateReader`]
//! (local reads of the applied state), and the layout of the snapshot file
//! (see [`frame`]): the snapshot data, then its [`SnapshotMeta`], then a
//! trailer with both lengths, a CRC-32 and a magic number. The engine
//! replaces that file atomically, so there is only ever one current
//! snapshot. (Data directories written before the file existed keep their
//! snapshot in the `snapshot` tree, key `meta` and key `data`; it is read
//! when there is no file, and removed once a file has been written.)
//!
//! Does not own: what applying a command means (that is
//! [`crate::state::apply()`], pure), the log ([`crate::log_store`]), the
//! engine or the encoding.
//!
//! Durability model ("persistent snapshot"): `apply` changes memory only.
//! What survives a restart is the last snapshot; [`StateMachineStore::open`]
//! loads it, and openraft then re-applies the committed log entries after it
//! (it learns how far from `LogStore::read_committed`). Openraft only purges
//! log entries covered by a snapshot it was handed, and a snapshot is handed
//! over only after it is synced, so nothing between the snapshot and the log
//! can be lost.
//!
//! Snapshot data (what followers receive) is [`crate::codec`] of
//! `{ state, last_applied, membership }`.

use std::fmt;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::engine::{Engine, SharedEngine, Tree, WriteBatch, SNAPSHOT_FILE};
use crate::failure::{blocking, Failure};
use crate::feed::Feed;
use crate::state::events::events_of;
use crate::state::{self, Outcome, State};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    TypeConfig,
};
use crate::OpenError;

/// `snapshot` tree key of the snapshot meta, in the old layout.
const META_KEY: &[u8] = b"meta";
/// `snapshot` tree key of the snapshot data, in the old layout.
const DATA_KEY: &[u8] = b"data";
/// The last bytes of every snapshot file.
const MAGIC: &[u8; 8] = b"SWBSNAP1";
/// Trailer: meta length (u32), data length (u64), CRC-32 of data and meta
/// (u32), all little-endian, then [`MAGIC`].
const TRAILER: usize = 4 + 8 + 4 + MAGIC.len();

/// The trailer of a snapshot file holding `data` then `meta`. The data
/// comes first so that reading it back is a truncate, not a copy of a
/// hundred megabytes.
fn frame(data: &[u8], meta: &[u8]) -> Result<[u8; TRAILER], Failure> {
    let meta_len = u32::try_from(meta.len())
        .map_err(|_| Failure::Corrupt(format!("snapshot meta of {} bytes", meta.len())))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    crc.update(meta);
    let mut t = [0u8; TRAILER];
    t[0..4].copy_from_slice(&meta_len.to_le_bytes());
    t[4..12].copy_from_slice(&(data.len() as u64).to_le_bytes());
    t[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
    t[16..].copy_from_slice(MAGIC);
    Ok(t)
}

/// Splits a snapshot file into its meta and its data (the file's buffer,
/// truncated). Any mismatch — a short file, a foreign or torn trailer,
/// lengths that do not add up, a checksum that fails — is `Corrupt`.
fn unframe(mut file: Vec<u8>, path: &Path) -> Result<(SnapshotMeta, Vec<u8>), Failure> {
    let corrupt = |why: String| {
        Failure::Corrupt(format!("snapshot file {} is damaged: {why}", path.display()))
    };
    if file.len() < TRAILER {
        return Err(corrupt(format!("{} bytes, shorter than its trailer", file.len())));
    }
    let t = &file[file.len() - TRAILER..];
    if &t[16..] != MAGIC {
        return Err(corrupt("no snapshot trailer at its end".into()));
    }
    let meta_len = u32::from_le_bytes(t[0..4].try_into().expect("4 bytes")) as usize;
    let data_len = u64::from_le_bytes(t[4..12].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(t[12..16].try_into().expect("4 bytes"));
    let body = file.len() - TRAILER;
    let data_len = usize::try_from(data_len)
        .ok()
        .filter(|d| d.checked_add(meta_len) == Some(body))
        .ok_or_else(|| {
            corrupt(format!("trailer says {data_len} + {meta_len} bytes, file holds {body}"))
        })?;
    if crc32fast::hash(&file[..body]) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let meta: SnapshotMeta = codec::decode(&file[data_len..body]).map_err(|source| {
        Failure::Codec { what: format!("snapshot meta in {}", path.display()), source }
    })?;
    file.truncate(data_len);
    Ok((meta, file))
}

/// Everything the state machine holds; also the snapshot payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Applied {
    /// The replicated state.
    state: State,
    /// The last entry applied to `state`.
    last_applied: Option<LogId>,
    /// The last membership applied.
    membership: StoredMembership,
}

/// The error for a poisoned lock. Only a panic inside `state::apply` (which
/// never panics) could poison it; treat it as a broken state machine.
fn poisoned() -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(
        "the state machine lock is poisoned: a thread panicked while changing the state",
    ))
    .into()
}

/// Checks that decoded snapshot data matches the meta it was stored or sent
/// with.
fn check_consistent(meta: &SnapshotMeta, applied: &Applied) -> Result<(), Failure> {
    if applied.last_applied != meta.last_log_id || applied.membership != meta.last_membership {
        return Err(Failure::Corrupt(format!(
            "snapshot {} does not match its data (data: last applied {:?}, membership {})",
            meta, applied.last_applied, applied.membership
        )));
    }
    Ok(())
}

/// Reads the persisted snapshot's meta and data, undecoded data included:
/// the snapshot file, or, when there is none, the old layout's tree.
fn read_persisted(engine: &dyn Engine) -> Result<Option<(SnapshotMeta, Vec<u8>)>, Failure> {
    if let Some(file) = engine.read_snapshot_file()? {
        return unframe(file, &engine.path().join(SNAPSHOT_FILE)).map(Some);
    }
    read_tree(engine)
}

/// The snapshot in the old layout (two keys of the `snapshot` tree).
fn read_tree(engine: &dyn Engine) -> Result<Option<(SnapshotMeta, Vec<u8>)>, Failure> {
    let meta = engine.get(Tree::Snapshot, META_KEY)?;
    let data = engine.get(Tree::Snapshot, DATA_KEY)?;
    match (meta, data) {
        (None, None) => Ok(None),
        (Some(meta), Some(data)) => {
            let meta: SnapshotMeta = codec::decode(&meta).map_err(|source| Failure::Codec {
                what: format!("snapshot meta in {}", engine.path().display()),
                source,
            })?;
            Ok(Some((meta, data)))
        }
        (meta, _) => Err(Failure::Corrupt(format!(
            "snapshot in {} has {} but not {}",
            engine.path().display(),
            if meta.is_some() { "meta" } else { "data" },
            if meta.is_some() { "data" } else { "meta" },
        ))),
    }
}

/// What the last snapshot this node built cost (local, never replicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Last log index the snapshot covers.
    pub index: u64,
    /// Time the state lock was held for the consistent view, µs.
    pub view_us: u64,
    /// From the view to the snapshot on disk (encode, write, fsync), ms.
    pub build_ms: u64,
    /// Encoded size, bytes.
    pub bytes: u64,
}

/// State shared by the store, its snapshot builders and readers.
struct Shared {
    engine: SharedEngine,
    applied: Arc<RwLock<Applied>>,
    /// The persisted snapshot's meta. The mutex also serialises snapshot
    /// writes, so "is it newer than the current one?" and "write it" are one
    /// step.
    current: Mutex<Option<SnapshotMeta>>,
    /// Makes snapshot ids unique; starts after the persisted snapshot's.
    counter: AtomicU64,
    /// Events of applied entries, for watchers.
    feed: Arc<Feed>,
    /// The replicated clock's value and the local monotonic time at which
    /// this node applied it (local metadata, never persisted or replicated:
    /// readers carry the clock forward from here, see [`StateReader::clock`]).
    clock_at: Arc<Mutex<(u64, Instant)>>,
    /// The last snapshot built here, for operators and the bench.
    last_built: Arc<Mutex<Option<SnapshotStats>>>,
    /// Whether the `snapshot` tree may still hold an old-layout snapshot.
    legacy_tree: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Note that the applied state's clock is now `clock_ms`.
    fn clock_applied(&self, clock_ms: u64) {
        let mut at = self.clock_at.lock().unwrap_or_else(PoisonError::into_inner);
        if at.0 != clock_ms {
            *at = (clock_ms, Instant::now());
        }
    }
    /// Writes `meta` + `data` as the current snapshot file (durably: see
    /// [`Engine::replace_snapshot_file`]), then records `meta` as current.
    /// With `only_if_newer`, a snapshot older than the
    /// current one is not written (a slow build finishing after a newer
    /// snapshot was installed must not roll the persisted snapshot back
    /// behind the purged log). Returns whether it was written. Blocking.
    fn persist(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        only_if_newer: bool,
    ) -> Result<bool, Failure> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if only_if_newer {
            if let Some(cur) = current.as_ref() {
                if cur.last_log_id > meta.last_log_id {
                    return Ok(false);
                }
            }
        }
        let meta_bytes = codec::encode(meta)
            .map_err(|source| Failure::Codec { what: "snapshot meta".to_string(), source })?;
        let trailer = frame(data, &meta_bytes)?;
        // Durable before it is recorded (and reported to openraft) as current.
        self.engine.replace_snapshot_file(&[data, &meta_bytes, &trailer])?;
        *current = Some(meta.clone());
        // An old-layout snapshot is now shadowed by the file (which is read
        // first); drop it so it stops taking space. Not synced: should the
        // removal be lost, the file still wins.
        if self.legacy_tree.swap(false, Ordering::Relaxed) {
            let mut batch = WriteBatch::new();
            batch.remove(META_KEY);
            batch.remove(DATA_KEY);
            self.engine.apply_batch(Tree::Snapshot, batch)?;
        }
        Ok(true)
    }
}

/// A cheap, cloneable handle for reading the locally applied state.
///
/// The state is what this node has applied, which may trail the leader; it
/// is the right source for reads that tolerate that (or that the caller has
/// first made linearizable, e.g. with openraft's `ensure_linearizable`).
#[derive(Clone)]
pub struct StateReader {
    applied: Arc<RwLock<Applied>>,
    clock_at: Arc<Mutex<(u64, Instant)>>,
    last_built: Arc<Mutex<Option<SnapshotStats>>>,
}

impl fmt::Debug for StateReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateReader").finish_non_exhaustive()
    }
}

impl StateReader {
    /// Calls `f` with the applied state and the id of the last entry applied
    /// to it, under a read lock: keep `f` short, `apply` waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&State, Option<LogId>) -> R) -> R {
        // A read lock is only poisoned by a panicking writer, and the only
        // writers are `apply` (`state::apply` never panics) and snapshot
        // installation (a plain assignment). Reading through it is safe.
        let applied = self.applied.read().unwrap_or_else(PoisonError::into_inner);
        f(&applied.state, applied.last_applied)
    }

    /// The applied state's replicated clock and when (local monotonic time)
    /// this node applied that value — so a reader can carry the clock
    /// forward by the time since, instead of trusting its own wall clock.
    pub fn clock(&self) -> (u64, Instant) {
        *self.clock_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the last snapshot built on this node since it started cost.
    pub fn last_snapshot_built(&self) -> Option<SnapshotStats> {
        *self.last_built.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The Raft state machine (openraft storage-v2 `RaftStateMachine`).
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachineStore").field("path", &self.shared.engine.path()).finish()
    }
}

impl StateMachineStore {
    /// Opens the state machine kept in `engine`: loads the persisted
    /// snapshot, if any, as the applied state (openraft then re-applies the
    /// committed entries after it). A corrupt or inconsistent snapshot is an
    /// error, never silently replaced by an empty state. Blocks on disk I/O.
    pub fn open(engine: SharedEngine) -> Result<Self, OpenError> {
        let (applied, current) = match read_persisted(engine.as_ref())
            .map_err(|f| f.into_open_error(engine.as_ref()))?
        {
            None => (Applied::default(), None),
            Some((meta, data)) => {
                let applied: Applied =
                    codec::decode(&data).map_err(|source| OpenError::Corrupt {
                        what: format!("snapshot data in {}", engine.path().display()),
                        source,
                    })?;
                check_consistent(&meta, &applied)
                    .map_err(|f| f.into_open_error(engine.as_ref()))?;
                (applied, Some(meta))
            }
        };
        // Continue the id counter after the persisted snapshot's, so ids are
        // not reused across restarts.
        let counter = current
            .as_ref()
            .and_then(|m| m.snapshot_id.rsplit('-').next())
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(0, |n| n.saturating_add(1));
        let feed = Arc::new(Feed::new(
            applied.last_applied.map_or(0, |l| l.index),
            crate::feed::DEFAULT_RETAINED,
        ));
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                engine,
                clock_at: Arc::new(Mutex::new((applied.state.clock_ms, Instant::now()))),
                applied: Arc::new(RwLock::new(applied)),
                current: Mutex::new(current),
                counter: AtomicU64::new(counter),
                feed,
                last_built: Arc::default(),
                // Cleared by the first snapshot written (removing absent
                // keys is free; reading them to find out is not).
                legacy_tree: std::sync::atomic::AtomicBool::new(true),
            }),
        })
    }

    /// The event feed of applied entries.
    pub fn feed(&self) -> Arc<Feed> {
        Arc::clone(&self.shared.feed)
    }

    /// A handle for reading the applied state.
    pub fn reader(&self) -> StateReader {
        StateReader {
            applied: Arc::clone(&self.shared.applied),
            clock_at: Arc::clone(&self.shared.clock_at),
            last_built: Arc::clone(&self.shared.last_built),
        }
    }
}

/// Builds a snapshot of a [`StateMachineStore`] (openraft
/// `RaftSnapshotBuilder`).
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl fmt::Debug for SnapshotBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotBuilder").field("path", &self.shared.engine.path()).finish()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // A consistent view: clone the applied state under the read lock.
        // The big tables (registrations, calls) are persistent maps, so the
        // clone shares their nodes and takes microseconds even with a
        // million bindings; `apply` then carries on (copying only the paths
        // it changes) while this view is encoded and synced below.
        let started = Instant::now();
        let view: Applied = self.shared.applied.read().map_err(|_| poisoned())?.clone();
        let view_us = started.elapsed().as_micros() as u64;

        let shared = Arc::clone(&self.shared);
        blocking(shared.engine.io_time_limit(), move || {
            let seq = shared.counter.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match view.last_applied {
                Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, seq),
                None => format!("0-none-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: view.last_applied,
                last_membership: view.membership.clone(),
                snapshot_id,
            };
            let data = codec::encode(&view)
                .map_err(|source| Failure::Codec { what: "snapshot data".to_string(), source })?;
            // Written and synced before it is recorded as current, and before
            // it is returned to openraft (which may then purge the log up to
            // it).
            shared.persist(&meta, &data, true)?;
            let stats = SnapshotStats {
                index: meta.last_log_id.map_or(0, |l| l.index),
                view_us,
                build_ms: started.elapsed().as_millis() as u64,
                bytes: data.len() as u64,
            };
            tracing::info!(?stats, "snapshot built");
            *shared.last_built.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
            Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.shared.applied.read().map_err(|_| poisoned())?;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    /// Applies entries in memory, one response per entry, in order. CPU
    /// only (no I/O), so it runs on the calling task.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let mut applied = self.shared.applied.write().map_err(|_| poisoned())?;
        let applied = &mut *applied;
        let mut outcomes = Vec::new();
        let mut events = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Nothing,
                EntryPayload::Normal(proposal) => state::apply_entry(
                    &mut applied.state,
                    entry.log_id.index,
                    entry.log_id.leader_id.term,
                    proposal.at_ms,
                    &proposal.command,
                ),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Nothing
                }
            };
            events_of(entry.log_id.index, &outcome, &mut events);
            outcomes.push(outcome);
        }
        self.shared.clock_applied(applied.state.clock_ms);
        // Published while the state is still write-locked, so a watcher that
        // reads the state and then subscribes cannot miss what is in between.
        self.shared.feed.publish(events);
        metrics::histogram!("switchboard_apply_seconds").record(started.elapsed());
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: Arc::clone(&self.shared) }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Decodes and checks the snapshot, persists and syncs it, and only then
    /// replaces the applied state. Garbage data is an error and leaves both
    /// the applied state and the persisted snapshot untouched.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let meta = meta.clone();
        let shared = Arc::clone(&self.shared);
        let signature = meta.signature();
        let installed = blocking(shared.engine.io_time_limit(), move || {
            let data = snapshot.into_inner();
            let applied: Applied = codec::decode(&data).map_err(|source| Failure::Codec {
                what: format!("received snapshot {}", meta.snapshot_id),
                source,
            })?;
            check_consistent(&meta, &applied)?;
            shared.persist(&meta, &data, false)?;
            Ok(applied)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;

        let mut applied = self.shared.applied.write().map_err(|_| poisoned())?;
        self.shared.feed.reset(installed.last_applied.map_or(0, |l| l.index));
        *applied = installed;
        self.shared.clock_applied(applied.state.clock_ms);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let shared = Arc::clone(&self.shared);
        let persisted = blocking(shared.engine.io_time_limit(), move || {
            // Under the snapshot lock: meta and data are two reads, and a
            // snapshot being written between them would pair one snapshot's
            // meta with another's data.
            let _writing = shared.current.lock().unwrap_or_else(PoisonError::into_inner);
            read_persisted(shared.engine.as_ref())
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(persisted.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
