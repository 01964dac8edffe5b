//! A deliberately small key-value engine interface, and its sled implementation.
//!
//! Owns: the [`Engine`] trait (named trees of ordered byte keys, atomic
//! per-tree batches, an explicit durable [`Engine::sync`]), [`SledEngine`],
//! opening and validating a node's data directory, and [`EngineError`].
//!
//! Does not own: what the keys and values mean (see [`crate::log_store`] and
//! [`crate::sm_store`]) or how values are encoded ([`crate::codec`]).
//!
//! Why a trait: sled 0.34 is the engine today, but it has known durability
//! gaps (see [`SledEngine::sync`]) and is unmaintained; the stores only use
//! what is declared here, so swapping it (for a plain append-only file, redb,
//! RocksDB...) is confined to this module.
//!
//! Every method blocks on disk I/O. The async stores call them through
//! `tokio::task::spawn_blocking`; the `open` functions are synchronous and
//! meant for start-up.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::{Bound, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::wal::{Wal, WalOp, LOG_DIR};

/// A shared handle to an engine, as the stores hold it.
pub type SharedEngine = Arc<dyn Engine>;

/// The key under which [`SledEngine`] records the on-disk format, in [`Tree::Meta`].
pub const FORMAT_KEY: &[u8] = b"format";

/// The on-disk format marker this build writes and accepts: format 2 keeps
/// the Raft log in its own segment files ([`crate::wal`]), not in sled.
pub const FORMAT_MARKER: &[u8] = b"switchboard-storage/2";

/// Format 1 (the Raft log in sled's `log` tree): accepted, and moved to
/// format 2 when opened.
pub const FORMAT_MARKER_V1: &[u8] = b"switchboard-storage/1";

/// How long the stores wait for one engine call unless told otherwise: far
/// above any healthy fsync or snapshot write, short enough that a stuck
/// disk stops the node within a minute.
pub const DEFAULT_IO_TIME_LIMIT: Duration = Duration::from_secs(60);

/// The named key spaces of a node's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    /// Raft log entries, keyed by big-endian index.
    Log,
    /// Small singletons: vote, committed, last purged, the format marker.
    Meta,
    /// The current state-machine snapshot.
    Snapshot,
}

impl Tree {
    /// Every tree, in a fixed order.
    pub const ALL: [Tree; 3] = [Tree::Log, Tree::Meta, Tree::Snapshot];

    /// The tree's name on disk.
    pub const fn name(self) -> &'static str {
        match self {
            Tree::Log => "log",
            Tree::Meta => "meta",
            Tree::Snapshot => "snapshot",
        }
    }

    const fn slot(self) -> usize {
        match self {
            Tree::Log => 0,
            Tree::Meta => 1,
            Tree::Snapshot => 2,
        }
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key and its value, as returned by scans.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One write in a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Insert(Vec<u8>, Vec<u8>),
    /// Delete `key` (no error if absent).
    Remove(Vec<u8>),
}

/// Writes to one tree applied as a unit: after a crash either all or none of
/// them are recovered (and, after [`Engine::sync`], all of them are), and no
/// single read observes half of them. A sequence of reads may still see the
/// state before the batch for one key and after it for another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an insert.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Insert(key.into(), value.into()));
    }

    /// Adds a removal.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Remove(key.into()));
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Whether the batch has no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A storage engine: named trees of byte keys in lexicographic order.
///
/// Writes are visible to readers as soon as the call returns, but are only
/// guaranteed to survive a crash or power loss once [`Engine::sync`] has
/// returned `Ok` after them.
pub trait Engine: Send + Sync + 'static {
    /// Where the data lives (for error messages).
    fn path(&self) -> &Path;

    /// The value under `key`, if any.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Sets `key` to `value`.
    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), EngineError>;

    /// Deletes `key`; absent keys are not an error.
    fn remove(&self, tree: Tree, key: &[u8]) -> Result<(), EngineError>;

    /// All pairs with keys within `(start, end)`, in ascending key order.
    /// An empty or inverted range yields nothing.
    fn range(
        &self,
        tree: Tree,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Result<Vec<KeyValue>, EngineError>;

    /// The pair with the smallest key, if the tree is not empty.
    fn first(&self, tree: Tree) -> Result<Option<KeyValue>, EngineError>;

    /// The pair with the largest key, if the tree is not empty.
    fn last(&self, tree: Tree) -> Result<Option<KeyValue>, EngineError>;

    /// Applies every write of `batch` to `tree` atomically.
    fn apply_batch(&self, tree: Tree, batch: WriteBatch) -> Result<(), EngineError>;

    /// Deletes every key within `(start, end)` atomically; returns how many.
    fn remove_range(
        &self,
        tree: Tree,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Result<usize, EngineError>;

    /// Makes every write that returned before this call durable: on return
    /// `Ok`, they survive process crash and power loss.
    fn sync(&self) -> Result<(), EngineError>;

    /// Makes every write to [`Tree::Log`] that returned before this call
    /// durable (writes to the other trees may or may not be). What the
    /// Raft log's append and truncate need, and cheaper than [`Engine::sync`]
    /// where the log is stored apart.
    fn sync_log(&self) -> Result<(), EngineError> {
        self.sync()
    }

    /// The longest the stores wait for one call of this engine (see
    /// [`crate::failure`]'s `blocking`) before they give it up as stuck.
    fn io_time_limit(&self) -> Duration {
        DEFAULT_IO_TIME_LIMIT
    }

    /// The snapshot file's bytes, if there is one (see
    /// [`Engine::replace_snapshot_file`]).
    fn read_snapshot_file(&self) -> Result<Option<Vec<u8>>, EngineError>;

    /// Replaces the snapshot file with `parts`, concatenated, atomically and
    /// durably: on `Ok` the new bytes survive crash and power loss, and a
    /// crash at any point leaves the old file or the new one, never a mix.
    ///
    /// Why a file and not a tree: a snapshot is one large value (160 MB at
    /// a million registrations). Inside the database, sled writes it as a
    /// blob that the *log's* next sync must flush and fsync, so every
    /// snapshot stalled the appends behind it (measured: a 690 ms write on
    /// the leader); sled also kept it in its page cache. A file of its own
    /// is synced by the snapshot builder alone.
    fn replace_snapshot_file(&self, parts: &[&[u8]]) -> Result<(), EngineError>;
}

/// The snapshot file in a data directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// Where a new snapshot file is written before it is renamed over the old one.
const SNAPSHOT_TMP: &str = "snapshot.tmp";
/// How much of a snapshot file is written between two syncs.
const SNAPSHOT_SYNC_EVERY: usize = 8 * 1024 * 1024;

/// Why the engine failed. Every variant names the directory (and tree, where
/// there is one) so an operator can act on the message alone.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The data directory (or an entry in it) could not be inspected or created.
    #[error("data directory {path}: cannot {action}: {source}")]
    Io {
        /// The directory or file concerned.
        path: PathBuf,
        /// What was being done, e.g. "list the directory".
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The directory holds files but is not a sled database: refusing to
    /// create one on top of somebody else's data.
    #[error(
        "data directory {path} is not empty and is not a switchboard database \
         (no sled `conf` and `db` files; found: {found}); refusing to use it"
    )]
    NotADatabase {
        /// The directory.
        path: PathBuf,
        /// A few of the names found in it.
        found: String,
    },
    /// sled refused to open the database (corrupt `conf` or `db` file, lock
    /// held by another process...).
    #[error("data directory {path}: sled cannot open the database: {source}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// sled panicked while opening the database (it does on some kinds of
    /// corruption); the panic was contained.
    #[error("data directory {path}: sled panicked while opening the database: {message}")]
    OpenPanicked {
        /// The directory.
        path: PathBuf,
        /// The panic message, if it was a string.
        message: String,
    },
    /// The directory held a database before, but it carries no format marker:
    /// either sled silently discarded unreadable data and started afresh, or
    /// the database was never ours.
    #[error(
        "data directory {path}: existing database has no switchboard format marker \
         (corrupt, created by another program, or the node crashed during its very \
         first start before initialising it); refusing to use it as a fresh database. \
         Note that sled's recovery may already have rewritten its data file: rebuild \
         this node from the cluster (or a backup) rather than retrying"
    )]
    MissingMarker {
        /// The directory.
        path: PathBuf,
    },
    /// The database was written by an incompatible format version.
    #[error(
        "data directory {path}: unknown database format marker {found:?} \
         (this build reads {expected:?})"
    )]
    UnknownMarker {
        /// The directory.
        path: PathBuf,
        /// The marker found, lossily as text.
        found: String,
        /// The marker this build understands.
        expected: String,
    },
    /// The Raft log's segment files do not check out (see [`crate::wal`]
    /// for what is a torn tail, which is cut, and what is refused).
    #[error("data directory: Raft log {path}: {detail}; refusing to start on it")]
    CorruptLog {
        /// The log directory.
        path: PathBuf,
        /// What is wrong, with the file and byte offset.
        detail: String,
    },
    /// A key of [`Tree::Log`] that is not an 8-byte index.
    #[error("data directory {path}: tree `log`: key {key:02x?} is not an 8-byte log index")]
    BadLogKey {
        /// The directory.
        path: PathBuf,
        /// The key.
        key: Vec<u8>,
    },
    /// A sled operation on a tree failed.
    #[error("data directory {path}: tree `{tree}`: {action} failed: {source}")]
    Sled {
        /// The directory.
        path: PathBuf,
        /// The tree.
        tree: &'static str,
        /// What was being done.
        action: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Flushing to stable storage failed. The engine must be considered
    /// unusable: writes since the last successful sync may be lost.
    #[error("data directory {path}: durable sync failed while {action}: {source}")]
    Sync {
        /// The file or directory being synced.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS (or sled) error.
        #[source]
        source: io::Error,
    },
}

/// The sled implementation of [`Engine`]: one sled database per node, one
/// sled tree each for [`Tree::Meta`] and [`Tree::Snapshot`], and the Raft
/// log ([`Tree::Log`]) in segment files of its own under `log/`
/// ([`crate::wal`]; sled's own `log` tree only held it in format 1).
pub struct SledEngine {
    dir: PathBuf,
    db: sled::Db,
    trees: [sled::Tree; 3],
    /// The log; `None` only while [`SledEngine::open`] runs.
    wal: Mutex<Option<Wal>>,
    /// sled's data file (`<dir>/db`), opened once, for a real `fsync`.
    data_file: File,
    /// Blob files already fsynced (see [`SledEngine::sync`]).
    synced_blobs: Mutex<HashSet<OsString>>,
    /// See [`Engine::io_time_limit`].
    io_time_limit: Duration,
}

impl fmt::Debug for SledEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledEngine").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// What a data directory held before opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Missing or empty: a new database will be created.
    Nothing,
    /// sled's `conf` and `db` files: an existing database.
    SledDatabase,
}

/// Classifies `dir` without modifying it.
fn inspect(dir: &Path) -> Result<Found, EngineError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(source) => {
            return Err(EngineError::Io {
                path: dir.to_path_buf(),
                action: "list the directory",
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| EngineError::Io {
            path: dir.to_path_buf(),
            action: "list the directory",
            source,
        })?;
        names.push(entry.file_name());
    }
    if names.is_empty() {
        return Ok(Found::Nothing);
    }
    let is_file = |name: &str| dir.join(name).is_file();
    if is_file("conf") && is_file("db") {
        return Ok(Found::SledDatabase);
    }
    names.sort();
    let mut found: Vec<String> =
        names.iter().take(5).map(|n| format!("{:?}", n.to_string_lossy())).collect();
    if names.len() > 5 {
        found.push(format!("and {} more", names.len() - 5));
    }
    Err(EngineError::NotADatabase { path: dir.to_path_buf(), found: found.join(", ") })
}

/// fsyncs a file or directory by path.
fn fsync_path(path: &Path, action: &'static str) -> Result<(), EngineError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|source| EngineError::Sync {
        path: path.to_path_buf(),
        action,
        source,
    })
}

/// How long [`open_sled`] keeps retrying while sled's file lock is held.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Whether sled failed because another handle holds its file lock.
fn is_lock_error(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e) if e.to_string().contains("could not acquire lock"))
}

/// Opens sled in `dir`, containing its panics and waiting out a lock held by
/// a previous instance that is still shutting down.
///
/// sled takes an exclusive `flock` on `<dir>/db` and releases it only when
/// the last of its internal handles is gone, which includes work queued on
/// sled's global background thread pool: right after a `Db` is dropped, a
/// reopen in the same process can briefly fail with "could not acquire
/// lock". That is retried for up to [`LOCK_WAIT`]; a lock still held after
/// that (another process) is reported.
fn open_sled(dir: &Path) -> Result<sled::Db, EngineError> {
    let config = sled::Config::new().path(dir);
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        // sled 0.34 has `unwrap`s and assertions on its recovery path; a
        // corrupt file must surface as an error, not take the process down.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        match opened {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(e)) if is_lock_error(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Ok(Err(source)) => return Err(EngineError::Open { path: dir.to_path_buf(), source }),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-text panic payload".to_string());
                return Err(EngineError::OpenPanicked { path: dir.to_path_buf(), message });
            }
        }
    }
}

impl SledEngine {
    /// Opens (or creates) the database in `dir`.
    ///
    /// - A missing or empty `dir` gets a new database, stamped with
    ///   [`FORMAT_MARKER`] and synced before this returns.
    /// - A `dir` holding anything but sled's files is refused
    ///   ([`EngineError::NotADatabase`]).
    /// - An existing database must carry [`FORMAT_MARKER`]; a missing marker
    ///   (for instance because sled discarded an unreadable data file and
    ///   started empty) or a different one is an error, never a silent reset.
    /// - sled's own failures, and its panics, are reported with `dir`.
    ///
    /// Blocks on disk I/O; call it at start-up or from `spawn_blocking`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, EngineError> {
        let dir = dir.as_ref().to_path_buf();
        let found = inspect(&dir)?;

        let db = open_sled(&dir)?;

        let open_tree = |tree: Tree| {
            db.open_tree(tree.name()).map_err(|source| EngineError::Sled {
                path: dir.clone(),
                tree: tree.name(),
                action: "open tree",
                source,
            })
        };
        let trees = [open_tree(Tree::Log)?, open_tree(Tree::Meta)?, open_tree(Tree::Snapshot)?];

        let data_path = dir.join("db");
        // Write access is not needed for fsync on Unix, but is on some other
        // platforms; opening without truncation changes nothing on disk.
        let data_file =
            OpenOptions::new().read(true).write(true).open(&data_path).map_err(|source| {
                EngineError::Io { path: data_path, action: "open the sled data file", source }
            })?;

        let engine = SledEngine {
            dir,
            db,
            trees,
            wal: Mutex::new(None),
            data_file,
            synced_blobs: Mutex::default(),
            io_time_limit: DEFAULT_IO_TIME_LIMIT,
        };
        engine.check_marker(found)?;
        Ok(engine)
    }

    /// Sets [`Engine::io_time_limit`] (at least 1 ms).
    pub fn with_io_time_limit(mut self, limit: Duration) -> Self {
        self.io_time_limit = limit.max(Duration::from_millis(1));
        self
    }

    /// Verifies (existing database) or writes (new database) the format
    /// marker, and opens, creates or migrates the Raft log's files.
    fn check_marker(&self, found: Found) -> Result<(), EngineError> {
        match self.get(Tree::Meta, FORMAT_KEY)? {
            Some(marker) if marker == FORMAT_MARKER => {
                if !self.dir.join(LOG_DIR).is_dir() {
                    return Err(EngineError::CorruptLog {
                        path: self.dir.join(LOG_DIR),
                        detail: "missing: the database is format 2, which keeps the Raft log \
                                 in this directory"
                            .into(),
                    });
                }
                self.set_wal(Wal::open(&self.dir)?);
                // Entries left in sled by a move to format 2 that stopped
                // after the marker was updated: the segment files have them.
                if self
                    .tree(Tree::Log)
                    .first()
                    .map_err(self.sled_err(Tree::Log, "first"))?
                    .is_some()
                {
                    self.clear_sled_log()?;
                }
                Ok(())
            }
            Some(marker) if marker == FORMAT_MARKER_V1 => self.move_log_out_of_sled(),
            Some(marker) => Err(EngineError::UnknownMarker {
                path: self.dir.clone(),
                found: String::from_utf8_lossy(&marker).into_owned(),
                expected: String::from_utf8_lossy(FORMAT_MARKER).into_owned(),
            }),
            None if found == Found::SledDatabase || self.has_any_data()? => {
                Err(EngineError::MissingMarker { path: self.dir.clone() })
            }
            None => {
                self.set_wal(Wal::create(&self.dir, Vec::new())?);
                self.insert(Tree::Meta, FORMAT_KEY, FORMAT_MARKER)?;
                // sled writes `conf` and creates its files without fsyncing
                // them or their directory; make the new database's skeleton
                // durable together with the marker.
                fsync_path(&self.dir.join("conf"), "creating the database")?;
                fsync_path(&self.dir.join("blobs"), "creating the database")?;
                self.sync()?;
                fsync_path(&self.dir, "creating the database")?;
                if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fsync_path(parent, "creating the database")?;
                }
                Ok(())
            }
        }
    }

    /// Format 1 -> 2: copies the log out of sled's `log` tree into new
    /// segment files, then updates the marker, then empties the tree.
    ///
    /// Crash-safe at every step: until the marker says 2, sled's tree is
    /// the log and a `log/` directory found next to a format-1 marker is a
    /// half-done copy, built again from scratch; once it says 2, the
    /// segment files are the log and entries left in sled are removed.
    fn move_log_out_of_sled(&self) -> Result<(), EngineError> {
        let mut entries = Vec::new();
        for item in self.tree(Tree::Log).iter() {
            let (key, value) = item.map_err(self.sled_err(Tree::Log, "scan"))?;
            entries.push((log_key(&self.dir, &key)?, value.to_vec()));
        }
        let log_dir = self.dir.join(LOG_DIR);
        match fs::remove_dir_all(&log_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(EngineError::Io {
                    path: log_dir,
                    action: "remove a half-built log directory",
                    source,
                })
            }
        }
        let moved = entries.len();
        self.set_wal(Wal::create(&self.dir, entries)?);
        self.insert(Tree::Meta, FORMAT_KEY, FORMAT_MARKER)?;
        self.sync()?;
        self.clear_sled_log()?;
        tracing::info!(
            dir = %self.dir.display(),
            entries = moved,
            "storage: moved the Raft log out of sled into its own segment files (format 2)"
        );
        Ok(())
    }

    /// Empties sled's format-1 `log` tree, durably.
    fn clear_sled_log(&self) -> Result<(), EngineError> {
        self.tree(Tree::Log).clear().map_err(self.sled_err(Tree::Log, "clear"))?;
        self.sync()
    }

    fn set_wal(&self, wal: Wal) {
        *self.wal.lock().unwrap_or_else(PoisonError::into_inner) = Some(wal);
    }

    /// Runs `f` on the log, under its lock.
    fn with_wal<T>(
        &self,
        f: impl FnOnce(&mut Wal) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut guard = self.wal.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(wal) => f(wal),
            None => Err(EngineError::CorruptLog {
                path: self.dir.join(LOG_DIR),
                detail: "used before it was opened".into(),
            }),
        }
    }

    /// fdatasyncs what was written to the log, outside its lock (readers
    /// are not held up by the disk), with the same test-only disk faults
    /// as [`Engine::sync`].
    fn sync_wal(&self) -> Result<(), EngineError> {
        let Some(handle) = self.with_wal(|wal| wal.sync_handle())? else {
            return Ok(());
        };
        crate::failpoint::fsync_hang(&self.dir);
        let result = match crate::failpoint::fsync_error(&self.dir) {
            Some(injected) => Err(injected),
            None => handle.file.sync_data(),
        };
        let failure = result.as_ref().err().map(ToString::to_string);
        self.with_wal(|wal| {
            wal.synced_upto(handle.upto, failure);
            Ok(())
        })?;
        result.map_err(|source| EngineError::Sync {
            path: self.dir.join(LOG_DIR),
            action: "fdatasync of the Raft log",
            source,
        })
    }

    /// Whether any tree (or sled's default tree) holds a key.
    fn has_any_data(&self) -> Result<bool, EngineError> {
        for tree in Tree::ALL {
            if self.tree(tree).first().map_err(self.sled_err(tree, "first"))?.is_some() {
                return Ok(true);
            }
        }
        Ok(!self.db.is_empty() || self.dir.join(LOG_DIR).exists())
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[tree.slot()]
    }

    fn sled_err(
        &self,
        tree: Tree,
        action: &'static str,
    ) -> impl FnOnce(sled::Error) -> EngineError {
        let path = self.dir.clone();
        move |source| EngineError::Sled { path, tree: tree.name(), action, source }
    }

    /// fsyncs every sled blob file not synced yet, and the blob directory.
    ///
    /// sled stores any page whose serialized form exceeds about an eighth of
    /// a megabyte (a large value, or a leaf full of medium ones) in its own
    /// file under `blobs/`, written with plain `write` and never synced.
    fn sync_blobs(&self) -> Result<(), EngineError> {
        let blob_dir = self.dir.join("blobs");
        let entries = match fs::read_dir(&blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(EngineError::Sync { path: blob_dir, action: "listing blobs", source })
            }
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut present = HashSet::new();
        let mut new_blob = false;
        for entry in entries {
            let entry = entry.map_err(|source| EngineError::Sync {
                path: blob_dir.clone(),
                action: "listing blobs",
                source,
            })?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                let path = entry.path();
                match File::open(&path).and_then(|f| f.sync_all()) {
                    Ok(()) => new_blob = true,
                    // sled garbage-collected it between listing and opening.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(EngineError::Sync { path, action: "syncing a blob", source })
                    }
                }
            }
            present.insert(name);
        }
        if new_blob {
            fsync_path(&blob_dir, "syncing the blob directory")?;
        }
        *synced = present;
        Ok(())
    }
}

/// The index a [`Tree::Log`] key encodes.
fn log_key(dir: &Path, key: &[u8]) -> Result<u64, EngineError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| EngineError::BadLogKey { path: dir.to_path_buf(), key: key.to_vec() })
}

/// `(start, end)` over [`Tree::Log`] keys as an inclusive index range, or
/// `None` when it holds no index.
fn log_range(
    dir: &Path,
    start: &Bound<Vec<u8>>,
    end: &Bound<Vec<u8>>,
) -> Result<Option<RangeInclusive<u64>>, EngineError> {
    let lo = match start {
        Bound::Included(k) => log_key(dir, k)?,
        Bound::Excluded(k) => match log_key(dir, k)?.checked_add(1) {
            Some(lo) => lo,
            None => return Ok(None),
        },
        Bound::Unbounded => 0,
    };
    let hi = match end {
        Bound::Included(k) => log_key(dir, k)?,
        Bound::Excluded(k) => match log_key(dir, k)?.checked_sub(1) {
            Some(hi) => hi,
            None => return Ok(None),
        },
        Bound::Unbounded => u64::MAX,
    };
    Ok((lo <= hi).then_some(lo..=hi))
}

fn log_pair((index, value): (u64, Vec<u8>)) -> KeyValue {
    (index.to_be_bytes().to_vec(), value)
}

/// Whether `(start, end)` cannot contain any key.
fn is_empty_range(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        _ => false,
    }
}

fn pair((k, v): (sled::IVec, sled::IVec)) -> KeyValue {
    (k.to_vec(), v.to_vec())
}

impl Engine for SledEngine {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if tree == Tree::Log {
            let Ok(index) = log_key(&self.dir, key) else { return Ok(None) };
            return self.with_wal(|wal| Ok(wal.get(index)));
        }
        let value = self.tree(tree).get(key).map_err(self.sled_err(tree, "get"))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        if tree == Tree::Log {
            let index = log_key(&self.dir, key)?;
            return self.with_wal(|wal| wal.write(vec![WalOp::Put(index, value.to_vec())]));
        }
        self.tree(tree).insert(key, value).map_err(self.sled_err(tree, "insert"))?;
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<(), EngineError> {
        if tree == Tree::Log {
            let Ok(index) = log_key(&self.dir, key) else { return Ok(()) };
            return self.with_wal(|wal| match wal.get(index) {
                Some(_) => wal.write(vec![WalOp::Remove(index..=index)]),
                None => Ok(()),
            });
        }
        self.tree(tree).remove(key).map_err(self.sled_err(tree, "remove"))?;
        Ok(())
    }

    fn range(
        &self,
        tree: Tree,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Result<Vec<KeyValue>, EngineError> {
        if is_empty_range(&start, &end) {
            return Ok(Vec::new());
        }
        if tree == Tree::Log {
            let Some(range) = log_range(&self.dir, &start, &end)? else { return Ok(Vec::new()) };
            return self.with_wal(|wal| Ok(wal.range(range).into_iter().map(log_pair).collect()));
        }
        self.tree(tree)
            .range::<Vec<u8>, _>((start, end))
            .map(|item| item.map(pair).map_err(self.sled_err(tree, "range scan")))
            .collect()
    }

    fn first(&self, tree: Tree) -> Result<Option<KeyValue>, EngineError> {
        if tree == Tree::Log {
            return self.with_wal(|wal| Ok(wal.first().map(log_pair)));
        }
        let first = self.tree(tree).first().map_err(self.sled_err(tree, "first"))?;
        Ok(first.map(pair))
    }

    fn last(&self, tree: Tree) -> Result<Option<KeyValue>, EngineError> {
        if tree == Tree::Log {
            return self.with_wal(|wal| Ok(wal.last().map(log_pair)));
        }
        let last = self.tree(tree).last().map_err(self.sled_err(tree, "last"))?;
        Ok(last.map(pair))
    }

    fn apply_batch(&self, tree: Tree, batch: WriteBatch) -> Result<(), EngineError> {
        if tree == Tree::Log {
            let mut ops = Vec::with_capacity(batch.ops.len());
            for op in batch.ops {
                ops.push(match op {
                    BatchOp::Insert(k, v) => WalOp::Put(log_key(&self.dir, &k)?, v),
                    BatchOp::Remove(k) => {
                        let index = log_key(&self.dir, &k)?;
                        WalOp::Remove(index..=index)
                    }
                });
            }
            // One frame: replay applies the batch whole or not at all.
            return self.with_wal(|wal| wal.write(ops));
        }
        let mut sled_batch = sled::Batch::default();
        for op in batch.ops {
            match op {
                BatchOp::Insert(k, v) => sled_batch.insert(k, v),
                BatchOp::Remove(k) => sled_batch.remove(k),
            }
        }
        self.tree(tree).apply_batch(sled_batch).map_err(self.sled_err(tree, "batch write"))
    }

    fn remove_range(
        &self,
        tree: Tree,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> Result<usize, EngineError> {
        if is_empty_range(&start, &end) {
            return Ok(0);
        }
        if tree == Tree::Log {
            let Some(range) = log_range(&self.dir, &start, &end)? else { return Ok(0) };
            return self.with_wal(|wal| {
                let count = wal.count(range.clone());
                if count > 0 {
                    wal.write(vec![WalOp::Remove(range)])?;
                }
                Ok(count)
            });
        }
        // sled has no range delete: collect the keys, then remove them in one
        // atomic batch so a crash never leaves a hole in the middle.
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for item in self.tree(tree).range::<Vec<u8>, _>((start, end)) {
            let (key, _) = item.map_err(self.sled_err(tree, "range scan"))?;
            batch.remove(key);
            count += 1;
        }
        if count > 0 {
            self.tree(tree).apply_batch(batch).map_err(self.sled_err(tree, "range delete"))?;
        }
        Ok(count)
    }

    fn io_time_limit(&self) -> Duration {
        self.io_time_limit
    }

    fn read_snapshot_file(&self) -> Result<Option<Vec<u8>>, EngineError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(EngineError::Io { path, action: "read the snapshot file", source }),
        }
    }

    /// Written to a temporary file, which is fsynced, then renamed over the
    /// old file, then the directory is fsynced (so the rename itself is
    /// durable). Rename is atomic on POSIX file systems: a reader, or a
    /// restart after a crash, sees the whole old file or the whole new one.
    /// A leftover temporary file from a crash is simply overwritten.
    fn replace_snapshot_file(&self, parts: &[&[u8]]) -> Result<(), EngineError> {
        use std::io::Write;
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let io_err = |action: &'static str| {
            let path = tmp.clone();
            move |source| EngineError::Sync { path, action, source }
        };
        let mut file = File::create(&tmp).map_err(io_err("creating the new snapshot file"))?;
        // Synced as it goes, every SNAPSHOT_SYNC_EVERY bytes: a hundred
        // megabytes of dirty pages flushed in one go at the end held the
        // disk long enough to stall the log's own fsyncs behind it (a
        // 350 ms write on the leader in `bench --scale`; 113 ms after); small steps let
        // them interleave.
        let mut unsynced = 0usize;
        for part in parts {
            for chunk in part.chunks(SNAPSHOT_SYNC_EVERY) {
                file.write_all(chunk).map_err(io_err("writing the new snapshot file"))?;
                unsynced += chunk.len();
                if unsynced >= SNAPSHOT_SYNC_EVERY {
                    file.sync_data().map_err(io_err("fsyncing the new snapshot file"))?;
                    unsynced = 0;
                }
            }
        }
        // The same disk faults as the database's own fsync (tests only).
        crate::failpoint::fsync_hang(&self.dir);
        if let Some(source) = crate::failpoint::fsync_error(&self.dir) {
            return Err(io_err("fsyncing the new snapshot file (failpoint)")(source));
        }
        file.sync_all().map_err(io_err("fsyncing the new snapshot file"))?;
        drop(file);
        fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE))
            .map_err(io_err("renaming the new snapshot file into place"))?;
        fsync_path(&self.dir, "fsyncing the data directory after renaming the snapshot file")
    }

    /// The Raft log alone: one `fdatasync` of its current segment (see
    /// [`crate::wal`]); sled is not flushed.
    fn sync_log(&self) -> Result<(), EngineError> {
        self.sync_wal()
    }

    /// fdatasyncs the Raft log ([`Engine::sync_log`]), then flushes sled,
    /// then fsyncs its blob files and its data file.
    ///
    /// `sled::Db::flush` alone is NOT durable on Linux: sled 0.34 writes its
    /// log with `pwrite` + `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`,
    /// which pushes the pages to the device but neither flushes the drive's
    /// volatile write cache nor persists file metadata (size, extents), so a
    /// power loss can still lose "flushed" writes. `File::sync_all` is a
    /// real `fsync(2)`: fsync applies to the inode, not to the descriptor,
    /// so syncing our own descriptor of `<dir>/db` persists everything sled
    /// wrote through its descriptor, issues a cache flush, and persists the
    /// metadata. sled never replaces or renames `db`, so the descriptor
    /// opened at start-up stays valid. Blob files (large pages) are fsynced
    /// first, since the log refers to them.
    fn sync(&self) -> Result<(), EngineError> {
        self.sync_wal()?;
        self.db.flush().map_err(|e| EngineError::Sync {
            path: self.dir.clone(),
            action: "flushing sled's buffers",
            source: io::Error::other(e),
        })?;
        self.sync_blobs()?;
        crate::failpoint::fsync_hang(&self.dir);
        if let Some(source) = crate::failpoint::fsync_error(&self.dir) {
            return Err(EngineError::Sync {
                path: self.dir.join("db"),
                action: "fsyncing sled's data file (failpoint)",
                source,
            });
        }
        self.data_file.sync_all().map_err(|source| EngineError::Sync {
            path: self.dir.join("db"),
            action: "fsyncing sled's data file",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    #[test]
    fn basic_operations_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = SledEngine::open(dir.path()).unwrap();
            let mut batch = WriteBatch::new();
            for n in 1..=10 {
                batch.insert(key(n), format!("v{n}").into_bytes());
            }
            engine.apply_batch(Tree::Log, batch).unwrap();
            engine.insert(Tree::Meta, b"k", b"v").unwrap();

            assert_eq!(engine.get(Tree::Meta, b"k").unwrap(), Some(b"v".to_vec()));
            assert_eq!(engine.get(Tree::Log, b"k").unwrap(), None, "trees are separate");
            assert_eq!(engine.first(Tree::Log).unwrap().unwrap().0, key(1));
            assert_eq!(engine.last(Tree::Log).unwrap().unwrap().0, key(10));

            let got =
                engine.range(Tree::Log, Bound::Included(key(3)), Bound::Excluded(key(6))).unwrap();
            let keys: Vec<_> = got.into_iter().map(|(k, _)| k).collect();
            assert_eq!(keys, vec![key(3), key(4), key(5)]);
            assert!(engine
                .range(Tree::Log, Bound::Included(key(6)), Bound::Excluded(key(3)))
                .unwrap()
                .is_empty());

            let n = engine.remove_range(Tree::Log, Bound::Included(key(8)), Bound::Unbounded);
            assert_eq!(n.unwrap(), 3);
            engine.remove(Tree::Log, &key(1)).unwrap();
            engine.sync().unwrap();
        }
        let engine = SledEngine::open(dir.path()).unwrap();
        assert_eq!(engine.first(Tree::Log).unwrap().unwrap().0, key(2));
        assert_eq!(engine.last(Tree::Log).unwrap().unwrap().0, key(7));
        assert_eq!(engine.get(Tree::Meta, FORMAT_KEY).unwrap(), Some(FORMAT_MARKER.to_vec()));
    }

    #[test]
    fn large_values_are_synced_as_blobs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = SledEngine::open(dir.path()).unwrap();
            let big = vec![7u8; 1 << 20];
            engine.insert(Tree::Snapshot, b"big", &big).unwrap();
            engine.sync().unwrap();
            let synced = engine.synced_blobs.lock().unwrap().len();
            assert!(synced >= 1, "a 1 MiB value should live in a blob file");
        }
        let engine = SledEngine::open(dir.path()).unwrap();
        assert_eq!(engine.get(Tree::Snapshot, b"big").unwrap().map(|v| v.len()), Some(1 << 20));
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn the_fsync_failpoint_fails_sync_with_eio_while_its_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(dir.path()).unwrap();
        engine.insert(Tree::Meta, b"k", b"v").unwrap();
        let file = dir.path().join(crate::failpoint::FSYNC_EIO_FILE);
        std::fs::write(&file, b"").unwrap();
        match engine.sync() {
            Err(EngineError::Sync { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EIO), "{source}")
            }
            other => panic!("expected an EIO sync error, got {other:?}"),
        }
        std::fs::remove_file(&file).unwrap();
        engine.sync().unwrap();
    }

    #[test]
    fn unknown_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = SledEngine::open(dir.path()).unwrap();
            engine.insert(Tree::Meta, FORMAT_KEY, b"someone-else/9").unwrap();
            engine.sync().unwrap();
        }
        match SledEngine::open(dir.path()) {
            Err(EngineError::UnknownMarker { path, found, .. }) => {
                assert_eq!(path, dir.path());
                assert_eq!(found, "someone-else/9");
            }
            other => panic!("expected UnknownMarker, got {other:?}"),
        }
    }

    #[test]
    fn missing_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = SledEngine::open(dir.path()).unwrap();
            engine.remove(Tree::Meta, FORMAT_KEY).unwrap();
            engine.sync().unwrap();
        }
        let err = SledEngine::open(dir.path()).unwrap_err();
        assert!(matches!(err, EngineError::MissingMarker { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }

    /// A format-1 database (the log in sled's `log` tree), written with
    /// sled directly, as an older build left it.
    fn format_1_database(dir: &Path, entries: &[(u64, &[u8])]) {
        let db = sled::Config::new().path(dir).open().unwrap();
        db.open_tree("meta").unwrap().insert(FORMAT_KEY, FORMAT_MARKER_V1).unwrap();
        db.open_tree("meta").unwrap().insert(b"vote", b"v").unwrap();
        let log = db.open_tree("log").unwrap();
        for (index, value) in entries {
            log.insert(key(*index), *value).unwrap();
        }
        db.flush().unwrap();
    }

    #[test]
    fn a_format_1_database_has_its_log_moved_to_segment_files() {
        let dir = tempfile::tempdir().unwrap();
        format_1_database(dir.path(), &[(5, b"five"), (6, b"six"), (7, b"seven")]);
        {
            let engine = SledEngine::open(dir.path()).unwrap();
            assert_eq!(engine.get(Tree::Meta, FORMAT_KEY).unwrap(), Some(FORMAT_MARKER.to_vec()));
            assert_eq!(engine.get(Tree::Meta, b"vote").unwrap(), Some(b"v".to_vec()));
            let log = engine.range(Tree::Log, Bound::Unbounded, Bound::Unbounded).unwrap();
            assert_eq!(
                log,
                vec![
                    (key(5), b"five".to_vec()),
                    (key(6), b"six".to_vec()),
                    (key(7), b"seven".to_vec())
                ]
            );
            assert!(engine.tree(Tree::Log).is_empty(), "sled's log tree is emptied");
            assert!(dir.path().join(LOG_DIR).is_dir());
            engine.insert(Tree::Log, &key(8), b"eight").unwrap();
            engine.sync_log().unwrap();
        }
        let engine = SledEngine::open(dir.path()).unwrap();
        assert_eq!(engine.first(Tree::Log).unwrap().unwrap().0, key(5));
        assert_eq!(engine.last(Tree::Log).unwrap(), Some((key(8), b"eight".to_vec())));
    }

    #[test]
    fn a_move_to_format_2_cut_short_is_done_again() {
        let dir = tempfile::tempdir().unwrap();
        format_1_database(dir.path(), &[(1, b"one"), (2, b"two")]);
        // A crash after the log directory was renamed into place but before
        // the marker said 2: whatever `log/` holds, sled's tree is the log.
        std::fs::create_dir(dir.path().join(LOG_DIR)).unwrap();
        std::fs::write(dir.path().join(LOG_DIR).join("00000000000000000001.seg"), b"junk").unwrap();
        let engine = SledEngine::open(dir.path()).unwrap();
        let log = engine.range(Tree::Log, Bound::Unbounded, Bound::Unbounded).unwrap();
        assert_eq!(log, vec![(key(1), b"one".to_vec()), (key(2), b"two".to_vec())]);
    }

    #[test]
    fn a_format_2_database_without_its_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledEngine::open(dir.path()).unwrap());
        std::fs::remove_dir_all(dir.path().join(LOG_DIR)).unwrap();
        let err = SledEngine::open(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EngineError::CorruptLog { .. }), "{text}");
        assert!(text.contains("missing") && text.contains("refusing to start"), "{text}");
    }

    #[test]
    fn the_log_tree_takes_only_index_keys() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(dir.path()).unwrap();
        let err = engine.insert(Tree::Log, b"k", b"v").unwrap_err();
        assert!(matches!(err, EngineError::BadLogKey { .. }), "{err}");
        assert_eq!(engine.get(Tree::Log, b"k").unwrap(), None);
        assert_eq!(
            engine
                .remove_range(Tree::Log, Bound::Excluded(key(u64::MAX)), Bound::Unbounded)
                .unwrap(),
            0
        );
    }

    /// What one durable append costs, and how its tail looks: 3 000 appends
    /// of one ~300-byte entry, each `apply_batch` + `sync_log`, like the Raft
    /// log's `append` with one client. Prints percentiles; a figure, not a
    /// pass/fail (run with `--ignored --nocapture`, in release mode).
    #[test]
    #[ignore = "a timing"]
    fn append_sync_latency() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(dir.path()).unwrap();
        let mut lat = Vec::new();
        let started = Instant::now();
        for n in 0..3_000u64 {
            let mut batch = WriteBatch::new();
            batch.insert(key(n), vec![7u8; 300]);
            let t = Instant::now();
            engine.apply_batch(Tree::Log, batch).unwrap();
            engine.sync_log().unwrap();
            lat.push(t.elapsed().as_micros() as u64);
        }
        let total = started.elapsed();
        lat.sort_unstable();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
        println!(
            "append+sync: {:.0}/s p50 {} us p90 {} us p99 {} us p99.9 {} us max {} us",
            lat.len() as f64 / total.as_secs_f64(),
            p(0.5),
            p(0.9),
            p(0.99),
            p(0.999),
            lat[lat.len() - 1]
        );
    }
}
