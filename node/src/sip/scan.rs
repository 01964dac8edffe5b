//! Byte-level helpers shared by the SIP parsers: trimming, case-insensitive
//! comparison, splitting a header value at the commas that separate its
//! elements, and walking `;name=value` parameters.
//!
//! Owns: the lexical rules of RFC 3261 §25.1 that every header shares
//! (linear white space, which includes folded line breaks; quoted strings
//! with backslash escapes; `<...>` around URIs). Does not own any header's
//! meaning. Everything works on `&[u8]`: a display name may hold bytes that
//! are not UTF-8, and that must not stop the rest of the header from being
//! read.
//!
//! Written by hand rather than with a parser-combinator crate: the grammar
//! needed is a handful of delimiters, and the hot path (one REGISTER or
//! INVITE) must not allocate.

/// Linear white space, including the CR and LF of a folded header line.
pub fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `s` without leading and trailing linear white space.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

/// ASCII case-insensitive equality.
pub fn eq_ci(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// A decimal number of at most `max_digits` digits, nothing else.
pub fn parse_u64(s: &[u8], max_digits: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max_digits {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// A 32-bit decimal number (at most 10 digits, no overflow).
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s, 10).and_then(|n| u32::try_from(n).ok())
}

/// Where the element that starts at `s[0]` ends: the index of the first
/// `stop` byte that is outside a quoted string and outside `<...>`, or
/// `s.len()`. An unterminated quote or bracket runs to the end.
pub fn find_unquoted(s: &[u8], stop: u8) -> usize {
    let mut i = 0;
    let mut quoted = false;
    let mut angle = false;
    while i < s.len() {
        let b = s[i];
        if quoted {
            match b {
                b'\\' => i += 1,
                b'"' => quoted = false,
                _ => {}
            }
        } else if angle {
            if b == b'>' {
                angle = false;
            }
        } else if b == stop {
            return i;
        } else if b == b'"' {
            quoted = true;
        } else if b == b'<' {
            angle = true;
        }
        i += 1;
    }
    s.len()
}

/// The comma-separated elements of a header value, trimmed; empty elements
/// are skipped. Commas inside quoted display names and inside `<...>` do not
/// separate.
pub fn split_commas(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = value;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let end = find_unquoted(rest, b',');
        let item = trim(&rest[..end]);
        rest = if end < rest.len() { &rest[end + 1..] } else { &[] };
        if !item.is_empty() {
            return Some(item);
        }
    })
}

/// One `name` or `name=value` parameter. The value keeps its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    /// The parameter's name, as written.
    pub name: &'a [u8],
    /// Its value, when it has one.
    pub value: Option<&'a [u8]>,
}

/// The `;`-separated parameters of `s` (which starts after the first `;`,
/// or with it). Quoted values may contain `;`.
pub fn params(s: &[u8]) -> impl Iterator<Item = Param<'_>> {
    let mut rest = s;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let end = find_unquoted(rest, b';');
        let item = trim(&rest[..end]);
        rest = if end < rest.len() { &rest[end + 1..] } else { &[] };
        if item.is_empty() {
            continue;
        }
        return Some(match item.iter().position(|&b| b == b'=') {
            Some(eq) => Param { name: trim(&item[..eq]), value: Some(trim(&item[eq + 1..])) },
            None => Param { name: item, value: None },
        });
    })
}

/// The parameter `name` (case-insensitive) of `s`: `None` when absent,
/// `Some(None)` when present without a value.
pub fn param<'a>(s: &'a [u8], name: &[u8]) -> Option<Option<&'a [u8]>> {
    params(s).find(|p| eq_ci(p.name, name)).map(|p| p.value)
}

/// `s` without surrounding double quotes (escapes are kept).
pub fn unquote(s: &[u8]) -> &[u8] {
    if s.len() >= 2 && s[0] == b'"' && s[s.len() - 1] == b'"' {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// A SIP token (RFC 3261 §25.1): what a method or a parameter name is made of.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_inside_quotes_and_brackets_do_not_split() {
        let v = b"\"Doe, John\" <sip:a@x;a=1,b>;q=0.5, <sip:b@y> ,, sip:c@z";
        let items: Vec<_> = split_commas(v).collect();
        assert_eq!(
            items,
            vec![&b"\"Doe, John\" <sip:a@x;a=1,b>;q=0.5"[..], b"<sip:b@y>", b"sip:c@z"]
        );
    }

    #[test]
    fn escaped_quote_does_not_end_a_quoted_string() {
        let v = br#""a \" , b" <sip:x@y>, <sip:z@w>"#;
        assert_eq!(split_commas(v).count(), 2);
    }

    #[test]
    fn params_and_lookup() {
        let p = b";tag=abc ; lr;foo=\"a;b\"";
        let all: Vec<_> = params(p).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(param(p, b"TAG"), Some(Some(&b"abc"[..])));
        assert_eq!(param(p, b"lr"), Some(None));
        assert_eq!(param(p, b"foo"), Some(Some(&b"\"a;b\""[..])));
        assert_eq!(param(p, b"x"), None);
    }

    #[test]
    fn numbers_are_strict() {
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"12a"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u64(b"00000000000000000001", 10), None);
    }

    #[test]
    fn trim_handles_folding_and_empty() {
        assert_eq!(trim(b" \r\n\t x y \r\n "), b"x y");
        assert_eq!(trim(b" \r\n"), b"");
        assert_eq!(trim(b""), b"");
    }
}
