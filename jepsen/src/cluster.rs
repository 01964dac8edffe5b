//! Cluster control: real `switchboard serve` processes, each in its own
//! network namespace with its own address on a bridge the harness creates,
//! so that partitions are real packet drops (nftables) between hosts.
//!
//! Layout of a run with N nodes (as root):
//! - a bridge `sbj<pid>-br` (the harness's pid in hex) with address
//!   10.99.0.254/24 (the client's address);
//! - namespace `sbj<pid>-n<i>` per node, joined to the bridge by a veth pair,
//!   with address 10.99.0.<i>/24 and the node listening on port 7001;
//! - partitions are nftables rules in a node's namespace that drop packets
//!   from other nodes' addresses (never the client's).
//!
//! Everything is removed when the [`Cluster`] is dropped — also on panic —
//! and by [`Cluster::cleanup_stale`] at the start of the next run if a
//! previous run was killed before it could clean up.
//!
//! When not root the harness falls back to processes on 127.0.0.1 ports
//! ([`Mode::Local`]): kills, pauses and membership changes still work,
//! partitions do not, and the report says so.
//!
//! With [`Cluster::enable_powerfs`] every node's data directory lives on its
//! own power-loss FUSE mount (`n<i>.mnt`, backed by `n<i>.disk`; see
//! [`crate::powerfs`]) and [`Cluster::power_cut`] cuts the power of nodes:
//! their unsynced data is dropped, then the processes are killed with
//! SIGKILL and the mounts removed; [`Cluster::start`] mounts again.
//!
//! The harness talks to the nodes only through the public gRPC API and OS
//! facilities (signals, namespaces, nftables, FUSE); it never links the node.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::powerfs::control::{self, PowerMount};
use crate::powerfs::fs::CutReport;

/// The subnet the harness's hosts live in (namespaces we create ourselves).
const SUBNET: &str = "10.99.0";
/// The client's (harness's) address on the bridge.
const CLIENT_IP: &str = "10.99.0.254";
/// Port every node listens on inside its namespace.
const NS_PORT: u16 = 7001;

/// Every node's configuration file. Gateway probing is off: the route
/// workload's gateways are documentation addresses nobody answers at, and
/// the prober would take them out of service on its own schedule, which a
/// black-box checker cannot predict (the workload's expected gateway order
/// rests only on its own writes).
const NODE_CONFIG: &str = "[registrations]\npurge_on_node_down = false\n\n\
                           [raft]\nsnapshot_after_entries = 300\nkeep_entries_after_snapshot = 50\n\n\
                           [gateways]\nprobe_interval_ms = 0\n";

/// How the nodes are hosted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One network namespace per node (root only): partitions possible.
    Netns,
    /// Plain processes on 127.0.0.1 ports: no partitions.
    Local,
}

/// One node process.
#[derive(Debug)]
struct Proc {
    child: Option<Child>,
    paused: bool,
}

/// A running cluster under test.
pub struct Cluster {
    /// Hosting mode.
    pub mode: Mode,
    tag: String,
    bin: PathBuf,
    dir: PathBuf,
    ids: Vec<u64>,
    procs: BTreeMap<u64, Proc>,
    /// Nodes whose namespace currently drops packets from these peers.
    blocked: BTreeMap<u64, BTreeSet<u64>>,
    base_port: u16,
    log_level: String,
    extra_env: Vec<(String, String)>,
    /// The harness executable that serves `powerfs`, when data directories
    /// live on power-loss mounts.
    powerfs: Option<PathBuf>,
    /// Mounted power-loss file systems, per node.
    mounts: BTreeMap<u64, PowerMount>,
    /// Copy every backing directory right after each power cut (for
    /// diagnosis; `--keep-data`).
    keep_cuts: bool,
    cuts: u64,
    /// Torn power cuts: the run's seed, from which each mount's is drawn.
    torn_seed: Option<u64>,
    /// Power-loss mounts started so far (each gets a seed of its own).
    mounts_started: u64,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The pid of the harness run that made namespace or bridge `name`
/// (`sbj<pid in hex>-...`), if the name has that form.
fn owner_pid(name: &str) -> Option<u32> {
    let (tag, _) = name.strip_prefix("sbj")?.split_once('-')?;
    u32::from_str_radix(tag, 16).ok()
}

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args))
}

/// Whether this process may create namespaces (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Cluster {
    /// Prepare (not start) a cluster of `n` nodes under `dir`, using the
    /// node binary `bin`. `extra_env` goes to every node (e.g. a failpoint).
    pub fn new(
        n: u64,
        bin: PathBuf,
        dir: PathBuf,
        want_netns: bool,
        extra_env: Vec<(String, String)>,
    ) -> Result<Cluster> {
        let mode = if want_netns && is_root() && have("nft") && have("ip") {
            Mode::Netns
        } else {
            Mode::Local
        };
        // The whole pid, so that a later run can tell whether the run that
        // made a namespace is still alive (see `cleanup_stale`).
        let tag = format!("{:x}", std::process::id());
        let c = Cluster {
            mode,
            tag,
            bin,
            dir,
            ids: (1..=n).collect(),
            procs: BTreeMap::new(),
            blocked: BTreeMap::new(),
            base_port: 27_001,
            log_level: "info,openraft=warn".into(),
            extra_env,
            powerfs: None,
            mounts: BTreeMap::new(),
            keep_cuts: false,
            cuts: 0,
            torn_seed: None,
            mounts_started: 0,
        };
        fs::create_dir_all(&c.dir).with_context(|| format!("creating {}", c.dir.display()))?;
        if c.mode == Mode::Netns {
            Cluster::cleanup_stale()?;
            c.setup_network().context("creating namespaces and bridge")?;
        }
        Ok(c)
    }

    /// Node ids.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The client-facing gRPC address of node `id`.
    pub fn addr(&self, id: u64) -> String {
        match self.mode {
            Mode::Netns => format!("{SUBNET}.{id}:{NS_PORT}"),
            Mode::Local => format!("127.0.0.1:{}", self.base_port + id as u16),
        }
    }

    fn ns(&self, id: u64) -> String {
        format!("sbj{}-n{id}", self.tag)
    }

    fn bridge(&self) -> String {
        format!("sbj{}-br", self.tag)
    }

    fn setup_network(&self) -> Result<()> {
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for &id in &self.ids {
            let ns = self.ns(id);
            let host_end = format!("sbj{}-h{id}", self.tag);
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["link", "set", &host_end, "master", &br])?;
            ip(&["link", "set", &host_end, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{SUBNET}.{id}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Remove namespaces and bridges left by harness runs that died. A run
    /// that is still alive is never disturbed: every run uses the same
    /// subnet, so two at once cannot work, and this refuses to start a
    /// second one with a message naming the first.
    pub fn cleanup_stale() -> Result<()> {
        let mut names: Vec<(&str, String)> = Vec::new();
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with("sbj") {
                    names.push(("netns", name.to_owned()));
                }
            }
        }
        if let Ok(out) = Command::new("ip").args(["-o", "link", "show", "type", "bridge"]).output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name =
                    line.split(':').nth(1).unwrap_or("").trim().split('@').next().unwrap_or("");
                if name.starts_with("sbj") {
                    names.push(("link", name.to_owned()));
                }
            }
        }
        let me = std::process::id();
        for (_, name) in &names {
            if let Some(pid) = owner_pid(name).filter(|&p| p != me) {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    bail!(
                        "another harness run (pid {pid}) is using {name}; runs share the \
                         {SUBNET}.0/24 subnet, so wait for it to finish"
                    );
                }
            }
        }
        for (kind, name) in names {
            let _ = Command::new("ip").args([kind, "del", &name]).status();
        }
        Ok(())
    }

    /// The `--initial-cluster` value.
    fn initial_cluster(&self) -> String {
        let parts: Vec<String> =
            self.ids.iter().map(|id| format!("{id}={}", self.addr(*id))).collect();
        parts.join(",")
    }

    /// Put every node's data directory on a power-loss mount served by
    /// `exe powerfs` (call before the first start; root and /dev/fuse only).
    /// With `torn_seed`, cuts are torn (each unsynced page reached the
    /// disk or not), each mount with a seed drawn from this one.
    pub fn enable_powerfs(&mut self, exe: PathBuf, torn_seed: Option<u64>) -> Result<()> {
        control::supported()?;
        self.powerfs = Some(exe);
        self.torn_seed = torn_seed;
        Ok(())
    }

    /// Copy each node's backing directory to `n<i>.disk.cut<k>` right after
    /// each power cut (what the disk held when the power came back).
    pub fn keep_cuts(&mut self, keep: bool) {
        self.keep_cuts = keep;
    }

    /// Whether data directories are on power-loss mounts.
    pub fn has_powerfs(&self) -> bool {
        self.powerfs.is_some()
    }

    fn mount_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("n{id}.mnt"))
    }

    /// Data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        if self.powerfs.is_some() {
            // A directory inside the mount, so that its parent is on the
            // power-loss file system too.
            self.mount_dir(id).join("data")
        } else {
            self.dir.join(format!("n{id}"))
        }
    }

    /// Mount node `id`'s power-loss file system if it is not mounted.
    fn ensure_mounted(&mut self, id: u64) -> Result<()> {
        let Some(exe) = self.powerfs.clone() else { return Ok(()) };
        if self.mounts.contains_key(&id) {
            return Ok(());
        }
        let m = PowerMount::start(
            &exe,
            &self.dir.join(format!("n{id}.disk")),
            &self.mount_dir(id),
            &self.dir.join(format!("n{id}.powerfs.log")),
            self.torn_seed.map(|s| {
                s.wrapping_mul(1_000_003).wrapping_add(id << 32).wrapping_add(self.mounts_started)
            }),
        )
        .with_context(|| format!("mounting node {id}'s power-loss file system"))?;
        self.mounts.insert(id, m);
        self.mounts_started += 1;
        Ok(())
    }

    /// Cut the power of `ids` at once: every unsynced byte on their file
    /// systems is dropped (all cut before any process is killed), then the
    /// processes get SIGKILL and the mounts are removed. Returns what each
    /// file system dropped.
    pub fn power_cut(&mut self, ids: &[u64]) -> Result<Vec<(u64, CutReport)>> {
        if self.powerfs.is_none() {
            bail!("power cuts need the power-loss file system (enable_powerfs)");
        }
        for id in ids {
            if let Some(m) = self.mounts.get(id) {
                m.send_cut()?;
            }
        }
        let mut reports = Vec::new();
        for id in ids {
            if let Some(m) = self.mounts.get(id) {
                reports.push((*id, m.wait_cut()?));
            }
        }
        for &id in ids {
            if self.is_running(id) {
                self.kill(id)?;
            } else if let Some(mut child) = self.procs.get_mut(&id).and_then(|p| p.child.take()) {
                // It died on its own (e.g. on the first EIO): reap it.
                let _ = child.wait();
            }
        }
        for id in ids {
            if let Some(mut m) = self.mounts.remove(id) {
                m.stop()?;
            }
        }
        self.cuts += 1;
        if self.keep_cuts {
            for id in ids {
                let from = self.dir.join(format!("n{id}.disk"));
                let to = self.dir.join(format!("n{id}.disk.cut{}", self.cuts));
                run(Command::new("cp").arg("-a").arg(&from).arg(&to))?;
            }
        }
        Ok(reports)
    }

    /// The last `n` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, n: usize) -> String {
        let text = fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Log file of node `id`.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("n{id}.log"))
    }

    /// Start node `id` (bootstrapping with `initial_cluster` when `bootstrap`).
    pub fn start(&mut self, id: u64, bootstrap: bool) -> Result<()> {
        // A process that exited on its own (crashed) is started again.
        if self.is_running(id) {
            return Ok(());
        }
        self.ensure_mounted(id)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .with_context(|| format!("opening {}", self.log_path(id).display()))?;
        let mut cmd = match self.mode {
            Mode::Netns => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.ns(id)]).arg(&self.bin);
                c
            }
            Mode::Local => Command::new(&self.bin),
        };
        let listen = match self.mode {
            Mode::Netns => format!("{SUBNET}.{id}:{NS_PORT}"),
            Mode::Local => self.addr(id),
        };
        // The checker's models have no notion of a node-down purge: keep
        // registrations when a node is declared down (they still expire).
        // No gateway probing (see NODE_CONFIG).
        // Small snapshot thresholds, so that a node cut off for a few
        // seconds is caught up by a snapshot install (the `snapshot` nemesis).
        let config = self.dir.join(format!("n{id}.toml"));
        fs::write(&config, NODE_CONFIG).with_context(|| format!("writing {}", config.display()))?;
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--id", &id.to_string(), "--listen", &listen])
            .arg("--data")
            .arg(self.data_dir(id))
            .env("RUST_LOG", &self.log_level)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if bootstrap {
            cmd.args(["--initial-cluster", &self.initial_cluster()]);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        // `ip netns exec` execs the node in place, so the pid is the node's.
        let child = cmd.spawn().with_context(|| format!("starting node {id}"))?;
        self.procs.insert(id, Proc { child: Some(child), paused: false });
        Ok(())
    }

    /// Shift node `id`'s wall clock by `offset_ms` (0 = none) through the
    /// node's test-only failpoint file in its data directory, which it
    /// re-reads every 100 ms. Needs a node binary built with failpoints.
    pub fn set_clock_offset(&mut self, id: u64, offset_ms: i64) -> Result<()> {
        let file = self.data_dir(id).join("failpoint-clock-offset-ms");
        if offset_ms == 0 {
            return match fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", file.display()))
                }
                _ => Ok(()),
            };
        }
        fs::write(&file, offset_ms.to_string())
            .with_context(|| format!("writing {}", file.display()))
    }

    /// Whether node `id` has a live process (running or paused).
    pub fn is_running(&mut self, id: u64) -> bool {
        match self.procs.get_mut(&id).and_then(|p| p.child.as_mut()) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn signal(&self, id: u64, sig: i32) -> Result<()> {
        let Some(child) = self.procs.get(&id).and_then(|p| p.child.as_ref()) else {
            bail!("node {id} is not running");
        };
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let r = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        if r != 0 {
            bail!("kill({}, {sig}) failed: {}", child.id(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        if self.procs.get(&id).is_some_and(|p| p.paused) {
            let _ = self.signal(id, libc::SIGCONT);
        }
        self.signal(id, libc::SIGKILL)?;
        if let Some(p) = self.procs.get_mut(&id) {
            if let Some(mut child) = p.child.take() {
                let _ = child.wait();
            }
            p.paused = false;
        }
        Ok(())
    }

    /// Stop node `id` with SIGTERM (clean shutdown), waiting up to 10 s.
    pub fn terminate(&mut self, id: u64) -> Result<()> {
        if self.procs.get(&id).is_some_and(|p| p.paused) {
            let _ = self.signal(id, libc::SIGCONT);
        }
        if self.signal(id, libc::SIGTERM).is_err() {
            return Ok(());
        }
        if let Some(p) = self.procs.get_mut(&id) {
            if let Some(mut child) = p.child.take() {
                for _ in 0..100 {
                    if let Ok(Some(_)) = child.try_wait() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        Ok(())
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        if let Some(p) = self.procs.get_mut(&id) {
            p.paused = true;
        }
        Ok(())
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        self.signal(id, libc::SIGCONT)?;
        if let Some(p) = self.procs.get_mut(&id) {
            p.paused = false;
        }
        Ok(())
    }

    /// Nodes currently paused.
    pub fn paused(&self) -> Vec<u64> {
        self.procs.iter().filter(|(_, p)| p.paused).map(|(id, _)| *id).collect()
    }

    /// Wipe node `id`'s data directory (it must be stopped).
    pub fn wipe(&mut self, id: u64) -> Result<()> {
        let d = self.data_dir(id);
        if d.exists() {
            fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
        Ok(())
    }

    /// Drop, at node `at`, every packet coming from node `from` (one way).
    pub fn block(&mut self, at: u64, from: u64) -> Result<()> {
        if self.mode != Mode::Netns {
            bail!("partitions need network namespaces (run as root)");
        }
        let set = self.blocked.entry(at).or_default();
        set.insert(from);
        let set = set.clone();
        self.apply_rules(at, &set)
    }

    fn apply_rules(&self, at: u64, from: &BTreeSet<u64>) -> Result<()> {
        let mut script = String::from("flush ruleset\n");
        if !from.is_empty() {
            let addrs: Vec<String> = from.iter().map(|f| format!("{SUBNET}.{f}")).collect();
            script.push_str(&format!(
                "table inet sbj {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    ip saddr {{ {} }} drop\n  }}\n}}\n",
                addrs.join(", ")
            ));
        }
        let path = self.dir.join(format!("nft-n{at}.rules"));
        fs::write(&path, script)?;
        run(Command::new("ip").args(["netns", "exec", &self.ns(at), "nft", "-f"]).arg(&path))
    }

    /// Remove every partition rule.
    pub fn heal(&mut self) -> Result<()> {
        if self.mode != Mode::Netns {
            return Ok(());
        }
        let ats: Vec<u64> = self.blocked.keys().copied().collect();
        self.blocked.clear();
        for at in ats {
            self.apply_rules(at, &BTreeSet::new())?;
        }
        Ok(())
    }

    /// Partition into `groups`: nodes in different groups cannot talk (both ways).
    pub fn partition(&mut self, groups: &[Vec<u64>]) -> Result<()> {
        for (gi, g) in groups.iter().enumerate() {
            for (hi, h) in groups.iter().enumerate() {
                if gi != hi {
                    for &a in g {
                        for &b in h {
                            self.block(a, b)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Stop every node (SIGCONT first for paused ones), then remove the network.
    pub fn teardown(&mut self) {
        let ids: Vec<u64> = self.procs.keys().copied().collect();
        for id in ids {
            let _ = self.terminate(id);
        }
        for (_, mut m) in std::mem::take(&mut self.mounts) {
            let _ = m.stop();
        }
        self.remove_network();
    }

    fn remove_network(&mut self) {
        if self.mode != Mode::Netns {
            return;
        }
        for &id in &self.ids.clone() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(id)])
                .stderr(Stdio::null())
                .status();
        }
        let _ =
            Command::new("ip").args(["link", "del", &self.bridge()]).stderr(Stdio::null()).status();
    }

    /// Copy every node's log into `dest`.
    pub fn collect_logs(&self, dest: &Path) -> Result<()> {
        for &id in &self.ids {
            let src = self.log_path(id);
            if src.exists() {
                fs::copy(&src, dest.join(format!("node{id}.log")))?;
            }
            let pfs = self.dir.join(format!("n{id}.powerfs.log"));
            if pfs.exists() {
                fs::copy(&pfs, dest.join(format!("node{id}.powerfs.log")))?;
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn names_tell_the_run_that_made_them() {
        assert_eq!(owner_pid("sbj1a2b-br"), Some(0x1a2b));
        assert_eq!(owner_pid("sbj400000-n5"), Some(0x400000));
        assert_eq!(owner_pid("sbj1a2-h12"), Some(0x1a2));
        // The old form (and anything else) has no owner: removed as stale.
        assert_eq!(owner_pid("sbjb78n4"), None);
        assert_eq!(owner_pid("sbjzz-br"), None);
    }
}
