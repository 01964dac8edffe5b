//! Fault injection for tests only (like etcd's failpoints): off unless the
//! environment turns it on, read once at first use.
//!
//! - `SWITCHBOARD_FAILPOINT=stale-linearizable-reads`: LINEARIZABLE reads are
//!   answered from local state without a read index. The chaos harness runs
//!   against this to prove that it can detect stale reads.

use std::sync::OnceLock;

/// The environment variable that enables failpoints.
pub const ENV: &str = "SWITCHBOARD_FAILPOINT";

fn enabled(name: &str) -> bool {
    static VALUE: OnceLock<String> = OnceLock::new();
    let v = VALUE.get_or_init(|| std::env::var(ENV).unwrap_or_default());
    v.split(',').any(|p| p.trim() == name)
}

/// Whether LINEARIZABLE reads must (wrongly) skip the read index.
pub fn stale_linearizable_reads() -> bool {
    enabled("stale-linearizable-reads")
}
