//! One node's SIP server logic: a request's bytes in, the reply's bytes
//! out. Dispatches by method, answers what needs no write at once
//! ([`Server::answer_now`]: INVITE, OPTIONS, refusals, all from local
//! state) and REGISTER after its write commits ([`Server::register`]).
//!
//! Owns: the method table (which methods are served, 405 vs 501), the
//! sanity replies (400 with a Warning, 483, 505), REGISTER transactions and
//! metrics. Does not own sockets ([`super::transport`]); nothing here knows
//! whether bytes came by UDP or TCP beyond the reply size limit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use switchboard_storage::state::Outcome;
use tracing::debug;

use super::auth::{self, Denied};
use super::digest;
use super::message::{Message, Method, Name, ParseError, StartLine};
use super::metrics::SipMetrics;
use super::redirect::{self, Ask};
use super::registrar::{self, Limits, Order, Request};
use super::response::{reason, Reply};
use super::stateless::{to_tag, warning};
use super::transactions::{Begin, Transactions};
use super::via::Via;
use super::{codes, uri};
use crate::error::ApiError;
use crate::node::{Consistency, Node};

/// The methods this server answers, for Allow headers.
pub const ALLOW: &str = "INVITE, ACK, REGISTER, OPTIONS";

/// How a request reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram; the reply goes where the Via says.
    Udp,
    /// A stream; the reply goes back on the same connection.
    Tcp,
}

/// What [`Server::answer_now`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    /// Nothing to send (an ACK, a response, bytes that are not SIP).
    Nothing,
    /// The reply is in the buffer.
    Reply,
    /// A REGISTER: hand the bytes to [`Server::register`].
    Register,
}

/// The SIP logic of one node.
pub struct Server {
    node: Node,
    limits: Limits,
    transactions: Transactions,
    metrics: SipMetrics,
    spread: AtomicU64,
    pending: tokio::sync::Semaphore,
}

/// Most REGISTERs waiting for their write at once, per node.
pub const MAX_PENDING_REGISTERS: usize = 4096;

impl Server {
    /// Serve SIP for `node`, with its `[sip]` configuration.
    pub fn new(node: Node) -> Server {
        let c = node.config();
        let limits = Limits {
            min_s: c.sip.min_expires_s,
            max_s: c.sip.max_expires_s,
            default_s: c
                .registrations
                .default_expires_s
                .clamp(c.sip.min_expires_s, c.sip.max_expires_s),
        };
        let metrics = SipMetrics::new(&node.id().to_string());
        Server {
            node,
            limits,
            transactions: Transactions::default(),
            metrics,
            spread: AtomicU64::new(0),
            pending: tokio::sync::Semaphore::new(MAX_PENDING_REGISTERS),
        }
    }

    /// Where a reply to `raw` (from `source` over UDP) goes: the topmost
    /// Via's rules, or the source when there is no usable Via.
    pub fn reply_target(raw: &[u8], source: SocketAddr) -> SocketAddr {
        Message::parse(raw)
            .ok()
            .and_then(|m| {
                m.elements(Name::Via)
                    .next()
                    .and_then(|v| Via::parse(v).ok())
                    .map(|v| v.reply_target(source))
            })
            .unwrap_or(source)
    }

    /// Answer `raw` if no write is needed, into `out`.
    pub fn answer_now(
        &self,
        raw: &[u8],
        source: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Now {
        let msg = match Message::parse(raw) {
            Ok(m) => m,
            Err(e) => {
                // Nothing to copy a reply's headers from: drop it.
                self.metrics.parse_error();
                debug!(%source, error = %e, "unparsable SIP message dropped");
                return Now::Nothing;
            }
        };
        let StartLine::Request { method, uri } = msg.start else {
            // Responses to requests we never sent (our OPTIONS probes use
            // their own socket) are ignored, as RFC 3261 §18.1.2 allows.
            self.metrics.received_response();
            return Now::Nothing;
        };
        self.metrics.request(method);
        if let Err(e) = msg.check() {
            self.metrics.parse_error();
            if method == Method::Ack || msg.first(Name::Via).is_none() {
                return Now::Nothing; // an ACK is never answered; without a Via there is nowhere to
            }
            let code = match e {
                ParseError::RequestUri
                    if uri::Uri::parse(uri.as_bytes()) == Err(uri::UriError::Scheme) =>
                {
                    416
                }
                _ => 400,
            };
            return self.simple(&msg, code, Some(&e.to_string()), source, out);
        }
        if method != Method::Options && method != Method::Ack && msg.max_forwards() == Some(Ok(0)) {
            return self.simple(&msg, 483, Some("Max-Forwards is 0"), source, out);
        }
        match method {
            Method::Ack => Now::Nothing,
            Method::Register => Now::Register,
            Method::Invite => {
                // Local state is the answer: a node still catching up after
                // start-up (or not yet in a cluster) would answer 404 for
                // numbers it has not heard of yet.
                if let Err(e) = self.node.local_read_ok() {
                    return self.unavailable(&msg, &e.to_string(), source, out);
                }
                let ask = Ask {
                    node: self.node.id(),
                    now_ms: self.node.cluster_now(),
                    spread: self.spread.fetch_add(1, Ordering::Relaxed),
                    source,
                    udp: transport == Transport::Udp,
                    retry_after_s: self.node.config().sip.retry_after_s,
                };
                let code = self.node.read(|s, _| redirect::answer(&msg, s, &ask, out));
                self.metrics.response(code);
                Now::Reply
            }
            Method::Options => {
                let tag = to_tag(&msg);
                let mut r = Reply::start(out, &msg, 200, reason(200), source, &tag);
                r.header("Allow", ALLOW)
                    .header("Accept", "application/sdp")
                    .header("Accept-Language", "en");
                r.finish();
                self.metrics.response(200);
                Now::Reply
            }
            Method::Bye | Method::Cancel | Method::Known(_) => self.simple(
                &msg,
                405,
                Some("a registrar and redirect server serves no dialogs"),
                source,
                out,
            ),
            Method::Unknown(_) => self.simple(&msg, 501, None, source, out),
        }
    }

    /// 503 with Retry-After.
    fn unavailable(
        &self,
        msg: &Message<'_>,
        why: &str,
        source: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Now {
        let tag = to_tag(msg);
        let mut r = Reply::start(out, msg, 503, reason(503), source, &tag);
        r.header("Retry-After", &self.node.config().sip.retry_after_s.to_string());
        r.header("Warning", &warning(why));
        r.finish();
        self.metrics.response(503);
        Now::Reply
    }

    /// A reply with only the standard headers, Allow on 405/501 and a
    /// Warning when `why` is given.
    fn simple(
        &self,
        msg: &Message<'_>,
        code: u16,
        why: Option<&str>,
        source: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Now {
        let tag = to_tag(msg);
        let mut r = Reply::start(out, msg, code, reason(code), source, &tag);
        if code == 405 || code == 501 {
            r.header("Allow", ALLOW);
        }
        if let Some(why) = why {
            r.header("Warning", &warning(why));
        }
        r.finish();
        self.metrics.response(code);
        Now::Reply
    }

    /// Answer a REGISTER for which [`Server::answer_now`] returned
    /// [`Now::Register`]: `None` when nothing is to be sent (a
    /// retransmission of a request still being written).
    pub async fn register(&self, raw: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
        let msg = Message::parse(raw).ok()?;
        let key = transaction_key(&msg);
        match self.transactions.begin(&key, Instant::now()) {
            Begin::Pending => return None,
            Begin::Done(bytes) => return Some(bytes),
            Begin::New => {}
        }
        let mut out = Vec::with_capacity(512);
        // A flood of REGISTERs must not queue without bound behind Raft:
        // past MAX_PENDING_REGISTERS the answer is 503 at once (not
        // remembered, so the client's retry is handled afresh).
        let Ok(_permit) = self.pending.try_acquire() else {
            self.transactions.finish(&key, None);
            return match self.unavailable(&msg, "too many REGISTERs in progress", source, &mut out)
            {
                Now::Reply => Some(out),
                Now::Nothing | Now::Register => None,
            };
        };
        let code = self.register_new(&msg, source, &mut out).await;
        self.metrics.response(code);
        self.transactions.finish(&key, Some(out.clone()));
        Some(out)
    }

    async fn register_new(&self, msg: &Message<'_>, source: SocketAddr, out: &mut Vec<u8>) -> u16 {
        let sip = &self.node.config().sip;
        let tag = to_tag(msg);
        let refuse = |out: &mut Vec<u8>, code: u16, why: &str, extra: &[(&str, String)]| {
            let mut r = Reply::start(out, msg, code, reason(code), source, &tag);
            for (name, value) in extra {
                r.header(name, value);
            }
            r.header("Warning", &warning(why));
            r.finish();
            code
        };
        let request = match registrar::decode(msg, self.node.id(), &self.limits) {
            Ok(r) => r,
            Err(r) => {
                let mut extra = Vec::new();
                if let Some(m) = r.min_expires {
                    extra.push(("Min-Expires", m.to_string()));
                }
                if let Some(u) = r.unsupported {
                    extra.push(("Unsupported", u));
                }
                return refuse(out, r.code, &r.why, &extra);
            }
        };
        let now = self.node.cluster_now();
        let checked = self.node.read(|s, _| auth::check(msg, request.number(), s, sip, now));
        match checked {
            Ok(()) => {}
            Err(Denied::Refuse { code, why }) => {
                let extra: Vec<(&str, String)> = if code == 503 {
                    vec![("Retry-After", sip.retry_after_s.to_string())]
                } else {
                    vec![]
                };
                return refuse(out, code, &why, &extra);
            }
            Err(Denied::Challenge { stale, why }) => {
                let Some(secret) = self.node.sip_secret() else {
                    return refuse(
                        out,
                        503,
                        "no nonce secret yet",
                        &[("Retry-After", sip.retry_after_s.to_string())],
                    );
                };
                debug!(%source, reason = %why, "REGISTER challenged");
                let challenges: Vec<(&str, String)> = auth::algorithms(sip)
                    .into_iter()
                    .map(|alg| {
                        (
                            "WWW-Authenticate",
                            digest::challenge(&secret, &sip.realm, now, alg, stale),
                        )
                    })
                    .collect();
                let mut r = Reply::start(out, msg, 401, reason(401), source, &tag);
                for (name, value) in &challenges {
                    r.header(name, value);
                }
                r.finish();
                return 401;
            }
        }
        let number = request.number().to_owned();
        let command = match request {
            Request::Query { .. } => return self.ok(msg, &number, source, out),
            Request::Change(c) => c,
        };
        match self.node.read(|s, _| registrar::order(&command, s.registrations.bindings(&number))) {
            Order::Retransmission => return self.ok(msg, &number, source, out),
            Order::Stale => {
                return refuse(out, 400, "CSeq lower than a previous REGISTER of this Call-ID", &[])
            }
            Order::New => {}
        }
        match self.node.write(command.clone()).await {
            Ok(written) => match written.outcome {
                Outcome::SipRegistered { bindings, .. } => {
                    let now = self.node.cluster_now();
                    let mut r = Reply::start(out, msg, 200, reason(200), source, &tag);
                    for c in registrar::contact_values(&bindings, now) {
                        r.header("Contact", &c);
                    }
                    r.finish();
                    200
                }
                other => refuse(out, 500, &format!("unexpected outcome {other:?}"), &[]),
            },
            // The leader refused the order: this node's state was behind.
            // Catch up and judge again; a retransmission that reached the
            // log first is answered like the original.
            Err(ApiError::FailedPrecondition(why)) => {
                let _ = self.node.read_barrier(Consistency::Linearizable).await;
                match self
                    .node
                    .read(|s, _| registrar::order(&command, s.registrations.bindings(&number)))
                {
                    Order::Retransmission => self.ok(msg, &number, source, out),
                    _ => refuse(out, 400, &why, &[]),
                }
            }
            Err(e) => {
                let (code, retry) = codes::of(&e);
                let extra: Vec<(&str, String)> = if retry {
                    vec![("Retry-After", sip.retry_after_s.to_string())]
                } else {
                    vec![]
                };
                refuse(out, code, &e.to_string(), &extra)
            }
        }
    }

    /// 200 listing the number's current bindings.
    fn ok(&self, msg: &Message<'_>, number: &str, source: SocketAddr, out: &mut Vec<u8>) -> u16 {
        let now = self.node.cluster_now();
        let contacts =
            self.node.read(|s, _| registrar::contact_values(s.registrations.bindings(number), now));
        let tag = to_tag(msg);
        let mut r = Reply::start(out, msg, 200, reason(200), source, &tag);
        for c in &contacts {
            r.header("Contact", c);
        }
        r.finish();
        200
    }

    /// A 400 for a stream whose framing failed after a complete head, when
    /// the head is a request with a Via; `None` otherwise.
    pub fn reject_head(&self, head: &[u8], why: &str, source: SocketAddr) -> Option<Vec<u8>> {
        let msg = Message::parse(head).ok()?;
        let StartLine::Request { method, .. } = msg.start else { return None };
        if method == Method::Ack || msg.first(Name::Via).is_none() {
            return None;
        }
        self.metrics.parse_error();
        let mut out = Vec::new();
        self.simple(&msg, 400, Some(why), source, &mut out);
        Some(out)
    }
}

/// A REGISTER transaction's key (RFC 3261 §17.2.3): the topmost branch,
/// the Call-ID and the CSeq.
fn transaction_key(msg: &Message<'_>) -> Vec<u8> {
    let mut key = Vec::with_capacity(96);
    if let Some(b) =
        msg.elements(Name::Via).next().and_then(|v| Via::parse(v).ok()).and_then(|v| v.branch())
    {
        key.extend_from_slice(b);
    }
    key.push(0);
    key.extend_from_slice(msg.first(Name::CallId).unwrap_or_default());
    key.push(0);
    key.extend_from_slice(msg.first(Name::CSeq).unwrap_or_default());
    key
}
