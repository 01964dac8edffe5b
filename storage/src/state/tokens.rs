//! Client API tokens: the `tokens` table.
//!
//! Owns: per token id its [`Role`], the SHA-256 of its secret, a name for
//! operators, and when it was created and expires (replicated clock). The
//! secret itself is never stored, logged or sent back: the node that
//! creates a token draws it, hashes it, replicates only the hash and shows
//! the secret once to whoever asked.
//!
//! Does not own: parsing `authorization` headers, mapping methods to roles
//! or checking a presented token (`node/src/auth.rs`).
//!
//! Why a plain SHA-256 and not a password hash: the secret is 32 random
//! bytes, so there is nothing to guess; a slow hash would only slow every
//! request.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Lookups, routes, lists, watches, status.
    Read,
    /// Also registrations, calls and gateway reports.
    Write,
    /// Also the dial plan, gateways, SIP users, tokens and membership.
    Admin,
}

impl Role {
    /// Whether a token of this role may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// `read`, `write` or `admin`.
    pub fn label(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    /// The role named `s` (`read`, `write`, `admin`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// One token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the secret part.
    pub secret_sha256: [u8; 32],
    /// A name for operators (who or what holds it); may be empty.
    pub name: String,
    /// When it was created (replicated clock, ms).
    pub created_at_ms: u64,
    /// When it stops being accepted, if ever (replicated clock, ms).
    pub expires_at_ms: Option<u64>,
}

impl Token {
    /// Whether it is still accepted at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|e| now_ms < e)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("role", &self.role)
            .field("secret_sha256", &"<redacted>")
            .field("name", &self.name)
            .field("created_at_ms", &self.created_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// The `tokens` table: token id -> token, in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    by_id: BTreeMap<String, Token>,
}

impl Tokens {
    /// The token with this id, if any.
    pub fn get(&self, id: &str) -> Option<&Token> {
        self.by_id.get(id)
    }

    /// Every token, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Token)> {
        self.by_id.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether there are none (the client API is then open).
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// How many admin tokens there are (expired ones included: an
    /// operator can still see and delete them).
    pub fn admins(&self) -> usize {
        self.by_id.values().filter(|t| t.role == Role::Admin).count()
    }

    pub(crate) fn insert(&mut self, id: String, token: Token) {
        self.by_id.insert(id, token);
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<Token> {
        self.by_id.remove(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_lesser_ones() {
        assert!(Role::Admin.allows(Role::Write) && Role::Admin.allows(Role::Read));
        assert!(Role::Write.allows(Role::Read) && !Role::Write.allows(Role::Admin));
        assert!(!Role::Read.allows(Role::Write));
        for r in [Role::Read, Role::Write, Role::Admin] {
            assert_eq!(Role::parse(r.label()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn debug_output_never_shows_the_hash() {
        let t = Token {
            role: Role::Read,
            secret_sha256: [0xab; 32],
            name: "nm".into(),
            created_at_ms: 1,
            expires_at_ms: None,
        };
        let text = format!("{t:?}");
        assert!(!text.contains("171") && !text.contains("ab,"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
