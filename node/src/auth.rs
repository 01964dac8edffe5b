//! Who may call what on the client API: bearer tokens with roles.
//!
//! Every gRPC request passes [`AuthLayer`] before any service sees it. The
//! method's path decides what it needs ([`access`]): nothing (the
//! `grpc.health.v1` service, for load balancers and orchestrators; it tells
//! only whether the node serves), a peer (the Raft service: protected by
//! mutual TLS, not by tokens), or a role. With no token in the replicated
//! state the API is open, as etcd is without auth, and every node says so
//! in its log ([`announce`]); once one exists, a call must carry
//! `authorization: Bearer sbt_<id>_<secret>` whose token exists, matches its
//! hash, has not expired (cluster time) and has a role that allows the
//! method. Refusals are UNAUTHENTICATED (no, unknown, wrong or expired
//! token) or PERMISSION_DENIED (a role too small), and nothing runs.
//!
//! The check reads this node's applied state, like a LOCAL read: for a
//! replication delay after a token is created or deleted, a lagging node
//! may still answer by the old table.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchboard_storage::state::tokens::Role;
use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::Status;

use crate::node::Node;

/// What every token starts with; the id and the secret follow, `_`-separated.
pub const TOKEN_PREFIX: &str = "sbt_";

/// SHA-256 of a token's secret part, as stored.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks).
    Public,
    /// Another node (the Raft service; mutual TLS guards it).
    Peer,
    /// A token of at least this role (or an open cluster).
    Needs(Role),
}

/// What the method at `path` (`/package.Service/Method`) needs. A method
/// this table does not know needs `admin`: a new method is closed until
/// someone decides otherwise (a test checks that every method of the
/// proto files is listed).
pub fn access(path: &str) -> Access {
    use Role::{Admin, Read, Write};
    if path.starts_with("/grpc.health.v1.Health/") {
        return Access::Public;
    }
    if path.starts_with("/switchboard.v1.Raft/") {
        return Access::Peer;
    }
    if path.starts_with("/grpc.reflection.") {
        return Access::Needs(Read);
    }
    let Some(method) = path.strip_prefix("/switchboard.v1.") else {
        return Access::Needs(Admin);
    };
    Access::Needs(match method {
        "Registrar/Register" | "Registrar/Refresh" | "Registrar/Unregister" => Write,
        "Registrar/Lookup" | "Registrar/ListRegistrations" => Read,
        "Router/Route" => Read,
        "Gateways/ReportOutcome" => Write,
        "Gateways/ListGateways" => Read,
        "Gateways/PutGateway" | "Gateways/DeleteGateway" => Admin,
        "DialPlan/ListRoutes" => Read,
        "DialPlan/PutRoute" | "DialPlan/DeleteRoute" => Admin,
        "Users/ListUsers" => Read,
        "Users/PutUser" | "Users/DeleteUser" => Admin,
        "Tokens/CreateToken" | "Tokens/ListTokens" | "Tokens/DeleteToken" => Admin,
        "Calls/StartCall" | "Calls/UpdateCall" | "Calls/EndCall" => Write,
        "Calls/GetCall" | "Calls/ListCalls" => Read,
        "Events/Watch" => Read,
        "Cluster/Status" => Read,
        "Cluster/AddNode" | "Cluster/RemoveNode" | "Cluster/DrainNode" | "Cluster/ResumeNode"
        | "Cluster/Snapshot" => Admin,
        _ => Admin,
    })
}

/// The token in an `authorization` header value: `(id, secret)`.
fn parse_bearer(value: &str) -> Result<(&str, &str), &'static str> {
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or("the authorization header is not `Bearer <token>`")?
        .trim();
    let rest = token.strip_prefix(TOKEN_PREFIX).ok_or("not a Switchboard token (sbt_...)")?;
    let (id, secret) = rest.split_once('_').ok_or("malformed token (sbt_<id>_<secret>)")?;
    if id.is_empty() || secret.is_empty() {
        return Err("malformed token (sbt_<id>_<secret>)");
    }
    Ok((id, secret))
}

/// Decide one request: `Ok` to let it through, else the status to answer.
pub fn authorize(node: &Node, path: &str, headers: &http::HeaderMap) -> Result<(), Status> {
    let needed = match access(path) {
        Access::Public | Access::Peer => return Ok(()),
        Access::Needs(role) => role,
    };
    let presented = headers.get("authorization").map(|v| {
        let text = v.to_str().map_err(|_| "the authorization header is not text")?;
        parse_bearer(text).map(|(id, secret)| (id.to_owned(), hash_secret(secret)))
    });
    let now = node.cluster_now();
    node.read(|s, _| {
        if s.tokens.is_empty() {
            return Ok(());
        }
        let (id, hash) = match presented {
            None => {
                return Err(Status::unauthenticated(
                    "this cluster requires a token: send `authorization: Bearer <token>` \
                     (ctl --token or SWITCHBOARD_TOKEN)",
                ))
            }
            Some(Err(why)) => return Err(Status::unauthenticated(why)),
            Some(Ok(p)) => p,
        };
        let Some(token) = s.tokens.get(&id) else {
            return Err(Status::unauthenticated(format!(
                "unknown token {id} (deleted, or from another cluster)"
            )));
        };
        if !bool::from(token.secret_sha256.ct_eq(&hash)) {
            return Err(Status::unauthenticated(format!("token {id}: wrong secret")));
        }
        if !token.is_live(now) {
            return Err(Status::unauthenticated(format!(
                "token {id} expired at {} (cluster time, ms)",
                token.expires_at_ms.unwrap_or(0)
            )));
        }
        if !token.role.allows(needed) {
            return Err(Status::permission_denied(format!(
                "token {id} has role {}; {path} needs {}",
                token.role.label(),
                needed.label()
            )));
        }
        Ok(())
    })
}

/// The tower layer that puts [`authorize`] in front of every service.
#[derive(Clone)]
pub struct AuthLayer {
    node: Node,
}

impl AuthLayer {
    /// Check requests against `node`'s token table.
    pub fn new(node: Node) -> Self {
        AuthLayer { node }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, node: self.node.clone() }
    }
}

/// A service behind [`AuthLayer`].
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    node: Node,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match authorize(&self.node, req.uri().path(), req.headers()) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => {
                metrics::counter!(
                    "switchboard_auth_refused_total",
                    "code" => if status.code() == tonic::Code::PermissionDenied {
                        "permission_denied"
                    } else {
                        "unauthenticated"
                    }
                )
                .increment(1);
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Say in the log whether the client API is open, once the node has caught
/// up at start-up and again whenever that changes, until `stop`.
pub async fn announce(node: Node, mut stop: tokio::sync::watch::Receiver<bool>) {
    node.catch_up().await;
    let mut was_open = None;
    loop {
        let (open, count) = node.read(|s, _| (s.tokens.is_empty(), s.tokens.len()));
        if was_open != Some(open) {
            if open {
                tracing::warn!(
                    "client API is OPEN: no tokens are defined, so anyone who can reach this \
                     port may call every method; create one with `ctl token create --role admin`"
                );
            } else {
                tracing::info!(tokens = count, "client API requires bearer tokens");
            }
            was_open = Some(open);
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_parse_or_say_why_not() {
        assert_eq!(parse_bearer("Bearer sbt_ab12_s3cr3t"), Ok(("ab12", "s3cr3t")));
        assert_eq!(parse_bearer("bearer sbt_ab12_s3cr3t "), Ok(("ab12", "s3cr3t")));
        assert!(parse_bearer("Basic dXNlcg==").unwrap_err().contains("Bearer"));
        assert!(parse_bearer("Bearer abc").unwrap_err().contains("sbt_"));
        assert!(parse_bearer("Bearer sbt_nosecret").unwrap_err().contains("malformed"));
        assert!(parse_bearer("Bearer sbt__x").unwrap_err().contains("malformed"));
    }

    /// Every method of every client service in the proto files has its
    /// own line in [`access`] (none falls to the closed default by
    /// accident), and the Raft service is peers-only.
    #[test]
    fn every_method_of_the_proto_files_is_listed() {
        let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/proto/switchboard/v1/");
        let mut methods = Vec::new();
        for file in ["api.proto", "raft.proto"] {
            let text = std::fs::read_to_string(format!("{proto}{file}")).unwrap();
            let mut service = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().map(str::to_owned);
                } else if let (Some(rest), Some(svc)) = (line.strip_prefix("rpc "), &service) {
                    let name = rest.split('(').next().unwrap().trim();
                    methods.push(format!("/switchboard.v1.{svc}/{name}"));
                }
            }
        }
        assert!(methods.len() > 35, "{methods:?}");
        let listed = include_str!("auth.rs");
        for m in &methods {
            let short = m.trim_start_matches("/switchboard.v1.");
            let expected_listed = !m.starts_with("/switchboard.v1.Raft/");
            assert_eq!(
                listed.contains(&format!("\"{short}\"")),
                expected_listed,
                "{m} must be listed in access() (or be a Raft method)"
            );
            if !expected_listed {
                assert_eq!(access(m), Access::Peer, "{m}");
            }
        }
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Public);
        assert_eq!(access("/switchboard.v1.Router/Route"), Access::Needs(Role::Read));
        assert_eq!(access("/switchboard.v1.Registrar/Register"), Access::Needs(Role::Write));
        assert_eq!(access("/switchboard.v1.Cluster/DrainNode"), Access::Needs(Role::Admin));
        assert_eq!(access("/switchboard.v1.Nope/Nope"), Access::Needs(Role::Admin));
        assert_eq!(access("/other.Svc/M"), Access::Needs(Role::Admin));
    }
}
