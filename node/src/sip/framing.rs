//! Cutting a TCP byte stream into SIP messages (RFC 3261 §18.3): the head
//! ends at the first empty line, the body is exactly Content-Length bytes
//! (mandatory on a stream), and a CRLFCRLF between messages is a keep-alive
//! ping to be answered with CRLF (RFC 5626 §3.5.1).
//!
//! Owns: buffering partial reads and the stream limits. Does not own
//! sockets; the transport feeds bytes in and takes frames out, so this is
//! tested without I/O (including every split point of a stream).

use super::message::MAX_MESSAGE;
use super::scan;

/// Largest head (start line and headers) accepted on a stream.
pub const MAX_HEAD: usize = 16 * 1024;

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole message: head, empty line and Content-Length body bytes.
    Message(Vec<u8>),
    /// A CRLFCRLF ping; answer with CRLF.
    Ping,
}

/// Why the stream cannot be read further; the connection must be closed
/// (after a 400 when the head is complete, see [`FrameError::head`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No empty line within [`MAX_HEAD`] bytes.
    #[error("head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The head has no Content-Length, which a stream requires.
    #[error("missing Content-Length")]
    MissingContentLength(Vec<u8>),
    /// Content-Length is not a number.
    #[error("malformed Content-Length")]
    BadContentLength(Vec<u8>),
    /// The message would exceed the size limit.
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge(Vec<u8>),
}

impl FrameError {
    /// The complete head of the offending message, when there is one, so
    /// that a 400 can be sent before closing.
    pub fn head(&self) -> Option<&[u8]> {
        match self {
            FrameError::HeadTooLarge => None,
            FrameError::MissingContentLength(h)
            | FrameError::BadContentLength(h)
            | FrameError::TooLarge(h) => Some(h),
        }
    }
}

/// The per-connection buffer.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out.
    start: usize,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet framed.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            let data = &self.buf[self.start..];
            if data.starts_with(b"\r\n\r\n") {
                self.start += 4;
                return Ok(Some(Frame::Ping));
            }
            if data.starts_with(b"\r\n") {
                if data.len() < 4 && b"\r\n\r\n".starts_with(data) {
                    return Ok(None); // may be the start of a ping
                }
                // A lone CRLF before a message (a pong, or slack) is skipped.
                self.start += 2;
                continue;
            }
            break;
        }
        let data = &self.buf[self.start..];
        let Some(head_end) = find_head_end(data) else {
            if data.len() > MAX_HEAD {
                return Err(FrameError::HeadTooLarge);
            }
            return Ok(None);
        };
        if head_end > MAX_HEAD {
            return Err(FrameError::HeadTooLarge);
        }
        let head = &data[..head_end];
        let length = match content_length(head) {
            Some(Ok(n)) => n,
            Some(Err(())) => return Err(FrameError::BadContentLength(head.to_vec())),
            None => return Err(FrameError::MissingContentLength(head.to_vec())),
        };
        let total = head_end.checked_add(length).filter(|&t| t <= MAX_MESSAGE);
        let Some(total) = total else { return Err(FrameError::TooLarge(head.to_vec())) };
        if data.len() < total {
            return Ok(None);
        }
        let message = data[..total].to_vec();
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(Frame::Message(message)))
    }
}

/// The index just past the head's empty line (`\r\n\r\n`), if present.
fn find_head_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Content-Length (or `l`) from a head: `None` when absent, `Err` when
/// malformed or given twice with different values.
fn content_length(head: &[u8]) -> Option<Result<usize, ()>> {
    let mut found: Option<Result<usize, ()>> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            continue; // a continuation line
        }
        let name = scan::trim(&line[..colon]);
        if !(scan::eq_ci(name, b"Content-Length") || scan::eq_ci(name, b"l")) {
            continue;
        }
        let value = scan::parse_u64(scan::trim(&line[colon + 1..]), 10)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(());
        found = match (found, value) {
            (None, v) => Some(v),
            (Some(Ok(a)), Ok(b)) if a == b => Some(Ok(a)),
            _ => Some(Err(())),
        };
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(body: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn drain(f: &mut Framer) -> Result<Vec<Frame>, FrameError> {
        let mut out = Vec::new();
        while let Some(frame) = f.next_frame()? {
            out.push(frame);
        }
        Ok(out)
    }

    fn stream() -> (Vec<u8>, Vec<Frame>) {
        let (a, b) = (msg(""), msg("v=0\r\n"));
        let mut s = Vec::new();
        s.extend_from_slice(b"\r\n\r\n");
        s.extend_from_slice(&a);
        s.extend_from_slice(&b);
        s.extend_from_slice(b"\r\n\r\n");
        s.extend_from_slice(&a);
        (
            s,
            vec![
                Frame::Ping,
                Frame::Message(a.clone()),
                Frame::Message(b),
                Frame::Ping,
                Frame::Message(a),
            ],
        )
    }

    #[test]
    fn several_messages_in_one_read() {
        let (s, want) = stream();
        let mut f = Framer::new();
        f.push(&s);
        assert_eq!(drain(&mut f).unwrap(), want);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let (s, want) = stream();
        for cut in 0..=s.len() {
            let mut f = Framer::new();
            let mut got = Vec::new();
            f.push(&s[..cut]);
            got.extend(drain(&mut f).unwrap());
            f.push(&s[cut..]);
            got.extend(drain(&mut f).unwrap());
            assert_eq!(got, want, "split at {cut}");
        }
    }

    proptest! {
        /// Any chunking of the stream, not only one cut, frames the same.
        #[test]
        fn any_chunking_gives_the_same_frames(cuts in proptest::collection::vec(0usize..400, 0..12)) {
            let (s, want) = stream();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (s.len() + 1)).collect();
            cuts.sort_unstable();
            let mut f = Framer::new();
            let mut got = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([s.len()]) {
                f.push(&s[last..c]);
                last = c;
                got.extend(drain(&mut f).unwrap());
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn refusals() {
        let mut f = Framer::new();
        f.push(b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n");
        assert!(matches!(f.next_frame(), Err(FrameError::MissingContentLength(_))));
        let mut f = Framer::new();
        f.push(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: ten\r\n\r\n");
        assert!(matches!(f.next_frame(), Err(FrameError::BadContentLength(_))));
        let mut f = Framer::new();
        f.push(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 9999999\r\n\r\n");
        assert!(matches!(f.next_frame(), Err(FrameError::TooLarge(_))));
        let mut f = Framer::new();
        f.push(b"OPTIONS sip:x SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(matches!(f.next_frame(), Err(FrameError::BadContentLength(_))));
        let mut f = Framer::new();
        f.push(&vec![b'a'; MAX_HEAD + 1]);
        assert_eq!(f.next_frame(), Err(FrameError::HeadTooLarge));
    }

    #[test]
    fn waits_for_the_whole_body() {
        let m = msg("0123456789");
        let mut f = Framer::new();
        f.push(&m[..m.len() - 1]);
        assert_eq!(f.next_frame(), Ok(None));
        f.push(&m[m.len() - 1..]);
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(m))));
    }
}
