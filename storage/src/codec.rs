//! The one on-disk (and on-wire, for snapshots) value encoding.
//!
//! Owns: turning any serde value into bytes and back. Every value the storage
//! layer persists (log entries, vote, committed, last purged, snapshot meta
//! and snapshot data) goes through [`encode`] / [`decode`], so a format change
//! is made in exactly one place.
//!
//! Does not own: keys (log keys are raw big-endian indexes, see
//! [`crate::log_store`]) or where the bytes are stored ([`crate::engine`]).
//!
//! Format: one [`FORMAT_VERSION`] byte, then the value in bincode 2's serde
//! encoding with [`bincode::config::standard`]. Decoding is bounded by
//! [`DECODE_LIMIT`] so a corrupt length prefix is an error instead of an
//! attempt to allocate gigabytes, and decoding never panics: empty input, an
//! unknown version, truncated or malformed bytes and trailing bytes are each a
//! distinct [`CodecError`].

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version byte written in front of every encoded value.
///
/// 2: fenced leader decisions, once-only requests, clock ticks, delayed
/// registration purge (new commands, policy fields and state table).
/// 3: the SIP front end: digest credentials (`PutUser`, `DeleteUser`,
/// `SetSipSecret`; the `users` table and `sip_secret` in the state) and
/// `SipRegister` (bindings remember the Call-ID and CSeq that wrote them).
/// 4: client API tokens (`PutToken`, `DeleteToken`; the `tokens` table in
/// the state).
/// A data directory written by an older version is refused with
/// `UnknownVersion`.
pub const FORMAT_VERSION: u8 = 4;

/// The most bytes a single decode may claim for its containers (1 GiB).
pub const DECODE_LIMIT: usize = 1 << 30;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialized (for example a map with non-string
    /// keys in a format that needs them; should not happen with bincode).
    #[error("cannot encode value: {0}")]
    Encode(#[source] bincode::error::EncodeError),
    /// There were no bytes at all, not even the version byte.
    #[error("cannot decode value: input is empty (no format version byte)")]
    Empty,
    /// The leading byte is not a format version this build understands.
    #[error(
        "cannot decode value: unknown format version {found} (this build reads version {expected})"
    )]
    UnknownVersion {
        /// The byte found.
        found: u8,
        /// The version this build writes and reads.
        expected: u8,
    },
    /// The input ended in the middle of the value.
    #[error("cannot decode value: input is truncated ({0})")]
    Truncated(#[source] bincode::error::DecodeError),
    /// The bytes do not describe a value of the expected type (including a
    /// length prefix beyond [`DECODE_LIMIT`]).
    #[error("cannot decode value: malformed bytes ({0})")]
    Malformed(#[source] bincode::error::DecodeError),
    /// A whole value was decoded but bytes were left over.
    #[error("cannot decode value: {extra} trailing bytes after a {used}-byte value")]
    TrailingBytes {
        /// Bytes consumed by the value (after the version byte).
        used: usize,
        /// Bytes left over.
        extra: usize,
    },
}

/// The bincode configuration used for both directions.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes `value` as [`FORMAT_VERSION`] followed by its bincode encoding.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(CodecError::Encode)?;
    Ok(out)
}

/// Decodes bytes written by [`encode`]. Never panics on bad input.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { found: version, expected: FORMAT_VERSION });
    }
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(body, config()).map_err(|e| match e {
            bincode::error::DecodeError::UnexpectedEnd { .. } => CodecError::Truncated(e),
            other => CodecError::Malformed(other),
        })?;
    if used != body.len() {
        return Err(CodecError::TrailingBytes { used, extra: body.len() - used });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        name: String,
        tags: Vec<String>,
        parent: Option<u32>,
    }

    fn sample() -> Sample {
        Sample {
            id: 42,
            name: "gateway-1".to_string(),
            tags: vec!["a".to_string(), "bc".to_string()],
            parent: Some(7),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: Sample = decode(&bytes).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn empty_input() {
        assert!(matches!(decode::<Sample>(&[]), Err(CodecError::Empty)));
    }

    #[test]
    fn unknown_version() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[0] = 99;
        match decode::<Sample>(&bytes) {
            Err(CodecError::UnknownVersion { found: 99, expected: FORMAT_VERSION }) => {}
            other => panic!("expected UnknownVersion, got {other:?}"),
        }
    }

    #[test]
    fn truncated() {
        let bytes = encode(&sample()).unwrap();
        for cut in 1..bytes.len() {
            match decode::<Sample>(&bytes[..cut]) {
                Err(CodecError::Truncated(_)) => {}
                other => panic!("cut at {cut}: expected Truncated, got {other:?}"),
            }
        }
    }

    #[test]
    fn garbage() {
        // A huge varint length prefix for `name`: must be refused by the
        // decode limit, not allocated.
        let bytes = [FORMAT_VERSION, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(decode::<Sample>(&bytes), Err(CodecError::Malformed(_))));

        // An invalid enum discriminant for `Option` (only 0 and 1 exist).
        let mut bytes = encode(&sample()).unwrap();
        let last = bytes.len() - 2;
        bytes[last] = 9;
        assert!(matches!(decode::<Sample>(&bytes), Err(CodecError::Malformed(_))));

        // Arbitrary bytes never panic, whatever they decode to.
        let mut seed: u32 = 0x1234_5678;
        for len in 0..200 {
            let mut junk = vec![FORMAT_VERSION];
            for _ in 0..len {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                junk.push((seed >> 16) as u8);
            }
            let _ = decode::<Sample>(&junk);
        }
    }

    #[test]
    fn trailing_bytes() {
        let mut bytes = encode(&sample()).unwrap();
        bytes.extend_from_slice(&[0, 0, 0]);
        match decode::<Sample>(&bytes) {
            Err(CodecError::TrailingBytes { extra: 3, .. }) => {}
            other => panic!("expected TrailingBytes, got {other:?}"),
        }
    }
}
