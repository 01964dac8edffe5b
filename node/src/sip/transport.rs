//! SIP over UDP and TCP on one address (RFC 3261 §18): sockets in, bytes
//! to the [`Server`], replies out.
//!
//! Owns: binding, the receive loops, where UDP replies go (the topmost
//! Via's rules: `received`, `rport`), TCP connections (framing, replies on
//! the same connection, CRLF pongs, a connection limit, an idle timeout).
//! REGISTERs wait for a Raft commit, so each is answered by a task of its
//! own and a slow write never holds up INVITEs behind it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use super::framing::{Frame, Framer};
use super::server::{Now, Server, Transport};

/// Receive loops sharing the UDP socket (the machine's cores, at most 4).
const UDP_WORKERS: usize = 2;

/// The bound sockets of one node.
#[derive(Debug)]
pub struct Sockets {
    udp: Option<std::net::UdpSocket>,
    tcp: Option<std::net::TcpListener>,
    local: SocketAddr,
}

impl Sockets {
    /// Bind `addr` for UDP and/or TCP. Both use the same port: with port
    /// 0, TCP takes the port the UDP socket got.
    pub fn bind(addr: SocketAddr, udp: bool, tcp: bool) -> std::io::Result<Sockets> {
        let mut local = addr;
        let udp = if udp {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            local = s.local_addr()?;
            Some(s)
        } else {
            None
        };
        let tcp = if tcp {
            let l = std::net::TcpListener::bind(local)?;
            l.set_nonblocking(true)?;
            local = l.local_addr()?;
            Some(l)
        } else {
            None
        };
        Ok(Sockets { udp, tcp, local })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Serve until `shutdown` completes.
pub async fn serve(
    server: Arc<Server>,
    sockets: Sockets,
    config: crate::config::Sip,
    shutdown: impl Future<Output = ()>,
) {
    let local = sockets.local;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(s) = sockets.udp {
        match UdpSocket::from_std(s) {
            Ok(s) => {
                let s = Arc::new(s);
                for _ in 0..UDP_WORKERS {
                    tasks.spawn(udp_loop(Arc::clone(&server), Arc::clone(&s)));
                }
                info!(%local, "SIP listening on UDP");
            }
            Err(e) => warn!(%local, error = %e, "SIP UDP socket unusable"),
        }
    }
    if let Some(l) = sockets.tcp {
        match TcpListener::from_std(l) {
            Ok(l) => {
                let limit = Arc::new(Semaphore::new(config.tcp_max_connections));
                let idle = Duration::from_secs(config.tcp_idle_timeout_s);
                tasks.spawn(tcp_accept(Arc::clone(&server), l, limit, idle));
                info!(%local, "SIP listening on TCP");
            }
            Err(e) => warn!(%local, error = %e, "SIP TCP listener unusable"),
        }
    }
    shutdown.await;
    tasks.abort_all();
}

async fn udp_loop(server: Arc<Server>, socket: Arc<UdpSocket>) {
    // 64 KiB: the largest datagram; a larger one cannot arrive.
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(2048);
    loop {
        let (n, source) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable from an earlier reply shows up here
                // on some systems; never fatal.
                debug!(error = %e, "SIP UDP receive");
                continue;
            }
        };
        let raw = &buf[..n];
        if raw.iter().all(|&b| b == b'\r' || b == b'\n') {
            continue; // a keep-alive datagram (RFC 5626 §4.4.1)
        }
        out.clear();
        match server.answer_now(raw, source, Transport::Udp, &mut out) {
            Now::Nothing => {}
            Now::Reply => {
                let to = Server::reply_target(raw, source);
                if let Err(e) = socket.send_to(&out, to).await {
                    debug!(%to, error = %e, "SIP UDP send");
                }
            }
            Now::Register => {
                let (server, socket, raw) =
                    (Arc::clone(&server), Arc::clone(&socket), raw.to_vec());
                tokio::spawn(async move {
                    if let Some(reply) = server.register(&raw, source).await {
                        let to = Server::reply_target(&raw, source);
                        if let Err(e) = socket.send_to(&reply, to).await {
                            debug!(%to, error = %e, "SIP UDP send");
                        }
                    }
                });
            }
        }
    }
}

async fn tcp_accept(
    server: Arc<Server>,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    idle: Duration,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pause, don't spin.
                warn!(error = %e, "SIP TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            debug!(%peer, "SIP TCP connection refused: at the connection limit");
            drop(stream);
            continue;
        };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            tcp_connection(server, stream, peer, idle).await;
            drop(permit);
        });
    }
}

async fn tcp_connection(server: Arc<Server>, stream: TcpStream, peer: SocketAddr, idle: Duration) {
    let (mut read, mut write) = stream.into_split();
    // Replies from REGISTER tasks and from the reader share one writer.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let mut framer = Framer::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(2048);
    'conn: loop {
        let n = match tokio::time::timeout(idle, read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) => {
                debug!(%peer, "SIP TCP connection idle: closed");
                break;
            }
            Ok(Ok(n)) => n,
        };
        framer.push(&buf[..n]);
        loop {
            match framer.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Ping)) => {
                    if tx.send(b"\r\n".to_vec()).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(Some(Frame::Message(raw))) => {
                    out.clear();
                    match server.answer_now(&raw, peer, Transport::Tcp, &mut out) {
                        Now::Nothing => {}
                        Now::Reply => {
                            if tx.send(out.clone()).await.is_err() {
                                break 'conn;
                            }
                        }
                        Now::Register => {
                            let (server, tx) = (Arc::clone(&server), tx.clone());
                            tokio::spawn(async move {
                                if let Some(reply) = server.register(&raw, peer).await {
                                    let _ = tx.send(reply).await;
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // The stream cannot be resynchronised: answer 400 when
                    // the head allows it, then close.
                    debug!(%peer, error = %e, "SIP TCP framing error: closing");
                    if let Some(reply) =
                        e.head().and_then(|h| server.reject_head(h, &e.to_string(), peer))
                    {
                        let _ = tx.send(reply).await;
                    }
                    break 'conn;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
