//! SIP digest authentication, server side (RFC 3261 §22, RFC 2617, RFC
//! 7616; `qop=auth`, MD5 and SHA-256): parse an `Authorization` header
//! value, build a `WWW-Authenticate` challenge, verify a response against
//! the stored HA1.
//!
//! Owns: the header grammar, the nonce format and the response arithmetic.
//! Pure: no I/O, no clock (the caller passes `now_ms`), no randomness, no
//! state. Does not own: where credentials live (the replicated `users`
//! table and `sip_secret`, see `switchboard_storage::state::users`), nor
//! when authentication is required or which status code to answer (the
//! registrar).
//!
//! # Nonces
//!
//! Nonces are stateless, so any node can check a nonce any other node minted
//! without sharing a table: `hex(t) || hex(mac)`, where `t` is the minting
//! time (ms since the epoch, 8 bytes big-endian) and `mac` is the first 16
//! bytes of `HMAC-SHA256(secret, "switchboard-digest-nonce-v1" || t || realm)`.
//! 48 hex characters in all. The MAC is cut to 128 bits: forging one is
//! still a 2^-128 guess per attempt, and the nonce stays short enough for
//! any SIP client's buffers. The realm is in the MAC so a nonce minted for
//! one realm is refused in another; the label makes the key's use in this
//! construction distinct from any other use of the same secret.
//!
//! # What is not protected
//!
//! Because nothing remembers which nonces were used, and `nc` is not
//! tracked, a captured `Authorization` header can be replayed by someone who
//! sees it for as long as its nonce lives (`nonce_ttl`, 5 minutes by
//! default). For REGISTER that lets an on-path attacker re-send the very
//! same registration (same Contact, same To) the device just made, which
//! changes nothing the device did not already ask for; it does not let them
//! register another contact (the registrar must answer a *different*
//! request with a fresh challenge, and the response does not cover headers
//! or body anyway: `qop=auth-int` is not offered). An attacker who can read
//! the signalling can already do worse, so this is the usual trade-off of a
//! clustered registrar; use TLS where it matters.
//!
//! Secrets are compared in constant time (`subtle`): the nonce MAC and the
//! response. Usernames and realms are not secret.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchboard_storage::state::users::User;

/// Longest `Authorization` value accepted, in bytes; longer ones are refused
/// before any parsing.
pub const MAX_HEADER_LEN: usize = 4096;
/// How far in the future (ms) a nonce's timestamp may be before it is
/// treated as stale: the node that minted it may have a clock a little
/// ahead of the one checking it.
pub const MAX_CLOCK_SKEW_MS: u64 = 30_000;

/// Domain-separation label of the nonce MAC.
const NONCE_LABEL: &[u8] = b"switchboard-digest-nonce-v1";
/// Bytes of HMAC output kept in a nonce.
const NONCE_MAC_LEN: usize = 16;
/// Hex characters in a nonce: 8 timestamp bytes and the MAC.
const NONCE_HEX_LEN: usize = 2 * (8 + NONCE_MAC_LEN);

/// A digest hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 2617; the default when a header names none).
    Md5,
    /// SHA-256 (RFC 7616).
    Sha256,
}

impl Algorithm {
    /// The name used in `algorithm=` parameters.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Digest output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha256 => 32,
        }
    }

    /// Hash the concatenation of `parts`.
    fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Algorithm::Md5 => run::<Md5>(parts),
            Algorithm::Sha256 => run::<Sha256>(parts),
        }
    }
}

/// The parameters of a `Digest` `Authorization` (or `Proxy-Authorization`)
/// header. Values are unescaped; they borrow from the header unless they
/// contained a quoted-pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// `username`.
    pub username: Cow<'a, str>,
    /// `realm`.
    pub realm: Cow<'a, str>,
    /// `nonce`, as the server sent it.
    pub nonce: Cow<'a, str>,
    /// `uri`: the request's digest-uri.
    pub uri: Cow<'a, str>,
    /// `response`: hex, of the length the algorithm gives (checked).
    pub response: Cow<'a, str>,
    /// `algorithm` (MD5 when absent).
    pub algorithm: Algorithm,
    /// `qop`: present (and then `auth`) in RFC 2617/7616 answers, absent in
    /// the RFC 2069 form.
    pub qop: Option<Cow<'a, str>>,
    /// `nc`: present exactly when `qop` is.
    pub nc: Option<Cow<'a, str>>,
    /// `cnonce`: present exactly when `qop` is.
    pub cnonce: Option<Cow<'a, str>>,
    /// `opaque`, echoed from the challenge (we send none).
    pub opaque: Option<Cow<'a, str>>,
}

/// Why an `Authorization` value is not a usable digest answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Longer than [`MAX_HEADER_LEN`].
    #[error("header longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    /// Not valid UTF-8.
    #[error("header is not UTF-8 text")]
    NotUtf8,
    /// The scheme is not `Digest` (e.g. `Basic`).
    #[error("scheme is not Digest")]
    NotDigest,
    /// The parameter list does not follow the grammar.
    #[error("malformed parameters at byte {at}: {what}")]
    Syntax {
        /// Offset in the value.
        at: usize,
        /// What was expected.
        what: &'static str,
    },
    /// A parameter appears twice.
    #[error("parameter {0} appears twice")]
    Duplicate(&'static str),
    /// A required parameter is missing.
    #[error("parameter {0} is missing")]
    Missing(&'static str),
    /// An algorithm other than MD5 and SHA-256 (e.g. `MD5-sess`, `SHA-512-256`).
    #[error("algorithm {0:?} is not supported (MD5 and SHA-256 are)")]
    UnsupportedAlgorithm(String),
    /// A qop other than `auth` (e.g. `auth-int`).
    #[error("qop {0:?} is not supported (auth is)")]
    UnsupportedQop(String),
    /// `response` is not hex of the algorithm's length.
    #[error("response is not {0} hex digits")]
    BadResponse(usize),
}

/// Why a well-formed answer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The answer's realm is not the user's.
    RealmMismatch,
    /// The nonce does not have our nonce's shape.
    MalformedNonce,
    /// The nonce's MAC is wrong: not minted by this cluster (or for this
    /// realm), or altered.
    ForeignNonce,
    /// The response does not match: wrong password (or wrong method/uri).
    WrongResponse,
}

impl Reason {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RealmMismatch => "realm_mismatch",
            Reason::MalformedNonce => "malformed_nonce",
            Reason::ForeignNonce => "foreign_nonce",
            Reason::WrongResponse => "wrong_response",
        }
    }
}

/// The result of checking an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated.
    Ok,
    /// Right password, but the nonce has expired (or is from too far in the
    /// future): challenge again with `stale=true`, and the client retries
    /// without asking its user.
    Stale,
    /// Refused: challenge again without `stale`.
    Wrong(Reason),
}

/// `H(user:realm:password)` with `alg`: what the `users` table stores,
/// computed by `ctl user put` and by anything else that sets a password.
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> Vec<u8> {
    alg.hash(&[user.as_bytes(), b":", realm.as_bytes(), b":", password.as_bytes()])
}

/// A `WWW-Authenticate` (or `Proxy-Authenticate`) value for `realm` with a
/// fresh nonce minted at `now_ms`, offering `algorithm` and `qop="auth"`;
/// `stale` adds `stale=true`. Quotes, backslashes and control characters in
/// `realm` are escaped or dropped so the header cannot be broken open.
pub fn challenge(
    secret: &[u8; 32],
    realm: &str,
    now_ms: u64,
    algorithm: Algorithm,
    stale: bool,
) -> String {
    let nonce = mint_nonce(secret, realm, now_ms);
    let mut out = String::with_capacity(realm.len() + 128);
    out.push_str("Digest realm=\"");
    for c in realm.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str("\", nonce=\"");
    out.push_str(&nonce);
    out.push_str("\", algorithm=");
    out.push_str(algorithm.name());
    out.push_str(", qop=\"auth\"");
    if stale {
        out.push_str(", stale=true");
    }
    out
}

/// Check `c`, an answer to a `method` request, against `user`'s stored
/// credentials, with the cluster `secret`, at `now_ms`; nonces older than
/// `nonce_ttl_ms` are stale.
///
/// The caller looks `user` up by `c.username`. The stored HA1 binds the
/// username, so a record of another name never verifies; whether that
/// username may register the request's address of record is the
/// registrar's decision, not this function's.
///
/// Order: realm, nonce shape and MAC (constant time), response (constant
/// time), then age. A stale nonce is reported only with a correct response,
/// as RFC 7616 §3.3 asks: `stale=true` tells the client its password was
/// right, so it retries with the new nonce instead of asking its user.
pub fn verify(
    c: &Credentials<'_>,
    method: &[u8],
    user: &User,
    secret: &[u8; 32],
    now_ms: u64,
    nonce_ttl_ms: u64,
) -> Verdict {
    if *c.realm != *user.realm {
        return Verdict::Wrong(Reason::RealmMismatch);
    }
    let Some((minted, mac)) = split_nonce(&c.nonce) else {
        return Verdict::Wrong(Reason::MalformedNonce);
    };
    let expected_mac = nonce_mac(secret, &user.realm, minted);
    if !bool::from(mac[..].ct_eq(&expected_mac[..NONCE_MAC_LEN])) {
        return Verdict::Wrong(Reason::ForeignNonce);
    }
    let ha1: &[u8] = match c.algorithm {
        Algorithm::Md5 => &user.ha1_md5,
        Algorithm::Sha256 => &user.ha1_sha256,
    };
    let expected = expected_response(c, method, ha1);
    let mut got = [0u8; 32];
    let got = &mut got[..c.algorithm.output_len()];
    if unhex(c.response.as_bytes(), got).is_none() || !bool::from(got.ct_eq(&expected[..])) {
        return Verdict::Wrong(Reason::WrongResponse);
    }
    let expired = now_ms.saturating_sub(minted) > nonce_ttl_ms;
    let from_the_future = minted > now_ms.saturating_add(MAX_CLOCK_SKEW_MS);
    if expired || from_the_future {
        return Verdict::Stale;
    }
    Verdict::Ok
}

/// The response a client holding `ha1` should have sent (binary).
fn expected_response(c: &Credentials<'_>, method: &[u8], ha1: &[u8]) -> Vec<u8> {
    let alg = c.algorithm;
    let ha1 = hex(ha1);
    let ha2 = hex(&alg.hash(&[method, b":", c.uri.as_bytes()]));
    match (&c.qop, &c.nc, &c.cnonce) {
        // KD(HA1, nonce:nc:cnonce:qop:HA2), RFC 7616 §3.4.1.
        (Some(qop), Some(nc), Some(cnonce)) => alg.hash(&[
            ha1.as_bytes(),
            b":",
            c.nonce.as_bytes(),
            b":",
            nc.as_bytes(),
            b":",
            cnonce.as_bytes(),
            b":",
            qop.as_bytes(),
            b":",
            ha2.as_bytes(),
        ]),
        // RFC 2069: KD(HA1, nonce:HA2). (The parser guarantees nc and
        // cnonce whenever qop is present.)
        _ => alg.hash(&[ha1.as_bytes(), b":", c.nonce.as_bytes(), b":", ha2.as_bytes()]),
    }
}

fn nonce_mac(secret: &[u8; 32], realm: &str, minted_ms: u64) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(NONCE_LABEL);
    mac.update(&minted_ms.to_be_bytes());
    mac.update(realm.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn mint_nonce(secret: &[u8; 32], realm: &str, now_ms: u64) -> String {
    let mac = nonce_mac(secret, realm, now_ms);
    let mut nonce = hex(&now_ms.to_be_bytes());
    nonce.push_str(&hex(&mac[..NONCE_MAC_LEN]));
    nonce
}

/// A nonce's minting time and MAC, if it has our shape.
fn split_nonce(nonce: &str) -> Option<(u64, [u8; NONCE_MAC_LEN])> {
    if nonce.len() != NONCE_HEX_LEN {
        return None;
    }
    let (t, m) = nonce.as_bytes().split_at(16);
    let mut time = [0u8; 8];
    let mut mac = [0u8; NONCE_MAC_LEN];
    unhex(t, &mut time)?;
    unhex(m, &mut mac)?;
    Some((u64::from_be_bytes(time), mac))
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Decode hex (either case) into `out`, which it must fill exactly.
fn unhex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

/// Parse an `Authorization` header value: `Digest` followed by
/// comma-separated `name=value` parameters, values as tokens or quoted
/// strings (with `\` escapes), in any order, names case-insensitive.
/// Unknown parameters are ignored (RFC 7616 §3.4); a known one given twice
/// is an error, as are missing required ones and any algorithm or qop we do
/// not implement.
pub fn parse_authorization(value: &[u8]) -> Result<Credentials<'_>, DigestError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(DigestError::TooLong);
    }
    let text = std::str::from_utf8(value).map_err(|_| DigestError::NotUtf8)?;
    let mut p = Cursor { s: text, at: 0 };
    p.skip_ws();
    let scheme = p.token();
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(DigestError::NotDigest);
    }
    if !p.skip_ws() {
        return Err(p.error("whitespace after the scheme"));
    }
    let mut f = Fields::default();
    loop {
        p.skip_ws();
        if p.eat(',') {
            continue; // empty list element
        }
        if p.done() {
            break;
        }
        let name_at = p.at;
        let name = p.token();
        if name.is_empty() {
            return Err(p.error("a parameter name"));
        }
        p.skip_ws();
        if !p.eat('=') {
            return Err(p.error("'=' after a parameter name"));
        }
        p.skip_ws();
        let value = p.value()?;
        f.set(name, value).map_err(|e| match e {
            SetError::Duplicate(n) => DigestError::Duplicate(n),
            SetError::Syntax(what) => DigestError::Syntax { at: name_at, what },
        })?;
        p.skip_ws();
        if !p.done() && !p.eat(',') {
            return Err(p.error("',' between parameters"));
        }
    }
    f.finish()
}

/// Parameters as they are found.
#[derive(Default)]
struct Fields<'a> {
    username: Option<Cow<'a, str>>,
    realm: Option<Cow<'a, str>>,
    nonce: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    response: Option<Cow<'a, str>>,
    algorithm: Option<Cow<'a, str>>,
    qop: Option<Cow<'a, str>>,
    nc: Option<Cow<'a, str>>,
    cnonce: Option<Cow<'a, str>>,
    opaque: Option<Cow<'a, str>>,
}

enum SetError {
    Duplicate(&'static str),
    Syntax(&'static str),
}

impl<'a> Fields<'a> {
    fn set(&mut self, name: &str, value: Cow<'a, str>) -> Result<(), SetError> {
        const KNOWN: [&str; 10] = [
            "username",
            "realm",
            "nonce",
            "uri",
            "response",
            "algorithm",
            "qop",
            "nc",
            "cnonce",
            "opaque",
        ];
        let Some(known) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)) else {
            return Ok(());
        };
        let slot = match *known {
            "username" => &mut self.username,
            "realm" => &mut self.realm,
            "nonce" => &mut self.nonce,
            "uri" => &mut self.uri,
            "response" => &mut self.response,
            "algorithm" => &mut self.algorithm,
            "qop" => &mut self.qop,
            "nc" => &mut self.nc,
            "cnonce" => &mut self.cnonce,
            "opaque" => &mut self.opaque,
            _ => return Err(SetError::Syntax("a known parameter")),
        };
        if slot.is_some() {
            return Err(SetError::Duplicate(known));
        }
        *slot = Some(value);
        Ok(())
    }

    fn finish(self) -> Result<Credentials<'a>, DigestError> {
        let algorithm = match self.algorithm.as_deref() {
            None => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            Some(a) => return Err(DigestError::UnsupportedAlgorithm(a.to_owned())),
        };
        if let Some(q) = self.qop.as_deref() {
            if !q.eq_ignore_ascii_case("auth") {
                return Err(DigestError::UnsupportedQop(q.to_owned()));
            }
        }
        let has_qop = self.qop.is_some();
        let response = self.response.ok_or(DigestError::Missing("response"))?;
        let mut scratch = [0u8; 32];
        if unhex(response.as_bytes(), &mut scratch[..algorithm.output_len()]).is_none() {
            return Err(DigestError::BadResponse(algorithm.output_len() * 2));
        }
        let credentials = Credentials {
            username: self.username.ok_or(DigestError::Missing("username"))?,
            realm: self.realm.ok_or(DigestError::Missing("realm"))?,
            nonce: self.nonce.ok_or(DigestError::Missing("nonce"))?,
            uri: self.uri.ok_or(DigestError::Missing("uri"))?,
            response,
            algorithm,
            qop: self.qop,
            // Without qop (RFC 2069) nc and cnonce play no part: dropped.
            nc: if has_qop { Some(self.nc.ok_or(DigestError::Missing("nc"))?) } else { None },
            cnonce: if has_qop {
                Some(self.cnonce.ok_or(DigestError::Missing("cnonce"))?)
            } else {
                None
            },
            opaque: self.opaque,
        };
        Ok(credentials)
    }
}

/// A position in the header text.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }

    fn done(&self) -> bool {
        self.at >= self.s.len()
    }

    fn error(&self, what: &'static str) -> DigestError {
        DigestError::Syntax { at: self.at, what }
    }

    /// Skip spaces and tabs; whether any were skipped.
    fn skip_ws(&mut self) -> bool {
        let n = self.rest().len() - self.rest().trim_start_matches([' ', '\t']).len();
        self.at += n;
        n > 0
    }

    fn eat(&mut self, c: char) -> bool {
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// The longest run of token characters (RFC 9110 `tchar`), maybe empty.
    fn token(&mut self) -> &'a str {
        let rest = self.rest();
        let n = rest.bytes().take_while(|&b| is_tchar(b)).count();
        self.at += n;
        &rest[..n]
    }

    /// A token or a quoted string, unescaped.
    fn value(&mut self) -> Result<Cow<'a, str>, DigestError> {
        if !self.eat('"') {
            let t = self.token();
            if t.is_empty() {
                return Err(self.error("a token or a quoted string"));
            }
            return Ok(Cow::Borrowed(t));
        }
        let rest = self.rest();
        let mut owned: Option<String> = None;
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.at += i + 1;
                    return Ok(match owned {
                        Some(s) => Cow::Owned(s),
                        None => Cow::Borrowed(&rest[..i]),
                    });
                }
                '\\' => {
                    let Some((_, escaped)) = chars.next() else { break };
                    if escaped.is_control() && escaped != '\t' {
                        self.at += i;
                        return Err(self.error("no control character in a quoted string"));
                    }
                    owned.get_or_insert_with(|| rest[..i].to_owned()).push(escaped);
                }
                c if c.is_control() && c != '\t' => {
                    self.at += i;
                    return Err(self.error("no control character in a quoted string"));
                }
                c => {
                    if let Some(s) = owned.as_mut() {
                        s.push(c);
                    }
                }
            }
        }
        self.at = self.s.len();
        Err(self.error("a closing '\"'"))
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
#[path = "digest_tests.rs"]
mod tests;
