//! A node whose Raft core stops on a storage error (here: fsync returning
//! `EIO`, injected by the storage failpoint) must not go on serving from its
//! frozen state: it reports NOT_SERVING, refuses reads, writes and the
//! leader's liveness pings with UNAVAILABLE "raft stopped: ...", and its
//! `run()` returns the error. The rest of the cluster carries on, electing a
//! new leader when the failed node led.

use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::raft_client::RaftClient;
use switchboard_storage::failpoint::FSYNC_EIO_FILE;
use switchboard_tests::{eventually, lookup, register, Cluster};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The health services every node reports on ("" = the whole server).
fn health_services() -> impl Iterator<Item = &'static str> {
    std::iter::once("").chain(switchboard_tests::SERVICES)
}

/// Make every later fsync in node `id`'s data directory fail with EIO.
fn break_fsync(cluster: &Cluster, id: u64) {
    std::fs::write(cluster.data_dir(id).join(FSYNC_EIO_FILE), b"").expect("create failpoint file");
}

fn assert_raft_stopped(what: &str, status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{what}: {status:?}");
    assert!(status.message().starts_with("raft stopped: "), "{what}: {}", status.message());
}

/// Node `id` has noticed that its Raft stopped: it says NOT_SERVING for
/// every service and refuses a LOCAL read, a write and a liveness ping with
/// UNAVAILABLE "raft stopped: ...". Checked right away, while the node still
/// answers before it exits.
async fn assert_refuses_everything(cluster: &Cluster, id: u64) {
    let mut health = HealthClient::new(cluster.channel(id).await);
    let polled = &health;
    eventually(Duration::from_secs(10), "the node to report NOT_SERVING", || {
        let mut h = polled.clone();
        async move {
            let r = h.check(HealthCheckRequest { service: String::new() }).await;
            (r.ok()?.into_inner().status() == ServingStatus::NotServing).then_some(())
        }
    })
    .await;

    let read = cluster.registrar(id).await.lookup(lookup("8000", false)).await;
    assert_raft_stopped("LOCAL read", &read.expect_err("a LOCAL read must be refused"));
    let write = cluster.registrar(id).await.register(register("8099", "d", "sip:x@h")).await;
    assert_raft_stopped("write", &write.expect_err("a write must be refused"));
    let ping = RaftClient::new(cluster.channel(id).await).ping(pb::PingRequest { from: 99 }).await;
    assert_raft_stopped("ping", &ping.expect_err("a liveness ping must be refused"));
    for service in health_services() {
        let r = health.check(HealthCheckRequest { service: service.into() }).await;
        let status = r.unwrap_or_else(|e| panic!("health of {service:?}: {e:?}")).into_inner();
        assert_eq!(status.status(), ServingStatus::NotServing, "health of {service:?}");
    }
}

/// `run()` of node `id` returns by itself with "raft stopped: <the EIO>".
async fn assert_run_failed(cluster: &mut Cluster, id: u64) {
    let err = cluster.wait_exit(id, Duration::from_secs(15)).await.expect_err("run() must fail");
    let message = err.to_string();
    assert!(message.starts_with("raft stopped: "), "{message}");
    assert!(message.contains("Input/output error"), "names the cause: {message}");
}

async fn count_linearizable(cluster: &Cluster, at: u64) -> usize {
    cluster
        .registrar(at)
        .await
        .list_registrations(pb::ListRegistrationsRequest {
            consistency: pb::Consistency::Linearizable as i32,
            page_size: 10_000,
            ..Default::default()
        })
        .await
        .expect("linearizable list")
        .into_inner()
        .registrations
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_fsync_fails_stops_serving_and_exits() {
    let mut cluster = Cluster::start_with(3, |c| c.gateways.probe_interval_ms = 0).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let (failed, survivor) = (cluster.others(leader)[0], cluster.others(leader)[1]);

    break_fsync(&cluster, failed);
    // The follower's append of this entry fails; the leader and the other
    // follower commit it.
    cluster.registrar(leader).await.register(register("8000", "d", "sip:x@h")).await.unwrap();

    assert_refuses_everything(&cluster, failed).await;
    assert_run_failed(&mut cluster, failed).await;

    // The others go on, and the leader's liveness declares the node down.
    cluster.registrar(survivor).await.register(register("8001", "d", "sip:x@h")).await.unwrap();
    assert_eq!(count_linearizable(&cluster, survivor).await, 2);
    let c = &cluster;
    eventually(Duration::from_secs(10), "the leader to declare the node down", || async move {
        let s = c.status(leader).await?;
        s.members.iter().any(|m| m.id == failed && m.status == "down").then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_fsync_fails_stops_and_another_node_leads() {
    let mut cluster = Cluster::start_with(3, |c| c.gateways.probe_interval_ms = 0).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let follower = cluster.others(leader)[0];
    // Registered through the follower: the registrations a node controls
    // are purged when it is declared down, and the leader will be.
    cluster.registrar(follower).await.register(register("8000", "d", "sip:x@h")).await.unwrap();

    break_fsync(&cluster, leader);
    // The leader cannot make the entry durable, so the write is not
    // acknowledged: it fails in flight (INTERNAL: it may still be committed
    // by the next leader) or, if a background write already stopped the
    // leader's Raft, is refused (UNAVAILABLE: nothing was proposed).
    let write = cluster.registrar(leader).await.register(register("8001", "d", "sip:x@h")).await;
    let status = write.expect_err("a write the leader could not fsync must not be acknowledged");
    assert!(
        matches!(status.code(), tonic::Code::Internal | tonic::Code::Unavailable),
        "{status:?}"
    );
    assert!(status.message().contains("raft stopped: "), "{}", status.message());

    assert_refuses_everything(&cluster, leader).await;
    assert_run_failed(&mut cluster, leader).await;

    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    cluster.registrar(follower).await.register(register("8002", "d", "sip:x@h")).await.unwrap();
    let n = count_linearizable(&cluster, follower).await;
    assert!(n == 2 || n == 3, "8000 and 8002, and 8001 only if the new leader had it: {n}");
    cluster.shutdown().await;
}
