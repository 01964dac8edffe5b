//! The route workload's check: each Route answer against the one answer the
//! plan allows ([`Plan::expected`]), written from the public API's contract
//! and the workload's own writes — not from the server's routing code.
//!
//! For every Route that the node answered (an RPC error, such as a node
//! paused or not yet caught up, answers nothing and is only counted):
//!
//! - the targets must be exactly the expected ones, in order: a planned
//!   number's one device and contact; for the gateway route the in-service
//!   gateways by priority, digits rewritten, and never the one reported out
//!   of service;
//! - the handling node must be a node of the cluster;
//! - a failure is wrong, with one exception: 503 because no node is up with
//!   room. Which nodes are up is changed by faults (a node declared down),
//!   never by time, so that answer says nothing about the clock; it is
//!   counted apart.
//!
//! Each wrong answer names its node, consistency and time, and the clock
//! skew in force at that node then, if any. The result also counts the
//! answers given by a node while its clock was skewed, so that a valid
//! verdict shows whether skewed nodes were asked at all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Plan;
use crate::checker::Verdict;
use crate::history::{Call, NemesisEvent, NemesisPhase, Op, OpResult, Ret, RouteTarget};
use crate::nemesis::{clock_detail, parse_clock_detail, CLOCK};

/// The reason text of the one acceptable failure (503, no node with room).
const NO_NODE_WITH_ROOM: &str = "no live node has room";

/// What [`check_routes`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteResult {
    /// Answers checked.
    pub checked: usize,
    /// Of them, LINEARIZABLE ones (the rest are LOCAL).
    pub linearizable: usize,
    /// Answers checked, per node asked.
    pub by_node: BTreeMap<u64, usize>,
    /// Answers given by a node while its clock was skewed.
    pub during_skew: usize,
    /// 503s because no node was up with room (acceptable, see the module).
    pub no_node_with_room: usize,
    /// Routes that got an RPC error instead of an answer.
    pub refused: usize,
    /// Every wrong answer.
    pub wrong: Vec<WrongRoute>,
}

impl RouteResult {
    /// Invalid with any wrong answer; unknown when no answer was checked.
    pub fn verdict(&self) -> Verdict {
        if !self.wrong.is_empty() {
            Verdict::Invalid
        } else if self.checked == 0 {
            Verdict::Unknown
        } else {
            Verdict::Valid
        }
    }
}

/// One wrong Route answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrongRoute {
    /// The operation.
    pub op: Op,
    /// The node that answered.
    pub node: u64,
    /// Whether it was a LINEARIZABLE route.
    pub linearizable: bool,
    /// What it should have answered.
    pub expected: String,
    /// What it answered.
    pub got: String,
    /// The answering node's clock skew while the route was outstanding
    /// (`"node 2 clock +7 min"`), if any.
    pub skew: Option<String>,
}

impl WrongRoute {
    /// One line: who answered what, when, and what was expected.
    pub fn describe(&self) -> String {
        format!(
            "node {} answered a {} route of {} at {:.3}-{:.3} s{}: got {}; expected {}",
            self.node,
            if self.linearizable { "LINEARIZABLE" } else { "LOCAL" },
            self.op.key,
            self.op.invoke_ns as f64 / 1e9,
            self.op.complete_ns.unwrap_or(self.op.invoke_ns) as f64 / 1e9,
            self.skew.as_ref().map_or(String::new(), |s| format!(" (while {s})")),
            self.got,
            self.expected,
        )
    }
}

/// One node's clock skew, from a `clock` nemesis start to its stop.
struct Skew {
    node: u64,
    minutes: i64,
    from_ns: u64,
    until_ns: u64,
}

/// The clock skews among `events` (one still open at the end lasts forever).
fn skews(events: &[NemesisEvent]) -> Vec<Skew> {
    let mut events: Vec<&NemesisEvent> = events.iter().filter(|e| e.kind == CLOCK).collect();
    events.sort_by_key(|e| e.at_ns);
    let mut out: Vec<Skew> = Vec::new();
    for e in events {
        let Some((node, minutes)) = parse_clock_detail(&e.detail) else { continue };
        match e.phase {
            NemesisPhase::Start => {
                out.push(Skew { node, minutes, from_ns: e.at_ns, until_ns: u64::MAX })
            }
            NemesisPhase::Stop => {
                if let Some(open) =
                    out.iter_mut().rev().find(|s| s.node == node && s.until_ns == u64::MAX)
                {
                    open.until_ns = e.at_ns;
                }
            }
        }
    }
    out
}

/// Check every [`Call::Route`] of `ops` (others are ignored) against `plan`;
/// `nodes` are the cluster's node ids, `events` the nemesis log.
pub fn check_routes(
    plan: &Plan,
    ops: &[Op],
    events: &[NemesisEvent],
    nodes: &[u64],
) -> RouteResult {
    let skews = skews(events);
    let mut result = RouteResult::default();
    for op in ops {
        let Call::Route { node, linearizable } = op.call else { continue };
        let (ret, Some(complete_ns)) = (&op.result, op.complete_ns) else {
            result.refused += 1;
            continue;
        };
        let OpResult::Ok(ret) = ret else {
            result.refused += 1;
            continue;
        };
        result.checked += 1;
        result.linearizable += usize::from(linearizable);
        *result.by_node.entry(node).or_default() += 1;
        let skew = skews
            .iter()
            .find(|s| s.node == node && s.from_ns < complete_ns && op.invoke_ns < s.until_ns);
        result.during_skew += usize::from(skew.is_some());
        let expected = plan.expected(&op.key);
        let wrong = match (ret, &expected) {
            (_, None) => true,
            (Ret::Routed { targets, handling_node }, Some(want)) => {
                targets != want || !nodes.contains(handling_node)
            }
            (Ret::Unroutable { code, reason }, Some(_)) => {
                !(*code == 503 && reason.contains(NO_NODE_WITH_ROOM))
            }
            (_, Some(_)) => true,
        };
        if !wrong {
            result.no_node_with_room += usize::from(matches!(ret, Ret::Unroutable { .. }));
            continue;
        }
        result.wrong.push(WrongRoute {
            op: op.clone(),
            node,
            linearizable,
            expected: match &expected {
                Some(want) => format!("{} (handling node one of {nodes:?})", targets_text(want)),
                None => "nothing: the workload never set these digits up".into(),
            },
            got: answer_text(ret),
            skew: skew.map(|s| clock_detail(s.node, s.minutes)),
        });
    }
    result
}

fn targets_text(targets: &[RouteTarget]) -> String {
    let each: Vec<String> =
        targets.iter().map(|t| format!("{} {} {}", t.kind, t.id, t.uri)).collect();
    format!("[{}]", each.join(", "))
}

fn answer_text(ret: &Ret) -> String {
    match ret {
        Ret::Routed { targets, handling_node } => {
            format!("{} handled by node {handling_node}", targets_text(targets))
        }
        Ret::Unroutable { code, reason } => format!("{code} {reason:?}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{gateway_digits, number};

    const NODES: [u64; 3] = [1, 2, 3];

    fn route_op(id: u64, node: u64, digits: &str, t_s: u64, ret: Ret) -> Op {
        Op {
            id,
            process: id,
            key: digits.to_owned(),
            call: Call::Route { node, linearizable: false },
            result: OpResult::Ok(ret),
            invoke_ns: t_s * 1_000_000_000,
            complete_ns: Some(t_s * 1_000_000_000 + 1_000_000),
        }
    }

    fn right(plan: &Plan, digits: &str) -> Ret {
        Ret::Routed { targets: plan.expected(digits).unwrap(), handling_node: 2 }
    }

    fn skew_of_node_2_from_10_to_20_s() -> Vec<NemesisEvent> {
        let e = |at_s: u64, phase| NemesisEvent {
            at_ns: at_s * 1_000_000_000,
            kind: CLOCK.into(),
            detail: clock_detail(2, 7),
            phase,
        };
        vec![e(10, NemesisPhase::Start), e(20, NemesisPhase::Stop)]
    }

    #[test]
    fn right_answers_are_valid_and_skewed_answers_are_counted() {
        let plan = Plan::new(300);
        let events = skew_of_node_2_from_10_to_20_s();
        let mut refused = route_op(4, 3, &number(1), 16, right(&plan, &number(1)));
        refused.result = OpResult::Fail("Unavailable: catching up".into());
        let ops = vec![
            route_op(1, 1, &number(0), 5, right(&plan, &number(0))),
            route_op(2, 2, &number(0), 15, right(&plan, &number(0))),
            route_op(3, 2, &gateway_digits(7), 16, right(&plan, &gateway_digits(7))),
            refused,
            route_op(
                5,
                1,
                &number(2),
                17,
                Ret::Unroutable { code: 503, reason: "no live node has room for the call".into() },
            ),
        ];
        let r = check_routes(&plan, &ops, &events, &NODES);
        assert_eq!(r.verdict(), Verdict::Valid, "{r:?}");
        assert_eq!((r.checked, r.refused, r.no_node_with_room, r.during_skew), (4, 1, 1, 2));
        assert_eq!(r.by_node, BTreeMap::from([(1, 2), (2, 2)]));
    }

    #[test]
    fn an_expired_binding_at_a_skewed_node_is_named_with_its_node_time_and_skew() {
        let plan = Plan::new(300);
        let events = skew_of_node_2_from_10_to_20_s();
        let ops = vec![
            route_op(1, 1, &number(3), 12, right(&plan, &number(3))),
            route_op(
                2,
                2,
                &number(3),
                12,
                Ret::Unroutable { code: 480, reason: "66003 has no live binding".into() },
            ),
        ];
        let r = check_routes(&plan, &ops, &events, &NODES);
        assert_eq!(r.verdict(), Verdict::Invalid);
        assert_eq!(r.wrong.len(), 1);
        let w = &r.wrong[0];
        assert_eq!((w.node, w.op.id), (2, 2));
        assert_eq!(w.skew.as_deref(), Some("node 2 clock +7 min"));
        let text = w.describe();
        assert!(text.starts_with("node 2 answered a LOCAL route of 66003 at 12.000"), "{text}");
        assert!(text.contains("got 480"), "{text}");
        assert!(text.contains("route-dev-03"), "{text}");
    }

    #[test]
    fn a_gateway_offered_before_its_retry_time_is_wrong() {
        let plan = Plan::new(300);
        let digits = gateway_digits(12);
        let mut targets = plan.expected(&digits).unwrap();
        // The timed-out gateway offered again, last: what a node that judged
        // its retry time by a wall clock 5+ minutes ahead would answer.
        targets.push(RouteTarget {
            uri: format!("sip:00012@{}", plan.gateways[2].address),
            kind: "gateway".into(),
            id: "jr-gw-c".into(),
        });
        let ops = vec![route_op(1, 2, &digits, 30, Ret::Routed { targets, handling_node: 2 })];
        let r = check_routes(&plan, &ops, &[], &NODES);
        assert_eq!(r.verdict(), Verdict::Invalid);
        assert_eq!(r.wrong[0].skew, None, "no skew recorded at 30 s");
        assert!(r.wrong[0].got.contains("jr-gw-c"), "{}", r.wrong[0].got);
    }

    #[test]
    fn every_other_wrong_answer_is_caught() {
        let plan = Plan::new(300);
        let n = number(4);
        let g = gateway_digits(1);
        let mut swapped = plan.expected(&g).unwrap();
        swapped.reverse();
        let mut other_contact = plan.expected(&n).unwrap();
        other_contact[0].uri = plan.numbers[5].contact.clone();
        let wrong = [
            (n.clone(), Ret::Unroutable { code: 404, reason: "66004 is not registered".into() }),
            (n.clone(), Ret::Routed { targets: other_contact, handling_node: 1 }),
            (n.clone(), Ret::Routed { targets: Vec::new(), handling_node: 1 }),
            (n.clone(), Ret::Routed { targets: plan.expected(&n).unwrap(), handling_node: 9 }),
            (g.clone(), Ret::Routed { targets: swapped, handling_node: 1 }),
            (g.clone(), Ret::Unroutable { code: 503, reason: "no gateway in service".into() }),
            ("66099".into(), right(&plan, &n)),
        ];
        for (i, (digits, ret)) in wrong.into_iter().enumerate() {
            let ops = vec![route_op(i as u64, 1, &digits, 1, ret.clone())];
            let r = check_routes(&plan, &ops, &[], &NODES);
            assert_eq!(r.verdict(), Verdict::Invalid, "{digits} {ret:?} passed");
        }
    }

    #[test]
    fn no_answer_at_all_is_unknown() {
        let plan = Plan::new(300);
        let mut op = route_op(1, 1, &number(0), 1, right(&plan, &number(0)));
        op.result = OpResult::Fail("Unavailable".into());
        let r = check_routes(&plan, &[op], &[], &NODES);
        assert_eq!(r.verdict(), Verdict::Unknown);
    }
}
