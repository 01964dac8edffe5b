//! A fixed-size set of small integers stored as 64-bit words: the "which
//! operations are linearized" half of the WGL memoization key. Equality and
//! hashing look at the words, so two sets with the same members are the same
//! key.
//!
//! The memo keeps one snapshot per explored configuration, so snapshots are
//! compacted ([`Bitset::compact`]): in a linearizability search the set is
//! nearly always "every op up to some point, a few after it", so the leading
//! all-ones words are replaced by their count and trailing zero words are
//! dropped. A snapshot is then about as big as the window of concurrent
//! operations rather than the whole history.

/// A set of indices in `0..len`, fixed at construction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    /// An empty set able to hold `0..len`.
    pub(crate) fn new(len: usize) -> Self {
        Bitset { words: vec![0; len.div_ceil(64)] }
    }

    /// Adds `i`.
    pub(crate) fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    /// Removes `i`.
    pub(crate) fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    /// Whether `i` is in the set.
    pub(crate) fn contains(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// How many members.
    pub(crate) fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// A canonical compact copy: two sets of the same capacity have equal
    /// (and equally hashing) compact copies iff they have the same members.
    pub(crate) fn compact(&self) -> CompactBitset {
        let full_words = self.words.iter().take_while(|w| **w == u64::MAX).count();
        let rest = &self.words[full_words..];
        let used = rest.iter().rposition(|w| *w != 0).map_or(0, |last| last + 1);
        CompactBitset { full_words, rest: rest[..used].into() }
    }
}

/// A snapshot of a [`Bitset`]: the number of leading all-ones words, then the
/// words after them up to the last non-zero one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CompactBitset {
    full_words: usize,
    rest: Box<[u64]>,
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn insert_remove_contains_across_word_boundaries() {
        let mut s = Bitset::new(130);
        assert_eq!(s.len(), 0);
        for i in [0, 63, 64, 127, 129] {
            assert!(!s.contains(i));
            s.insert(i);
            assert!(s.contains(i));
        }
        s.insert(64);
        assert_eq!(s.len(), 5);
        s.remove(63);
        assert!(!s.contains(63));
        assert!(s.contains(64) && s.contains(0));
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn equal_members_hash_equal() {
        let mut a = Bitset::new(100);
        let mut b = Bitset::new(100);
        a.insert(3);
        a.insert(70);
        b.insert(70);
        b.insert(5);
        b.insert(3);
        b.remove(5);
        assert_eq!(a, b);
        let set: HashSet<Bitset> = [a, b].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert_eq!(Bitset::new(0).len(), 0);
    }

    #[test]
    fn compact_copies_are_canonical_and_small() {
        let mut a = Bitset::new(640);
        for i in 0..200 {
            a.insert(i);
        }
        a.insert(300);
        let c = a.compact();
        // Three full words skipped; words 3 (bits 192..199) to 4 (bit 300) kept.
        assert_eq!(c.full_words, 3);
        assert_eq!(c.rest.len(), 2);

        let mut b = Bitset::new(640);
        b.insert(300);
        for i in (0..200).rev() {
            b.insert(i);
        }
        b.insert(500);
        assert_ne!(b.compact(), c);
        b.remove(500);
        assert_eq!(b.compact(), c);
        let set: HashSet<CompactBitset> = [b.compact(), c].into_iter().collect();
        assert_eq!(set.len(), 1);

        let mut full = Bitset::new(128);
        let empty = Bitset::new(128);
        for i in 0..128 {
            full.insert(i);
        }
        assert_eq!(full.compact(), CompactBitset { full_words: 2, rest: Box::new([]) });
        assert_eq!(empty.compact(), CompactBitset { full_words: 0, rest: Box::new([]) });
        // Not full: the last word has a gap.
        full.remove(127);
        assert_eq!(
            full.compact(),
            CompactBitset { full_words: 1, rest: Box::new([u64::MAX >> 1]) }
        );
    }
}
