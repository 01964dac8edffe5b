//! Building a response to a request (RFC 3261 §8.2.6): the status line,
//! then the request's Via, From, To, Call-ID and CSeq copied byte for byte
//! (the topmost Via gains `received`/`rport`, the To gains our tag when it
//! has none), then the caller's own headers, then `Content-Length: 0`.
//!
//! Owns: the byte layout of every reply this server sends. Does not own
//! which code to send.

use std::net::SocketAddr;

use super::addr::NameAddr;
use super::message::{Message, Name};
use super::via;

/// The `Server` header every reply carries.
pub const SERVER: &str = concat!("Switchboard/", env!("CARGO_PKG_VERSION"));

/// A reply under construction. Headers added with [`Reply::header`] go after
/// the copied ones; [`Reply::finish`] closes the head.
pub struct Reply<'o> {
    out: &'o mut Vec<u8>,
}

impl<'o> Reply<'o> {
    /// Start a `code reason` response to `req` (which arrived from
    /// `source`) in `out`, adding `to_tag` to the To header when it has no
    /// tag yet (RFC 3261 §8.2.6.2; never on 100 Trying).
    pub fn start(
        out: &'o mut Vec<u8>,
        req: &Message<'_>,
        code: u16,
        reason: &str,
        source: SocketAddr,
        to_tag: &str,
    ) -> Reply<'o> {
        out.extend_from_slice(b"SIP/2.0 ");
        out.extend_from_slice(code.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut first_via = true;
        for h in &req.headers {
            let name = match h.name {
                Name::Via | Name::From | Name::To | Name::CallId | Name::CSeq => h.name.as_str(),
                _ => continue,
            };
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            match h.name {
                Name::Via => {
                    // Each Via header may hold several elements; only the
                    // topmost one is changed.
                    if first_via {
                        first_via = false;
                        let end = super::scan::find_unquoted(h.value, b',');
                        via::write_topmost(out, &h.value[..end], source);
                        out.extend_from_slice(&h.value[end..]);
                    } else {
                        out.extend_from_slice(h.value);
                    }
                }
                Name::To => {
                    out.extend_from_slice(h.value);
                    let tagged =
                        NameAddr::parse(h.value).map(|a| a.tag().is_some()).unwrap_or(true);
                    if !tagged && code > 100 && !to_tag.is_empty() {
                        out.extend_from_slice(b";tag=");
                        out.extend_from_slice(to_tag.as_bytes());
                    }
                }
                _ => out.extend_from_slice(h.value),
            }
            out.extend_from_slice(b"\r\n");
        }
        let mut reply = Reply { out };
        reply.header("Server", SERVER);
        reply
    }

    /// Add `name: value`.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.header_bytes(name, value.as_bytes())
    }

    /// Add `name: value` with a raw value.
    pub fn header_bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// How many bytes the reply holds so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing has been written (never, once started).
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Close the head with an empty body.
    pub fn finish(self) {
        self.out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    }
}

/// The standard reason phrase of the codes this server sends.
pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        483 => "Too Many Hops",
        486 => "Busy Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_dialog_headers_and_tags_the_to() {
        let req = b"OPTIONS sip:node SIP/2.0\r\n\
            v: SIP/2.0/UDP phone.example;branch=z9hG4bKa;rport, SIP/2.0/TCP p2;branch=z9hG4bKb\r\n\
            Via: SIP/2.0/UDP p3;branch=z9hG4bKc\r\n\
            f: \"A\" <sip:a@x>;tag=1\r\n\
            t: <sip:node>\r\n\
            i: abc\r\n\
            CSeq: 1 OPTIONS\r\n\
            Max-Forwards: 70\r\n\
            l: 0\r\n\r\n";
        let msg = Message::parse(req).unwrap();
        let mut out = Vec::new();
        let src: SocketAddr = "10.1.1.1:5999".parse().unwrap();
        let mut r = Reply::start(&mut out, &msg, 200, "OK", src, "t1");
        r.header("Allow", "INVITE");
        r.finish();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "SIP/2.0 200 OK\r\n\
                 Via: SIP/2.0/UDP phone.example;branch=z9hG4bKa;received=10.1.1.1;rport=5999, SIP/2.0/TCP p2;branch=z9hG4bKb\r\n\
                 Via: SIP/2.0/UDP p3;branch=z9hG4bKc\r\n\
                 From: \"A\" <sip:a@x>;tag=1\r\n\
                 To: <sip:node>;tag=t1\r\n\
                 Call-ID: abc\r\n\
                 CSeq: 1 OPTIONS\r\n\
                 Server: {SERVER}\r\n\
                 Allow: INVITE\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        );
    }
}
