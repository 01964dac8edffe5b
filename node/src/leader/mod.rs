//! Tasks only the leader runs. Each tick, a node that is leader:
//! - makes the replicated policy match its configuration (`calls.takeover`,
//!   `registrations.purge_on_node_down`): the cluster's policy is the current
//!   leader's, so keep the nodes' configurations equal;
//! - commits `ExpireBindings` when some binding has expired, so lapsed
//!   registrations leave the state (queries already ignore them).
//!
//! A new leader picks these up on its next tick; nothing here needs a
//! hand-over, because all the state the tasks act on is replicated.

use std::time::Duration;

use openraft::ServerState;
use switchboard_storage::state::{Command, Policy, Takeover};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::batch::now_ms;
use crate::node::Node;

/// The policy this node's configuration asks for.
pub fn configured_policy(node: &Node) -> Policy {
    let c = node.config();
    Policy {
        takeover: if c.calls.takeover == "cold" {
            Takeover::Cold
        } else {
            Takeover::Hot
        },
        purge_registrations_on_node_down: c.registrations.purge_on_node_down,
    }
}

/// Run the leader tasks until `stop` fires.
pub async fn run(node: Node, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(node.config().registrations.sweep_interval_ms);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let is_leader = {
            let m = node.raft().metrics();
            let m = m.borrow();
            m.state == ServerState::Leader && m.current_leader == Some(node.id())
        };
        if is_leader {
            leader_tick(&node).await;
        }
    }
}

async fn leader_tick(node: &Node) {
    let wanted = configured_policy(node);
    if node.read(|s, _| s.policy != wanted) {
        match node.write(Command::SetPolicy(wanted)).await {
            Ok(_) => debug!(?wanted, "policy set from the leader's configuration"),
            Err(e) => warn!(error = %e, "setting the policy failed; will retry"),
        }
    }
    let now = now_ms();
    let expired = node.read(|s, _| {
        s.registrations
            .iter()
            .any(|(_, bindings)| bindings.iter().any(|b| !b.is_live(now)))
    });
    if expired {
        if let Err(e) = node.write(Command::ExpireBindings).await {
            warn!(error = %e, "expiry sweep failed; will retry");
        }
    }
}
