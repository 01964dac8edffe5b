//! A power-loss file system for the `power` nemesis: nodes' data
//! directories live on a FUSE mount that passes through to a backing
//! directory, except that file data not yet fsynced is held only in the
//! daemon's memory and is dropped when the power is cut.
//!
//! - [`overlay`]: the per-file dirty-page overlay (pure; unit-tested).
//! - [`fs`]: the FUSE file system over the overlays; what is durable when.
//! - [`daemon`]: the `switchboard-jepsen powerfs` process (mount, SIGUSR1).
//! - [`control`]: the harness's handle on a mount (start, cut, stop).
//! - [`local`]: a mount inside the current process, for other crates' tests.

pub mod control;
pub mod daemon;
pub mod fs;
pub mod local;
pub mod overlay;

#[cfg(test)]
mod mount_test;
