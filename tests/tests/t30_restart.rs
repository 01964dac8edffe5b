//! A stopped node restarts from its own data directory and catches up —
//! from the log, and from a snapshot when the leader has purged the log
//! entries it missed; and a leader restored after a whole-cluster restart
//! answers no read from before its last acknowledged write.

use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_tests::{eventually, lookup, register, Cluster};

async fn count_local(cluster: &Cluster, id: u64) -> Option<usize> {
    let r = cluster
        .registrar(id)
        .await
        .list_registrations(pb::ListRegistrationsRequest {
            consistency: pb::Consistency::Local as i32,
            page_size: 10_000,
            ..Default::default()
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
            page_size: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.registrations.len(), 60);
    cluster.shutdown().await;
}

/// The contacts a lookup answered, and at which applied index.
fn answered(r: &pb::LookupResponse) -> String {
    let contacts: Vec<&str> = r.bindings.iter().map(|b| b.contact.as_str()).collect();
    format!("{contacts:?} at applied index {}", r.applied_index)
}

/// docs/chaos.md, "Power loss", finding 1. openraft 0.9.25 restores a node
/// whose persisted vote says it led as leader at once, with the *first*
/// entry of its term as its "noop", so `get_read_log_id` is
/// `max(that entry, committed)`; and the committed log id is persisted
/// without a sync, so a power loss can roll it back. The restored leader
/// then took a read index below writes it had acknowledged. The fix
/// (`Node::read_index_here`): the read index is at least the leader's last
/// log index.
///
/// Deterministic: the committed log id is rolled back on disk while every
/// node is stopped (the power loss), and log replication is cut after the
/// restart (`Cluster::cut_replication`) so that the leader cannot commit —
/// and so cannot move its commit index past the rolled-back one — while its
/// leadership confirmations still pass. Long election timeouts keep the
/// restored leader in place for the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restored_leader_reads_nothing_older_than_acknowledged_writes_after_a_power_loss() {
    let mut cluster = Cluster::start_with(3, |c| c.gateways.probe_interval_ms = 0).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let mut registrar = cluster.registrar(leader).await;
    let old = registrar.register(register("7100", "desk", "sip:old@h")).await.unwrap();
    let new = registrar.register(register("7100", "desk", "sip:new@h")).await.unwrap();
    let old_index = old.into_inner().meta.unwrap().index;
    let new_index = new.into_inner().meta.unwrap().index;
    assert!(old_index < new_index, "{old_index} then {new_index}");
    let before = cluster.status(leader).await.expect("leader status");
    assert_eq!(before.leader_id, leader, "{before:?}");

    // The power loss: the followers first, so that the leader's persisted
    // vote still makes it the leader when everything comes back.
    let followers = cluster.others(leader);
    for &id in &followers {
        cluster.stop_node(id).await;
    }
    cluster.stop_node(leader).await;
    // Every node loses the committed log ids written after the one just
    // before the acknowledged Register of sip:new@h. That entry is in the
    // leader's current term (after sip:old@h), so at or after its "noop".
    for id in 1..=3 {
        let left = switchboard_storage::failpoint::roll_back_committed(
            cluster.data_dir(id),
            new_index - 1,
        )
        .unwrap();
        if id == leader {
            assert_eq!(left, Some(new_index - 1), "the leader had committed {new_index}");
        }
    }

    // Back on, with log replication from the leader cut: its commit index
    // stays the rolled-back one. Reads wait at most 1 s.
    for node in cluster.nodes.values_mut() {
        node.config.raft.election_min_ms = 3_000;
        node.config.raft.election_max_ms = 6_000;
        node.config.writes.timeout_ms = 1_000;
    }
    cluster.cut_replication(leader);
    cluster.start_node(leader).await;
    for &id in &followers {
        cluster.start_node(id).await;
    }
    let c = &cluster;
    let term = before.term;
    eventually(Duration::from_secs(10), "every node up, the leader restored", || async move {
        for id in 1..=3 {
            let s = c.status(id).await?;
            if s.leader_id != leader || s.term != term {
                return None;
            }
        }
        Some(())
    })
    .await;

    // Right after the restart, before the leader could commit: a
    // LINEARIZABLE read must wait (here: until its deadline), not answer
    // from the rolled-back state.
    let during = cluster.registrar(leader).await.lookup(lookup("7100", true)).await;
    if let Ok(r) = &during {
        panic!(
            "a LINEARIZABLE Lookup at the restored leader answered {}, but sip:new@h was \
             acknowledged at index {new_index} before the restart",
            answered(r.get_ref())
        );
    }
    let status = during.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    // Nor may any node's start-up catch-up finish there: LOCAL reads are
    // refused until it has.
    for id in 1..=3 {
        match cluster.registrar(id).await.lookup(lookup("7100", false)).await {
            Ok(r) => panic!(
                "node {id} answered a LOCAL Lookup with {} after the restart, below index \
                 {new_index} where sip:new@h was acknowledged",
                answered(r.get_ref())
            ),
            Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "node {id}: {s:?}"),
        }
    }
    let s = cluster.status(leader).await.expect("leader status");
    assert_eq!((s.leader_id, s.term), (leader, term), "still the restored leader: {s:?}");

    // Replication back: the leader commits its log, and every read sees the
    // acknowledged write.
    cluster.heal(leader);
    let r = cluster.registrar(leader).await.lookup(lookup("7100", true)).await.unwrap();
    let r = r.into_inner();
    assert_eq!(r.bindings.len(), 1, "{}", answered(&r));
    assert_eq!(r.bindings[0].contact, "sip:new@h", "{}", answered(&r));
    assert!(r.applied_index >= new_index, "{}", answered(&r));
    for id in 1..=3 {
        let c = &cluster;
        eventually(Duration::from_secs(10), "every node to catch up", || async move {
            let r = c.registrar(id).await.lookup(lookup("7100", false)).await.ok()?.into_inner();
            let contact = r.bindings.first().map(|b| b.contact.clone());
            (contact.as_deref() == Some("sip:new@h") && r.applied_index >= new_index).then_some(())
        })
        .await;
    }
    cluster.shutdown().await;
}

/// `Snapshot` builds a snapshot of the answering node's state at once,
/// answers with what it cost, and a restart from it keeps every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_asked_for_is_built_at_once_and_restarts_hold_it() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let node = cluster.others(leader)[0];
    let mut r = cluster.registrar(leader).await;
    for i in 0..40u32 {
        let n = format!("3{i:03}");
        r.register(register(&n, "d", "sip:d@h")).await.expect("register");
    }
    let applied = cluster.status(leader).await.expect("status").applied_index;
    let before = cluster.status(node).await.expect("status").snapshot_index;
    assert!(before < applied, "already snapshotted at {before}: the test proves nothing");
    let snap = eventually(Duration::from_secs(5), "follower applies", || {
        let c = &cluster;
        async move {
            let mut client = c.cluster(node).await;
            let s = client.snapshot(pb::SnapshotRequest {}).await.ok()?.into_inner();
            (s.index >= applied).then_some(s)
        }
    })
    .await;
    assert_eq!(snap.node_id, node);
    assert!(snap.bytes > 0 && snap.build_ms < 60_000, "{snap:?}");
    assert_eq!(cluster.status(node).await.expect("status").snapshot_index, snap.index);

    cluster.stop_node(node).await;
    cluster.start_node(node).await;
    let got = eventually(Duration::from_secs(10), "restarted node reads", || {
        let c = &cluster;
        async move {
            let l = c.registrar(node).await.lookup(lookup("3039", false)).await;
            let l = l.ok()?.into_inner();
            (!l.bindings.is_empty()).then_some(l)
        }
    })
    .await;
    assert_eq!(got.bindings[0].contact, "sip:d@h");
    cluster.shutdown().await;
}
