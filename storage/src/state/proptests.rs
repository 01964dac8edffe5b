//! Property tests of the pure state: determinism, snapshot round trips,
//! totality (no command panics) and "a refused command changes nothing".
//!
//! Commands are drawn from small alphabets (a few numbers, devices, nodes,
//! gateways, calls) so that they collide and exercise the interesting paths
//! — replacement, stale deletes, CAS conflicts, takeovers — plus a share of
//! arbitrary strings to exercise validation.

use proptest::prelude::*;

use super::calls::CallState;
use super::dialplan::{Route, RouteTarget};
use super::gateways::{ProbeVerdict, ReportedOutcome};
use super::route::{route, RouteRequest};
use super::tokens::Role;
use super::users::SipSecret;
use super::{apply, Command, NodeId, Outcome, Policy, State, Takeover};

fn pick(options: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        8 => proptest::sample::select(options).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
    .boxed()
}

fn number() -> BoxedStrategy<String> {
    pick(&["1000", "1001", "2000", "95551234"])
}
fn user() -> BoxedStrategy<String> {
    pick(&["1000", "1001", "+4930"])
}
fn device() -> BoxedStrategy<String> {
    pick(&["desk", "soft", "mobile"])
}
fn gateway_id() -> BoxedStrategy<String> {
    pick(&["gw1", "gw2", "gw3"])
}
fn call_id() -> BoxedStrategy<String> {
    pick(&["c1", "c2", "c3", "c4", "c5"])
}
fn node_id() -> impl Strategy<Value = NodeId> {
    0u64..5
}
fn call_state() -> impl Strategy<Value = CallState> {
    prop_oneof![
        Just(CallState::Setup),
        Just(CallState::Ringing),
        Just(CallState::Connected),
        Just(CallState::Held),
        Just(CallState::Released),
    ]
}

fn simple_command() -> BoxedStrategy<Command> {
    prop_oneof![
        (number(), device(), node_id(), 0u16..1200, 0u64..5_000).prop_map(
            |(number, device_id, node, q, ttl_ms)| Command::Register {
                contact: format!("sip:{number}@{device_id}"),
                number,
                device_id,
                device_name: "dev".into(),
                mac: String::new(),
                node,
                q,
                ttl_ms,
            }
        ),
        (
            number(),
            0u8..3,
            0u32..4,
            node_id(),
            any::<bool>(),
            proptest::collection::vec((device(), 0u16..1200, 0u64..5_000), 0..4)
        )
            .prop_map(|(number, call, cseq, node, remove_all, contacts)| {
                Command::SipRegister {
                    call_id: format!("call-{call}"),
                    number,
                    cseq,
                    node,
                    remove_all,
                    contacts: contacts
                        .into_iter()
                        .map(|(device_id, q, ttl_ms)| crate::state::command::SipContact {
                            contact: format!("sip:{device_id}"),
                            device_id,
                            device_name: String::new(),
                            q,
                            ttl_ms,
                        })
                        .collect(),
                }
            }),
        (number(), device(), proptest::option::of(0u64..20), 0u64..5_000).prop_map(
            |(number, device_id, generation, ttl_ms)| Command::Refresh {
                number,
                device_id,
                generation,
                ttl_ms
            }
        ),
        (number(), proptest::option::of(device()), proptest::option::of(0u64..20)).prop_map(
            |(number, device_id, generation)| Command::Unregister { number, device_id, generation }
        ),
        Just(Command::ExpireBindings),
        (pick(&["1XXX", "9@", "2000", "@", "9X@"]), 0u32..3, proptest::bool::ANY, 0u8..3).prop_map(
            |(pattern, priority, registered, strip)| {
                Command::PutRoute(Route {
                    pattern,
                    priority,
                    target: if registered {
                        RouteTarget::Registered
                    } else {
                        RouteTarget::GatewayGroup("pstn".into())
                    },
                    strip,
                    prefix: String::new(),
                })
            }
        ),
        pick(&["1XXX", "9@"]).prop_map(|pattern| Command::DeleteRoute { pattern }),
        (gateway_id(), pick(&["pstn", "intl"]), 0u32..3, 0u32..20, 0u32..3).prop_map(
            |(id, group, priority, weight, capacity)| Command::PutGateway {
                address: format!("{id}.example:5060"),
                id,
                group,
                priority,
                weight,
                capacity,
            }
        ),
        gateway_id().prop_map(|id| Command::DeleteGateway { id }),
        (
            gateway_id(),
            prop_oneof![
                Just(ReportedOutcome::Ok),
                Just(ReportedOutcome::Timeout),
                Just(ReportedOutcome::Failure)
            ],
            0u64..5_000
        )
            .prop_map(|(id, outcome, retry_after_ms)| Command::ReportOutcome {
                id,
                outcome,
                retry_after_ms
            }),
        (
            gateway_id(),
            prop_oneof![Just(ProbeVerdict::Reachable), Just(ProbeVerdict::Unreachable)],
            0u64..5_000
        )
            .prop_map(|(id, verdict, retry_after_ms)| Command::ProbeResult {
                id,
                verdict,
                retry_after_ms
            }),
        (node_id(), 0u32..4).prop_map(|(id, capacity)| Command::PutNode {
            id,
            grpc_addr: format!("127.0.0.1:{}", 7000 + id),
            sip_addr: String::new(),
            capacity,
        }),
        node_id().prop_map(|id| Command::RemoveNode { id }),
        node_id().prop_map(|id| Command::NodeDown { id }),
        node_id().prop_map(|id| Command::NodeUp { id }),
        node_id().prop_map(|id| Command::DrainNode { id }),
        (proptest::bool::ANY, proptest::bool::ANY, 0u64..3, 0u64..3).prop_map(
            |(hot, purge, after, step)| {
                Command::SetPolicy(Policy {
                    takeover: if hot { Takeover::Hot } else { Takeover::Cold },
                    purge_registrations_on_node_down: purge,
                    purge_after_ms: after * 5_000,
                    max_clock_step_ms: step * 4_000,
                })
            }
        ),
        Just(Command::Tick),
        (user(), pick(&["switchboard", "other realm", "a\"b"]), any::<u8>()).prop_map(
            |(user, realm, b)| Command::PutUser {
                user,
                realm,
                ha1_md5: [b; 16],
                ha1_sha256: [b; 32],
            }
        ),
        user().prop_map(|user| Command::DeleteUser { user }),
        (pick(&["t1", "t2", "t3"]), 0u8..3, proptest::option::of(0u64..100_000)).prop_map(
            |(id, role, ttl_ms)| Command::PutToken {
                id,
                role: [Role::Read, Role::Write, Role::Admin][usize::from(role)],
                secret_sha256: [role; 32],
                name: String::new(),
                ttl_ms,
            }
        ),
        pick(&["t1", "t2", "t3"]).prop_map(|id| Command::DeleteToken { id }),
        any::<u8>().prop_map(|b| Command::SetSipSecret(SipSecret([b; 32]))),
        node_id().prop_map(|id| Command::PurgeNodeRegistrations { id }),
        (call_id(), proptest::option::of(node_id()), proptest::option::of(gateway_id())).prop_map(
            |(call_id, owner, gateway)| Command::StartCall {
                call_id,
                from: "1000".into(),
                to: "2000".into(),
                owner,
                gateway,
            }
        ),
        (call_id(), call_state(), 0u64..5).prop_map(|(call_id, state, expected_version)| {
            Command::UpdateCall { call_id, state, expected_version }
        }),
        (call_id(), proptest::option::of(0u64..5)).prop_map(|(call_id, expected_version)| {
            Command::EndCall { call_id, expected_version }
        }),
    ]
    .boxed()
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        10 => simple_command(),
        2 => (0u64..2, simple_command())
            .prop_map(|(term, c)| Command::Leader { term, command: Box::new(c) }),
        2 => (0u64..3, simple_command()).prop_map(|(seq, c)| Command::Once {
            client: "c".into(),
            seq,
            command: Box::new(c),
        }),
        1 => proptest::collection::vec(
            prop_oneof![4 => simple_command(), 1 => Just(Command::Batch(vec![]))],
            0..6
        )
        .prop_map(Command::Batch),
    ]
}

/// (at_ms, command) pairs; times wander back and forth so that the
/// replicated clock's max() matters.
fn history() -> impl Strategy<Value = Vec<(u64, Command)>> {
    proptest::collection::vec((0u64..20_000, command()), 0..80)
}

fn replay(history: &[(u64, Command)]) -> (State, Vec<Outcome>) {
    let mut state = State::default();
    let outcomes = history
        .iter()
        .enumerate()
        .map(|(i, (at, cmd))| apply(&mut state, i as u64 + 1, *at, cmd))
        .collect();
    (state, outcomes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Two replicas applying the same entries end identical, with identical outcomes.
    #[test]
    fn replicas_applying_the_same_log_are_identical(h in history()) {
        let (a, out_a) = replay(&h);
        let (b, out_b) = replay(&h);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(out_a, out_b);
        prop_assert!(a.calls.check_invariants().is_ok(), "{:?}", a.calls.check_invariants());
        prop_assert!(a.registrations.check_invariants().is_ok(), "{:?}", a.registrations.check_invariants());
    }

    /// A replica that restarts from an encoded snapshot at any point and
    /// replays the rest ends exactly where one that never stopped ends.
    #[test]
    fn snapshot_then_replay_equals_uninterrupted_apply(h in history(), cut in any::<prop::sample::Index>()) {
        let cut = if h.is_empty() { 0 } else { cut.index(h.len() + 1) };
        let (full, _) = replay(&h);
        let (mut state, _) = replay(&h[..cut]);
        let bytes = crate::codec::encode(&state).expect("encode");
        state = crate::codec::decode(&bytes).expect("decode");
        for (i, (at, cmd)) in h.iter().enumerate().skip(cut) {
            apply(&mut state, i as u64 + 1, *at, cmd);
        }
        prop_assert_eq!(full, state);
    }

    /// No command panics, the load counters stay exact, and a refused command
    /// changes nothing but the replicated clock. Queries never panic either.
    #[test]
    fn apply_is_total_and_errors_change_nothing(h in history()) {
        let mut state = State::default();
        for (i, (at, cmd)) in h.iter().enumerate() {
            let before = state.clone();
            let out = apply(&mut state, i as u64 + 1, *at, cmd);
            if out.error().is_some() {
                let mut expected = before;
                expected.clock_ms = state.clock_ms;
                // A once-only request remembers even a refusal (its retry
                // must get the same answer).
                if matches!(cmd, Command::Once { .. }) {
                    expected.requests = state.requests.clone();
                }
                prop_assert_eq!(&expected, &state, "{:?} failed with {:?} but changed the state", cmd, out);
            }
            prop_assert!(state.calls.check_invariants().is_ok(), "{:?}", state.calls.check_invariants());
            prop_assert!(state.registrations.check_invariants().is_ok(), "{:?}", state.registrations.check_invariants());
            for digits in ["1000", "95551234", "2000", "x"] {
                let _ = route(&state, &RouteRequest { digits, origin_node: Some(1), now_ms: *at, spread: i as u64 });
            }
        }
    }
}
