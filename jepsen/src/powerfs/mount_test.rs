//! A real mount of [`PowerFs`] (root with /dev/fuse only; skipped with a
//! message otherwise): the kernel path — direct I/O, fsync forwarding,
//! sync_file_range not forwarded — behaves as the overlay tests promise.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;

use super::daemon::mount_config;
use super::fs::PowerFs;

fn can_mount() -> bool {
    if !crate::cluster::is_root() || !std::path::Path::new("/dev/fuse").exists() {
        println!("SKIPPED powerfs mount test: needs root and /dev/fuse");
        return false;
    }
    true
}

#[test]
fn mounted_fs_keeps_only_fsynced_data_across_a_power_cut() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk");
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(&backing).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let pfs = PowerFs::new(backing.clone());
    let session = fuser::spawn_mount(pfs.clone(), &mnt, &mount_config()).unwrap();

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
