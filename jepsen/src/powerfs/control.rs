//! The harness's side of a power-loss mount: start the daemon, cut the
//! power, unmount.
//!
//! Owns: [`PowerMount`] (one `switchboard-jepsen powerfs` child process per
//! node data directory), waiting for the mount to appear, the power cut
//! (SIGUSR1, then the daemon's report), and unmounting (a lazy `umount2`,
//! so a killed node's stale handles never block it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::fs::CutReport;

/// Whether the power-loss file system can be mounted here.
pub fn supported() -> Result<()> {
    if !crate::cluster::is_root() {
        bail!("the power nemesis mounts a FUSE file system and needs root");
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("the power nemesis needs /dev/fuse");
    }
    Ok(())
}

/// Whether `path` is a mount point right now (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Lazily unmount `path` (root only); not mounted is fine.
pub fn unmount(path: &Path) -> Result<()> {
    if !is_mounted(path) {
        return Ok(());
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| anyhow!("bad path {}", path.display()))?;
    // SAFETY: umount2 with a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        bail!("umount {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

fn parse_report(text: &str) -> Option<CutReport> {
    let mut r = CutReport::default();
    for part in text.split_whitespace() {
        let (k, v) = part.split_once('=')?;
        match k {
            "files" => r.files = v.parse().ok()?,
            "bytes" => r.bytes = v.parse().ok()?,
            "on_write" => r.on_write = v.parse().ok()?,
            "written_back" => r.written_back = v.parse().ok()?,
            _ => {}
        }
    }
    Some(r)
}

/// One mounted power-loss file system and its daemon.
#[derive(Debug)]
pub struct PowerMount {
    mountpoint: PathBuf,
    report: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl PowerMount {
    /// Start `exe powerfs` over `backing` at `mountpoint`, logging to `log`,
    /// and wait (up to 10 s) until the mount is there. With `torn_seed` its
    /// power cuts are torn (see [`super::fs::PowerFs::new`]).
    pub fn start(
        exe: &Path,
        backing: &Path,
        mountpoint: &Path,
        log: &Path,
        torn_seed: Option<u64>,
    ) -> Result<PowerMount> {
        fs::create_dir_all(backing).with_context(|| format!("creating {}", backing.display()))?;
        fs::create_dir_all(mountpoint)
            .with_context(|| format!("creating {}", mountpoint.display()))?;
        let mountpoint = mountpoint.canonicalize()?;
        let backing = backing.canonicalize()?;
        unmount(&mountpoint)?;
        let report = mountpoint.with_extension("cut");
        let _ = fs::remove_file(&report);
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("powerfs")
            .arg("--backing")
            .arg(&backing)
            .arg("--mount")
            .arg(&mountpoint)
            .arg("--report")
            .arg(&report);
        if let Some(seed) = torn_seed {
            command.arg("--torn-seed").arg(seed.to_string());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} powerfs", exe.display()))?;
        let mut m = PowerMount { mountpoint, report, log: log.to_path_buf(), child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&m.mountpoint) {
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    m.child = None;
                    bail!(
                        "powerfs daemon for {} exited ({status}); see {}",
                        m.mountpoint.display(),
                        m.log.display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("{} not mounted after 10 s; see {}", m.mountpoint.display(), m.log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Send the power-cut signal (returns at once; see [`PowerMount::wait_cut`]).
    pub fn send_cut(&self) -> Result<()> {
        let Some(c) = self.child.as_ref() else { bail!("powerfs daemon is not running") };
        // SAFETY: kill(2) on our own child's pid.
        if unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGUSR1) } != 0 {
            bail!("signalling the powerfs daemon: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait (up to 5 s) for the daemon's cut report (it cuts within
    /// [`super::daemon::ARM_WINDOW`] of the signal).
    pub fn wait_cut(&self) -> Result<CutReport> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = fs::read_to_string(&self.report) {
                let _ = fs::remove_file(&self.report);
                return parse_report(&text)
                    .ok_or_else(|| anyhow!("bad cut report {text:?} from {}", self.log.display()));
            }
            if Instant::now() > deadline {
                bail!("no power-cut report from the daemon of {}", self.mountpoint.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Unmount and wait (up to 5 s) for the daemon to exit, killing it after.
    pub fn stop(&mut self) -> Result<()> {
        let r = unmount(&self.mountpoint);
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        r
    }
}

impl Drop for PowerMount {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_reports_parse() {
        assert_eq!(
            parse_report("files=3 bytes=8192\n"),
            Some(CutReport { files: 3, bytes: 8192, written_back: 0, on_write: false })
        );
        assert_eq!(
            parse_report("files=1 bytes=4096 on_write=true written_back=100"),
            Some(CutReport { files: 1, bytes: 4096, written_back: 100, on_write: true })
        );
        assert_eq!(parse_report("files=x"), None);
    }
}
