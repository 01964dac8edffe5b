//! The event feed: every event the state machine applies, kept in a bounded
//! in-memory ring for resuming watchers and broadcast to live ones.
//!
//! Owns: which log indexes a watcher may still resume from, and telling live
//! watchers when the history they follow is broken. Events are not
//! persisted: after a restart the feed holds what was re-applied from the
//! log after the snapshot; after a snapshot is installed it starts again
//! after the snapshot. A watcher asking for an earlier index gets
//! [`Compacted`] and resyncs with the List calls; so does a live watcher
//! when a snapshot is installed under it ([`Feed::reset`]): the entries the
//! snapshot covers were never applied here one by one, so their events do
//! not exist, and going on with the events after the snapshot would hide
//! the gap.
//!
//! Publishing and subscribing take the same lock, so a subscriber gets the
//! backlog and then the live events with no gap and no duplicate.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tokio::sync::broadcast;

use crate::state::events::Event;

/// Default number of events kept for resuming watchers.
pub const DEFAULT_RETAINED: usize = 100_000;

/// Live events are buffered this deep per watcher before it is cut off as lagging.
const LIVE_BUFFER: usize = 16_384;

/// The watcher asked for events the node no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("compacted: events before log index {retained_from} are no longer held; resync with the List calls and watch from now")]
pub struct Compacted {
    /// The lowest index the feed can still deliver from.
    pub retained_from: u64,
}

/// The feed. Shared by the state machine (publisher) and the Watch service.
#[derive(Debug)]
pub struct Feed {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    ring: VecDeque<Event>,
    capacity: usize,
    /// Every event with `index >= retained_from` is in the ring (or yet to come).
    retained_from: u64,
    live: broadcast::Sender<Live>,
}

/// What live subscribers receive, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Live {
    /// The next event.
    Event(Event),
    /// History restarts after a snapshot: nothing more follows on this
    /// subscription.
    Reset(Compacted),
}

/// Why a live subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// A snapshot replaced the state: the events it covers will never be
    /// delivered. Every event published before it was.
    #[error(transparent)]
    Compacted(#[from] Compacted),
    /// The subscriber fell this many events behind and was cut off.
    #[error("fell {0} events behind")]
    Lagged(u64),
    /// The feed is gone (the node is shutting down).
    #[error("the event feed is closed")]
    Closed,
}

/// A live subscription: the events published after it was taken, in order,
/// until it [`Ended`].
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Live>,
}

impl Subscription {
    /// The next event. Cancel-safe: dropping the future loses nothing.
    /// After an `Err` the subscription is over (later calls may return
    /// anything).
    pub async fn next(&mut self) -> Result<Event, Ended> {
        match self.rx.recv().await {
            Ok(Live::Event(e)) => Ok(e),
            Ok(Live::Reset(c)) => Err(Ended::Compacted(c)),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(Ended::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(Ended::Closed),
        }
    }
}

impl Feed {
    /// A feed whose history starts after log index `applied`, keeping at most `capacity` events.
    pub fn new(applied: u64, capacity: usize) -> Feed {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Feed {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                capacity: capacity.max(1),
                retained_from: applied + 1,
                live,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Only plain pushes and pops happen under the lock; a poisoned lock
        // still holds a consistent ring.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record and broadcast `events` (in log order).
    pub fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for e in events {
            // Nobody listening is fine: the ring keeps it.
            let _ = inner.live.send(Live::Event(e.clone()));
            inner.ring.push_back(e);
        }
        while inner.ring.len() > inner.capacity {
            // Drop whole entries, so `retained_from` stays exact.
            let Some(first) = inner.ring.pop_front() else {
                break;
            };
            while inner.ring.front().is_some_and(|e| e.index == first.index) {
                inner.ring.pop_front();
            }
            inner.retained_from = first.index + 1;
        }
    }

    /// The state was replaced by a snapshot ending at `last_index`: history
    /// restarts after it, and every live subscription ends with
    /// [`Ended::Compacted`] once it has delivered what was published before.
    pub fn reset(&self, last_index: u64) {
        let mut inner = self.lock();
        inner.ring.clear();
        inner.retained_from = last_index + 1;
        let compacted = Compacted { retained_from: inner.retained_from };
        // Nobody listening is fine.
        let _ = inner.live.send(Live::Reset(compacted));
    }

    /// Subscribe from log index `from` (0 = only new events): the retained
    /// events with `index >= from`, then the live subscription.
    pub fn subscribe(&self, from: u64) -> Result<(Vec<Event>, Subscription), Compacted> {
        let inner = self.lock();
        let rx = Subscription { rx: inner.live.subscribe() };
        if from == 0 {
            return Ok((Vec::new(), rx));
        }
        if from < inner.retained_from {
            return Err(Compacted { retained_from: inner.retained_from });
        }
        let backlog = inner.ring.iter().filter(|e| e.index >= from).cloned().collect();
        Ok((backlog, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::events::{Detail, EventKind};

    fn ev(index: u64) -> Event {
        Event { index, kind: EventKind::NodeUp, key: index.to_string(), detail: Detail::None {} }
    }

    #[test]
    fn resume_within_the_ring_and_compacted_before_it() {
        let feed = Feed::new(0, 3);
        feed.publish(vec![ev(1), ev(2)]);
        feed.publish(vec![ev(3), ev(3)]);
        // Four events, capacity 3: entry 1 is dropped.
        let (backlog, _) = feed.subscribe(2).unwrap();
        assert_eq!(backlog.iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3, 3]);
        assert_eq!(feed.subscribe(1).unwrap_err(), Compacted { retained_from: 2 });
        // One more entry of two events: entry 2 goes, then entry 3 goes whole.
        feed.publish(vec![ev(4), ev(4)]);
        let (backlog, _) = feed.subscribe(4).unwrap();
        assert_eq!(backlog.len(), 2);
        assert_eq!(feed.subscribe(3).unwrap_err(), Compacted { retained_from: 4 });
    }

    #[test]
    fn live_events_follow_the_backlog_without_gaps() {
        let feed = Feed::new(10, 100);
        assert!(feed.subscribe(10).is_err(), "before the feed started");
        feed.publish(vec![ev(11)]);
        let (backlog, mut rx) = feed.subscribe(11).unwrap();
        assert_eq!(backlog, vec![ev(11)]);
        feed.publish(vec![ev(12)]);
        assert_eq!(rx.rx.try_recv().unwrap(), Live::Event(ev(12)));
        feed.reset(20);
        assert!(feed.subscribe(12).is_err());
        assert!(feed.subscribe(21).unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_reset_ends_live_subscriptions_after_what_came_before() {
        let feed = Feed::new(0, 100);
        let (_, mut live) = feed.subscribe(0).unwrap();
        feed.publish(vec![ev(1), ev(2)]);
        feed.reset(40);
        feed.publish(vec![ev(41)]);
        assert_eq!(live.next().await, Ok(ev(1)));
        assert_eq!(live.next().await, Ok(ev(2)));
        assert_eq!(live.next().await, Err(Ended::Compacted(Compacted { retained_from: 41 })));
        // A subscription taken after the reset follows the new history.
        let (backlog, mut after) = feed.subscribe(41).unwrap();
        assert_eq!(backlog, vec![ev(41)]);
        feed.publish(vec![ev(42)]);
        assert_eq!(after.next().await, Ok(ev(42)));
        let message = Ended::Compacted(Compacted { retained_from: 41 }).to_string();
        assert!(message.starts_with("compacted"), "{message}");
    }
}
