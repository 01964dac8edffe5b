//! Tasks only the leader runs. Each has its own interval and, at every
//! tick, checks that this node is the leader and notes the term it leads
//! in; a node that is not forgets its counts, so a new leader starts its
//! own. Every decision is committed with `Node::decide`: proposed on this
//! node only and fenced by that term, so a deposed leader's stale view
//! never reaches the state through the new leader.
//!
//! - housekeeping: make the replicated policy match this node's
//!   configuration (the cluster's policy is the current leader's, so keep
//!   the nodes' configurations equal); commit `ExpireBindings` when a
//!   binding has expired; purge the registrations of nodes that stayed down
//!   for `purge_after_s`; tick the replicated clock when no entry has
//!   moved it for a while; and install the cluster's SIP nonce secret
//!   when the state has none yet;
//! - [`liveness`]: poll members, commit `NodeDown` / `NodeUp`;
//! - [`probe`]: SIP OPTIONS keep-alives to gateways, commit status changes.

pub mod liveness;
pub mod probe;

use std::time::Duration;

use switchboard_storage::state::nodes::NodeStatus;
use switchboard_storage::state::users::SipSecret;
use switchboard_storage::state::{Command, NodeId, Policy, State, Takeover};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::node::Node;

/// The policy this node's configuration asks for.
pub fn configured_policy(node: &Node) -> Policy {
    let c = node.config();
    Policy {
        takeover: if c.calls.takeover == "cold" { Takeover::Cold } else { Takeover::Hot },
        purge_registrations_on_node_down: c.registrations.purge_on_node_down,
        purge_after_ms: c.registrations.purge_after_s.saturating_mul(1_000),
        max_clock_step_ms: c.registrations.max_clock_step_ms,
    }
}

/// The clock is ticked when the leader's stamp is this far ahead of it.
const TICK_AFTER_MS: u64 = 1_000;
/// Most ticks in one housekeeping round (catching up after an outage).
const MAX_TICKS_PER_ROUND: usize = 50;

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
                if let Some(term) = node.leader_term() {
                    housekeeping(&node, term).await;
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
                if let Some(term) = node.leader_term() {
                    live.tick(&node, term).await;
                } else {
                    live.reset();
                    node.clock().forget_members();
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
                if let Some(term) = node.leader_term() {
                    prober.tick(&node, term).await;
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

async fn housekeeping(node: &Node, term: u64) {
    let wanted = configured_policy(node);
    if node.read(|s, _| s.policy != wanted) {
        match node.decide(term, Command::SetPolicy(wanted)).await {
            Ok(_) => debug!(?wanted, "policy set from the leader's configuration"),
            Err(e) => warn!(error = %e, "setting the policy failed; will retry"),
        }
    }
    tick_clock(node, term).await;
    install_sip_secret(node, term).await;
    let now = node.cluster_now();
    let (expired, due) = node.read(|s, _| (s.registrations.any_expired(now), purges_due(s, now)));
    if expired {
        if let Err(e) = node.decide(term, Command::ExpireBindings).await {
            warn!(error = %e, "expiry sweep failed; will retry");
        }
    }
    for id in due {
        match node.decide(term, Command::PurgeNodeRegistrations { id }).await {
            Ok(_) => warn!(node = id, "node stayed down: its registrations are purged"),
            Err(e) => warn!(node = id, error = %e, "purging a down node's registrations failed"),
        }
    }
}

/// Propose the SIP nonce secret once: 32 bytes from the OS, only while
/// the state has none. If two leaders race, `apply` keeps the first that
/// commits and ignores the other, so the secret never changes once set.
async fn install_sip_secret(node: &Node, term: u64) {
    if node.read(|s, _| s.sip_secret.is_some()) {
        return;
    }
    let mut key = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut key) {
        warn!(error = %e, "no randomness from the OS for the SIP nonce secret; will retry");
        return;
    }
    match node.decide(term, Command::SetSipSecret(SipSecret(key))).await {
        Ok(_) => debug!("SIP nonce secret installed"),
        Err(e) => warn!(error = %e, "installing the SIP nonce secret failed; will retry"),
    }
}

/// Nodes that have stayed down past the policy's `purge_after_ms` (by
/// `now`) and still control registrations.
pub fn purges_due(s: &State, now: u64) -> Vec<NodeId> {
    if !s.policy.purge_registrations_on_node_down || s.policy.purge_after_ms == 0 {
        return Vec::new();
    }
    s.nodes
        .iter()
        .filter(|n| match n.status {
            NodeStatus::Down { since_ms } => {
                since_ms.saturating_add(s.policy.purge_after_ms) <= now
                    && s.registrations.iter().any(|(_, bs)| bs.iter().any(|b| b.node == n.id))
            }
            NodeStatus::Up | NodeStatus::Draining => false,
        })
        .map(|n| n.id)
        .collect()
}

/// Commit clock ticks while the leader's stamp is well ahead of the
/// replicated clock (an idle cluster, or catching up after an outage at
/// most `max_clock_step_ms` per entry).
async fn tick_clock(node: &Node, term: u64) {
    for _ in 0..MAX_TICKS_PER_ROUND {
        let clock = node.read(|s, _| s.clock_ms);
        if node.stamp_now() < clock.saturating_add(TICK_AFTER_MS) {
            return;
        }
        if let Err(e) = node.decide(term, Command::Tick).await {
            debug!(error = %e, "clock tick failed; will retry");
            return;
        }
    }
}
