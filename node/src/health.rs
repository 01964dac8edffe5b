//! `grpc.health.v1`: which services a node reports on, switched together.
//!
//! Owns the list of reported services (the whole server, `""`, and every
//! client service) so that start-up (SERVING) and a stopped Raft
//! (NOT_SERVING, see [`crate::fatal`]) cannot disagree about it. Does not
//! own the health server itself (`tonic_health`).

use switchboard_proto::v1::calls_server::CallsServer;
use switchboard_proto::v1::cluster_server::ClusterServer;
use switchboard_proto::v1::dial_plan_server::DialPlanServer;
use switchboard_proto::v1::events_server::EventsServer;
use switchboard_proto::v1::gateways_server::GatewaysServer;
use switchboard_proto::v1::registrar_server::RegistrarServer;
use switchboard_proto::v1::router_server::RouterServer;
use switchboard_proto::v1::users_server::UsersServer;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::grpc;

/// Every service name the health service reports on; `""` is the server as
/// a whole (what probes ask for by default).
pub const SERVICES: [&str; 9] = [
    "",
    <RegistrarServer<grpc::registrar::RegistrarService> as NamedService>::NAME,
    <RouterServer<grpc::router::RouterService> as NamedService>::NAME,
    <GatewaysServer<grpc::gateways::GatewaysService> as NamedService>::NAME,
    <DialPlanServer<grpc::dialplan::DialPlanService> as NamedService>::NAME,
    <CallsServer<grpc::calls::CallsService> as NamedService>::NAME,
    <EventsServer<grpc::events::EventsService> as NamedService>::NAME,
    <ClusterServer<grpc::cluster::ClusterService> as NamedService>::NAME,
    <UsersServer<grpc::users::UsersService> as NamedService>::NAME,
];

/// Report `status` for every service in [`SERVICES`].
pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}
