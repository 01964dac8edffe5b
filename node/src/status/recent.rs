//! The status page's "recent events": the last [`KEEP`] events of the
//! Watch feed (plus leader changes as this node sees them), numbered with
//! a sequence of their own so that a page polling `/api/events?after=SEQ`
//! gets each event once, in order, whatever happened to log indexes (a
//! leader change carries the applied index, which other events share).
//!
//! Owns: the bounded ring and the task that fills it. Not a resumable
//! history: an operator who needs every event uses `ctl watch`; when the
//! feed ends a subscription (snapshot installed, lagging) the task notes it
//! in the ring and follows the feed again from now.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use switchboard_storage::feed::{Ended, Feed};
use tokio::sync::watch;

use crate::node::Node;

/// Events kept for the page.
pub const KEEP: usize = 200;

/// Most events one `/api/events` answer carries.
pub const MAX_ANSWER: usize = 100;

/// One event as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentEvent {
    /// Position in this node's ring (1, 2, ...): poll with `after=seq`.
    pub seq: u64,
    /// Log index of the entry (for `leader_changed`: the applied index then).
    pub index: u64,
    /// Event kind, as on the Watch stream (`node_down`, `gateway_status`, ...).
    pub kind: String,
    /// What it is about (node id, gateway id, number, call id).
    pub key: String,
    /// Kind-specific details, as the Watch stream's `detail_json`.
    pub detail: serde_json::Value,
}

/// The ring, shared by the filling task and the HTTP handlers.
#[derive(Debug, Default)]
pub struct Recent {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<RecentEvent>,
    last_seq: u64,
}

impl Recent {
    /// Record an event, dropping the oldest beyond [`KEEP`].
    pub fn push(&self, index: u64, kind: &str, key: &str, detail: serde_json::Value) {
        // Only pushes and reads happen under the lock: a poisoned ring is whole.
        let mut ring = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        ring.last_seq += 1;
        let seq = ring.last_seq;
        ring.events.push_back(RecentEvent {
            seq,
            index,
            kind: kind.into(),
            key: key.into(),
            detail,
        });
        while ring.events.len() > KEEP {
            ring.events.pop_front();
        }
    }

    /// The events after `seq` (the newest [`MAX_ANSWER`] of them), and the
    /// last sequence number given out (the next poll's `after`).
    pub fn after(&self, seq: u64) -> (Vec<RecentEvent>, u64) {
        let ring = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let newer: Vec<_> = ring.events.iter().filter(|e| e.seq > seq).cloned().collect();
        let skip = newer.len().saturating_sub(MAX_ANSWER);
        (newer.into_iter().skip(skip).collect(), ring.last_seq)
    }
}

/// Fill `recent` from `feed` and the node's leader changes until `stop` fires.
pub async fn follow(
    node: Node,
    feed: Arc<Feed>,
    recent: Arc<Recent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut metrics = node.raft().metrics();
    let mut leader = metrics.borrow().current_leader;
    loop {
        // A little history first, so a fresh page is not empty: the last
        // few entries this node still holds.
        let applied = node.read(|_, applied| applied);
        let from = applied.saturating_sub(20).max(1);
        let subscribed = match feed.subscribe(from) {
            Ok(s) => Ok(s),
            Err(c) if c.retained_from <= applied => feed.subscribe(c.retained_from),
            Err(_) => feed.subscribe(0),
        };
        let (backlog, mut live) = match subscribed {
            Ok(s) => s,
            // Only possible when a snapshot landed in between: try again soon.
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        for e in &backlog {
            push_event(&recent, e);
        }
        loop {
            tokio::select! {
                got = live.next() => match got {
                    Ok(e) => push_event(&recent, &e),
                    Err(Ended::Closed) => return,
                    Err(ended) => {
                        let index = node.read(|_, applied| applied);
                        recent.push(index, "feed_restarted", "", serde_json::json!({"reason": ended.to_string()}));
                        break;
                    }
                },
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = metrics.borrow().current_leader;
                    if now != leader {
                        leader = now;
                        let index = node.read(|_, applied| applied);
                        let key = now.map_or_else(String::new, |l| l.to_string());
                        recent.push(index, "leader_changed", &key, serde_json::json!({"leader_id": now}));
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }
}

fn push_event(recent: &Recent, e: &switchboard_storage::state::events::Event) {
    let detail = serde_json::to_value(&e.detail).unwrap_or(serde_json::Value::Null);
    recent.push(e.index, e.kind.as_str(), &e.key, detail);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_after_a_seq_gets_each_event_once_and_the_ring_is_bounded() {
        let recent = Recent::default();
        assert_eq!(recent.after(0), (vec![], 0));
        recent.push(7, "node_down", "3", serde_json::json!({}));
        recent.push(7, "leader_changed", "2", serde_json::json!({"leader_id": 2}));
        let (events, last) = recent.after(0);
        assert_eq!(last, 2);
        assert_eq!(
            events
                .iter()
                .map(|e| (e.seq, e.index, e.kind.as_str(), e.key.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, 7, "node_down", "3"), (2, 7, "leader_changed", "2")]
        );
        assert_eq!(recent.after(2), (vec![], 2));
        for i in 0..(KEEP as u64 + 50) {
            recent.push(100 + i, "call_started", "c", serde_json::Value::Null);
        }
        let (events, last) = recent.after(0);
        assert_eq!(last, KEEP as u64 + 52);
        assert_eq!(events.len(), MAX_ANSWER, "one answer is bounded");
        assert_eq!(events.last().map(|e| e.seq), Some(last), "the newest are kept");
        let (events, _) = recent.after(last - 3);
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![last - 2, last - 1, last]
        );
    }
}
