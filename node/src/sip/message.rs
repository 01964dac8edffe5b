//! A SIP message indexed once over the received bytes (RFC 3261 §7): the
//! start line, each header's name and value as slices of the buffer, and the
//! body. Nothing is copied; typed views of single headers (`Via`, `Contact`,
//! a URI) are parsed only when the protocol logic asks (see [`super::via`],
//! [`super::addr`], [`super::uri`]).
//!
//! Two steps, so that a request too broken to use can still be answered:
//! [`Message::parse`] indexes the head (start line and header lines; it fails
//! only when there is nothing to answer), then [`Message::check`] applies the
//! rules a request must meet (Content-Length, the mandatory headers, CSeq and
//! Max-Forwards syntax, no duplicates of single-valued headers). A message
//! that parses but fails the check gets a 400 that names the problem.
//!
//! Owns: line structure, header folding, compact header names, limits.
//! Does not own: transport framing ([`super::framing`]) or replies
//! ([`super::response`]).

use super::scan::{self, eq_ci, trim};

/// Most header lines accepted in one message.
pub const MAX_HEADERS: usize = 128;
/// Largest message accepted (a UDP datagram cannot be larger).
pub const MAX_MESSAGE: usize = 65_535;
/// Longest header line (with its continuation lines) accepted.
pub const MAX_HEADER_LINE: usize = 8_192;

/// Why bytes are not a usable SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No start line.
    #[error("empty message")]
    Empty,
    /// The message is larger than [`MAX_MESSAGE`].
    #[error("message too large")]
    TooLarge,
    /// The first line is neither a request line nor a status line.
    #[error("malformed start line")]
    StartLine,
    /// A SIP version other than 2.0.
    #[error("unsupported SIP version")]
    Version,
    /// The head does not end with an empty line.
    #[error("headers not terminated by an empty line")]
    Unterminated,
    /// A header line without a name and colon.
    #[error("malformed header line")]
    HeaderLine,
    /// More than [`MAX_HEADERS`] header lines.
    #[error("too many headers")]
    TooManyHeaders,
    /// A header longer than [`MAX_HEADER_LINE`] bytes.
    #[error("header line too long")]
    HeaderTooLong,
    /// A mandatory header is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A single-valued header appears more than once.
    #[error("more than one {0} header")]
    Duplicate(&'static str),
    /// A header's value does not follow its grammar.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// Content-Length is not a number or exceeds the message limit.
    #[error("malformed Content-Length")]
    ContentLength,
    /// Fewer body bytes arrived than Content-Length announced.
    #[error("body shorter than Content-Length")]
    BodyTooShort,
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethod,
    /// The Request-URI is not a usable URI.
    #[error("malformed Request-URI")]
    RequestUri,
}

/// A request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method<'a> {
    /// REGISTER.
    Register,
    /// INVITE.
    Invite,
    /// ACK.
    Ack,
    /// OPTIONS.
    Options,
    /// BYE.
    Bye,
    /// CANCEL.
    Cancel,
    /// A method defined by an RFC that this server does not serve
    /// (SUBSCRIBE, NOTIFY, MESSAGE, INFO, PRACK, UPDATE, REFER, PUBLISH).
    Known(&'a str),
    /// Anything else.
    Unknown(&'a str),
}

impl<'a> Method<'a> {
    fn from_token(t: &'a str) -> Method<'a> {
        // Methods are case-sensitive (RFC 3261 §7.1).
        match t {
            "REGISTER" => Method::Register,
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "OPTIONS" => Method::Options,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "SUBSCRIBE" | "NOTIFY" | "MESSAGE" | "INFO" | "PRACK" | "UPDATE" | "REFER"
            | "PUBLISH" => Method::Known(t),
            _ => Method::Unknown(t),
        }
    }

    /// The method's name.
    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Register => "REGISTER",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Options => "OPTIONS",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Known(t) | Method::Unknown(t) => t,
        }
    }
}

/// The first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `METHOD uri SIP/2.0`.
    Request {
        /// The method.
        method: Method<'a>,
        /// The Request-URI, as written.
        uri: &'a str,
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// The status code, 100..=699.
        code: u16,
    },
}

/// The headers the protocol logic looks at; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// Via (v).
    Via,
    /// From (f).
    From,
    /// To (t).
    To,
    /// Call-ID (i).
    CallId,
    /// CSeq.
    CSeq,
    /// Max-Forwards.
    MaxForwards,
    /// Contact (m).
    Contact,
    /// Expires.
    Expires,
    /// Authorization.
    Authorization,
    /// Path.
    Path,
    /// Supported (k).
    Supported,
    /// Require.
    Require,
    /// Content-Length (l).
    ContentLength,
    /// User-Agent.
    UserAgent,
    /// Any other header.
    Other,
}

impl Name {
    fn of(raw: &[u8]) -> Name {
        // Dispatch on the length first: one comparison for most headers,
        // not a scan of the whole table.
        let is = |full: &[u8]| eq_ci(raw, full);
        match raw.len() {
            1 => match raw[0].to_ascii_lowercase() {
                b'v' => Name::Via,
                b'f' => Name::From,
                b't' => Name::To,
                b'i' => Name::CallId,
                b'm' => Name::Contact,
                b'k' => Name::Supported,
                b'l' => Name::ContentLength,
                _ => Name::Other,
            },
            2 if is(b"To") => Name::To,
            3 if is(b"Via") => Name::Via,
            4 if is(b"From") => Name::From,
            4 if is(b"CSeq") => Name::CSeq,
            4 if is(b"Path") => Name::Path,
            7 if is(b"Call-ID") => Name::CallId,
            7 if is(b"Contact") => Name::Contact,
            7 if is(b"Expires") => Name::Expires,
            7 if is(b"Require") => Name::Require,
            9 if is(b"Supported") => Name::Supported,
            10 if is(b"User-Agent") => Name::UserAgent,
            12 if is(b"Max-Forwards") => Name::MaxForwards,
            13 if is(b"Authorization") => Name::Authorization,
            14 if is(b"Content-Length") => Name::ContentLength,
            _ => Name::Other,
        }
    }

    /// The full header name, for error messages and replies.
    pub fn as_str(self) -> &'static str {
        match self {
            Name::Via => "Via",
            Name::From => "From",
            Name::To => "To",
            Name::CallId => "Call-ID",
            Name::CSeq => "CSeq",
            Name::MaxForwards => "Max-Forwards",
            Name::Contact => "Contact",
            Name::Expires => "Expires",
            Name::Authorization => "Authorization",
            Name::Path => "Path",
            Name::Supported => "Supported",
            Name::Require => "Require",
            Name::ContentLength => "Content-Length",
            Name::UserAgent => "User-Agent",
            Name::Other => "header",
        }
    }
}

/// One header line (with its continuation lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// What the name means.
    pub name: Name,
    /// The name as written.
    pub raw_name: &'a [u8],
    /// The value, trimmed; folded line breaks are kept and count as white
    /// space everywhere.
    pub value: &'a [u8],
}

/// A CSeq value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number.
    pub number: u32,
    /// The method.
    pub method: &'a str,
}

/// An indexed message.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The start line.
    pub start: StartLine<'a>,
    /// The header lines, in order.
    pub headers: Vec<Header<'a>>,
    /// Everything after the empty line (not yet cut to Content-Length).
    pub rest: &'a [u8],
}

impl<'a> Message<'a> {
    /// Index `buf`: the start line and every header line. Leading empty
    /// lines are skipped (RFC 3261 §7.5). On UDP the head must end with an
    /// empty line; the body is whatever follows.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        if buf.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge);
        }
        let mut pos = 0;
        while buf[pos..].starts_with(b"\r\n") {
            pos += 2;
        }
        let (line, next) = line_at(buf, pos).ok_or(ParseError::Empty)?;
        if line.is_empty() {
            return Err(ParseError::Empty);
        }
        let start = start_line(line)?;
        pos = next;
        let mut headers: Vec<Header<'a>> = Vec::with_capacity(16);
        loop {
            let (line, next) = line_at(buf, pos).ok_or(ParseError::Unterminated)?;
            if line.is_empty() {
                return Ok(Message { start, headers, rest: &buf[next..] });
            }
            let mut end = next;
            // Continuation lines (folding) belong to this header.
            let mut value_end = pos + line.len();
            while matches!(buf.get(end), Some(b' ' | b'\t')) {
                let (cont, after) = line_at(buf, end).ok_or(ParseError::Unterminated)?;
                value_end = end + cont.len();
                end = after;
            }
            if value_end - pos > MAX_HEADER_LINE {
                return Err(ParseError::HeaderTooLong);
            }
            let colon = memchr::memchr(b':', line).ok_or(ParseError::HeaderLine)?;
            let raw_name = trim(&line[..colon]);
            if !scan::is_token(raw_name) {
                return Err(ParseError::HeaderLine);
            }
            if headers.len() == MAX_HEADERS {
                return Err(ParseError::TooManyHeaders);
            }
            headers.push(Header {
                name: Name::of(raw_name),
                raw_name,
                value: trim(&buf[pos + colon + 1..value_end]),
            });
            pos = end;
        }
    }

    /// The request method, or `None` for a response.
    pub fn method(&self) -> Option<Method<'a>> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// Every header named `name`, in order.
    pub fn all(&self, name: Name) -> impl Iterator<Item = &Header<'a>> {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// The first value of the header `name`.
    pub fn first(&self, name: Name) -> Option<&'a [u8]> {
        self.headers.iter().find(|h| h.name == name).map(|h| h.value)
    }

    /// The elements of every `name` header, split at commas (RFC 3261 §7.3.1:
    /// repeated headers and comma-separated values are the same thing).
    pub fn elements(&self, name: Name) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.all(name).flat_map(|h| scan::split_commas(h.value))
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&'a str> {
        self.first(Name::CallId).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The CSeq, when present and well formed.
    pub fn cseq(&self) -> Option<CSeq<'a>> {
        let v = self.first(Name::CSeq)?;
        let sp = v.iter().position(|&b| scan::is_lws(b))?;
        let number = scan::parse_u32(&v[..sp])?;
        let method = trim(&v[sp..]);
        if !scan::is_token(method) {
            return None;
        }
        Some(CSeq { number, method: std::str::from_utf8(method).ok()? })
    }

    /// Max-Forwards, when present (`Some(Err)` when malformed).
    pub fn max_forwards(&self) -> Option<Result<u8, ParseError>> {
        self.first(Name::MaxForwards).map(|v| {
            scan::parse_u32(v)
                .and_then(|n| u8::try_from(n).ok())
                .ok_or(ParseError::Malformed("Max-Forwards"))
        })
    }

    /// The Expires header, when present (`Some(Err)` when malformed).
    pub fn expires(&self) -> Option<Result<u32, ParseError>> {
        self.first(Name::Expires)
            .map(|v| scan::parse_u32(v).ok_or(ParseError::Malformed("Expires")))
    }

    /// The body, cut to Content-Length. A body shorter than Content-Length
    /// is an error (RFC 3261 §18.3); bytes beyond it are ignored. Without a
    /// Content-Length (allowed on UDP) the body is everything that follows.
    pub fn body(&self) -> Result<&'a [u8], ParseError> {
        let Some(v) = self.first(Name::ContentLength) else { return Ok(self.rest) };
        let n = scan::parse_u64(v, 10).ok_or(ParseError::ContentLength)?;
        let n = usize::try_from(n).map_err(|_| ParseError::ContentLength)?;
        if n > MAX_MESSAGE {
            return Err(ParseError::ContentLength);
        }
        self.rest.get(..n).ok_or(ParseError::BodyTooShort)
    }

    /// Whether an option tag is listed in `name` (Supported or Require).
    pub fn has_option(&self, name: Name, tag: &[u8]) -> bool {
        self.elements(name).any(|t| eq_ci(t, tag))
    }

    /// The rules a request must meet before it is acted on (RFC 3261 §8.2
    /// and §16.3): the mandatory headers present once each, CSeq matching
    /// the method, Max-Forwards and Content-Length well formed, the body
    /// complete, and a Request-URI without embedded headers.
    pub fn check(&self) -> Result<(), ParseError> {
        let StartLine::Request { method, uri } = self.start else { return Ok(()) };
        // One pass over the headers: how many of each that must appear
        // exactly once (From, To, Call-ID, CSeq), at least once (Via) or
        // at most once (Max-Forwards, Content-Length, Expires).
        let mut seen = [0u32; 8];
        for h in &self.headers {
            let slot = match h.name {
                Name::From => 0,
                Name::To => 1,
                Name::CallId => 2,
                Name::CSeq => 3,
                Name::Via => 4,
                Name::MaxForwards => 5,
                Name::ContentLength => 6,
                Name::Expires => 7,
                _ => continue,
            };
            seen[slot] += 1;
        }
        const ONCE: [Name; 4] = [Name::From, Name::To, Name::CallId, Name::CSeq];
        for (i, name) in ONCE.iter().enumerate() {
            match seen[i] {
                0 => return Err(ParseError::Missing(name.as_str())),
                1 => {}
                _ => return Err(ParseError::Duplicate(name.as_str())),
            }
        }
        if seen[4] == 0 {
            return Err(ParseError::Missing("Via"));
        }
        const AT_MOST_ONCE: [Name; 3] = [Name::MaxForwards, Name::ContentLength, Name::Expires];
        for (i, name) in AT_MOST_ONCE.iter().enumerate() {
            if seen[5 + i] > 1 {
                return Err(ParseError::Duplicate(name.as_str()));
            }
        }
        let cseq = self.cseq().ok_or(ParseError::Malformed("CSeq"))?;
        if cseq.method != method.as_str() {
            return Err(ParseError::CSeqMethod);
        }
        if let Some(Err(e)) = self.max_forwards() {
            return Err(e);
        }
        if let Some(Err(e)) = self.expires() {
            return Err(e);
        }
        if self.call_id().is_none_or(|c| c.is_empty() || c.bytes().any(scan::is_lws)) {
            return Err(ParseError::Malformed("Call-ID"));
        }
        self.body()?;
        let uri = super::uri::Uri::parse(uri.as_bytes()).map_err(|_| ParseError::RequestUri)?;
        if uri.headers.is_some() {
            return Err(ParseError::RequestUri);
        }
        Ok(())
    }
}

/// The line starting at `pos` (without its CRLF) and where the next begins;
/// `None` when no CRLF follows. A bare LF also ends a line, as RFC 3261
/// §7.5 asks implementations to accept.
fn line_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let lf = memchr::memchr(b'\n', rest)?;
    let line = if lf > 0 && rest[lf - 1] == b'\r' { &rest[..lf - 1] } else { &rest[..lf] };
    Some((line, pos + lf + 1))
}

fn start_line(line: &[u8]) -> Result<StartLine<'_>, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::StartLine)?;
    let mut parts = text.splitn(3, ' ');
    let (a, b, c) = match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err(ParseError::StartLine),
    };
    if let Some(version) = a.strip_prefix("SIP/") {
        if version != "2.0" {
            return Err(ParseError::Version);
        }
        let code = scan::parse_u32(b.as_bytes())
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (100..=699).contains(c) && b.len() == 3)
            .ok_or(ParseError::StartLine)?;
        return Ok(StartLine::Response { code });
    }
    if !scan::is_token(a.as_bytes()) || b.is_empty() {
        return Err(ParseError::StartLine);
    }
    match c.strip_prefix("SIP/") {
        Some("2.0") => {}
        // Trailing white space (RFC 4475 trws) is a malformed line, not
        // another version: it must not earn a 505.
        Some(v) if v.trim_end() == "2.0" => return Err(ParseError::StartLine),
        Some(_) => return Err(ParseError::Version),
        None => return Err(ParseError::StartLine),
    }
    Ok(StartLine::Request { method: Method::from_token(a), uri: b })
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
