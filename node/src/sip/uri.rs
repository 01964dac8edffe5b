//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), split into their
//! parts as slices of the original bytes.
//!
//! Owns: the split into scheme, user, host, port, parameters and headers,
//! including bracketed IPv6 hosts (RFC 5118). Does not own what a user part
//! means to the dial plan (the redirect server strips visual separators).

use super::scan;

/// A URI scheme this server understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`.
    Sip,
    /// `sips:`.
    Sips,
    /// `tel:`.
    Tel,
}

/// Why a URI is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not `sip:`, `sips:` or `tel:`.
    #[error("unsupported URI scheme")]
    Scheme,
    /// The parts do not follow the grammar.
    #[error("malformed URI")]
    Malformed,
}

/// A parsed URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    /// The scheme.
    pub scheme: Scheme,
    /// The user part (for `tel:`, the number), without its password.
    pub user: Option<&'a [u8]>,
    /// The host, brackets kept for IPv6 (empty for `tel:`).
    pub host: &'a [u8],
    /// The port, when given.
    pub port: Option<u16>,
    /// `;`-separated URI parameters, without the first `;`.
    pub params: &'a [u8],
    /// `?`-separated headers, when present.
    pub headers: Option<&'a [u8]>,
}

impl<'a> Uri<'a> {
    /// Split `s`.
    pub fn parse(s: &'a [u8]) -> Result<Uri<'a>, UriError> {
        let colon = s.iter().position(|&b| b == b':').ok_or(UriError::Malformed)?;
        let scheme = match &s[..colon] {
            x if scan::eq_ci(x, b"sip") => Scheme::Sip,
            x if scan::eq_ci(x, b"sips") => Scheme::Sips,
            x if scan::eq_ci(x, b"tel") => Scheme::Tel,
            _ => return Err(UriError::Scheme),
        };
        let rest = &s[colon + 1..];
        if rest.is_empty() || rest.iter().any(|&b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>')
        {
            return Err(UriError::Malformed);
        }
        if scheme == Scheme::Tel {
            let (rest, headers) = split_headers(rest);
            let (number, params) = split_at_byte(rest, b';');
            if number.is_empty() {
                return Err(UriError::Malformed);
            }
            return Ok(Uri { scheme, user: Some(number), host: b"", port: None, params, headers });
        }
        // The user part ends at the last '@'; a ';' or '?' in the user part
        // is allowed (RFC 3261 user-unreserved), while neither parameters
        // nor headers may hold a bare '@'. So split on '@' first and look
        // for the headers' '?' only after it.
        let (user, hostport_params) = match rest.iter().rposition(|&b| b == b'@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let user = userinfo.split(|&b| b == b':').next().unwrap_or(userinfo);
                if user.is_empty() {
                    return Err(UriError::Malformed);
                }
                (Some(user), &rest[at + 1..])
            }
            None => (None, rest),
        };
        let (hostport_params, headers) = split_headers(hostport_params);
        let (hostport, params) = split_at_byte(hostport_params, b';');
        let (host, port) = split_host_port(hostport)?;
        Ok(Uri { scheme, user, host, port, params, headers })
    }

    /// The URI parameter `name`.
    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        scan::param(self.params, name)
    }
}

/// `s` split at the `?` that starts the headers, if any.
fn split_headers(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == b'?') {
        Some(q) => (&s[..q], Some(&s[q + 1..])),
        None => (s, None),
    }
}

/// `s` split at the first `b` (exclusive on both sides); the right side is
/// empty when there is none.
fn split_at_byte(s: &[u8], b: u8) -> (&[u8], &[u8]) {
    match s.iter().position(|&c| c == b) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[]),
    }
}

/// `host[:port]`, with `[v6]` hosts.
pub fn split_host_port(s: &[u8]) -> Result<(&[u8], Option<u16>), UriError> {
    let (host, port) = if s.first() == Some(&b'[') {
        let close = s.iter().position(|&b| b == b']').ok_or(UriError::Malformed)?;
        let host = &s[..=close];
        match &s[close + 1..] {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return Err(UriError::Malformed),
        }
    } else {
        match s.iter().position(|&b| b == b':') {
            Some(c) => (&s[..c], Some(&s[c + 1..])),
            None => (s, None),
        }
    };
    if host.is_empty() || !host.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
    {
        return Err(UriError::Malformed);
    }
    let port = match port {
        Some(p) => Some(
            scan::parse_u32(p).and_then(|p| u16::try_from(p).ok()).ok_or(UriError::Malformed)?,
        ),
        None => None,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u =
            Uri::parse(b"sip:+4412;x=y:pw@Example.COM:5070;transport=tcp;lr?subject=hi").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some(&b"+4412;x=y"[..]));
        assert_eq!(u.host, b"Example.COM");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param(b"transport"), Some(Some(&b"tcp"[..])));
        assert_eq!(u.param(b"lr"), Some(None));
        assert_eq!(u.headers, Some(&b"subject=hi"[..]));
    }

    #[test]
    fn a_question_mark_in_the_user_part_is_not_the_headers() {
        // RFC 4475 intmeth: '?' is user-unreserved.
        let u = Uri::parse(b"sip:1_un.URI~(sure)&isn't+it$/crazy?,/;;*:&pw=1,x@example.com;lr?h=v")
            .unwrap();
        assert_eq!(u.user, Some(&b"1_un.URI~(sure)&isn't+it$/crazy?,/;;*"[..]));
        assert_eq!(
            (u.host, u.params, u.headers),
            (&b"example.com"[..], &b"lr"[..], Some(&b"h=v"[..]))
        );
        let e = Uri::parse(b"sip:user@example.com?Route=%3Csip:example.com%3E").unwrap();
        assert_eq!(
            (e.host, e.headers),
            (&b"example.com"[..], Some(&b"Route=%3Csip:example.com%3E"[..]))
        );
        assert_eq!(Uri::parse(b"tel:+1;a=b?c").unwrap().headers, Some(&b"c"[..]));
    }

    #[test]
    fn ipv6_and_tel() {
        let u = Uri::parse(b"sips:[2001:db8::10]:5061").unwrap();
        assert_eq!((u.host, u.port, u.user), (&b"[2001:db8::10]"[..], Some(5061), None));
        let t = Uri::parse(b"tel:+1-201-555-0123;phone-context=x").unwrap();
        assert_eq!(t.user, Some(&b"+1-201-555-0123"[..]));
        assert_eq!(t.params, b"phone-context=x");
    }

    #[test]
    fn refusals() {
        assert_eq!(Uri::parse(b"http://x"), Err(UriError::Scheme));
        assert_eq!(Uri::parse(b"sip:"), Err(UriError::Malformed));
        assert_eq!(Uri::parse(b"sip:a@"), Err(UriError::Malformed));
        assert_eq!(Uri::parse(b"sip:a@h:99999"), Err(UriError::Malformed));
        assert_eq!(Uri::parse(b"sip:a@[::1"), Err(UriError::Malformed));
        assert_eq!(Uri::parse(b"sip:a b@h"), Err(UriError::Malformed));
        assert_eq!(Uri::parse(b"nocolon"), Err(UriError::Malformed));
    }
}
