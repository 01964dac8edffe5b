//! `switchboard.v1.Tokens`: bearer tokens for the client API. The node
//! that creates a token draws its secret from the OS, replicates only the
//! SHA-256 of it, and answers the whole token once; lists never carry
//! secrets or hashes. Who may call this service is decided before any of
//! it runs (`crate::auth`: admin, or an open cluster).

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::tokens_server::Tokens;
use switchboard_storage::state::tokens::{Role, Token};
use switchboard_storage::state::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::convert::{consistency, meta};
use super::unexpected;
use crate::auth::{hash_secret, TOKEN_PREFIX};
use crate::error::ApiError;
use crate::node::Node;

/// Random bytes in a token's id (public) and in its secret.
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;
/// The longest accepted lifetime: 100 years (keeps `ttl_s * 1000` far from
/// overflow).
const MAX_TTL_S: u64 = 100 * 365 * 24 * 3600;

/// The Tokens service of one node.
pub struct TokensService {
    node: Node,
}

impl TokensService {
    /// Serve token management for `node`.
    pub fn new(node: Node) -> Self {
        TokensService { node }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the OS, or UNAVAILABLE (never a weak fallback).
fn random<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| {
        ApiError::unavailable(format!("no randomness from the OS for a token: {e}"))
    })?;
    Ok(b)
}

fn info(id: &str, t: &Token) -> pb::TokenInfo {
    pb::TokenInfo {
        id: id.to_owned(),
        role: t.role.label().into(),
        name: t.name.clone(),
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms.unwrap_or(0),
    }
}

#[tonic::async_trait]
impl Tokens for TokensService {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let r = req.into_inner();
        let role = Role::parse(&r.role).ok_or_else(|| {
            ApiError::InvalidArgument(format!("role {:?}: expected read, write or admin", r.role))
        })?;
        if r.ttl_s > MAX_TTL_S {
            return Err(ApiError::InvalidArgument(format!(
                "ttl_s {} is more than 100 years; use 0 for no expiry",
                r.ttl_s
            ))
            .into());
        }
        let id = hex(&random::<ID_BYTES>()?);
        let secret = hex(&random::<SECRET_BYTES>()?);
        let command = Command::PutToken {
            id: id.clone(),
            role,
            secret_sha256: hash_secret(&secret),
            name: r.name.clone(),
            ttl_ms: (r.ttl_s > 0).then(|| r.ttl_s * 1000),
        };
        let w = self.node.write(command).await?;
        // From the outcome, not this node's state: a write forwarded to the
        // leader may not have been applied here yet.
        let Outcome::TokenPut { created_at_ms, expires_at_ms, .. } = w.outcome else {
            return Err(unexpected(&w.outcome));
        };
        let stored = pb::TokenInfo {
            id: id.clone(),
            role: role.label().into(),
            name: r.name,
            created_at_ms,
            expires_at_ms: expires_at_ms.unwrap_or(0),
        };
        tracing::info!(%id, role = role.label(), "client API token created");
        Ok(Response::new(pb::CreateTokenResponse {
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
            info: Some(stored),
            meta: meta(&w),
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.node.read_barrier(consistency(req.into_inner().consistency)?).await?;
        Ok(Response::new(self.node.read(|s, _| pb::ListTokensResponse {
            tokens: s.tokens.iter().map(|(id, t)| info(id, t)).collect(),
        })))
    }

    async fn delete_token(
        &self,
        req: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<pb::DeleteTokenResponse>, Status> {
        let id = req.into_inner().id;
        let w = self.node.write(Command::DeleteToken { id: id.clone() }).await?;
        tracing::info!(%id, "client API token deleted");
        Ok(Response::new(pb::DeleteTokenResponse { meta: meta(&w) }))
    }
}
