//! SIP OPTIONS keep-alives (RFC 3261 §11): build the request, parse the
//! response far enough to match it to the request and read its status.
//!
//! Pure functions, no I/O: the prober owns the socket.

use std::net::SocketAddr;

/// What the prober needs from a SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100..=699.
    pub code: u16,
    /// The Call-ID header value.
    pub call_id: String,
    /// The CSeq number.
    pub cseq: u32,
    /// The CSeq method.
    pub method: String,
}

/// Why a datagram is not a usable SIP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not UTF-8 text.
    #[error("not text")]
    NotText,
    /// The first line is not `SIP/2.0 <code> <reason>`.
    #[error("bad status line {0:?}")]
    StatusLine(String),
    /// A required header is missing or malformed.
    #[error("missing or malformed {0} header")]
    Header(&'static str),
}

/// An OPTIONS request to `target` (`host:port`) from `local`, identified by
/// `call_id`, `branch` (without the magic cookie) and `tag`.
pub fn request(
    target: &str,
    local: SocketAddr,
    call_id: &str,
    branch: &str,
    tag: &str,
    cseq: u32,
) -> String {
    format!(
        "OPTIONS sip:{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:switchboard@{local}>;tag={tag}\r\n\
         To: <sip:{target}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} OPTIONS\r\n\
         Contact: <sip:switchboard@{local}>\r\n\
         Accept: application/sdp\r\n\
         User-Agent: switchboard\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Parse a response's status line, Call-ID and CSeq (compact form `i` too).
pub fn parse_response(datagram: &[u8]) -> Result<Response, ParseError> {
    let text = std::str::from_utf8(datagram).map_err(|_| ParseError::NotText)?;
    let head = text.split("\r\n\r\n").next().unwrap_or(text);
    let mut lines = head.split("\r\n").flat_map(|l| l.split('\n'));
    let status = lines.next().unwrap_or("").trim();
    let mut parts = status.splitn(3, ' ');
    let code = match (parts.next(), parts.next()) {
        (Some("SIP/2.0"), Some(code)) => {
            code.parse::<u16>().ok().filter(|c| (100..=699).contains(c))
        }
        _ => None,
    }
    .ok_or_else(|| ParseError::StatusLine(status.chars().take(80).collect()))?;
    let mut call_id = None;
    let mut cseq = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("call-id") || name == "i" {
            call_id = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("cseq") {
            let mut it = value.split_whitespace();
            let n = it.next().and_then(|n| n.parse::<u32>().ok());
            let m = it.next();
            if let (Some(n), Some(m)) = (n, m) {
                cseq = Some((n, m.to_owned()));
            } else {
                return Err(ParseError::Header("CSeq"));
            }
        }
    }
    let call_id = call_id.filter(|c| !c.is_empty()).ok_or(ParseError::Header("Call-ID"))?;
    let (cseq, method) = cseq.ok_or(ParseError::Header("CSeq"))?;
    Ok(Response { code, call_id, cseq, method })
}

/// The `200 OK` a gateway stand-in sends to an OPTIONS request: Via, From,
/// To, Call-ID and CSeq copied from the request. `None` for anything that
/// is not an OPTIONS request.
pub fn answer(request: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(request).ok()?;
    if !text.starts_with("OPTIONS ") {
        return None;
    }
    let mut reply = String::from("SIP/2.0 200 OK\r\n");
    let head = text.split("\r\n\r\n").next().unwrap_or(text);
    for line in head.split("\r\n").skip(1) {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq"
        ) {
            reply.push_str(line);
            reply.push_str("\r\n");
        }
    }
    reply.push_str("Content-Length: 0\r\n\r\n");
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_well_formed() {
        let r =
            request("gw.example:5060", "127.0.0.1:40000".parse().unwrap(), "abc", "x1", "t1", 7);
        assert!(r.starts_with("OPTIONS sip:gw.example:5060 SIP/2.0\r\n"));
        assert!(r.contains("\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKx1;rport\r\n"));
        assert!(r.contains("\r\nCall-ID: abc\r\n"));
        assert!(r.contains("\r\nCSeq: 7 OPTIONS\r\n"));
        assert!(r.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn parses_a_response_and_compact_headers() {
        let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKx1\r\n\
                   i: abc\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let r = parse_response(raw.as_bytes()).unwrap();
        assert_eq!(
            r,
            Response { code: 200, call_id: "abc".into(), cseq: 7, method: "OPTIONS".into() }
        );
        let raw = "SIP/2.0 404 Not Found\nCall-ID: q\nCSeq: 1 OPTIONS\n\n";
        assert_eq!(parse_response(raw.as_bytes()).unwrap().code, 404);
    }

    #[test]
    fn answer_echoes_the_dialog_headers_and_parses_back() {
        let req = request("gw:5060", "127.0.0.1:4000".parse().unwrap(), "cid-9", "b", "t", 3);
        let reply = answer(req.as_bytes()).unwrap();
        let parsed = parse_response(reply.as_bytes()).unwrap();
        assert_eq!((parsed.code, parsed.call_id.as_str(), parsed.cseq), (200, "cid-9", 3));
        assert!(reply.contains("Via: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bKb;rport\r\n"));
        assert_eq!(answer(b"INVITE sip:x SIP/2.0\r\n\r\n"), None);
        assert_eq!(answer(&[0xff]), None);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_response(&[0xff, 0xfe]), Err(ParseError::NotText));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(ParseError::StatusLine(_))
        ));
        assert!(matches!(parse_response(b"SIP/2.0 999 X\r\n\r\n"), Err(ParseError::StatusLine(_))));
        assert!(matches!(
            parse_response(b"SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\n\r\n"),
            Err(ParseError::Header("Call-ID"))
        ));
        assert!(matches!(
            parse_response(b"SIP/2.0 200 OK\r\nCall-ID: a\r\nCSeq: x\r\n\r\n"),
            Err(ParseError::Header("CSeq"))
        ));
        assert!(matches!(parse_response(b""), Err(ParseError::StatusLine(_))));
    }
}
