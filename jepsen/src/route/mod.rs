//! The `route` workload: does every node route calls right — in particular
//! a node whose wall clock is minutes off (the `clock` nemesis)?
//!
//! Route (the Router service) judges two things against time: whether a
//! binding is still live (its expiry) and whether an out-of-service gateway
//! may be offered again (its retry time). Both are cluster times, so a node
//! must judge them by the cluster's clock, never by its own wall clock.
//!
//! Before the faults start, [`setup`] writes a fixed [`Plan`] through the
//! public API and nothing changes it afterwards, so every Route has exactly
//! one right answer ([`Plan::expected`]):
//!
//! - [`ROUTE_NUMBERS`] numbers `660NN`, each registered once with its own
//!   device and contact, under a dial-plan route `660XX` to registered
//!   numbers;
//! - a dial-plan route `669@` (strip 3, prefix `0`) to a gateway group of
//!   three gateways: two in service at priorities 10 and 20, and one at
//!   priority 1 that a proxy reported timed out.
//!
//! The registrations' lifetime and the timed-out gateway's retry time are
//! both the run's registration lifetime ([`crate::workload::registration_ttl_s`]):
//! they outlive the run on the cluster's clock, but a node that trusted its
//! own clock while it runs 5-20 minutes ahead would find the bindings
//! expired (480) and offer the timed-out gateway again (last).
//!
//! After the writes, every node must answer one LINEARIZABLE route of each
//! kind (so none is behind the plan when the run starts; a node restarted
//! later serves LOCAL reads only once caught up). These answers are in the
//! history and checked like the others.
//!
//! The nodes run without gateway probing (see `cluster`): the gateways'
//! addresses are documentation addresses nobody answers at, and probing
//! would take them out of service on its own schedule.
//!
//! Does not own: the clients' loop ([`crate::workload::Client`]) and the
//! check ([`check`]).

pub mod check;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::dial_plan_client::DialPlanClient;
use switchboard_proto::v1::gateways_client::GatewaysClient;
use switchboard_proto::v1::registrar_client::RegistrarClient;
use switchboard_proto::v1::router_client::RouterClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::api::Api;
use crate::history::{Call, Op, OpResult, Ret, RouteTarget};
use crate::nemesis::Recorder;
use crate::workload::{req, Recorded};

/// Registered numbers of the route workload.
pub const ROUTE_NUMBERS: usize = 8;
/// The dial-plan pattern of the registered numbers.
const NUMBER_PATTERN: &str = "660XX";
/// The leading digits of the gateway route (its pattern is these and `@`,
/// the rest; it strips them).
const GATEWAY_LEAD: &str = "669";
/// What the gateway route prepends after stripping.
const GATEWAY_PREFIX: &str = "0";
/// The gateway group.
const GATEWAY_GROUP: &str = "jepsen-route";

/// The `i`-th registered number.
pub fn number(i: usize) -> String {
    format!("660{i:02}")
}

/// Digits that take the gateway route (`n` below 10 000).
pub fn gateway_digits(n: u32) -> String {
    format!("{GATEWAY_LEAD}{n:04}")
}

/// One registered number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedNumber {
    /// The number.
    pub number: String,
    /// Its only device.
    pub device: String,
    /// The device's contact.
    pub contact: String,
}

/// One gateway of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedGateway {
    /// Gateway id.
    pub id: String,
    /// host:port.
    pub address: String,
    /// Lower is offered first.
    pub priority: u32,
    /// Reported timed out, with a retry time that outlives the run.
    pub out_of_service: bool,
}

/// What the workload writes before the run, and so what every Route must
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Lifetime of the registrations and retry time of the timed-out
    /// gateway, s from when they were written.
    pub ttl_s: u32,
    /// The registered numbers.
    pub numbers: Vec<PlannedNumber>,
    /// The gateway group.
    pub gateways: Vec<PlannedGateway>,
}

impl Plan {
    /// The plan of a run whose registrations live `ttl_s` seconds.
    pub fn new(ttl_s: u32) -> Plan {
        let numbers = (0..ROUTE_NUMBERS)
            .map(|i| PlannedNumber {
                number: number(i),
                device: format!("route-dev-{i:02}"),
                contact: format!("sip:{}@route-{i:02}.jepsen:5060", number(i)),
            })
            .collect();
        let gw = |id: &str, host: u8, priority, out_of_service| PlannedGateway {
            id: id.to_owned(),
            address: format!("192.0.2.{host}:5060"),
            priority,
            out_of_service,
        };
        let gateways = vec![
            gw("jr-gw-a", 1, 10, false),
            gw("jr-gw-b", 2, 20, false),
            gw("jr-gw-c", 3, 1, true),
        ];
        Plan { ttl_s, numbers, gateways }
    }

    /// The one right answer to a Route of `digits`, from the API's contract
    /// (not the server's code): a registered number goes to its one live
    /// binding; the gateway route offers the in-service gateways, lower
    /// priority first, each as `sip:<digits stripped and prefixed>@<address>`,
    /// and not the one out of service. `None` for digits the plan does not
    /// cover.
    pub fn expected(&self, digits: &str) -> Option<Vec<RouteTarget>> {
        if let Some(n) = self.numbers.iter().find(|n| n.number == digits) {
            return Some(vec![RouteTarget {
                uri: n.contact.clone(),
                kind: "device".into(),
                id: n.device.clone(),
            }]);
        }
        let rest = digits.strip_prefix(GATEWAY_LEAD).filter(|r| !r.is_empty())?;
        let mut offered: Vec<&PlannedGateway> =
            self.gateways.iter().filter(|g| !g.out_of_service).collect();
        offered.sort_by_key(|g| g.priority);
        Some(
            offered
                .into_iter()
                .map(|g| RouteTarget {
                    uri: format!("sip:{GATEWAY_PREFIX}{rest}@{}", g.address),
                    kind: "gateway".into(),
                    id: g.id.clone(),
                })
                .collect(),
        )
    }
}

/// What [`setup`] wrote, as the cluster acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    /// The plan.
    pub plan: Plan,
    /// The timed-out gateway's retry time, ms since the epoch (cluster clock).
    pub out_of_service_until_ms: u64,
    /// Each number's binding expiry, ms since the epoch (cluster clock).
    pub expires_at_ms: Vec<(String, u64)>,
}

/// Route `digits` at `node` and turn the answer into an [`OpResult`]: a
/// routing failure is a successful answer ([`Ret::Unroutable`]); an RPC
/// error is `fail` (a read changes nothing).
pub async fn ask(api: &Api, node: u64, digits: &str, linearizable: bool) -> OpResult {
    let consistency =
        if linearizable { pb::Consistency::Linearizable } else { pb::Consistency::Local };
    let r = RouterClient::new(api.channel(node))
        .route(req(pb::RouteRequest {
            digits: digits.to_owned(),
            origin_node: 0,
            consistency: consistency as i32,
            explain: false,
        }))
        .await;
    match r {
        Ok(resp) => {
            let resp = resp.into_inner();
            OpResult::Ok(match resp.failure {
                Some(f) => Ret::Unroutable { code: f.code, reason: f.reason },
                None => Ret::Routed {
                    targets: resp
                        .targets
                        .into_iter()
                        .map(|t| RouteTarget { uri: t.uri, kind: t.kind, id: t.id })
                        .collect(),
                    handling_node: resp.handling_node,
                },
            })
        }
        Err(s) => OpResult::Fail(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// Write `plan` (every write retried at every node until `deadline`; each is
/// idempotent), then wait until every node has answered one LINEARIZABLE
/// route of a number and of the gateway route, recording those answers.
pub async fn setup(
    api: &Api,
    rec: &Recorder,
    out: &Recorded,
    plan: Plan,
    deadline: Instant,
) -> Result<Setup> {
    let routes = [
        (NUMBER_PATTERN.to_owned(), "", 0, ""),
        (format!("{GATEWAY_LEAD}@"), GATEWAY_GROUP, GATEWAY_LEAD.len() as u32, GATEWAY_PREFIX),
    ];
    for (pattern, group, strip, prefix) in routes {
        write(api, &format!("put route {pattern}"), deadline, |ch| {
            let r = req(pb::PutRouteRequest {
                route: Some(pb::DialRoute {
                    pattern: pattern.clone(),
                    priority: 0,
                    group: group.into(),
                    strip,
                    prefix: prefix.into(),
                }),
            });
            async move { DialPlanClient::new(ch).put_route(r).await }
        })
        .await?;
    }
    for g in &plan.gateways {
        write(api, &format!("put gateway {}", g.id), deadline, |ch| {
            let r = req(pb::PutGatewayRequest {
                id: g.id.clone(),
                group: GATEWAY_GROUP.into(),
                address: g.address.clone(),
                priority: g.priority,
                weight: 1,
                capacity: 0,
            });
            async move { GatewaysClient::new(ch).put_gateway(r).await }
        })
        .await?;
        if g.out_of_service {
            write(api, &format!("report {} timed out", g.id), deadline, |ch| {
                let r = req(pb::ReportOutcomeRequest {
                    id: g.id.clone(),
                    outcome: "timeout".into(),
                    retry_after_s: plan.ttl_s,
                    request_id: None,
                });
                async move { GatewaysClient::new(ch).report_outcome(r).await }
            })
            .await?;
        }
    }
    // The gateway in ReportOutcome's answer is the answering node's view,
    // which at a follower may predate the report: read the group back
    // LINEARIZABLE instead.
    let listed = write(api, "list gateways", deadline, |ch| {
        let r = req(pb::ListGatewaysRequest { consistency: pb::Consistency::Linearizable as i32 });
        async move { GatewaysClient::new(ch).list_gateways(r).await }
    })
    .await?;
    let mut out_of_service_until_ms = 0;
    for g in &plan.gateways {
        let status = listed.gateways.iter().find(|l| l.id == g.id).map(|l| l.status.as_str());
        let want = if g.out_of_service { "out_of_service" } else { "in_service" };
        if status != Some(want) {
            return Err(anyhow!("route setup: gateway {} is {status:?}, not {want}", g.id));
        }
        if g.out_of_service {
            let l = listed.gateways.iter().find(|l| l.id == g.id);
            out_of_service_until_ms = l.map_or(0, |l| l.out_of_service_until_ms);
        }
    }
    let mut expires_at_ms = Vec::new();
    for n in &plan.numbers {
        let resp = write(api, &format!("register {}", n.number), deadline, |ch| {
            let r = req(pb::RegisterRequest {
                number: n.number.clone(),
                device_id: n.device.clone(),
                contact: n.contact.clone(),
                device_name: String::new(),
                mac: String::new(),
                node_id: 0,
                q: 1000,
                expires_s: plan.ttl_s,
                request_id: None,
            });
            async move { RegistrarClient::new(ch).register(r).await }
        })
        .await?;
        expires_at_ms.push((n.number.clone(), resp.binding.map_or(0, |b| b.expires_at_ms)));
    }
    for id in api.ids() {
        for digits in [number(0), gateway_digits(0)] {
            ready(api, rec, out, id, &digits, deadline).await?;
        }
    }
    Ok(Setup { plan, out_of_service_until_ms, expires_at_ms })
}

/// One setup request (a write, or the read-back), tried at each node in turn
/// until one answers or `deadline` passes. A malformed request is not
/// retried.
async fn write<T, F, Fut>(api: &Api, what: &str, deadline: Instant, mut call: F) -> Result<T>
where
    F: FnMut(Channel) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        for id in api.ids() {
            match call(api.channel(id)).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(s) if s.code() == Code::InvalidArgument => {
                    return Err(anyhow!("route setup: {what}: refused: {}", s.message()))
                }
                Err(s) => last = format!("node {id}: {:?}: {}", s.code(), s.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(anyhow!("route setup: {what}: {last}"))
}

/// Route `digits` LINEARIZABLE at `node` until it answers (or `deadline`),
/// recording every attempt.
async fn ready(
    api: &Api,
    rec: &Recorder,
    out: &Recorded,
    node: u64,
    digits: &str,
    deadline: Instant,
) -> Result<()> {
    while Instant::now() < deadline {
        let invoke_ns = rec.now_ns();
        let result = ask(api, node, digits, true).await;
        let answered = matches!(result, OpResult::Ok(_));
        out.push(Op {
            id: out.next_op_id(),
            process: 0,
            key: digits.to_owned(),
            call: Call::Route { node, linearizable: true },
            result,
            invoke_ns,
            complete_ns: Some(rec.now_ns()),
        });
        if answered {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(anyhow!("route setup: node {node} did not answer a LINEARIZABLE route of {digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_expects_one_binding_per_number_and_the_in_service_gateways_in_order() {
        let plan = Plan::new(300);
        let t = plan.expected(&number(3)).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].id, "route-dev-03");
        assert_eq!(t[0].kind, "device");
        let g = plan.expected(&gateway_digits(42)).unwrap();
        let ids: Vec<&str> = g.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["jr-gw-a", "jr-gw-b"], "jr-gw-c is out of service");
        assert_eq!(g[0].uri, "sip:00042@192.0.2.1:5060", "669 stripped, 0 prepended");
        assert!(plan.expected("669").is_none());
        assert!(plan.expected("66099").is_none(), "not registered by the plan");
    }
}
