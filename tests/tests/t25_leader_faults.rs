//! The cluster's *own* decisions under faults (issue 8): a deposed leader's
//! decisions never land through the new leader; a blip does not purge a
//! node's registrations; a leader isolated past a snapshot can write again
//! once it leads again; one node's wall clock cannot move cluster time.
//!
//! Partitions are the test-only network cuts of the node's `failpoints`
//! feature (`Cluster::isolate`): node-to-node RPCs fail both ways while
//! clients still reach every node.

use std::time::Duration;

use switchboard::config::Config;
use switchboard_proto::v1 as pb;
use switchboard_tests::{eventually, lookup, register, Cluster};

fn fast_liveness(c: &mut Config) {
    c.liveness.poll_interval_ms = 100;
    c.liveness.missed_polls = 3;
    c.gateways.probe_interval_ms = 0;
}

async fn list_calls(cluster: &Cluster, at: u64) -> Vec<pb::Call> {
    let req = pb::ListCallsRequest { node_id: 0, consistency: pb::Consistency::Local as i32 };
    cluster.calls(at).await.list_calls(req).await.map(|r| r.into_inner().calls).unwrap_or_default()
}

async fn start_call(cluster: &Cluster, id: &str, owner: u64) -> pb::Call {
    let req = pb::StartCallRequest {
        call_id: id.into(),
        from: "1000".into(),
        to: "2000".into(),
        node_id: owner,
        gateway: String::new(),
        request_id: None,
    };
    cluster.calls(owner).await.start_call(req).await.unwrap().into_inner().call.unwrap()
}

/// The leader as node `at` sees it (0 = none).
async fn leader_seen_by(cluster: &Cluster, at: u64) -> u64 {
    cluster.status(at).await.map_or(0, |s| s.leader_id)
}

/// Wait until the nodes other than `old` agree on a leader other than `old`.
async fn new_leader_without(cluster: &Cluster, old: u64) -> u64 {
    let others = cluster.others(old);
    eventually(Duration::from_secs(10), "a new leader among the others", || async {
        let l = leader_seen_by(cluster, others[0]).await;
        let agreed = leader_seen_by(cluster, others[1]).await == l;
        (l != 0 && l != old && agreed).then_some(l)
    })
    .await
}

async fn member_status(cluster: &Cluster, at: u64, id: u64) -> String {
    let s = cluster.status(at).await.expect("status");
    s.members.iter().find(|m| m.id == id).map(|m| m.status.clone()).unwrap_or_default()
}

/// Issue 8.1: a leader cut off for ~2 s decides from its stale view that
/// both other nodes are down. Those decisions must never be committed: not
/// by itself, and not by the new leader when the old one's writes are
/// truncated and (before the fix) retried there. So no call may move off
/// a node that never went down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leaders_node_down_is_never_committed() {
    let cluster = Cluster::start_with(3, fast_liveness).await;
    let old = cluster.wait_leader(Duration::from_secs(10)).await;
    let others = cluster.others(old);
    let mut owners = std::collections::BTreeMap::new();
    for &n in &others {
        for i in 0..3 {
            let call = start_call(&cluster, &format!("on{n}-{i}"), n).await;
            owners.insert(call.call_id.clone(), n);
        }
    }
    cluster.isolate(old);
    // Long enough for the old leader to miss 3 polls of each other node
    // (and propose NodeDown for them), and for the others to elect.
    let new = new_leader_without(&cluster, old).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster.heal(old);
    // The old leader rejoins as a follower; give any retried write time to land.
    eventually(Duration::from_secs(10), "the old leader follows again", || async {
        (leader_seen_by(&cluster, old).await == new).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for &n in &others {
        assert_eq!(member_status(&cluster, new, n).await, "up", "node {n} was never down");
    }
    let calls = list_calls(&cluster, new).await;
    for (id, owner) in &owners {
        let call = calls.iter().find(|c| &c.call_id == id).expect("call still exists");
        assert_eq!(call.owner, *owner, "call {id} moved off live node {owner}: {call:?}");
    }
    cluster.shutdown().await;
}

/// Issue 8.2: a node cut off for a moment loses its calls (they move at
/// once) but keeps its registrations; one that stays down past
/// `purge_after_s` loses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blip_moves_calls_but_keeps_registrations() {
    for purge_after_s in [60, 1] {
        let cluster = Cluster::start_with(3, |c| {
            fast_liveness(c);
            c.registrations.purge_after_s = purge_after_s;
        })
        .await;
        let leader = cluster.wait_leader(Duration::from_secs(10)).await;
        let victim = cluster.others(leader)[0];
        let mut reg = cluster.registrar(victim).await;
        let mut r = register("5550001", "desk", "sip:desk@127.0.0.1:5060");
        r.node_id = victim;
        reg.register(r).await.unwrap();
        start_call(&cluster, "c1", victim).await;
        cluster.isolate(victim);
        eventually(Duration::from_secs(5), "the victim declared down", || async {
            (member_status(&cluster, leader, victim).await == "down").then_some(())
        })
        .await;
        // Stay away long enough for a 1 s purge to come due.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        cluster.heal(victim);
        eventually(Duration::from_secs(5), "the victim up again", || async {
            (member_status(&cluster, leader, victim).await == "up").then_some(())
        })
        .await;
        let call = list_calls(&cluster, leader).await.into_iter().find(|c| c.call_id == "c1");
        assert_ne!(call.expect("the call is kept").owner, victim, "calls move at once");
        let mut reg = cluster.registrar(leader).await;
        let found = reg.lookup(lookup("5550001", true)).await.unwrap().into_inner().bindings.len();
        if purge_after_s == 60 {
            assert_eq!(found, 1, "a 2.5 s blip must not purge the node's registrations");
        } else {
            assert_eq!(found, 0, "down past purge_after_s: purged");
        }
        cluster.shutdown().await;
    }
}

/// Issue 8.3: a leader that is cut off while writes are pending on it, and
/// stays away until the others have snapshotted past its log, must be able
/// to commit writes again once it leads again (its in-flight slots must not
/// stay taken by proposals openraft never answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_isolated_past_a_snapshot_writes_again_when_it_leads_again() {
    let cluster = Cluster::start_with(3, |c| {
        fast_liveness(c);
        c.raft.snapshot_after_entries = 50;
        c.raft.keep_entries_after_snapshot = 5;
        c.writes.max_inflight = 2;
        c.writes.timeout_ms = 1_000;
    })
    .await;
    let old = cluster.wait_leader(Duration::from_secs(10)).await;
    cluster.isolate(old);
    // Writes at the cut-off leader: appended there, never committed.
    let mut at_old = cluster.registrar(old).await;
    for i in 0..4 {
        let e = at_old.register(register(&format!("7000{i}"), "d", "sip:d@h")).await;
        assert!(e.is_err(), "an isolated leader cannot commit: {e:?}");
    }
    let new = new_leader_without(&cluster, old).await;
    let mut at_new = cluster.registrar(new).await;
    for i in 0..120 {
        at_new.register(register(&format!("8{i:04}"), "d", "sip:d@h")).await.unwrap();
    }
    cluster.heal(old);
    eventually(Duration::from_secs(10), "the old leader catches up", || async {
        let mut r = cluster.registrar(old).await;
        let found = r.lookup(lookup("80119", false)).await.ok()?.into_inner();
        (!found.bindings.is_empty()).then_some(())
    })
    .await;
    // Make the old leader lead again: cut off the third node (so it cannot
    // win) and have the current leader hand over (drain), so that the old
    // leader is the only candidate that can collect a majority.
    let mut leads = leader_seen_by(&cluster, old).await == old;
    for _ in 0..5 {
        if leads {
            break;
        }
        let l = leader_seen_by(&cluster, old).await;
        let third = *cluster.others(old).iter().find(|&&n| n != l).expect("a third node");
        cluster.isolate(third);
        let mut c = cluster.cluster(l).await;
        let _ = c.drain_node(pb::DrainNodeRequest { id: l }).await;
        for _ in 0..20 {
            if leader_seen_by(&cluster, old).await == old {
                leads = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster.heal(third);
        let _ = c.resume_node(pb::ResumeNodeRequest { id: l }).await;
    }
    assert!(leads, "node {old} did not become leader again");
    let mut at_old = cluster.registrar(old).await;
    for i in 0..3 {
        at_old
            .register(register(&format!("9000{i}"), "d", "sip:d@h"))
            .await
            .unwrap_or_else(|e| panic!("write {i} at the re-elected leader {old}: {e}"));
    }
    cluster.shutdown().await;
}

/// Issue 8.4: one node's wall clock ten minutes ahead — the leader's or a
/// follower's — neither expires a registration early nor makes that node
/// answer differently: cluster time is the median of a majority's clocks,
/// and reads judge expiry by the replicated clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_skewed_clock_does_not_move_cluster_time() {
    let cluster = Cluster::start_with(3, fast_liveness).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = cluster.others(leader)[0];
    let mut reg = cluster.registrar(leader).await;
    let mut r = register("5550002", "desk", "sip:desk@127.0.0.1:5060");
    r.expires_s = 30;
    reg.register(r).await.unwrap();
    let ten_min = 600_000;
    // First the leader's clock, then a follower's, jumps ten minutes ahead.
    for skewed in [leader, follower] {
        let addr = cluster.nodes[&skewed].addr.to_string();
        switchboard::failpoint::set_clock_offset_ms(&addr, ten_min);
        // Several sweeps and clock ticks happen meanwhile.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for id in cluster.nodes.keys() {
            let mut reg = cluster.registrar(*id).await;
            for linearizable in [false, true] {
                let got = reg.lookup(lookup("5550002", linearizable)).await.unwrap().into_inner();
                let what = format!("node {id}, linearizable {linearizable}, node {skewed} skewed");
                assert_eq!(got.bindings.len(), 1, "{what}");
                let real_now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                let left = got.bindings[0].expires_at_ms.saturating_sub(real_now);
                assert!(left > 15_000 && left <= 31_000, "{what}: expires in {left} ms");
            }
        }
        switchboard::failpoint::set_clock_offset_ms(&addr, 0);
    }
    cluster.shutdown().await;
}
