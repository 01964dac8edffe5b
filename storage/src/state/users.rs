//! SIP digest credentials: the `users` table and the cluster's nonce secret.
//!
//! Owns: per SIP username (the registered number) the realm it
//! authenticates in and its two HA1 digests, `H(username:realm:password)`
//! with MD5 and with SHA-256 (RFC 7616 §3.4.2); and [`SipSecret`], the key
//! every node uses to mint and check stateless nonces. The password itself
//! is never stored, logged or sent: clients hash it before it reaches the
//! cluster.
//!
//! Does not own: parsing `Authorization` headers or checking responses
//! (`node/src/sip/digest.rs`), nor deciding when authentication is required
//! (the registrar, from its configuration and [`Users::is_empty`]).
//!
//! An HA1 is as good as a password for its realm, so neither [`User`] nor
//! [`SipSecret`] prints its bytes in `Debug` output (tracing, assertion
//! messages), and no event or list answer carries them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One SIP user's credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The realm the HA1 digests were computed for.
    pub realm: String,
    /// `MD5(username:realm:password)`.
    pub ha1_md5: [u8; 16],
    /// `SHA-256(username:realm:password)`.
    pub ha1_sha256: [u8; 32],
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("realm", &self.realm)
            .field("ha1_md5", &"<redacted>")
            .field("ha1_sha256", &"<redacted>")
            .finish()
    }
}

/// The `users` table: SIP username -> credentials, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Users {
    by_name: BTreeMap<String, User>,
}

impl Users {
    /// The user's credentials, if any.
    pub fn get(&self, user: &str) -> Option<&User> {
        self.by_name.get(user)
    }

    /// Every user, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &User)> {
        self.by_name.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether no user has credentials (auth is then off by default).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// How many users have credentials.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Insert or replace; the previous record, if any.
    pub(crate) fn put(&mut self, user: String, record: User) -> Option<User> {
        self.by_name.insert(user, record)
    }

    /// Remove.
    pub(crate) fn remove(&mut self, user: &str) -> Option<User> {
        self.by_name.remove(user)
    }
}

/// The cluster's nonce key: 32 random bytes the first leader drew, set once
/// and never changed (see `Command::SetSipSecret`), so a nonce minted at one
/// node is accepted at every other.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipSecret(pub [u8; 32]);

impl SipSecret {
    /// The key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SipSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SipSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_key_material() {
        let u = User { realm: "r".into(), ha1_md5: [0xab; 16], ha1_sha256: [0xcd; 32] };
        let s = SipSecret([0xef; 32]);
        let text = format!("{u:?} {s:?}");
        for needle in ["171", "205", "239", "ab", "cd", "ef"] {
            assert!(!text.contains(needle), "{text}");
        }
        assert!(text.contains("realm: \"r\""), "{text}");
    }
}
