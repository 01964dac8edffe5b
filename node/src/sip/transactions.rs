//! REGISTER transactions in flight or just answered, so that a UDP
//! retransmission (every 500 ms, then doubling, RFC 3261 §17.1.2.2) never
//! starts a second write and, once answered, gets the same answer again.
//!
//! Owns: a two-generation map keyed by the topmost Via branch, Call-ID and
//! CSeq. Entries live between one and two rotation periods (32 s, the
//! 64*T1 a client keeps retransmitting); memory is bounded by the request
//! rate over that window. A std `Mutex`: held for a map operation only,
//! never across an await.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a generation lasts.
pub const ROTATE: Duration = Duration::from_secs(32);

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First sight: handle it, then call [`Transactions::finish`].
    New,
    /// Being handled: drop the retransmission (the answer follows).
    Pending,
    /// Answered already: send these bytes again.
    Done(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Entry {
    Pending,
    Done(Vec<u8>),
}

#[derive(Debug)]
struct Generations {
    current: HashMap<Vec<u8>, Entry>,
    previous: HashMap<Vec<u8>, Entry>,
    since: Instant,
}

/// The table.
#[derive(Debug)]
pub struct Transactions {
    inner: Mutex<Generations>,
}

impl Default for Transactions {
    fn default() -> Self {
        Transactions {
            inner: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
                since: Instant::now(),
            }),
        }
    }
}

impl Transactions {
    /// Look `key` up, marking it pending when it is new.
    pub fn begin(&self, key: &[u8], now: Instant) -> Begin {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(g.since) >= ROTATE {
            g.previous = std::mem::take(&mut g.current);
            g.since = now;
        }
        let found = g.current.get(key).or_else(|| g.previous.get(key)).cloned();
        match found {
            Some(Entry::Pending) => Begin::Pending,
            Some(Entry::Done(bytes)) => Begin::Done(bytes),
            None => {
                g.current.insert(key.to_vec(), Entry::Pending);
                Begin::New
            }
        }
    }

    /// Record the answer to `key` (`None`: forget it, so a retransmission
    /// is handled afresh).
    pub fn finish(&self, key: &[u8], answer: Option<Vec<u8>>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.previous.remove(key);
        match answer {
            Some(bytes) => {
                g.current.insert(key.to_vec(), Entry::Done(bytes));
            }
            None => {
                g.current.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_then_done_then_forgotten_after_two_rotations() {
        let t = Transactions::default();
        let t0 = Instant::now();
        assert_eq!(t.begin(b"k", t0), Begin::New);
        assert_eq!(t.begin(b"k", t0), Begin::Pending);
        t.finish(b"k", Some(b"200".to_vec()));
        assert_eq!(t.begin(b"k", t0), Begin::Done(b"200".to_vec()));
        assert_eq!(t.begin(b"k", t0 + ROTATE), Begin::Done(b"200".to_vec()), "one rotation: kept");
        assert_eq!(t.begin(b"k", t0 + ROTATE * 2), Begin::New, "two rotations: forgotten");
    }

    #[test]
    fn a_failed_attempt_is_forgotten() {
        let t = Transactions::default();
        let t0 = Instant::now();
        assert_eq!(t.begin(b"k", t0), Begin::New);
        t.finish(b"k", None);
        assert_eq!(t.begin(b"k", t0), Begin::New);
    }
}
