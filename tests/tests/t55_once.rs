//! Once-only writes (issue 8.7): a write that carries a request id and is
//! retried — because the client timed out, or its node failed over — is
//! applied once and answers the first outcome, through any node.

use switchboard_proto::v1 as pb;
use switchboard_tests::{register, Cluster};

fn id(client: &str, seq: u64) -> Option<pb::RequestId> {
    Some(pb::RequestId { client: client.into(), seq })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_register_is_applied_once_at_any_node() {
    let cluster = Cluster::start(3).await;
    let mut r = register("5551000", "desk", "sip:desk@127.0.0.1:5060");
    r.request_id = id("proxy-1", 7);
    let first = cluster.registrar(1).await.register(r.clone()).await.unwrap().into_inner();
    // The retry goes to another node (its first node failed over).
    let again = cluster.registrar(2).await.register(r.clone()).await.unwrap().into_inner();
    assert_eq!(again.binding, first.binding, "the first outcome, same generation");
    // A new seq is a new write: a new generation.
    r.request_id = id("proxy-1", 8);
    let next = cluster.registrar(3).await.register(r).await.unwrap().into_inner();
    let (g1, g2) = (first.binding.unwrap().generation, next.binding.unwrap().generation);
    assert!(g2 > g1, "{g2} after {g1}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_start_call_and_report_answer_their_first_outcome() {
    let cluster = Cluster::start(3).await;
    let start = pb::StartCallRequest {
        call_id: "call-1".into(),
        from: "1000".into(),
        to: "2000".into(),
        node_id: 1,
        gateway: String::new(),
        request_id: id("proxy-2", 1),
    };
    let first = cluster.calls(1).await.start_call(start.clone()).await.unwrap().into_inner();
    // Without the id, a second StartCall of the same call is refused ...
    let mut plain = start.clone();
    plain.request_id = None;
    let e = cluster.calls(2).await.start_call(plain).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e}");
    // ... but the retry of the first one answers what the first got.
    let again = cluster.calls(2).await.start_call(start).await.unwrap().into_inner();
    assert_eq!(again.call, first.call);

    cluster
        .gateways(1)
        .await
        .put_gateway(pb::PutGatewayRequest {
            id: "gw".into(),
            group: "pstn".into(),
            address: "127.0.0.1:5099".into(),
            priority: 1,
            weight: 1,
            capacity: 0,
        })
        .await
        .unwrap();
    let report = pb::ReportOutcomeRequest {
        id: "gw".into(),
        outcome: "timeout".into(),
        retry_after_s: 30,
        request_id: id("proxy-2", 2),
    };
    for at in [1, 2, 3] {
        cluster.gateways(at).await.report_outcome(report.clone()).await.unwrap();
    }
    let req = pb::ListGatewaysRequest { consistency: pb::Consistency::Linearizable as i32 };
    let gws = cluster.gateways(3).await.list_gateways(req).await.unwrap().into_inner().gateways;
    assert_eq!(gws[0].timeouts, 1, "three deliveries of one report count once: {:?}", gws[0]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_needs_a_client_and_a_recent_seq() {
    let cluster = Cluster::start(3).await;
    let mut reg = cluster.registrar(1).await;
    let mut r = register("5551001", "desk", "sip:desk@h");
    r.request_id = id("", 1);
    let e = reg.register(r.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    // 65 writes push seq 1 out of the window: it can no longer be deduplicated.
    for seq in 1..=65 {
        r.request_id = id("busy", seq);
        reg.register(r.clone()).await.unwrap();
    }
    r.request_id = id("busy", 1);
    let e = reg.register(r).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("older than"), "{e}");
    cluster.shutdown().await;
}
