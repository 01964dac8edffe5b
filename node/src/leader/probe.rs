//! Gateway keep-alives (seed 001 claims 19-22): the leader sends every
//! gateway a SIP OPTIONS over UDP each interval and counts answers.
//! `probe_failures_to_down` misses in a row take an in-service gateway out
//! (`ProbeResult::Unreachable`, out until now + `probe_retry_after_s`, and
//! extended while it stays silent); `probe_successes_to_up` answers in a row
//! bring back a gateway that the *prober* took out. A gateway taken out by
//! a proxy's report is left alone: it returns at its retry time or on an
//! `Ok` report. Only changes are committed.
//!
//! Any final response from 200 to 499 counts as an answer (the gateway is
//! up and parsed our request); 5xx/6xx and silence count as failures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchboard_storage::state::gateways::{GatewayStatus, OutOfServiceReason, ProbeVerdict};
use switchboard_storage::state::Command;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::node::Node;
use crate::sip::options;

/// Consecutive probe results of one gateway.
#[derive(Default, Clone, Copy)]
struct Run {
    failures: u32,
    successes: u32,
}

/// The leader's prober state.
#[derive(Default)]
pub struct Prober {
    runs: BTreeMap<String, Run>,
}

/// Makes Call-IDs and branches unique within this process.
static SEQ: AtomicU64 = AtomicU64::new(1);

impl Prober {
    /// Forget all counts (this node is not the leader any more).
    pub fn reset(&mut self) {
        self.runs.clear();
    }

    /// Probe every gateway once and commit what changed.
    pub async fn tick(&mut self, node: &Node, term: u64) {
        let c = &node.config().gateways;
        let timeout = Duration::from_millis(c.probe_timeout_ms);
        let gateways: Vec<(String, String, GatewayStatus)> = node.read(|s, _| {
            s.gateways.iter().map(|g| (g.id.clone(), g.address.clone(), g.status)).collect()
        });
        self.runs.retain(|id, _| gateways.iter().any(|(g, _, _)| g == id));
        let mut probes = JoinSet::new();
        for (id, addr, status) in gateways {
            probes.spawn(async move {
                let answered = probe(&addr, timeout).await;
                (id, status, answered)
            });
        }
        let now = node.cluster_now();
        let retry_ms = u64::from(c.probe_retry_after_s) * 1_000;
        let interval = c.probe_interval_ms;
        while let Some(Ok((id, status, answered))) = probes.join_next().await {
            let run = self.runs.entry(id.clone()).or_default();
            let verdict = match answered {
                Ok(()) => {
                    run.failures = 0;
                    run.successes = run.successes.saturating_add(1);
                    let probe_took_it_out = matches!(
                        status,
                        GatewayStatus::OutOfService { reason: OutOfServiceReason::ProbeFailed, .. }
                    );
                    (run.successes >= c.probe_successes_to_up && probe_took_it_out)
                        .then_some(ProbeVerdict::Reachable)
                }
                Err(why) => {
                    debug!(gateway = %id, %why, "probe failed");
                    run.successes = 0;
                    run.failures = run.failures.saturating_add(1);
                    let lapsing = match status {
                        GatewayStatus::InService => true,
                        // Still silent and about to be offered again: extend.
                        GatewayStatus::OutOfService { until_ms, .. } => until_ms <= now + interval,
                    };
                    (run.failures >= c.probe_failures_to_down && lapsing)
                        .then_some(ProbeVerdict::Unreachable)
                }
            };
            if let Some(verdict) = verdict {
                let cmd =
                    Command::ProbeResult { id: id.clone(), verdict, retry_after_ms: retry_ms };
                match node.decide(term, cmd).await {
                    Ok(_) => info!(gateway = %id, ?verdict, "gateway status from probing"),
                    Err(e) => warn!(gateway = %id, error = %e, "committing probe result failed"),
                }
            }
        }
    }
}

/// Send one OPTIONS to `addr` and wait up to `timeout` for its response.
pub async fn probe(addr: &str, timeout: Duration) -> Result<(), String> {
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(bind).await.map_err(|e| format!("bind: {e}"))?;
    socket.connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let call_id = format!("probe-{n}-{}@switchboard", std::process::id());
    let request = options::request(addr, local, &call_id, &format!("p{n}"), &format!("t{n}"), 1);
    socket.send(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let wait = async {
        let mut buf = vec![0u8; 4096];
        loop {
            // A refused port shows up here as an ICMP error on the connected socket.
            let len = socket.recv(&mut buf).await.map_err(|e| format!("recv: {e}"))?;
            let Ok(resp) = options::parse_response(&buf[..len]) else { continue };
            if resp.call_id != call_id || resp.method != "OPTIONS" || resp.code < 200 {
                continue; // not ours, or provisional
            }
            return if resp.code < 500 { Ok(()) } else { Err(format!("answered {}", resp.code)) };
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
