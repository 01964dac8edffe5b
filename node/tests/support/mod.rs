//! What the binary's integration tests share: free ports, programs on
//! PATH, three `serve` processes forming a cluster, and `dev` with its
//! output read line by line.
//!
//! Each file under `tests/` is its own crate and uses part of this, hence
//! the `dead_code` allowance.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

// The workspace's test port allocator (std only), shared by path: these
// tests cannot depend on the switchboard-tests crate.
#[path = "../../../tests/src/ports.rs"]
mod ports;

/// A port free on 127.0.0.1 for both TCP and UDP, below the ephemeral
/// range (see `tests/src/ports.rs`).
pub fn free_port() -> u16 {
    ports::free_port()
}

/// The first of `n` consecutive such ports (for `dev`'s base ports).
pub fn free_ports(n: u16) -> u16 {
    ports::free_ports(n)
}

/// The first of `names` found on PATH.
pub fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// Node processes, killed when dropped; node i is at index i - 1 (`None`
/// once a test has killed it).
pub struct Nodes(pub Vec<Option<Child>>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts three nodes under `dir` with `config` (TOML) as their shared
/// configuration, `--initial-cluster` of all three and `front(i)` as node
/// i's extra arguments (its SIP or HTTP address); each logs to
/// `dir/node<i>.log`. Returns the nodes and their gRPC addresses.
pub fn start_three(
    dir: &Path,
    config: &str,
    front: impl Fn(usize) -> Vec<String>,
) -> (Nodes, Vec<String>) {
    let config_path = dir.join("switchboard.toml");
    std::fs::write(&config_path, config).unwrap();
    let grpc: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let initial: Vec<String> =
        grpc.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    let initial = initial.join(",");
    let mut children = Vec::new();
    for (i, addr) in grpc.iter().enumerate() {
        let id = (i + 1).to_string();
        let log = std::fs::File::create(dir.join(format!("node{id}.log"))).unwrap();
        children.push(Some(
            Command::new(BIN)
                .args(["serve", "--id", &id, "--listen", addr])
                .args(front(i + 1))
                .args(["--initial-cluster", &initial])
                .arg("--config")
                .arg(&config_path)
                .arg("--data")
                .arg(dir.join(format!("n{id}")))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start serve"),
        ));
    }
    (Nodes(children), grpc)
}

/// Starts `switchboard dev` with `args` and `--data data`; its stdout
/// arrives line by line on the receiver (stderr is dropped).
pub fn spawn_dev(args: &[String], data: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut dev = Command::new(BIN)
        .arg("dev")
        .args(args)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = dev.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (dev, rx)
}

/// The lines `dev` prints up to and including its "Ctrl-C" line (it is
/// ready then); kills it and panics, naming `what`, after 60 s without.
pub fn wait_ready(dev: &mut Child, rx: &mpsc::Receiver<String>, what: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !lines.iter().any(|l| l.starts_with("Ctrl-C")) {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(l) => lines.push(l),
            Err(_) => {
                let _ = dev.kill();
                panic!("{what} did not get ready: {lines:?}");
            }
        }
    }
    lines
}
