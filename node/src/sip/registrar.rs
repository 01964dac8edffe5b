//! The registrar of seed 002 spoken over SIP (RFC 3261 §10.3): a REGISTER
//! becomes one replicated [`Command::SipRegister`], or an answer that needs
//! no write (a query, a refusal, a retransmission).
//!
//! Owns: reading the address of record, the contacts, their expiry, `q` and
//! device identity out of the request; the refusals of §10.3 (404, 420,
//! 423, `*` rules); telling a retransmission or a stale request from a new
//! one against the bindings the state holds; the Contact list of the 200.
//! Pure: the server passes the message, the limits, the bindings and the
//! time. Does not own authentication ([`super::server`] checks it first)
//! nor the write.

use std::fmt::Write as _;

use switchboard_storage::state::command::SipContact;
use switchboard_storage::state::command::{MAX_ID_LEN, MAX_TEXT_LEN};
use switchboard_storage::state::registrations::Binding;
use switchboard_storage::state::{dialplan::validate_digits, Command, NodeId};

use super::addr::{contacts, q_value, Contacts, NameAddr};
use super::message::{Message, Name};
use super::scan;
use super::uri::{Scheme, Uri};

/// Most contacts one REGISTER may carry (the storage limit).
pub const MAX_CONTACTS: usize = switchboard_storage::state::command::MAX_SIP_CONTACTS;

/// Expiry bounds, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Shorter requests get 423 with Min-Expires.
    pub min_s: u32,
    /// Longer requests are shortened to this.
    pub max_s: u32,
    /// Used when neither the contact nor the request gives one.
    pub default_s: u32,
}

/// A REGISTER the registrar refuses without a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status code.
    pub code: u16,
    /// Why, for the Warning header.
    pub why: String,
    /// For 423: the Min-Expires value.
    pub min_expires: Option<u32>,
    /// For 420: the option tags not supported.
    pub unsupported: Option<String>,
}

impl Refusal {
    fn new(code: u16, why: impl Into<String>) -> Refusal {
        Refusal { code, why: why.into(), min_expires: None, unsupported: None }
    }
}

/// What a REGISTER asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// No Contact: list the bindings of `number`.
    Query {
        /// The address of record's user part.
        number: String,
    },
    /// Add, refresh or remove bindings.
    Change(Command),
}

impl Request {
    /// The number the request is about.
    pub fn number(&self) -> &str {
        match self {
            Request::Query { number } => number,
            Request::Change(Command::SipRegister { number, .. }) => number,
            Request::Change(_) => "",
        }
    }
}

/// The number a REGISTER's To names (its address of record).
pub fn aor(msg: &Message<'_>) -> Result<String, Refusal> {
    let to = msg.first(Name::To).ok_or_else(|| Refusal::new(400, "missing To"))?;
    let to = NameAddr::parse(to).map_err(|_| Refusal::new(400, "malformed To"))?;
    let uri = Uri::parse(to.uri).map_err(|_| Refusal::new(400, "malformed To URI"))?;
    let user = match (uri.scheme, uri.user) {
        (Scheme::Sip | Scheme::Sips | Scheme::Tel, Some(u)) => u,
        _ => return Err(Refusal::new(404, "the address of record has no user part")),
    };
    let number = digits_of(user);
    validate_digits(&number)
        .map_err(|e| Refusal::new(404, format!("not an address of record here: {e}")))?;
    Ok(number)
}

/// The dialable characters of a URI user part: the part before any `;`
/// parameters, with the visual separators of RFC 3966 (`-`, `.`, `(`, `)`)
/// removed. Anything else stays, for validation to refuse.
pub fn digits_of(user: &[u8]) -> String {
    let end = user.iter().position(|&b| b == b';').unwrap_or(user.len());
    String::from_utf8_lossy(&user[..end])
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
        .collect()
}

/// Decode a REGISTER that passed [`Message::check`], received by `node`.
pub fn decode(msg: &Message<'_>, node: NodeId, limits: &Limits) -> Result<Request, Refusal> {
    let number = aor(msg)?;
    let required: Vec<&[u8]> = msg.elements(Name::Require).collect();
    if !required.is_empty() {
        let tags: Vec<String> =
            required.iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect();
        let mut r = Refusal::new(420, "no extension is supported");
        r.unsupported = Some(tags.join(", "));
        return Err(r);
    }
    let header_expires = match msg.expires() {
        Some(Ok(e)) => Some(e),
        Some(Err(_)) => return Err(Refusal::new(400, "malformed Expires")),
        None => None,
    };
    let cseq = msg.cseq().ok_or_else(|| Refusal::new(400, "malformed CSeq"))?;
    let call_id = msg.call_id().unwrap_or_default().to_owned();
    if call_id.len() > MAX_ID_LEN {
        return Err(Refusal::new(400, format!("Call-ID longer than {MAX_ID_LEN} bytes")));
    }
    let list = match contacts(msg.elements(Name::Contact)).map_err(|e| Refusal::new(400, e))? {
        Contacts::None => return Ok(Request::Query { number }),
        Contacts::Star => {
            if header_expires != Some(0) {
                return Err(Refusal::new(400, "Contact * needs Expires: 0"));
            }
            return Ok(Request::Change(Command::SipRegister {
                number,
                call_id,
                cseq: cseq.number,
                node,
                remove_all: true,
                contacts: Vec::new(),
            }));
        }
        Contacts::List(list) => list,
    };
    if list.len() > MAX_CONTACTS {
        return Err(Refusal::new(403, format!("more than {MAX_CONTACTS} contacts")));
    }
    let device_name =
        msg.first(Name::UserAgent).map(|ua| printable(ua, MAX_TEXT_LEN)).unwrap_or_default();
    let mut out = Vec::with_capacity(list.len());
    for c in &list {
        let uri = std::str::from_utf8(c.uri)
            .ok()
            .filter(|u| Uri::parse(u.as_bytes()).is_ok() && u.len() <= MAX_TEXT_LEN)
            .ok_or_else(|| Refusal::new(400, "malformed Contact URI"))?;
        let expires = match c.param(b"expires") {
            Some(Some(v)) => {
                scan::parse_u32(v).ok_or_else(|| Refusal::new(400, "malformed Contact expires"))?
            }
            Some(None) => return Err(Refusal::new(400, "Contact expires without a value")),
            None => header_expires.unwrap_or(limits.default_s),
        };
        if expires != 0 && expires < limits.min_s {
            let mut r = Refusal::new(423, format!("expiry {expires} s is below {}", limits.min_s));
            r.min_expires = Some(limits.min_s);
            return Err(r);
        }
        let q = match c.param(b"q") {
            Some(Some(v)) => q_value(v).ok_or_else(|| Refusal::new(400, "malformed q"))?,
            Some(None) => return Err(Refusal::new(400, "q without a value")),
            None => 1000,
        };
        out.push(SipContact {
            device_id: device_id(c, uri),
            contact: uri.to_owned(),
            device_name: device_name.clone(),
            q,
            ttl_ms: u64::from(expires.min(limits.max_s)) * 1000,
        });
    }
    Ok(Request::Change(Command::SipRegister {
        number,
        call_id,
        cseq: cseq.number,
        node,
        remove_all: false,
        contacts: out,
    }))
}

/// The device a contact stands for: its `+sip.instance` (RFC 5626 §4.1)
/// when given, which survives a change of address; else the contact URI.
/// An identifier too long or with spaces is replaced by a stable hash of
/// itself, so it still names the same device next time.
fn device_id(c: &NameAddr<'_>, uri: &str) -> String {
    let raw = match c.param(b"+sip.instance") {
        Some(Some(v)) => {
            let v = scan::unquote(v);
            v.strip_prefix(b"<").and_then(|v| v.strip_suffix(b">")).unwrap_or(v)
        }
        _ => uri.as_bytes(),
    };
    match std::str::from_utf8(raw) {
        Ok(s)
            if !s.is_empty()
                && s.len() <= MAX_ID_LEN
                && !s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            s.to_owned()
        }
        _ => format!("contact-{:016x}", super::stateless::fnv1a(&[raw])),
    }
}

/// `raw` as text for a stored field: lossy UTF-8, control characters
/// dropped, cut to `max` bytes at a character boundary.
fn printable(raw: &[u8], max: usize) -> String {
    let mut s: String = String::from_utf8_lossy(raw).chars().filter(|c| !c.is_control()).collect();
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// How a change relates to what the state already holds for its Call-ID
/// (RFC 3261 §10.3 step 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Not seen: write it.
    New,
    /// Every binding it names was last written by this very Call-ID and
    /// CSeq: it is a retransmission; answer without writing.
    Retransmission,
    /// A binding it names was written by the same Call-ID with a higher
    /// CSeq (or with the same CSeq while others were not): 400.
    Stale,
}

/// Judge `command` against the number's current `bindings`.
pub fn order(command: &Command, bindings: &[Binding]) -> Order {
    let Command::SipRegister { call_id, cseq, remove_all, contacts, .. } = command else {
        return Order::New;
    };
    let named = bindings
        .iter()
        .filter(|b| *remove_all || contacts.iter().any(|c| c.device_id == b.device_id));
    let (mut same, mut others, mut higher) = (0, 0, false);
    for b in named {
        match &b.sip {
            Some(o) if o.call_id == *call_id && o.cseq == *cseq => same += 1,
            Some(o) if o.call_id == *call_id && o.cseq > *cseq => higher = true,
            _ => others += 1,
        }
    }
    // Removals leave nothing to compare with: a retransmitted removal finds
    // no binding and is written again, which changes nothing.
    let adds = contacts.iter().filter(|c| c.ttl_ms > 0).count();
    if higher || (same > 0 && others > 0) {
        Order::Stale
    } else if same > 0 && same >= adds {
        Order::Retransmission
    } else {
        Order::New
    }
}

/// The Contact header values of a 200: every binding still live at
/// `now_ms`, with its remaining expiry in whole seconds, rounded to the
/// nearest (a binding granted 600 s reads 600 whether the entry's time is a
/// little before or after this node's clock) and never 0 while it lives.
pub fn contact_values(bindings: &[Binding], now_ms: u64) -> Vec<String> {
    bindings
        .iter()
        .filter(|b| b.expires_at_ms > now_ms)
        .map(|b| {
            let left = ((b.expires_at_ms - now_ms + 500) / 1000).max(1);
            let mut v = format!("<{}>;expires={left}", b.contact);
            if b.q != 1000 {
                let _ = write!(v, ";q=0.{:03}", b.q);
            }
            if b.device_id.starts_with("urn:") {
                let _ = write!(v, ";+sip.instance=\"<{}>\"", b.device_id);
            }
            v
        })
        .collect()
}

#[cfg(test)]
#[path = "registrar_tests.rs"]
mod tests;
