//! The `switchboard-jepsen powerfs` process: mounts a [`PowerFs`] and waits
//! for the power to be cut.
//!
//! Owns: mounting (fuser, direct `mount(2)` as root — no `fusermount3`
//! needed), the SIGUSR1 handler thread that cuts the power, and the cut
//! report file the harness waits for.
//!
//! Protocol with the harness ([`super::control`]): the daemon runs until the
//! mount point is unmounted. SIGUSR1 = power loss: the file system is armed
//! to lose power right after the next write request it takes in (the worst
//! moment: data acknowledged to the writer, not synced), or after
//! [`ARM_WINDOW`] if nothing is written; every unsynced byte is dropped,
//! every later request fails with EIO, and the line
//! `files=<n> bytes=<n> on_write=<bool>` is written to the report file
//! (written to a temporary name and renamed, so the harness never reads
//! half of it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fuser::{Config, MountOption};

use super::fs::PowerFs;

/// How long an armed cut waits for a write before cutting anyway.
pub const ARM_WINDOW: Duration = Duration::from_millis(300);

/// What to mount.
#[derive(Debug, Clone)]
pub struct DaemonArgs {
    /// The backing directory ("the disk").
    pub backing: PathBuf,
    /// Where to mount it.
    pub mount: PathBuf,
    /// Where to write the cut report.
    pub report: PathBuf,
    /// Torn power cuts, with this seed (see [`PowerFs::new`]).
    pub torn_seed: Option<u64>,
}

/// The mount options every power-loss mount uses.
pub fn mount_config() -> Config {
    let mut cfg = Config::default();
    cfg.mount_options = vec![MountOption::FSName("powerfs".into()), MountOption::NoAtime];
    cfg
}

fn write_report(path: &Path, line: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, line)?;
    std::fs::rename(&tmp, path)
}

/// Block SIGUSR1 in this thread (and so in every thread it starts) and
/// handle it on a thread of its own with `sigwait`.
fn spawn_cut_handler(fs: PowerFs, report: PathBuf) -> Result<()> {
    // SAFETY: plain signal-mask calls on a sigset_t we own.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if r != 0 {
            bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(r));
        }
        set
    };
    std::thread::Builder::new()
        .name("powerfs-cut".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: sigwait on a valid set, writing into a local.
            let r = unsafe { libc::sigwait(&set, &mut sig) };
            if r == 0 && sig == libc::SIGUSR1 {
                fs.arm();
                let deadline = Instant::now() + ARM_WINDOW;
                let cut = loop {
                    if let Some(cut) = fs.cut_report() {
                        break cut;
                    }
                    if Instant::now() > deadline {
                        break fs.power_cut();
                    }
                    std::thread::sleep(Duration::from_millis(1));
                };
                let line = format!(
                    "files={} bytes={} on_write={} written_back={}\n",
                    cut.files, cut.bytes, cut.on_write, cut.written_back
                );
                eprintln!(
                    "powerfs {}: power cut{}: {} unsynced bytes in {} files, {} of them torn \
                     onto the disk",
                    fs.root().display(),
                    if cut.on_write { " right after a write" } else { "" },
                    cut.bytes,
                    cut.files,
                    cut.written_back
                );
                if let Err(e) = write_report(&report, &line) {
                    eprintln!("powerfs: cannot write {}: {e}", report.display());
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Mount and serve until unmounted.
pub fn serve(args: &DaemonArgs) -> Result<()> {
    if !args.backing.is_dir() {
        return Err(anyhow!("backing directory {} does not exist", args.backing.display()));
    }
    std::fs::create_dir_all(&args.mount)
        .with_context(|| format!("creating mount point {}", args.mount.display()))?;
    let _ = std::fs::remove_file(&args.report);
    let fs = PowerFs::new(args.backing.clone(), args.torn_seed);
    spawn_cut_handler(fs.clone(), args.report.clone())?;
    eprintln!("powerfs: serving {} at {}", args.backing.display(), args.mount.display());
    fuser::mount(fs, &args.mount, &mount_config())
        .with_context(|| format!("mounting {} (needs root and /dev/fuse)", args.mount.display()))?;
    eprintln!("powerfs: {} unmounted", args.mount.display());
    Ok(())
}
