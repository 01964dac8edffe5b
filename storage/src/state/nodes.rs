//! The node table: every Switchboard node, its addresses, capacity and
//! liveness as the leader last declared it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::NodeId;

/// Liveness of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Answering polls; may own and stand by for calls.
    Up,
    /// Declared dead by the leader at `since_ms` (replicated clock).
    Down {
        /// When it was declared down.
        since_ms: u64,
    },
    /// Being emptied on purpose: takes no new calls.
    Draining,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node id (= Raft node id).
    pub id: NodeId,
    /// gRPC address, `host:port`.
    pub grpc_addr: String,
    /// SIP address, `host:port` (may be empty).
    pub sip_addr: String,
    /// Most concurrent calls it may own; 0 = no limit.
    pub capacity: u32,
    /// Liveness.
    pub status: NodeStatus,
}

impl Node {
    /// Whether new calls may be placed on (or stood by at) this node.
    pub fn is_up(&self) -> bool {
        self.status == NodeStatus::Up
    }
}

/// The node table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nodes {
    by_id: BTreeMap<NodeId, Node>,
}

impl Nodes {
    /// The node, if known.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.by_id.get(&id)
    }

    /// Every node, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.by_id.values()
    }

    /// The node, mutable.
    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.by_id.get_mut(&id)
    }

    /// Insert or replace.
    pub(crate) fn put(&mut self, node: Node) {
        self.by_id.insert(node.id, node);
    }

    /// Remove.
    pub(crate) fn remove(&mut self, id: NodeId) -> Option<Node> {
        self.by_id.remove(&id)
    }
}
