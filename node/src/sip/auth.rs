//! Whether a REGISTER may proceed: digest authentication against the
//! replicated users table (RFC 3261 §22.4, RFC 8760).
//!
//! Owns: the decision (proceed, challenge, challenge with `stale=true`,
//! forbid) and its reasons. Pure: the server passes the request, the
//! address of record, the state and the time. Does not own the digest
//! arithmetic ([`super::digest`]) nor the reply bytes.

use switchboard_storage::state::State;

use super::digest::{self, Algorithm, Verdict};
use super::message::{Message, Name, StartLine};
use crate::config::Sip;

/// Why a REGISTER may not proceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401 with fresh challenges; `stale` when the password was right but
    /// the nonce too old.
    Challenge {
        /// Add `stale=true`.
        stale: bool,
        /// Why, for the log and the Warning header.
        why: String,
    },
    /// A final refusal with this code (400 malformed, 403 wrong user, 503
    /// no cluster secret yet).
    Refuse {
        /// The status code.
        code: u16,
        /// Why.
        why: String,
    },
}

/// The challenge algorithms offered, in order of preference.
pub fn algorithms(config: &Sip) -> Vec<Algorithm> {
    config
        .algorithms
        .iter()
        .filter_map(|a| match a.as_str() {
            "SHA-256" => Some(Algorithm::Sha256),
            "MD5" => Some(Algorithm::Md5),
            _ => None,
        })
        .collect()
}

/// Check `msg`, a REGISTER for `number`, at `now_ms`.
pub fn check(
    msg: &Message<'_>,
    number: &str,
    state: &State,
    config: &Sip,
    now_ms: u64,
) -> Result<(), Denied> {
    if !config.required(!state.users.is_empty()) {
        return Ok(());
    }
    let Some(secret) = state.sip_secret.map(|s| *s.bytes()) else {
        return Err(Denied::Refuse {
            code: 503,
            why: "the cluster has not set its nonce secret yet".into(),
        });
    };
    // A request may carry credentials for several realms (RFC 3261
    // §22.4): use the one for ours.
    let mut ours = None;
    for h in msg.all(Name::Authorization) {
        match digest::parse_authorization(h.value) {
            Ok(c) if *c.realm == *config.realm => {
                ours = Some(c);
                break;
            }
            Ok(_) => {}
            Err(e) => return Err(Denied::Refuse { code: 400, why: format!("Authorization: {e}") }),
        }
    }
    let Some(c) = ours else {
        return Err(Denied::Challenge { stale: false, why: "no credentials".into() });
    };
    if !algorithms(config).contains(&c.algorithm) {
        return Err(Denied::Challenge {
            stale: false,
            why: format!("algorithm {} is not offered", c.algorithm.name()),
        });
    }
    if *c.username != *number {
        return Err(Denied::Refuse {
            code: 403,
            why: format!("user {} may not register {number}", c.username),
        });
    }
    // The digest covers the digest-uri, which must be this request's URI
    // (RFC 7616 §3.4.6), or an answer for one request would serve another.
    let StartLine::Request { uri, .. } = msg.start else {
        return Err(Denied::Refuse { code: 400, why: "not a request".into() });
    };
    if *c.uri != *uri {
        return Err(Denied::Refuse {
            code: 400,
            why: "the digest uri is not the Request-URI".into(),
        });
    }
    // An unknown user gets a challenge like a wrong password, so the
    // answer does not tell which users exist.
    let Some(user) = state.users.get(number) else {
        return Err(Denied::Challenge { stale: false, why: "wrong credentials".into() });
    };
    let ttl_ms = config.nonce_ttl_s.saturating_mul(1000);
    match digest::verify(&c, b"REGISTER", user, &secret, now_ms, ttl_ms) {
        Verdict::Ok => Ok(()),
        Verdict::Stale => Err(Denied::Challenge { stale: true, why: "stale nonce".into() }),
        Verdict::Wrong(r) => Err(Denied::Challenge {
            stale: false,
            why: format!("wrong credentials ({})", r.as_str()),
        }),
    }
}
