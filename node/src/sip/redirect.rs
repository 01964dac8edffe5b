//! The redirect server of seed 001 spoken over SIP (RFC 3261 §8.3): an
//! INVITE's Request-URI goes through the same [`route`] as gRPC Route, and
//! the answer is a 302 with one Contact per target, or the route's failure.
//!
//! Owns: the digits of a Request-URI, the Contact list (distinct,
//! descending q in route order, so that a proxy that loads contacts
//! serially does not fork to them in parallel; capped so a UDP reply stays
//! under 1300 bytes), the `X-Switchboard-Node` header and the failure
//! replies. Pure: reads a [`State`] and writes bytes; the server supplies
//! the time and the load-spreading counter. Stateless: the same INVITE gets
//! the same bytes (deterministic To-tag, nothing remembered).

use std::fmt::Write as _;
use std::net::SocketAddr;

use switchboard_storage::state::route::{route, Decision, FailureCode, RouteRequest};
use switchboard_storage::state::{NodeId, State};

use super::message::{Message, StartLine};
use super::registrar::digits_of;
use super::response::{reason, Reply};
use super::stateless::{to_tag, warning};
use super::uri::{Scheme, Uri, UriError};

/// Largest 302 sent over UDP, bytes (RFC 3261 §18.1.1 keeps requests under
/// 1300 bytes on UDP; a response cannot switch to TCP, so it is cut).
pub const UDP_LIMIT: usize = 1300;
/// Most Contacts in one 302.
pub const MAX_CONTACTS: usize = 32;

/// What the redirect server needs besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    /// This node.
    pub node: NodeId,
    /// The replicated clock.
    pub now_ms: u64,
    /// Successive requests get successive values (spreads the weighted
    /// choice among equal gateways).
    pub spread: u64,
    /// Where the INVITE came from.
    pub source: SocketAddr,
    /// Whether the reply goes over UDP (and must stay small).
    pub udp: bool,
    /// Retry-After of a 503, s.
    pub retry_after_s: u32,
}

/// Answer an INVITE that passed [`Message::check`]; returns the status code.
pub fn answer(req: &Message<'_>, state: &State, ask: &Ask, out: &mut Vec<u8>) -> u16 {
    let StartLine::Request { uri, .. } = req.start else { return 0 };
    let digits = match Uri::parse(uri.as_bytes()) {
        Ok(u) if matches!(u.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel) => match u.user {
            Some(user) => digits_of(user),
            None => return fail(req, ask, 404, "the Request-URI has no user part", out),
        },
        Ok(_) | Err(UriError::Scheme) => {
            return fail(req, ask, 416, "only sip:, sips: and tel: URIs are routed", out)
        }
        Err(UriError::Malformed) => return fail(req, ask, 400, "malformed Request-URI", out),
    };
    let decision = route(
        state,
        &RouteRequest {
            digits: &digits,
            origin_node: Some(ask.node),
            now_ms: ask.now_ms,
            spread: ask.spread,
        },
    );
    match decision {
        Decision::Route { targets, handling_node } => {
            let tag = to_tag(req);
            let mut reply = Reply::start(out, req, 302, reason(302), ask.source, &tag);
            let mut node = handling_node.to_string();
            if let Some(n) = state.nodes.get(handling_node).filter(|n| !n.sip_addr.is_empty()) {
                let _ = write!(node, ";sip={}", n.sip_addr);
            }
            reply.header("X-Switchboard-Node", &node);
            let n = targets.len().min(MAX_CONTACTS);
            let step = 1000 / n.max(1);
            let mut contact = String::new();
            // Room for the closing Content-Length line.
            let budget = if ask.udp { UDP_LIMIT - 24 } else { usize::MAX };
            for (i, t) in targets.iter().take(n).enumerate() {
                contact.clear();
                let _ = write!(contact, "<{}>;q={}", t.uri, q_text(1000 - i * step));
                // Always at least one Contact, even when it alone is long.
                if i > 0 && reply.len() + contact.len() + 11 > budget {
                    break;
                }
                reply.header("Contact", &contact);
            }
            reply.finish();
            302
        }
        Decision::Failure { code, reason: why } => {
            let code = match code {
                FailureCode::BadRequest => 404,
                other => other.code(),
            };
            fail(req, ask, code, &why, out)
        }
    }
}

/// A failure reply with a Warning (and Retry-After on 503).
fn fail(req: &Message<'_>, ask: &Ask, code: u16, why: &str, out: &mut Vec<u8>) -> u16 {
    let tag = to_tag(req);
    let mut reply = Reply::start(out, req, code, reason(code), ask.source, &tag);
    if code == 503 {
        reply.header("Retry-After", &ask.retry_after_s.to_string());
    }
    reply.header("Warning", &warning(why));
    reply.finish();
    code
}

/// A q-value in thousandths as text: `1`, `0.5`, `0.667`.
fn q_text(milli: usize) -> String {
    match milli {
        1000.. => "1".to_owned(),
        m => {
            let s = format!("0.{m:03}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
    }
}

#[cfg(test)]
#[path = "redirect_tests.rs"]
mod tests;
