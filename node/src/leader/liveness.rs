//! Member liveness (seed 003's keep-alive, done by the leader): poll every
//! node of the replicated node table; after `missed_polls` unanswered polls
//! in a row commit `NodeDown` (its calls move to their stand-by, or are
//! released under the cold policy); when a down node answers again commit
//! `NodeUp` (it takes no calls back).
//!
//! The counts live only in the leader's memory: a new leader starts
//! counting from zero, so a node that died with the old leader — or the old
//! leader itself — is declared down `missed_polls` intervals after the new
//! leader took over.

use std::collections::BTreeMap;
use std::time::Duration;

use switchboard_storage::state::nodes::NodeStatus;
use switchboard_storage::state::{Command, NodeId, State};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::node::Node;

/// The leader's view of each member's recent polls.
#[derive(Default)]
pub struct Liveness {
    missed: BTreeMap<NodeId, u32>,
}

impl Liveness {
    /// Forget all counts (this node is not the leader any more).
    pub fn reset(&mut self) {
        self.missed.clear();
    }

    /// Poll every other node once and commit what changed, as the leader
    /// of `term` (every decision is fenced by it: see `Node::decide`).
    pub async fn tick(&mut self, node: &Node, term: u64) {
        let interval = Duration::from_millis(node.config().liveness.poll_interval_ms);
        let threshold = node.config().liveness.missed_polls;
        let members: Vec<(NodeId, String, NodeStatus)> = node.read(|s, _| {
            s.nodes
                .iter()
                .filter(|n| n.id != node.id())
                .map(|n| (n.id, n.grpc_addr.clone(), n.status))
                .collect()
        });
        // The leader answers for itself: if it was declared down before it
        // came back and won an election, it is evidently up.
        let me_down = node.read(|s, _| {
            s.nodes.get(node.id()).is_some_and(|n| matches!(n.status, NodeStatus::Down { .. }))
        });
        if me_down {
            if let Err(e) = node.decide(term, Command::NodeUp { id: node.id() }).await {
                warn!(error = %e, "declaring the leader itself up failed");
            }
        }
        let mut polls = JoinSet::new();
        for (id, addr, status) in members {
            let node = node.clone();
            polls.spawn(async move { (id, status, poll(&node, id, &addr, interval).await) });
        }
        while let Some(Ok((id, status, answer))) = polls.join_next().await {
            let missed = self.missed.entry(id).or_insert(0);
            if let Some(wall_ms) = answer {
                node.clock().record_member(id, wall_ms);
                *missed = 0;
                if matches!(status, NodeStatus::Down { .. }) {
                    match node.decide(term, Command::NodeUp { id }).await {
                        Ok(_) => info!(node = id, "node answers again: declared up"),
                        Err(e) => warn!(node = id, error = %e, "declaring node up failed"),
                    }
                }
            } else {
                *missed = missed.saturating_add(1);
                let may = node.read(|s, _| may_declare_down(s, id));
                if *missed >= threshold && !matches!(status, NodeStatus::Down { .. }) && !may {
                    warn!(
                        node = id,
                        "node missed polls but too few others are up; not declaring it down"
                    );
                } else if *missed >= threshold && !matches!(status, NodeStatus::Down { .. }) {
                    match node.decide(term, Command::NodeDown { id }).await {
                        Ok(_) => {
                            warn!(node = id, missed = *missed, "node missed polls: declared down")
                        }
                        Err(e) => warn!(node = id, error = %e, "declaring node down failed"),
                    }
                }
            }
        }
    }
}

/// Whether `id` may be declared down: only while a majority of the node
/// table would still be alive (up or draining) afterwards. A leader that
/// can still commit is in touch with a majority, so when its polls say
/// otherwise the polls are wrong — the leader itself is starved or cut off
/// — and declaring node after node down would only move (or, with nobody
/// left, release) calls for nothing. Found by the chaos harness: an
/// overloaded leader declared three of five nodes down within 50 ms.
pub fn may_declare_down(state: &State, id: NodeId) -> bool {
    let total = state.nodes.iter().count();
    let alive_after = state
        .nodes
        .iter()
        .filter(|n| n.id != id && !matches!(n.status, NodeStatus::Down { .. }))
        .count();
    alive_after > total / 2
}

/// One poll: does `id` at `addr` answer within `timeout`? If so, with its
/// wall clock.
async fn poll(node: &Node, id: NodeId, addr: &str, timeout: Duration) -> Option<u64> {
    node.ping(id, addr, timeout).await.map(|r| r.wall_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_storage::state::apply;

    #[test]
    fn a_majority_must_stay_alive() {
        let mut s = State::default();
        let mut i = 0;
        let mut run = |s: &mut State, c: Command| {
            i += 1;
            assert!(apply(s, i, 0, &c).error().is_none());
        };
        for id in 1..=5 {
            run(
                &mut s,
                Command::PutNode {
                    id,
                    grpc_addr: "a:1".into(),
                    sip_addr: String::new(),
                    capacity: 0,
                },
            );
        }
        assert!(may_declare_down(&s, 1));
        run(&mut s, Command::NodeDown { id: 1 });
        run(&mut s, Command::DrainNode { id: 5 });
        assert!(may_declare_down(&s, 2), "4 of 5 alive (draining counts): 3 left");
        run(&mut s, Command::NodeDown { id: 2 });
        assert!(!may_declare_down(&s, 3), "only 2 of 5 would be left");
        assert!(!may_declare_down(&s, 5));
    }
}
