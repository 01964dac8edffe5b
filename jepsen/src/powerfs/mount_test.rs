//! A real mount of [`PowerFs`] (root with /dev/fuse only; skipped with a
//! message otherwise): the kernel path — direct I/O, fsync forwarding,
//! sync_file_range not forwarded — behaves as the overlay tests promise.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use super::daemon::mount_config;
use super::fs::PowerFs;

fn can_mount() -> bool {
    if !crate::cluster::is_root() || !std::path::Path::new("/dev/fuse").exists() {
        println!("SKIPPED powerfs mount test: needs root and /dev/fuse");
        return false;
    }
    true
}

/// A mounted [`PowerFs`] in a temporary directory: its backing directory
/// ("the disk"), its mount point, and the session (unmounts when dropped).
struct Mounted {
    backing: PathBuf,
    mnt: PathBuf,
    pfs: PowerFs,
    session: fuser::BackgroundSession,
    _dir: tempfile::TempDir,
}

fn mount(torn_seed: Option<u64>) -> Mounted {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk");
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(&backing).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let pfs = PowerFs::new(backing.clone(), torn_seed);
    let session = fuser::spawn_mount(pfs.clone(), &mnt, &mount_config()).unwrap();
    Mounted { backing, mnt, pfs, session, _dir: dir }
}

#[test]
fn mounted_fs_keeps_only_fsynced_data_across_a_power_cut() {
    if !can_mount() {
        return;
    }
    let Mounted { backing, mnt, pfs, session, _dir } = mount(None);

    fs::create_dir(mnt.join("data")).unwrap();
    let path = mnt.join("data/db");
    let mut f = OpenOptions::new().create_new(true).read(true).write(true).open(&path).unwrap();
    f.write_all(b"acknowledged").unwrap();
    f.sync_all().unwrap();
    assert_eq!(fs::read(backing.join("data/db")).unwrap(), b"acknowledged");

    // Unsynced: visible through the mount, not on the disk.
    f.write_all(b" and then some").unwrap();
    // sync_file_range is what sled uses: FUSE does not forward it.
    // SAFETY: a valid fd; flags as sled uses them.
    let r = unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            0,
            0,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    assert_eq!(r, 0);
    let mut seen = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "acknowledged and then some");
    assert_eq!(fs::metadata(&path).unwrap().len(), 26);
    assert_eq!(fs::read(backing.join("data/db")).unwrap(), b"acknowledged");
    assert!(pfs.dirty_bytes() > 0);

    // A file created and written but never fsynced.
    fs::write(mnt.join("data/new"), b"never synced").unwrap();

    // Armed: the cut happens right after the next write, which succeeds
    // (it reached the "page cache") and is lost with the rest.
    pfs.arm();
    f.write_all(b"!").unwrap();
    let cut = pfs.cut_report().expect("the write cut the power");
    assert!(cut.on_write);
    assert_eq!(cut.files, 2, "{cut:?}");
    assert_eq!(pfs.power_cut(), cut, "a second cut changes nothing");
    assert!(f.write_all(b"x").is_err(), "a powered-off disk takes no writes");
    assert!(f.sync_all().is_err());
    drop(f);
    drop(session);

    assert_eq!(fs::read(backing.join("data/db")).unwrap(), b"acknowledged");
    assert_eq!(fs::read(backing.join("data/new")).unwrap(), b"", "metadata durable, data not");
}

/// A torn cut through the kernel path: of an unsynced write over several
/// pages, some reached the disk and some did not, page by page, and the
/// synced bytes are never touched.
#[test]
fn mounted_fs_tears_a_cut_page_by_page() {
    if !can_mount() {
        return;
    }
    // Seed 5 keeps some of the 16 pages and drops others (checked below).
    let Mounted { backing, mnt, pfs, session, _dir } = mount(Some(5));
    let path = mnt.join("log");
    let mut f = OpenOptions::new().create_new(true).read(true).write(true).open(&path).unwrap();
    f.write_all(&[1u8; 100]).unwrap();
    f.sync_all().unwrap();
    let page = super::overlay::PAGE as usize;
    f.write_all(&[2u8; 16 * 4096 - 100]).unwrap();
    let cut = pfs.power_cut();
    drop(f);
    drop(session);
    assert_eq!(cut.files, 1, "{cut:?}");
    let disk = fs::read(backing.join("log")).unwrap();
    assert_eq!(&disk[..100], &[1u8; 100], "synced bytes intact");
    let kept: Vec<bool> = (0..16)
        .map(|i| {
            let from = if i == 0 { 100 } else { i * page };
            let chunk = disk.get(from..(i + 1) * page).unwrap_or(&[]);
            assert!(
                chunk.iter().all(|&b| b == 2) || chunk.iter().all(|&b| b == 0),
                "page {i} is whole or absent"
            );
            !chunk.is_empty() && chunk[0] == 2
        })
        .collect();
    assert!(kept.contains(&true) && kept.contains(&false), "{kept:?}");
    // A page that reached the disk is written whole (page 0 with its
    // synced first 100 bytes, unchanged).
    let written = kept.iter().filter(|&&k| k).count() * page;
    assert_eq!(cut.written_back as usize, written, "{cut:?} {kept:?}");
}

/// Torn cuts wait, half of the time, for a write that spans a page boundary
/// (the only kind a cut can split): a small write goes through, the next
/// crossing one cuts the power.
#[test]
fn a_torn_arm_may_wait_for_a_write_across_pages() {
    if !can_mount() {
        return;
    }
    let page = super::overlay::PAGE as usize;
    let mut waited = 0;
    for seed in 0..20 {
        let Mounted { mnt, pfs, session, _dir, .. } = mount(Some(seed));
        let mut f = OpenOptions::new().create_new(true).write(true).open(mnt.join("log")).unwrap();
        f.write_all(&[1u8; 100]).unwrap();
        pfs.arm();
        f.write_all(&[2u8; 100]).unwrap();
        if pfs.cut_report().is_none() {
            waited += 1;
            // Bytes 200 .. page + 10: across the first page boundary.
            f.write_all(&vec![3u8; page - 190]).unwrap();
            let cut = pfs.cut_report().expect("the crossing write cut the power");
            assert!(cut.on_write);
        }
        drop(f);
        drop(session);
    }
    // Half of 20 arms at random: some waited, some did not.
    assert!((1..20).contains(&waited), "{waited} of 20 arms waited");
}
