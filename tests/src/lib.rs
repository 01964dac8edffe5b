//! Support for Switchboard's multi-node integration tests (`tests/tests/`):
//! [`Cluster`] starts real nodes in-process — each with its own temporary
//! sled directory and its own gRPC listener on 127.0.0.1 port 0 — and the
//! tests talk to them only through the public gRPC API.
//!
//! Nodes can be stopped (their gRPC server and Raft instance shut down, the
//! data directory closed) and restarted on the same port and directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use switchboard::config::Config;
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::calls_client::CallsClient;
use switchboard_proto::v1::cluster_client::ClusterClient;
use switchboard_proto::v1::dial_plan_client::DialPlanClient;
use switchboard_proto::v1::gateways_client::GatewaysClient;
use switchboard_proto::v1::registrar_client::RegistrarClient;
use switchboard_proto::v1::router_client::RouterClient;
use switchboard_proto::v1::users_client::UsersClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The client services every node serves (and lists by reflection and
/// health).
pub const SERVICES: [&str; 8] = [
    "switchboard.v1.Registrar",
    "switchboard.v1.Router",
    "switchboard.v1.Gateways",
    "switchboard.v1.DialPlan",
    "switchboard.v1.Calls",
    "switchboard.v1.Events",
    "switchboard.v1.Cluster",
    "switchboard.v1.Users",
];

/// Test-friendly Raft timings: fast elections, small snapshots.
pub fn test_config(id: u64, listen: SocketAddr, data: PathBuf) -> Config {
    let mut c = Config { id, listen, data, ..Config::default() };
    c.raft.heartbeat_ms = 50;
    c.raft.election_min_ms = 150;
    c.raft.election_max_ms = 300;
    c.writes.timeout_ms = 5_000;
    c.log = "warn".into();
    c
}

/// One running (or stopped) node.
pub struct NodeHandle {
    /// Node id.
    pub id: u64,
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// Its configuration (data directory included).
    pub config: Config,
    running: Option<Running>,
}

/// A running node: its shutdown trigger and its task.
type Running = (oneshot::Sender<()>, JoinHandle<Result<(), switchboard::RunError>>);

/// An in-process cluster for tests.
pub struct Cluster {
    /// The nodes, by id.
    pub nodes: BTreeMap<u64, NodeHandle>,
    dir: tempfile::TempDir,
}

/// A free address on 127.0.0.1, for TCP and UDP alike (see [`ports`]).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports::free_port()))
}

impl Cluster {
    /// Start `n` nodes (ids 1..=n) that bootstrap one cluster, and wait for a leader.
    pub async fn start(n: u64) -> Cluster {
        Self::start_with(n, |_| {}).await
    }

    /// Like [`Cluster::start`], with a hook to adjust each node's configuration.
    pub async fn start_with(n: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            addrs.insert(id, free_addr());
        }
        let initial: Vec<String> = addrs.iter().map(|(id, a)| format!("{id}={a}")).collect();
        let initial = initial.join(",");
        let mut cluster = Cluster { nodes: BTreeMap::new(), dir };
        for (&id, &addr) in &addrs {
            let mut config = test_config(id, addr, cluster.dir.path().join(format!("node{id}")));
            config.initial_cluster = Some(initial.clone());
            tweak(&mut config);
            cluster.nodes.insert(id, NodeHandle { id, addr, config, running: None });
        }
        for id in 1..=n {
            cluster.start_node(id).await;
        }
        cluster.wait_leader(Duration::from_secs(10)).await;
        cluster
    }

    /// The directory holding every node's data directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Start (or restart) node `id` with its configuration.
    pub async fn start_node(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.running.is_none(), "node {id} is running already");
        let listener = bind_retry(node.addr).await;
        let (tx, rx) = oneshot::channel::<()>();
        let config = node.config.clone();
        let task = tokio::spawn(async move {
            let ran = switchboard::run(config, listener, async {
                let _ = rx.await;
            })
            .await;
            // Shown with the failing test's output: why a node went quiet.
            if let Err(e) = &ran {
                eprintln!("node {id}: run() returned: {e}");
            }
            ran
        });
        node.running = Some((tx, task));
    }

    /// Stop node `id` cleanly and wait until it has shut down.
    pub async fn stop_node(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let (tx, task) = node.running.take().expect("node is running");
        let _ = tx.send(());
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("node {id} did not stop cleanly: {other:?}"),
        }
    }

    /// Wait (at most `timeout`) for node `id` to stop by itself, and return
    /// what its `run()` returned. Panics if it is still running by then.
    pub async fn wait_exit(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> Result<(), switchboard::RunError> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let (tx, mut task) = node.running.take().expect("node is running");
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => panic!("node {id} task failed: {e}"),
            Err(_) => {
                node.running = Some((tx, task));
                panic!("node {id} still running after {timeout:?}");
            }
        }
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> &std::path::Path {
        &self.nodes[&id].config.data
    }

    /// Add a node that is not part of the bootstrap membership (not started).
    pub async fn add_node_config(&mut self, id: u64) -> SocketAddr {
        let addr = free_addr();
        let config = test_config(id, addr, self.dir.path().join(format!("node{id}")));
        self.nodes.insert(id, NodeHandle { id, addr, config, running: None });
        addr
    }

    /// A channel to node `id`.
    pub async fn channel(&self, id: u64) -> Channel {
        let addr = self.nodes[&id].addr;
        Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// Registrar client for node `id`.
    pub async fn registrar(&self, id: u64) -> RegistrarClient<Channel> {
        RegistrarClient::new(self.channel(id).await)
    }
    /// Router client for node `id`.
    pub async fn router(&self, id: u64) -> RouterClient<Channel> {
        RouterClient::new(self.channel(id).await)
    }
    /// Calls client for node `id`.
    pub async fn calls(&self, id: u64) -> CallsClient<Channel> {
        CallsClient::new(self.channel(id).await)
    }
    /// Gateways client for node `id`.
    pub async fn gateways(&self, id: u64) -> GatewaysClient<Channel> {
        GatewaysClient::new(self.channel(id).await)
    }
    /// DialPlan client for node `id`.
    pub async fn dial_plan(&self, id: u64) -> DialPlanClient<Channel> {
        DialPlanClient::new(self.channel(id).await)
    }
    /// Users (SIP credentials) client for node `id`.
    pub async fn users(&self, id: u64) -> UsersClient<Channel> {
        UsersClient::new(self.channel(id).await)
    }
    /// Cluster client for node `id`.
    pub async fn cluster(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel(id).await)
    }

    /// Status as node `id` sees it (`None` if it does not answer).
    pub async fn status(&self, id: u64) -> Option<pb::StatusResponse> {
        let mut c = self.cluster(id).await;
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        c.status(req).await.ok().map(|r| r.into_inner())
    }

    /// Wait until the running nodes agree on a leader; return its id.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for (id, n) in &self.nodes {
                if n.running.is_some() {
                    seen.push(self.status(*id).await.map_or(0, |s| s.leader_id));
                }
            }
            if let Some(&l) = seen.first() {
                if l != 0 && seen.iter().all(|&x| x == l) && self.nodes[&l].running.is_some() {
                    return l;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                // A node whose run() returned (a port it could not bind, a
                // bad configuration) answers nothing: say so, not just "0".
                let exited: Vec<u64> = self
                    .nodes
                    .values()
                    .filter(|n| n.running.as_ref().is_some_and(|(_, task)| task.is_finished()))
                    .map(|n| n.id)
                    .collect();
                panic!(
                    "no agreed leader within {timeout:?}: leaders seen {seen:?}; nodes whose \
                     run() returned meanwhile: {exited:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ids of running nodes other than `id`.
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.nodes.values().filter(|n| n.id != id && n.running.is_some()).map(|n| n.id).collect()
    }

    /// Cut node `id` off from every other node, both ways (a test-only
    /// failpoint in the node's Raft network: node-to-node RPCs fail as if
    /// the peer were unreachable). Clients can still reach every node.
    pub fn isolate(&self, id: u64) {
        let me = self.nodes[&id].addr.to_string();
        for n in self.nodes.values().filter(|n| n.id != id) {
            switchboard::failpoint::cut(&me, &n.addr.to_string());
        }
    }

    /// Drop log replication between node `id` and every other node, both
    /// ways: AppendEntries that carry entries fail (after their deadline),
    /// while votes, heartbeats and a leader's read-index confirmations still
    /// pass (a test-only failpoint, see `switchboard::failpoint`). A leader
    /// so cut stays leader but commits nothing new. [`Cluster::heal`] undoes it.
    pub fn cut_replication(&self, id: u64) {
        let me = self.nodes[&id].addr.to_string();
        for n in self.nodes.values().filter(|n| n.id != id) {
            switchboard::failpoint::cut_replication(&me, &n.addr.to_string());
        }
    }

    /// Undo every cut (and replication cut) involving node `id`.
    pub fn heal(&self, id: u64) {
        switchboard::failpoint::heal(&self.nodes[&id].addr.to_string());
    }

    /// Stop every running node.
    pub async fn shutdown(mut self) {
        let ids: Vec<u64> =
            self.nodes.values().filter(|n| n.running.is_some()).map(|n| n.id).collect();
        for id in ids {
            self.stop_node(id).await;
        }
    }
}

/// Bind `addr`, retrying briefly (a just-stopped node's port may linger).
async fn bind_retry(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..50 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind {addr}");
}

/// A register request with test defaults.
pub fn register(number: &str, device: &str, contact: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        number: number.into(),
        device_id: device.into(),
        contact: contact.into(),
        device_name: String::new(),
        mac: String::new(),
        node_id: 0,
        q: 1000,
        expires_s: 3600,
        request_id: None,
    }
}

/// Lookup request at the given consistency.
pub fn lookup(number: &str, linearizable: bool) -> pb::LookupRequest {
    pb::LookupRequest {
        number: number.into(),
        consistency: if linearizable {
            pb::Consistency::Linearizable as i32
        } else {
            pb::Consistency::Local as i32
        },
    }
}

/// Poll `f` until it returns `Some`, or panic after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tiny SIP UDP responder standing in for a gateway: answers every
/// OPTIONS with `200 OK`, echoing Via, From, To, Call-ID and CSeq.
pub struct SipResponder {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SipResponder {
    /// Listen on `addr` (use port 0 for a fresh one).
    pub async fn start(addr: SocketAddr) -> SipResponder {
        let socket = tokio::net::UdpSocket::bind(addr).await.expect("bind responder");
        let addr = socket.local_addr().expect("addr");
        let (tx, mut rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                tokio::select! {
                    _ = &mut rx => return,
                    got = socket.recv_from(&mut buf) => {
                        let Ok((n, from)) = got else { continue };
                        let Some(reply) = switchboard::sip::options::answer(&buf[..n]) else { continue };
                        let _ = socket.send_to(reply.as_bytes(), from).await;
                    }
                }
            }
        });
        SipResponder { addr, stop: Some(tx), task: Some(task) }
    }

    /// Stop answering (the port is released).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Cluster {
    /// Like [`Cluster::start_with`], with every node serving SIP on UDP and
    /// TCP (on a free 127.0.0.1 port each) and gateway probing off, so that
    /// gateways that do not exist stay in service.
    pub async fn start_sip(n: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
        Cluster::start_with(n, |c| {
            c.sip.listen = Some(addrs[(c.id - 1) as usize]);
            c.gateways.probe_interval_ms = 0;
            tweak(c);
        })
        .await
    }

    /// Node `id`'s SIP address.
    pub fn sip_addr(&self, id: u64) -> SocketAddr {
        self.nodes[&id].config.sip.listen.expect("node serves SIP")
    }
}

pub mod ports;
pub mod sip;
