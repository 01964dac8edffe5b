//! What a stateless server needs to answer the same request the same way
//! twice (RFC 3261 §8.2.6.2, §16.11): a To-tag derived from the request
//! itself, and the Warning header that says why a request was refused.
//!
//! Owns: the hash and the Warning syntax. FNV-1a is written here (a dozen
//! lines) rather than pulled in as a crate: it needs to be deterministic
//! across nodes and restarts, not collision-resistant against an attacker
//! (a forged tag only confuses the forger's own dialog).

use super::message::{Message, Name};
use super::via::Via;

/// 64-bit FNV-1a over the concatenation of `parts`, with a separator so
/// that `["ab","c"]` and `["a","bc"]` differ.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A To-tag that is the same for every retransmission of `req` and differs
/// between requests: a hash of the Call-ID, the From header, the CSeq and
/// the topmost Via's branch.
pub fn to_tag(req: &Message<'_>) -> String {
    let branch = req
        .elements(Name::Via)
        .next()
        .and_then(|v| Via::parse(v).ok())
        .and_then(|v| v.branch())
        .unwrap_or_default();
    let h = fnv1a(&[
        req.first(Name::CallId).unwrap_or_default(),
        req.first(Name::From).unwrap_or_default(),
        req.first(Name::CSeq).unwrap_or_default(),
        branch,
    ]);
    format!("sb{h:016x}")
}

/// A Warning value (RFC 3261 §20.43): code 399 (miscellaneous), agent
/// `switchboard`, and `text` quoted with quotes, backslashes and control
/// characters removed, cut to 200 bytes.
pub fn warning(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .scan(0usize, |len, c| {
            *len += c.len_utf8();
            (*len <= 200).then_some(c)
        })
        .collect();
    format!("399 switchboard \"{clean}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_keeps_splits_apart() {
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_eq!(fnv1a(&[b"x"]), fnv1a(&[b"x"]));
    }

    #[test]
    fn tag_is_stable_and_request_specific() {
        let a = b"INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        let b = b"INVITE sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        let (a, b) = (Message::parse(a).unwrap(), Message::parse(b).unwrap());
        assert_eq!(to_tag(&a), to_tag(&a.clone()));
        assert_ne!(to_tag(&a), to_tag(&b));
    }

    #[test]
    fn warning_cannot_break_the_header() {
        assert_eq!(warning("bad \"x\"\r\n\\"), "399 switchboard \"bad x\"");
        assert_eq!(warning(&"é".repeat(300)).len(), "399 switchboard \"\"".len() + 200);
    }
}
