//! Events: what changed, derived from an entry's [`Outcome`] — the raw
//! material of the `Watch` stream (seed 001's network-manager feed, seed
//! 004's call-tracking links). Pure: the same outcome always gives the same
//! events, in the same order.

use serde::Serialize;

use super::calls::{Call, ReleaseReason};
use super::command::Outcome;
use super::gateways::GatewayStatus;
use super::nodes::NodeStatus;
use super::registrations::Binding;
use super::{NodeId, Policy};

/// What kind of change an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A binding was created (or replaced by a new registration).
    RegistrationAdded,
    /// A binding's expiry moved (device heartbeat).
    RegistrationRefreshed,
    /// A binding was removed by an unregister or with its node.
    RegistrationRemoved,
    /// A binding was swept because it expired.
    RegistrationExpired,
    /// A dial-plan route was stored.
    RouteUpdated,
    /// A dial-plan route was removed.
    RouteRemoved,
    /// A gateway's configuration was stored.
    GatewayUpdated,
    /// A gateway was removed.
    GatewayRemoved,
    /// A gateway went in or out of service.
    GatewayStatus,
    /// A node was added or changed.
    NodeUpdated,
    /// A node was removed.
    NodeRemoved,
    /// A node was declared down.
    NodeDown,
    /// A node answers again.
    NodeUp,
    /// A node is being drained.
    NodeDraining,
    /// The cluster policy changed.
    PolicyUpdated,
    /// A SIP user's credentials were stored (the event names the user and
    /// realm only, never the digests).
    UserUpdated,
    /// A SIP user's credentials were removed.
    UserRemoved,
    /// A call started.
    CallStarted,
    /// A call's state changed.
    CallUpdated,
    /// A call changed owner or stand-by.
    CallMoved,
    /// A call ended.
    CallReleased,
}

impl EventKind {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RegistrationAdded => "registration_added",
            EventKind::RegistrationRefreshed => "registration_refreshed",
            EventKind::RegistrationRemoved => "registration_removed",
            EventKind::RegistrationExpired => "registration_expired",
            EventKind::RouteUpdated => "route_updated",
            EventKind::RouteRemoved => "route_removed",
            EventKind::GatewayUpdated => "gateway_updated",
            EventKind::GatewayRemoved => "gateway_removed",
            EventKind::GatewayStatus => "gateway_status",
            EventKind::NodeUpdated => "node_updated",
            EventKind::NodeRemoved => "node_removed",
            EventKind::NodeDown => "node_down",
            EventKind::NodeUp => "node_up",
            EventKind::NodeDraining => "node_draining",
            EventKind::PolicyUpdated => "policy_updated",
            EventKind::UserUpdated => "user_updated",
            EventKind::UserRemoved => "user_removed",
            EventKind::CallStarted => "call_started",
            EventKind::CallUpdated => "call_updated",
            EventKind::CallMoved => "call_moved",
            EventKind::CallReleased => "call_released",
        }
    }
}

/// The data an event carries (serialised as JSON for watchers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// A binding (registration events).
    Binding(Binding),
    /// Nothing beyond the key.
    None {},
    /// A gateway's new status.
    Gateway {
        /// The status.
        status: GatewayStatus,
    },
    /// A node's new status.
    Node {
        /// The status.
        status: NodeStatus,
    },
    /// The policy.
    Policy(Policy),
    /// A SIP user's realm (credentials are never in an event).
    User {
        /// The realm.
        realm: String,
    },
    /// A call as it is now.
    Call(Call),
    /// A moved call and its previous owner.
    Moved {
        /// The call after the move.
        call: Call,
        /// Its owner before.
        previous_owner: NodeId,
    },
    /// A released call and why.
    Released {
        /// The call at release.
        call: Call,
        /// Why.
        reason: ReleaseReason,
    },
}

/// One change, at the log index of the entry that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Log index of the entry.
    pub index: u64,
    /// What changed.
    pub kind: EventKind,
    /// The number, gateway id, pattern, node id or call id it is about.
    pub key: String,
    /// Details.
    pub detail: Detail,
}

/// The events of the entry at `index` whose outcome is `outcome`, appended to `out`.
pub fn events_of(index: u64, outcome: &Outcome, out: &mut Vec<Event>) {
    let mut push = |kind, key: String, detail| out.push(Event { index, kind, key, detail });
    match outcome {
        // A repeated once-only request changed nothing this time.
        Outcome::Nothing | Outcome::Error(_) | Outcome::Repeated(_) => {}
        Outcome::Registered { number, binding, .. } => {
            push(EventKind::RegistrationAdded, number.clone(), Detail::Binding(binding.clone()))
        }
        Outcome::Refreshed { number, binding } => {
            push(EventKind::RegistrationRefreshed, number.clone(), Detail::Binding(binding.clone()))
        }
        Outcome::Unregistered { number, removed } => {
            for b in removed {
                push(EventKind::RegistrationRemoved, number.clone(), Detail::Binding(b.clone()));
            }
        }
        Outcome::SipRegistered { number, registered, removed, .. } => {
            for b in removed {
                push(EventKind::RegistrationRemoved, number.clone(), Detail::Binding(b.clone()));
            }
            for b in registered {
                push(EventKind::RegistrationAdded, number.clone(), Detail::Binding(b.clone()));
            }
        }
        Outcome::BindingsRemoved { removed } => {
            for (number, b) in removed {
                push(EventKind::RegistrationExpired, number.clone(), Detail::Binding(b.clone()));
            }
        }
        Outcome::RoutePut { pattern } => {
            push(EventKind::RouteUpdated, pattern.clone(), Detail::None {})
        }
        Outcome::RouteDeleted { pattern } => {
            push(EventKind::RouteRemoved, pattern.clone(), Detail::None {})
        }
        Outcome::GatewayPut { id } => push(EventKind::GatewayUpdated, id.clone(), Detail::None {}),
        Outcome::GatewayDeleted { id } => {
            push(EventKind::GatewayRemoved, id.clone(), Detail::None {})
        }
        Outcome::GatewayStatus { id, status, changed } => {
            if *changed {
                push(EventKind::GatewayStatus, id.clone(), Detail::Gateway { status: *status });
            }
        }
        Outcome::NodePut { id } => push(EventKind::NodeUpdated, id.to_string(), Detail::None {}),
        Outcome::NodeRemoved { id } => {
            push(EventKind::NodeRemoved, id.to_string(), Detail::None {})
        }
        Outcome::NodeStatus { id, status, moved, released, purged } => {
            let kind = match status {
                NodeStatus::Up => EventKind::NodeUp,
                NodeStatus::Down { .. } => EventKind::NodeDown,
                NodeStatus::Draining => EventKind::NodeDraining,
            };
            push(kind, id.to_string(), Detail::Node { status: *status });
            for m in moved {
                push(
                    EventKind::CallMoved,
                    m.call.call_id.clone(),
                    Detail::Moved { call: m.call.clone(), previous_owner: m.previous_owner },
                );
            }
            for c in released {
                push(
                    EventKind::CallReleased,
                    c.call_id.clone(),
                    Detail::Released { call: c.clone(), reason: ReleaseReason::OwnerFailed },
                );
            }
            for (number, b) in purged {
                push(EventKind::RegistrationRemoved, number.clone(), Detail::Binding(b.clone()));
            }
        }
        Outcome::UserPut { user, realm, .. } => {
            push(EventKind::UserUpdated, user.clone(), Detail::User { realm: realm.clone() })
        }
        Outcome::UserDeleted { user } => {
            push(EventKind::UserRemoved, user.clone(), Detail::None {})
        }
        // The secret is not something a watcher can act on (and is never shown).
        Outcome::SipSecret { .. } => {}
        // Credentials: not announced to watchers (a read token must not
        // learn which tokens exist).
        Outcome::TokenPut { .. } | Outcome::TokenDeleted { .. } => {}
        Outcome::PolicySet(p) => push(EventKind::PolicyUpdated, String::new(), Detail::Policy(*p)),
        Outcome::CallStarted(c) => {
            push(EventKind::CallStarted, c.call_id.clone(), Detail::Call(c.clone()))
        }
        Outcome::CallUpdated(c) => {
            push(EventKind::CallUpdated, c.call_id.clone(), Detail::Call(c.clone()))
        }
        Outcome::CallReleased { call, reason } => push(
            EventKind::CallReleased,
            call.call_id.clone(),
            Detail::Released { call: call.clone(), reason: *reason },
        ),
        Outcome::Batch(outs) => {
            for o in outs {
                events_of(index, o, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{apply, Command, State};

    #[test]
    fn a_scripted_scenario_yields_its_events_in_order() {
        let mut s = State::default();
        let mut events = Vec::new();
        let mut index = 0;
        let mut run = |s: &mut State, cmd: Command| {
            index += 1;
            let out = apply(s, index, 0, &cmd);
            events_of(index, &out, &mut events);
        };
        for id in [1, 2] {
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
        run(
            &mut s,
            Command::Register {
                number: "1000".into(),
                device_id: "d".into(),
                contact: "sip:d@h".into(),
                device_name: String::new(),
                mac: String::new(),
                node: 1,
                q: 1000,
                ttl_ms: 10,
            },
        );
        run(
            &mut s,
            Command::StartCall {
                call_id: "c".into(),
                from: "1".into(),
                to: "2".into(),
                owner: Some(1),
                gateway: None,
            },
        );
        // Purge at once (purge_after_ms = 0), so NodeDown removes the registration.
        s.policy.purge_after_ms = 0;
        run(&mut s, Command::NodeDown { id: 1 });
        let got: Vec<(u64, &str, &str)> =
            events.iter().map(|e| (e.index, e.kind.as_str(), e.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1, "node_updated", "1"),
                (2, "node_updated", "2"),
                (3, "registration_added", "1000"),
                (4, "call_started", "c"),
                (5, "node_down", "1"),
                (5, "call_moved", "c"),
                (5, "registration_removed", "1000"),
            ]
        );
    }
}
