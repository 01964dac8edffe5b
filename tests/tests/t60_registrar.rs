//! Seed 002 through the API: registration at any node, the re-registration
//! race, refresh and expiry, q ordering.

use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_tests::{eventually, lookup, register, Cluster};

/// Device 1000 registered at node 1 re-registers at node 3; node 1's
/// delete of the old registration (naming the old generation) arrives
/// afterwards. Every node must end with the device registered at node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_race_stale_unregister_keeps_the_newer_registration() {
    let cluster = Cluster::start(3).await;
    let at_1 = cluster
        .registrar(1)
        .await
        .register(pb::RegisterRequest {
            node_id: 1,
            ..register("1000", "phone", "sip:1000@10.0.0.1")
        })
        .await
        .unwrap()
        .into_inner()
        .binding
        .unwrap();
    let at_3 = cluster
        .registrar(3)
        .await
        .register(pb::RegisterRequest {
            node_id: 3,
            ..register("1000", "phone", "sip:1000@10.0.0.3")
        })
        .await
        .unwrap()
        .into_inner()
        .binding
        .unwrap();
    assert!(at_3.generation > at_1.generation);
    let stale = cluster
        .registrar(1)
        .await
        .unregister(pb::UnregisterRequest {
            number: "1000".into(),
            device_id: "phone".into(),
            generation: at_1.generation,
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stale.removed.is_empty(), "a stale delete removes nothing: {stale:?}");
    for id in 1..=3 {
        let got =
            cluster.registrar(id).await.lookup(lookup("1000", true)).await.unwrap().into_inner();
        assert_eq!(got.bindings.len(), 1, "node {id}");
        assert_eq!(got.bindings[0].node_id, 3, "node {id} sees the device at node 3");
        assert_eq!(got.bindings[0].contact, "sip:1000@10.0.0.3");
    }
    // A delete naming the current generation does remove it.
    let gone = cluster
        .registrar(2)
        .await
        .unregister(pb::UnregisterRequest {
            number: "1000".into(),
            device_id: "phone".into(),
            generation: at_3.generation,
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.removed.len(), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_bindings_are_never_returned_and_are_swept() {
    let cluster = Cluster::start_with(3, |c| c.registrations.sweep_interval_ms = 200).await;
    let mut reg = cluster.registrar(2).await;
    let short = reg
        .register(pb::RegisterRequest { expires_s: 1, ..register("2000", "short", "sip:s@h") })
        .await
        .unwrap()
        .into_inner()
        .binding
        .unwrap();
    // Refresh extends a different binding; the short one is left to lapse.
    reg.register(pb::RegisterRequest { expires_s: 1, ..register("2001", "beat", "sip:b@h") })
        .await
        .unwrap();
    let refreshed = reg
        .refresh(pb::RefreshRequest {
            number: "2001".into(),
            device_id: "beat".into(),
            generation: 0,
            expires_s: 60,
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .binding
        .unwrap();
    assert!(refreshed.expires_at_ms > short.expires_at_ms + 50_000);

    let now_ms = || {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as u64
    };
    // Expiry is judged by the cluster's clock (the median of the nodes'
    // clocks, carried forward by each node's monotonic clock), which trails
    // this process's wall clock by the last entry's apply time: a few ms,
    // tens on a loaded machine (t70 failed in CI on a margin of 0-50 ms).
    // A second is far more than that and still a bound on the lag.
    while now_ms() < short.expires_at_ms + 1_000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past its expiry: no node returns it, at either consistency.
    for id in 1..=3 {
        for lin in [false, true] {
            let got =
                cluster.registrar(id).await.lookup(lookup("2000", lin)).await.unwrap().into_inner();
            assert!(
                got.bindings.is_empty(),
                "node {id} (linearizable={lin}) returned an expired binding"
            );
        }
    }
    // The leader's sweep commits its removal: the number becomes unknown.
    let c = &cluster;
    eventually(Duration::from_secs(5), "expiry sweep", || async move {
        let got = c.registrar(1).await.lookup(lookup("2000", true)).await.ok()?.into_inner();
        (!got.known).then_some(())
    })
    .await;
    let kept = cluster.registrar(3).await.lookup(lookup("2001", true)).await.unwrap().into_inner();
    assert_eq!(kept.bindings.len(), 1, "the refreshed binding lives on");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_bindings_are_ordered_by_q() {
    let cluster = Cluster::start(3).await;
    let mut reg = cluster.registrar(1).await;
    for (device, q) in [("low", 100), ("high", 900), ("mid", 500)] {
        reg.register(pb::RegisterRequest {
            q,
            ..register("3000", device, &format!("sip:{device}@h"))
        })
        .await
        .unwrap();
    }
    let got = cluster.registrar(2).await.lookup(lookup("3000", true)).await.unwrap().into_inner();
    let order: Vec<_> = got.bindings.iter().map(|b| b.device_id.as_str()).collect();
    assert_eq!(order, ["high", "mid", "low"]);
    cluster.shutdown().await;
}
