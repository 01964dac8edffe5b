//! SIP counters: requests by method, responses sent by code, parse errors,
//! responses received (which a registrar and redirect server ignores).
//!
//! Owns: the series names. The handles are resolved once, at start-up, so
//! counting a request is an atomic add and not a registry lookup (the
//! `metrics` crate's macros look the series up on every call).

use metrics::Counter;

use super::message::Method;

/// Methods with a series of their own; the rest count as `other`.
const METHODS: [&str; 7] = ["REGISTER", "INVITE", "ACK", "OPTIONS", "BYE", "CANCEL", "other"];
/// Codes with a series of their own; the rest count as `other`.
const CODES: [u16; 20] = [
    200, 302, 400, 401, 403, 404, 405, 416, 420, 423, 480, 483, 486, 500, 501, 503, 504, 505, 600,
    603,
];

/// The counters of one node.
pub struct SipMetrics {
    requests: Vec<Counter>,
    responses: Vec<Counter>,
    other_response: Counter,
    parse_errors: Counter,
    received_responses: Counter,
}

impl SipMetrics {
    /// Register the series for node `node`.
    pub fn new(node: &str) -> SipMetrics {
        let node = node.to_owned();
        SipMetrics {
            requests: METHODS
                .iter()
                .map(|m| {
                    metrics::counter!("switchboard_sip_requests_total", "node" => node.clone(), "method" => *m)
                })
                .collect(),
            responses: CODES
                .iter()
                .map(|c| {
                    metrics::counter!("switchboard_sip_responses_total", "node" => node.clone(), "code" => c.to_string())
                })
                .collect(),
            other_response: metrics::counter!("switchboard_sip_responses_total", "node" => node.clone(), "code" => "other"),
            parse_errors: metrics::counter!("switchboard_sip_parse_errors_total", "node" => node.clone()),
            received_responses: metrics::counter!("switchboard_sip_responses_received_total", "node" => node),
        }
    }

    /// A request arrived.
    pub fn request(&self, method: Method<'_>) {
        let i = match method {
            Method::Register => 0,
            Method::Invite => 1,
            Method::Ack => 2,
            Method::Options => 3,
            Method::Bye => 4,
            Method::Cancel => 5,
            Method::Known(_) | Method::Unknown(_) => 6,
        };
        self.requests[i].increment(1);
    }

    /// A response was sent.
    pub fn response(&self, code: u16) {
        match CODES.iter().position(|&c| c == code) {
            Some(i) => self.responses[i].increment(1),
            None => self.other_response.increment(1),
        }
    }

    /// Bytes that were not a SIP message.
    pub fn parse_error(&self) {
        self.parse_errors.increment(1);
    }

    /// A response arrived (and was ignored).
    pub fn received_response(&self) {
        self.received_responses.increment(1);
    }
}
