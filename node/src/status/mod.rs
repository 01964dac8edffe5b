//! The live status page every node serves with `--http host:port` (config
//! `http`): one self-contained HTML page (inline CSS and JS, no CDN: it
//! works on an offline management network) and the JSON endpoints it reads,
//! which operators can script too.
//!
//! - `GET /` — the page, with the current status embedded so that it shows
//!   everything at first paint (and a `--dump-dom`/`--screenshot` of a
//!   headless browser sees the state without running timers).
//! - `GET /api/status` — [`view::StatusView`]: leader, term, members with
//!   health and lag, gateways, load.
//! - `GET /api/events?after=SEQ` — the recent events after SEQ (see
//!   [`recent`]).
//!
//! The page polls rather than holding a server-sent-event stream: it must
//! poll the status twice a second anyway (health comes from pings made per
//! request, and a killed node has to show as down within 2 s), one
//! mechanism is simpler than two, a poll survives the serving node's
//! restart or a proxy's idle timeout with no reconnect logic, and no
//! long-lived connection is held per open browser tab. Everything is
//! answered from this node's own applied state and pings: nothing is
//! forwarded to the leader, so the page keeps working while there is no
//! leader or this node has just lost the leadership.

pub mod recent;
pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use openraft::ServerState;
use switchboard_storage::feed::Feed;
use switchboard_storage::state::NodeId;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::node::Node;
use recent::Recent;
use view::{RaftFacts, StateFacts, StatusView, TableNode};

/// The page. `/*STATUS*/null` is replaced by the current status JSON.
const PAGE: &str = include_str!("page.html");
const PLACEHOLDER: &str = "/*STATUS*/null";

/// How long a member may take to answer this node's ping before the page
/// calls it unreachable. A killed process refuses at once; this bounds a
/// host that silently dropped off the network.
const PING_TIMEOUT: Duration = Duration::from_millis(300);

/// What the handlers share.
struct Shared {
    node: Node,
    recent: Arc<Recent>,
}

/// Serve the page on `listener` (already bound, so that a bad address is a
/// startup error) and follow the event feed, until `stop` fires.
pub fn spawn(listener: TcpListener, node: Node, feed: Arc<Feed>, stop: watch::Receiver<bool>) {
    let recent = Arc::new(Recent::default());
    tokio::spawn(recent::follow(node.clone(), feed, Arc::clone(&recent), stop.clone()));
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let app = router(Arc::new(Shared { node, recent }));
    tokio::spawn(async move {
        info!(%addr, "status page listening");
        let mut stop = stop;
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
        if let Err(e) = served {
            warn!(%addr, error = %e, "status page server stopped");
        }
    });
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .fallback(not_found)
        .with_state(shared)
}

async fn page(State(shared): State<Arc<Shared>>) -> Response {
    let json = embeddable(&serde_json::to_string(&gather(&shared.node).await).unwrap_or_default());
    let html = PAGE.replacen(PLACEHOLDER, &json, 1);
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        html,
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    json_response(&gather(&shared.node).await)
}

async fn events(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let after = match parse_after(uri.query()) {
        Ok(a) => a,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let (events, last_seq) = shared.recent.after(after);
    json_response(&serde_json::json!({ "events": events, "last_seq": last_seq }))
}

async fn not_found(uri: Uri) -> Response {
    let message =
        format!("no such page: {}; try / , /api/status or /api/events?after=0\n", uri.path());
    (StatusCode::NOT_FOUND, message).into_response()
}

fn json_response<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (
            [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the answer: {e}\n"))
            .into_response(),
    }
}

/// `after=SEQ` from a query string (absent = 0).
fn parse_after(query: Option<&str>) -> Result<u64, String> {
    let mut after = 0;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "after" => {
                after = value.parse().map_err(|_| {
                    format!("after={value:?} is not a sequence number (a whole number >= 0)\n")
                })?
            }
            other => {
                return Err(format!("unknown parameter {other:?}; only after=SEQ is accepted\n"))
            }
        }
    }
    Ok(after)
}

/// JSON made safe to sit inside `<script>`: `<` only occurs inside JSON
/// strings, where `\u003c` means the same, so a gateway named
/// `</script>` cannot end the script early.
fn embeddable(json: &str) -> String {
    json.replace('<', "\\u003c")
}

/// This node's view now: openraft's metrics, the applied state, and a ping
/// of every other member (concurrently, each bounded by [`PING_TIMEOUT`]).
async fn gather(node: &Node) -> StatusView {
    let m = node.raft().metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    let members: BTreeMap<NodeId, (String, bool)> =
        membership.nodes().map(|(id, n)| (*id, (n.addr.clone(), voters.contains(id)))).collect();
    let matched = match (&m.state, &m.replication) {
        (ServerState::Leader, Some(r)) => {
            r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect()
        }
        _ => BTreeMap::new(),
    };
    let raft = RaftFacts {
        node_id: node.id(),
        state: match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        },
        leader_id: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map_or(0, |l| l.index),
        members,
        matched,
    };
    let mut pings = tokio::task::JoinSet::new();
    for (&id, (addr, _)) in &raft.members {
        if id != node.id() {
            let (node, addr) = (node.clone(), addr.clone());
            pings.spawn(async move { (id, ping(&node, id, &addr).await) });
        }
    }
    let now_ms = node.cluster_now();
    let state = node.read(|s, _| StateFacts {
        now_ms,
        nodes: s
            .nodes
            .iter()
            .map(|n| {
                let load = s.calls.node_load(n.id);
                let row = TableNode {
                    status: n.status,
                    capacity: n.capacity,
                    owned: load.owned,
                    standby: load.standby,
                    sip_addr: n.sip_addr.clone(),
                };
                (n.id, row)
            })
            .collect(),
        gateways: s.gateways.iter().map(|g| (g.clone(), s.calls.gateway_load(&g.id))).collect(),
        registrations: s.registrations.len(),
        calls: s.calls.len(),
    });
    let mut answers = BTreeMap::new();
    // Every ping is bounded by PING_TIMEOUT, so this loop is too.
    while let Some(joined) = pings.join_next().await {
        if let Ok((id, applied)) = joined {
            answers.insert(id, applied);
        }
    }
    view::build(&raft, &state, &answers)
}

/// A member's applied index, if it answers within [`PING_TIMEOUT`].
async fn ping(node: &Node, id: NodeId, addr: &str) -> Option<u64> {
    node.ping(id, addr, PING_TIMEOUT).await.map(|r| r.applied_index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_parameter() {
        assert_eq!(parse_after(None), Ok(0));
        assert_eq!(parse_after(Some("after=42")), Ok(42));
        assert!(parse_after(Some("after=-1")).unwrap_err().contains("not a sequence number"));
        assert!(parse_after(Some("from=1")).unwrap_err().contains("unknown parameter \"from\""));
    }

    #[test]
    fn embedded_json_cannot_close_the_script() {
        let json = serde_json::to_string(&serde_json::json!({"id": "</script><b>"})).unwrap();
        let safe = embeddable(&json);
        assert!(!safe.contains('<'), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["id"], "</script><b>");
    }

    #[test]
    fn the_page_has_one_placeholder_and_no_external_resources() {
        assert_eq!(PAGE.matches(PLACEHOLDER).count(), 1);
        for external in ["http://", "https://", "src=\"//", "<link"] {
            assert!(!PAGE.contains(external), "the page loads {external}: it must work offline");
        }
    }
}
