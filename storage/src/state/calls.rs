//! The call-state table: calls in progress, each with an owner node and a
//! stand-by node (seeds 003 and 004), plus per-node and per-gateway load
//! counters kept in step with it so that capacity checks and stand-by choice
//! do not scan every call.

use std::collections::BTreeMap;

use imbl::OrdMap;

use serde::{Deserialize, Serialize};

use super::NodeId;

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallState {
    /// INVITE seen, not yet ringing.
    Setup,
    /// The far end is alerting.
    Ringing,
    /// Answered.
    Connected,
    /// On hold.
    Held,
    /// Ended; a released call leaves the table.
    Released,
}

/// Why a call was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReason {
    /// A client ended it (EndCall, or an update to `Released`).
    Normal,
    /// Its owner went down under the cold policy, or no node could take it.
    OwnerFailed,
}

/// One call in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Unique id.
    pub call_id: String,
    /// Calling party.
    pub from: String,
    /// Called party.
    pub to: String,
    /// Current state.
    pub state: CallState,
    /// The node that handles the call.
    pub owner: NodeId,
    /// The node that takes over if the owner dies; `None` when no other live node exists.
    pub standby: Option<NodeId>,
    /// The gateway carrying the call, if any.
    pub gateway: Option<String>,
    /// Compare-and-set version; starts at 1, bumped by every state update.
    pub version: u64,
    /// Replicated-clock time the call started.
    pub started_at_ms: u64,
    /// Replicated-clock time of the last change.
    pub updated_at_ms: u64,
}

/// How much a node carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Calls it owns.
    pub owned: u32,
    /// Calls it stands by for.
    pub standby: u32,
}

/// The call table and its load counters.
///
/// Invariant (checked by [`Calls::check_invariants`] in tests): `node_load`
/// and `gateway_load` equal what a full recount of `by_id` gives, and hold no
/// zero entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calls {
    /// A persistent map: a snapshot clones it in O(1).
    by_id: OrdMap<String, Call>,
    node_load: BTreeMap<NodeId, NodeLoad>,
    gateway_load: BTreeMap<String, u32>,
}

impl Calls {
    /// The call, if in progress.
    pub fn get(&self, call_id: &str) -> Option<&Call> {
        self.by_id.get(call_id)
    }

    /// Every call, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Call> {
        self.by_id.values()
    }

    /// Number of calls in progress.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Load of a node.
    pub fn node_load(&self, id: NodeId) -> NodeLoad {
        self.node_load.get(&id).copied().unwrap_or_default()
    }

    /// Calls in progress through a gateway.
    pub fn gateway_load(&self, id: &str) -> u32 {
        self.gateway_load.get(id).copied().unwrap_or(0)
    }

    /// Ids of the calls owned by, or stood by at, `node` (a full scan; only
    /// node-down and drain use it).
    pub(crate) fn ids_touching(&self, node: NodeId) -> Vec<String> {
        self.by_id
            .values()
            .filter(|c| c.owner == node || c.standby == Some(node))
            .map(|c| c.call_id.clone())
            .collect()
    }

    /// Insert a new call (the id must be free).
    pub(crate) fn insert(&mut self, call: Call) {
        self.count(&call, 1);
        let prev = self.by_id.insert(call.call_id.clone(), call);
        debug_assert!(prev.is_none(), "insert over an existing call: {prev:?}");
    }

    /// Remove a call.
    pub(crate) fn remove(&mut self, call_id: &str) -> Option<Call> {
        let call = self.by_id.remove(call_id)?;
        self.count(&call, -1);
        Some(call)
    }

    /// Change a call through `f`, keeping the load counters right.
    pub(crate) fn modify<R>(&mut self, call_id: &str, f: impl FnOnce(&mut Call) -> R) -> Option<R> {
        let mut call = self.by_id.remove(call_id)?;
        self.count(&call, -1);
        let r = f(&mut call);
        self.count(&call, 1);
        self.by_id.insert(call.call_id.clone(), call);
        Some(r)
    }

    fn count(&mut self, call: &Call, delta: i32) {
        fn bump(v: &mut u32, delta: i32) {
            *v = v.saturating_add_signed(delta);
        }
        bump(&mut self.node_load.entry(call.owner).or_default().owned, delta);
        if let Some(s) = call.standby {
            bump(&mut self.node_load.entry(s).or_default().standby, delta);
        }
        self.node_load.retain(|_, l| *l != NodeLoad::default());
        if let Some(g) = &call.gateway {
            let v = self.gateway_load.entry(g.clone()).or_default();
            bump(v, delta);
            if *v == 0 {
                self.gateway_load.remove(g);
            }
        }
    }

    /// Recount the load from the calls and compare; `Err` names the first difference.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut fresh = Calls::default();
        for c in self.by_id.values() {
            fresh.count(c, 1);
        }
        if fresh.node_load != self.node_load {
            return Err(format!("node load {:?} != recount {:?}", self.node_load, fresh.node_load));
        }
        if fresh.gateway_load != self.gateway_load {
            return Err(format!(
                "gateway load {:?} != recount {:?}",
                self.gateway_load, fresh.gateway_load
            ));
        }
        for c in self.by_id.values() {
            if c.standby == Some(c.owner) {
                return Err(format!("call {} has its owner as stand-by: {c:?}", c.call_id));
            }
        }
        Ok(())
    }
}
