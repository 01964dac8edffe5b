//! The FUSE file system: a pass-through to a backing directory whose file
//! data becomes durable only on fsync.
//!
//! Owns: [`PowerFs`] (inode table, open handles, one [`Overlay`] per file
//! with unsynced data, the powered-off state) and its [`fuser::Filesystem`]
//! implementation; [`PowerFs::power_cut`].
//!
//! What is durable when (the backing directory is "the disk"):
//! - File data and size: only after `fsync`/`fdatasync` of that file. Writes
//!   and truncates before that live in the daemon's memory ([`Overlay`]);
//!   `sync_file_range`, `close` and FUSE `flush` persist nothing (FUSE does
//!   not even forward `sync_file_range`). `syncfs` is not forwarded by the
//!   kernel to FUSE either, so it persists nothing here.
//! - Metadata (create, mkdir, rename, unlink, rmdir, chmod): applied to the
//!   backing directory at once, i.e. durable immediately, as if every
//!   directory operation were journalled synchronously (a `dirsync` mount).
//!   A file system may legally persist metadata that early, so this never
//!   invents a failure, but it cannot catch a missing fsync of a directory.
//!   A file created and written but never fsynced comes back empty after a
//!   power loss (the ext4 "zero-length file" case).
//! - The kernel page cache is kept out of the way: every file is opened with
//!   `FOPEN_DIRECT_IO` and attributes and entries have a zero TTL, so every
//!   read and write reaches the daemon, and sizes come from the overlay.
//!
//! After [`PowerFs::power_cut`] every unsynced byte is gone (or, in a torn
//! cut, each unsynced page independently either reached the disk or is
//! gone) and every further request fails with `EIO` until the daemon is
//! replaced: the powered-off disk accepts nothing, not even a late fsync.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::overlay::{Durable, Overlay, PAGE};

/// Attributes and entries are never cached by the kernel.
const TTL: Duration = Duration::ZERO;

/// What a power cut threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had unsynced data or size changes.
    pub files: u64,
    /// Unsynced bytes dropped (whole dirty pages).
    pub bytes: u64,
    /// Of those, bytes that reached the disk all the same (torn cuts only;
    /// see [`PowerFs::new`]).
    pub written_back: u64,
    /// The cut came right after a write request (armed), rather than at
    /// an arbitrary moment.
    pub on_write: bool,
}

/// Inode numbers <-> paths relative to the backing root.
#[derive(Debug)]
struct Inodes {
    paths: HashMap<u64, PathBuf>,
    by_path: HashMap<PathBuf, u64>,
    next: u64,
}

impl Inodes {
    fn new() -> Inodes {
        let mut i = Inodes { paths: HashMap::new(), by_path: HashMap::new(), next: 2 };
        i.paths.insert(INodeNo::ROOT.0, PathBuf::new());
        i.by_path.insert(PathBuf::new(), INodeNo::ROOT.0);
        i
    }

    fn path(&self, ino: INodeNo) -> Result<&Path, Errno> {
        self.paths.get(&ino.0).map(PathBuf::as_path).ok_or(Errno::ENOENT)
    }

    fn ino_of(&mut self, rel: &Path) -> u64 {
        if let Some(&ino) = self.by_path.get(rel) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.paths.insert(ino, rel.to_path_buf());
        self.by_path.insert(rel.to_path_buf(), ino);
        ino
    }

    fn forget_path(&mut self, rel: &Path) -> Option<u64> {
        let ino = self.by_path.remove(rel)?;
        self.paths.remove(&ino);
        Some(ino)
    }

    /// `from` (and everything below it) is now called `to`.
    fn rename(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            self.by_path.remove(&old);
            let suffix = old.strip_prefix(from).unwrap_or(Path::new(""));
            let new =
                if suffix.as_os_str().is_empty() { to.to_path_buf() } else { to.join(suffix) };
            self.paths.insert(ino, new.clone());
            self.by_path.insert(new, ino);
        }
    }
}

#[derive(Debug)]
struct Handle {
    ino: u64,
    file: File,
}

#[derive(Debug)]
struct State {
    inodes: Inodes,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    overlays: HashMap<u64, Overlay>,
    powered_off: bool,
    /// Cut the power right after the next write request.
    armed: bool,
    /// ... and only after one that spans a page boundary (torn cuts, half
    /// of them): the write a torn cut can leave half on the disk.
    armed_for_crossing: bool,
    /// What the cut dropped, once it happened.
    cut: Option<CutReport>,
    /// Torn cuts: decides which unsynced pages reached the disk.
    torn: Option<StdRng>,
}

impl State {
    /// Cuts the power; a torn cut writes some pages back under `root`.
    fn cut(&mut self, on_write: bool, root: &Path) -> CutReport {
        if let Some(done) = self.cut {
            return done;
        }
        let mut report = CutReport {
            files: self.overlays.len() as u64,
            bytes: self.overlays.values().map(Overlay::dirty_bytes).sum(),
            written_back: 0,
            on_write,
        };
        if let Some(rng) = self.torn.as_mut() {
            // Each dirty page reached the disk or not, independently; the
            // file order is made fixed so that a seed replays the same cut.
            let mut inos: Vec<u64> = self.overlays.keys().copied().collect();
            inos.sort_unstable();
            for ino in inos {
                let Some(rel) = self.inodes.paths.get(&ino) else { continue };
                let written = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(root.join(rel))
                    .and_then(|file| {
                        self.overlays[&ino].write_back_some(&file, &mut |_| rng.random_bool(0.5))
                    });
                match written {
                    Ok(n) => report.written_back += n,
                    // The file was removed meanwhile: nothing to tear.
                    Err(e) => eprintln!("powerfs: torn cut of {}: {e}", rel.display()),
                }
            }
        }
        self.powered_off = true;
        self.overlays.clear();
        self.cut = Some(report);
        report
    }
}

/// The power-loss file system over one backing directory. Cloning shares
/// the state (the clone kept by the daemon's signal thread cuts the power
/// of the mounted one).
#[derive(Debug, Clone)]
pub struct PowerFs {
    root: Arc<PathBuf>,
    state: Arc<Mutex<State>>,
}

fn kind_of(meta: &fs::Metadata) -> FileType {
    FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

fn attr_of(ino: u64, meta: &fs::Metadata, size: Option<u64>) -> FileAttr {
    let size = size.unwrap_or(meta.len());
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind_of(meta),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

impl PowerFs {
    /// A file system over `root` (which must exist), powered on. With
    /// `torn_seed`, a power cut is torn: each unsynced page reached the disk
    /// or not, at random (seeded); without it every unsynced byte is lost.
    pub fn new(root: impl Into<PathBuf>, torn_seed: Option<u64>) -> PowerFs {
        PowerFs {
            root: Arc::new(root.into()),
            state: Arc::new(Mutex::new(State {
                inodes: Inodes::new(),
                handles: HashMap::new(),
                next_fh: 1,
                overlays: HashMap::new(),
                powered_off: false,
                armed: false,
                armed_for_crossing: false,
                cut: None,
                torn: torn_seed.map(StdRng::seed_from_u64),
            })),
        }
    }

    /// The backing directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, if the power is on.
    fn on(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let st = self.lock();
        if st.powered_off {
            return Err(Errno::EIO);
        }
        Ok(st)
    }

    /// Power loss: drop every unsynced byte and refuse all further
    /// requests. A second cut changes nothing and reports the first.
    pub fn power_cut(&self) -> CutReport {
        self.lock().cut(false, &self.root)
    }

    /// Power loss at the worst moment: right after the next write request
    /// is taken in (acknowledged to the writer, never synced), so the cut
    /// always finds unsynced data when the node is writing at all.
    /// [`PowerFs::power_cut`] still cuts at once. With torn cuts, half of
    /// the arms (at random) wait for a write that spans a page boundary:
    /// one whose pages the cut can split, the later kept and the earlier
    /// lost (most writes are small and would not be torn at all).
    pub fn arm(&self) {
        let mut st = self.lock();
        st.armed = true;
        st.armed_for_crossing = st.torn.as_mut().is_some_and(|rng| rng.random_bool(0.5));
    }

    /// What the cut dropped, if the power is off.
    pub fn cut_report(&self) -> Option<CutReport> {
        self.lock().cut
    }

    /// Unsynced bytes held in memory right now.
    pub fn dirty_bytes(&self) -> u64 {
        self.lock().overlays.values().map(Overlay::dirty_bytes).sum()
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn attr(&self, st: &State, ino: u64, rel: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(self.full(rel))?;
        Ok(attr_of(ino, &meta, st.overlays.get(&ino).map(Overlay::size)))
    }

    fn child(
        &self,
        st: &mut State,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<(PathBuf, PathBuf), Errno> {
        let rel = st.inodes.path(parent)?.join(name);
        let full = self.full(&rel);
        Ok((rel, full))
    }

    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let mut st = self.on()?;
        let (rel, full) = self.child(&mut st, parent, name)?;
        let meta = fs::symlink_metadata(&full)?;
        let ino = st.inodes.ino_of(&rel);
        Ok(attr_of(ino, &meta, st.overlays.get(&ino).map(Overlay::size)))
    }

    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        size: Option<u64>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let mut st = self.on()?;
        let rel = st.inodes.path(ino)?.to_path_buf();
        let full = self.full(&rel);
        if let Some(mode) = mode {
            fs::set_permissions(&full, fs::Permissions::from_mode(mode & 0o7777))?;
        }
        if let Some(size) = size {
            let State { handles, overlays, .. } = &mut *st;
            let opened;
            let file = match fh.and_then(|fh| handles.get(&fh.0)) {
                Some(h) => &h.file,
                None => {
                    opened = OpenOptions::new().read(true).write(true).open(&full)?;
                    &opened
                }
            };
            let overlay = match overlays.entry(ino.0) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(Overlay::new(file.len()?)),
            };
            overlay.truncate(size);
        }
        self.attr(&st, ino.0, &rel)
    }

    fn open_handle(&self, st: &mut State, ino: u64, file: File) -> u64 {
        let fh = st.next_fh;
        st.next_fh += 1;
        st.handles.insert(fh, Handle { ino, file });
        fh
    }

    fn do_open(&self, ino: INodeNo) -> Result<u64, Errno> {
        let mut st = self.on()?;
        let full = self.full(st.inodes.path(ino)?);
        let file = match OpenOptions::new().read(true).write(true).open(&full) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => File::open(&full)?,
            Err(e) => return Err(e.into()),
        };
        Ok(self.open_handle(&mut st, ino.0, file))
    }

    fn do_create(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        let mut st = self.on()?;
        let (rel, full) = self.child(&mut st, parent, name)?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).mode(mode & !umask & 0o7777);
        if flags & libc::O_EXCL != 0 {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        let file = opts.open(&full)?;
        // A stale entry for this path (an earlier file of the same name).
        if let Some(old) = st.inodes.forget_path(&rel) {
            st.overlays.remove(&old);
        }
        let ino = st.inodes.ino_of(&rel);
        if flags & libc::O_TRUNC != 0 {
            let mut o = Overlay::new(file.len()?);
            o.truncate(0);
            st.overlays.insert(ino, o);
        }
        let attr = self.attr(&st, ino, &rel)?;
        let fh = self.open_handle(&mut st, ino, file);
        Ok((attr, fh))
    }

    fn do_read(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let st = self.on()?;
        let h = st.handles.get(&fh.0).ok_or(Errno::EBADF)?;
        match st.overlays.get(&ino.0) {
            Some(o) => Ok(o.read(&h.file, offset, size as usize)?),
            None => {
                let mut buf = vec![0u8; size as usize];
                let n = Durable::read_at(&h.file, &mut buf, offset)?;
                buf.truncate(n);
                Ok(buf)
            }
        }
    }

    fn do_write(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<u32, Errno> {
        let mut st = self.on()?;
        let State { handles, overlays, .. } = &mut *st;
        let h = handles.get(&fh.0).ok_or(Errno::EBADF)?;
        let overlay = match overlays.entry(ino.0) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Overlay::new(h.file.len()?)),
        };
        overlay.write(&h.file, offset, data)?;
        let crosses = !data.is_empty() && offset / PAGE != (offset + data.len() as u64 - 1) / PAGE;
        if st.armed && (crosses || !st.armed_for_crossing) {
            st.cut(true, &self.root);
        }
        Ok(data.len() as u32)
    }

    /// fsync: the file's overlay goes to the backing file. The backing
    /// directory stands for the disk and the host does not lose power, so
    /// a write to it is all the durability there is to give.
    fn do_fsync(&self, ino: INodeNo, fh: FileHandle) -> Result<(), Errno> {
        let mut st = self.on()?;
        let State { handles, overlays, inodes, .. } = &mut *st;
        let Some(overlay) = overlays.get_mut(&ino.0) else { return Ok(()) };
        match handles.get(&fh.0).filter(|h| h.ino == ino.0) {
            Some(h) => overlay.persist(&h.file)?,
            None => {
                let full = self.root.join(inodes.path(ino)?);
                overlay.persist(&OpenOptions::new().write(true).read(true).open(full)?)?
            }
        }
        overlays.remove(&ino.0);
        Ok(())
    }

    fn do_mkdir(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<FileAttr, Errno> {
        let mut st = self.on()?;
        let (rel, full) = self.child(&mut st, parent, name)?;
        fs::DirBuilder::new().mode(mode & !umask & 0o7777).create(&full)?;
        let ino = st.inodes.ino_of(&rel);
        self.attr(&st, ino, &rel)
    }

    fn do_remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut st = self.on()?;
        let (rel, full) = self.child(&mut st, parent, name)?;
        if dir {
            fs::remove_dir(&full)?;
        } else {
            fs::remove_file(&full)?;
        }
        if let Some(ino) = st.inodes.forget_path(&rel) {
            st.overlays.remove(&ino);
        }
        Ok(())
    }

    fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if !flags.is_empty() {
            return Err(Errno::EINVAL);
        }
        let mut st = self.on()?;
        let (from_rel, from) = self.child(&mut st, parent, name)?;
        let (to_rel, to) = self.child(&mut st, newparent, newname)?;
        fs::rename(&from, &to)?;
        if let Some(replaced) = st.inodes.forget_path(&to_rel) {
            st.overlays.remove(&replaced);
        }
        st.inodes.rename(&from_rel, &to_rel);
        Ok(())
    }

    fn do_readdir(&self, ino: INodeNo) -> Result<Vec<(u64, FileType, std::ffi::OsString)>, Errno> {
        let mut st = self.on()?;
        let rel = st.inodes.path(ino)?.to_path_buf();
        let mut out = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        let mut names = Vec::new();
        for entry in fs::read_dir(self.full(&rel))? {
            let entry = entry?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            names.push((entry.file_name(), kind));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in names {
            let child = st.inodes.ino_of(&rel.join(&name));
            out.push((child, kind, name));
        }
        Ok(out)
    }

    fn do_statfs(&self) -> Result<libc::statvfs, Errno> {
        let _st = self.on()?;
        let c = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
            .map_err(|_| Errno::EINVAL)?;
        // SAFETY: statvfs writes into the zeroed struct we own; the path is
        // a valid NUL-terminated string.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(s)
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.on().and_then(|st| {
            let rel = st.inodes.path(ino)?.to_path_buf();
            self.attr(&st, ino.0, &rel)
        });
        match r {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino, mode, size, fh) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.do_mkdir(parent, name, mode, umask) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.do_rename(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.do_read(ino, fh, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(ino, fh, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() persists nothing.
        match self.on() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // The overlay outlives the handle: closing is not syncing.
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.do_fsync(ino, fh) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.do_readdir(ino) {
            Ok(entries) => {
                for (i, (child, kind, name)) in
                    entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory operations are durable as soon as they are made.
        match self.on() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.do_statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(parent, name, mode, umask, flags) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }
}
