//! The Switchboard node: Raft over gRPC, the client API, leader-side tasks
//! and the CLI.
//!
//! # Layout
//!
//! - [`config`]: TOML + flags, defaults in one place, `validate()`.
//! - [`node`]: [`node::Node`], the handle every service uses to write (at
//!   any node: forwarded to the leader) and to read at a consistency level.
//! - [`batch`]: group commit of concurrent writes into one Raft entry.
//! - [`raft`]: openraft's network over tonic and the node-to-node service.
//! - [`grpc`]: the client services (`switchboard.v1`) and the one
//!   error-to-status mapping.
//! - [`leader`]: tasks only the leader runs (policy, expiry sweep).
//! - [`metrics`]: Prometheus exporter.
//! - [`status`]: the status page and its JSON endpoints (`--http`).
//! - [`cli`]: `serve`, `dev` and `ctl`.
//! - [`clock`]: the node's view of time (replicated clock, leader stamps).
//! - [`fatal`]: a Raft core that stopped on its own (a storage error):
//!   refuse everything, report NOT_SERVING, stop the node.
//! - [`health`]: the `grpc.health.v1` services, switched together.
//! - [`tls`]: the `[tls]` files, server and node-to-node TLS, and the
//!   peer-certificate check in front of the node-to-node service.
//! - [`failpoint`]: test-only fault injection (cargo feature `failpoints`).
//!
//! [`run`] starts a node on an already-bound listener and stops it when the
//! shutdown future completes, so tests start whole clusters in-process on
//! port 0.

pub mod auth;
pub mod batch;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod fatal;
pub mod forward;

/// The version `--version` prints; it names the test-only failpoints when
/// they are compiled in, so a harness can tell such a binary apart.
#[cfg(feature = "failpoints")]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (failpoints)");
/// The version `--version` prints.
#[cfg(not(feature = "failpoints"))]
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub mod grpc;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod sip;
pub mod status;
pub mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::BasicNode;
use switchboard_proto::v1::calls_server::CallsServer;
use switchboard_proto::v1::cluster_server::ClusterServer;
use switchboard_proto::v1::dial_plan_server::DialPlanServer;
use switchboard_proto::v1::events_server::EventsServer;
use switchboard_proto::v1::gateways_server::GatewaysServer;
use switchboard_proto::v1::raft_server::RaftServer;
use switchboard_proto::v1::registrar_server::RegistrarServer;
use switchboard_proto::v1::router_server::RouterServer;
use switchboard_proto::v1::tokens_server::TokensServer;
use switchboard_proto::v1::users_server::UsersServer;
use switchboard_storage::state::Command;
use switchboard_storage::types::Raft;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::node::Node;
use crate::raft::network::{Network, Peers};

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be opened (corrupt, not ours, unreadable).
    #[error("cannot open data directory {path}: {source}")]
    Storage {
        /// The data directory.
        path: std::path::PathBuf,
        /// Why.
        source: switchboard_storage::OpenError,
    },
    /// Opening the data directory did not finish in time.
    #[error(
        "opening data directory {path} did not finish within {} s: the disk or file \
         system is not responding (storage.open_timeout_s)",
        limit.as_secs()
    )]
    StorageStuck {
        /// The data directory.
        path: std::path::PathBuf,
        /// The limit that passed.
        limit: Duration,
    },
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
    /// Raft stopped while the node was running (a storage error); the node
    /// refused requests for a moment and stopped.
    #[error("raft stopped: {0}")]
    RaftStopped(String),
    /// The TLS files are missing, unreadable or unusable (the message
    /// names the file and the setting).
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The status page address could not be bound.
    #[error("cannot listen for the status page (http) on {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The SIP address could not be bound.
    #[error("cannot listen for SIP on {addr}: {source}")]
    Sip {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Largest gRPC message accepted or sent (snapshot chunks, big lists).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How long a stopping node waits for open calls to finish (writes are
/// bounded by their own 5 s timeout) before it closes them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(6);

/// Run a node until `shutdown` completes.
///
/// `listener` is the already-bound gRPC listener (clients and peers). On an
/// empty data directory with `initial_cluster` set, the node initialises the
/// cluster with those members (every listed node may do so: the same
/// membership is proposed by all); on restart the existing log decides.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    let sip = match config.sip.listen {
        Some(addr) => Some(
            sip::transport::Sockets::bind(addr, config.sip.udp, config.sip.tcp)
                .map_err(|source| RunError::Sip { addr, source })?,
        ),
        None => None,
    };
    run_with_sip(config, listener, sip, shutdown).await
}

/// [`run`] with the SIP sockets already bound (tests bind port 0), or
/// without SIP when `sip` is `None`.
pub async fn run_with_sip(
    mut config: Config,
    listener: TcpListener,
    sip: Option<sip::transport::Sockets>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate()?;
    // Before the data directory: a bad certificate is refused at once.
    let tls = tls::NodeTls::load(&config.tls)?;
    // The address actually bound is the one the node table advertises.
    config.sip.listen = sip.as_ref().map(|s| s.local_addr());
    // Bound before anything else starts, so that a taken port is a clear
    // startup error instead of a node that runs without its page.
    let http = match config.http {
        Some(addr) => {
            Some(TcpListener::bind(addr).await.map_err(|source| RunError::Http { addr, source })?)
        }
        None => None,
    };
    let config = Arc::new(config);
    let raft_config = Arc::new(config.openraft()?);
    let data = config.data.clone();
    let io_limit = Duration::from_millis(config.storage.io_timeout_ms);
    let open_limit = Duration::from_secs(config.storage.open_timeout_s);
    // Bounded like every later storage call: sled can block for ever on a
    // file system that failed under it, and a node that neither starts nor
    // says why is the worst outcome. (The blocking thread cannot be
    // cancelled; the process exits with the error.)
    let opening =
        tokio::task::spawn_blocking(move || switchboard_storage::open_with(&data, io_limit));
    let (log_store, sm_store) = tokio::time::timeout(open_limit, opening)
        .await
        .map_err(|_| RunError::StorageStuck { path: config.data.clone(), limit: open_limit })?
        .map_err(|e| RunError::Raft(format!("storage open task: {e}")))?
        .map_err(|source| RunError::Storage { path: config.data.clone(), source })?;
    // What this node had committed before it stopped: it serves nothing
    // until it has re-applied that much, so that its local reads never go
    // back in time across a restart.
    let mut log_store = log_store;
    let committed = openraft::storage::RaftLogStorage::read_committed(&mut log_store)
        .await
        .map_err(|e| RunError::Raft(format!("reading the committed index: {e}")))?;
    let reader = sm_store.reader();
    let feed = sm_store.feed();
    let status_feed = std::sync::Arc::clone(&feed);
    let peers = Peers::new(
        Duration::from_millis(config.raft.rpc_timeout_ms),
        &config.advertise_addr(),
        tls.as_ref().map(tls::NodeTls::peer_client),
    );
    let raft = Raft::new(config.id, raft_config, Network::new(peers.clone()), log_store, sm_store)
        .await
        .map_err(|e| RunError::Raft(e.to_string()))?;
    let node = Node::new(Arc::clone(&config), raft.clone(), reader, peers);
    info!(id = config.id, addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "node starting");
    if let Some(c) = committed {
        raft.wait(Some(Duration::from_secs(300)))
            .applied_index_at_least(Some(c.index), "re-apply the committed log")
            .await
            .map_err(|e| RunError::Raft(format!("re-applying the log up to {}: {e}", c.index)))?;
    }

    bootstrap(&config, &raft).await?;

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health::set_all(&health_reporter, tonic_health::ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(switchboard_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Raft(format!("reflection: {e}")))?;

    let (stop_tasks, tasks_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(register_self(node.clone(), tasks_stopped.clone()));
    {
        let node = node.clone();
        let mut stop = tasks_stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = node.catch_up() => {}
                _ = stop.changed() => {}
            }
        });
    }
    tokio::spawn(leader::run(node.clone(), tasks_stopped.clone()));
    tokio::spawn(auth::announce(node.clone(), tasks_stopped.clone()));
    if let Some(addr) = config.metrics {
        metrics::install(addr, node.clone(), tasks_stopped.clone());
    }
    if let Some(listener) = http {
        status::spawn(listener, node.clone(), status_feed, tasks_stopped.clone());
    }
    // After the metrics recorder is installed: the SIP counters are
    // resolved once, at construction.
    if let Some(sockets) = sip {
        let server = Arc::new(sip::server::Server::new(node.clone()));
        let mut stop = tasks_stopped.clone();
        tokio::spawn(sip::transport::serve(server, sockets, config.sip.clone(), async move {
            let _ = stop.changed().await;
        }));
    }

    macro_rules! svc {
        ($server:ident, $svc:expr) => {
            $server::new($svc)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE)
        };
    }
    // The server also stops when Raft has stopped (see `fatal`); a dropped
    // sender is not a stop.
    let (stop_server, server_stop) = tokio::sync::oneshot::channel::<()>();
    let stopping = node.clone();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown => {}
            Ok(()) = server_stop => {}
        }
        stopping.begin_stopping();
    };
    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.server())?;
    }
    // Every node-to-node RPC first passes the peer-certificate check.
    let raft_service = tonic::service::interceptor::InterceptedService::new(
        svc!(RaftServer, raft::service::RaftService::new(node.clone())),
        tls::PeerAuth::new(tls.is_some()),
    );
    let server = builder
        // Bearer tokens and roles, before any service runs (see `auth`).
        .layer(auth::AuthLayer::new(node.clone()))
        .add_service(raft_service)
        .add_service(svc!(RegistrarServer, grpc::registrar::RegistrarService::new(node.clone())))
        .add_service(svc!(RouterServer, grpc::router::RouterService::new(node.clone())))
        .add_service(svc!(GatewaysServer, grpc::gateways::GatewaysService::new(node.clone())))
        .add_service(svc!(DialPlanServer, grpc::dialplan::DialPlanService::new(node.clone())))
        .add_service(svc!(CallsServer, grpc::calls::CallsService::new(node.clone())))
        .add_service(svc!(ClusterServer, grpc::cluster::ClusterService::new(node.clone())))
        .add_service(svc!(UsersServer, grpc::users::UsersService::new(node.clone())))
        .add_service(svc!(TokensServer, grpc::tokens::TokensService::new(node.clone())))
        .add_service(svc!(EventsServer, grpc::events::EventsService::new(node.clone(), feed)))
        .add_service(health)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming(listener), shutdown);
    // Graceful shutdown waits for every open call and connection; a client
    // that stops reading would hold the node up for ever. Give them
    // SHUTDOWN_GRACE once the stop has begun, then close what is left.
    let node_stopping = node.clone();
    let server = async move {
        tokio::pin!(server);
        tokio::select! {
            served = &mut server => served,
            () = async {
                node_stopping.stopping().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                warn!(
                    "calls still open {} s after the stop began; closing them",
                    SHUTDOWN_GRACE.as_secs()
                );
                Ok(())
            }
        }
    };
    let (served, raft_stopped) =
        fatal::serve_until_raft_stops(server, stop_server, &raft, &health_reporter).await;
    let _ = stop_tasks.send(true);
    info!(id = config.id, "node stopping");
    if let Err(e) = raft.shutdown().await {
        warn!(error = %e, "raft shutdown");
    }
    if let Some(cause) = raft_stopped {
        return Err(RunError::RaftStopped(cause));
    }
    served?;
    Ok(())
}

/// Initialise the cluster on a fresh data directory when `initial_cluster` is set.
async fn bootstrap(config: &Config, raft: &Raft) -> Result<(), RunError> {
    let Some(members) = config.initial_members()? else {
        return Ok(());
    };
    if raft.is_initialized().await.map_err(|e| RunError::Raft(e.to_string()))? {
        info!("data directory holds a cluster already; initial_cluster ignored");
        return Ok(());
    }
    let members: BTreeMap<_, _> =
        members.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
    match raft.initialize(members).await {
        Ok(()) => info!("cluster initialised from initial_cluster"),
        // Another member's initialisation reached us first: fine.
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
            info!(reason = %e, "cluster already initialised")
        }
        Err(e) => return Err(RunError::Raft(format!("initialize: {e}"))),
    }
    Ok(())
}

/// Record this node (address, SIP address, capacity) in the replicated node
/// table, retrying until a leader accepts it.
async fn register_self(node: Node, mut stop: tokio::sync::watch::Receiver<bool>) {
    let c = node.config();
    let command = Command::PutNode {
        id: node.id(),
        grpc_addr: c.advertise_addr(),
        sip_addr: c.sip.listen.map(|a| a.to_string()).unwrap_or_default(),
        capacity: c.calls.capacity,
    };
    loop {
        let current = node.read(|s, _| s.nodes.get(node.id()).cloned());
        let up_to_date = current.is_some_and(|n| {
            Command::PutNode {
                id: n.id,
                grpc_addr: n.grpc_addr,
                sip_addr: n.sip_addr,
                capacity: n.capacity,
            } == command
        });
        if up_to_date {
            return;
        }
        match node.write(command.clone()).await {
            Ok(_) => {
                info!("registered in the node table");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "node registration will be retried"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The connections the gRPC server serves, as accepted from `listener`,
/// with `TCP_NODELAY` set. tonic's `Server::tcp_nodelay` applies only to
/// listeners tonic binds itself, not to an incoming stream we hand it; left
/// alone, the server's replies (to clients, and a follower's answers to the
/// leader's AppendEntries) sat in Nagle's buffer until the peer's delayed
/// ACK, up to 40 ms: the single-client write stalls of issue 10.
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

#[cfg(test)]
mod incoming_tests {
    use tokio_stream::StreamExt;

    /// Replies (to clients, and followers' AppendEntries answers to the
    /// leader) are small writes that must not wait for Nagle's algorithm to
    /// meet the peer's delayed ACK (up to 40 ms on Linux).
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = Box::pin(super::incoming(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = conns.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap(), "an accepted connection has Nagle's algorithm on");
    }
}
