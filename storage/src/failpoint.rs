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

use std::io;
use std::path::Path;

/// The file whose presence in a data directory makes its fsyncs fail with `EIO`.
pub const FSYNC_EIO_FILE: &str = "failpoint-fsync-eio";

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
