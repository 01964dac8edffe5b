//! Every node serves the standard gRPC health service and server
//! reflection, so generic tools (grpcurl, grpc_health_probe, load
//! balancers) work against it.

use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use switchboard_tests::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let cluster = Cluster::start(3).await;
    for id in 1..=3 {
        let mut health = HealthClient::new(cluster.channel(id).await);
        let overall =
            health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        assert_eq!(overall.status(), ServingStatus::Serving, "node {id}");
        for svc in
            ["Registrar", "Router", "Gateways", "DialPlan", "Calls", "Events", "Cluster", "Users"]
        {
            let r = health
                .check(HealthCheckRequest { service: format!("switchboard.v1.{svc}") })
                .await
                .unwrap_or_else(|e| panic!("node {id} {svc}: {e:?}"))
                .into_inner();
            assert_eq!(r.status(), ServingStatus::Serving, "node {id} {svc}");
        }
    }

    let mut reflection = ServerReflectionClient::new(cluster.channel(2).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.next().await.expect("a reply").unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply: {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for svc in switchboard_tests::SERVICES {
        assert!(names.iter().any(|n| n == svc), "{svc} not listed: {names:?}");
    }
    cluster.shutdown().await;
}
