//! The status page's JSON endpoints (`--http`) on a real three-node
//! cluster: `/api/status` gives the exact members, gateways and load of a
//! known state at every node, a stopped member shows as down at once,
//! `/api/events` streams the changes by sequence number, bad requests get
//! 400/404 with a message, and a taken port stops the node at start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_proto::v1 as pb;
use switchboard_tests::{eventually, Cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over HTTP/1.0: (status code, content type, body).
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let fetch = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        let content_type = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
            .unwrap_or_default();
        Some((code, content_type, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await.ok().flatten()
}

async fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let (code, content_type, body) = get(addr, path).await?;
    assert_eq!((code, content_type.as_str()), (200, "application/json"), "{path}: {body}");
    serde_json::from_str(&body).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_shows_a_known_cluster_state_at_every_node() {
    let http: BTreeMap<u64, SocketAddr> =
        (1..=3).map(|id| (id, switchboard_tests::free_addr())).collect();
    let mut cluster = Cluster::start_with(3, |c| {
        c.gateways.probe_interval_ms = 0;
        c.calls.capacity = 50;
        c.http = Some(http[&c.id]);
    })
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let mut gateways = cluster.gateways(leader).await;
    for (id, weight, capacity) in [("gw-a", 60, 10), ("gw-b", 40, 0)] {
        gateways
            .put_gateway(pb::PutGatewayRequest {
                id: id.into(),
                group: "pstn".into(),
                address: format!("127.0.0.1:{}", 15_000 + weight),
                priority: 5,
                weight,
                capacity,
            })
            .await
            .unwrap();
    }
    gateways
        .report_outcome(pb::ReportOutcomeRequest {
            id: "gw-b".into(),
            outcome: "timeout".into(),
            retry_after_s: 600,
            request_id: None,
        })
        .await
        .unwrap();
    let call = cluster
        .calls(leader)
        .await
        .start_call(pb::StartCallRequest {
            call_id: "c1".into(),
            from: "1000".into(),
            to: "95551234".into(),
            node_id: 2,
            gateway: "gw-a".into(),
            request_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .call
        .unwrap();
    assert_eq!(call.owner, 2);

    // Every node answers from its own state; wait until each has applied
    // the call (and sees every member up in the node table).
    for (&id, &addr) in &http {
        let s = eventually(Duration::from_secs(10), "status with the call", || async move {
            let s = get_json(addr, "/api/status").await?;
            let members_up = s["members"].as_array()?.iter().all(|m| m["liveness"] == "up");
            (s["calls"] == 1 && members_up).then_some(s)
        })
        .await;
        assert_eq!(s["node_id"], id);
        assert_eq!(s["leader_id"], leader);
        assert_eq!(s["state"], if id == leader { "leader" } else { "follower" });
        assert_eq!(s["registrations"], 0);
        let members = s["members"].as_array().unwrap();
        assert_eq!(members.len(), 3);
        for (m, want) in members.iter().zip(1u64..) {
            let mut fields: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
            fields.sort_unstable();
            assert_eq!(
                fields,
                [
                    "addr",
                    "applied_index",
                    "calls",
                    "capacity",
                    "down_since_ms",
                    "health",
                    "id",
                    "lag",
                    "leader",
                    "liveness",
                    "matched_index",
                    "reachable",
                    "role",
                    "sip_addr",
                    "standby_calls"
                ]
            );
            assert_eq!(m["id"], want);
            assert_eq!(m["addr"], cluster.nodes[&want].addr.to_string());
            assert_eq!(
                (&m["role"], &m["health"], &m["reachable"], &m["leader"], &m["capacity"]),
                (&json!("voter"), &json!("up"), &json!(true), &json!(want == leader), &json!(50)),
                "{m}"
            );
            assert_eq!(m["calls"], u64::from(want == 2), "{m}");
            assert_eq!(m["standby_calls"], u64::from(want == call.standby), "{m}");
            assert_eq!(m["down_since_ms"], Value::Null);
            assert!(m["applied_index"].as_u64().unwrap() > 0, "{m}");
            // Replication is known on the leader only.
            assert_eq!(m["matched_index"].is_u64(), id == leader, "{m}");
        }
        let gws = s["gateways"].as_array().unwrap();
        assert_eq!(
            gws[0],
            json!({"id": "gw-a", "group": "pstn", "address": "127.0.0.1:15060", "priority": 5,
                   "weight": 60, "status": "in_service", "reason": null, "retry_at_ms": null,
                   "retry_in_ms": null, "attempts": 0, "timeouts": 0, "failures": 0,
                   "calls": 1, "capacity": 10})
        );
        let b = &gws[1];
        assert_eq!(
            (&b["id"], &b["status"], &b["reason"], &b["attempts"], &b["timeouts"], &b["calls"]),
            (
                &json!("gw-b"),
                &json!("out_of_service"),
                &json!("timeout"),
                &json!(1),
                &json!(1),
                &json!(0)
            )
        );
        let retry_in = b["retry_in_ms"].as_u64().unwrap();
        assert!((590_000..=600_000).contains(&retry_in), "retry in {retry_in} ms");
        assert_eq!(
            b["retry_at_ms"].as_u64().unwrap(),
            s["cluster_time_ms"].as_u64().unwrap() + retry_in
        );
    }

    // The events of that state, each once, by sequence number.
    let addr = http[&1];
    let all = eventually(Duration::from_secs(5), "events", || async move {
        let e = get_json(addr, "/api/events?after=0").await?;
        let kinds: Vec<String> = e["events"]
            .as_array()?
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect();
        kinds.contains(&"call_started".to_string()).then_some(e)
    })
    .await;
    let events = all["events"].as_array().unwrap();
    let status = events.iter().find(|e| e["kind"] == "gateway_status").expect("gateway_status");
    assert_eq!(status["key"], "gw-b");
    assert_eq!(status["detail"]["status"]["OutOfService"]["reason"], "Timeout");
    let last = all["last_seq"].as_u64().unwrap();
    assert_eq!(events.last().unwrap()["seq"], last);
    let newer = get_json(addr, &format!("/api/events?after={last}")).await.unwrap();
    assert_eq!(newer["events"], json!([]), "nothing new yet");

    // Errors say what to do.
    let (code, _, body) = get(addr, "/api/events?after=soon").await.unwrap();
    assert_eq!(
        (code, body.as_str()),
        (400, "after=\"soon\" is not a sequence number (a whole number >= 0)\n")
    );
    let (code, _, body) = get(addr, "/api/nothing").await.unwrap();
    assert_eq!(code, 404);
    assert!(body.contains("/api/status"), "{body}");
    let (code, content_type, page) = get(addr, "/").await.unwrap();
    assert_eq!((code, content_type.as_str()), (200, "text/html; charset=utf-8"));
    assert!(page.contains("const INITIAL = {\"node_id\":1,"), "the status is embedded");

    // A stopped member is down on the page of a survivor at once, before
    // the leader's liveness check has committed anything.
    let victim = if leader == 3 { 2 } else { 3 };
    cluster.stop_node(victim).await;
    let survivor = http[&leader];
    let s = get_json(survivor, "/api/status").await.unwrap();
    let m = &s["members"][victim as usize - 1];
    assert_eq!(
        (&m["health"], &m["reachable"], &m["lag"]),
        (&json!("down"), &json!(false), &Value::Null),
        "{m}"
    );
    // Then the leader declares it down in the node table.
    eventually(Duration::from_secs(5), "node table says down", || async move {
        let s = get_json(survivor, "/api/status").await?;
        let m = &s["members"][victim as usize - 1];
        (m["liveness"] == "down" && m["down_since_ms"].is_u64()).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_http_port_is_a_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config =
        switchboard_tests::test_config(1, listener.local_addr().unwrap(), dir.path().join("n1"));
    config.http = Some(http);
    let run = switchboard::run(config, listener, std::future::pending());
    let err = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the node gives up at once")
        .expect_err("the node must not start without its page");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot listen for the status page (http) on {http}: ")),
        "{text}"
    );
    assert!(matches!(err, switchboard::RunError::Http { addr, .. } if addr == http));
}
