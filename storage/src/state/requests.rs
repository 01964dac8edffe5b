//! Once-only client requests: the recent request ids of each client and the
//! outcome each got, so that a retried write (`Command::Once`) is applied
//! once and answers what the first attempt did.
//!
//! A client names itself (`client`, any id) and numbers its writes (`seq`,
//! increasing; a retry reuses the number). Per client the last
//! [`WINDOW`] outcomes are kept; a `seq` older than that window can no
//! longer be told apart from a new write and is refused. At most
//! [`MAX_CLIENTS`] clients are remembered: when a new one arrives the one
//! used longest ago (replicated clock, then name) is forgotten. Everything
//! is a `BTreeMap`, so eviction is the same on every replica.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Outcome;

/// Outcomes kept per client.
pub const WINDOW: usize = 64;
/// Clients remembered at once.
pub const MAX_CLIENTS: usize = 10_000;

/// One client's recent requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientWindow {
    /// seq -> the outcome its first application gave.
    outcomes: BTreeMap<u64, Outcome>,
    /// Replicated clock of the client's last request.
    last_used_ms: u64,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    /// Not seen before: apply it, then [`Requests::record`].
    New,
    /// Applied before: answer this outcome again.
    Done(&'a Outcome),
    /// Older than the window: cannot be deduplicated.
    TooOld {
        /// The oldest seq still held for the client.
        oldest: u64,
    },
}

/// Every remembered client's window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    clients: BTreeMap<String, ClientWindow>,
}

impl Requests {
    /// Whether `(client, seq)` was applied before.
    pub fn seen(&self, client: &str, seq: u64) -> Seen<'_> {
        let Some(w) = self.clients.get(client) else { return Seen::New };
        if let Some(o) = w.outcomes.get(&seq) {
            return Seen::Done(o);
        }
        match w.outcomes.keys().next() {
            Some(&oldest) if w.outcomes.len() >= WINDOW && seq < oldest => Seen::TooOld { oldest },
            _ => Seen::New,
        }
    }

    /// Remember the outcome of `(client, seq)`, applied at `now_ms`.
    pub fn record(&mut self, client: &str, seq: u64, outcome: Outcome, now_ms: u64) {
        if !self.clients.contains_key(client) && self.clients.len() >= MAX_CLIENTS {
            let stalest = self
                .clients
                .iter()
                .min_by_key(|(name, w)| (w.last_used_ms, *name))
                .map(|(name, _)| name.clone());
            if let Some(name) = stalest {
                self.clients.remove(&name);
            }
        }
        let w = self.clients.entry(client.to_owned()).or_default();
        w.last_used_ms = now_ms;
        w.outcomes.insert(seq, outcome);
        while w.outcomes.len() > WINDOW {
            w.outcomes.pop_first();
        }
    }

    /// How many clients are remembered.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_recognised_and_the_window_slides() {
        let mut r = Requests::default();
        assert_eq!(r.seen("c", 1), Seen::New);
        r.record("c", 1, Outcome::Nothing, 10);
        assert_eq!(r.seen("c", 1), Seen::Done(&Outcome::Nothing));
        assert_eq!(r.seen("other", 1), Seen::New);
        for seq in 2..=(WINDOW as u64 + 1) {
            r.record("c", seq, Outcome::Nothing, 10);
        }
        assert_eq!(r.seen("c", 1), Seen::TooOld { oldest: 2 });
        assert_eq!(r.seen("c", 2), Seen::Done(&Outcome::Nothing));
        assert_eq!(r.seen("c", 1000), Seen::New);
    }

    #[test]
    fn the_client_used_longest_ago_is_forgotten_first() {
        let mut r = Requests::default();
        for i in 0..MAX_CLIENTS {
            r.record(&format!("c{i}"), 1, Outcome::Nothing, 100 + i as u64);
        }
        r.record("c0", 2, Outcome::Nothing, 1_000_000);
        r.record("new", 1, Outcome::Nothing, 1_000_001);
        assert_eq!(r.clients(), MAX_CLIENTS);
        assert_eq!(r.seen("c1", 1), Seen::New, "c1 was the stalest");
        assert_eq!(r.seen("c0", 1), Seen::Done(&Outcome::Nothing));
    }
}
