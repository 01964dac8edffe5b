//! A follower's client writes travel to the leader in batches: one
//! `ForwardBatch` RPC carries every write that queued up while the previous
//! ones were in flight, instead of one `Forward` RPC each.
//!
//! Why: with clients spread over the nodes, two writes in three arrive at a
//! follower. Measured at 64 clients (docs/bench.md), HTTP/2 and gRPC framing,
//! the socket calls and the thread wake-ups around each RPC were more of the
//! servers' CPU than the fsyncs, and the machine was CPU-bound. The leader
//! hands the writes of a batch to its own batcher together, so they usually
//! share one log entry as well.
//!
//! Same shape as the leader's batcher (`crate::batch`): the first waiting
//! write goes out as soon as one of `max_inflight` slots is free, and
//! whatever queued meanwhile (for the same leader, up to `max_batch`) goes
//! with it; so a lone write is not delayed and batches grow with load.
//! Writes whose caller has stopped waiting are dropped before they are
//! sent. Each write gets the answer it would have got from `Forward`,
//! including the "may or may not take effect" errors when the RPC breaks.
//!
//! A leader without `ForwardBatch` (an older version, during a rolling
//! upgrade) answers UNIMPLEMENTED; the batch is then forwarded one `Forward`
//! per write.

use std::sync::Arc;
use std::time::Duration;

use switchboard_proto::v1::raft_client::RaftClient;
use switchboard_proto::v1::RaftPayload;
use switchboard_storage::codec;
use switchboard_storage::state::{Command, NodeId};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::ApiError;
use crate::node::ForwardReply;
use crate::raft::network::Peers;

/// The leader a write is forwarded to: its id and address.
pub type Leader = (NodeId, String);

type Item = (Leader, Command, oneshot::Sender<ForwardReply>);

/// Handle to the forwarding task.
#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Item>,
}

/// How the forwarding task runs.
pub struct ForwardConfig {
    /// Most writes in one RPC.
    pub max_batch: usize,
    /// Most RPCs in flight at once.
    pub max_inflight: usize,
    /// Deadline of one RPC (the write timeout).
    pub timeout: Duration,
}

impl Forwarder {
    /// Start the forwarding task; it ends when every handle is dropped.
    pub fn spawn(peers: Peers, config: ForwardConfig) -> Forwarder {
        let (tx, rx) = mpsc::channel(config.max_batch * config.max_inflight * 2);
        tokio::spawn(run(peers, rx, config));
        Forwarder { tx }
    }

    /// Forward `command` to `leader` and wait for its answer.
    pub async fn forward(&self, leader: &Leader, command: Command) -> ForwardReply {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((leader.clone(), command, reply))
            .await
            .map_err(|_| ApiError::unavailable("node is shutting down"))?;
        rx.await.map_err(|_| ApiError::unavailable("node is shutting down"))?
    }
}

async fn run(peers: Peers, mut rx: mpsc::Receiver<Item>, config: ForwardConfig) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_inflight));
    // A write for another leader than the batch being gathered waits here
    // and starts the next batch.
    let mut held: Option<Item> = None;
    loop {
        let first = match held.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let leader = first.0.clone();
        let mut batch = vec![first];
        while batch.len() < config.max_batch {
            match rx.try_recv() {
                Ok(item) if item.0 == leader => batch.push(item),
                Ok(item) => {
                    held = Some(item);
                    break;
                }
                Err(_) => break,
            }
        }
        batch.retain(|(_, _, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (peers, config) = (peers.clone(), Arc::clone(&config));
        tokio::spawn(async move {
            let (commands, replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|(_, c, r)| (c, r)).unzip();
            let answers = send(&peers, &leader, commands, config.timeout).await;
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
            drop(slot);
        });
    }
}

/// One answer per command, in order.
async fn send(
    peers: &Peers,
    leader: &Leader,
    commands: Vec<Command>,
    timeout: Duration,
) -> Vec<ForwardReply> {
    let n = commands.len();
    let all = |e: ApiError| vec![Err(e); n];
    let channel = match peers.channel(leader.0, &leader.1) {
        Ok(ch) => ch,
        Err(e) => {
            return all(unavailable(
                leader,
                format!("leader {} address {}: {e}", leader.0, leader.1),
            ))
        }
    };
    let data = match codec::encode(&commands) {
        Ok(d) => d,
        Err(e) => return all(ApiError::Internal(e.to_string())),
    };
    let mut request = tonic::Request::new(RaftPayload { data });
    request.set_timeout(timeout);
    match RaftClient::new(channel.clone()).forward_batch(request).await {
        Ok(r) => match codec::decode::<Vec<ForwardReply>>(&r.into_inner().data) {
            Ok(answers) if answers.len() == n => answers,
            Ok(answers) => all(ApiError::Internal(format!(
                "leader answered {} of {n} forwarded writes",
                answers.len()
            ))),
            Err(e) => all(ApiError::Internal(format!("bad reply from leader: {e}"))),
        },
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            let mut answers = Vec::with_capacity(n);
            for command in &commands {
                answers.push(send_one(&channel, leader, command, timeout).await);
            }
            answers
        }
        Err(s) => all(rpc_error(leader, &s)),
    }
}

/// One write through the older `Forward` RPC.
async fn send_one(
    channel: &tonic::transport::Channel,
    leader: &Leader,
    command: &Command,
    timeout: Duration,
) -> ForwardReply {
    let data = codec::encode(command).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut request = tonic::Request::new(RaftPayload { data });
    request.set_timeout(timeout);
    match RaftClient::new(channel.clone()).forward(request).await {
        Ok(r) => codec::decode::<ForwardReply>(&r.into_inner().data)
            .map_err(|e| ApiError::Internal(format!("bad reply from leader: {e}")))?,
        Err(s) => Err(rpc_error(leader, &s)),
    }
}

fn unavailable(leader: &Leader, message: String) -> ApiError {
    ApiError::Unavailable { message, leader: Some(leader.clone()) }
}

/// What a failed forwarding RPC means for its writes. They may not have
/// reached the leader, or may have been proposed before the connection
/// broke: only a refused connection is certainly harmless to retry.
fn rpc_error(leader: &Leader, s: &tonic::Status) -> ApiError {
    if s.code() == tonic::Code::Unavailable && is_connect_error(s) {
        return unavailable(leader, format!("leader {} unreachable: {}", leader.0, s.message()));
    }
    ApiError::DeadlineExceeded(format!(
        "forwarding to leader {} failed ({:?}: {}); the write may or may not take effect",
        leader.0,
        s.code(),
        s.message()
    ))
}

/// Whether a transport error says the connection was never made.
pub(crate) fn is_connect_error(s: &tonic::Status) -> bool {
    let m = s.message().to_ascii_lowercase();
    m.contains("connect") || m.contains("refused") || m.contains("dns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use switchboard_proto::v1::raft_server::{Raft as RaftRpc, RaftServer};
    use switchboard_proto::v1::{PingRequest, PingResponse, ReadIndexRequest, ReadIndexResponse};
    use switchboard_storage::state::Outcome;
    use tonic::{Request, Response, Status};

    use crate::batch::Written;

    /// A leader stand-in on a real socket: answers each forwarded
    /// `NodeUp { id }` with index = id, over `ForwardBatch` or (as an
    /// older version would) only over `Forward`; counts the RPCs.
    struct FakeLeader {
        batches: bool,
        rpcs: Arc<AtomicUsize>,
    }

    fn answer(command: &Command) -> ForwardReply {
        match command {
            Command::NodeUp { id } => {
                Ok(Written { index: *id, leader_id: 9, outcome: Outcome::Nothing })
            }
            _ => Err(ApiError::Internal("unexpected command".into())),
        }
    }

    fn payload<T: serde::Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
        Ok(Response::new(RaftPayload { data: codec::encode(v).unwrap() }))
    }

    #[tonic::async_trait]
    impl RaftRpc for FakeLeader {
        async fn append_entries(
            &self,
            _: Request<RaftPayload>,
        ) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn vote(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn install_snapshot(
            &self,
            _: Request<RaftPayload>,
        ) -> Result<Response<RaftPayload>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn forward(&self, r: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
            self.rpcs.fetch_add(1, Ordering::SeqCst);
            let command: Command = codec::decode(&r.into_inner().data).unwrap();
            payload(&answer(&command))
        }
        async fn forward_batch(
            &self,
            r: Request<RaftPayload>,
        ) -> Result<Response<RaftPayload>, Status> {
            if !self.batches {
                return Err(Status::unimplemented("no ForwardBatch here"));
            }
            self.rpcs.fetch_add(1, Ordering::SeqCst);
            let commands: Vec<Command> = codec::decode(&r.into_inner().data).unwrap();
            // Slow enough that the writes sent meanwhile queue up.
            tokio::time::sleep(Duration::from_millis(50)).await;
            payload(&commands.iter().map(answer).collect::<Vec<_>>())
        }
        async fn read_index(
            &self,
            _: Request<ReadIndexRequest>,
        ) -> Result<Response<ReadIndexResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    async fn fake_leader(batches: bool) -> (Leader, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rpcs = Arc::new(AtomicUsize::new(0));
        let svc = RaftServer::new(FakeLeader { batches, rpcs: Arc::clone(&rpcs) });
        tokio::spawn(async move {
            let incoming = connections(listener);
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        ((9, addr.to_string()), rpcs)
    }

    /// The listener's connections as the stream tonic serves.
    fn connections(
        listener: tokio::net::TcpListener,
    ) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        tokio_stream::wrappers::TcpListenerStream::new(listener)
    }

    fn forwarder() -> Forwarder {
        let peers = Peers::new(Duration::from_secs(1), "127.0.0.1:1", None);
        let config =
            ForwardConfig { max_batch: 64, max_inflight: 1, timeout: Duration::from_secs(5) };
        Forwarder::spawn(peers, config)
    }

    /// Sends `NodeUp { id: 1..=n }` at once; returns each writer's answer.
    async fn forward_all(f: &Forwarder, leader: &Leader, n: u64) -> Vec<ForwardReply> {
        let mut tasks = Vec::new();
        for id in 1..=n {
            let (f, leader) = (f.clone(), leader.clone());
            tasks.push(tokio::spawn(
                async move { f.forward(&leader, Command::NodeUp { id }).await },
            ));
            // Each write queued before the next is sent.
            tokio::task::yield_now().await;
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_writer_gets_its_own_answer_and_writes_share_rpcs() {
        let (leader, rpcs) = fake_leader(true).await;
        let f = forwarder();
        let answers = forward_all(&f, &leader, 20).await;
        for (id, a) in (1..=20).zip(&answers) {
            assert_eq!(a.as_ref().map(|w| w.index), Ok(id), "writer {id}: {a:?}");
        }
        // One slot: the first write goes alone, the others queue behind it.
        let n = rpcs.load(Ordering::SeqCst);
        assert!((2..20).contains(&n), "{n} RPCs for 20 writes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_without_forward_batch_gets_one_forward_per_write() {
        let (leader, rpcs) = fake_leader(false).await;
        let f = forwarder();
        let answers = forward_all(&f, &leader, 5).await;
        for (id, a) in (1..=5).zip(&answers) {
            assert_eq!(a.as_ref().map(|w| w.index), Ok(id), "writer {id}: {a:?}");
        }
        assert_eq!(rpcs.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_leader_is_unavailable_with_its_hint() {
        // A port nothing listens on: bound, then closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let leader: Leader = (3, addr.to_string());
        let f = forwarder();
        match f.forward(&leader, Command::NodeUp { id: 1 }).await {
            Err(ApiError::Unavailable { leader: Some(hint), .. }) => assert_eq!(hint, leader),
            other => panic!("expected Unavailable with the leader hint, got {other:?}"),
        }
    }
}
