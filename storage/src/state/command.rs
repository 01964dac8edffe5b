//! The typed log payload: [`Command`] (what a client asked for), [`Proposal`]
//! (a command stamped with the proposer's clock: the Raft entry payload) and
//! [`Outcome`] (what applying it did).
//!
//! These are the on-disk format of the log. They are separate from the gRPC
//! wire types on purpose: the two evolve independently, and a change here
//! needs a new codec format version.

use serde::{Deserialize, Serialize};

use super::calls::{Call, CallState, ReleaseReason};
use super::dialplan::Route;
use super::gateways::{GatewayStatus, ProbeVerdict, ReportedOutcome};
use super::nodes::NodeStatus;
use super::registrations::Binding;
use super::tokens::Role;
use super::users::SipSecret;
use super::{NodeId, Policy};

/// Longest accepted identifier (number, device id, gateway id, call id, ...), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted free-form text (contact URI, address, device name, reason), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most commands one `Batch` may carry.
pub const MAX_BATCH: usize = 4096;

/// A command stamped by its proposer: this is the application payload of a
/// Raft entry. `at_ms` is the proposer's wall clock in milliseconds since the
/// Unix epoch; `apply` folds it into the replicated clock, which never goes
/// backwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposer's clock, ms since the Unix epoch.
    pub at_ms: u64,
    /// The write itself.
    pub command: Command,
}

/// One kind of write to the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add or replace the binding of `device_id` under `number`. The binding
    /// gets a fresh generation (see [`Binding::generation`]).
    Register {
        /// The registered number (digits, `+`, `*`, `#`).
        number: String,
        /// Identifies the device among the number's bindings.
        device_id: String,
        /// Where to reach the device (a SIP URI).
        contact: String,
        /// Human-readable device name (may be empty).
        device_name: String,
        /// The device's MAC address (may be empty).
        mac: String,
        /// The node that controls this registration (where the device registered).
        node: NodeId,
        /// Preference among bindings, 0..=1000 (SIP q-value times 1000).
        q: u16,
        /// Lifetime from the entry's time, in ms; must be > 0.
        ttl_ms: u64,
    },
    /// Extend a binding's expiry (the device heartbeat). `generation`, when
    /// given, must match the binding's: a refresh never revives a newer one.
    Refresh {
        /// The registered number.
        number: String,
        /// The device whose binding is refreshed.
        device_id: String,
        /// The generation being refreshed, if the refresher knows it.
        generation: Option<u64>,
        /// New lifetime from the entry's time, in ms; must be > 0.
        ttl_ms: u64,
    },
    /// Remove bindings of `number`: only `device_id`'s when given, and only
    /// the binding created at `generation` when given. A delete whose
    /// generation is no longer current removes nothing (the seed-002 race).
    Unregister {
        /// The registered number.
        number: String,
        /// Restrict the delete to this device.
        device_id: Option<String>,
        /// Restrict the delete to the binding with this generation.
        generation: Option<u64>,
    },
    /// A SIP REGISTER (RFC 3261 §10.3 steps 6-8), applied as one unit: either
    /// every contact is applied or, when one is out of order, none is.
    /// Each binding remembers the Call-ID and CSeq that last wrote it; a
    /// request with the same Call-ID and a CSeq that is not higher is
    /// refused ([`ApplyError::OutOfOrder`]), so a late or replayed REGISTER
    /// never undoes a newer one, whichever node it reached.
    SipRegister {
        /// The address-of-record's user part (a number).
        number: String,
        /// The request's Call-ID.
        call_id: String,
        /// The request's CSeq number.
        cseq: u32,
        /// The node that received the REGISTER: it controls the bindings.
        node: NodeId,
        /// `Contact: *` with `Expires: 0`: remove every binding of the number.
        remove_all: bool,
        /// The contacts to add, refresh (ttl > 0) or remove (ttl 0).
        contacts: Vec<SipContact>,
    },
    /// Remove every binding whose expiry is at or before the replicated clock
    /// (committed by the leader's sweep).
    ExpireBindings,

    /// Add or replace the dial-plan route with this pattern.
    PutRoute(Route),
    /// Remove the dial-plan route with this pattern.
    DeleteRoute {
        /// The pattern of the route to remove.
        pattern: String,
    },

    /// Add or replace a gateway's configuration; its status and counters are kept.
    PutGateway {
        /// Gateway id.
        id: String,
        /// The group (trunk) a dial-plan route selects it by.
        group: String,
        /// `host:port` it is reached at.
        address: String,
        /// Lower is tried first (as in DNS SRV).
        priority: u32,
        /// Relative share among gateways of equal priority.
        weight: u32,
        /// Most concurrent calls; 0 = no limit.
        capacity: u32,
    },
    /// Remove a gateway.
    DeleteGateway {
        /// Gateway id.
        id: String,
    },
    /// A proxy's report of how a call attempt through a gateway went.
    ReportOutcome {
        /// Gateway id.
        id: String,
        /// Ok, timeout or failure.
        outcome: ReportedOutcome,
        /// How long a timed-out / failed gateway stays out of service, in ms.
        retry_after_ms: u64,
    },
    /// The leader's keep-alive prober changed its mind about a gateway.
    ProbeResult {
        /// Gateway id.
        id: String,
        /// Reachable or not.
        verdict: ProbeVerdict,
        /// For `Unreachable`: how long before it is offered again, in ms.
        retry_after_ms: u64,
    },

    /// Add a node or change its addresses and capacity; its status is kept
    /// (a new node starts `Up`).
    PutNode {
        /// Node id (= Raft node id).
        id: NodeId,
        /// gRPC address, `host:port`.
        grpc_addr: String,
        /// SIP address, `host:port` (may be empty).
        sip_addr: String,
        /// Most concurrent calls the node owns; 0 = no limit.
        capacity: u32,
    },
    /// Forget a node. Refused while it still owns calls.
    RemoveNode {
        /// Node id.
        id: NodeId,
    },
    /// The leader declares a node dead: its calls are taken over (or released,
    /// by policy), calls it stood by for get a new stand-by, and its
    /// registrations are purged when the policy says so.
    NodeDown {
        /// Node id.
        id: NodeId,
    },
    /// A node answers again. It does not take its old calls back.
    NodeUp {
        /// Node id.
        id: NodeId,
    },
    /// Move calls off a node on purpose (the seed's requested switch-over).
    DrainNode {
        /// Node id.
        id: NodeId,
    },
    /// Set the cluster-wide policy.
    SetPolicy(Policy),

    /// Record a new call. The owner defaults to the live node with the most
    /// free capacity; the stand-by is chosen deterministically.
    StartCall {
        /// Unique call id (e.g. the SIP Call-ID).
        call_id: String,
        /// Calling party.
        from: String,
        /// Called party.
        to: String,
        /// The owner node, if the caller chose it.
        owner: Option<NodeId>,
        /// The gateway carrying the call, if any.
        gateway: Option<String>,
    },
    /// Compare-and-set a call's state: applies only when the call's version is
    /// `expected_version`; bumps the version.
    UpdateCall {
        /// Call id.
        call_id: String,
        /// The new state. `Released` ends the call.
        state: CallState,
        /// The version the writer last saw.
        expected_version: u64,
    },
    /// End a call (compare-and-set when `expected_version` is given).
    EndCall {
        /// Call id.
        call_id: String,
        /// The version the writer last saw, if it wants a conditional end.
        expected_version: Option<u64>,
    },

    /// Advance the replicated clock and nothing else: the leader commits
    /// one when no other entry has done so for a while, so that time moves
    /// on an idle cluster too.
    Tick,
    /// Purge the registrations controlled by node `id`, which has stayed
    /// down for the policy's `purge_after_ms`. Refused unless the node is
    /// still down and has been for that long (by the replicated clock).
    PurgeNodeRegistrations {
        /// Node id.
        id: NodeId,
    },

    /// Add or replace a SIP user's digest credentials (the HA1s are
    /// computed by the client; the password never reaches the cluster).
    PutUser {
        /// SIP username: the registered number.
        user: String,
        /// The realm the HA1s were computed for.
        realm: String,
        /// `MD5(user:realm:password)`.
        ha1_md5: [u8; 16],
        /// `SHA-256(user:realm:password)`.
        ha1_sha256: [u8; 32],
    },
    /// Remove a SIP user's credentials.
    DeleteUser {
        /// SIP username.
        user: String,
    },
    /// Install the cluster's SIP nonce secret. Applied only when none is
    /// set: two leaders that both found none and raced each propose one,
    /// the first to commit wins and the second changes nothing, so the
    /// secret (and every nonce minted with it) never flips.
    SetSipSecret(SipSecret),

    /// Create a client API token. The node that received the request drew
    /// the secret and sends only its hash; an existing id is refused (ids
    /// are random, so a clash is a bug or a replay, never a rotation).
    PutToken {
        /// The token's public id.
        id: String,
        /// What it may do.
        role: Role,
        /// SHA-256 of the secret.
        secret_sha256: [u8; 32],
        /// A name for operators; may be empty.
        name: String,
        /// Lifetime from the entry's time, ms; `None` = no expiry.
        ttl_ms: Option<u64>,
    },
    /// Delete a client API token. The last admin token cannot be deleted
    /// while other tokens exist: nobody could manage them any more.
    DeleteToken {
        /// The token's id.
        id: String,
    },

    /// A decision the leader took from its own view while leading in
    /// `term` (liveness, probe results, the expiry sweep, the policy, clock
    /// ticks). Applied only when the entry's own term is `term`: a deposed
    /// leader's stale decision that reaches the log in a later term (for
    /// instance forwarded to, or re-proposed at, the new leader) is refused
    /// and changes nothing.
    Leader {
        /// The term the decision was taken in.
        term: u64,
        /// The decision (not a batch, not itself fenced or once-only).
        command: Box<Command>,
    },
    /// A client write applied at most once per `(client, seq)`: a retry
    /// with the same pair is not applied again and answers the first
    /// outcome (see `requests`).
    Once {
        /// The client's own id.
        client: String,
        /// The client's number for this write; a retry reuses it.
        seq: u64,
        /// The write (not a batch, not fenced, not once-only).
        command: Box<Command>,
    },

    /// Many client writes in one log entry (group commit). Each is applied in
    /// order and has its own outcome; one failing does not undo the others.
    /// Batches do not nest.
    Batch(Vec<Command>),
}

/// One Contact of a [`Command::SipRegister`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipContact {
    /// The device: its `+sip.instance` when it sent one, else its contact URI.
    pub device_id: String,
    /// The contact URI.
    pub contact: String,
    /// What the device calls itself (its User-Agent), may be empty.
    pub device_name: String,
    /// Preference, 0..=1000 (q-value x 1000).
    pub q: u16,
    /// Lifetime from the entry's time, ms; 0 removes the binding.
    pub ttl_ms: u64,
}

/// Most contacts one SIP REGISTER may carry.
pub const MAX_SIP_CONTACTS: usize = 16;

/// Why a command changed nothing. Returned inside [`Outcome::Error`]; never a panic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// A SIP REGISTER whose Call-ID matches a binding's and whose CSeq is
    /// not higher than the one that wrote it (RFC 3261 §10.3 step 7).
    #[error(
        "REGISTER out of order: binding {device_id} of {number} was written by CSeq {stored} of \
         the same Call-ID, this request has CSeq {cseq}"
    )]
    OutOfOrder {
        /// The number.
        number: String,
        /// The binding that is newer.
        device_id: String,
        /// The CSeq that wrote it.
        stored: u32,
        /// The request's CSeq.
        cseq: u32,
    },
    /// The command is malformed (bad digits, empty id, oversized field, ...).
    #[error("invalid command: {0}")]
    Invalid(String),
    /// The thing the command names does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A compare-and-set found another version.
    #[error("version conflict on call {call_id}: expected {expected}, found {actual}")]
    VersionConflict {
        /// The call.
        call_id: String,
        /// What the writer expected.
        expected: u64,
        /// What the state holds.
        actual: u64,
    },
    /// The thing to create already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The command conflicts with the current state (e.g. removing a node that owns calls).
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// No node or gateway has room.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// A leader's decision reached the log in another term than the one it
    /// was taken in (the proposer was deposed meanwhile).
    #[error("stale leader decision: taken in term {decided}, committed in term {entry}")]
    StaleTerm {
        /// The term the decision was taken in.
        decided: u64,
        /// The term of the entry that carried it.
        entry: u64,
    },
    /// A once-only request older than the client's window.
    #[error("request {seq} of client {client:?} is older than the {window} kept (oldest {oldest}); it cannot be told apart from a new write")]
    RequestTooOld {
        /// The client.
        client: String,
        /// The request's seq.
        seq: u64,
        /// The oldest seq still kept.
        oldest: u64,
        /// The window size.
        window: usize,
    },
}

/// A call that changed owner or stand-by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMove {
    /// The call after the move.
    pub call: Call,
    /// Its owner before the move.
    pub previous_owner: NodeId,
}

/// What applying one command did. Outcomes are the raw material of the
/// event stream, so they name what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A Raft entry without an application command (blank or membership).
    Nothing,
    /// A binding was created or replaced (`replaced` holds the old one).
    Registered {
        /// The number.
        number: String,
        /// The new binding.
        binding: Binding,
        /// The binding it replaced, if the device was already registered.
        replaced: Option<Binding>,
    },
    /// A binding's expiry moved.
    Refreshed {
        /// The number.
        number: String,
        /// The binding after the refresh.
        binding: Binding,
    },
    /// Bindings removed by `Unregister` (empty for a stale delete).
    Unregistered {
        /// The number.
        number: String,
        /// What was removed.
        removed: Vec<Binding>,
    },
    /// A SIP REGISTER applied: what it added or refreshed, what it removed,
    /// and every binding of the number afterwards (the 200 OK lists them).
    SipRegistered {
        /// The number.
        number: String,
        /// Bindings added or refreshed, in contact order.
        registered: Vec<Binding>,
        /// Bindings removed.
        removed: Vec<Binding>,
        /// Every binding of the number after the request (live or not).
        bindings: Vec<Binding>,
    },
    /// Bindings removed because they expired, or because their node went down.
    BindingsRemoved {
        /// (number, binding) pairs, in number order.
        removed: Vec<(String, Binding)>,
    },
    /// A route was stored.
    RoutePut {
        /// The route's pattern.
        pattern: String,
    },
    /// A route was removed.
    RouteDeleted {
        /// The route's pattern.
        pattern: String,
    },
    /// A gateway was stored.
    GatewayPut {
        /// Gateway id.
        id: String,
    },
    /// A gateway was removed.
    GatewayDeleted {
        /// Gateway id.
        id: String,
    },
    /// A gateway report or probe was recorded.
    GatewayStatus {
        /// Gateway id.
        id: String,
        /// Status after the command.
        status: GatewayStatus,
        /// Whether the status differs from before.
        changed: bool,
    },
    /// A node was stored.
    NodePut {
        /// Node id.
        id: NodeId,
    },
    /// A node was forgotten.
    NodeRemoved {
        /// Node id.
        id: NodeId,
    },
    /// A node's status changed (down, up, draining) and what followed from it.
    NodeStatus {
        /// Node id.
        id: NodeId,
        /// Status after the command.
        status: NodeStatus,
        /// Calls whose owner or stand-by changed.
        moved: Vec<CallMove>,
        /// Calls released because nobody could take them (or cold policy).
        released: Vec<Call>,
        /// Registrations purged with the node.
        purged: Vec<(String, Binding)>,
    },
    /// The policy was set.
    PolicySet(Policy),
    /// A SIP user's credentials were stored.
    UserPut {
        /// SIP username.
        user: String,
        /// The realm they are for.
        realm: String,
        /// Whether they replaced earlier credentials.
        replaced: bool,
    },
    /// A SIP user's credentials were removed.
    UserDeleted {
        /// SIP username.
        user: String,
    },
    /// A client API token was created.
    TokenPut {
        /// Its id.
        id: String,
        /// Its role.
        role: Role,
        /// When it was created (replicated clock, ms).
        created_at_ms: u64,
        /// When it expires (replicated clock, ms), if ever.
        expires_at_ms: Option<u64>,
    },
    /// A client API token was deleted.
    TokenDeleted {
        /// Its id.
        id: String,
    },
    /// A `SetSipSecret` was applied: `installed` is false when a secret was
    /// already set (the command then changed nothing). Never carries the key.
    SipSecret {
        /// Whether this command set the secret.
        installed: bool,
    },
    /// A call was recorded.
    CallStarted(Call),
    /// A call's state changed.
    CallUpdated(Call),
    /// A call ended; `call.state` is `Released`.
    CallReleased {
        /// The call as it was at release, state `Released`.
        call: Call,
        /// Why.
        reason: ReleaseReason,
    },
    /// One outcome per command of a batch, in order.
    Batch(Vec<Outcome>),
    /// A once-only request that was applied before: the first outcome,
    /// answered again (and, unlike it, the source of no events).
    Repeated(Box<Outcome>),
    /// The command was refused and changed nothing.
    Error(ApplyError),
}

impl Outcome {
    /// The error, if the command was refused.
    pub fn error(&self) -> Option<&ApplyError> {
        match self {
            Outcome::Error(e) => Some(e),
            Outcome::Repeated(o) => o.error(),
            _ => None,
        }
    }

    /// The outcome itself, whether first or repeated.
    pub fn into_first(self) -> Outcome {
        match self {
            Outcome::Repeated(o) => *o,
            o => o,
        }
    }
}
