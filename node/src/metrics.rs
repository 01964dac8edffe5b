//! Prometheus metrics (text format over HTTP) when `metrics` is configured.
//!
//! Raft gauges are refreshed from openraft's metrics once a second. The
//! recorder is process-global (the `metrics` crate's design), so only the
//! first node of a process installs it; every gauge carries a `node` label.
//!
//! Latency histograms (summaries: quantiles over a rolling minute, plus
//! cumulative `_sum` and `_count`) are recorded where the work happens and
//! carry no `node` label (a deployed node is its own process):
//! `switchboard_write_seconds{path="leader"|"forwarded"}` (one write
//! attempt at the node a client called), `switchboard_leader_write_seconds`
//! (batcher queue + commit at the leader), `switchboard_raft_commit_seconds`
//! (propose to applied), `switchboard_raft_entry_writes` (writes per log
//! entry), `switchboard_log_append_seconds` and `switchboard_log_sync_seconds`
//! (one durable append and its sync), `switchboard_apply_seconds`.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use openraft::ServerState;
use switchboard_storage::state::gateways::GatewayStatus;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::node::Node;

/// Serve metrics on `addr` and keep the node's gauges current until `stop` fires.
pub fn install(addr: SocketAddr, node: Node, mut stop: watch::Receiver<bool>) {
    match PrometheusBuilder::new().with_http_listener(addr).install() {
        Ok(()) if addr.ip().is_loopback() => info!(%addr, "metrics listening"),
        // The exporter has no TLS and no authentication.
        Ok(()) => warn!(
            %addr,
            "metrics listening on a non-loopback address, without TLS or authentication"
        ),
        Err(e) => {
            warn!(%addr, error = %e, "metrics exporter not started");
            return;
        }
    }
    tokio::spawn(async move {
        let id = node.id().to_string();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let m = node.raft().metrics().borrow().clone();
            let labels = [("node", id.clone())];
            metrics::gauge!("switchboard_raft_term", &labels).set(m.current_term as f64);
            metrics::gauge!("switchboard_raft_last_log_index", &labels)
                .set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("switchboard_raft_applied_index", &labels)
                .set(m.last_applied.map_or(0, |l| l.index) as f64);
            metrics::gauge!("switchboard_raft_is_leader", &labels)
                .set(if m.state == ServerState::Leader { 1.0 } else { 0.0 });
            let (regs, calls, gateways, by_node) = node.read(|s, _| {
                let gateways: Vec<_> = s
                    .gateways
                    .iter()
                    .map(|g| {
                        let up = matches!(g.status, GatewayStatus::InService);
                        (g.id.clone(), g.counters, up, s.calls.gateway_load(&g.id))
                    })
                    .collect();
                // Registrations per controlling node (seed 002: the node
                // that took the registration controls it), from the
                // table's own counters: no scan under the state lock.
                let mut by_node = std::collections::BTreeMap::<u64, u64>::new();
                for n in s.nodes.iter() {
                    by_node.insert(n.id, 0);
                }
                by_node.extend(s.registrations.count_by_node());
                (s.registrations.len(), s.calls.len(), gateways, by_node)
            });
            metrics::gauge!("switchboard_registered_numbers", &labels).set(regs as f64);
            metrics::gauge!("switchboard_calls", &labels).set(calls as f64);
            for (controller, count) in by_node {
                let l = [("node", id.clone()), ("controller", controller.to_string())];
                metrics::gauge!("switchboard_registrations_by_node", &l).set(count as f64);
            }
            // Replicated counters: every node exports the same values.
            for (gw, counters, up, load) in gateways {
                let l = [("node", id.clone()), ("gateway", gw)];
                metrics::gauge!("switchboard_gateway_attempts", &l).set(counters.attempts as f64);
                metrics::gauge!("switchboard_gateway_timeouts", &l).set(counters.timeouts as f64);
                metrics::gauge!("switchboard_gateway_failures", &l).set(counters.failures as f64);
                metrics::gauge!("switchboard_gateway_in_service", &l).set(if up {
                    1.0
                } else {
                    0.0
                });
                metrics::gauge!("switchboard_gateway_active_calls", &l).set(f64::from(load));
            }
        }
    });
}
