//! Fault injection for tests only (like etcd's failpoints).
//!
//! Everything here is compiled in only with the cargo feature `failpoints`;
//! without it every check is a constant `false` / `0`, so a production
//! binary (`cargo build --release -p switchboard`) cannot be switched into
//! a faulty mode by its environment. The integration tests and the chaos
//! harness build the node with the feature.
//!
//! - `SWITCHBOARD_FAILPOINT=stale-linearizable-reads` (environment, read
//!   once): LINEARIZABLE reads are answered from local state without a read
//!   index. The chaos harness runs against this to prove that it can detect
//!   stale reads.
//! - Network cuts between in-process nodes ([`cut`], [`heal`]), keyed by the
//!   nodes' gRPC addresses: every node-to-node RPC from a cut pair fails as
//!   if the peer were unreachable. The in-process tests use them to isolate
//!   a leader; the chaos harness uses real packet drops instead.
//! - A wall-clock offset per node ([`set_clock_offset_ms`]), or from the
//!   file `failpoint-clock-offset-ms` in the node's data directory (a signed
//!   integer, re-read every 100 ms) for the chaos harness's clock-skew
//!   nemesis: the real clock cannot be changed per network namespace.
//! - In the storage engine (`switchboard_storage::failpoint`, switched on
//!   by this crate's feature): while the file `failpoint-fsync-eio` exists
//!   in a node's data directory, its fsyncs fail with `EIO`.

/// The environment variable that enables failpoints.
pub const ENV: &str = "SWITCHBOARD_FAILPOINT";

/// The file in a node's data directory that offsets its wall clock.
pub const CLOCK_OFFSET_FILE: &str = "failpoint-clock-offset-ms";

/// Whether this binary was built with failpoints (`--version` says so).
pub const COMPILED: bool = cfg!(feature = "failpoints");

#[cfg(feature = "failpoints")]
mod imp {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    fn enabled(name: &str) -> bool {
        static VALUE: OnceLock<String> = OnceLock::new();
        let v = VALUE.get_or_init(|| std::env::var(super::ENV).unwrap_or_default());
        v.split(',').any(|p| p.trim() == name)
    }

    pub fn stale_linearizable_reads() -> bool {
        enabled("stale-linearizable-reads")
    }

    /// A set of (from, to) address pairs, cut both ways at once. A std
    /// Mutex: never held across an await.
    struct Pairs(Mutex<BTreeSet<(String, String)>>);

    impl Pairs {
        const fn new() -> Pairs {
            Pairs(Mutex::new(BTreeSet::new()))
        }

        fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<(String, String)>> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }

        fn cut(&self, a: &str, b: &str) {
            let mut c = self.set();
            c.insert((a.to_owned(), b.to_owned()));
            c.insert((b.to_owned(), a.to_owned()));
        }

        fn heal(&self, addr: &str) {
            self.set().retain(|(a, b)| a != addr && b != addr);
        }

        fn contains(&self, from: &str, to: &str) -> bool {
            let c = self.set();
            !c.is_empty() && c.contains(&(from.to_owned(), to.to_owned()))
        }
    }

    /// Pairs whose RPCs fail.
    static CUTS: Pairs = Pairs::new();
    /// Pairs whose entry-carrying AppendEntries fail.
    static REPLICATION_CUTS: Pairs = Pairs::new();

    pub fn cut(a: &str, b: &str) {
        CUTS.cut(a, b)
    }

    pub fn heal(addr: &str) {
        CUTS.heal(addr);
        REPLICATION_CUTS.heal(addr);
    }

    pub fn is_cut(from: &str, to: &str) -> bool {
        CUTS.contains(from, to)
    }

    pub fn cut_replication(a: &str, b: &str) {
        REPLICATION_CUTS.cut(a, b)
    }

    pub fn is_replication_cut(from: &str, to: &str) -> bool {
        REPLICATION_CUTS.contains(from, to)
    }

    /// Offsets set in-process, by node address.
    static OFFSETS: Mutex<BTreeMap<String, i64>> = Mutex::new(BTreeMap::new());

    pub fn set_clock_offset_ms(addr: &str, offset: i64) {
        OFFSETS.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_owned(), offset);
    }

    /// The file-based offset, cached per data directory for 100 ms.
    static FILES: Mutex<BTreeMap<PathBuf, (Instant, i64)>> = Mutex::new(BTreeMap::new());

    fn file_offset(data: &Path) -> i64 {
        let mut files = FILES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, v)) = files.get(data) {
            if at.elapsed() < Duration::from_millis(100) {
                return *v;
            }
        }
        let v = std::fs::read_to_string(data.join(super::CLOCK_OFFSET_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        files.insert(data.to_owned(), (Instant::now(), v));
        v
    }

    pub fn clock_offset_ms(addr: &str, data: &Path) -> i64 {
        let set = OFFSETS.lock().unwrap_or_else(|p| p.into_inner()).get(addr).copied();
        set.unwrap_or_else(|| file_offset(data))
    }
}

#[cfg(not(feature = "failpoints"))]
mod imp {
    use std::path::Path;

    pub fn stale_linearizable_reads() -> bool {
        false
    }
    pub fn cut(_: &str, _: &str) {}
    pub fn heal(_: &str) {}
    pub fn is_cut(_: &str, _: &str) -> bool {
        false
    }
    pub fn cut_replication(_: &str, _: &str) {}
    pub fn is_replication_cut(_: &str, _: &str) -> bool {
        false
    }
    pub fn set_clock_offset_ms(_: &str, _: i64) {}
    pub fn clock_offset_ms(_: &str, _: &Path) -> i64 {
        0
    }
}

/// Whether LINEARIZABLE reads must (wrongly) skip the read index.
pub fn stale_linearizable_reads() -> bool {
    imp::stale_linearizable_reads()
}

/// Cut the network between the nodes at gRPC addresses `a` and `b`, both
/// ways (no-op without the `failpoints` feature).
pub fn cut(a: &str, b: &str) {
    imp::cut(a, b)
}

/// Remove every cut (and replication cut) involving the node at `addr`.
pub fn heal(addr: &str) {
    imp::heal(addr)
}

/// Whether RPCs from the node at `from` to the node at `to` must fail.
pub fn is_cut(from: &str, to: &str) -> bool {
    imp::is_cut(from, to)
}

/// Drop the AppendEntries that carry log entries between the nodes at gRPC
/// addresses `a` and `b`, both ways; everything else still passes (no-op
/// without the `failpoints` feature).
pub fn cut_replication(a: &str, b: &str) {
    imp::cut_replication(a, b)
}

/// Whether AppendEntries carrying entries from `from` to `to` must be dropped.
pub fn is_replication_cut(from: &str, to: &str) -> bool {
    imp::is_replication_cut(from, to)
}

/// Offset the wall clock of the in-process node at `addr` (ms, signed).
pub fn set_clock_offset_ms(addr: &str, offset: i64) {
    imp::set_clock_offset_ms(addr, offset)
}

/// The wall-clock offset of the node at `addr` with data directory `data`.
pub fn clock_offset_ms(addr: &str, data: &std::path::Path) -> i64 {
    imp::clock_offset_ms(addr, data)
}

/// What a production build (without the `failpoints` feature) must be:
/// nothing here can be switched on, whatever the environment says. CI runs
/// this with `cargo test -p switchboard --lib failpoint` (the workspace
/// test run turns the feature on for the integration tests).
#[cfg(all(test, not(feature = "failpoints")))]
mod production {
    use super::*;

    #[test]
    fn no_failpoint_can_be_switched_on() {
        const { assert!(!COMPILED) };
        std::env::set_var(ENV, "stale-linearizable-reads");
        assert!(!stale_linearizable_reads());
        cut("127.0.0.1:1", "127.0.0.1:2");
        assert!(!is_cut("127.0.0.1:1", "127.0.0.1:2"));
        cut_replication("127.0.0.1:1", "127.0.0.1:2");
        assert!(!is_replication_cut("127.0.0.1:1", "127.0.0.1:2"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CLOCK_OFFSET_FILE), "600000").unwrap();
        set_clock_offset_ms("127.0.0.1:1", 600_000);
        assert_eq!(clock_offset_ms("127.0.0.1:1", dir.path()), 0);
        assert!(!crate::VERSION.contains("failpoints"));
    }
}
