//! A power-loss mount inside the current process, for tests of other
//! crates' storage on [`PowerFs`] (root with /dev/fuse only).
//!
//! Owns: [`LocalMount`] — mounted on creation, unmounted on drop — and
//! [`can_mount`].

use std::io;
use std::path::Path;

use super::daemon::mount_config;
use super::fs::PowerFs;

/// Whether this process can mount FUSE file systems (root, /dev/fuse).
pub fn can_mount() -> bool {
    crate::cluster::is_root() && Path::new("/dev/fuse").exists()
}

/// A [`PowerFs`] over `backing`, mounted at a directory until dropped.
#[derive(Debug)]
pub struct LocalMount {
    fs: PowerFs,
    mountpoint: std::path::PathBuf,
    /// The FUSE connection's number (the mount's device minor), for
    /// aborting it through fusectl.
    connection: u32,
    session: Option<fuser::BackgroundSession>,
}

const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Mount fusectl (the FUSE connections' control files) if it is not.
fn ensure_fusectl() -> io::Result<()> {
    if super::control::is_mounted(Path::new(FUSECTL)) {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).map_err(io::Error::other);
    let (src, target, kind) = (c("fusectl")?, c(FUSECTL)?, c("fusectl")?);
    // SAFETY: mount(2) with valid NUL-terminated strings and no data.
    let r =
        unsafe { libc::mount(src.as_ptr(), target.as_ptr(), kind.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl LocalMount {
    /// Mount `backing` (created if missing) at `mountpoint` (created if missing).
    pub fn new(backing: &Path, mountpoint: &Path) -> io::Result<LocalMount> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let fs = PowerFs::new(backing.canonicalize()?, None);
        let mountpoint = mountpoint.canonicalize()?;
        ensure_fusectl()?;
        let session = fuser::spawn_mount(fs.clone(), &mountpoint, &mount_config())?;
        let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(&mountpoint)?);
        let connection = libc::minor(dev);
        Ok(LocalMount { fs, mountpoint, connection, session: Some(session) })
    }

    /// The file system, to cut its power or arm a cut.
    pub fn fs(&self) -> &PowerFs {
        &self.fs
    }

    /// Detach the mount and abort its connection: every request on files
    /// still open fails at once. Call it before a process that serves the
    /// mount itself exits, or closing those files at exit would wait for
    /// a server that is gone.
    pub fn abort(&self) {
        let _ = super::control::unmount(&self.mountpoint);
        let _ = std::fs::write(format!("{FUSECTL}/{}/abort", self.connection), "1");
    }
}

impl Drop for LocalMount {
    /// Detaches the mount and aborts its connection. A test that simulates
    /// a crash leaves files open (it forgets the storage that had them);
    /// they would keep the connection alive, and closing them at process
    /// exit would wait on a server thread that is already gone. Aborted,
    /// every request on them fails at once and the serving thread ends.
    fn drop(&mut self) {
        self.abort();
        drop(self.session.take());
    }
}
