//! Unit tests for `apply`: one or more per command, plus the seed scenarios.

use super::*;
use crate::state::calls::NodeLoad;
use crate::state::gateways::Availability;
use crate::state::route::lookup;
use crate::state::Policy;

/// A replica under test: applies commands at consecutive log indexes.
struct Replica {
    state: State,
    index: u64,
}

impl Replica {
    fn new() -> Self {
        Replica { state: State::default(), index: 0 }
    }

    /// Apply `cmd` as if proposed at `at_ms`.
    fn at(&mut self, at_ms: u64, cmd: Command) -> Outcome {
        self.index += 1;
        let out = apply(&mut self.state, self.index, at_ms, &cmd);
        self.state.calls.check_invariants().unwrap();
        self.state.registrations.check_invariants().unwrap();
        out
    }

    /// Apply and expect success.
    fn ok(&mut self, at_ms: u64, cmd: Command) -> Outcome {
        let out = self.at(at_ms, cmd.clone());
        assert!(out.error().is_none(), "{cmd:?} failed: {out:?}");
        out
    }

    /// Apply, expect an error, and check that nothing but the clock changed.
    fn err(&mut self, at_ms: u64, cmd: Command) -> ApplyError {
        let mut before = self.state.clone();
        let out = self.at(at_ms, cmd.clone());
        before.clock_ms = self.state.clock_ms;
        assert_eq!(before, self.state, "{cmd:?} changed the state although it failed");
        out.error().cloned().unwrap_or_else(|| panic!("{cmd:?} succeeded: {out:?}"))
    }

    fn nodes(&mut self, ids: &[NodeId], capacity: u32) {
        for &id in ids {
            self.ok(0, put_node(id, capacity));
        }
    }
}

fn put_node(id: NodeId, capacity: u32) -> Command {
    Command::PutNode {
        id,
        grpc_addr: format!("127.0.0.1:{}", 7000 + id),
        sip_addr: String::new(),
        capacity,
    }
}

fn register(number: &str, device: &str, node: NodeId, ttl_ms: u64) -> Command {
    Command::Register {
        number: number.into(),
        device_id: device.into(),
        contact: format!("sip:{number}@{device}.example"),
        device_name: format!("SEP-{device}"),
        mac: "00:11:22:33:44:55".into(),
        node,
        q: 500,
        ttl_ms,
    }
}

fn start(call_id: &str, owner: Option<NodeId>) -> Command {
    Command::StartCall {
        call_id: call_id.into(),
        from: "1000".into(),
        to: "2000".into(),
        owner,
        gateway: None,
    }
}

fn registered(out: &Outcome) -> Binding {
    match out {
        Outcome::Registered { binding, .. } => binding.clone(),
        other => panic!("not Registered: {other:?}"),
    }
}

#[test]
fn clock_is_the_max_of_entry_times_and_never_goes_back() {
    let mut r = Replica::new();
    r.ok(100, Command::ExpireBindings);
    r.ok(50, Command::ExpireBindings);
    assert_eq!(r.state.clock_ms, 100);
    r.ok(150, Command::ExpireBindings);
    assert_eq!(r.state.clock_ms, 150);
}

#[test]
fn register_creates_a_binding_with_expiry_from_the_entry_clock() {
    let mut r = Replica::new();
    let b = registered(&r.ok(1_000, register("1000", "dev-a", 1, 60_000)));
    assert_eq!(b.expires_at_ms, 61_000);
    assert_eq!(b.node, 1);
    assert_eq!(b.generation, 1);
    assert_eq!(r.state.registrations.bindings("1000"), &[b]);
}

#[test]
fn register_again_replaces_the_device_binding_with_a_new_generation() {
    let mut r = Replica::new();
    let first = registered(&r.ok(0, register("1000", "dev-a", 1, 60_000)));
    let out = r.ok(10, register("1000", "dev-a", 3, 60_000));
    let Outcome::Registered { binding, replaced, .. } = out else { panic!() };
    assert_eq!(replaced, Some(first.clone()));
    assert_eq!(binding.node, 3);
    assert!(binding.generation > first.generation);
    assert_eq!(r.state.registrations.bindings("1000").len(), 1);
}

#[test]
fn register_rejects_malformed_fields() {
    let mut r = Replica::new();
    let bad = |f: fn(&mut Command)| {
        let mut c = register("1000", "dev-a", 1, 60_000);
        f(&mut c);
        c
    };
    for cmd in [
        bad(|c| {
            if let Command::Register { number, .. } = c {
                *number = "".into()
            }
        }),
        bad(|c| {
            if let Command::Register { number, .. } = c {
                *number = "10a0".into()
            }
        }),
        bad(|c| {
            if let Command::Register { device_id, .. } = c {
                *device_id = "a b".into()
            }
        }),
        bad(|c| {
            if let Command::Register { contact, .. } = c {
                *contact = "".into()
            }
        }),
        bad(|c| {
            if let Command::Register { contact, .. } = c {
                *contact = "sip:x\r\nVia: y".into()
            }
        }),
        bad(|c| {
            if let Command::Register { q, .. } = c {
                *q = 1001
            }
        }),
        bad(|c| {
            if let Command::Register { ttl_ms, .. } = c {
                *ttl_ms = 0
            }
        }),
        bad(|c| {
            if let Command::Register { mac, .. } = c {
                *mac = "m".repeat(MAX_TEXT_LEN + 1)
            }
        }),
    ] {
        assert!(matches!(r.err(0, cmd), ApplyError::Invalid(_)));
    }
    assert_eq!(r.state.generations, 0, "a refused register must not use a generation");
}

#[test]
fn refresh_extends_a_live_binding_only() {
    let mut r = Replica::new();
    let b = registered(&r.ok(0, register("1000", "dev-a", 1, 1_000)));
    let refresh = |generation, ttl_ms| Command::Refresh {
        number: "1000".into(),
        device_id: "dev-a".into(),
        generation,
        ttl_ms,
    };
    let Outcome::Refreshed { binding, .. } = r.ok(500, refresh(Some(b.generation), 1_000)) else {
        panic!()
    };
    assert_eq!(binding.expires_at_ms, 1_500);
    assert_eq!(binding.generation, b.generation, "a refresh keeps the generation");
    // A refresh naming another generation does not touch the binding.
    assert!(matches!(r.err(600, refresh(Some(b.generation + 7), 1_000)), ApplyError::NotFound(_)));
    // Once expired, a refresh cannot revive it: the device must register again.
    assert!(matches!(r.err(1_500, refresh(None, 1_000)), ApplyError::NotFound(_)));
    assert!(matches!(r.err(1_500, refresh(None, 0)), ApplyError::Invalid(_)));
}

#[test]
fn unregister_by_device_and_generation() {
    let mut r = Replica::new();
    let a = registered(&r.ok(0, register("1000", "dev-a", 1, 60_000)));
    let b = registered(&r.ok(0, register("1000", "dev-b", 2, 60_000)));
    let out = r.ok(
        1,
        Command::Unregister {
            number: "1000".into(),
            device_id: Some("dev-a".into()),
            generation: Some(a.generation),
        },
    );
    assert_eq!(out, Outcome::Unregistered { number: "1000".into(), removed: vec![a] });
    assert_eq!(r.state.registrations.bindings("1000"), std::slice::from_ref(&b));
    // No device, no generation: everything under the number.
    let out =
        r.ok(2, Command::Unregister { number: "1000".into(), device_id: None, generation: None });
    assert_eq!(out, Outcome::Unregistered { number: "1000".into(), removed: vec![b] });
    assert!(!r.state.registrations.contains("1000"));
    // Unregistering what is not there is a harmless no-op.
    let out =
        r.ok(3, Command::Unregister { number: "1000".into(), device_id: None, generation: None });
    assert_eq!(out, Outcome::Unregistered { number: "1000".into(), removed: vec![] });
}

/// Seed 002: device 1000 registered at node A moves to node C; A's delete of
/// the old registration arrives after C's registration. The device must end
/// up registered at C, whatever order the replicas see — with Raft there is
/// one order, and the stale delete carries the old generation.
#[test]
fn seed_002_race_stale_unregister_does_not_remove_the_newer_binding() {
    let mut r = Replica::new();
    let at_a = registered(&r.ok(0, register("1000", "phone", 1, 60_000)));
    let at_c = registered(&r.ok(10, register("1000", "phone", 3, 60_000)));
    let stale = Command::Unregister {
        number: "1000".into(),
        device_id: Some("phone".into()),
        generation: Some(at_a.generation),
    };
    let out = r.ok(20, stale);
    assert_eq!(out, Outcome::Unregistered { number: "1000".into(), removed: vec![] });
    assert_eq!(lookup(&r.state, "1000", 20), vec![&at_c]);
    assert_eq!(lookup(&r.state, "1000", 20)[0].node, 3);
}

#[test]
fn expired_bindings_are_invisible_then_swept() {
    let mut r = Replica::new();
    let short = registered(&r.ok(0, register("1000", "a", 1, 1_000)));
    let long = registered(&r.ok(0, register("1000", "b", 1, 5_000)));
    assert_eq!(lookup(&r.state, "1000", 999).len(), 2);
    // Expiry is exclusive: at exactly expires_at the binding is gone.
    assert_eq!(lookup(&r.state, "1000", 1_000), vec![&long]);
    // Not yet swept: the sweep uses the replicated clock, which is at 0.
    let out = r.ok(999, Command::ExpireBindings);
    assert_eq!(out, Outcome::BindingsRemoved { removed: vec![] });
    let out = r.ok(1_000, Command::ExpireBindings);
    assert_eq!(out, Outcome::BindingsRemoved { removed: vec![("1000".into(), short)] });
    let out = r.ok(6_000, Command::ExpireBindings);
    assert_eq!(out, Outcome::BindingsRemoved { removed: vec![("1000".into(), long)] });
    assert!(r.state.registrations.is_empty());
}

#[test]
fn lookup_orders_by_q_then_newest() {
    let mut r = Replica::new();
    let mut with_q = |device: &str, q| {
        let mut c = register("1000", device, 1, 60_000);
        if let Command::Register { q: cq, .. } = &mut c {
            *cq = q;
        }
        registered(&r.ok(0, c))
    };
    let low = with_q("a", 100);
    let high_old = with_q("b", 900);
    let high_new = with_q("c", 900);
    let got: Vec<_> = lookup(&r.state, "1000", 0).into_iter().cloned().collect();
    assert_eq!(got, vec![high_new, high_old, low]);
}

#[test]
fn routes_put_validate_and_delete() {
    let mut r = Replica::new();
    let route = |pattern: &str| Route {
        pattern: pattern.into(),
        priority: 1,
        target: RouteTarget::GatewayGroup("pstn".into()),
        strip: 1,
        prefix: "+1".into(),
    };
    assert_eq!(r.ok(0, Command::PutRoute(route("9@"))), Outcome::RoutePut { pattern: "9@".into() });
    assert_eq!(r.state.dial_plan.get("9@"), Some(&route("9@")));
    assert!(matches!(r.err(0, Command::PutRoute(route("9@9"))), ApplyError::Invalid(_)));
    assert!(matches!(
        r.err(0, Command::PutRoute(Route { prefix: "x".into(), ..route("8@") })),
        ApplyError::Invalid(_)
    ));
    assert!(matches!(
        r.err(0, Command::PutRoute(Route { strip: 200, ..route("8@") })),
        ApplyError::Invalid(_)
    ));
    r.ok(0, Command::DeleteRoute { pattern: "9@".into() });
    assert!(matches!(
        r.err(0, Command::DeleteRoute { pattern: "9@".into() }),
        ApplyError::NotFound(_)
    ));
}

fn put_gw(id: &str, priority: u32) -> Command {
    gateway(id, &format!("{id}.example:5060"), priority, 0)
}

fn gateway(id: &str, address: &str, priority: u32, capacity: u32) -> Command {
    Command::PutGateway {
        id: id.into(),
        group: "pstn".into(),
        address: address.into(),
        priority,
        weight: 10,
        capacity,
    }
}

fn report(id: &str, outcome: ReportedOutcome, retry_after_ms: u64) -> Command {
    Command::ReportOutcome { id: id.into(), outcome, retry_after_ms }
}

fn probe(id: &str, verdict: ProbeVerdict) -> Command {
    Command::ProbeResult { id: id.into(), verdict, retry_after_ms: 30_000 }
}

#[test]
fn gateway_put_keeps_status_and_counters() {
    let mut r = Replica::new();
    r.ok(0, put_gw("gw1", 1));
    r.ok(0, report("gw1", ReportedOutcome::Timeout, 10_000));
    r.ok(0, put_gw("gw1", 5));
    let gw = r.state.gateways.get("gw1").unwrap();
    assert_eq!(gw.priority, 5);
    assert_eq!(gw.counters, GatewayCounters { attempts: 1, timeouts: 1, failures: 0 });
    assert!(matches!(gw.status, GatewayStatus::OutOfService { until_ms: 10_000, .. }));
    assert!(matches!(r.err(0, gateway("gw2", "", 1, 0)), ApplyError::Invalid(_)));
    r.ok(0, Command::DeleteGateway { id: "gw1".into() });
    assert!(matches!(
        r.err(0, Command::DeleteGateway { id: "gw1".into() }),
        ApplyError::NotFound(_)
    ));
    assert!(matches!(r.err(0, report("gw1", ReportedOutcome::Ok, 0)), ApplyError::NotFound(_)));
}

#[test]
fn reported_timeout_takes_a_gateway_out_until_its_retry_time() {
    let mut r = Replica::new();
    r.ok(0, put_gw("gw1", 1));
    let out = r.ok(1_000, report("gw1", ReportedOutcome::Timeout, 30_000));
    let out_status =
        GatewayStatus::OutOfService { until_ms: 31_000, reason: OutOfServiceReason::Timeout };
    assert_eq!(out, Outcome::GatewayStatus { id: "gw1".into(), status: out_status, changed: true });
    let gw = r.state.gateways.get("gw1").unwrap();
    assert_eq!(gw.availability(30_999), Availability::Unavailable);
    assert_eq!(gw.availability(31_000), Availability::Retry);
    // A second timeout while out: still out, not a change of kind but a new time.
    let out = r.ok(2_000, report("gw1", ReportedOutcome::Failure, 30_000));
    assert!(matches!(out, Outcome::GatewayStatus { changed: true, .. }));
    let out = r.ok(3_000, report("gw1", ReportedOutcome::Ok, 0));
    assert_eq!(
        out,
        Outcome::GatewayStatus {
            id: "gw1".into(),
            status: GatewayStatus::InService,
            changed: true
        }
    );
    let out = r.ok(3_000, report("gw1", ReportedOutcome::Ok, 0));
    assert!(matches!(out, Outcome::GatewayStatus { changed: false, .. }));
    assert_eq!(
        r.state.gateways.get("gw1").unwrap().counters,
        GatewayCounters { attempts: 4, timeouts: 1, failures: 1 }
    );
}

#[test]
fn probe_success_never_cuts_short_a_reported_outage() {
    let mut r = Replica::new();
    r.ok(0, put_gw("gw1", 1));
    r.ok(0, report("gw1", ReportedOutcome::Timeout, 60_000));
    let out = r.ok(1_000, probe("gw1", ProbeVerdict::Reachable));
    assert!(matches!(out, Outcome::GatewayStatus { changed: false, .. }));
    assert_eq!(
        r.state.gateways.get("gw1").unwrap().availability(59_999),
        Availability::Unavailable
    );
}

#[test]
fn probe_failure_and_recovery() {
    let mut r = Replica::new();
    r.ok(0, put_gw("gw1", 1));
    let out = r.ok(1_000, probe("gw1", ProbeVerdict::Unreachable));
    assert_eq!(
        out,
        Outcome::GatewayStatus {
            id: "gw1".into(),
            status: GatewayStatus::OutOfService {
                until_ms: 31_000,
                reason: OutOfServiceReason::ProbeFailed
            },
            changed: true
        }
    );
    // Still unreachable later: the retry time moves out, never in.
    r.ok(5_000, probe("gw1", ProbeVerdict::Unreachable));
    assert!(matches!(
        r.state.gateways.get("gw1").unwrap().status,
        GatewayStatus::OutOfService { until_ms: 35_000, .. }
    ));
    let out = r.ok(6_000, probe("gw1", ProbeVerdict::Reachable));
    assert!(matches!(
        out,
        Outcome::GatewayStatus { status: GatewayStatus::InService, changed: true, .. }
    ));
}

#[test]
fn node_put_keeps_status_and_remove_requires_an_empty_node() {
    let mut r = Replica::new();
    r.nodes(&[1, 2], 10);
    r.ok(0, Command::DrainNode { id: 2 });
    r.ok(0, put_node(2, 20));
    let n = r.state.nodes.get(2).unwrap();
    assert_eq!((n.capacity, n.status), (20, NodeStatus::Draining));
    r.ok(0, Command::NodeUp { id: 2 });
    r.ok(0, start("c1", Some(1)));
    let e = r.err(0, Command::RemoveNode { id: 2 });
    assert!(matches!(e, ApplyError::Precondition(_)), "node 2 stands by for c1: {e}");
    r.ok(0, Command::EndCall { call_id: "c1".into(), expected_version: None });
    assert_eq!(r.ok(0, Command::RemoveNode { id: 2 }), Outcome::NodeRemoved { id: 2 });
    assert!(matches!(r.err(0, Command::RemoveNode { id: 2 }), ApplyError::NotFound(_)));
    assert!(matches!(r.err(0, Command::NodeDown { id: 9 }), ApplyError::NotFound(_)));
    assert!(matches!(r.err(0, Command::NodeUp { id: 9 }), ApplyError::NotFound(_)));
    assert!(matches!(r.err(0, Command::DrainNode { id: 9 }), ApplyError::NotFound(_)));
}

#[test]
fn start_call_picks_owner_by_free_capacity_and_a_distinct_standby() {
    let mut r = Replica::new();
    r.ok(0, put_node(1, 2));
    r.ok(0, put_node(2, 5));
    r.ok(0, put_node(3, 5));
    let Outcome::CallStarted(c) = r.ok(7, start("c1", None)) else { panic!() };
    // Nodes 2 and 3 have 5 free; tie -> lower id.
    assert_eq!(c.owner, 2);
    assert_eq!(c.standby, Some(1), "stand-by: least stand-by duty, then least owned, then id");
    assert_eq!((c.version, c.state, c.started_at_ms), (1, CallState::Setup, 7));
    let Outcome::CallStarted(c) = r.ok(7, start("c2", None)) else { panic!() };
    assert_eq!(c.owner, 3);
    assert_ne!(c.standby, Some(3));
    assert_eq!(r.state.calls.node_load(1), NodeLoad { owned: 0, standby: 1 });
    assert!(matches!(r.err(7, start("c2", None)), ApplyError::AlreadyExists(_)));
}

#[test]
fn start_call_respects_capacity_and_liveness() {
    let mut r = Replica::new();
    r.ok(0, put_node(1, 1));
    r.ok(0, put_node(2, 1));
    r.ok(0, start("c1", Some(1)));
    assert!(matches!(r.err(0, start("c2", Some(1))), ApplyError::NoCapacity(_)));
    assert!(matches!(r.err(0, start("c2", Some(9))), ApplyError::NotFound(_)));
    r.ok(0, start("c2", None));
    assert_eq!(r.state.calls.get("c2").unwrap().owner, 2);
    assert!(matches!(r.err(0, start("c3", None)), ApplyError::NoCapacity(_)));
    r.ok(0, Command::DrainNode { id: 2 });
    assert!(matches!(r.err(0, start("c3", Some(2))), ApplyError::Precondition(_)));
    // Gateway capacity.
    r.ok(0, put_node(3, 0));
    r.ok(0, gateway("gw1", "gw1.example:5060", 1, 1));
    let with_gw = |id: &str| Command::StartCall {
        call_id: id.into(),
        from: "1".into(),
        to: "2".into(),
        owner: None,
        gateway: Some("gw1".into()),
    };
    r.ok(0, with_gw("g1"));
    assert_eq!(r.state.calls.gateway_load("gw1"), 1);
    assert!(matches!(r.err(0, with_gw("g2")), ApplyError::NoCapacity(_)));
    assert!(matches!(
        r.err(
            0,
            Command::StartCall {
                call_id: "g3".into(),
                from: "1".into(),
                to: "2".into(),
                owner: None,
                gateway: Some("nope".into()),
            }
        ),
        ApplyError::NotFound(_)
    ));
}

#[test]
fn call_updates_are_compare_and_set() {
    let mut r = Replica::new();
    r.nodes(&[1, 2], 0);
    r.ok(0, start("c1", Some(1)));
    let update = |state, expected_version| Command::UpdateCall {
        call_id: "c1".into(),
        state,
        expected_version,
    };
    let Outcome::CallUpdated(c) = r.ok(5, update(CallState::Ringing, 1)) else { panic!() };
    assert_eq!((c.state, c.version, c.updated_at_ms), (CallState::Ringing, 2, 5));
    let e = r.err(6, update(CallState::Connected, 1));
    assert_eq!(e, ApplyError::VersionConflict { call_id: "c1".into(), expected: 1, actual: 2 });
    r.ok(6, update(CallState::Connected, 2));
    let e = r.err(7, Command::EndCall { call_id: "c1".into(), expected_version: Some(2) });
    assert!(matches!(e, ApplyError::VersionConflict { actual: 3, .. }));
    let out = r.ok(7, update(CallState::Released, 3));
    let Outcome::CallReleased { call, reason } = out else { panic!() };
    assert_eq!((call.state, call.version, reason), (CallState::Released, 4, ReleaseReason::Normal));
    assert!(r.state.calls.is_empty());
    assert!(matches!(r.err(8, update(CallState::Held, 4)), ApplyError::NotFound(_)));
}

/// Three nodes, calls owned by node 1: NodeDown under the hot policy moves
/// each call to its stand-by, keeps state and version, and picks a fresh
/// stand-by that is neither the new owner nor the dead node.
#[test]
fn node_down_hot_moves_calls_to_their_standby() {
    let mut r = Replica::new();
    r.nodes(&[1, 2, 3], 0);
    for id in ["a", "b", "c", "d"] {
        r.ok(0, start(id, Some(1)));
    }
    r.ok(
        0,
        Command::UpdateCall {
            call_id: "a".into(),
            state: CallState::Connected,
            expected_version: 1,
        },
    );
    let standby_before: Vec<_> = r.state.calls.iter().map(|c| c.standby).collect();
    assert_eq!(standby_before, vec![Some(2), Some(3), Some(2), Some(3)], "stand-by spreads");
    let out = r.ok(100, Command::NodeDown { id: 1 });
    let Outcome::NodeStatus { status, moved, released, .. } = out else { panic!() };
    assert_eq!(status, NodeStatus::Down { since_ms: 100 });
    assert!(released.is_empty());
    assert_eq!(moved.len(), 4);
    for (m, standby) in moved.iter().zip(standby_before) {
        assert_eq!(m.previous_owner, 1);
        assert_eq!(Some(m.call.owner), standby);
        assert!(m.call.standby.is_some() && m.call.standby != Some(1));
    }
    let a = r.state.calls.get("a").unwrap();
    assert_eq!((a.state, a.version), (CallState::Connected, 2), "state and version kept");
    // The node comes back: it takes no calls back.
    r.ok(200, Command::NodeUp { id: 1 });
    assert!(r.state.calls.iter().all(|c| c.owner != 1));
    // A repeated NodeDown is harmless.
    r.ok(300, Command::NodeDown { id: 2 });
    let snapshot = r.state.clone();
    let out = r.ok(400, Command::NodeDown { id: 2 });
    assert!(matches!(out, Outcome::NodeStatus { ref moved, .. } if moved.is_empty()));
    assert_eq!(snapshot.calls, r.state.calls);
}

#[test]
fn node_down_cold_releases_owned_calls_and_reassigns_standby_duty() {
    let mut r = Replica::new();
    r.nodes(&[1, 2, 3], 0);
    r.ok(
        0,
        Command::SetPolicy(Policy {
            takeover: Takeover::Cold,
            purge_registrations_on_node_down: true,
            ..Policy::default()
        }),
    );
    r.ok(0, start("owned", Some(1)));
    r.ok(0, start("stood", Some(3)));
    assert_eq!(r.state.calls.get("stood").unwrap().standby, Some(1));
    let out = r.ok(50, Command::NodeDown { id: 1 });
    let Outcome::NodeStatus { moved, released, .. } = out else { panic!() };
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].call_id, "owned");
    assert_eq!(released[0].state, CallState::Released);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].call.standby, Some(2));
    assert!(r.state.calls.get("owned").is_none());
}

#[test]
fn node_down_without_survivors_releases_with_owner_failed() {
    let mut r = Replica::new();
    r.nodes(&[1], 0);
    r.ok(0, start("lonely", Some(1)));
    assert_eq!(r.state.calls.get("lonely").unwrap().standby, None);
    let Outcome::NodeStatus { released, moved, .. } = r.ok(1, Command::NodeDown { id: 1 }) else {
        panic!()
    };
    assert!(moved.is_empty());
    assert_eq!(released[0].call_id, "lonely");
}

#[test]
fn node_down_moves_to_a_live_node_when_the_standby_is_also_down() {
    let mut r = Replica::new();
    r.nodes(&[1, 2, 3], 0);
    r.ok(0, start("x", Some(1)));
    assert_eq!(r.state.calls.get("x").unwrap().standby, Some(2));
    // Stand-by dies first: the call gets node 3 as its stand-by.
    r.ok(0, Command::NodeDown { id: 2 });
    assert_eq!(r.state.calls.get("x").unwrap().standby, Some(3));
    r.ok(0, Command::NodeDown { id: 1 });
    let x = r.state.calls.get("x").unwrap();
    assert_eq!((x.owner, x.standby), (3, None));
}

/// Found by the chaos harness: with every other node down or draining, a
/// dead node's calls went nowhere and were released under the hot policy.
#[test]
fn node_down_hands_calls_to_a_draining_node_rather_than_dropping_them() {
    let mut r = Replica::new();
    r.nodes(&[1, 2, 3], 0);
    r.ok(0, start("x", Some(1)));
    r.ok(0, Command::DrainNode { id: 2 });
    r.ok(0, Command::NodeDown { id: 3 });
    let Outcome::NodeStatus { moved, released, .. } = r.ok(0, Command::NodeDown { id: 1 }) else {
        panic!()
    };
    assert!(released.is_empty(), "{released:?}");
    assert_eq!(moved[0].call.owner, 2);
    assert_eq!(moved[0].call.standby, None);
}

#[test]
fn node_down_purges_its_registrations_by_policy() {
    for purge in [true, false] {
        let mut r = Replica::new();
        r.nodes(&[1, 2], 0);
        r.ok(
            0,
            Command::SetPolicy(Policy {
                takeover: Takeover::Hot,
                purge_registrations_on_node_down: purge,
                purge_after_ms: 0,
                ..Policy::default()
            }),
        );
        let on1 = registered(&r.ok(0, register("1000", "a", 1, 60_000)));
        let on2 = registered(&r.ok(0, register("2000", "b", 2, 60_000)));
        let Outcome::NodeStatus { purged, .. } = r.ok(0, Command::NodeDown { id: 1 }) else {
            panic!()
        };
        if purge {
            assert_eq!(purged, vec![("1000".to_string(), on1)]);
            assert!(lookup(&r.state, "1000", 0).is_empty());
        } else {
            assert!(purged.is_empty());
            assert_eq!(lookup(&r.state, "1000", 0), vec![&on1]);
        }
        assert_eq!(lookup(&r.state, "2000", 0), vec![&on2]);
    }
}

#[test]
fn drain_moves_calls_even_under_the_cold_policy() {
    let mut r = Replica::new();
    r.nodes(&[1, 2, 3], 0);
    r.ok(
        0,
        Command::SetPolicy(Policy {
            takeover: Takeover::Cold,
            purge_registrations_on_node_down: true,
            ..Policy::default()
        }),
    );
    r.ok(0, start("a", Some(1)));
    let Outcome::NodeStatus { status, moved, released, .. } = r.ok(0, Command::DrainNode { id: 1 })
    else {
        panic!()
    };
    assert_eq!(status, NodeStatus::Draining);
    assert!(released.is_empty());
    assert_eq!(moved[0].call.owner, 2);
    assert_eq!(moved[0].call.standby, Some(3));
    // A draining node is neither owner nor stand-by for new calls.
    let Outcome::CallStarted(c) = r.ok(0, start("b", None)) else { panic!() };
    assert_ne!(c.owner, 1);
    assert_ne!(c.standby, Some(1));
}

#[test]
fn batch_applies_each_command_and_reports_each_outcome() {
    let mut r = Replica::new();
    let out = r.ok(
        0,
        Command::Batch(vec![
            register("1000", "a", 1, 60_000),
            Command::DeleteRoute { pattern: "1234".into() },
            Command::Batch(vec![]),
            register("1000", "a", 2, 60_000),
        ]),
    );
    let Outcome::Batch(outs) = out else { panic!() };
    assert_eq!(outs.len(), 4);
    let first = registered(&outs[0]);
    assert!(matches!(outs[1], Outcome::Error(ApplyError::NotFound(_))));
    assert!(matches!(outs[2], Outcome::Error(ApplyError::Invalid(_))));
    let second = registered(&outs[3]);
    assert_ne!(first.generation, second.generation, "one entry, two distinct generations");
    let too_big = Command::Batch(vec![Command::ExpireBindings; MAX_BATCH + 1]);
    assert!(matches!(r.err(0, too_big), ApplyError::Invalid(_)));
}

#[test]
fn set_policy_is_recorded() {
    let mut r = Replica::new();
    let p = Policy {
        takeover: Takeover::Cold,
        purge_registrations_on_node_down: false,
        purge_after_ms: 1,
        max_clock_step_ms: 2,
    };
    assert_eq!(r.ok(0, Command::SetPolicy(p)), Outcome::PolicySet(p));
    assert_eq!(r.state.policy, p);
}

#[test]
fn registrations_are_purged_only_after_the_node_stayed_down() {
    let mut r = Replica::new();
    r.nodes(&[1, 2, 3], 1_000);
    let policy = Policy { purge_after_ms: 10_000, ..Policy::default() };
    r.ok(1_000, Command::SetPolicy(policy));
    let on1 = registered(&r.ok(1_000, register("1000", "a", 1, 3_600_000)));
    r.ok(1_000, start("c", Some(1)));
    // Down: calls move at once, registrations stay.
    let Outcome::NodeStatus { purged, moved, .. } = r.ok(2_000, Command::NodeDown { id: 1 }) else {
        panic!()
    };
    assert!(purged.is_empty());
    assert_eq!(moved.len(), 1);
    assert_eq!(lookup(&r.state, "1000", 2_000), vec![&on1]);
    // Too early: refused, nothing changes.
    let e = r.err(6_000, Command::PurgeNodeRegistrations { id: 1 });
    assert!(matches!(e, ApplyError::Precondition(_)), "{e:?}");
    // Due (down since 2 000, purge after 10 000): purged.
    r.ok(9_000, Command::Tick);
    let Outcome::NodeStatus { purged, .. } =
        r.ok(12_000, Command::PurgeNodeRegistrations { id: 1 })
    else {
        panic!()
    };
    assert_eq!(purged, vec![("1000".to_string(), on1)]);
    assert!(lookup(&r.state, "1000", 12_000).is_empty());
}

#[test]
fn a_node_back_in_time_keeps_its_registrations() {
    let mut r = Replica::new();
    r.nodes(&[1, 2, 3], 1_000);
    r.ok(1_000, Command::SetPolicy(Policy { purge_after_ms: 10_000, ..Policy::default() }));
    let on1 = registered(&r.ok(1_000, register("1000", "a", 1, 3_600_000)));
    r.ok(2_000, Command::NodeDown { id: 1 });
    r.ok(3_000, Command::NodeUp { id: 1 });
    r.ok(8_000, Command::Tick);
    r.ok(13_000, Command::Tick);
    let e = r.err(13_000, Command::PurgeNodeRegistrations { id: 1 });
    assert!(matches!(e, ApplyError::Precondition(_)), "{e:?}");
    assert_eq!(lookup(&r.state, "1000", 13_000), vec![&on1]);
}

#[test]
fn a_leader_decision_applies_only_in_its_own_term() {
    let mut r = Replica::new();
    r.nodes(&[1, 2, 3], 1_000);
    r.ok(1_000, start("c", Some(2)));
    let down = Command::Leader { term: 4, command: Box::new(Command::NodeDown { id: 2 }) };
    // Committed in a later term (a deposed leader's decision re-proposed
    // by the next leader): refused, the call stays where it is.
    let before = r.state.clone();
    let out = apply_entry(&mut r.state, 10, 5, 1_000, &down);
    assert_eq!(out, Outcome::Error(ApplyError::StaleTerm { decided: 4, entry: 5 }));
    assert_eq!(before, r.state);
    // In its own term it applies.
    let out = apply_entry(&mut r.state, 11, 4, 1_000, &down);
    assert!(matches!(out, Outcome::NodeStatus { ref moved, .. } if moved.len() == 1), "{out:?}");
    assert_ne!(r.state.calls.get("c").unwrap().owner, 2);
    // Fences do not nest.
    let nested = Command::Leader { term: 4, command: Box::new(down) };
    assert!(matches!(validate(&nested), Err(ApplyError::Invalid(_))));
}

#[test]
fn a_once_only_request_applies_once_and_answers_its_first_outcome() {
    let mut r = Replica::new();
    r.nodes(&[1, 2], 0);
    let once = |seq, cmd| Command::Once { client: "proxy-a".into(), seq, command: Box::new(cmd) };
    let first = r.ok(0, once(7, register("1000", "a", 1, 60_000)));
    let generations = r.state.generations;
    // The retry is not applied again (no new generation) and says what the first said.
    let again = r.at(0, once(7, register("1000", "a", 1, 60_000)));
    assert_eq!(again, Outcome::Repeated(Box::new(first.clone())));
    assert_eq!(again.into_first(), first);
    assert_eq!(r.state.generations, generations);
    // A refusal is remembered too: a retried StartCall that conflicted the
    // first time conflicts again, without a second attempt.
    r.ok(0, start("c", Some(1)));
    let refused = r.at(0, once(8, start("c", Some(1))));
    assert!(matches!(refused, Outcome::Error(ApplyError::AlreadyExists(_))));
    r.ok(0, Command::EndCall { call_id: "c".into(), expected_version: None });
    let retried = r.at(0, once(8, start("c", Some(1))));
    assert_eq!(retried, Outcome::Repeated(Box::new(refused)));
    assert!(r.state.calls.get("c").is_none());
    // Repeats make no events.
    let mut events = Vec::new();
    crate::state::events::events_of(1, &retried, &mut events);
    assert!(events.is_empty());
}

#[test]
fn the_clock_never_goes_back_and_one_entry_moves_it_at_most_the_cap() {
    let mut r = Replica::new();
    r.ok(1_000_000, Command::Tick);
    assert_eq!(r.state.clock_ms, 1_000_000, "the first stamp sets the clock");
    r.ok(900_000, Command::Tick);
    assert_eq!(r.state.clock_ms, 1_000_000, "never back");
    // A leader ten minutes ahead moves it by the cap only.
    r.ok(1_600_000, Command::Tick);
    assert_eq!(r.state.clock_ms, 1_000_000 + crate::state::DEFAULT_MAX_CLOCK_STEP_MS);
    r.ok(1_000_000, Command::SetPolicy(Policy { max_clock_step_ms: 0, ..Policy::default() }));
    r.ok(1_600_000, Command::Tick);
    assert_eq!(r.state.clock_ms, 1_600_000, "0 = no cap");
}

fn put_user(user: &str, realm: &str, b: u8) -> Command {
    Command::PutUser {
        user: user.into(),
        realm: realm.into(),
        ha1_md5: [b; 16],
        ha1_sha256: [b; 32],
    }
}

#[test]
fn users_put_replace_validate_and_delete() {
    let mut r = Replica::new();
    let out = r.ok(0, put_user("1000", "switchboard", 1));
    assert_eq!(
        out,
        Outcome::UserPut { user: "1000".into(), realm: "switchboard".into(), replaced: false }
    );
    let out = r.ok(0, put_user("1000", "pbx.example", 2));
    assert!(matches!(out, Outcome::UserPut { replaced: true, .. }), "{out:?}");
    let u = r.state.users.get("1000").unwrap();
    assert_eq!((u.realm.as_str(), u.ha1_md5, u.ha1_sha256), ("pbx.example", [2; 16], [2; 32]));
    for bad in [
        put_user("", "r", 0),
        put_user("10 00", "r", 0),
        put_user("alice", "r", 0),
        put_user(&"1".repeat(65), "r", 0),
        put_user("1001", "", 0),
        put_user("1001", "a\"b", 0),
        put_user("1001", "a\\b", 0),
        put_user("1001", "a\r\nb", 0),
        put_user("1001", &"r".repeat(MAX_ID_LEN + 1), 0),
        Command::DeleteUser { user: String::new() },
    ] {
        assert!(matches!(r.err(0, bad.clone()), ApplyError::Invalid(_)), "{bad:?}");
    }
    // A realm may hold spaces (it is a quoted string on the wire).
    r.ok(0, put_user("1001", "Main office", 3));
    assert_eq!(r.state.users.len(), 2);
    assert_eq!(
        r.ok(0, Command::DeleteUser { user: "1000".into() }),
        Outcome::UserDeleted { user: "1000".into() }
    );
    assert!(matches!(
        r.err(0, Command::DeleteUser { user: "1000".into() }),
        ApplyError::NotFound(_)
    ));
    assert!(r.state.users.get("1000").is_none());
}

#[test]
fn user_events_name_the_user_and_realm_but_never_the_hashes() {
    let mut r = Replica::new();
    let mut events = Vec::new();
    let out = r.ok(0, put_user("1000", "switchboard", 0xab));
    crate::state::events::events_of(1, &out, &mut events);
    let out = r.ok(0, Command::DeleteUser { user: "1000".into() });
    crate::state::events::events_of(2, &out, &mut events);
    let kinds: Vec<_> = events.iter().map(|e| (e.kind.as_str(), e.key.as_str())).collect();
    assert_eq!(kinds, [("user_updated", "1000"), ("user_removed", "1000")]);
    assert_eq!(
        events[0].detail,
        crate::state::events::Detail::User { realm: "switchboard".into() }
    );
}

#[test]
fn the_sip_secret_is_set_once_and_a_racing_second_proposal_changes_nothing() {
    use crate::state::users::SipSecret;
    let mut r = Replica::new();
    assert_eq!(r.state.sip_secret, None);
    let first =
        Command::Leader { term: 3, command: Box::new(Command::SetSipSecret(SipSecret([1; 32]))) };
    let out = apply_entry(&mut r.state, 1, 3, 0, &first);
    assert_eq!(out, Outcome::SipSecret { installed: true });
    // Another leader (a later term) that also saw none and drew its own.
    let second =
        Command::Leader { term: 4, command: Box::new(Command::SetSipSecret(SipSecret([2; 32]))) };
    let before = r.state.clone();
    let out = apply_entry(&mut r.state, 2, 4, 0, &second);
    assert_eq!(out, Outcome::SipSecret { installed: false });
    assert_eq!(before, r.state);
    assert_eq!(r.state.sip_secret, Some(SipSecret([1; 32])));
    // And it survives a snapshot round trip.
    let back: State = crate::codec::decode(&crate::codec::encode(&r.state).unwrap()).unwrap();
    assert_eq!(back.sip_secret, Some(SipSecret([1; 32])));
}

// --- SIP REGISTER (RFC 3261 §10.3) ---

fn sip(call_id: &str, cseq: u32, contacts: &[(&str, u64)]) -> Command {
    Command::SipRegister {
        number: "2000".into(),
        call_id: call_id.into(),
        cseq,
        node: 2,
        remove_all: false,
        contacts: contacts
            .iter()
            .map(|&(dev, ttl_ms)| crate::state::command::SipContact {
                device_id: dev.into(),
                contact: format!("sip:2000@{dev}.example"),
                device_name: "phone".into(),
                q: 1000,
                ttl_ms,
            })
            .collect(),
    }
}

fn sip_bindings(out: &Outcome) -> Vec<(String, u64)> {
    match out {
        Outcome::SipRegistered { bindings, .. } => {
            bindings.iter().map(|b| (b.device_id.clone(), b.expires_at_ms)).collect()
        }
        other => panic!("not SipRegistered: {other:?}"),
    }
}

#[test]
fn sip_register_writes_every_contact_and_lists_all_bindings() {
    let mut r = Replica::new();
    r.ok(1_000, register("2000", "grpc-dev", 1, 10_000));
    let out = r.ok(1_000, sip("c1", 1, &[("a", 60_000), ("b", 30_000)]));
    assert_eq!(
        sip_bindings(&out),
        vec![("a".into(), 61_000), ("b".into(), 31_000), ("grpc-dev".into(), 11_000)]
    );
    let a = &r.state.registrations.bindings("2000")[0];
    assert_eq!(a.node, 2);
    assert_eq!(
        a.sip,
        Some(crate::state::registrations::SipOrigin { call_id: "c1".into(), cseq: 1 })
    );
}

#[test]
fn sip_register_same_call_id_needs_a_higher_cseq_and_refuses_as_a_whole() {
    let mut r = Replica::new();
    r.ok(1_000, sip("c1", 5, &[("a", 60_000)]));
    // Same CSeq (a replay) and a lower one: refused, nothing changes, not
    // even the other contact of the same request.
    for cseq in [5, 4] {
        let e = r.err(2_000, sip("c1", cseq, &[("b", 60_000), ("a", 90_000)]));
        assert_eq!(
            e,
            ApplyError::OutOfOrder {
                number: "2000".into(),
                device_id: "a".into(),
                stored: 5,
                cseq
            }
        );
    }
    // Higher CSeq: applied; another Call-ID: applied whatever its CSeq.
    assert_eq!(
        sip_bindings(&r.ok(2_000, sip("c1", 6, &[("a", 90_000)]))),
        vec![("a".into(), 92_000)]
    );
    r.ok(2_000, sip("c2", 1, &[("a", 10_000)]));
    assert_eq!(r.state.registrations.bindings("2000")[0].expires_at_ms, 12_000);
}

#[test]
fn sip_register_ttl_zero_removes_and_star_removes_all_in_order_only() {
    let mut r = Replica::new();
    r.ok(1_000, sip("c1", 1, &[("a", 60_000), ("b", 60_000)]));
    let out = r.ok(1_000, sip("c1", 2, &[("a", 0)]));
    assert_eq!(sip_bindings(&out), vec![("b".into(), 61_000)]);
    let star = |cseq| Command::SipRegister {
        number: "2000".into(),
        call_id: "c1".into(),
        cseq,
        node: 2,
        remove_all: true,
        contacts: vec![],
    };
    assert!(matches!(r.err(1_000, star(1)), ApplyError::OutOfOrder { stored: 1, .. }));
    match r.ok(1_000, star(3)) {
        Outcome::SipRegistered { removed, bindings, .. } => {
            assert_eq!(removed.len(), 1);
            assert!(bindings.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(!r.state.registrations.contains("2000"));
}

#[test]
fn sip_register_refuses_star_with_contacts_duplicates_and_too_many() {
    let mut r = Replica::new();
    let mut c = sip("c1", 1, &[("a", 1)]);
    if let Command::SipRegister { remove_all, .. } = &mut c {
        *remove_all = true;
    }
    assert!(matches!(r.err(0, c), ApplyError::Invalid(_)));
    assert!(matches!(r.err(0, sip("c1", 1, &[("a", 1), ("a", 2)])), ApplyError::Invalid(_)));
    let many: Vec<(String, u64)> = (0..17).map(|i| (format!("d{i}"), 1)).collect();
    let many: Vec<(&str, u64)> = many.iter().map(|(d, t)| (d.as_str(), *t)).collect();
    assert!(matches!(r.err(0, sip("c1", 1, &many)), ApplyError::Invalid(_)));
}

fn put_token(id: &str, role: crate::state::tokens::Role, ttl_ms: Option<u64>) -> Command {
    Command::PutToken { id: id.into(), role, secret_sha256: [7; 32], name: "ops".into(), ttl_ms }
}

#[test]
fn tokens_are_created_once_expire_by_the_replicated_clock_and_keep_an_admin() {
    use crate::state::tokens::Role;
    let mut r = Replica::new();
    assert_eq!(
        r.ok(1_000, put_token("a1", Role::Admin, None)),
        Outcome::TokenPut {
            id: "a1".into(),
            role: Role::Admin,
            created_at_ms: 1_000,
            expires_at_ms: None
        }
    );
    assert!(matches!(
        r.err(1_000, put_token("a1", Role::Read, None)),
        ApplyError::AlreadyExists(_)
    ));
    assert_eq!(r.state.tokens.get("a1").unwrap().role, Role::Admin, "never replaced");
    let out = r.ok(2_000, put_token("r1", Role::Read, Some(60_000)));
    assert_eq!(
        out,
        Outcome::TokenPut {
            id: "r1".into(),
            role: Role::Read,
            created_at_ms: 2_000,
            expires_at_ms: Some(62_000)
        }
    );
    let t = r.state.tokens.get("r1").unwrap();
    assert_eq!((t.created_at_ms, t.secret_sha256, t.name.as_str()), (2_000, [7; 32], "ops"));
    assert!(t.is_live(61_999) && !t.is_live(62_000));
    // The last admin token stays while others exist.
    let err = r.err(3_000, Command::DeleteToken { id: "a1".into() });
    assert!(matches!(&err, ApplyError::Precondition(m) if m.contains("last admin")), "{err:?}");
    r.ok(3_000, put_token("a2", Role::Admin, None));
    assert_eq!(
        r.ok(3_000, Command::DeleteToken { id: "a1".into() }),
        Outcome::TokenDeleted { id: "a1".into() }
    );
    assert!(matches!(
        r.err(3_000, Command::DeleteToken { id: "a1".into() }),
        ApplyError::NotFound(_)
    ));
    r.ok(3_000, Command::DeleteToken { id: "r1".into() });
    // Alone, the last admin token may go: the API is open again.
    r.ok(3_000, Command::DeleteToken { id: "a2".into() });
    assert!(r.state.tokens.is_empty());
    for bad in [put_token("", Role::Read, None), put_token("a b", Role::Read, None)] {
        assert!(matches!(r.err(0, bad.clone()), ApplyError::Invalid(_)), "{bad:?}");
    }
    // Tokens are not announced to watchers.
    let mut events = Vec::new();
    let out = r.ok(4_000, put_token("w1", Role::Write, None));
    crate::state::events::events_of(1, &out, &mut events);
    assert!(events.is_empty(), "{events:?}");
}
