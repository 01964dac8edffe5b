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
