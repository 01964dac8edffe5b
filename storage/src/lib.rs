//! Switchboard's replicated core: the pure state machine and its durable
//! openraft storage.
//!
//! # Layout
//!
//! - [`state`]: the replicated state and [`state::apply()`]. Pure: no I/O, no
//!   clock, no randomness; everything else builds on it.
//! - [`codec`]: the one value encoding (a version byte + bincode) for
//!   everything persisted or sent as a snapshot.
//! - [`engine`]: a small key-value [`engine::Engine`] trait (named trees,
//!   atomic batches, an explicit durable `sync`) and its sled implementation,
//!   which also validates a node's data directory.
//! - [`wal`]: the Raft log's own segment files, behind the engine's `log`
//!   tree (sled keeps the other trees).
//! - [`log_store`]: the Raft log, vote and committed/purged pointers
//!   (openraft `RaftLogStorage` + `RaftLogReader`).
//! - [`sm_store`]: the applied state in memory, persisted as snapshots
//!   (openraft `RaftStateMachine` + `RaftSnapshotBuilder`), and
//!   [`sm_store::StateReader`] for local reads.
//! - [`feed`]: recent events of applied entries, for watchers to resume from.
//! - [`types`]: the openraft type configuration and aliases.
//! - [`failpoint`]: test-only fault injection (an fsync failing with `EIO`
//!   or hanging, a committed log id rolled back as by a power loss),
//!   compiled in only with the `failpoints` feature.
//!
//! A node keeps one database (one data directory) for both stores; [`open`]
//! opens it.

#![deny(missing_docs)]

pub mod codec;
pub mod engine;
pub mod failpoint;
mod failure;
pub mod feed;
pub mod log_store;
pub mod sm_store;
pub mod state;
pub mod types;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use log_store::{LogReader, LogStore};
pub use sm_store::{SnapshotBuilder, StateMachineStore, StateReader};
pub use types::TypeConfig;

use codec::CodecError;
use engine::{EngineError, SharedEngine, SledEngine};

/// Why a node's storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory or the database in it is unusable.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A stored value does not decode (the message names the value and the
    /// directory).
    #[error("{what} is unreadable: {source}")]
    Corrupt {
        /// Which value, and where.
        what: String,
        /// Why it does not decode.
        #[source]
        source: CodecError,
    },
    /// Stored values decode but contradict each other.
    #[error("data directory {path}: {detail}")]
    Inconsistent {
        /// The data directory.
        path: PathBuf,
        /// What does not fit.
        detail: String,
    },
}

/// Opens (or creates) the node's database in `dir` and both Raft stores on
/// it. Blocks on disk I/O: call it at start-up (or from `spawn_blocking`).
pub fn open(dir: impl AsRef<Path>) -> Result<(LogStore, StateMachineStore), OpenError> {
    open_with(dir, engine::DEFAULT_IO_TIME_LIMIT)
}

/// [`open`], with the time limit for each storage call once running (see
/// [`engine::Engine::io_time_limit`]).
pub fn open_with(
    dir: impl AsRef<Path>,
    io_time_limit: Duration,
) -> Result<(LogStore, StateMachineStore), OpenError> {
    let engine = SledEngine::open(dir)?.with_io_time_limit(io_time_limit);
    let engine: SharedEngine = Arc::new(engine);
    let log = LogStore::open(Arc::clone(&engine))?;
    let sm = StateMachineStore::open(engine)?;
    Ok((log, sm))
}
