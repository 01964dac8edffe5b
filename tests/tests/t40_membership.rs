//! Membership: add a 4th node (learner, caught up, voter), remove one.

use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_tests::{eventually, lookup, register, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_fourth_node_then_remove_one() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    cluster.registrar(leader).await.register(register("7000", "d", "sip:7000@h")).await.unwrap();

    // Node 4 starts with an empty directory and no initial cluster: it waits to be added.
    let addr = cluster.add_node_config(4).await;
    cluster.start_node(4).await;
    let follower = cluster.others(leader)[0];
    let status = cluster
        .cluster(follower)
        .await
        .add_node(pb::AddNodeRequest { id: 4, addr: addr.to_string() })
        .await
        .expect("add node 4 through a follower")
        .into_inner()
        .status
        .unwrap();
    let four = status.members.iter().find(|m| m.id == 4).expect("member 4");
    assert_eq!(four.role, "voter");

    // It serves what was written before it joined (the seed's procedure 250).
    let got = cluster.registrar(4).await.lookup(lookup("7000", true)).await.unwrap().into_inner();
    assert_eq!(got.bindings.len(), 1);

    // Remove a node that is not the leader; the cluster keeps working.
    let victim = cluster.others(leader).into_iter().find(|&id| id != 4).unwrap();
    let status = cluster
        .cluster(leader)
        .await
        .remove_node(pb::RemoveNodeRequest { id: victim })
        .await
        .expect("remove")
        .into_inner()
        .status
        .unwrap();
    assert!(status.members.iter().all(|m| m.id != victim), "{status:?}");
    assert_eq!(status.members.len(), 3);
    cluster.stop_node(victim).await;

    cluster.registrar(4).await.register(register("7001", "d", "sip:7001@h")).await.unwrap();
    let c = &cluster;
    eventually(Duration::from_secs(5), "write after removal visible at node 4", || async move {
        let r = c.registrar(4).await.lookup(lookup("7001", false)).await.ok()?.into_inner();
        (!r.bindings.is_empty()).then_some(())
    })
    .await;

    // Removing an unknown node is NOT_FOUND.
    let err = cluster
        .cluster(leader)
        .await
        .remove_node(pb::RemoveNodeRequest { id: 99 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    cluster.shutdown().await;
}

/// Adding a node outlives a change of leader: the add is relayed to the
/// leader, which makes node 4 a learner and waits for it to catch up; node 4
/// is not running yet, so the leader is still waiting when it is stopped.
/// The relaying follower starts the add again at the new leader, which
/// finishes it once node 4 runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_node_survives_a_change_of_leader() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let addr = cluster.add_node_config(4).await;
    let follower = cluster.others(leader)[0];
    let mut client = cluster.cluster(follower).await;
    let add = tokio::spawn(async move {
        client.add_node(pb::AddNodeRequest { id: 4, addr: addr.to_string() }).await
    });

    // Node 4 is a learner (the leader committed that much) and the add waits.
    let c = &cluster;
    eventually(Duration::from_secs(5), "node 4 listed as a learner", || async move {
        let s = c.status(follower).await?;
        s.members.iter().any(|m| m.id == 4 && m.role == "learner").then_some(())
    })
    .await;
    assert!(!add.is_finished(), "the add cannot finish before node 4 runs");

    cluster.stop_node(leader).await;
    let new_leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    cluster.start_node(4).await;

    let status = tokio::time::timeout(Duration::from_secs(30), add)
        .await
        .expect("the add finishes")
        .expect("task")
        .expect("node 4 added across the change of leader")
        .into_inner()
        .status
        .unwrap();
    let four = status.members.iter().find(|m| m.id == 4).expect("member 4");
    assert_eq!(four.role, "voter", "{status:?}");
    cluster.shutdown().await;
}

/// A node that never answers is not promoted: `AddNode` gives up after
/// `raft.learner_catch_up_ms` with FAILED_PRECONDITION, the node stays a
/// learner (the quorum is still two of the three voters) and writes go on.
/// Before, openraft's own catch-up check passed for any learner within 5 000
/// entries of the leader, so the dead node became a voter at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_answers_stays_a_learner() {
    let mut cluster = Cluster::start_with(3, |c| c.raft.learner_catch_up_ms = 1_500).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let addr = cluster.add_node_config(4).await;
    let err = cluster
        .cluster(leader)
        .await
        .add_node(pb::AddNodeRequest { id: 4, addr: addr.to_string() })
        .await
        .expect_err("node 4 is not running");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("node 4 at 127.0.0.1:"), "{}", err.message());
    assert!(err.message().contains("has not caught up within 1500 ms"), "{}", err.message());

    let status = cluster.status(leader).await.expect("status");
    let four = status.members.iter().find(|m| m.id == 4).expect("member 4");
    assert_eq!(four.role, "learner", "{status:?}");
    assert_eq!(status.members.iter().filter(|m| m.role == "voter").count(), 3);
    cluster.registrar(leader).await.register(register("7002", "d", "sip:7002@h")).await.unwrap();
    cluster.shutdown().await;
}

/// Removing the leader itself: the call answers (through a follower or at
/// the leader), the leader leaves, and the remaining two elect one of
/// themselves and take writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_over() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let status = tokio::time::timeout(
        Duration::from_secs(8),
        cluster.cluster(leader).await.remove_node(pb::RemoveNodeRequest { id: leader }),
    )
    .await
    .expect("RemoveNode of the leader answers within 8 s")
    .expect("the leader is removed")
    .into_inner()
    .status
    .unwrap();
    assert!(status.members.iter().all(|m| m.id != leader), "{status:?}");
    cluster.stop_node(leader).await;
    let next = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(next, leader);
    cluster.registrar(next).await.register(register("7003", "d", "sip:7003@h")).await.unwrap();
    cluster.shutdown().await;
}
