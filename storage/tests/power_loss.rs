//! Power loss under the engine: [`SledEngine`] on the harness's power-loss
//! file system, which keeps unsynced file data only in memory and drops it
//! when the power is cut. Every write for which [`Engine::sync`] returned
//! `Ok` must be there after the cut.
//!
//! Each cycle runs in a child process (this test binary again): it mounts
//! the backing directory, opens the engine, checks every entry acknowledged
//! so far, writes and syncs batches until the armed cut fails a write, and
//! exits at once without running any destructor (a crash). Needs root and
//! /dev/fuse; prints SKIPPED otherwise.
//!
//! Ignored by default: on 2026-12-04 a cycle's child hung (a sled open on
//! the power-loss mount that never returned) in two of five runs, which
//! would stall `cargo test --workspace`; see docs/chaos.md. Run it with
//! `cargo test -p switchboard-storage --test power_loss -- --ignored --nocapture`.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::Command;

use switchboard_jepsen::powerfs::local::{can_mount, LocalMount};
use switchboard_storage::engine::{Engine, SledEngine, Tree, WriteBatch};

const CHILD: &str = "POWER_LOSS_CHILD";
const CYCLES: u64 = 20;
const PER_BATCH: u64 = 8;

fn key(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// A value that names its key, of a size that varies with it.
fn value(n: u64) -> Vec<u8> {
    let len = 64 + (n * 7919) % 3000;
    let mut v = format!("entry {n} ").into_bytes();
    v.resize(len as usize, (n % 251) as u8);
    v
}

/// The first acknowledged entry that is missing or wrong, and the last
/// entry present.
fn check(engine: &SledEngine, acked: u64) -> (Option<u64>, u64) {
    let all = engine.range(Tree::Log, Bound::Unbounded, Bound::Unbounded).unwrap_or_default();
    let last =
        all.last().map_or(0, |(k, _)| u64::from_be_bytes(k[..8].try_into().unwrap_or([0; 8])));
    let bad = (1..acked).find(|&n| {
        engine.get(Tree::Log, &key(n)).ok().flatten().as_deref() != Some(value(n).as_slice())
    });
    (bad, last)
}

/// One cycle, in the child. Prints `ACKED <n>` or `LOST ...`/`ERROR ...`.
fn child(dir: &Path, cycle: u64, acked: u64) -> String {
    let mount = match LocalMount::new(&dir.join("disk"), &dir.join(format!("mnt{cycle}"))) {
        Ok(m) => m,
        Err(e) => return format!("ERROR mount: {e}"),
    };
    let report = (|| {
        let engine = match SledEngine::open(dir.join(format!("mnt{cycle}")).join("data")) {
            Ok(e) => e,
            Err(e) => return format!("ERROR reopening after a power cut: {e}"),
        };
        if let (Some(n), last) = check(&engine, acked) {
            return format!(
                "LOST entry {n} (acknowledged: every entry below {acked}); last present {last}"
            );
        }
        let mut next = acked;
        let arm_after = 5 + cycle % 7;
        for b in 0..arm_after + 50 {
            if b == arm_after {
                mount.fs().arm();
            }
            let mut batch = WriteBatch::new();
            for n in next..next + PER_BATCH {
                batch.insert(key(n), value(n));
            }
            if engine.apply_batch(Tree::Log, batch).is_err() || engine.sync().is_err() {
                break;
            }
            next += PER_BATCH;
        }
        mount.fs().power_cut();
        std::mem::forget(engine);
        format!("ACKED {next}")
    })();
    mount.abort();
    report
}

fn run_child(dir: &Path, cycle: u64, acked: u64) -> String {
    let exe = std::env::current_exe().expect("test executable");
    let out = Command::new(exe)
        .args([
            "synced_writes_survive_power_cuts",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, format!("{}|{cycle}|{acked}", dir.display()))
        .output()
        .expect("running a cycle");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!("ERROR child said: {text} {}", String::from_utf8_lossy(&out.stderr))
        })
}

#[test]
#[ignore = "can hang (sled open on a power-loss mount); run by hand, see docs/chaos.md"]
fn synced_writes_survive_power_cuts() {
    if let Ok(spec) = std::env::var(CHILD) {
        let mut parts = spec.split('|');
        let dir = PathBuf::from(parts.next().unwrap_or_default());
        let cycle = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let acked = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
        println!("\nRESULT {}", child(&dir, cycle, acked));
        // A crash: no destructors, no flushing at exit.
        // SAFETY: _exit ends the process at once; nothing is left to run.
        unsafe { libc_exit() };
    }
    if !can_mount() {
        println!("SKIPPED power-loss engine test: needs root and /dev/fuse");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked = 1;
    for cycle in 0..CYCLES {
        let r = run_child(dir.path(), cycle, acked);
        eprintln!("cycle {cycle}: {r}");
        match r.strip_prefix("ACKED ") {
            Some(n) => acked = n.parse().unwrap(),
            None => panic!("cycle {cycle}: {r} (data kept in {})", dir.keep().display()),
        }
    }
    let engine = SledEngine::open(dir.path().join("disk").join("data")).unwrap();
    let (bad, last) = check(&engine, acked);
    assert_eq!(bad, None, "after the last cut; last present {last}");
}

unsafe fn libc_exit() -> ! {
    extern "C" {
        fn _exit(code: i32) -> !;
    }
    _exit(0)
}
