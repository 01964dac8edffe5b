//! TLS on the gRPC port, over real TCP on 127.0.0.1: three in-process nodes
//! with certificates from a CA made in the test. Clients use server-auth TLS
//! (no certificate); peers talk mutual TLS; the node-to-node service
//! refuses callers without a certificate signed by the cluster CA, and a
//! certificate from another CA does not even get through the handshake. In
//! every refused case the test checks that nothing changed (the term, the
//! dial plan).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, LogId, Vote};
use switchboard::config::Config;
use switchboard::tls::issue::Ca;
use switchboard::tls::PEER_CERT_REQUIRED;
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::cluster_client::ClusterClient;
use switchboard_proto::v1::dial_plan_client::DialPlanClient;
use switchboard_proto::v1::raft_client::RaftClient;
use switchboard_storage::codec;
use switchboard_storage::state::dialplan::{Route, RouteTarget};
use switchboard_storage::state::Command;
use switchboard_storage::types::TypeConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

/// How long any one request may take before the test calls it a hang.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// A running node: its shutdown trigger and its task.
type Running = (oneshot::Sender<()>, JoinHandle<Result<(), switchboard::RunError>>);

/// Three running TLS nodes, stopped on drop (their tasks are aborted).
struct TlsCluster {
    dir: tempfile::TempDir,
    ca: Ca,
    addrs: Vec<SocketAddr>,
    nodes: Vec<Running>,
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for (_, task) in &self.nodes {
            task.abort();
        }
    }
}

impl TlsCluster {
    async fn start() -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("switchboard test cluster CA").unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let initial: Vec<String> =
            addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let issued = ca.issue(&format!("node {id}"), &["127.0.0.1", "localhost"]).unwrap();
            let cert = dir.path().join(format!("node{id}.pem"));
            let key = dir.path().join(format!("node{id}-key.pem"));
            std::fs::write(&cert, &issued.cert_pem).unwrap();
            std::fs::write(&key, &issued.key_pem).unwrap();
            let mut config = Config {
                id,
                listen: addrs[i],
                data: dir.path().join(format!("node{id}")),
                initial_cluster: Some(initial.join(",")),
                log: "warn".into(),
                ..Config::default()
            };
            config.raft.heartbeat_ms = 50;
            config.raft.election_min_ms = 150;
            config.raft.election_max_ms = 300;
            config.tls.cert = Some(cert);
            config.tls.key = Some(key);
            config.tls.ca = Some(ca_path.clone());
            let (tx, rx) = oneshot::channel::<()>();
            let task = tokio::spawn(switchboard::run(config, listener, async {
                let _ = rx.await;
            }));
            nodes.push((tx, task));
        }
        TlsCluster { dir, ca, addrs, nodes }
    }

    /// A server-auth TLS channel to node `id` (no client certificate).
    fn client(&self, id: u64) -> Channel {
        tls_channel(self.addrs[id as usize - 1], &self.ca.cert_pem(), None)
    }

    /// Node `id`'s status, through a server-auth TLS client.
    async fn status(&self, id: u64) -> Option<pb::StatusResponse> {
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(Duration::from_secs(2));
        ClusterClient::new(self.client(id)).status(req).await.ok().map(|r| r.into_inner())
    }

    /// Wait (at most 20 s) until every node names the same leader.
    async fn wait_leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut seen = Vec::new();
            for id in 1..=3 {
                seen.push(self.status(id).await.map_or(0, |s| s.leader_id));
            }
            if seen[0] != 0 && seen.iter().all(|&l| l == seen[0]) {
                return seen[0];
            }
            assert!(Instant::now() < deadline, "no agreed leader within 20 s: {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's current term.
    async fn terms(&self) -> Vec<u64> {
        let mut terms = Vec::new();
        for id in 1..=3 {
            terms.push(self.status(id).await.expect("node answers").term);
        }
        terms
    }

    /// The dial-plan patterns, read linearizably at node `id`.
    async fn patterns(&self, id: u64) -> Vec<String> {
        let req = pb::ListRoutesRequest { consistency: pb::Consistency::Linearizable as i32 };
        let routes = DialPlanClient::new(self.client(id)).list_routes(req).await.unwrap();
        routes.into_inner().routes.into_iter().map(|r| r.pattern).collect()
    }
}

/// A TLS channel to `addr` trusting `ca_pem`, presenting `identity` if given.
fn tls_channel(addr: SocketAddr, ca_pem: &str, identity: Option<Identity>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(REQUEST_LIMIT)
        .connect_lazy()
}

/// A plain-text (h2c) channel to `addr`.
fn plain_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(REQUEST_LIMIT)
        .connect_lazy()
}

fn route(pattern: &str) -> pb::PutRouteRequest {
    pb::PutRouteRequest {
        route: Some(pb::DialRoute {
            pattern: pattern.into(),
            priority: 10,
            group: String::new(),
            strip: 0,
            prefix: String::new(),
        }),
    }
}

fn payload<T: serde::Serialize>(value: &T) -> pb::RaftPayload {
    pb::RaftPayload { data: codec::encode(value).unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_serves_tls_clients_and_refuses_plain_text() {
    let cluster = TlsCluster::start().await;
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let reader = (1..=3).find(|&id| id != leader && id != follower).unwrap();

    // A write at a follower is forwarded to the leader over mutual TLS;
    // the client itself presents no certificate.
    let mut plan = DialPlanClient::new(cluster.client(follower));
    plan.put_route(route("1XXX")).await.expect("write through a follower");
    assert_eq!(cluster.patterns(reader).await, ["1XXX"]);
    assert_eq!(cluster.patterns(leader).await, ["1XXX"]);

    // Plain text against a TLS node fails promptly (no hang), and the
    // write it carried is not applied.
    let started = Instant::now();
    let refused = DialPlanClient::new(plain_channel(cluster.addrs[follower as usize - 1]))
        .put_route(route("7@"))
        .await
        .expect_err("plain text accepted by a TLS node");
    assert!(started.elapsed() < REQUEST_LIMIT, "plain text hung: {refused:?}");
    // Which code depends on timing: the connection closed (CANCELLED,
    // UNKNOWN, UNAVAILABLE) or rustls' alert read as a broken HTTP/2 frame
    // (INTERNAL); in every case the transport, not a service, answered.
    assert!(
        matches!(
            refused.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal
        ),
        "{refused:?}"
    );
    let from_transport = std::error::Error::source(&refused)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    assert!(from_transport, "{refused:?}");
    assert_eq!(cluster.patterns(leader).await, ["1XXX"]);

    // A client that trusts another CA refuses the node's certificate.
    let other = Ca::new("someone else").unwrap();
    let wrong_trust = tls_channel(cluster.addrs[0], &other.cert_pem(), None);
    let e = ClusterClient::new(wrong_trust).status(pb::StatusRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_to_node_rpcs_need_a_certificate_from_the_cluster_ca() {
    let cluster = TlsCluster::start().await;
    let leader = cluster.wait_leader().await;
    let target = (1..=3).find(|&id| id != leader).unwrap();
    let addr = cluster.addrs[target as usize - 1];
    DialPlanClient::new(cluster.client(leader)).put_route(route("1XXX")).await.unwrap();
    let terms = cluster.terms().await;
    let term = terms[target as usize - 1];

    // Requests that would change the target's state if they got through:
    // a vote and an append from a far higher term (the target would adopt
    // it), and a forwarded write.
    let vote = VoteRequest::new(
        Vote::new(term + 100, 99),
        Some(LogId::new(CommittedLeaderId::new(term + 100, 99), 1_000)),
    );
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term + 100, 99),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let forward = Command::PutRoute(Route {
        pattern: "8@".into(),
        priority: 1,
        target: RouteTarget::Registered,
        strip: 0,
        prefix: String::new(),
    });

    // No client certificate: every RPC of the service is UNAUTHENTICATED.
    let mut raft = RaftClient::new(cluster.client(target));
    let refusals = [
        raft.vote(payload(&vote)).await.map(drop),
        raft.append_entries(payload(&append)).await.map(drop),
        raft.install_snapshot(pb::RaftPayload { data: Vec::new() }).await.map(drop),
        raft.forward(payload(&forward)).await.map(drop),
        raft.read_index(pb::ReadIndexRequest { from: 9 }).await.map(drop),
        raft.ping(pb::PingRequest { from: 9 }).await.map(drop),
    ];
    for (i, refused) in refusals.into_iter().enumerate() {
        let e = refused.expect_err("a caller without a certificate got through");
        assert_eq!((i, e.code(), e.message()), (i, Code::Unauthenticated, PEER_CERT_REQUIRED));
    }

    // A certificate from a foreign CA: the handshake is refused, so the
    // call fails before any service sees it.
    let foreign = Ca::new("foreign CA").unwrap().issue("intruder", &["127.0.0.1"]).unwrap();
    let intruder = Identity::from_pem(&foreign.cert_pem, &foreign.key_pem);
    let channel = tls_channel(addr, &cluster.ca.cert_pem(), Some(intruder));
    let e = RaftClient::new(channel).vote(payload(&vote)).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal),
        "{e:?}"
    );

    // Nothing changed: no term adopted, no route forwarded.
    assert_eq!(cluster.terms().await, terms);
    assert_eq!(cluster.patterns(leader).await, ["1XXX"]);

    // The control: a certificate from the cluster CA is let through.
    let member = cluster.ca.issue("node 9", &["127.0.0.1"]).unwrap();
    let member = Identity::from_pem(&member.cert_pem, &member.key_pem);
    let channel = tls_channel(addr, &cluster.ca.cert_pem(), Some(member));
    let pong =
        RaftClient::new(channel).ping(pb::PingRequest { from: 9 }).await.unwrap().into_inner();
    assert_eq!(pong.node_id, target);
}

/// `switchboard ctl` with and without `--tls-ca` against a TLS node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctl_talks_tls_with_tls_ca_and_says_why_without() {
    let cluster = TlsCluster::start().await;
    cluster.wait_leader().await;
    let ca = cluster.dir.path().join("ca.pem");
    let endpoint = cluster.addrs[0].to_string();
    let ctl = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.args(["ctl", "--endpoints", &endpoint, "--timeout", "5"]).args(extra);
        cmd.env_remove("SWITCHBOARD_TLS_CA").stdin(std::process::Stdio::null());
        cmd
    };

    let out = ctl(&["--tls-ca", ca.to_str().unwrap(), "--json", "status"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"node_id\":1"), "{stdout}");

    // The same through the environment variable.
    let out = ctl(&["status"]).env("SWITCHBOARD_TLS_CA", &ca).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let started = Instant::now();
    let out = ctl(&["status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < REQUEST_LIMIT, "plain-text ctl hung");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("if it serves TLS, pass --tls-ca FILE"), "{stderr}");

    let missing = cluster.dir.path().join("missing.pem");
    let out = ctl(&["--tls-ca", missing.to_str().unwrap(), "status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read --tls-ca file {}", missing.display())),
        "{stderr}"
    );
}

/// `switchboard dev --tls`: the nodes serve TLS with the certificates it
/// made, and the `ctl` line it prints works as printed.
#[test]
fn dev_tls_prints_a_ctl_line_that_works() {
    use std::process::{Command, Stdio};
    use support::BIN;
    let dir = tempfile::tempdir().unwrap();
    let base = support::free_ports(3);
    let data = dir.path().join("dev");
    let args: Vec<String> = ["--tls", "--sip-base-port", "0", "--base-port", &base.to_string()]
        .map(String::from)
        .into();
    let (mut dev, rx) = support::spawn_dev(&args, &data);
    let lines = support::wait_ready(&mut dev, &rx, "dev --tls");
    let ca = data.join("tls").join("ca.pem");
    assert!(ca.is_file() && data.join("tls/node3-key.pem").is_file());
    let tls_line = lines.iter().find(|l| l.starts_with("tls: on")).expect("tls line");
    assert!(tls_line.contains(&format!("--tls-ca {}", ca.display())), "{tls_line}");
    let status_line = lines
        .iter()
        .find(|l| l.trim_start().starts_with("switchboard ctl") && l.ends_with(" status"))
        .expect("a ctl status line");
    let args: Vec<&str> = status_line.split_whitespace().skip(1).collect();
    let out = Command::new(BIN).args(&args).arg("--json").stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let plain = Command::new(BIN)
        .args(["ctl", "--endpoints", &format!("127.0.0.1:{base}"), "status"])
        .env_remove("SWITCHBOARD_TLS_CA")
        .stdin(Stdio::null())
        .output()
        .unwrap();

    // SAFETY: kill(2) on the pid of our own child.
    unsafe {
        libc::kill(dev.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while dev.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "dev did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(out.status.success(), "{status_line}: {stderr}");
    assert!(stdout.contains("\"leader_id\":"), "{stdout}");
    assert_eq!(plain.status.code(), Some(1));
}
