//! `switchboard.v1.Events`: the change feed (seed 001's network manager,
//! seed 004's call-tracking links).
//!
//! A watcher gets every event of every applied entry in log order, from the
//! index it asks for (if this node still holds it — else `OUT_OF_RANGE`
//! with a message starting "compacted"), then live. Leader changes are
//! interleaved as `leader_changed` events carrying the node's applied index
//! at the time. A watcher too slow to keep up is cut off with
//! `RESOURCE_EXHAUSTED` naming the index to resume from. When this node
//! installs a snapshot (it fell too far behind the leader), the events the
//! snapshot covers do not exist here: every live watcher gets the events
//! before it, then the same `OUT_OF_RANGE` "compacted" error, and resyncs
//! with the List calls — a stream never skips events silently. A node whose
//! Raft has stopped refuses new watches and ends live ones with
//! `UNAVAILABLE` "raft stopped: ..." (see `crate::fatal`).

use std::pin::Pin;
use std::sync::Arc;

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::events_server::Events;
use switchboard_storage::feed::{Ended, Feed};
use switchboard_storage::state::events::Event;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::node::Node;

/// The Events service of one node.
pub struct EventsService {
    node: Node,
    feed: Arc<Feed>,
}

impl EventsService {
    /// Serve the change feed of `node`.
    pub fn new(node: Node, feed: Arc<Feed>) -> Self {
        EventsService { node, feed }
    }
}

/// An event on the wire.
pub fn to_wire(e: &Event) -> pb::Event {
    pb::Event {
        index: e.index,
        kind: e.kind.as_str().into(),
        key: e.key.clone(),
        detail_json: serde_json::to_string(&e.detail).unwrap_or_else(|_| "{}".into()),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsService {
    type WatchStream = EventStream;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<EventStream>, Status> {
        let from = req.into_inner().from_index;
        crate::fatal::refuse_if_stopped(self.node.raft())?;
        let (backlog, mut live) =
            self.feed.subscribe(from).map_err(|e| Status::out_of_range(e.to_string()))?;
        let (tx, rx) = mpsc::channel::<Result<pb::Event, Status>>(1024);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut next = from;
            for e in &backlog {
                next = e.index;
                if tx.send(Ok(to_wire(e))).await.is_err() {
                    return;
                }
            }
            let mut metrics = node.raft().metrics();
            let mut leader = metrics.borrow().current_leader;
            loop {
                tokio::select! {
                    got = live.next() => match got {
                        Ok(e) => {
                            next = e.index;
                            if tx.send(Ok(to_wire(&e))).await.is_err() {
                                return;
                            }
                        }
                        Err(Ended::Compacted(c)) => {
                            let _ = tx.send(Err(Status::out_of_range(c.to_string()))).await;
                            return;
                        }
                        Err(Ended::Lagged(n)) => {
                            let _ = tx.send(Err(Status::resource_exhausted(format!(
                                "watcher fell {n} events behind; resume from index {next}"
                            )))).await;
                            return;
                        }
                        Err(Ended::Closed) => return,
                    },
                    changed = metrics.changed() => {
                        if let Err(e) = crate::fatal::refuse_if_stopped(node.raft()) {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                        if changed.is_err() {
                            return;
                        }
                        let now = metrics.borrow().current_leader;
                        if now != leader {
                            leader = now;
                            let event = pb::Event {
                                index: node.read(|_, applied| applied),
                                kind: "leader_changed".into(),
                                key: now.map_or_else(String::new, |l| l.to_string()),
                                detail_json: format!("{{\"leader_id\":{}}}", now.unwrap_or(0)),
                            };
                            if tx.send(Ok(event)).await.is_err() {
                                return;
                            }
                        }
                    }
                    _ = tx.closed() => return,
                    // A watch never ends by itself, and graceful shutdown
                    // waits for open calls: end it so the node can stop.
                    _ = node.stopping() => {
                        let _ = tx.send(Err(Status::unavailable(
                            "node is shutting down; resume the watch at another node",
                        ))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
