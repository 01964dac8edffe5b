//! Talking to the cluster: endpoint parsing, connect and request time-outs,
//! fail-over from one endpoint to the next, and turning a gRPC status into
//! the one-line error `ctl` prints.
//!
//! Fail-over rule: a connection failure or an `UNAVAILABLE` answer moves on
//! to the next endpoint; an `UNAVAILABLE` carrying a leader address
//! (`x-leader-addr`) puts that address first. Every other answer, including
//! a time-out, is final: a write that timed out may have been applied, so
//! sending it again elsewhere could apply it twice.

use std::collections::VecDeque;
use std::future::Future;
use std::net::Ipv6Addr;
use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::grpc::error::LEADER_ADDR;

/// Longest wait for one endpoint's TCP connection (capped by `--timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest response accepted; the server allows the same (big lists).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Check one `host:port` endpoint; the trimmed endpoint on success.
///
/// Hosts are names or IPv4 addresses, or IPv6 addresses in brackets. No
/// scheme: the client speaks plain-text HTTP/2, or TLS with `--tls-ca`.
pub fn parse_endpoint(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty endpoint; expected host:port".into());
    }
    if s.contains("://") {
        return Err(format!("{s:?}: expected host:port without a scheme"));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not host:port (the port is missing)"));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("{s:?}: the port must be a number in 1..=65535")),
    }
    if host.is_empty() {
        return Err(format!("{s:?} is not host:port (the host is missing)"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ok = inner.strip_suffix(']').is_some_and(|a| a.parse::<Ipv6Addr>().is_ok());
        if !ok {
            return Err(format!("{s:?}: {host} is not an IPv6 address"));
        }
    } else if host.contains(':') {
        return Err(format!(
            "{s:?} is not host:port (write IPv6 addresses in brackets: [::1]:7001)"
        ));
    } else if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err(format!("{s:?}: {host:?} is not a host name or address"));
    }
    // Last word to the URI parser the connection will use.
    Endpoint::from_shared(format!("http://{s}"))
        .map_err(|e| format!("{s:?} is not a usable address: {}", error_chain(&e)))?;
    Ok(s.to_owned())
}

/// The endpoints to try and the time-outs to apply.
#[derive(Debug, Clone)]
pub struct Conn {
    endpoints: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    /// Server-auth TLS (`--tls-ca`); plain text when `None`.
    tls: Option<ClientTlsConfig>,
    /// `Bearer <token>`, sent with every request when set.
    bearer: Option<tonic::metadata::AsciiMetadataValue>,
}

/// Check a `--token` value: a Switchboard token (`sbt_...`) that can travel
/// in a header. The token itself is returned unchanged.
pub fn parse_token(raw: &str) -> Result<String, String> {
    let t = raw.trim();
    if !t.starts_with(crate::auth::TOKEN_PREFIX) {
        return Err(
            "not a Switchboard token (they start with sbt_; `ctl token create` makes one)".into()
        );
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token is printable ASCII without spaces".into());
    }
    Ok(t.to_owned())
}

/// Added to a plain-text connection the node closed at once: what a node
/// serving TLS does with a client that does not speak it.
const TLS_HINT: &str =
    "the node closed the connection; if it serves TLS, pass --tls-ca FILE (or set SWITCHBOARD_TLS_CA)";

impl Conn {
    /// Try `endpoints` (already checked host:port) in order, each request
    /// limited to `timeout`.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Self {
        Conn {
            endpoints,
            timeout,
            connect_timeout: timeout.min(CONNECT_TIMEOUT),
            tls: None,
            bearer: None,
        }
    }

    /// Connect with TLS, checking the nodes' certificates as `tls` says.
    pub fn with_tls(self, tls: Option<ClientTlsConfig>) -> Self {
        Conn { tls, ..self }
    }

    /// Send `token` (checked by [`parse_token`]) with every request.
    pub fn with_token(mut self, token: Option<&str>) -> anyhow::Result<Self> {
        self.bearer = token
            .map(|t| format!("Bearer {t}").parse())
            .transpose()
            .map_err(|_| anyhow::anyhow!("the token cannot be sent in a header"))?;
        Ok(self)
    }

    /// Put the token, if any, on `request`.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(b) = &self.bearer {
            request.metadata_mut().insert("authorization", b.clone());
        }
    }

    /// The same time-outs, but only `addr` (no fail-over beyond its hints).
    pub fn only(&self, addr: String) -> Self {
        Conn { endpoints: vec![addr], ..self.clone() }
    }

    /// Run one call with fail-over. `rpc` gets a fresh channel and the
    /// request time-out (unary calls set it on the request so the server
    /// knows the deadline; streaming calls must not). The whole answer of a
    /// unary call, or the opening of a stream, must arrive within the
    /// time-out.
    pub async fn call<T, F, Fut>(&self, mut rpc: F) -> anyhow::Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut queue: VecDeque<String> = self.endpoints.iter().cloned().collect();
        let mut tried: Vec<String> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        while let Some(addr) = queue.pop_front() {
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            let channel = match self.connect(&addr).await {
                Ok(channel) => channel,
                Err(why) => {
                    failures.push(format!("{addr}: cannot connect: {why}"));
                    continue;
                }
            };
            // The request carries the same limit as grpc-timeout, and
            // tonic's channel enforces it too: whichever fires first, the
            // answer is the same.
            match tokio::time::timeout(self.timeout, rpc(channel, self.timeout)).await {
                Err(_) => return Err(self.no_answer(&addr)),
                Ok(Err(status)) if timed_out(&status) => return Err(self.no_answer(&addr)),
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(status)) if status.code() == Code::Unavailable => {
                    if let Some(leader) = leader_hint(&status) {
                        if !tried.contains(&leader) {
                            queue.retain(|a| *a != leader);
                            queue.push_front(leader);
                        }
                    }
                    let hint = if self.tls.is_none() && closed_at_once(&status) {
                        format!(" ({TLS_HINT})")
                    } else {
                        String::new()
                    };
                    failures.push(format!("{addr}: {}{hint}", describe(&status)));
                }
                Ok(Err(status)) if self.tls.is_none() && closed_at_once(&status) => {
                    anyhow::bail!("{addr}: {}: {TLS_HINT}", describe(&status))
                }
                Ok(Err(status)) => anyhow::bail!("{}", describe(&status)),
            }
        }
        if failures.is_empty() {
            anyhow::bail!("no endpoints to try");
        }
        anyhow::bail!("unavailable: no endpoint answered: {}", failures.join("; "))
    }

    /// The error of a request that `addr` did not answer in time.
    fn no_answer(&self, addr: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "deadline exceeded: no answer from {addr} within {:?} (a write may or may not have been applied)",
            self.timeout
        )
    }

    /// Open a channel to `addr`, within the connect time-out.
    async fn connect(&self, addr: &str) -> Result<Channel, String> {
        let endpoint = match &self.tls {
            None => Endpoint::from_shared(format!("http://{addr}")),
            Some(tls) => Endpoint::from_shared(format!("https://{addr}"))
                .and_then(|e| e.tls_config(tls.clone())),
        };
        let endpoint = endpoint
            .map_err(|e| error_chain(&e))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        match tokio::time::timeout(self.connect_timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            // What rustls reports when the other side answers a TLS
            // hello with something that is not TLS (a plain-text node).
            Ok(Err(e)) if self.tls.is_some() && error_chain(&e).contains("InvalidContentType") => {
                Err(format!("{} (the node does not speak TLS; drop --tls-ca?)", error_chain(&e)))
            }
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("timed out after {:?}", self.connect_timeout)),
        }
    }
}

/// Whether `status` is the transport's report of a connection the server
/// closed before answering, as opposed to an answer from the server. A TLS
/// node facing plain text shows up, depending on timing, as a closed
/// connection (`CANCELLED`, `UNKNOWN`, `UNAVAILABLE`) or as its TLS alert
/// read as a broken HTTP/2 frame (`INTERNAL`).
fn closed_at_once(status: &Status) -> bool {
    let transport = std::error::Error::source(status)
        .is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some());
    transport
        && matches!(
            status.code(),
            Code::Cancelled | Code::Unknown | Code::Unavailable | Code::Internal
        )
}

/// Whether `status` is tonic's own time limit expiring (a `CANCELLED`
/// "Timeout expired" whose causes hold [`tonic::TimeoutExpired`]), not
/// anything the node said or did.
fn timed_out(status: &Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(e) = next {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The leader address attached to an `UNAVAILABLE`, if usable.
fn leader_hint(status: &Status) -> Option<String> {
    let addr = status.metadata().get(LEADER_ADDR)?.to_str().ok()?;
    parse_endpoint(addr).ok()
}

/// A gRPC code in words, as the error line starts with it.
pub fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A status as one line: `<code in words>: <message>[: <cause>]`.
pub fn describe(status: &Status) -> String {
    let words = code_words(status.code());
    let mut text = one_line(status.message());
    if let Some(source) = std::error::Error::source(status) {
        let cause = error_chain(source);
        if !text.contains(&cause) {
            text = if text.is_empty() { cause } else { format!("{text}: {cause}") };
        }
    }
    if status.code() == Code::Unimplemented && text.is_empty() {
        text = "the server does not offer this call".into();
    }
    if text.is_empty() {
        words.to_owned()
    } else if text.to_ascii_lowercase().starts_with(words) {
        // The server's message names the code already ("internal error: ...").
        text
    } else {
        format!("{words}: {text}")
    }
}

/// An error and its causes as one line, `a: b: c`, repeats dropped.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = one_line(&err.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// `s` with control characters (newlines included) replaced by spaces.
pub fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::v1 as pb;

    #[test]
    fn endpoints_are_host_port() {
        assert_eq!(parse_endpoint(" 127.0.0.1:7001 ").unwrap(), "127.0.0.1:7001");
        assert!(parse_endpoint("node-1.example:7001").is_ok());
        assert!(parse_endpoint("[::1]:7001").is_ok());
        for bad in [
            "",
            "7001",
            "host",
            "host:",
            ":7001",
            "host:0",
            "host:65536",
            "host:x",
            "http://host:7001",
            "::1:7001",
            "[::1:7001",
            "[zz]:7001",
            "a b:7001",
            "user@host:7001",
            "host/path:7001",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn statuses_read_as_one_line_with_the_code_in_words() {
        assert_eq!(describe(&Status::not_found("no call \"c9\"")), "not found: no call \"c9\"");
        assert_eq!(describe(&Status::internal("internal error: disk")), "internal error: disk");
        assert_eq!(
            describe(&Status::unimplemented("")),
            "unimplemented: the server does not offer this call"
        );
        assert_eq!(describe(&Status::failed_precondition("a\nb")), "failed precondition: a b");
        assert_eq!(describe(&Status::unavailable("")), "unavailable");
    }

    #[test]
    fn the_leader_hint_is_read_from_metadata() {
        let mut s = Status::unavailable("not the leader");
        assert_eq!(leader_hint(&s), None);
        s.metadata_mut().insert(LEADER_ADDR, "127.0.0.1:7003".parse().unwrap());
        assert_eq!(leader_hint(&s).as_deref(), Some("127.0.0.1:7003"));
        let mut s = Status::unavailable("not the leader");
        s.metadata_mut().insert(LEADER_ADDR, "garbage".parse().unwrap());
        assert_eq!(leader_hint(&s), None);
    }

    #[tokio::test]
    async fn unreachable_endpoints_fail_over_then_give_one_error() {
        // Port 1 on localhost: nothing listens there, the connect is refused.
        let conn =
            Conn::new(vec!["127.0.0.1:1".into(), "127.0.0.1:1".into()], Duration::from_secs(2));
        let mut calls = 0;
        let err = conn
            .call(|_channel, _timeout| {
                calls += 1;
                async { Ok::<(), Status>(()) }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 0);
        let text = format!("{err:#}");
        assert!(text.starts_with("unavailable: no endpoint answered: 127.0.0.1:1: cannot connect"));
        assert!(!text.contains('\n'));
    }

    /// A stand-in Cluster service: answers `status` with its id, or with
    /// the configured error.
    struct Fake {
        id: u64,
        error: Option<Status>,
    }

    #[tonic::async_trait]
    impl pb::cluster_server::Cluster for Fake {
        async fn status(
            &self,
            _: tonic::Request<pb::StatusRequest>,
        ) -> Result<tonic::Response<pb::StatusResponse>, Status> {
            match &self.error {
                Some(e) => Err(e.clone()),
                None => Ok(tonic::Response::new(pb::StatusResponse {
                    node_id: self.id,
                    ..Default::default()
                })),
            }
        }
        /// Slow, like adding a node that takes long to catch up.
        async fn add_node(
            &self,
            _: tonic::Request<pb::AddNodeRequest>,
        ) -> Result<tonic::Response<pb::AddNodeResponse>, Status> {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Err(Status::unimplemented(""))
        }
        async fn remove_node(
            &self,
            _: tonic::Request<pb::RemoveNodeRequest>,
        ) -> Result<tonic::Response<pb::RemoveNodeResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn drain_node(
            &self,
            _: tonic::Request<pb::DrainNodeRequest>,
        ) -> Result<tonic::Response<pb::DrainNodeResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn resume_node(
            &self,
            _: tonic::Request<pb::ResumeNodeRequest>,
        ) -> Result<tonic::Response<pb::ResumeNodeResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn snapshot(
            &self,
            _: tonic::Request<pb::SnapshotRequest>,
        ) -> Result<tonic::Response<pb::SnapshotResponse>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    /// Serve `fake` on a fresh local port; its address.
    async fn serve(fake: Fake) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::cluster_server::ClusterServer::new(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    fn unavailable(leader: Option<&str>) -> Option<Status> {
        let mut s = Status::unavailable("not the leader");
        if let Some(addr) = leader {
            s.metadata_mut().insert(LEADER_ADDR, addr.parse().unwrap());
        }
        Some(s)
    }

    async fn status_via(endpoints: Vec<String>) -> anyhow::Result<u64> {
        let conn = Conn::new(endpoints, Duration::from_secs(5));
        conn.call(|channel, _| async move {
            pb::cluster_client::ClusterClient::new(channel)
                .status(pb::StatusRequest {})
                .await
                .map(|r| r.into_inner().node_id)
        })
        .await
    }

    #[tokio::test]
    async fn unavailable_moves_on_and_the_leader_hint_goes_first() {
        let leader = serve(Fake { id: 2, error: None }).await;
        let other = serve(Fake { id: 9, error: None }).await;
        let follower = serve(Fake { id: 1, error: unavailable(Some(&leader)) }).await;
        let no_hint = serve(Fake { id: 4, error: unavailable(None) }).await;

        // Refused, then a follower pointing at the leader: the leader is
        // asked before the next endpoint in the list.
        let got = status_via(vec!["127.0.0.1:1".into(), follower.clone(), other.clone()]).await;
        assert_eq!(got.unwrap(), 2);
        // Without a hint: the next endpoint in the list.
        assert_eq!(status_via(vec![no_hint.clone(), other.clone()]).await.unwrap(), 9);
        // Everyone unavailable: one line naming each endpoint.
        let err = status_via(vec![no_hint.clone(), "127.0.0.1:1".into()]).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("unavailable: no endpoint answered: "), "{text}");
        assert!(text.contains(&format!("{no_hint}: unavailable: not the leader; 127.0.0.1:1: ")));
    }

    /// tonic's channel enforces the request's grpc-timeout itself, with a
    /// CANCELLED "Timeout expired" that looked like a connection closed
    /// by a TLS server ("cancelled: Timeout expired: ... pass --tls-ca").
    #[tokio::test]
    async fn a_request_out_of_time_is_deadline_exceeded_whoever_notices() {
        let slow = serve(Fake { id: 1, error: None }).await;
        let conn = Conn::new(vec![slow.clone()], Duration::from_secs(5));
        let err = conn
            .call(|channel, _| async move {
                // Shorter than the Conn's own limit, so that tonic's fires.
                let mut request = tonic::Request::new(pb::AddNodeRequest::default());
                request.set_timeout(Duration::from_millis(200));
                pb::cluster_client::ClusterClient::new(channel).add_node(request).await
            })
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!("deadline exceeded: no answer from {slow} within")),
            "{text}"
        );
        assert!(!text.contains("tls"), "{text}");
    }

    #[tokio::test]
    async fn other_errors_are_final() {
        let missing = serve(Fake { id: 1, error: Some(Status::not_found("no node 7")) }).await;
        let other = serve(Fake { id: 9, error: None }).await;
        let err = status_via(vec![missing, other]).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "not found: no node 7");
    }
}
