//! Writes at any node, reads at every node: LOCAL converges, LINEARIZABLE
//! sees an acknowledged write at once, wherever it is asked.

use std::time::Duration;

use switchboard_tests::{eventually, lookup, register, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_at_a_follower_is_read_everywhere() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let follower = cluster.others(leader)[0];

    let reply = cluster
        .registrar(follower)
        .await
        .register(register("1000", "desk", "sip:1000@10.0.0.1:5060"))
        .await
        .expect("register at a follower")
        .into_inner();
    let binding = reply.binding.expect("binding");
    assert_eq!(binding.contact, "sip:1000@10.0.0.1:5060");
    assert_eq!(binding.node_id, follower, "controlled by the node it registered at");
    let meta = reply.meta.expect("meta");
    assert_eq!(meta.leader_id, leader);

    // LINEARIZABLE: every node sees the acknowledged write immediately.
    for id in 1..=3 {
        let got =
            cluster.registrar(id).await.lookup(lookup("1000", true)).await.unwrap().into_inner();
        assert_eq!(got.bindings.len(), 1, "node {id} linearizable read");
        assert_eq!(got.bindings[0].contact, "sip:1000@10.0.0.1:5060");
        assert!(
            got.applied_index >= meta.index,
            "node {id} applied {} < {}",
            got.applied_index,
            meta.index
        );
    }
    // LOCAL converges on every node.
    for id in 1..=3 {
        let c = &cluster;
        eventually(Duration::from_secs(5), "local read to converge", || async move {
            let got = c.registrar(id).await.lookup(lookup("1000", false)).await.ok()?.into_inner();
            (got.bindings.len() == 1).then_some(())
        })
        .await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_at_every_node_are_all_applied() {
    let cluster = Cluster::start(3).await;
    let mut tasks = Vec::new();
    for i in 0..150u32 {
        let mut r = cluster.registrar(u64::from(i % 3) + 1).await;
        tasks.push(tokio::spawn(async move {
            let n = format!("2{i:03}");
            r.register(register(&n, "d", &format!("sip:{n}@h"))).await.map(|r| r.into_inner())
        }));
    }
    let mut indexes = std::collections::BTreeSet::new();
    for t in tasks {
        let reply = t.await.unwrap().expect("every write acknowledged");
        indexes.insert(reply.meta.unwrap().index);
    }
    // Group commit: 150 writes need far fewer than 150 entries under
    // concurrency; at least the count of distinct entries is bounded by 150.
    assert!(indexes.len() <= 150);
    let all = cluster
        .registrar(1)
        .await
        .list_registrations(switchboard_proto::v1::ListRegistrationsRequest {
            consistency: switchboard_proto::v1::Consistency::Linearizable as i32,
            page_size: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.registrations.len(), 150);
    cluster.shutdown().await;
}

/// ListRegistrations comes in pages: following next_page_token yields every
/// number once, in order, within the prefix; a bad token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_listed_in_pages_that_follow_their_token() {
    use switchboard_proto::v1 as pb;
    let cluster = Cluster::start(3).await;
    let mut r = cluster.registrar(1).await;
    let mut wanted = Vec::new();
    for i in 0..23u32 {
        let n = format!("7{i:03}");
        r.register(register(&n, "d", &format!("sip:{n}@h"))).await.expect("register");
        wanted.push(n);
    }
    for n in ["6000", "8000"] {
        r.register(register(n, "d", "sip:x@h")).await.expect("register outside the prefix");
    }
    let list = |page_size, page_token: String, prefix: &str| pb::ListRegistrationsRequest {
        consistency: pb::Consistency::Linearizable as i32,
        page_size,
        page_token,
        prefix: prefix.to_string(),
    };
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = r.list_registrations(list(10, token, "7")).await.unwrap().into_inner();
        assert!(page.registrations.len() <= 10, "page over its size");
        pages += 1;
        seen.extend(page.registrations.into_iter().map(|r| r.number));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, wanted, "every number of the prefix once, in order");
    assert_eq!(pages, 3);
    // No prefix, default page size: everything in one page.
    let all = r.list_registrations(list(0, String::new(), "")).await.unwrap().into_inner();
    assert_eq!(all.registrations.len(), 25);
    assert!(all.next_page_token.is_empty());
    let err = r.list_registrations(list(0, "9".repeat(300), "")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    cluster.shutdown().await;
}
