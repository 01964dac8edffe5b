//! Read-side queries on the replicated state: [`lookup`] (a number's live
//! bindings) and [`route`] (dialled digits -> ordered targets and the node
//! that should handle the call, or a SIP-style failure).
//!
//! Both are pure functions of the state and the caller's `now_ms`; they never
//! change the state. An out-of-service gateway whose retry time has passed is
//! offered again by `route` without a write (seed 001 claim 12): its status is
//! only recorded as in service once a proxy reports it `Ok` or the prober
//! sees it answer.

use super::apply::{free_capacity, most_free_node};
use super::dialplan::{validate_digits, RouteTarget};
use super::gateways::{Availability, Gateway};
use super::registrations::Binding;
use super::{NodeId, State};

/// The live bindings of `number` at `now_ms`, best first: higher q, then the
/// newest registration, then device id.
pub fn lookup<'a>(state: &'a State, number: &str, now_ms: u64) -> Vec<&'a Binding> {
    let mut live: Vec<&Binding> =
        state.registrations.bindings(number).iter().filter(|b| b.is_live(now_ms)).collect();
    live.sort_by(|a, b| {
        b.q.cmp(&a.q).then(b.generation.cmp(&a.generation)).then(a.device_id.cmp(&b.device_id))
    });
    live
}

/// A routing question.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// The dialled digits.
    pub digits: &'a str,
    /// The node the call arrived at, if any; it handles the call when it has room.
    pub origin_node: Option<NodeId>,
    /// The asker's clock (ms since the epoch) for expiry and retry times.
    pub now_ms: u64,
    /// Varies the weighted choice among equal-priority gateways; callers pass
    /// a per-request counter so that successive requests spread the load.
    /// The same value always gives the same order.
    pub spread: u64,
}

/// What a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A registered device (binding).
    Device,
    /// A destination gateway.
    Gateway,
}

/// One place to send the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// SIP URI to try.
    pub uri: String,
    /// Device or gateway.
    pub kind: TargetKind,
    /// The device id or the gateway id.
    pub id: String,
}

/// Why a call cannot be routed, as a SIP status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    /// 400: the dialled string is not digits.
    BadRequest,
    /// 404: no dial-plan match, or the number is not registered.
    NotFound,
    /// 480: the number is known but no binding is live.
    TemporarilyUnavailable,
    /// 503: every candidate gateway is out of service or full, or no node has room.
    ServiceUnavailable,
}

impl FailureCode {
    /// A short label for metrics: the code as text.
    pub fn label(self) -> &'static str {
        match self {
            FailureCode::BadRequest => "400",
            FailureCode::NotFound => "404",
            FailureCode::TemporarilyUnavailable => "480",
            FailureCode::ServiceUnavailable => "503",
        }
    }

    /// The SIP status code.
    pub fn code(self) -> u16 {
        match self {
            FailureCode::BadRequest => 400,
            FailureCode::NotFound => 404,
            FailureCode::TemporarilyUnavailable => 480,
            FailureCode::ServiceUnavailable => 503,
        }
    }
}

/// The answer to a [`RouteRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try these targets in order; `handling_node` should handle the call.
    Route {
        /// Ordered targets.
        targets: Vec<Target>,
        /// The node that has room for the call.
        handling_node: NodeId,
    },
    /// The call cannot be routed.
    Failure {
        /// SIP-style code.
        code: FailureCode,
        /// Human-readable reason.
        reason: String,
    },
}

fn fail(code: FailureCode, reason: impl Into<String>) -> Decision {
    Decision::Failure { code, reason: reason.into() }
}

/// Route dialled digits: the most specific dial-plan match gives the target
/// set; the handling node is the origin node when it is up and has room, else
/// the live node with the most free capacity.
pub fn route(state: &State, req: &RouteRequest<'_>) -> Decision {
    if let Err(e) = validate_digits(req.digits) {
        return fail(FailureCode::BadRequest, e);
    }
    let Some(rule) = state.dial_plan.best_match(req.digits) else {
        return fail(FailureCode::NotFound, format!("no dial-plan route matches {}", req.digits));
    };
    let digits = rule.manipulate(req.digits);
    let targets = match &rule.target {
        RouteTarget::Registered => {
            let live = lookup(state, &digits, req.now_ms);
            if live.is_empty() {
                return if state.registrations.contains(&digits) {
                    fail(
                        FailureCode::TemporarilyUnavailable,
                        format!("{digits} has no live binding"),
                    )
                } else {
                    fail(FailureCode::NotFound, format!("{digits} is not registered"))
                };
            }
            live.into_iter()
                .map(|b| Target {
                    uri: b.contact.clone(),
                    kind: TargetKind::Device,
                    id: b.device_id.clone(),
                })
                .collect()
        }
        RouteTarget::GatewayGroup(group) => {
            let order = gateway_order(state, group, req.now_ms, req.spread);
            if order.is_empty() {
                return fail(
                    FailureCode::ServiceUnavailable,
                    format!("no gateway of group {group} is in service with room"),
                );
            }
            order
                .into_iter()
                .map(|g| Target {
                    uri: format!("sip:{digits}@{}", g.address),
                    kind: TargetKind::Gateway,
                    id: g.id.clone(),
                })
                .collect()
        }
    };
    match handling_node(state, req.origin_node) {
        Some(handling_node) => Decision::Route { targets, handling_node },
        None => fail(FailureCode::ServiceUnavailable, "no live node has room for the call"),
    }
}

/// The origin node when it is up and has room, else the live node with the
/// most free capacity (seed 000's resource-availability map).
pub fn handling_node(state: &State, origin: Option<NodeId>) -> Option<NodeId> {
    let origin_ok = origin
        .and_then(|id| state.nodes.get(id))
        .filter(|n| n.is_up() && free_capacity(state, n) > 0);
    match origin_ok {
        Some(n) => Some(n.id),
        None => most_free_node(state, None, true),
    }
}

/// The gateways of `group` in the order to offer them: in service before
/// those whose retry time has passed (those still out of service and those
/// at capacity are left out); within that, lower priority number first; among
/// equal priorities a weighted order drawn from `spread`.
pub fn gateway_order<'a>(
    state: &'a State,
    group: &str,
    now_ms: u64,
    spread: u64,
) -> Vec<&'a Gateway> {
    let mut offer: Vec<(Availability, &Gateway)> = state
        .gateways
        .in_group(group)
        .map(|g| (g.availability(now_ms), g))
        .filter(|(a, g)| {
            *a != Availability::Unavailable
                && (g.capacity == 0 || state.calls.gateway_load(&g.id) < g.capacity)
        })
        .collect();
    offer.sort_by(|(a1, g1), (a2, g2)| (a1, g1.priority, &g1.id).cmp(&(a2, g2.priority, &g2.id)));
    let mut out: Vec<&Gateway> = Vec::with_capacity(offer.len());
    for (tier_no, tier) in
        offer.chunk_by(|(a1, g1), (a2, g2)| (a1, g1.priority) == (a2, g2.priority)).enumerate()
    {
        let mut tier: Vec<&Gateway> = tier.iter().map(|(_, g)| *g).collect();
        weighted_shuffle(&mut tier, spread ^ (tier_no as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        out.extend(tier);
    }
    out
}

/// Order `tier` by repeated weighted draws (RFC 2782's selection, driven by a
/// deterministic generator instead of a random one): each draw picks a
/// remaining gateway with probability proportional to its weight; weight-0
/// gateways come last, in id order.
fn weighted_shuffle(tier: &mut [&Gateway], seed: u64) {
    let mut rng = seed;
    for start in 0..tier.len() {
        let total: u64 = tier[start..].iter().map(|g| u64::from(g.weight)).sum();
        if total == 0 {
            return;
        }
        let mut r = splitmix64(&mut rng) % total;
        let mut pick = start;
        for (i, g) in tier.iter().enumerate().skip(start) {
            let w = u64::from(g.weight);
            if r < w {
                pick = i;
                break;
            }
            r -= w;
        }
        tier[start..=pick].rotate_right(1);
    }
}

/// SplitMix64: a tiny, well-mixed deterministic generator. Written out here
/// rather than pulling a crate: state/ must not depend on anything random,
/// and this is five lines.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::dialplan::Route;
    use crate::state::gateways::ReportedOutcome;
    use crate::state::{apply, Command};

    struct World {
        state: State,
        index: u64,
    }

    impl World {
        fn new(nodes: &[(NodeId, u32)]) -> Self {
            let mut w = World { state: State::default(), index: 0 };
            for &(id, capacity) in nodes {
                w.run(Command::PutNode {
                    id,
                    grpc_addr: format!("127.0.0.1:{}", 7000 + id),
                    sip_addr: String::new(),
                    capacity,
                });
            }
            w
        }

        fn run(&mut self, cmd: Command) {
            self.run_at(self.state.clock_ms, cmd)
        }

        fn run_at(&mut self, at_ms: u64, cmd: Command) {
            self.index += 1;
            let out = apply(&mut self.state, self.index, at_ms, &cmd);
            assert!(out.error().is_none(), "{cmd:?}: {out:?}");
        }

        fn route(&mut self, pattern: &str, target: RouteTarget, strip: u8, prefix: &str) {
            self.run(Command::PutRoute(Route {
                pattern: pattern.into(),
                priority: 0,
                target,
                strip,
                prefix: prefix.into(),
            }));
        }

        fn gw(&mut self, id: &str, group: &str, priority: u32, weight: u32, capacity: u32) {
            self.run(Command::PutGateway {
                id: id.into(),
                group: group.into(),
                address: format!("{id}.example:5060"),
                priority,
                weight,
                capacity,
            });
        }

        fn ask(&self, digits: &str, origin: Option<NodeId>, now_ms: u64) -> Decision {
            route(&self.state, &RouteRequest { digits, origin_node: origin, now_ms, spread: 0 })
        }

        fn ids(&self, digits: &str, now_ms: u64, spread: u64) -> Vec<String> {
            let req = RouteRequest { digits, origin_node: Some(1), now_ms, spread };
            match route(&self.state, &req) {
                Decision::Route { targets, .. } => targets.into_iter().map(|t| t.id).collect(),
                Decision::Failure { code, reason } => panic!("{code:?}: {reason}"),
            }
        }
    }

    fn code(d: &Decision) -> Option<u16> {
        match d {
            Decision::Failure { code, .. } => Some(code.code()),
            Decision::Route { .. } => None,
        }
    }

    #[test]
    fn registered_number_routes_to_its_live_bindings() {
        let mut w = World::new(&[(1, 0)]);
        w.route("1XXX", RouteTarget::Registered, 0, "");
        w.run(Command::Register {
            number: "1000".into(),
            device_id: "desk".into(),
            contact: "sip:1000@10.0.0.5:5060".into(),
            device_name: "SEP1".into(),
            mac: String::new(),
            node: 1,
            q: 1000,
            ttl_ms: 1_000,
        });
        let d = w.ask("1000", Some(1), 0);
        assert_eq!(
            d,
            Decision::Route {
                targets: vec![Target {
                    uri: "sip:1000@10.0.0.5:5060".into(),
                    kind: TargetKind::Device,
                    id: "desk".into()
                }],
                handling_node: 1
            }
        );
        // Unknown number under a matching pattern: 404. Known but expired: 480.
        assert_eq!(code(&w.ask("1001", Some(1), 0)), Some(404));
        assert_eq!(code(&w.ask("1000", Some(1), 1_000)), Some(480));
        // No pattern at all: 404. Not digits: 400.
        assert_eq!(code(&w.ask("555", Some(1), 0)), Some(404));
        assert_eq!(code(&w.ask("1a00", Some(1), 0)), Some(400));
    }

    #[test]
    fn gateway_routes_apply_digit_manipulation_and_priority() {
        let mut w = World::new(&[(1, 0)]);
        w.route("9@", RouteTarget::GatewayGroup("pstn".into()), 1, "+1");
        w.gw("backup", "pstn", 20, 10, 0);
        w.gw("main", "pstn", 10, 10, 0);
        w.gw("other", "intl", 0, 10, 0);
        let Decision::Route { targets, handling_node } = w.ask("95551234", Some(1), 0) else {
            panic!()
        };
        assert_eq!(handling_node, 1);
        let uris: Vec<_> = targets.iter().map(|t| t.uri.as_str()).collect();
        assert_eq!(uris, ["sip:+15551234@main.example:5060", "sip:+15551234@backup.example:5060"]);
        assert!(targets.iter().all(|t| t.kind == TargetKind::Gateway));
    }

    /// Seed 001 claims 11 and 12: a timed-out gateway is not offered before
    /// its retry time, and after it is offered again behind the in-service ones.
    #[test]
    fn timed_out_gateway_is_skipped_until_its_retry_time_then_offered_last() {
        let mut w = World::new(&[(1, 0)]);
        w.route("9@", RouteTarget::GatewayGroup("pstn".into()), 0, "");
        w.gw("a", "pstn", 1, 10, 0);
        w.gw("b", "pstn", 2, 10, 0);
        w.run_at(
            1_000,
            Command::ReportOutcome {
                id: "a".into(),
                outcome: ReportedOutcome::Timeout,
                retry_after_ms: 30_000,
            },
        );
        assert_eq!(w.ids("91", 30_999, 0), ["b"]);
        assert_eq!(w.ids("91", 31_000, 0), ["b", "a"], "retry time passed: offered after b");
        w.run(Command::ReportOutcome {
            id: "b".into(),
            outcome: ReportedOutcome::Failure,
            retry_after_ms: 60_000,
        });
        assert_eq!(code(&w.ask("91", Some(1), 2_000)), Some(503), "every gateway out");
    }

    #[test]
    fn full_gateways_are_skipped() {
        let mut w = World::new(&[(1, 0)]);
        w.route("9@", RouteTarget::GatewayGroup("pstn".into()), 0, "");
        w.gw("small", "pstn", 1, 10, 1);
        w.gw("big", "pstn", 2, 10, 0);
        w.run(Command::StartCall {
            call_id: "c1".into(),
            from: "1".into(),
            to: "2".into(),
            owner: Some(1),
            gateway: Some("small".into()),
        });
        assert_eq!(w.ids("91", 0, 0), ["big"]);
    }

    #[test]
    fn equal_priorities_share_load_by_weight() {
        let mut w = World::new(&[(1, 0)]);
        w.route("9@", RouteTarget::GatewayGroup("pstn".into()), 0, "");
        w.gw("heavy", "pstn", 1, 30, 0);
        w.gw("light", "pstn", 1, 10, 0);
        w.gw("never-first", "pstn", 1, 0, 0);
        w.gw("spare", "pstn", 2, 10, 0);
        let mut first = std::collections::BTreeMap::<String, u32>::new();
        for spread in 0..4_000u64 {
            let ids = w.ids("91", 0, spread);
            assert_eq!(ids.len(), 4);
            assert_eq!(ids[2], "never-first", "weight 0 goes last in its tier: {ids:?}");
            assert_eq!(ids[3], "spare", "lower tier after: {ids:?}");
            *first.entry(ids[0].clone()).or_default() += 1;
        }
        // Expected 3000 : 1000; allow a wide margin, the point is the ratio.
        let (heavy, light) = (first["heavy"], first["light"]);
        assert!((2_700..=3_300).contains(&heavy), "heavy first {heavy} of 4000");
        assert_eq!(heavy + light, 4_000);
        // Deterministic: the same spread gives the same order.
        assert_eq!(w.ids("91", 0, 17), w.ids("91", 0, 17));
    }

    /// Seed 000: the origin handles the call when it has room, else the node
    /// with the most free capacity; none -> 503.
    #[test]
    fn handling_node_follows_capacity() {
        let mut w = World::new(&[(1, 1), (2, 3), (3, 2)]);
        w.route("9@", RouteTarget::GatewayGroup("pstn".into()), 0, "");
        w.gw("a", "pstn", 1, 1, 0);
        let handling = |w: &World, origin| match w.ask("91", origin, 0) {
            Decision::Route { handling_node, .. } => Some(handling_node),
            Decision::Failure { .. } => None,
        };
        assert_eq!(handling(&w, Some(1)), Some(1));
        assert_eq!(handling(&w, None), Some(2));
        let mut n = 0;
        let mut start = |w: &mut World, owner| {
            n += 1;
            w.run(Command::StartCall {
                call_id: format!("c{n}"),
                from: "1".into(),
                to: "2".into(),
                owner: Some(owner),
                gateway: None,
            });
        };
        start(&mut w, 1);
        assert_eq!(handling(&w, Some(1)), Some(2), "node 1 full: most free is 2 (3 free)");
        start(&mut w, 2);
        start(&mut w, 2);
        assert_eq!(handling(&w, Some(1)), Some(3), "2 has 1 free, 3 has 2");
        start(&mut w, 2);
        start(&mut w, 3);
        start(&mut w, 3);
        assert_eq!(handling(&w, Some(1)), None);
        assert_eq!(code(&w.ask("91", Some(1), 0)), Some(503));
        // A down origin never handles calls.
        w.run(Command::NodeDown { id: 1 });
        assert_eq!(handling_node(&w.state, Some(1)), None);
    }
}
