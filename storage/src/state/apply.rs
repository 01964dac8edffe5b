//! `apply`: the only function that changes the replicated state.
//!
//! It is pure and total: the same state and entry always give the same new
//! state and [`Outcome`], on every replica; it reads no clock (time is the
//! entry's `at_ms`, folded into [`State::clock_ms`]); and no command can make
//! it panic — a command that is malformed or does not fit the state yields
//! [`Outcome::Error`] and changes nothing but the replicated clock.

use super::calls::{Call, CallState, ReleaseReason};
use super::command::{CallMove, SipContact, MAX_BATCH, MAX_ID_LEN, MAX_SIP_CONTACTS, MAX_TEXT_LEN};
use super::dialplan::{validate_digits, validate_pattern, Route, RouteTarget, MAX_DIGITS};
use super::gateways::{
    Gateway, GatewayCounters, GatewayStatus, OutOfServiceReason, ProbeVerdict, ReportedOutcome,
};
use super::nodes::{Node, NodeStatus};
use super::registrations::{Binding, SipOrigin};
use super::requests::{self, Seen};
use super::tokens::{Role, Token};
use super::users::User;
use super::{ApplyError, Command, NodeId, Outcome, State, Takeover};

type Applied = Result<Outcome, ApplyError>;

/// Apply `command`, proposed at `at_ms`, as the entry at log `index`, in
/// term 0 (for tests and replays that do not care about terms; the state
/// machine uses [`apply_entry`]).
pub fn apply(state: &mut State, index: u64, at_ms: u64, command: &Command) -> Outcome {
    apply_entry(state, index, 0, at_ms, command)
}

/// Apply `command`, proposed at `at_ms`, as the entry at log `index` that a
/// leader of `term` appended.
///
/// `index` is accepted for tracing and for future commands that need it, but
/// no result depends on it directly, so that replaying a command at another
/// index (in tests) behaves the same. `term` fences the leader's own
/// decisions ([`Command::Leader`]).
pub fn apply_entry(
    state: &mut State,
    index: u64,
    term: u64,
    at_ms: u64,
    command: &Command,
) -> Outcome {
    let _ = index;
    state.clock_ms = advance_clock(state.clock_ms, at_ms, state.policy.max_clock_step_ms);
    match command {
        Command::Batch(commands) if commands.len() > MAX_BATCH => {
            Outcome::Error(ApplyError::Invalid(format!(
                "batch of {} commands exceeds {MAX_BATCH}",
                commands.len()
            )))
        }
        Command::Batch(commands) => Outcome::Batch(
            commands
                .iter()
                .map(|c| match c {
                    Command::Batch(_) => {
                        Outcome::Error(ApplyError::Invalid("batches do not nest".into()))
                    }
                    c => settle(apply_one(state, term, c)),
                })
                .collect(),
        ),
        c => settle(apply_one(state, term, c)),
    }
}

/// The replicated clock after an entry stamped `at_ms`: it never goes back,
/// and one entry moves it at most `max_step` ms (0 = no cap) — except the
/// very first stamp, which sets it. A leader whose wall clock jumps ahead
/// therefore cannot expire every registration at once.
pub fn advance_clock(clock: u64, at_ms: u64, max_step: u64) -> u64 {
    if clock == 0 || max_step == 0 {
        clock.max(at_ms)
    } else {
        clock.max(at_ms.min(clock.saturating_add(max_step)))
    }
}

fn settle(r: Applied) -> Outcome {
    r.unwrap_or_else(Outcome::Error)
}

/// RFC 3261 §10.3 steps 6-8 for one REGISTER. Every binding it would touch
/// is checked first (step 7: same Call-ID needs a higher CSeq), so a refusal
/// changes nothing; then the bindings are removed or written in contact
/// order.
#[allow(clippy::too_many_arguments)]
fn sip_register(
    state: &mut State,
    now: u64,
    number: &str,
    call_id: &str,
    cseq: u32,
    node: NodeId,
    remove_all: bool,
    contacts: &[SipContact],
) -> Applied {
    let existing = state.registrations.bindings(number);
    let in_order = |b: &Binding| match &b.sip {
        Some(o) if o.call_id == call_id && o.cseq >= cseq => Err(ApplyError::OutOfOrder {
            number: number.to_owned(),
            device_id: b.device_id.clone(),
            stored: o.cseq,
            cseq,
        }),
        _ => Ok(()),
    };
    for b in existing {
        if remove_all || contacts.iter().any(|c| c.device_id == b.device_id) {
            in_order(b)?;
        }
    }
    let mut removed = Vec::new();
    let mut registered = Vec::new();
    if remove_all {
        removed = state.registrations.remove_where(number, |_| true);
    }
    for c in contacts {
        if c.ttl_ms == 0 {
            removed
                .extend(state.registrations.remove_where(number, |b| b.device_id == c.device_id));
            continue;
        }
        state.generations += 1;
        let binding = Binding {
            device_id: c.device_id.clone(),
            contact: c.contact.clone(),
            device_name: c.device_name.clone(),
            mac: String::new(),
            node,
            q: c.q,
            expires_at_ms: now.saturating_add(c.ttl_ms),
            generation: state.generations,
            sip: Some(SipOrigin { call_id: call_id.to_owned(), cseq }),
        };
        state.registrations.upsert(number, binding.clone());
        registered.push(binding);
    }
    Ok(Outcome::SipRegistered {
        number: number.to_owned(),
        registered,
        removed,
        bindings: state.registrations.bindings(number).to_vec(),
    })
}

/// Check what can be checked without the state: field syntax and bounds.
/// `apply` runs it first on every command; the node runs it before
/// proposing, so that malformed requests never reach the log.
pub fn validate(command: &Command) -> Result<(), ApplyError> {
    match command {
        Command::Register { number, device_id, contact, device_name, mac, q, ttl_ms, .. } => {
            number_ok(number)?;
            id_ok("device_id", device_id)?;
            text_ok("contact", contact, false)?;
            text_ok("device_name", device_name, true)?;
            text_ok("mac", mac, true)?;
            if *q > 1000 {
                return Err(invalid(format!("q {q} is above 1000")));
            }
            if *ttl_ms == 0 {
                return Err(invalid("ttl_ms must be > 0 (use Unregister to remove)"));
            }
            Ok(())
        }
        Command::Refresh { number, device_id, ttl_ms, .. } => {
            number_ok(number)?;
            id_ok("device_id", device_id)?;
            if *ttl_ms == 0 {
                return Err(invalid("ttl_ms must be > 0"));
            }
            Ok(())
        }
        Command::Unregister { number, device_id, .. } => {
            number_ok(number)?;
            device_id.as_deref().map_or(Ok(()), |d| id_ok("device_id", d))
        }
        Command::SipRegister { number, call_id, contacts, remove_all, .. } => {
            number_ok(number)?;
            id_ok("call_id", call_id)?;
            if contacts.len() > MAX_SIP_CONTACTS {
                return Err(invalid(format!(
                    "{} contacts exceed the {MAX_SIP_CONTACTS} a REGISTER may carry",
                    contacts.len()
                )));
            }
            if *remove_all && !contacts.is_empty() {
                return Err(invalid("Contact: * must stand alone"));
            }
            for c in contacts {
                id_ok("device_id", &c.device_id)?;
                text_ok("contact", &c.contact, false)?;
                text_ok("device_name", &c.device_name, true)?;
                if c.q > 1000 {
                    return Err(invalid(format!("q {} is above 1000", c.q)));
                }
            }
            let mut ids: Vec<&str> = contacts.iter().map(|c| c.device_id.as_str()).collect();
            ids.sort_unstable();
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return Err(invalid("two contacts name the same device"));
            }
            Ok(())
        }
        Command::PutRoute(route) => route_ok(route),
        Command::DeleteRoute { pattern } => validate_pattern(pattern).map_err(invalid),
        Command::PutGateway { id, group, address, .. } => {
            id_ok("gateway id", id)?;
            id_ok("group", group)?;
            text_ok("address", address, false)
        }
        Command::DeleteGateway { id }
        | Command::ReportOutcome { id, .. }
        | Command::ProbeResult { id, .. } => id_ok("gateway id", id),
        Command::PutNode { id, grpc_addr, sip_addr, .. } => {
            if *id == 0 {
                return Err(invalid("node id must be > 0"));
            }
            text_ok("grpc_addr", grpc_addr, false)?;
            text_ok("sip_addr", sip_addr, true)
        }
        Command::StartCall { call_id, from, to, gateway, .. } => {
            id_ok("call_id", call_id)?;
            text_ok("from", from, false)?;
            text_ok("to", to, false)?;
            gateway.as_deref().map_or(Ok(()), |g| id_ok("gateway", g))
        }
        Command::UpdateCall { call_id, .. } | Command::EndCall { call_id, .. } => {
            id_ok("call_id", call_id)
        }
        Command::Batch(commands) => {
            if commands.len() > MAX_BATCH {
                return Err(invalid(format!(
                    "batch of {} commands exceeds {MAX_BATCH}",
                    commands.len()
                )));
            }
            commands.iter().try_for_each(|c| match c {
                Command::Batch(_) => Err(invalid("batches do not nest")),
                c => validate(c),
            })
        }
        Command::Leader { command, .. } => match **command {
            Command::Batch(_) | Command::Leader { .. } | Command::Once { .. } => {
                Err(invalid("a leader decision holds one plain command"))
            }
            ref c => validate(c),
        },
        Command::Once { client, command, .. } => {
            id_ok("client", client)?;
            match **command {
                Command::Batch(_) | Command::Leader { .. } | Command::Once { .. } => {
                    Err(invalid("a once-only request holds one plain command"))
                }
                ref c => validate(c),
            }
        }
        Command::PutUser { user, realm, .. } => {
            number_ok(user).map_err(|e| invalid(format!("user: {e}")))?;
            realm_ok(realm)
        }
        Command::DeleteUser { user } => number_ok(user).map_err(|e| invalid(format!("user: {e}"))),
        Command::PutToken { id, name, .. } => {
            id_ok("token id", id)?;
            text_ok("token name", name, true)
        }
        Command::DeleteToken { id } => id_ok("token id", id),
        Command::ExpireBindings
        | Command::SetSipSecret(_)
        | Command::Tick
        | Command::PurgeNodeRegistrations { .. }
        | Command::RemoveNode { .. }
        | Command::NodeDown { .. }
        | Command::NodeUp { .. }
        | Command::DrainNode { .. }
        | Command::SetPolicy(_) => Ok(()),
    }
}

/// Applies one non-batch command. It validates first and every arm checks
/// the state *before* it mutates, so an `Err` always leaves the state as it
/// was.
fn apply_one(state: &mut State, term: u64, command: &Command) -> Applied {
    validate(command)?;
    let now = state.clock_ms;
    match command {
        Command::Leader { term: decided, command } => {
            if *decided != term {
                return Err(ApplyError::StaleTerm { decided: *decided, entry: term });
            }
            apply_one(state, term, command)
        }
        Command::Once { client, seq, command } => match state.requests.seen(client, *seq) {
            Seen::Done(first) => Ok(Outcome::Repeated(Box::new(first.clone()))),
            Seen::TooOld { oldest } => Err(ApplyError::RequestTooOld {
                client: client.clone(),
                seq: *seq,
                oldest,
                window: requests::WINDOW,
            }),
            // The first outcome is remembered even when it is a refusal, so
            // a retry gets the same answer: the request is then "applied"
            // (recorded), which is why this arm returns Ok.
            Seen::New => {
                let first = settle(apply_one(state, term, command));
                state.requests.record(client, *seq, first.clone(), now);
                Ok(first)
            }
        },
        Command::Tick => Ok(Outcome::Nothing),
        Command::PurgeNodeRegistrations { id } => {
            node_known(state, *id)?;
            let status = state.nodes.get(*id).map(|n| n.status);
            let Some(NodeStatus::Down { since_ms }) = status else {
                return Err(ApplyError::Precondition(format!(
                    "node {id} is not down; its registrations stay"
                )));
            };
            let due = since_ms.saturating_add(state.policy.purge_after_ms);
            if !state.policy.purge_registrations_on_node_down || now < due {
                return Err(ApplyError::Precondition(format!(
                    "node {id} has been down since {since_ms}; its registrations are purged \
                     at {due} if the policy says so (clock {now})"
                )));
            }
            let purged = state.registrations.remove_all_where(|b| b.node == *id);
            let down = NodeStatus::Down { since_ms };
            Ok(node_status(*id, down, Relocated { purged, ..Relocated::default() }))
        }
        Command::Register { number, device_id, contact, device_name, mac, node, q, ttl_ms } => {
            // Generations come from a replicated counter rather than the log
            // index: one batched entry may hold several registrations, and a
            // generation must name exactly one binding.
            state.generations += 1;
            let binding = Binding {
                device_id: device_id.clone(),
                contact: contact.clone(),
                device_name: device_name.clone(),
                mac: mac.clone(),
                node: *node,
                q: *q,
                expires_at_ms: now.saturating_add(*ttl_ms),
                generation: state.generations,
                sip: None,
            };
            let replaced = state.registrations.upsert(number, binding.clone());
            Ok(Outcome::Registered { number: number.clone(), binding, replaced })
        }
        Command::Refresh { number, device_id, generation, ttl_ms } => {
            let missing = || not_found(format!("no live binding of {device_id} under {number}"));
            let refreshed = state.registrations.modify(number, device_id, |b| {
                if !b.is_live(now) || generation.is_some_and(|g| g != b.generation) {
                    return None; // unchanged
                }
                b.expires_at_ms = now.saturating_add(*ttl_ms);
                Some(b.clone())
            });
            let binding = refreshed.flatten().ok_or_else(missing)?;
            Ok(Outcome::Refreshed { number: number.clone(), binding })
        }
        Command::SipRegister { number, call_id, cseq, node, remove_all, contacts } => {
            sip_register(state, now, number, call_id, *cseq, *node, *remove_all, contacts)
        }
        Command::Unregister { number, device_id, generation } => {
            let removed = state.registrations.remove_where(number, |b| {
                device_id.as_ref().is_none_or(|d| *d == b.device_id)
                    && generation.is_none_or(|g| g == b.generation)
            });
            Ok(Outcome::Unregistered { number: number.clone(), removed })
        }
        Command::ExpireBindings => {
            Ok(Outcome::BindingsRemoved { removed: state.registrations.remove_expired(now) })
        }

        Command::PutRoute(route) => {
            state.dial_plan.put(route.clone());
            Ok(Outcome::RoutePut { pattern: route.pattern.clone() })
        }
        Command::DeleteRoute { pattern } => match state.dial_plan.remove(pattern) {
            Some(_) => Ok(Outcome::RouteDeleted { pattern: pattern.clone() }),
            None => Err(not_found(format!("no route with pattern {pattern:?}"))),
        },

        Command::PutGateway { id, group, address, priority, weight, capacity } => {
            let (status, counters) = match state.gateways.get(id) {
                Some(g) => (g.status, g.counters),
                None => (GatewayStatus::InService, GatewayCounters::default()),
            };
            state.gateways.put(Gateway {
                id: id.clone(),
                group: group.clone(),
                address: address.clone(),
                priority: *priority,
                weight: *weight,
                capacity: *capacity,
                status,
                counters,
            });
            Ok(Outcome::GatewayPut { id: id.clone() })
        }
        Command::DeleteGateway { id } => match state.gateways.remove(id) {
            Some(_) => Ok(Outcome::GatewayDeleted { id: id.clone() }),
            None => Err(not_found(format!("no gateway {id:?}"))),
        },
        Command::ReportOutcome { id, outcome, retry_after_ms } => {
            let gw = state.gateways.get_mut(id).ok_or_else(|| no_gateway(id))?;
            let before = gw.status;
            gw.counters.attempts += 1;
            let out_until = |reason| GatewayStatus::OutOfService {
                until_ms: now.saturating_add(*retry_after_ms),
                reason,
            };
            gw.status = match outcome {
                ReportedOutcome::Ok => GatewayStatus::InService,
                ReportedOutcome::Timeout => {
                    gw.counters.timeouts += 1;
                    out_until(OutOfServiceReason::Timeout)
                }
                ReportedOutcome::Failure => {
                    gw.counters.failures += 1;
                    out_until(OutOfServiceReason::Failure)
                }
            };
            Ok(Outcome::GatewayStatus {
                id: id.clone(),
                status: gw.status,
                changed: gw.status != before,
            })
        }
        Command::ProbeResult { id, verdict, retry_after_ms } => {
            let gw = state.gateways.get_mut(id).ok_or_else(|| no_gateway(id))?;
            let before = gw.status;
            gw.status = match (verdict, before) {
                (ProbeVerdict::Unreachable, GatewayStatus::InService) => {
                    GatewayStatus::OutOfService {
                        until_ms: now.saturating_add(*retry_after_ms),
                        reason: OutOfServiceReason::ProbeFailed,
                    }
                }
                // Still dead: push the retry time out, never pull it in.
                (ProbeVerdict::Unreachable, GatewayStatus::OutOfService { until_ms, reason }) => {
                    GatewayStatus::OutOfService {
                        until_ms: until_ms.max(now.saturating_add(*retry_after_ms)),
                        reason,
                    }
                }
                // The prober may undo only what the prober did: a period set by
                // a proxy's report runs to its retry time (or an Ok report).
                (
                    ProbeVerdict::Reachable,
                    GatewayStatus::OutOfService { reason: OutOfServiceReason::ProbeFailed, .. },
                ) => GatewayStatus::InService,
                (ProbeVerdict::Reachable, other) => other,
            };
            Ok(Outcome::GatewayStatus {
                id: id.clone(),
                status: gw.status,
                changed: gw.status != before,
            })
        }

        Command::PutNode { id, grpc_addr, sip_addr, capacity } => {
            let status = state.nodes.get(*id).map_or(NodeStatus::Up, |n| n.status);
            state.nodes.put(Node {
                id: *id,
                grpc_addr: grpc_addr.clone(),
                sip_addr: sip_addr.clone(),
                capacity: *capacity,
                status,
            });
            Ok(Outcome::NodePut { id: *id })
        }
        Command::RemoveNode { id } => {
            node_known(state, *id)?;
            let load = state.calls.node_load(*id);
            if load.owned > 0 || load.standby > 0 {
                return Err(ApplyError::Precondition(format!(
                    "node {id} owns {} calls and stands by for {}; drain it first",
                    load.owned, load.standby
                )));
            }
            state.nodes.remove(*id);
            Ok(Outcome::NodeRemoved { id: *id })
        }
        Command::NodeDown { id } => {
            node_known(state, *id)?;
            let status = state.nodes.get(*id).map(|n| n.status);
            if let Some(NodeStatus::Down { since_ms }) = status {
                // Already down: nothing more to do (a retried NodeDown is harmless).
                return Ok(node_status(*id, NodeStatus::Down { since_ms }, Relocated::default()));
            }
            let down = NodeStatus::Down { since_ms: now };
            set_status(state, *id, down);
            let mut done = relocate(state, *id, state.policy.takeover == Takeover::Cold);
            // Registrations are purged here only when the policy says "at
            // once"; otherwise by PurgeNodeRegistrations once the node has
            // stayed down long enough (a blip must not unregister a node's
            // devices until they re-register).
            if state.policy.purge_registrations_on_node_down && state.policy.purge_after_ms == 0 {
                done.purged = state.registrations.remove_all_where(|b| b.node == *id);
            }
            Ok(node_status(*id, down, done))
        }
        Command::NodeUp { id } => {
            node_known(state, *id)?;
            set_status(state, *id, NodeStatus::Up);
            Ok(node_status(*id, NodeStatus::Up, Relocated::default()))
        }
        Command::DrainNode { id } => {
            node_known(state, *id)?;
            set_status(state, *id, NodeStatus::Draining);
            // A drain is a planned switch-over: calls always move (never the
            // cold release), whatever the takeover policy.
            let done = relocate(state, *id, false);
            Ok(node_status(*id, NodeStatus::Draining, done))
        }
        Command::SetPolicy(policy) => {
            state.policy = *policy;
            Ok(Outcome::PolicySet(*policy))
        }

        Command::PutUser { user, realm, ha1_md5, ha1_sha256 } => {
            let record = User { realm: realm.clone(), ha1_md5: *ha1_md5, ha1_sha256: *ha1_sha256 };
            let replaced = state.users.put(user.clone(), record).is_some();
            Ok(Outcome::UserPut { user: user.clone(), realm: realm.clone(), replaced })
        }
        Command::DeleteUser { user } => match state.users.remove(user) {
            Some(_) => Ok(Outcome::UserDeleted { user: user.clone() }),
            None => Err(not_found(format!("no SIP user {user:?}"))),
        },
        Command::PutToken { id, role, secret_sha256, name, ttl_ms } => {
            if state.tokens.get(id).is_some() {
                return Err(ApplyError::AlreadyExists(format!("token {id:?}")));
            }
            let expires_at_ms = ttl_ms.map(|t| now.saturating_add(t));
            let token = Token {
                role: *role,
                secret_sha256: *secret_sha256,
                name: name.clone(),
                created_at_ms: now,
                expires_at_ms,
            };
            state.tokens.insert(id.clone(), token);
            Ok(Outcome::TokenPut { id: id.clone(), role: *role, created_at_ms: now, expires_at_ms })
        }
        Command::DeleteToken { id } => {
            let Some(token) = state.tokens.get(id) else {
                return Err(not_found(format!("no token {id:?}")));
            };
            if token.role == Role::Admin && state.tokens.admins() == 1 && state.tokens.len() > 1 {
                return Err(ApplyError::Precondition(format!(
                    "token {id:?} is the last admin token and {} other token(s) exist: nobody \
                     could manage them; create another admin token first, or delete the others",
                    state.tokens.len() - 1
                )));
            }
            state.tokens.remove(id);
            Ok(Outcome::TokenDeleted { id: id.clone() })
        }
        Command::SetSipSecret(secret) => {
            // First writer wins: nonces minted under the installed secret
            // must stay valid, so a racing second proposal is a no-op.
            let installed = state.sip_secret.is_none();
            if installed {
                state.sip_secret = Some(*secret);
            }
            Ok(Outcome::SipSecret { installed })
        }

        Command::StartCall { call_id, from, to, owner, gateway } => {
            if state.calls.get(call_id).is_some() {
                return Err(ApplyError::AlreadyExists(format!("call {call_id:?}")));
            }
            let owner = match owner {
                Some(n) => {
                    let node = state.nodes.get(*n).ok_or_else(|| no_node(*n))?;
                    if !node.is_up() {
                        return Err(ApplyError::Precondition(format!(
                            "node {n} is {:?}, it cannot own a new call",
                            node.status
                        )));
                    }
                    if free_capacity(state, node) == 0 {
                        return Err(ApplyError::NoCapacity(format!("node {n} is full")));
                    }
                    *n
                }
                None => most_free_node(state, None, true)
                    .ok_or_else(|| ApplyError::NoCapacity("no live node has room".into()))?,
            };
            if let Some(g) = gateway {
                let gw = state.gateways.get(g).ok_or_else(|| no_gateway(g))?;
                if gw.capacity != 0 && state.calls.gateway_load(g) >= gw.capacity {
                    return Err(ApplyError::NoCapacity(format!("gateway {g} is full")));
                }
            }
            let call = Call {
                call_id: call_id.clone(),
                from: from.clone(),
                to: to.clone(),
                state: CallState::Setup,
                owner,
                standby: choose_standby(state, owner, None),
                gateway: gateway.clone(),
                version: 1,
                started_at_ms: now,
                updated_at_ms: now,
            };
            state.calls.insert(call.clone());
            Ok(Outcome::CallStarted(call))
        }
        Command::UpdateCall { call_id, state: new_state, expected_version } => {
            check_version(state, call_id, Some(*expected_version))?;
            if *new_state == CallState::Released {
                return Ok(release(state, call_id, ReleaseReason::Normal));
            }
            let call = state.calls.modify(call_id, |c| {
                c.state = *new_state;
                c.version += 1;
                c.updated_at_ms = now;
                c.clone()
            });
            Ok(call.map_or(Outcome::Nothing, Outcome::CallUpdated))
        }
        Command::EndCall { call_id, expected_version } => {
            check_version(state, call_id, *expected_version)?;
            Ok(release(state, call_id, ReleaseReason::Normal))
        }

        Command::Batch(_) => Err(invalid("batches do not nest")),
    }
}

/// What moving a node's calls did.
#[derive(Default)]
struct Relocated {
    moved: Vec<CallMove>,
    released: Vec<Call>,
    purged: Vec<(String, Binding)>,
}

fn node_status(id: NodeId, status: NodeStatus, done: Relocated) -> Outcome {
    Outcome::NodeStatus {
        id,
        status,
        moved: done.moved,
        released: done.released,
        purged: done.purged,
    }
}

fn set_status(state: &mut State, id: NodeId, status: NodeStatus) {
    if let Some(n) = state.nodes.get_mut(id) {
        n.status = status;
    }
}

/// Take every call off `node`: calls it owns go to their stand-by (or, when
/// the stand-by is not up, to the live node with the most free capacity) —
/// or are released when `release_owned` (cold policy) or nobody is left;
/// calls it stood by for get a fresh stand-by. Calls are visited in id order
/// and loads are updated as we go, so the result is deterministic and the
/// new stand-bys spread over the survivors.
fn relocate(state: &mut State, node: NodeId, release_owned: bool) -> Relocated {
    let mut done = Relocated::default();
    let now = state.clock_ms;
    for call_id in state.calls.ids_touching(node) {
        let Some(call) = state.calls.get(&call_id) else {
            continue;
        };
        let previous_owner = call.owner;
        if call.owner == node {
            let standby_up = call.standby.filter(|s| state.nodes.get(*s).is_some_and(Node::is_up));
            // Taking over a live call beats dropping it, so capacity is not a
            // reason to refuse here (it is when a call starts), and a node
            // being drained is still a better home than none.
            let heir = standby_up
                .or_else(|| most_free_node(state, Some(node), false))
                .or_else(|| draining_node(state, node));
            match heir {
                Some(heir) if !release_owned => {
                    let standby = choose_standby(state, heir, Some(node));
                    let moved = state.calls.modify(&call_id, |c| {
                        c.owner = heir;
                        c.standby = standby;
                        c.updated_at_ms = now;
                        c.clone()
                    });
                    if let Some(call) = moved {
                        done.moved.push(CallMove { call, previous_owner });
                    }
                }
                _ => {
                    if let Outcome::CallReleased { call, .. } =
                        release(state, &call_id, ReleaseReason::OwnerFailed)
                    {
                        done.released.push(call);
                    }
                }
            }
        } else {
            let owner = call.owner;
            let standby = choose_standby(state, owner, Some(node));
            let moved = state.calls.modify(&call_id, |c| {
                c.standby = standby;
                c.updated_at_ms = now;
                c.clone()
            });
            if let Some(call) = moved {
                done.moved.push(CallMove { call, previous_owner });
            }
        }
    }
    done
}

/// Remove a call; the outcome carries it with state `Released` and its version bumped.
fn release(state: &mut State, call_id: &str, reason: ReleaseReason) -> Outcome {
    match state.calls.remove(call_id) {
        Some(mut call) => {
            call.state = CallState::Released;
            call.version += 1;
            call.updated_at_ms = state.clock_ms;
            Outcome::CallReleased { call, reason }
        }
        None => Outcome::Nothing,
    }
}

fn check_version(state: &State, call_id: &str, expected: Option<u64>) -> Result<(), ApplyError> {
    let call = state.calls.get(call_id).ok_or_else(|| not_found(format!("no call {call_id:?}")))?;
    match expected {
        Some(expected) if expected != call.version => Err(ApplyError::VersionConflict {
            call_id: call_id.to_owned(),
            expected,
            actual: call.version,
        }),
        _ => Ok(()),
    }
}

/// Free call slots on a node (`u64::MAX` when its capacity is unlimited).
pub(crate) fn free_capacity(state: &State, node: &Node) -> u64 {
    match node.capacity {
        0 => u64::MAX,
        cap => u64::from(cap).saturating_sub(u64::from(state.calls.node_load(node.id).owned)),
    }
}

/// The live node with the most free capacity (ties: fewer owned calls, then
/// the lower id), other than `except`. With `need_room`, full nodes are skipped.
pub(crate) fn most_free_node(
    state: &State,
    except: Option<NodeId>,
    need_room: bool,
) -> Option<NodeId> {
    state
        .nodes
        .iter()
        .filter(|n| n.is_up() && Some(n.id) != except)
        .map(|n| (free_capacity(state, n), state.calls.node_load(n.id).owned, n.id))
        .filter(|(free, _, _)| !need_room || *free > 0)
        .min_by_key(|&(free, owned, id)| (std::cmp::Reverse(free), owned, id))
        .map(|(_, _, id)| id)
}

/// A node being drained (lowest id), other than `except`: the last resort
/// for a dead node's calls when no node is up.
fn draining_node(state: &State, except: NodeId) -> Option<NodeId> {
    state.nodes.iter().find(|n| n.status == NodeStatus::Draining && n.id != except).map(|n| n.id)
}

/// A stand-by for a call owned by `owner`: a live node that is neither the
/// owner nor `except`, the one standing by for the fewest calls (then owning
/// the fewest, then the lowest id), so stand-by duty spreads evenly.
fn choose_standby(state: &State, owner: NodeId, except: Option<NodeId>) -> Option<NodeId> {
    state
        .nodes
        .iter()
        .filter(|n| n.is_up() && n.id != owner && Some(n.id) != except)
        .min_by_key(|n| {
            let load = state.calls.node_load(n.id);
            (load.standby, load.owned, n.id)
        })
        .map(|n| n.id)
}

fn node_known(state: &State, id: NodeId) -> Result<(), ApplyError> {
    state.nodes.get(id).map(|_| ()).ok_or_else(|| no_node(id))
}

fn route_ok(route: &Route) -> Result<(), ApplyError> {
    validate_pattern(&route.pattern).map_err(invalid)?;
    if usize::from(route.strip) > MAX_DIGITS {
        return Err(invalid(format!("strip {} exceeds {MAX_DIGITS}", route.strip)));
    }
    if !route.prefix.is_empty() {
        validate_digits(&route.prefix).map_err(|e| invalid(format!("prefix: {e}")))?;
    }
    if let RouteTarget::GatewayGroup(group) = &route.target {
        id_ok("group", group)?;
    }
    Ok(())
}

/// A digest realm: an identifier that may hold spaces (it is sent as a
/// quoted string) but no quote, backslash or control character, which would
/// need escaping in `WWW-Authenticate` and could be used to inject
/// parameters.
fn realm_ok(realm: &str) -> Result<(), ApplyError> {
    if realm.is_empty() {
        return Err(invalid("realm is empty"));
    }
    if realm.len() > MAX_ID_LEN {
        return Err(invalid(format!("realm is longer than {MAX_ID_LEN} bytes")));
    }
    if realm.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(invalid(format!(
            "realm {realm:?} contains a quote, backslash or control character"
        )));
    }
    Ok(())
}

fn number_ok(number: &str) -> Result<(), ApplyError> {
    validate_digits(number).map_err(|e| invalid(format!("number: {e}")))
}

/// An identifier: non-empty, at most [`MAX_ID_LEN`] bytes, printable, no spaces.
fn id_ok(what: &str, v: &str) -> Result<(), ApplyError> {
    if v.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    if v.len() > MAX_ID_LEN {
        return Err(invalid(format!("{what} is longer than {MAX_ID_LEN} bytes")));
    }
    if v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(format!("{what} {v:?} contains whitespace or control characters")));
    }
    Ok(())
}

/// Free text: at most [`MAX_TEXT_LEN`] bytes, no control characters (they
/// would break SIP headers and log lines), empty only when `may_be_empty`.
fn text_ok(what: &str, v: &str, may_be_empty: bool) -> Result<(), ApplyError> {
    if v.is_empty() && !may_be_empty {
        return Err(invalid(format!("{what} is empty")));
    }
    if v.len() > MAX_TEXT_LEN {
        return Err(invalid(format!("{what} is longer than {MAX_TEXT_LEN} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(format!("{what} contains control characters")));
    }
    Ok(())
}

fn invalid(msg: impl Into<String>) -> ApplyError {
    ApplyError::Invalid(msg.into())
}

fn not_found(msg: impl Into<String>) -> ApplyError {
    ApplyError::NotFound(msg.into())
}

fn no_gateway(id: &str) -> ApplyError {
    not_found(format!("no gateway {id:?}"))
}

fn no_node(id: NodeId) -> ApplyError {
    not_found(format!("no node {id}"))
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
