//! Stop the leader while clients keep writing: a new leader is elected and
//! no acknowledged write is lost.

use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_tests::{register, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_stop_elects_a_new_leader_and_keeps_acknowledged_writes() {
    let mut cluster = Cluster::start(3).await;
    let old = cluster.wait_leader(Duration::from_secs(5)).await;
    let survivors = cluster.others(old);

    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let n = format!("3{i:03}");
        let via = survivors[i % 2];
        cluster
            .registrar(via)
            .await
            .register(register(&n, "d", "sip:x@h"))
            .await
            .expect("write before");
        acknowledged.push(n);
    }

    cluster.stop_node(old).await;

    // Keep writing through the survivors; writes made while no leader is
    // known may fail with UNAVAILABLE / DEADLINE_EXCEEDED, which the client
    // retries — but every acknowledged one must survive.
    let mut failed = 0;
    for i in 20..60 {
        let n = format!("3{i:03}");
        let via = survivors[i % 2];
        match cluster.registrar(via).await.register(register(&n, "d", "sip:x@h")).await {
            Ok(_) => acknowledged.push(n),
            Err(s) => {
                assert!(
                    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded),
                    "unexpected error during failover: {s:?}"
                );
                failed += 1;
            }
        }
    }
    assert!(failed < 40, "no write succeeded after the leader stopped");

    let new = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new, old);
    let status = cluster.status(new).await.expect("status");
    assert!(status.term > 1, "a new term: {status:?}");

    for via in &survivors {
        let all = cluster
            .registrar(*via)
            .await
            .list_registrations(pb::ListRegistrationsRequest {
                consistency: pb::Consistency::Linearizable as i32,
                page_size: 10_000,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        let present: std::collections::BTreeSet<_> =
            all.registrations.iter().map(|r| r.number.clone()).collect();
        for n in &acknowledged {
            assert!(present.contains(n), "acknowledged {n} lost on node {via}");
        }
    }

    // The old leader comes back as a follower and catches up.
    cluster.start_node(old).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(leader, 0);
    cluster.shutdown().await;
}
