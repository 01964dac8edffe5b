//! A stopped node restarts from its own data directory and catches up —
//! from the log, and from a snapshot when the leader has purged the log
//! entries it missed.

use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_tests::{eventually, register, Cluster};

async fn count_local(cluster: &Cluster, id: u64) -> Option<usize> {
    let r = cluster
        .registrar(id)
        .await
        .list_registrations(pb::ListRegistrationsRequest {
            consistency: pb::Consistency::Local as i32,
        })
        .await
        .ok()?;
    Some(r.into_inner().registrations.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_from_the_log() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let down = cluster.others(leader)[0];
    cluster.stop_node(down).await;
    for i in 0..30 {
        let n = format!("4{i:03}");
        cluster.registrar(leader).await.register(register(&n, "d", "sip:x@h")).await.unwrap();
    }
    cluster.start_node(down).await;
    let c = &cluster;
    eventually(Duration::from_secs(10), "restarted node to catch up", || async move {
        (count_local(c, down).await? == 30).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_from_a_snapshot_after_the_log_was_purged() {
    let mut cluster = Cluster::start_with(3, |c| {
        c.raft.snapshot_after_entries = 20;
        c.raft.keep_entries_after_snapshot = 5;
    })
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let down = cluster.others(leader)[0];
    let before = cluster.status(down).await.unwrap().applied_index;
    cluster.stop_node(down).await;

    // Unbatched, sequential writes: one entry each, so the log grows past
    // several snapshots.
    for i in 0..120 {
        let n = format!("5{i:03}");
        cluster.registrar(leader).await.register(register(&n, "d", "sip:x@h")).await.unwrap();
    }
    let c = &cluster;
    let purged = eventually(Duration::from_secs(10), "leader to purge its log", || async move {
        let s = c.status(leader).await?;
        (s.purged_index > before + 1).then_some(s.purged_index)
    })
    .await;
    assert!(purged > before, "the entries the stopped node needs are gone from the log");

    cluster.start_node(down).await;
    let c = &cluster;
    eventually(
        Duration::from_secs(15),
        "node to install the snapshot and catch up",
        || async move { (count_local(c, down).await? == 120).then_some(()) },
    )
    .await;
    let s = cluster.status(down).await.unwrap();
    assert!(s.snapshot_index >= purged, "caught up through a snapshot: {s:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start_with(3, |c| c.raft.snapshot_after_entries = 25).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    for i in 0..60 {
        let n = format!("6{i:03}");
        cluster.registrar(leader).await.register(register(&n, "d", "sip:x@h")).await.unwrap();
    }
    for id in 1..=3 {
        cluster.stop_node(id).await;
    }
    for id in 1..=3 {
        cluster.start_node(id).await;
    }
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let all = cluster
        .registrar(leader)
        .await
        .list_registrations(pb::ListRegistrationsRequest {
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.registrations.len(), 60);
    cluster.shutdown().await;
}
