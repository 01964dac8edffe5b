//! `route --explain`: the same decision as [`route`], with the reasons.
//!
//! The decision always comes from [`route`] itself, so an explanation can
//! never disagree with what a plain Route answers from the same state; the
//! reasons are then read off the state with the same predicates `route`
//! uses (pattern matching and specificity, gateway availability and load,
//! node liveness and free capacity). Nothing here runs on the normal route
//! path: building strings for every candidate costs more than the route.

use std::cmp::{Ordering, Reverse};

use super::apply::{free_capacity, most_free_node};
use super::dialplan::{matches, more_specific, specificity, Route, RouteTarget};
use super::gateways::{Availability, GatewayStatus};
use super::nodes::NodeStatus;
use super::route::{route, Decision, RouteRequest, TargetKind};
use super::{NodeId, State};

/// How a dial-plan pattern fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternVerdict {
    /// The most specific match: its target set is used.
    Chosen,
    /// Matches the digits, but a more specific pattern won.
    Outranked,
    /// Does not match the digits.
    NoMatch,
}

impl PatternVerdict {
    /// A short label (`chosen`, `outranked`, `no match`).
    pub fn label(self) -> &'static str {
        match self {
            PatternVerdict::Chosen => "chosen",
            PatternVerdict::Outranked => "outranked",
            PatternVerdict::NoMatch => "no match",
        }
    }
}

/// One dial-plan pattern and why it was or was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternNote {
    /// The pattern.
    pub pattern: String,
    /// Its priority (the tie-breaker between equally specific patterns).
    pub priority: u32,
    /// Chosen, outranked or not matching.
    pub verdict: PatternVerdict,
    /// Why, in words.
    pub reason: String,
}

/// One candidate target (a binding of the number or a gateway of the group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateNote {
    /// Device or gateway.
    pub kind: TargetKind,
    /// Device id or gateway id.
    pub id: String,
    /// Its place in the answer (1-based), `None` when it was skipped.
    pub position: Option<u32>,
    /// Why it was offered there, or skipped.
    pub reason: String,
}

/// Every reason behind one routing decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Every dial-plan pattern: the matching ones most specific first (the
    /// chosen one leads), then those that do not match, in pattern order.
    pub patterns: Vec<PatternNote>,
    /// The digits the target saw after the chosen route's strip and prefix
    /// (empty when no pattern matched).
    pub digits: String,
    /// Every candidate of the chosen target, offered ones in answer order,
    /// then the skipped ones.
    pub candidates: Vec<CandidateNote>,
    /// Which node handles the call and why (empty when routing stopped
    /// before the handling node was chosen).
    pub handling: String,
}

/// Route `req` and say why: the decision is [`route`]'s, unchanged.
pub fn explain(state: &State, req: &RouteRequest<'_>) -> (Decision, Explanation) {
    let decision = route(state, req);
    let mut why = Explanation {
        patterns: Vec::new(),
        digits: String::new(),
        candidates: Vec::new(),
        handling: String::new(),
    };
    if super::dialplan::validate_digits(req.digits).is_err() {
        return (decision, why);
    }
    let (matching, other): (Vec<&Route>, Vec<&Route>) =
        state.dial_plan.iter().partition(|r| matches(&r.pattern, req.digits));
    let mut matching = matching;
    matching.sort_by(|a, b| more_specific(a, b));
    if let Some((&chosen, outranked)) = matching.split_first() {
        why.patterns.push(PatternNote {
            pattern: chosen.pattern.clone(),
            priority: chosen.priority,
            verdict: PatternVerdict::Chosen,
            reason: format!("matches; the most specific match ({})", shape(chosen)),
        });
        for r in outranked {
            why.patterns.push(PatternNote {
                pattern: r.pattern.clone(),
                priority: r.priority,
                verdict: PatternVerdict::Outranked,
                reason: format!(
                    "matches, but {} wins: {}",
                    chosen.pattern,
                    outranked_by(r, chosen)
                ),
            });
        }
    }
    for r in other {
        why.patterns.push(PatternNote {
            pattern: r.pattern.clone(),
            priority: r.priority,
            verdict: PatternVerdict::NoMatch,
            reason: no_match(&r.pattern, req.digits),
        });
    }
    let Some(&chosen) = matching.first() else {
        return (decision, why);
    };
    why.digits = chosen.manipulate(req.digits);
    let offered: Vec<(&str, TargetKind)> = match &decision {
        Decision::Route { targets, .. } => {
            targets.iter().map(|t| (t.id.as_str(), t.kind)).collect()
        }
        Decision::Failure { .. } => Vec::new(),
    };
    let position = |id: &str, kind: TargetKind| {
        offered.iter().position(|&(i, k)| i == id && k == kind).map(|p| p as u32 + 1)
    };
    match &chosen.target {
        RouteTarget::Registered => {
            for b in state.registrations.bindings(&why.digits) {
                let pos = position(&b.device_id, TargetKind::Device);
                let reason = if b.is_live(req.now_ms) {
                    format!(
                        "live binding {} (q {}, generation {}, expires in {} s)",
                        b.contact,
                        b.q,
                        b.generation,
                        b.expires_at_ms.saturating_sub(req.now_ms) / 1000
                    )
                } else {
                    format!("expired {} s ago", req.now_ms.saturating_sub(b.expires_at_ms) / 1000)
                };
                why.candidates.push(CandidateNote {
                    kind: TargetKind::Device,
                    id: b.device_id.clone(),
                    position: pos,
                    reason,
                });
            }
        }
        RouteTarget::GatewayGroup(group) => {
            for g in state.gateways.in_group(group) {
                let pos = position(&g.id, TargetKind::Gateway);
                let load = state.calls.gateway_load(&g.id);
                let availability = g.availability(req.now_ms);
                let reason = match (availability, &g.status) {
                    (Availability::Unavailable, GatewayStatus::OutOfService { until_ms, .. }) => {
                        format!(
                            "skipped: out of service until {until_ms} (in {} s)",
                            until_ms.saturating_sub(req.now_ms).div_ceil(1000)
                        )
                    }
                    _ if g.capacity != 0 && load >= g.capacity => {
                        format!("skipped: at capacity ({load} of {} calls)", g.capacity)
                    }
                    (Availability::Retry, _) => format!(
                        "out of service, retry time passed: offered after those in service \
                         (priority {}, weight {})",
                        g.priority, g.weight
                    ),
                    _ => format!(
                        "in service (priority {}, weight {}, {load} calls{}): lower priority \
                         numbers first, weighted order among equals",
                        g.priority,
                        g.weight,
                        match g.capacity {
                            0 => String::new(),
                            c => format!(" of {c}"),
                        }
                    ),
                };
                why.candidates.push(CandidateNote {
                    kind: TargetKind::Gateway,
                    id: g.id.clone(),
                    position: pos,
                    reason,
                });
            }
        }
    }
    // Offered ones in answer order, then the skipped ones as found (stable).
    why.candidates.sort_by_key(|c| (c.position.is_none(), c.position));
    if let Decision::Route { handling_node, .. } = &decision {
        why.handling = handling_reason(state, req.origin_node, *handling_node);
    }
    (decision, why)
}

/// A pattern's specificity in words (from the dial plan's own key).
fn shape(r: &Route) -> String {
    let (Reverse(literal), open, xs, priority) = specificity(r);
    format!(
        "{literal} literal leading digit{}, {}, {xs} X, priority {priority}",
        if literal == 1 { "" } else { "s" },
        if open { "open (@)" } else { "closed" },
    )
}

/// Which step of the specificity order put `winner` ahead of `r`.
fn outranked_by(r: &Route, winner: &Route) -> String {
    let (Reverse(w_lit), w_open, w_xs, w_prio) = specificity(winner);
    let (Reverse(lit), open, xs, prio) = specificity(r);
    if w_lit != lit {
        format!("longer literal prefix ({w_lit} against {lit})")
    } else if w_open != open {
        "a closed pattern before an open one".into()
    } else if w_xs != xs {
        format!("fewer X ({w_xs} against {xs})")
    } else if w_prio != prio {
        format!("lower priority number ({w_prio} against {prio})")
    } else {
        debug_assert_eq!(winner.pattern.cmp(&r.pattern), Ordering::Less);
        "equal in every respect; the pattern text breaks the tie".into()
    }
}

/// Why `pattern` does not match `digits`: the first position that differs,
/// or the length.
fn no_match(pattern: &str, digits: &str) -> String {
    let (body, open) = match pattern.strip_suffix('@') {
        Some(b) => (b, true),
        None => (pattern, false),
    };
    for (i, (p, d)) in body.bytes().zip(digits.bytes()).enumerate() {
        let ok = if p == b'X' { d.is_ascii_digit() } else { p == d };
        if !ok {
            return format!(
                "position {}: pattern has {:?}, digits have {:?}",
                i + 1,
                p as char,
                d as char
            );
        }
    }
    if open {
        format!("needs more than {} characters, digits have {}", body.len(), digits.len())
    } else {
        format!("needs exactly {} characters, digits have {}", body.len(), digits.len())
    }
}

/// Why `chosen` handles the call (mirrors [`super::route::handling_node`]).
fn handling_reason(state: &State, origin: Option<NodeId>, chosen: NodeId) -> String {
    let free = |id: NodeId| {
        state.nodes.get(id).map(|n| match free_capacity(state, n) {
            u64::MAX => "no capacity limit".to_owned(),
            f => format!("{f} free of {}", n.capacity),
        })
    };
    let origin_state = origin.map(|id| match state.nodes.get(id) {
        None => format!("origin node {id} is not in the node table"),
        Some(n) => match n.status {
            NodeStatus::Down { since_ms } => {
                format!("origin node {id} is down (declared at {since_ms})")
            }
            NodeStatus::Draining => format!("origin node {id} is draining"),
            NodeStatus::Up if free_capacity(state, n) == 0 => {
                format!("origin node {id} is full ({} calls)", n.capacity)
            }
            NodeStatus::Up => String::new(),
        },
    });
    match origin_state {
        Some(s) if s.is_empty() && origin == Some(chosen) => format!(
            "node {chosen}: the call arrived there and it is up with room ({})",
            free(chosen).unwrap_or_default()
        ),
        other => {
            let lead = other.map(|s| format!("{s}; ")).unwrap_or_default();
            debug_assert_eq!(most_free_node(state, None, true), Some(chosen));
            format!(
                "{lead}node {chosen}: the live node with the most free capacity ({})",
                free(chosen).unwrap_or_default()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::dialplan::Route;
    use crate::state::gateways::ReportedOutcome;
    use crate::state::{apply, Command};

    fn run(state: &mut State, index: &mut u64, cmd: Command) {
        *index += 1;
        let out = apply(state, *index, state.clock_ms, &cmd);
        assert!(out.error().is_none(), "{cmd:?}: {out:?}");
    }

    fn gateway(id: &str, priority: u32, capacity: u32) -> Command {
        Command::PutGateway {
            id: id.into(),
            group: "pstn".into(),
            address: format!("{id}.example:5060"),
            priority,
            weight: 1,
            capacity,
        }
    }

    fn world() -> (State, u64) {
        let mut s = State::default();
        let mut i = 0;
        for (id, capacity) in [(1, 10), (2, 10)] {
            run(
                &mut s,
                &mut i,
                Command::PutNode {
                    id,
                    grpc_addr: format!("127.0.0.1:{}", 7000 + id),
                    sip_addr: String::new(),
                    capacity,
                },
            );
        }
        for (pattern, priority) in [("9@", 0), ("95XXXXXX", 0), ("955@", 3), ("1XXX", 0)] {
            run(
                &mut s,
                &mut i,
                Command::PutRoute(Route {
                    pattern: pattern.into(),
                    priority,
                    target: RouteTarget::GatewayGroup("pstn".into()),
                    strip: 1,
                    prefix: String::new(),
                }),
            );
        }
        run(&mut s, &mut i, gateway("gw-a", 1, 0));
        run(&mut s, &mut i, gateway("gw-b", 2, 0));
        run(&mut s, &mut i, gateway("gw-c", 1, 0));
        (s, i)
    }

    #[test]
    fn every_pattern_and_gateway_gets_its_reason() {
        let (mut s, mut i) = world();
        // gw-c times out: out of service for a while.
        run(
            &mut s,
            &mut i,
            Command::ReportOutcome {
                id: "gw-c".into(),
                outcome: ReportedOutcome::Timeout,
                retry_after_ms: 60_000,
            },
        );
        let req = RouteRequest {
            digits: "95551234",
            origin_node: Some(1),
            now_ms: s.clock_ms,
            spread: 0,
        };
        let (decision, why) = explain(&s, &req);
        assert_eq!(decision, route(&s, &req), "the decision is route()'s");
        let verdicts: Vec<(&str, PatternVerdict)> =
            why.patterns.iter().map(|p| (p.pattern.as_str(), p.verdict)).collect();
        assert_eq!(
            verdicts,
            vec![
                ("955@", PatternVerdict::Chosen),
                ("95XXXXXX", PatternVerdict::Outranked),
                ("9@", PatternVerdict::Outranked),
                ("1XXX", PatternVerdict::NoMatch),
            ]
        );
        assert!(why.patterns[1].reason.contains("longer literal prefix (3 against 2)"), "{why:?}");
        assert!(why.patterns[3].reason.contains("position 1"), "{why:?}");
        assert_eq!(why.digits, "5551234");
        let cands: Vec<(&str, Option<u32>)> =
            why.candidates.iter().map(|c| (c.id.as_str(), c.position)).collect();
        assert_eq!(cands, vec![("gw-a", Some(1)), ("gw-b", Some(2)), ("gw-c", None)]);
        assert!(why.candidates[2].reason.starts_with("skipped: out of service until"), "{why:?}");
        assert!(why.handling.starts_with("node 1: the call arrived there"), "{}", why.handling);
    }

    #[test]
    fn a_full_origin_and_a_full_gateway_are_named() {
        let (mut s, mut i) = world();
        run(&mut s, &mut i, gateway("gw-a", 1, 1));
        run(
            &mut s,
            &mut i,
            Command::PutNode {
                id: 1,
                grpc_addr: "127.0.0.1:7001".into(),
                sip_addr: String::new(),
                capacity: 1,
            },
        );
        run(
            &mut s,
            &mut i,
            Command::StartCall {
                call_id: "c1".into(),
                from: "a".into(),
                to: "b".into(),
                owner: Some(1),
                gateway: Some("gw-a".into()),
            },
        );
        let req = RouteRequest {
            digits: "95551234",
            origin_node: Some(1),
            now_ms: s.clock_ms,
            spread: 0,
        };
        let (decision, why) = explain(&s, &req);
        assert_eq!(decision, route(&s, &req));
        let a = why.candidates.iter().find(|c| c.id == "gw-a").unwrap();
        assert_eq!(a.position, None);
        assert_eq!(a.reason, "skipped: at capacity (1 of 1 calls)");
        assert!(
            why.handling.starts_with("origin node 1 is full (1 calls); node 2: the live node"),
            "{}",
            why.handling
        );
    }

    #[test]
    fn no_match_and_bad_digits_explain_what_they_can() {
        let (s, _) = world();
        let req = RouteRequest { digits: "777", origin_node: None, now_ms: 0, spread: 0 };
        let (decision, why) = explain(&s, &req);
        assert!(matches!(decision, Decision::Failure { .. }));
        assert!(why.patterns.iter().all(|p| p.verdict == PatternVerdict::NoMatch));
        assert_eq!(why.patterns.len(), 4);
        assert!(why.candidates.is_empty() && why.handling.is_empty() && why.digits.is_empty());
        let bad = RouteRequest { digits: "12a", origin_node: None, now_ms: 0, spread: 0 };
        let (decision, why) = explain(&s, &bad);
        assert!(matches!(decision, Decision::Failure { .. }));
        assert!(why.patterns.is_empty());
    }
}
