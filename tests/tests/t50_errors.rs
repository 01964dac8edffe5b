//! Errors through the API: CAS conflicts, malformed requests, and a
//! corrupted data directory.

use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_tests::{register, test_config, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_conflict_is_failed_precondition() {
    let cluster = Cluster::start(3).await;
    let mut calls = cluster.calls(2).await;
    let call = calls
        .start_call(pb::StartCallRequest {
            call_id: "cas-1".into(),
            from: "1000".into(),
            to: "2000".into(),
            node_id: 0,
            gateway: String::new(),
            request_id: None,
        })
        .await
        .expect("start")
        .into_inner()
        .call
        .unwrap();
    assert_eq!(call.version, 1);
    let update = |v| pb::UpdateCallRequest {
        call_id: "cas-1".into(),
        state: "ringing".into(),
        expected_version: v,
        request_id: None,
    };
    let ok = calls.update_call(update(1)).await.expect("cas at v1").into_inner().call.unwrap();
    assert_eq!((ok.state.as_str(), ok.version), ("ringing", 2));
    let err = calls.update_call(update(1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("expected 1, found 2"), "{}", err.message());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_argument() {
    let cluster = Cluster::start(3).await;
    let mut reg = cluster.registrar(1).await;
    for bad in [
        register("", "d", "sip:x@h"),
        register("12ab", "d", "sip:x@h"),
        register("1000", "d", ""),
        register("1000", "d", "sip:x@h\r\nVia: evil"),
        pb::RegisterRequest { q: 5000, ..register("1000", "d", "sip:x@h") },
    ] {
        let err = reg.register(bad.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}: {err:?}");
    }
    let err = reg
        .lookup(pb::LookupRequest { number: "not a number".into(), consistency: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err =
        reg.lookup(pb::LookupRequest { number: "1000".into(), consistency: 7 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = cluster
        .router(2)
        .await
        .route(pb::RouteRequest { digits: "".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = cluster
        .dial_plan(3)
        .await
        .put_route(pb::PutRouteRequest {
            route: Some(pb::DialRoute {
                pattern: "9@9".into(),
                priority: 0,
                group: "pstn".into(),
                strip: 0,
                prefix: String::new(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("@ only at the end"), "{}", err.message());
    let err = cluster
        .calls(1)
        .await
        .update_call(pb::UpdateCallRequest {
            call_id: "c".into(),
            state: "flying".into(),
            expected_version: 1,
            request_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = cluster
        .gateways(1)
        .await
        .report_outcome(pb::ReportOutcomeRequest {
            id: "gw".into(),
            outcome: "meh".into(),
            retry_after_s: 0,
            request_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Unknown things are NOT_FOUND.
    let err = cluster
        .calls(1)
        .await
        .get_call(pb::GetCallRequest { call_id: "nope".into(), consistency: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_data_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that has something in it but is not a Switchboard database.
    let data = dir.path().join("node1");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("db"), vec![0xA5u8; 4096]).unwrap();
    std::fs::write(data.join("conf"), b"this is not a sled configuration file at all").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = test_config(1, addr, data.clone());
    config.initial_cluster = Some(format!("1={addr}"));
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        switchboard::run(config, listener, std::future::pending()),
    )
    .await
    .expect("refuses promptly instead of hanging");
    let err = result.expect_err("must not start on a corrupted data directory");
    let msg = err.to_string();
    assert!(msg.contains(&data.display().to_string()), "names the directory: {msg}");
    assert!(matches!(err, switchboard::RunError::Storage { .. }), "{err:?}");
    // Nothing was reset: the garbage is still there for the operator to inspect.
    assert_eq!(std::fs::read(data.join("db")).unwrap(), vec![0xA5u8; 4096]);
}
