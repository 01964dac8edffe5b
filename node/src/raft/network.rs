//! The Raft network: openraft's `RaftNetworkFactory` over tonic.
//!
//! With TLS on (see `crate::tls`), channels are `https`: the peer is
//! checked against the cluster CA and this node presents its own
//! certificate, which the peer's Raft service requires.
//!
//! One lazily connected tonic `Channel` per peer address is cached in
//! [`Peers`] and shared by every client openraft asks for (it calls
//! `new_client` once per voter for every read index, so creating channels
//! there would reconnect constantly). A channel reconnects by itself after a
//! peer restarts; openraft's backoff paces retries to an unreachable peer.
//!
//! Payloads are openraft's own messages encoded with the storage codec (see
//! `raft.proto`); the reply carries the handler's whole `Result`, so a
//! remote Raft error comes back as a `RemoteError`, and a transport failure
//! as `Unreachable` (peer down: back off) or `Network` (anything else).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchboard_proto::v1::raft_client::RaftClient;
use switchboard_proto::v1::RaftPayload;
use switchboard_storage::codec;
use switchboard_storage::state::NodeId;
use switchboard_storage::types::TypeConfig;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Cached channels to peers, keyed by node id; a changed address replaces the channel.
#[derive(Clone, Default)]
pub struct Peers {
    inner: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    connect_timeout: Duration,
    /// This node's own advertised address (for the test-only network cuts).
    me: Arc<str>,
    /// Mutual TLS towards peers, when the cluster runs TLS.
    tls: Option<ClientTlsConfig>,
}

/// Why no channel to a peer could be had.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The address does not make an endpoint (or TLS cannot be set up on it).
    #[error("bad peer address: {0}")]
    Address(#[from] tonic::transport::Error),
    /// A test-only network cut (see `failpoint`).
    #[error("network cut by a failpoint")]
    Cut,
}

impl Peers {
    /// A cache whose channels give up connecting after `connect_timeout`;
    /// `me` is this node's advertised address; `tls` (mutual TLS with this
    /// node's identity) makes every channel `https`.
    pub fn new(connect_timeout: Duration, me: &str, tls: Option<ClientTlsConfig>) -> Self {
        Peers { inner: Arc::default(), connect_timeout, me: me.into(), tls }
    }

    /// Whether a test-only failpoint cuts this node off from `addr`.
    pub fn is_cut(&self, addr: &str) -> bool {
        crate::failpoint::is_cut(&self.me, addr)
    }

    /// Whether a test-only failpoint drops log replication to `addr`.
    fn is_replication_cut(&self, addr: &str) -> bool {
        crate::failpoint::is_replication_cut(&self.me, addr)
    }

    /// The channel to `id` at `addr` (`host:port`), created lazily on first use.
    pub fn channel(&self, id: NodeId, addr: &str) -> Result<Channel, PeerError> {
        if self.is_cut(addr) {
            return Err(PeerError::Cut);
        }
        // A std Mutex: held only to look up or insert, never across an await.
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((a, ch)) = map.get(&id) {
            if a == addr {
                return Ok(ch.clone());
            }
        }
        let endpoint = match &self.tls {
            None => Endpoint::from_shared(format!("http://{addr}"))?,
            Some(tls) => {
                Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone())?
            }
        };
        let ch = endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        map.insert(id, (addr.to_owned(), ch.clone()));
        Ok(ch)
    }
}

/// Hands openraft a client per target node.
#[derive(Clone)]
pub struct Network {
    peers: Peers,
}

impl Network {
    /// A network over the given channel cache.
    pub fn new(peers: Peers) -> Self {
        Network { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient { target, addr: node.addr.clone(), peers: self.peers.clone() }
    }
}

/// The Raft RPC client for one peer. The channel is looked up in the cache
/// for every RPC (a map lookup and a clone): openraft keeps a client for as
/// long as its replication stream lives, and a lookup that failed once (a
/// bad address, a test's network cut) must not fail that stream for good.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    peers: Peers,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl PeerClient {
    /// Send `req` through `call` and decode the remote `Result<Resp, E>`.
    async fn rpc<Req, Resp, E, F, Fut>(
        &mut self,
        req: &Req,
        ttl: Duration,
        call: F,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, tonic::Request<RaftPayload>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let client = match self.peers.channel(self.target, &self.addr) {
            Ok(c) => RaftClient::new(c),
            Err(e) => {
                let m = Msg(format!("node {}: {e}", self.target));
                return Err(RPCError::Unreachable(Unreachable::new(&m)));
            }
        };
        let data = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(ttl);
        let reply = call(client, request).await.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => RPCError::Unreachable(
                Unreachable::new(&Msg(format!("node {}: {}", self.target, status.message()))),
            ),
            _ => RPCError::Network(NetworkError::new(&Msg(format!(
                "node {}: {:?}: {}",
                self.target,
                status.code(),
                status.message()
            )))),
        })?;
        let result: Result<Resp, E> = codec::decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        if !rpc.entries.is_empty() && self.peers.is_replication_cut(&self.addr) {
            // Dropped on the way: the sender hears nothing until its
            // deadline (which also paces openraft's retries).
            tokio::time::sleep(option.hard_ttl()).await;
            let m = Msg(format!("node {}: log replication cut by a failpoint", self.target));
            return Err(RPCError::Network(NetworkError::new(&m)));
        }
        self.rpc(&rpc, option.hard_ttl(), |mut c, r| async move { c.append_entries(r).await }).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(&rpc, option.hard_ttl(), |mut c, r| async move { c.install_snapshot(r).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(&rpc, option.hard_ttl(), |mut c, r| async move { c.vote(r).await }).await
    }
}
