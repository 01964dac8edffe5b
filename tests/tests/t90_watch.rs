//! The change feed: Watch delivers every event of a scripted scenario in
//! log order, can resume from an index, and says "compacted" when the node
//! no longer holds the index asked for.

use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::events_client::EventsClient;
use switchboard_tests::{eventually, register, Cluster};
use tokio_stream::StreamExt;

async fn collect(cluster: &Cluster, at: u64, from: u64, want: usize) -> Vec<pb::Event> {
    let mut stream = EventsClient::new(cluster.channel(at).await)
        .watch(pb::WatchRequest { from_index: from })
        .await
        .expect("watch")
        .into_inner();
    let mut got = Vec::new();
    while got.len() < want {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        match next {
            Ok(Some(Ok(e)))
                if e.kind != "leader_changed"
                    && e.kind != "node_updated"
                    && e.kind != "policy_updated" =>
            {
                got.push(e)
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("stream ended early after {got:?}: {other:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_a_scripted_scenario_in_log_order() {
    let cluster = Cluster::start_with(3, |c| c.gateways.probe_interval_ms = 0).await;
    // Let start-up writes (node table, policy) settle, then watch from now.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let watcher = {
        let c = cluster.channel(2).await;
        tokio::spawn(async move {
            let mut stream = EventsClient::new(c)
                .watch(pb::WatchRequest { from_index: 0 })
                .await
                .unwrap()
                .into_inner();
            let mut got = Vec::new();
            while got.len() < 9 {
                match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
                    Ok(Some(Ok(e))) if e.kind != "leader_changed" => got.push(e),
                    Ok(Some(Ok(_))) => {}
                    other => panic!("stream ended early after {got:?}: {other:?}"),
                }
            }
            got
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut reg = cluster.registrar(1).await;
    let first = reg.register(register("1000", "d", "sip:1000@h")).await.unwrap().into_inner();
    reg.refresh(pb::RefreshRequest {
        number: "1000".into(),
        device_id: "d".into(),
        generation: 0,
        expires_s: 60,
        request_id: None,
    })
    .await
    .unwrap();
    let mut gw = cluster.gateways(3).await;
    gw.put_gateway(pb::PutGatewayRequest {
        id: "gw".into(),
        group: "pstn".into(),
        address: "127.0.0.1:5099".into(),
        priority: 1,
        weight: 1,
        capacity: 0,
    })
    .await
    .unwrap();
    gw.report_outcome(pb::ReportOutcomeRequest {
        id: "gw".into(),
        outcome: "timeout".into(),
        retry_after_s: 30,
        request_id: None,
    })
    .await
    .unwrap();
    let mut calls = cluster.calls(2).await;
    calls
        .start_call(pb::StartCallRequest {
            call_id: "c1".into(),
            from: "1000".into(),
            to: "2000".into(),
            node_id: 0,
            gateway: String::new(),
            request_id: None,
        })
        .await
        .unwrap();
    calls
        .update_call(pb::UpdateCallRequest {
            call_id: "c1".into(),
            state: "connected".into(),
            expected_version: 1,
            request_id: None,
        })
        .await
        .unwrap();
    calls
        .end_call(pb::EndCallRequest {
            call_id: "c1".into(),
            expected_version: 0,
            request_id: None,
        })
        .await
        .unwrap();
    reg.unregister(pb::UnregisterRequest {
        number: "1000".into(),
        device_id: String::new(),
        generation: 0,
        request_id: None,
    })
    .await
    .unwrap();
    cluster
        .dial_plan(1)
        .await
        .put_route(pb::PutRouteRequest {
            route: Some(pb::DialRoute {
                pattern: "9@".into(),
                priority: 0,
                group: "pstn".into(),
                strip: 1,
                prefix: String::new(),
            }),
        })
        .await
        .unwrap();

    let got = watcher.await.unwrap();
    let kinds: Vec<(&str, &str)> = got.iter().map(|e| (e.kind.as_str(), e.key.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("registration_added", "1000"),
            ("registration_refreshed", "1000"),
            ("gateway_updated", "gw"),
            ("gateway_status", "gw"),
            ("call_started", "c1"),
            ("call_updated", "c1"),
            ("call_released", "c1"),
            ("registration_removed", "1000"),
            ("route_updated", "9@"),
        ]
    );
    assert!(
        got.windows(2).all(|w| w[0].index < w[1].index),
        "strictly increasing log indexes: {got:?}"
    );
    assert_eq!(got[0].index, first.meta.unwrap().index);
    assert!(got[3].detail_json.contains("OutOfService"), "{}", got[3].detail_json);

    // Resume from the first event's index at another node: the same events.
    let again = collect(&cluster, 3, got[0].index, 9).await;
    assert_eq!(again, got);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_index_is_a_clear_error() {
    let mut cluster = Cluster::start_with(3, |c| {
        c.raft.snapshot_after_entries = 10;
        c.raft.keep_entries_after_snapshot = 2;
    })
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    for i in 0..30 {
        cluster
            .registrar(leader)
            .await
            .register(register(&format!("5{i:03}"), "d", "sip:x@h"))
            .await
            .unwrap();
    }
    // A restarted node holds only what it re-applied after its snapshot.
    let other = cluster.others(leader)[0];
    cluster.stop_node(other).await;
    cluster.start_node(other).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    let err = EventsClient::new(cluster.channel(other).await)
        .watch(pb::WatchRequest { from_index: 1 })
        .await
        .expect_err("index 1 is compacted");
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert!(err.message().starts_with("compacted"), "{}", err.message());
    cluster.shutdown().await;
}

/// Reads a Watch stream (leader changes left out) until it ends, fails, or
/// `stop` fires; returns the events and the error that ended it, if any.
async fn read_until_end(
    mut stream: tonic::Streaming<pb::Event>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (Vec<pb::Event>, Option<tonic::Status>) {
    let mut got = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stop => return (got, None),
            next = stream.next() => match next {
                Some(Ok(e)) if e.kind == "leader_changed" => {}
                Some(Ok(e)) => got.push(e),
                Some(Err(status)) => return (got, Some(status)),
                None => return (got, None),
            },
        }
    }
}

/// A follower cut off long enough that the leader purges the entries it
/// missed catches up by installing a snapshot. Its live watchers cannot be
/// given the events in between: their stream must end with the same
/// `compacted` error the resume path uses, after every event up to the gap,
/// instead of jumping over thousands of events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_install_ends_live_watches_with_compacted() {
    let cluster = Cluster::start_with(3, |c| {
        c.raft.snapshot_after_entries = 10;
        c.raft.keep_entries_after_snapshot = 2;
        c.gateways.probe_interval_ms = 0;
    })
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let follower = cluster.others(leader)[0];
    let stream = EventsClient::new(cluster.channel(follower).await)
        .watch(pb::WatchRequest { from_index: 0 })
        .await
        .expect("watch at the follower")
        .into_inner();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(read_until_end(stream, stopped));

    // A few events the follower sees before it is cut off.
    let mut before = 0;
    for i in 0..3 {
        let w = cluster
            .registrar(leader)
            .await
            .register(register(&format!("70{i:02}"), "d", "sip:x@h"))
            .await
            .unwrap()
            .into_inner();
        before = w.meta.unwrap().index;
    }
    let c = &cluster;
    eventually(Duration::from_secs(5), "the follower to apply the first writes", || async move {
        (c.status(follower).await?.applied_index >= before).then_some(())
    })
    .await;

    cluster.isolate(follower);
    let follower_last = cluster.status(follower).await.expect("follower status").last_log_index;
    // Single-entry writes until both other nodes have snapshotted and purged
    // past the follower's log: whichever leads after the heal must send it a
    // snapshot.
    for i in 0..40 {
        cluster
            .registrar(leader)
            .await
            .register(register(&format!("71{i:02}"), "d", "sip:x@h"))
            .await
            .unwrap();
    }
    let majority = cluster.others(follower);
    let c = &cluster;
    let purged = eventually(Duration::from_secs(10), "the others to purge", || {
        let majority = majority.clone();
        async move {
            let mut purged = u64::MAX;
            for id in majority {
                purged = purged.min(c.status(id).await?.purged_index);
            }
            (purged > follower_last).then_some(purged)
        }
    })
    .await;

    cluster.heal(follower);
    let c = &cluster;
    eventually(Duration::from_secs(15), "the follower to install a snapshot", || async move {
        (c.status(follower).await?.snapshot_index >= purged).then_some(())
    })
    .await;
    // Events after the snapshot exist; a watcher must not be handed them.
    let marker = cluster
        .registrar(majority[0])
        .await
        .register(register("7200", "d", "sip:x@h"))
        .await
        .unwrap()
        .into_inner()
        .meta
        .unwrap()
        .index;
    let c = &cluster;
    eventually(Duration::from_secs(10), "the follower to apply the marker", || async move {
        (c.status(follower).await?.applied_index >= marker).then_some(())
    })
    .await;

    // The stream ends by itself; give it a bounded time, then stop reading.
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while !reader.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if waited.is_err() {
        let _ = stop.send(());
    }
    let (got, ended) = reader.await.expect("reader task");

    // What the follower's watcher should have seen: every event from its
    // first one on, as a node that never installed a snapshot holds them.
    let first = got.first().expect("events before the cut").index;
    let mut reference = Vec::new();
    let mut stream = EventsClient::new(cluster.channel(majority[0]).await)
        .watch(pb::WatchRequest { from_index: first })
        .await
        .expect("watch from the first index at a node of the majority")
        .into_inner();
    while reference.last().is_none_or(|e: &pb::Event| e.index < marker) {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(e))) if e.kind == "leader_changed" => {}
            Ok(Some(Ok(e))) => reference.push(e),
            other => panic!("reference stream ended early after {reference:?}: {other:?}"),
        }
    }
    drop(stream);

    let indexes = |v: &[pb::Event]| v.iter().map(|e| e.index).collect::<Vec<_>>();
    let diverged = got.iter().zip(&reference).position(|(a, b)| a != b);
    assert!(
        diverged.is_none() && got.len() < reference.len(),
        "the watcher skipped events (first difference at position {diverged:?}): \
         got indexes {:?}, the log has {:?}",
        indexes(&got),
        indexes(&reference),
    );
    assert!(got.last().unwrap().index >= before, "saw the writes before the cut: {got:?}");
    let status = ended.expect("the stream must end with an error after the snapshot install");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(status.message().starts_with("compacted"), "{}", status.message());
    cluster.shutdown().await;
}

/// A node stops promptly with a watcher still attached: graceful shutdown
/// waits for open calls, and a Watch never ends by itself, so before, the
/// node's `run()` hung until it was killed. The watcher is then told the
/// node went away (the stream ends or fails; it does not hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_with_a_watch_open() {
    let mut cluster = Cluster::start_with(3, |c| c.gateways.probe_interval_ms = 0).await;
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let victim = cluster.others(leader)[0];
    let mut stream = EventsClient::new(cluster.channel(victim).await)
        .watch(pb::WatchRequest { from_index: 0 })
        .await
        .expect("watch")
        .into_inner();
    // The stream is live: it delivers a registration made after it opened.
    cluster.registrar(leader).await.register(register("7100", "d", "sip:7100@h")).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    assert!(matches!(first, Ok(Some(Ok(_)))), "{first:?}");
    // Panics if the node has not stopped within 10 s.
    cluster.stop_node(victim).await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the watcher was not told the node stopped");
    cluster.shutdown().await;
}
