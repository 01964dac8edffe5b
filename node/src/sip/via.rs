//! The topmost Via (RFC 3261 §18.2, §20.42; RFC 3581 `rport`): where a
//! response goes, and the `received`/`rport` parameters the server adds.
//!
//! Owns: parsing `SIP/2.0/UDP host:port;params` and deciding the reply
//! address of a request that came over UDP. Does not own sockets.

use std::net::{IpAddr, SocketAddr};

use super::scan::{self, trim};
use super::uri::split_host_port;

/// A parsed Via element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// `UDP`, `TCP`, `TLS`, ...
    pub transport: &'a [u8],
    /// The sent-by host (brackets kept for IPv6).
    pub host: &'a [u8],
    /// The sent-by port.
    pub port: Option<u16>,
    /// Parameters, without the first `;`.
    pub params: &'a [u8],
}

/// Why a Via is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed Via")]
pub struct ViaError;

impl<'a> Via<'a> {
    /// Parse one Via element (already split at commas).
    pub fn parse(s: &'a [u8]) -> Result<Via<'a>, ViaError> {
        let s = trim(s);
        // "SIP / 2.0 / UDP" may carry white space around the slashes.
        let mut parts = s.splitn(3, |&b| b == b'/');
        let (name, version, rest) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (trim(a), trim(b), trim(c)),
            _ => return Err(ViaError),
        };
        if !scan::eq_ci(name, b"SIP") || version != b"2.0" {
            return Err(ViaError);
        }
        let sp = rest.iter().position(|&b| scan::is_lws(b)).ok_or(ViaError)?;
        let transport = &rest[..sp];
        if !scan::is_token(transport) {
            return Err(ViaError);
        }
        let after = trim(&rest[sp..]);
        let semi = after.iter().position(|&b| b == b';').unwrap_or(after.len());
        let (host, port) = split_host_port(trim(&after[..semi])).map_err(|_| ViaError)?;
        let params = if semi < after.len() { &after[semi + 1..] } else { &[] };
        Ok(Via { transport, host, port, params })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a [u8]> {
        scan::param(self.params, b"branch").flatten()
    }

    /// Whether the client asked for `rport` (RFC 3581 §3).
    pub fn wants_rport(&self) -> bool {
        scan::param(self.params, b"rport").is_some()
    }

    /// Whether the sent-by host is literally `ip`.
    pub fn sent_by_is(&self, ip: IpAddr) -> bool {
        let host = self.host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]"));
        let host = host.unwrap_or(self.host);
        std::str::from_utf8(host).ok().and_then(|h| h.parse::<IpAddr>().ok()) == Some(ip)
    }

    /// Where a response to a UDP request goes (RFC 3261 §18.2.2, RFC 3581
    /// §4): with `rport`, back to the packet's source address and port;
    /// otherwise to the source address (what `received` names) at the
    /// sent-by port, 5060 when none is given. `maddr` is not honoured: a
    /// registrar answers the host that asked.
    pub fn reply_target(&self, source: SocketAddr) -> SocketAddr {
        if self.wants_rport() {
            source
        } else {
            SocketAddr::new(source.ip(), self.port.unwrap_or(5060))
        }
    }
}

/// Append the topmost Via value `value`, with `received` added when the
/// sent-by host is not the source address and `rport` filled in when the
/// client asked for it (RFC 3581 §4: then `received` is always added).
pub fn write_topmost(out: &mut Vec<u8>, value: &[u8], source: SocketAddr) {
    let Ok(via) = Via::parse(value) else {
        out.extend_from_slice(value);
        return;
    };
    let rport = via.wants_rport();
    let add_received = rport || !via.sent_by_is(source.ip());
    if !add_received {
        out.extend_from_slice(value);
        return;
    }
    // Copy the value, dropping any received/rport the client put there, then
    // append ours.
    let head_len = value.len() - via.params.len();
    out.extend_from_slice(trim_semicolon(&value[..head_len]));
    for p in scan::params(via.params) {
        if scan::eq_ci(p.name, b"rport") || scan::eq_ci(p.name, b"received") {
            continue;
        }
        out.push(b';');
        out.extend_from_slice(p.name);
        if let Some(v) = p.value {
            out.push(b'=');
            out.extend_from_slice(v);
        }
    }
    out.extend_from_slice(b";received=");
    out.extend_from_slice(source.ip().to_string().as_bytes());
    if rport {
        out.extend_from_slice(b";rport=");
        out.extend_from_slice(source.port().to_string().as_bytes());
    }
}

fn trim_semicolon(s: &[u8]) -> &[u8] {
    let s = trim(s);
    s.strip_suffix(b";").map_or(s, trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> SocketAddr {
        "10.0.0.7:40000".parse().unwrap()
    }

    #[test]
    fn parses_sent_by_and_params() {
        let v = Via::parse(b"SIP / 2.0 / UDP  [::1]:5070 ;branch=z9hG4bKx;rport").unwrap();
        assert_eq!((v.transport, v.host, v.port), (&b"UDP"[..], &b"[::1]"[..], Some(5070)));
        assert_eq!(v.branch(), Some(&b"z9hG4bKx"[..]));
        assert!(v.wants_rport());
        assert!(Via::parse(b"SIP/3.0/UDP h").is_err());
        assert!(Via::parse(b"SIP/2.0/UDP").is_err());
        assert!(Via::parse(b"garbage").is_err());
    }

    #[test]
    fn reply_target_follows_rport_or_sent_by_port() {
        let with = Via::parse(b"SIP/2.0/UDP phone.example;rport;branch=z9hG4bK1").unwrap();
        assert_eq!(with.reply_target(src()), src());
        let without = Via::parse(b"SIP/2.0/UDP 192.0.2.1:5080;branch=z9hG4bK1").unwrap();
        assert_eq!(without.reply_target(src()), "10.0.0.7:5080".parse().unwrap());
        let default = Via::parse(b"SIP/2.0/UDP 10.0.0.7;branch=z9hG4bK1").unwrap();
        assert_eq!(default.reply_target(src()), "10.0.0.7:5060".parse().unwrap());
    }

    #[test]
    fn received_and_rport_are_written() {
        let mut out = Vec::new();
        write_topmost(&mut out, b"SIP/2.0/UDP phone.example;rport;branch=z9hG4bK1", src());
        assert_eq!(
            out,
            b"SIP/2.0/UDP phone.example;branch=z9hG4bK1;received=10.0.0.7;rport=40000".to_vec()
        );
        out.clear();
        write_topmost(&mut out, b"SIP/2.0/UDP 10.0.0.7:40000;branch=z9hG4bK1", src());
        assert_eq!(out, b"SIP/2.0/UDP 10.0.0.7:40000;branch=z9hG4bK1".to_vec());
        out.clear();
        write_topmost(&mut out, b"SIP/2.0/UDP 192.0.2.1;branch=b", src());
        assert_eq!(out, b"SIP/2.0/UDP 192.0.2.1;branch=b;received=10.0.0.7".to_vec());
    }
}
