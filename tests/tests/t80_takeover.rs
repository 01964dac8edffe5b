//! Seeds 003 and 004 through the API: when a node dies the leader notices
//! within the configured detection time and its calls move to their
//! stand-by with state and version intact (hot), or are released (cold).
//! Also the planned switch-over (drain).

use std::time::{Duration, Instant};

use switchboard_proto::v1 as pb;
use switchboard_tests::{eventually, Cluster};

fn fast_liveness(c: &mut switchboard::config::Config, takeover: &str) {
    c.liveness.poll_interval_ms = 100;
    c.liveness.missed_polls = 3;
    c.calls.takeover = takeover.into();
    c.gateways.probe_interval_ms = 0;
}

async fn list_calls(cluster: &Cluster, at: u64) -> Vec<pb::Call> {
    cluster
        .calls(at)
        .await
        .list_calls(pb::ListCallsRequest {
            node_id: 0,
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .map(|r| r.into_inner().calls)
        .unwrap_or_default()
}

/// Start calls owned by `owner`; advance the first to connected (version 2).
async fn calls_on(cluster: &Cluster, owner: u64, n: usize) -> Vec<pb::Call> {
    let mut client = cluster.calls(owner).await;
    let mut out = Vec::new();
    for i in 0..n {
        let call = client
            .start_call(pb::StartCallRequest {
                call_id: format!("call-{i}"),
                from: "1000".into(),
                to: "2000".into(),
                node_id: owner,
                gateway: String::new(),
                request_id: None,
            })
            .await
            .unwrap()
            .into_inner()
            .call
            .unwrap();
        assert_eq!(call.owner, owner);
        assert!(call.standby != 0 && call.standby != owner, "{call:?}");
        out.push(call);
    }
    let updated = client
        .update_call(pb::UpdateCallRequest {
            call_id: "call-0".into(),
            state: "connected".into(),
            expected_version: 1,
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .call
        .unwrap();
    out[0] = updated;
    out
}

async fn wait_policy(cluster: &Cluster) {
    // The leader writes the configured policy on its first housekeeping tick.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let _ = cluster;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_takeover_moves_calls_to_their_standby_with_state_and_version() {
    let mut cluster = Cluster::start_with(3, |c| fast_liveness(c, "hot")).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let victim = cluster.others(leader)[0];
    wait_policy(&cluster).await;
    let before = calls_on(&cluster, victim, 4).await;

    cluster.stop_node(victim).await;
    let stopped = Instant::now();
    let c = &cluster;
    let after =
        eventually(Duration::from_secs(5), "calls to move off the dead node", || async move {
            let calls = list_calls(c, leader).await;
            (calls.len() == 4 && calls.iter().all(|x| x.owner != victim)).then_some(calls)
        })
        .await;
    let took = stopped.elapsed();
    eprintln!("calls moved {took:?} after node {victim} stopped (detection 3 x 100 ms)");
    assert!(took < Duration::from_secs(3), "takeover took {took:?}");
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.call_id, new.call_id);
        assert_eq!(new.owner, old.standby, "{} moved to its stand-by", old.call_id);
        assert_eq!(
            (new.state.as_str(), new.version),
            (old.state.as_str(), old.version),
            "state and version kept"
        );
        assert!(new.standby != new.owner && new.standby != victim, "{new:?}");
    }
    let status = cluster.status(leader).await.unwrap();
    let m = status.members.iter().find(|m| m.id == victim).unwrap();
    assert_eq!(m.status, "down");

    // The node comes back: declared up, takes no calls back.
    cluster.start_node(victim).await;
    let c = &cluster;
    eventually(Duration::from_secs(5), "node to be declared up", || async move {
        let s = c.status(leader).await?;
        (s.members.iter().find(|m| m.id == victim)?.status == "up").then_some(())
    })
    .await;
    assert!(list_calls(&cluster, victim).await.iter().all(|x| x.owner != victim));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_takeover_releases_the_dead_nodes_calls() {
    let mut cluster = Cluster::start_with(3, |c| fast_liveness(c, "cold")).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let victim = cluster.others(leader)[0];
    let survivor = cluster.others(leader)[1];
    wait_policy(&cluster).await;
    calls_on(&cluster, victim, 3).await;
    // A call the victim stands by for must get a new stand-by, not be released.
    let kept = cluster
        .calls(leader)
        .await
        .start_call(pb::StartCallRequest {
            call_id: "kept".into(),
            from: "1".into(),
            to: "2".into(),
            node_id: survivor,
            gateway: String::new(),
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .call
        .unwrap();

    cluster.stop_node(victim).await;
    let c = &cluster;
    let left =
        eventually(Duration::from_secs(5), "calls of the dead node released", || async move {
            let calls = list_calls(c, leader).await;
            calls.iter().all(|x| x.owner != victim).then_some(calls)
        })
        .await;
    assert_eq!(left.len(), 1, "only the survivor's call is left: {left:?}");
    assert_eq!(left[0].call_id, "kept");
    assert_eq!(left[0].owner, kept.owner);
    assert!(left[0].standby != victim);
    let err = cluster
        .calls(leader)
        .await
        .get_call(pb::GetCallRequest { call_id: "call-0".into(), consistency: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_calls_and_a_drained_leader_hands_over() {
    let cluster = Cluster::start_with(3, |c| fast_liveness(c, "hot")).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    calls_on(&cluster, leader, 2).await;
    let reply = cluster
        .cluster(cluster.others(leader)[0])
        .await
        .drain_node(pb::DrainNodeRequest { id: leader })
        .await
        .expect("drain the leader")
        .into_inner();
    assert_eq!(reply.moved_calls, 2);
    let new = cluster.wait_leader(Duration::from_secs(5)).await;
    assert_ne!(new, leader, "the drained leader handed leadership over");
    let calls = list_calls(&cluster, new).await;
    assert!(calls.iter().all(|c| c.owner != leader && c.standby != leader), "{calls:?}");
    let s = cluster.status(new).await.unwrap();
    assert_eq!(s.members.iter().find(|m| m.id == leader).unwrap().status, "draining");
    // Maintenance over: the node is put back in service; calls stay put.
    cluster
        .cluster(new)
        .await
        .resume_node(pb::ResumeNodeRequest { id: leader })
        .await
        .expect("resume");
    let s = cluster.status(new).await.unwrap();
    assert_eq!(s.members.iter().find(|m| m.id == leader).unwrap().status, "up");
    assert!(list_calls(&cluster, new).await.iter().all(|c| c.owner != leader));
    let err =
        cluster.cluster(new).await.resume_node(pb::ResumeNodeRequest { id: 42 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    cluster.shutdown().await;
}

/// The leader itself dies with calls on it: its successor takes over
/// polling, detects the dead leader the same way and moves its calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_is_detected_by_its_successor() {
    let mut cluster = Cluster::start_with(3, |c| fast_liveness(c, "hot")).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    wait_policy(&cluster).await;
    let before = calls_on(&cluster, leader, 3).await;
    cluster.stop_node(leader).await;
    let stopped = Instant::now();
    let new = cluster.wait_leader(Duration::from_secs(5)).await;
    assert_ne!(new, leader);
    let c = &cluster;
    let after =
        eventually(Duration::from_secs(5), "calls to move off the dead leader", || async move {
            let calls = list_calls(c, new).await;
            (calls.len() == 3 && calls.iter().all(|x| x.owner != leader)).then_some(calls)
        })
        .await;
    eprintln!("calls moved {:?} after the leader stopped", stopped.elapsed());
    for (old, now) in before.iter().zip(&after) {
        assert_eq!(now.owner, old.standby, "{} moved to its stand-by", old.call_id);
        assert_eq!(now.version, old.version);
    }
    cluster.shutdown().await;
}
