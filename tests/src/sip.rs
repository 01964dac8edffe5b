//! A minimal SIP client for the tests: send bytes over UDP or TCP, read
//! the reply, pick headers out of it. Written separately from the node's
//! parser on purpose (plain string handling), so a parser bug cannot hide
//! itself in both the server and the check.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A reply as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The whole reply.
    pub text: String,
}

impl Reply {
    /// The status code.
    pub fn code(&self) -> u16 {
        self.text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    /// Every value of header `name` (full name, case-insensitive), in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let head = self.text.split("\r\n\r\n").next().unwrap_or("");
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }
}

/// A UDP SIP client on 127.0.0.1.
pub struct Udp {
    socket: UdpSocket,
}

impl Udp {
    /// Bind a client socket.
    pub async fn new() -> Udp {
        Udp { socket: UdpSocket::bind("127.0.0.1:0").await.expect("bind client") }
    }

    /// This client's address (what a Via should name).
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    /// Send `bytes` to `to`.
    pub async fn send(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).await.expect("send");
    }

    /// The next datagram within `wait`, as a reply.
    pub async fn recv(&self, wait: Duration) -> Option<Reply> {
        let mut buf = vec![0u8; 65_536];
        match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(Reply { text: String::from_utf8_lossy(&buf[..n]).into_owned() }),
            _ => None,
        }
    }

    /// Send and wait (5 s) for the reply.
    pub async fn ask(&self, to: SocketAddr, bytes: &[u8]) -> Reply {
        self.send(to, bytes).await;
        self.recv(Duration::from_secs(5)).await.expect("a reply within 5 s")
    }
}

/// A TCP SIP connection.
pub struct Tcp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Tcp {
    /// Connect to `to`.
    pub async fn connect(to: SocketAddr) -> Tcp {
        let stream = TcpStream::connect(to).await.expect("connect");
        Tcp { stream, buf: Vec::new() }
    }

    /// This end's address.
    pub fn addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// Write `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Read until `n` bytes or more are buffered (or `wait` passes), then
    /// take exactly the first `n`.
    pub async fn read_exact(&mut self, n: usize, wait: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// The next reply (head plus Content-Length body) within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<Reply> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let bytes: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return Some(Reply { text: String::from_utf8_lossy(&bytes).into_owned() });
                }
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
    }

    /// Whether the server has closed the connection (within `wait`).
    pub async fn closed(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
                Err(_) => return false,
            }
        }
    }
}

/// A request with the mandatory headers, `extra` headers, and no body.
/// `via` is the client's address and transport (`UDP`/`TCP`).
pub fn request(
    method: &str,
    ruri: &str,
    to: &str,
    call_id: &str,
    cseq: u32,
    via: (&str, SocketAddr),
    extra: &str,
) -> Vec<u8> {
    let (transport, addr) = via;
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {addr};branch=z9hG4bK-{call_id}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:test@127.0.0.1>;tag=t{cseq}\r\n\
         To: <{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}
