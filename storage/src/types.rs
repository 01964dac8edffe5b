//! The openraft type configuration and short aliases for the openraft types
//! the rest of the crate (and the node) uses.
//!
//! Owns: [`TypeConfig`], which binds openraft's generic parameters to
//! Switchboard's payload ([`Proposal`]) and response ([`Outcome`]), and the
//! aliases below.
//!
//! Does not own: the payload and response types themselves (they live in
//! [`crate::state`]), or any storage behaviour.

use crate::state::{Outcome, Proposal};

openraft::declare_raft_types!(
    /// Switchboard's openraft type configuration: a log entry carries a
    /// [`Proposal`], applying it yields an [`Outcome`], nodes are identified by
    /// `u64` and addressed with [`openraft::BasicNode`], and snapshots travel as
    /// an in-memory byte buffer.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft node id (the same number as [`crate::state::NodeId`]).
pub type NodeId = u64;

/// How a Raft node is addressed.
pub type Node = openraft::BasicNode;

/// A running Raft instance over [`TypeConfig`].
pub type Raft = openraft::Raft<TypeConfig>;

/// Identifies one log entry: the leader that proposed it and its index.
pub type LogId = openraft::LogId<NodeId>;

/// A term plus the node voted for (and whether that vote is committed).
pub type Vote = openraft::Vote<NodeId>;

/// One Raft log entry carrying a [`Proposal`], a membership change or nothing.
pub type Entry = openraft::Entry<TypeConfig>;

/// What an entry carries.
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;

/// A cluster membership configuration.
pub type Membership = openraft::Membership<NodeId, Node>;

/// A membership configuration plus the id of the log entry that set it.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;

/// What a snapshot covers: its last log id, its membership and its id.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;

/// A snapshot: its [`SnapshotMeta`] plus the encoded data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// The last purged and the last present log id of a log store.
pub type LogState = openraft::LogState<TypeConfig>;

/// The error every openraft storage method returns.
pub type StorageError = openraft::StorageError<NodeId>;

/// The I/O flavour of [`StorageError`].
pub type StorageIOError = openraft::StorageIOError<NodeId>;
