//! Bearer tokens and roles through the real gRPC API (issue 11): every
//! client method refused without credentials, with a role too small, with a
//! deleted or an expired token — and what a refused write asked for is not
//! there afterwards. Open while no token exists.

use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::tokens_client::TokensClient;
use switchboard_tests::{eventually, register, Cluster};
use tonic::transport::Channel;
use tonic::{Code, Request};

/// An empty protobuf message: every request type decodes from its (empty)
/// encoding, and any response decodes into it (unknown fields skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

/// Every method of the client services in the proto file, as paths.
fn client_methods() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/proto/switchboard/v1/api.proto");
    let text = std::fs::read_to_string(path).unwrap();
    let mut service = None;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("service ") {
            service = rest.split_whitespace().next().map(str::to_owned);
        } else if let (Some(rest), Some(svc)) = (line.strip_prefix("rpc "), &service) {
            out.push(format!("/switchboard.v1.{svc}/{}", rest.split('(').next().unwrap().trim()));
        }
    }
    out
}

/// The role a method needs, written out here on its own (not read from the
/// node's table): the methods that only read (token lists are admin's).
fn reads_only(path: &str) -> bool {
    if path.starts_with("/switchboard.v1.Tokens/") {
        return false;
    }
    let m = path.rsplit('/').next().unwrap();
    m.starts_with("List")
        || m.starts_with("Get")
        || ["Lookup", "Route", "Watch", "Status"].contains(&m)
}

/// Methods a write token may call beyond the reads.
fn writes(path: &str) -> bool {
    [
        "/switchboard.v1.Registrar/Register",
        "/switchboard.v1.Registrar/Refresh",
        "/switchboard.v1.Registrar/Unregister",
        "/switchboard.v1.Calls/StartCall",
        "/switchboard.v1.Calls/UpdateCall",
        "/switchboard.v1.Calls/EndCall",
        "/switchboard.v1.Gateways/ReportOutcome",
    ]
    .contains(&path)
}

/// Call `path` with an empty request and `token` (if any); the status code.
async fn raw_call(channel: Channel, path: &str, token: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let mut req = Request::new(Empty {});
    req.set_timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<Empty, Empty>::default();
    let path = path.parse().unwrap();
    // Bounded: a streaming method (Watch) let through opens a stream that
    // never ends, which this unary call would wait on for ever.
    match tokio::time::timeout(Duration::from_secs(1), grpc.unary(req, path, codec)).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(s)) => s.code(),
        Err(_) => Code::DeadlineExceeded,
    }
}

fn with<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r.set_timeout(Duration::from_secs(5));
    r
}

async fn create(cluster: &Cluster, at: u64, role: &str, ttl_s: u64, token: Option<&str>) -> String {
    let req = pb::CreateTokenRequest { role: role.into(), name: format!("{role} test"), ttl_s };
    let req = match token {
        Some(t) => with(req, t),
        None => Request::new(req),
    };
    let r = TokensClient::new(cluster.channel(at).await).create_token(req).await.unwrap();
    r.into_inner().token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_needs_a_token_with_the_right_role_once_one_exists() {
    let cluster = Cluster::start(3).await;
    let methods = client_methods();
    assert!(methods.len() >= 30, "{methods:?}");

    // Open: no token needed (a read and a write).
    cluster.registrar(2).await.register(register("1000", "desk", "sip:1000@h")).await.unwrap();

    // The first token, made while open; then every node knows it.
    let admin = create(&cluster, 1, "admin", 0, None).await;
    assert!(admin.starts_with("sbt_"), "{admin}");
    for id in 1..=3 {
        let ch = cluster.channel(id).await;
        eventually(Duration::from_secs(5), "the token reaches every node", || {
            let ch = ch.clone();
            async move {
                (raw_call(ch, "/switchboard.v1.Router/Route", None).await == Code::Unauthenticated)
                    .then_some(())
            }
        })
        .await;
    }
    let read = create(&cluster, 2, "read", 0, Some(&admin)).await;
    let write = create(&cluster, 3, "write", 0, Some(&admin)).await;
    // A token creation with a read token is itself refused.
    let denied = TokensClient::new(cluster.channel(1).await)
        .create_token(with(
            pb::CreateTokenRequest { role: "admin".into(), ..Default::default() },
            &read,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("needs admin"), "{denied:?}");

    // Every method, at every node: without a token, with a garbage one,
    // and with each role.
    let bogus = format!("{}_0000", admin.rsplit_once('_').unwrap().0);
    for at in 1..=3 {
        let ch = cluster.channel(at).await;
        for m in &methods {
            assert_eq!(
                raw_call(ch.clone(), m, None).await,
                Code::Unauthenticated,
                "{m} without a token"
            );
            assert_eq!(
                raw_call(ch.clone(), m, Some(&bogus)).await,
                Code::Unauthenticated,
                "{m} wrong secret"
            );
            let want_read = if reads_only(m) { None } else { Some(Code::PermissionDenied) };
            let want_write =
                if reads_only(m) || writes(m) { None } else { Some(Code::PermissionDenied) };
            for (token, want, role) in [(&read, want_read, "read"), (&write, want_write, "write")] {
                let got = raw_call(ch.clone(), m, Some(token)).await;
                match want {
                    Some(code) => assert_eq!(got, code, "{m} with a {role} token"),
                    // Allowed: whatever the empty request earns, never an auth refusal.
                    None => assert!(
                        !matches!(got, Code::Unauthenticated | Code::PermissionDenied),
                        "{m} with a {role} token: {got:?}"
                    ),
                }
            }
            let got = raw_call(ch.clone(), m, Some(&admin)).await;
            assert!(
                !matches!(got, Code::Unauthenticated | Code::PermissionDenied),
                "{m} admin: {got:?}"
            );
        }
    }

    // Real writes refused for their role change nothing.
    let mut reg = cluster.registrar(1).await;
    let e = reg.register(with(register("2000", "d", "sip:2000@h"), &read)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let mut plan = cluster.dial_plan(2).await;
    let route = pb::DialRoute { pattern: "7@".into(), group: "g".into(), ..Default::default() };
    let e = plan
        .put_route(with(pb::PutRouteRequest { route: Some(route.clone()) }, &write))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = plan.put_route(pb::PutRouteRequest { route: Some(route) }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let lin = pb::Consistency::Linearizable as i32;
    let found = reg
        .lookup(with(pb::LookupRequest { number: "2000".into(), consistency: lin }, &read))
        .await
        .unwrap()
        .into_inner();
    assert!(found.bindings.is_empty(), "a refused register left {found:?}");
    let routes = plan.list_routes(with(pb::ListRoutesRequest { consistency: lin }, &read)).await;
    assert!(routes.unwrap().into_inner().routes.is_empty(), "a refused put_route was applied");
    // The allowed write works.
    reg.register(with(register("2000", "d", "sip:2000@h"), &write)).await.unwrap();

    // A deleted token stops working everywhere; an expired one too.
    let short = create(&cluster, 1, "read", 1, Some(&admin)).await;
    let short_id = short.split('_').nth(1).unwrap().to_owned();
    let read_id = read.split('_').nth(1).unwrap().to_owned();
    let mut tokens = TokensClient::new(cluster.channel(3).await);
    tokens
        .delete_token(with(pb::DeleteTokenRequest { id: read_id.clone() }, &admin))
        .await
        .unwrap();
    for at in 1..=3 {
        let ch = cluster.channel(at).await;
        let read = read.clone();
        eventually(Duration::from_secs(5), "the deletion reaches every node", || {
            let (ch, read) = (ch.clone(), read.clone());
            async move {
                (raw_call(ch, "/switchboard.v1.Router/Route", Some(&read)).await
                    == Code::Unauthenticated)
                    .then_some(())
            }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut route = cluster.router(2).await;
    let e = route
        .route(with(pb::RouteRequest { digits: "1000".into(), ..Default::default() }, &short))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains(&format!("token {short_id} expired")), "{e:?}");

    // Lists never carry secrets; the last admin token stays.
    let listed = tokens
        .list_tokens(with(pb::ListTokensRequest { consistency: lin }, &admin))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.tokens.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "admin, write, short: {ids:?}");
    assert!(!ids.contains(&read_id.as_str()));
    let text = format!("{listed:?}");
    for t in [&admin, &write, &short] {
        assert!(!text.contains(t.rsplit('_').next().unwrap()), "a secret in the list: {text}");
    }
    let admin_id = admin.split('_').nth(1).unwrap().to_owned();
    let e = tokens
        .delete_token(with(pb::DeleteTokenRequest { id: admin_id }, &admin))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    cluster.shutdown().await;
}
