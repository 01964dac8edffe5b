//! Test-only fault injection in the storage engine (the node crate's
//! `failpoint` module has the others).
//!
//! Compiled in only with the cargo feature `failpoints` (the node crate's
//! `failpoints` feature turns it on); without it every check is a constant
//! "no fault", so a production build cannot be switched into a faulty mode.
//!
//! - [`FSYNC_EIO_FILE`]: while a file of that name exists in a node's data
//!   directory, [`crate::engine::Engine::sync`] fails where it would fsync
//!   sled's data file, with `EIO`, as a failing disk makes `fsync(2)` do.
//!   The writes before it have reached sled (and may be read back), but are
//!   reported as not durable — exactly what the stores must never ack.
//! - [`FSYNC_HANG_FILE`]: while a file of that name exists, `sync` blocks at
//!   the same place (a disk that stopped answering, or sled stuck after an
//!   I/O error); the stores' time limit must turn that into an error.
//! - `roll_back_committed`: rewrites a stopped node's database as a power
//!   loss may leave it — with an older committed log id, which the log
//!   store writes without syncing. Only with the feature (there is no
//!   no-op version: nothing but a test may call it).

use std::io;
use std::path::Path;

#[cfg(feature = "failpoints")]
use crate::OpenError;

/// The file whose presence in a data directory makes its fsyncs fail with `EIO`.
pub const FSYNC_EIO_FILE: &str = "failpoint-fsync-eio";

/// The file whose presence in a data directory makes its fsyncs block.
pub const FSYNC_HANG_FILE: &str = "failpoint-fsync-hang";

/// Block while [`FSYNC_HANG_FILE`] exists in `dir` (for ten minutes at most,
/// so a forgotten file cannot hold a test thread for ever).
#[cfg(feature = "failpoints")]
pub(crate) fn fsync_hang(dir: &Path) {
    let file = dir.join(FSYNC_HANG_FILE);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while file.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Block while the hang file exists: never.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn fsync_hang(_dir: &Path) {}

/// The error an fsync in `dir` must return instead of syncing, if any.
#[cfg(feature = "failpoints")]
pub(crate) fn fsync_error(dir: &Path) -> Option<io::Error> {
    dir.join(FSYNC_EIO_FILE).exists().then(|| io::Error::from_raw_os_error(libc::EIO))
}

/// The error an fsync in `dir` must return instead of syncing: never.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn fsync_error(_dir: &Path) -> Option<io::Error> {
    None
}

/// Lowers the committed log id persisted in the (closed) database in `dir`
/// to that of its log entry at `index`, if it is above it, as a power loss
/// may (see [`crate::LogStore`]'s `save_committed`); returns the committed
/// index left on disk. At the next start the node re-applies its log only
/// up to there.
#[cfg(feature = "failpoints")]
pub fn roll_back_committed(dir: &Path, index: u64) -> Result<Option<u64>, OpenError> {
    let engine = crate::engine::SledEngine::open(dir)?;
    crate::log_store::roll_back_committed(&engine, index)
        .map_err(|failure| failure.into_open_error(&engine))
}
