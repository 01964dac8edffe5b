//! The replicated state, as plain data.
//!
//! Everything under `state/` is pure: no I/O, no clock, no randomness and no
//! `HashMap` iteration order. Time arrives inside each log entry (the
//! proposer's `at_ms`, folded into a replicated clock) and every table is a
//! `BTreeMap`, so two replicas that apply the same entries hold identical
//! state and answer every query identically.
//!
//! - [`command`]: [`Command`] (one variant per kind of write), [`Proposal`]
//!   (a command plus its timestamp: the Raft entry payload) and [`Outcome`].
//! - [`apply()`]: the one function that changes the state.
//! - [`registrations`], [`dialplan`], [`gateways`], [`nodes`], [`calls`]: the tables.
//! - [`route`]: the read-side queries, `lookup` and `route`.
//! - [`users`]: SIP digest credentials (HA1 per user) and the cluster's
//!   nonce secret.

pub mod apply;
pub mod calls;
pub mod command;
pub mod dialplan;
pub mod events;
pub mod explain;
pub mod gateways;
pub mod nodes;
pub mod registrations;
pub mod requests;
pub mod route;
pub mod tokens;
pub mod users;

#[cfg(test)]
mod proptests;

pub use apply::{apply, apply_entry, validate};
pub use command::{ApplyError, Command, Outcome, Proposal};

use serde::{Deserialize, Serialize};

/// Identifies a Switchboard node; the same id is its Raft node id.
pub type NodeId = u64;

/// What the cluster does with a dead node's calls and registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Hot: calls move to their stand-by node and stay up. Cold: they are released.
    pub takeover: Takeover,
    /// Purge the registrations a node controlled once it has stayed down
    /// for `purge_after_ms` (the seed's procedure 270); when false they live
    /// until their own expiry.
    pub purge_registrations_on_node_down: bool,
    /// How long a node must stay down before its registrations are purged,
    /// ms (0 = purge at once, with `NodeDown`). Calls move at once either
    /// way; a node that is back in time keeps its registrations.
    pub purge_after_ms: u64,
    /// The most one entry may advance the replicated clock, ms (0 = no cap):
    /// a leader whose wall clock jumps ahead cannot expire everything.
    pub max_clock_step_ms: u64,
}

/// Default of [`Policy::purge_after_ms`].
pub const DEFAULT_PURGE_AFTER_MS: u64 = 60_000;
/// Default of [`Policy::max_clock_step_ms`].
pub const DEFAULT_MAX_CLOCK_STEP_MS: u64 = 5_000;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            takeover: Takeover::Hot,
            purge_registrations_on_node_down: true,
            purge_after_ms: DEFAULT_PURGE_AFTER_MS,
            max_clock_step_ms: DEFAULT_MAX_CLOCK_STEP_MS,
        }
    }
}

/// Stand-by policy for the calls of a node that goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Takeover {
    /// The stand-by node becomes the owner; state and version are kept.
    Hot,
    /// The calls are released with reason `OwnerFailed`.
    Cold,
}

/// The whole replicated state machine (minus Raft's own membership, which the
/// storage layer keeps beside it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The replicated clock: the largest `at_ms` of any applied entry.
    pub clock_ms: u64,
    /// The last binding generation handed out (a counter, see `apply`).
    pub generations: u64,
    /// Cluster-wide policy (replicated configuration).
    pub policy: Policy,
    /// Number -> device bindings (the seed's composite registration table).
    pub registrations: registrations::Registrations,
    /// Dialled-digit patterns -> targets.
    pub dial_plan: dialplan::DialPlan,
    /// Destination gateways and their status (the gateway information table).
    pub gateways: gateways::Gateways,
    /// Switchboard nodes, their capacity and liveness.
    pub nodes: nodes::Nodes,
    /// Calls in progress, with owner and stand-by.
    pub calls: calls::Calls,
    /// Recent client request ids and their outcomes (once-only retries).
    pub requests: requests::Requests,
    /// SIP username -> digest credentials (HA1s, never passwords).
    pub users: users::Users,
    /// The key stateless SIP nonces are minted and checked with; set once
    /// by the first leader that finds none (`Command::SetSipSecret`).
    pub sip_secret: Option<users::SipSecret>,
    /// Client API tokens (hashed) and their roles; none = the API is open.
    pub tokens: tokens::Tokens,
}
