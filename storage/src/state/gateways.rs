//! The gateway information table: destination gateways, grouped into trunks,
//! with their in-service / out-of-service status and call counters.
//!
//! Status rules (seed 001, claims 3-4 and 11-12, and the probing claims 19-22):
//! - a reported timeout or failure puts a gateway out of service until
//!   `now + retry_after`; an `Ok` report puts it back in service;
//! - the prober may take a gateway out of service, and may bring back one
//!   that *it* took out, but a probe success never cuts short an
//!   out-of-service period that a reported failure set;
//! - an out-of-service gateway whose time has passed is offered again by
//!   `route` (after the in-service ones), without a write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a proxy's call attempt through a gateway went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportedOutcome {
    /// The gateway answered.
    Ok,
    /// No answer within the proxy's timeout.
    Timeout,
    /// The gateway answered with a failure (e.g. 5xx).
    Failure,
}

/// The keep-alive prober's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeVerdict {
    /// Answered enough consecutive probes.
    Reachable,
    /// Missed enough consecutive probes.
    Unreachable,
}

/// Why a gateway is out of service; decides who may bring it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutOfServiceReason {
    /// A proxy reported a timeout.
    Timeout,
    /// A proxy reported a failure.
    Failure,
    /// The prober got no answer.
    ProbeFailed,
}

/// A gateway's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayStatus {
    /// Offered to callers.
    InService,
    /// Not offered until `until_ms` (replicated clock); offered again after it.
    OutOfService {
        /// When it may be offered again.
        until_ms: u64,
        /// Why it is out.
        reason: OutOfServiceReason,
    },
}

/// Per-gateway counters, replicated (they count committed reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayCounters {
    /// Reports received (every attempt a proxy reported).
    pub attempts: u64,
    /// Reports of a timeout.
    pub timeouts: u64,
    /// Reports of a failure.
    pub failures: u64,
}

/// One destination gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    /// Gateway id.
    pub id: String,
    /// Trunk group a route selects it by.
    pub group: String,
    /// `host:port`.
    pub address: String,
    /// Lower is offered first.
    pub priority: u32,
    /// Relative share among equal priorities.
    pub weight: u32,
    /// Most concurrent calls; 0 = no limit.
    pub capacity: u32,
    /// In or out of service.
    pub status: GatewayStatus,
    /// Report counters.
    pub counters: GatewayCounters,
}

/// Whether a gateway may be offered at `now_ms`, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Availability {
    /// In service: offered first.
    InService,
    /// Out of service but its retry time has passed: offered after the in-service ones.
    Retry,
    /// Out of service until later: never offered.
    Unavailable,
}

impl Gateway {
    /// Availability at `now_ms` (seed 001 claims 11 and 12).
    pub fn availability(&self, now_ms: u64) -> Availability {
        match self.status {
            GatewayStatus::InService => Availability::InService,
            GatewayStatus::OutOfService { until_ms, .. } if until_ms <= now_ms => {
                Availability::Retry
            }
            GatewayStatus::OutOfService { .. } => Availability::Unavailable,
        }
    }
}

/// The gateway table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateways {
    by_id: BTreeMap<String, Gateway>,
}

impl Gateways {
    /// The gateway, if known.
    pub fn get(&self, id: &str) -> Option<&Gateway> {
        self.by_id.get(id)
    }

    /// Every gateway, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Gateway> {
        self.by_id.values()
    }

    /// The gateways of `group`, in id order.
    pub fn in_group<'s, 'g>(
        &'s self,
        group: &'g str,
    ) -> impl Iterator<Item = &'s Gateway> + use<'s, 'g> {
        self.by_id.values().filter(move |g| g.group == group)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Gateway> {
        self.by_id.get_mut(id)
    }

    pub(crate) fn put(&mut self, gw: Gateway) {
        self.by_id.insert(gw.id.clone(), gw);
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<Gateway> {
        self.by_id.remove(id)
    }
}
