//! Tasks only the leader runs. Each has its own interval and, at every
//! tick, checks that this node is the leader; a node that is not forgets
//! its counts, so a new leader starts its own.
//!
//! - housekeeping: make the replicated policy match this node's
//!   configuration (the cluster's policy is the current leader's, so keep
//!   the nodes' configurations equal) and commit `ExpireBindings` when a
//!   binding has expired;
//! - [`liveness`]: poll members, commit `NodeDown` / `NodeUp`;
//! - [`probe`]: SIP OPTIONS keep-alives to gateways, commit status changes.

pub mod liveness;
pub mod probe;

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
        takeover: if c.calls.takeover == "cold" { Takeover::Cold } else { Takeover::Hot },
        purge_registrations_on_node_down: c.registrations.purge_on_node_down,
    }
}

fn is_leader(node: &Node) -> bool {
    let m = node.raft().metrics();
    let m = m.borrow();
    m.state == ServerState::Leader && m.current_leader == Some(node.id())
}

/// Run every leader task until `stop` fires.
pub async fn run(node: Node, stop: watch::Receiver<bool>) {
    let c = node.config().clone();
    let mut tasks = tokio::task::JoinSet::new();
    {
        let node = node.clone();
        let stop = stop.clone();
        tasks.spawn(every(c.registrations.sweep_interval_ms, stop, move || {
            let node = node.clone();
            async move {
                if is_leader(&node) {
                    housekeeping(&node).await;
                }
            }
        }));
    }
    {
        let node = node.clone();
        let stop = stop.clone();
        let live = std::sync::Arc::new(tokio::sync::Mutex::new(liveness::Liveness::default()));
        tasks.spawn(every(c.liveness.poll_interval_ms, stop, move || {
            let node = node.clone();
            let live = live.clone();
            async move {
                let mut live = live.lock().await;
                if is_leader(&node) {
                    live.tick(&node).await;
                } else {
                    live.reset();
                }
            }
        }));
    }
    if c.gateways.probe_interval_ms > 0 {
        let node = node.clone();
        let prober = std::sync::Arc::new(tokio::sync::Mutex::new(probe::Prober::default()));
        tasks.spawn(every(c.gateways.probe_interval_ms, stop.clone(), move || {
            let node = node.clone();
            let prober = prober.clone();
            async move {
                let mut prober = prober.lock().await;
                if is_leader(&node) {
                    prober.tick(&node).await;
                } else {
                    prober.reset();
                }
            }
        }));
    }
    while tasks.join_next().await.is_some() {}
}

/// Call `f` every `ms` milliseconds (never overlapping) until `stop` fires.
async fn every<F, Fut>(ms: u64, mut stop: watch::Receiver<bool>, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(Duration::from_millis(ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = f() => {}
            _ = stop.changed() => return,
        }
    }
}

async fn housekeeping(node: &Node) {
    let wanted = configured_policy(node);
    if node.read(|s, _| s.policy != wanted) {
        match node.write(Command::SetPolicy(wanted)).await {
            Ok(_) => debug!(?wanted, "policy set from the leader's configuration"),
            Err(e) => warn!(error = %e, "setting the policy failed; will retry"),
        }
    }
    let now = now_ms();
    let expired = node.read(|s, _| {
        s.registrations.iter().any(|(_, bindings)| bindings.iter().any(|b| !b.is_live(now)))
    });
    if expired {
        if let Err(e) = node.write(Command::ExpireBindings).await {
            warn!(error = %e, "expiry sweep failed; will retry");
        }
    }
}
