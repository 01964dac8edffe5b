//! Address headers (From, To, Contact; RFC 3261 §20.10, §20.20, §20.39):
//! `"display" <uri>;params` or a bare `uri;params`, and the Contact list
//! with its `*` form, `q`, `expires` and `+sip.instance` (RFC 5626).
//!
//! Owns: splitting one address element into display name, URI and header
//! parameters. In the bare form the parameters after the URI belong to the
//! header, not the URI (§20.10). Does not own what the registrar does with
//! a contact.

use super::scan::{self, trim};

/// One address: display name, URI and header parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name, quotes kept; may hold non-UTF-8 bytes.
    pub display: &'a [u8],
    /// The URI, without angle brackets.
    pub uri: &'a [u8],
    /// The header parameters (after the URI), without the first `;`.
    pub params: &'a [u8],
}

/// Why an address element is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed address")]
pub struct AddrError;

impl<'a> NameAddr<'a> {
    /// Split one element (already separated from its neighbours).
    pub fn parse(s: &'a [u8]) -> Result<NameAddr<'a>, AddrError> {
        let s = trim(s);
        let lt = scan::find_unquoted(s, b'<');
        if lt < s.len() {
            let gt = s[lt..].iter().position(|&b| b == b'>').ok_or(AddrError)? + lt;
            let uri = trim(&s[lt + 1..gt]);
            let after = trim(&s[gt + 1..]);
            let params = match after {
                [] => after,
                [b';', p @ ..] => p,
                _ => return Err(AddrError),
            };
            if uri.is_empty() {
                return Err(AddrError);
            }
            return Ok(NameAddr { display: trim(&s[..lt]), uri, params });
        }
        // addr-spec: no display name, no spaces, header params after ';'.
        // A URI with a '?' (or ',' or ';') must be in angle brackets
        // (§20.10), else its headers would be taken for the element's.
        let semi = s.iter().position(|&b| b == b';').unwrap_or(s.len());
        let uri = trim(&s[..semi]);
        if uri.is_empty() || uri.iter().any(|&b| scan::is_lws(b) || b == b'"' || b == b'?') {
            return Err(AddrError);
        }
        let params = if semi < s.len() { &s[semi + 1..] } else { &[] };
        Ok(NameAddr { display: b"", uri, params })
    }

    /// The header parameter `name`.
    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        scan::param(self.params, name)
    }

    /// The `tag` parameter (From, To).
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.param(b"tag").flatten()
    }
}

/// The Contact headers of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts<'a> {
    /// No Contact header.
    None,
    /// `Contact: *`.
    Star,
    /// One or more addresses.
    List(Vec<NameAddr<'a>>),
}

/// A `q` value (`0`, `0.5`, `1.000`) in thousandths.
pub fn q_value(s: &[u8]) -> Option<u16> {
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &b""[..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut milli = match int[0] {
        b'0' => 0u16,
        b'1' => 1000,
        _ => return None,
    };
    for (i, &d) in frac.iter().enumerate() {
        milli += u16::from(d - b'0') * [100, 10, 1][i];
    }
    (milli <= 1000).then_some(milli)
}

/// Every Contact element of `elements` (already split at commas). `*` must
/// be the only element.
pub fn contacts<'a>(
    elements: impl Iterator<Item = &'a [u8]>,
) -> Result<Contacts<'a>, &'static str> {
    let mut list = Vec::new();
    let mut star = false;
    for e in elements {
        if e == b"*" {
            star = true;
        } else {
            list.push(NameAddr::parse(e).map_err(|_| "malformed Contact")?);
        }
    }
    match (star, list.is_empty()) {
        (true, true) => Ok(Contacts::Star),
        (true, false) => Err("Contact * must stand alone"),
        (false, true) => Ok(Contacts::None),
        (false, false) => Ok(Contacts::List(list)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(b"\"Doe, J <x>\" <sip:a@b;lr>;tag=9;q=0.5").unwrap();
        assert_eq!(a.display, b"\"Doe, J <x>\"");
        assert_eq!(a.uri, b"sip:a@b;lr");
        assert_eq!(a.tag(), Some(&b"9"[..]));
        let b = NameAddr::parse(b"sip:a@b;tag=7").unwrap();
        assert_eq!((b.uri, b.params), (&b"sip:a@b"[..], &b"tag=7"[..]));
        let c = NameAddr::parse(b"Bob\xff\xfe <sip:bob@h>").unwrap();
        assert_eq!(c.display, b"Bob\xff\xfe");
        assert!(NameAddr::parse(b"<sip:a@b").is_err());
        assert!(NameAddr::parse(b"<>").is_err());
        assert!(NameAddr::parse(b"<sip:a@b> junk").is_err());
        assert!(NameAddr::parse(b"a b").is_err());
        // RFC 4475 regbadct: headers need the name-addr form.
        assert!(NameAddr::parse(b"sip:u@example.com?Route=%3Csip:x%3E").is_err());
        assert!(NameAddr::parse(b"<sip:u@example.com?Route=%3Csip:x%3E>").is_ok());
    }

    #[test]
    fn q_values() {
        assert_eq!(q_value(b"1"), Some(1000));
        assert_eq!(q_value(b"1.000"), Some(1000));
        assert_eq!(q_value(b"0.5"), Some(500));
        assert_eq!(q_value(b"0.123"), Some(123));
        assert_eq!(q_value(b"0"), Some(0));
        assert_eq!(q_value(b"1.5"), None);
        assert_eq!(q_value(b"0.1234"), None);
        assert_eq!(q_value(b"2"), None);
        assert_eq!(q_value(b""), None);
    }

    #[test]
    fn contact_lists() {
        let e = |v: &'static [u8]| scan::split_commas(v);
        assert_eq!(contacts(e(b"*")), Ok(Contacts::Star));
        assert!(contacts(e(b"*, <sip:a@b>")).is_err());
        assert_eq!(contacts(std::iter::empty()), Ok(Contacts::None));
        match contacts(e(b"<sip:a@b>;expires=60, \"x,y\" <sip:c@d>")).unwrap() {
            Contacts::List(l) => {
                assert_eq!(l.len(), 2);
                assert_eq!(l[0].param(b"expires"), Some(Some(&b"60"[..])));
            }
            other => panic!("{other:?}"),
        }
    }
}
