//! The dirty-page overlay of one file: bytes written but not yet fsynced.
//!
//! Owns: [`Overlay`] (the volatile view of one file — its dirty pages, its
//! size and how much of the durable copy a shrinking truncate has hidden)
//! and the [`Durable`] trait through which it reads and, on fsync, writes
//! the durable copy. It knows nothing about FUSE, inodes or paths, so every
//! rule about what survives a power loss is unit-tested here without a
//! mount.
//!
//! Model: the durable copy (the backing file) only ever changes in
//! [`Overlay::persist`], which is what an fsync of the file does. Until then
//! writes and truncates live in memory; a power loss drops the overlay and
//! the file is exactly its durable copy again.

use std::collections::BTreeMap;
use std::io;

/// Granularity of the dirty-page map (a Linux page).
pub const PAGE: u64 = 4096;

/// The durable copy of one file, as the overlay needs it.
pub trait Durable {
    /// Length of the durable copy.
    fn len(&self) -> io::Result<u64>;
    /// Whether the durable copy is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fill `buf` from `offset`; returns the bytes read (short at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Write all of `data` at `offset`.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Set the length (truncate or extend with zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
}

impl Durable for std::fs::File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match std::os::unix::fs::FileExt::read_at(self, &mut buf[done..], offset + done as u64)
            {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, data, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }
}

/// Unsynced state of one file. Created on the first write or truncate after
/// the last fsync; gone after [`Overlay::persist`] or a power loss.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Dirty pages by page index, each exactly [`PAGE`] bytes.
    pages: BTreeMap<u64, Box<[u8]>>,
    /// The file's size as readers see it now.
    size: u64,
    /// Durable bytes at or past this offset are hidden (a truncate cut them
    /// off); readers see zeros there unless a dirty page says otherwise.
    visible_durable: u64,
}

impl Overlay {
    /// A clean overlay over a durable copy of `durable_len` bytes.
    pub fn new(durable_len: u64) -> Overlay {
        Overlay { pages: BTreeMap::new(), size: durable_len, visible_durable: durable_len }
    }

    /// The file's current (volatile) size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes held only in memory (dirty pages).
    pub fn dirty_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE
    }

    /// Read up to `len` bytes at `offset` as a reader of the file sees them.
    pub fn read(&self, durable: &dyn Durable, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        // Durable bytes first, only the part a truncate has not hidden.
        let durable_end = end.min(self.visible_durable);
        if offset < durable_end {
            let n = (durable_end - offset) as usize;
            let got = durable.read_at(&mut out[..n], offset)?;
            out[got..n].fill(0);
        }
        // Then the dirty pages on top.
        let first = offset / PAGE;
        let last = (end - 1) / PAGE;
        for (&index, page) in self.pages.range(first..=last) {
            let page_start = index * PAGE;
            let from = offset.max(page_start);
            let to = end.min(page_start + PAGE);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[(from - page_start) as usize..(to - page_start) as usize]);
        }
        Ok(out)
    }

    /// Write `data` at `offset` (in memory only).
    pub fn write(&mut self, durable: &dyn Durable, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFBIG))?;
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let page_start = index * PAGE;
            let to = end.min(page_start + PAGE);
            if !self.pages.contains_key(&index) {
                // A new dirty page starts as what readers see there now.
                let current = self.read(durable, page_start, PAGE as usize)?;
                let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
                page[..current.len()].copy_from_slice(&current);
                self.pages.insert(index, page);
            }
            if let Some(page) = self.pages.get_mut(&index) {
                page[(at - page_start) as usize..(to - page_start) as usize]
                    .copy_from_slice(&data[(at - offset) as usize..(to - offset) as usize]);
            }
            at = to;
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Truncate or extend to `len` (in memory only).
    pub fn truncate(&mut self, len: u64) {
        if len < self.size {
            // Pages wholly past the end go; the one straddling it is zeroed
            // past the end so a later extension reads zeros.
            let keep = len.div_ceil(PAGE);
            self.pages.retain(|&index, _| index < keep);
            if !len.is_multiple_of(PAGE) {
                if let Some(page) = self.pages.get_mut(&(len / PAGE)) {
                    page[(len % PAGE) as usize..].fill(0);
                }
            }
            self.visible_durable = self.visible_durable.min(len);
        }
        self.size = len;
    }

    /// Write everything to the durable copy (the fsync). The caller makes
    /// the durable copy itself durable; the overlay is clean afterwards.
    pub fn persist(&mut self, durable: &dyn Durable) -> io::Result<()> {
        if durable.len()? > self.visible_durable {
            durable.set_len(self.visible_durable)?;
        }
        for (&index, page) in &self.pages {
            let page_start = index * PAGE;
            if page_start >= self.size {
                continue;
            }
            let n = (self.size - page_start).min(PAGE) as usize;
            durable.write_at(&page[..n], page_start)?;
        }
        durable.set_len(self.size)?;
        self.pages.clear();
        self.visible_durable = self.size;
        Ok(())
    }

    /// The part of a power cut that a real disk may show: some of the
    /// unsynced pages reached it before the power went (the kernel writes
    /// dirty pages back whenever it likes, the drive reorders its cache),
    /// the rest did not. Writes each dirty page inside the file's size to
    /// the durable copy when `reached(page index)` says so, extending the
    /// durable copy as far as that page (any gap reads as zeros, like
    /// blocks allocated but never written). A shrinking truncate is not
    /// applied: it is metadata that did not make it. Returns the bytes
    /// written. The caller drops the overlay afterwards.
    pub fn write_back_some(
        &self,
        durable: &dyn Durable,
        reached: &mut dyn FnMut(u64) -> bool,
    ) -> io::Result<u64> {
        let mut written = 0;
        for (&index, page) in &self.pages {
            let page_start = index * PAGE;
            if page_start >= self.size || !reached(index) {
                continue;
            }
            let n = (self.size - page_start).min(PAGE) as usize;
            durable.write_at(&page[..n], page_start)?;
            written += n as u64;
        }
        Ok(written)
    }

    /// Whether persisting would change nothing.
    pub fn is_clean(&self, durable_len: u64) -> bool {
        self.pages.is_empty() && self.size == durable_len && self.visible_durable == durable_len
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use proptest::prelude::*;

    use super::*;

    /// An in-memory durable copy.
    #[derive(Default)]
    struct Mem(RefCell<Vec<u8>>);

    impl Durable for Mem {
        fn len(&self) -> io::Result<u64> {
            Ok(self.0.borrow().len() as u64)
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let v = self.0.borrow();
            let start = (offset as usize).min(v.len());
            let n = buf.len().min(v.len() - start);
            buf[..n].copy_from_slice(&v[start..start + n]);
            Ok(n)
        }
        fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
            let mut v = self.0.borrow_mut();
            let end = offset as usize + data.len();
            if v.len() < end {
                v.resize(end, 0);
            }
            v[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.borrow_mut().resize(len as usize, 0);
            Ok(())
        }
    }

    fn all(o: &Overlay, d: &Mem) -> Vec<u8> {
        o.read(d, 0, o.size() as usize + 10).unwrap()
    }

    #[test]
    fn reads_see_own_writes_but_durable_copy_does_not() {
        let d = Mem(RefCell::new(b"hello world".to_vec()));
        let mut o = Overlay::new(11);
        o.write(&d, 6, b"there, friend").unwrap();
        assert_eq!(all(&o, &d), b"hello there, friend");
        assert_eq!(o.size(), 19);
        assert_eq!(*d.0.borrow(), b"hello world", "nothing reaches the durable copy before fsync");
        assert_eq!(o.read(&d, 3, 5).unwrap(), b"lo th");
        assert_eq!(o.read(&d, 100, 5).unwrap(), b"");
    }

    #[test]
    fn fsync_persists_and_power_loss_drops_the_rest() {
        let d = Mem::default();
        let mut o = Overlay::new(0);
        o.write(&d, 0, b"synced").unwrap();
        o.persist(&d).unwrap();
        assert_eq!(*d.0.borrow(), b"synced");
        assert!(o.is_clean(6));
        o.write(&d, 6, b" and lost").unwrap();
        o.write(&d, 0, b"S").unwrap();
        assert_eq!(all(&o, &d), b"Synced and lost");
        // Power loss: the overlay is dropped; the durable copy is the file.
        drop(o);
        assert_eq!(*d.0.borrow(), b"synced");
    }

    #[test]
    fn a_torn_cut_keeps_exactly_the_pages_that_reached_the_disk() {
        let d = Mem::default();
        d.write_at(&[1u8; 100], 0).unwrap();
        let mut o = Overlay::new(100);
        // One write over three pages, starting inside the durable page.
        o.write(&d, 90, &[7u8; 2 * PAGE as usize]).unwrap();
        // Only the middle and last pages reached the disk.
        let written = o.write_back_some(&d, &mut |index| index != 0).unwrap();
        let end = 90 + 2 * PAGE as usize;
        assert_eq!(written, (end - PAGE as usize) as u64);
        let disk = d.0.borrow().clone();
        assert_eq!(disk.len(), end);
        assert_eq!(&disk[..100], &[1u8; 100], "the synced bytes are intact");
        assert!(disk[100..PAGE as usize].iter().all(|&b| b == 0), "the lost page reads zeros");
        assert!(disk[PAGE as usize..].iter().all(|&b| b == 7));
        // None reached it: the durable copy is untouched.
        let d2 = Mem::default();
        d2.write_at(&[1u8; 100], 0).unwrap();
        let mut o2 = Overlay::new(100);
        o2.write(&d2, 100, &[7u8; 10]).unwrap();
        assert_eq!(o2.write_back_some(&d2, &mut |_| false).unwrap(), 0);
        assert_eq!(d2.0.borrow().as_slice(), &[1u8; 100]);
    }

    #[test]
    fn writes_far_past_the_end_leave_zeros() {
        let d = Mem(RefCell::new(vec![1; 10]));
        let mut o = Overlay::new(10);
        o.write(&d, 3 * PAGE + 5, b"x").unwrap();
        let v = all(&o, &d);
        assert_eq!(v.len() as u64, 3 * PAGE + 6);
        assert_eq!(&v[..10], &[1; 10]);
        assert!(v[10..v.len() - 1].iter().all(|&b| b == 0));
        o.persist(&d).unwrap();
        assert_eq!(*d.0.borrow(), v);
    }

    #[test]
    fn truncate_hides_durable_bytes_until_fsync_and_zeros_on_extension() {
        let d = Mem(RefCell::new(vec![9; 100]));
        let mut o = Overlay::new(100);
        o.truncate(10);
        o.truncate(50);
        let v = all(&o, &d);
        assert_eq!(&v[..10], &[9; 10]);
        assert!(v[10..].iter().all(|&b| b == 0), "old bytes must not come back: {v:?}");
        assert_eq!(d.0.borrow().len(), 100, "the truncate is not durable yet");
        o.persist(&d).unwrap();
        assert_eq!(*d.0.borrow(), v);
    }

    #[test]
    fn truncate_inside_a_dirty_page_zeroes_its_tail() {
        let d = Mem::default();
        let mut o = Overlay::new(0);
        o.write(&d, 0, &[5; 100]).unwrap();
        o.truncate(20);
        o.write(&d, 60, b"z").unwrap();
        let v = all(&o, &d);
        assert_eq!(&v[..20], &[5; 20]);
        assert!(v[20..60].iter().all(|&b| b == 0));
        assert_eq!(v[60], b'z');
    }

    proptest! {
        /// Against a plain byte vector: reads always match, fsync makes the
        /// durable copy equal to it, and a power loss leaves exactly the
        /// last fsynced contents.
        #[test]
        fn behaves_like_a_file_with_a_durable_prefix(
            ops in proptest::collection::vec(
                (0u8..4, 0u64..(3 * PAGE), proptest::collection::vec(any::<u8>(), 0..600)),
                1..40,
            )
        ) {
            let d = Mem(RefCell::new(vec![7; 1000]));
            let mut o = Overlay::new(1000);
            let mut model = vec![7u8; 1000];
            let mut synced = model.clone();
            for (kind, at, data) in ops {
                match kind {
                    0 | 1 => {
                        o.write(&d, at, &data).unwrap();
                        if !data.is_empty() {
                            let end = at as usize + data.len();
                            if model.len() < end {
                                model.resize(end, 0);
                            }
                            model[at as usize..end].copy_from_slice(&data);
                        }
                    }
                    2 => {
                        o.truncate(at);
                        model.resize(at as usize, 0);
                    }
                    _ => {
                        o.persist(&d).unwrap();
                        synced = model.clone();
                    }
                }
                prop_assert_eq!(o.read(&d, 0, model.len() + 5).unwrap(), model.clone());
                prop_assert_eq!(d.0.borrow().clone(), synced.clone());
            }
        }
    }
}
