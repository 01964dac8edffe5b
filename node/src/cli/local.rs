//! A local cluster of real `switchboard serve` child processes on 127.0.0.1,
//! shared by `switchboard dev` and `switchboard bench`.
//!
//! [`LocalCluster`] owns everything the two commands have in common: the
//! node addresses (base port P, P+1, ...), the root directory holding each
//! node's data directory (and, if asked, its log file), the `serve` command
//! line of node i (with or without `--initial-cluster`), the child process
//! handles, gRPC channels to the nodes, the leader lookup through the
//! `Cluster.Status` RPC, and stopping nodes: all of them gracefully, or one
//! with `kill -9`. What each command does with the cluster, and what it
//! prints, stays in `dev.rs` and `bench.rs`.
//!
//! Node ids are 1-based (node i listens on base-port + i - 1); indices into
//! [`LocalCluster::addrs`], [`LocalCluster::sip_addrs`] and
//! [`LocalCluster::channel`] are 0-based.
//!
//! Optionally every node also serves SIP ([`LocalCluster::with_sip`]: node
//! i on SIP base port + i - 1, UDP and TCP) and reads extra configuration
//! ([`LocalCluster::with_config`]: TOML written to `<root>/serve.toml` and
//! passed as `--config`), and serves the status page
//! ([`LocalCluster::with_http`]: node i on HTTP base port + i - 1), and
//! sets up TLS ([`LocalCluster::with_tls`]: node i serves with `<dir>/node<i>.pem`,
//! and the cluster's own channels trust `<dir>/ca.pem`).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::cluster_client::ClusterClient;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How long one `Cluster.Status` request of a leader lookup may take.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A leader as found by [`LocalCluster::leader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leader {
    /// The leader's node id.
    pub id: u64,
    /// True when the leader itself said it leads (its status has
    /// `state == "leader"`); false when another node only reported it as
    /// leader, which a restarted node may do for a moment with a stale id.
    pub confirmed: bool,
}

/// N `switchboard serve` processes of this same binary on 127.0.0.1.
pub struct LocalCluster {
    /// This program, run as `serve` for every node.
    exe: PathBuf,
    /// Directory holding `node<i>` data directories and `node<i>.log` files.
    root: PathBuf,
    /// Keeps a temporary root alive (and removes it on drop).
    _temp: Option<tempfile::TempDir>,
    /// `127.0.0.1:<port>` of every node, node 1 first.
    addrs: Vec<String>,
    /// Whether node output goes to `<root>/node<i>.log` (else /dev/null).
    log_files: bool,
    /// Extra `serve` arguments for every node.
    serve_args: Vec<String>,
    /// Extra environment variables for every node.
    env: Vec<(String, String)>,
    /// `127.0.0.1:<port>` of every node's SIP front end, node 1 first;
    /// empty when the nodes serve no SIP.
    sip_addrs: Vec<String>,
    /// `127.0.0.1:<port>` of every node's status page, node 1 first;
    /// empty when the nodes serve none.
    http_addrs: Vec<String>,
    /// `127.0.0.1:<port>` of every node's Prometheus metrics, node 1
    /// first; empty when the nodes serve none.
    metrics_addrs: Vec<String>,
    /// The `--config` file of every node, if any.
    config: Option<PathBuf>,
    /// How many of the nodes (the first ones) form the initial cluster.
    initial: usize,
    /// The TLS directory (see [`LocalCluster::with_tls`]) and the client
    /// configuration trusting its CA; plain text when `None`.
    tls: Option<(PathBuf, ClientTlsConfig)>,
    /// The child of node i at index i - 1; `None` for a node not running.
    /// Behind a mutex so that [`LocalCluster::first_exit`] can run next to
    /// RPCs that borrow the cluster too; never locked across an await.
    children: Mutex<Vec<Option<Child>>>,
}

impl LocalCluster {
    /// A cluster of `nodes` nodes from `base_port` up, with its data under
    /// `root` (created if missing, reused if there). No node runs yet.
    pub fn in_dir(nodes: u16, base_port: u16, root: PathBuf) -> anyhow::Result<LocalCluster> {
        let addrs = addresses(nodes, base_port)?;
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        LocalCluster::new(addrs, root, None)
    }

    /// A cluster of `nodes` nodes from `base_port` up, with its data in a
    /// fresh temporary directory removed when the cluster is dropped.
    pub fn temporary(nodes: u16, base_port: u16) -> anyhow::Result<LocalCluster> {
        let addrs = addresses(nodes, base_port)?;
        let temp = tempfile::tempdir().context("temporary directory")?;
        LocalCluster::new(addrs, temp.path().to_path_buf(), Some(temp))
    }

    /// The common part of [`LocalCluster::in_dir`] and [`LocalCluster::temporary`].
    fn new(
        addrs: Vec<String>,
        root: PathBuf,
        temp: Option<tempfile::TempDir>,
    ) -> anyhow::Result<LocalCluster> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let children = Mutex::new(addrs.iter().map(|_| None).collect());
        let initial = addrs.len();
        Ok(LocalCluster {
            exe,
            root,
            _temp: temp,
            addrs,
            log_files: false,
            serve_args: Vec::new(),
            env: Vec::new(),
            sip_addrs: Vec::new(),
            http_addrs: Vec::new(),
            metrics_addrs: Vec::new(),
            config: None,
            initial,
            tls: None,
            children,
        })
    }

    /// Append each node's stdout and stderr to `<root>/node<i>.log`
    /// instead of discarding them.
    pub fn with_log_files(mut self) -> LocalCluster {
        self.log_files = true;
        self
    }

    /// Only the first `n` nodes form the initial cluster; the others are
    /// spare addresses for nodes added later (`Cluster.AddNode`).
    pub fn with_initial_members(mut self, n: usize) -> LocalCluster {
        self.initial = n.clamp(1, self.addrs.len());
        self
    }

    /// Pass `args` to every node's `serve` command, after the usual ones.
    pub fn with_serve_args(mut self, args: &[&str]) -> LocalCluster {
        self.serve_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Set the environment variable `key` to `value` for every node.
    pub fn with_env(mut self, key: &str, value: &str) -> LocalCluster {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Serve SIP (UDP and TCP) on every node: node i on `127.0.0.1` port
    /// `base_port + i - 1`. Refuses a base port that leaves no room for
    /// every node.
    pub fn with_sip(mut self, base_port: u16) -> anyhow::Result<LocalCluster> {
        let nodes = u16::try_from(self.addrs.len()).unwrap_or(u16::MAX);
        self.sip_addrs =
            addresses(nodes, base_port).with_context(|| format!("SIP base port {base_port}"))?;
        Ok(self)
    }

    /// Serve the status page on every node: node i on `127.0.0.1` port
    /// `base_port + i - 1`. Refuses a base port that leaves no room for
    /// every node.
    pub fn with_http(mut self, base_port: u16) -> anyhow::Result<LocalCluster> {
        let nodes = u16::try_from(self.addrs.len()).unwrap_or(u16::MAX);
        self.http_addrs =
            addresses(nodes, base_port).with_context(|| format!("HTTP base port {base_port}"))?;
        Ok(self)
    }

    /// Serve Prometheus metrics on every node: node i on `127.0.0.1` port
    /// `base_port + i - 1`.
    pub fn with_metrics(mut self, base_port: u16) -> anyhow::Result<LocalCluster> {
        let nodes = u16::try_from(self.addrs.len()).unwrap_or(u16::MAX);
        self.metrics_addrs = addresses(nodes, base_port)
            .with_context(|| format!("metrics base port {base_port}"))?;
        Ok(self)
    }

    /// Give every node this TOML configuration (see `serve --config`):
    /// written to `<root>/serve.toml`, replacing an earlier one. Flags
    /// (`--id`, `--listen`, `--sip`, ...) still override it.
    pub fn with_config(mut self, toml: &str) -> anyhow::Result<LocalCluster> {
        let path = self.root.join("serve.toml");
        std::fs::write(&path, toml).with_context(|| format!("cannot write {}", path.display()))?;
        self.config = Some(path);
        Ok(self)
    }

    /// Serve TLS from the files in `dir`: `ca.pem`, and `node<i>.pem` with
    /// `node<i>-key.pem` for node i (see `crate::tls::issue`). The
    /// cluster's own channels ([`LocalCluster::channel`]) then use TLS too,
    /// trusting `ca.pem` and presenting no certificate, like a client.
    pub fn with_tls(mut self, dir: PathBuf) -> anyhow::Result<LocalCluster> {
        let client = crate::tls::client_config("TLS CA", &dir.join("ca.pem"))?;
        self.tls = Some((dir, client));
        Ok(self)
    }

    /// The TLS flags of node `id`'s `serve` command (none without TLS).
    pub fn tls_args(&self, id: usize) -> Vec<String> {
        let Some((dir, _)) = &self.tls else { return Vec::new() };
        let path = |name: String| dir.join(name).display().to_string();
        vec![
            "--tls-cert".into(),
            path(format!("node{id}.pem")),
            "--tls-key".into(),
            path(format!("node{id}-key.pem")),
            "--tls-ca".into(),
            path("ca.pem".into()),
        ]
    }

    /// `127.0.0.1:<port>` of every node, node 1 first.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// `127.0.0.1:<port>` of every node's SIP front end, node 1 first;
    /// empty unless [`LocalCluster::with_sip`] was called.
    pub fn sip_addrs(&self) -> &[String] {
        &self.sip_addrs
    }

    /// `127.0.0.1:<port>` of every node's status page, node 1 first;
    /// empty unless [`LocalCluster::with_http`] was called.
    pub fn http_addrs(&self) -> &[String] {
        &self.http_addrs
    }

    /// `127.0.0.1:<port>` of every node's metrics; empty unless
    /// [`LocalCluster::with_metrics`] was called.
    pub fn metrics_addrs(&self) -> &[String] {
        &self.metrics_addrs
    }

    /// The directory holding the nodes' data directories and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This program, as run for every node.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.root.join(format!("node{id}"))
    }

    /// Node `id`'s log file (whether or not log files are on).
    pub fn log_path(&self, id: usize) -> PathBuf {
        self.root.join(format!("node{id}.log"))
    }

    /// The `--initial-cluster` value: `1=<addr>,2=<addr>,...`.
    fn initial_cluster(&self) -> String {
        let members: Vec<String> = self
            .addrs
            .iter()
            .take(self.initial)
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        members.join(",")
    }

    /// Start node `id` (1-based) and keep its child handle; with
    /// `bootstrap`, pass `--initial-cluster` (a restarted node comes back
    /// from its data directory without it). A child already held for that
    /// node is dropped, which kills it. Returns the new process id, if any.
    pub fn spawn(&self, id: usize, bootstrap: bool) -> anyhow::Result<Option<u32>> {
        let Some(addr) = id.checked_sub(1).and_then(|i| self.addrs.get(i)) else {
            bail!("no node {id} in a cluster of {}", self.addrs.len());
        };
        let mut cmd = Command::new(&self.exe);
        cmd.args(["serve", "--id", &id.to_string(), "--listen", addr]);
        if bootstrap {
            cmd.args(["--initial-cluster", &self.initial_cluster()]);
        }
        if let Some(sip) = self.sip_addrs.get(id - 1) {
            cmd.args(["--sip", sip]);
        }
        if let Some(http) = self.http_addrs.get(id - 1) {
            cmd.args(["--http", http]);
        }
        if let Some(metrics) = self.metrics_addrs.get(id - 1) {
            cmd.args(["--metrics", metrics]);
        }
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(self.tls_args(id));
        cmd.arg("--data").arg(self.data_dir(id)).args(&self.serve_args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        if self.log_files {
            let log_path = self.log_path(id);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("cannot open {}", log_path.display()))?;
            cmd.stdout(log.try_clone()?).stderr(log);
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = cmd.spawn().with_context(|| format!("cannot start node {id}"))?;
        let pid = child.id();
        self.lock()[id - 1] = Some(child);
        Ok(pid)
    }

    /// A gRPC channel to the node at index `i` (0-based, taken modulo the
    /// cluster size so that callers can spread clients with a counter).
    /// Connects lazily, on first use.
    pub fn channel(&self, i: usize) -> Channel {
        let addr = &self.addrs[i % self.addrs.len()];
        let endpoint = match &self.tls {
            None => Endpoint::from_shared(format!("http://{addr}")).expect("valid address"),
            // The configuration was built once in `with_tls`, so it builds again.
            Some((_, tls)) => Endpoint::from_shared(format!("https://{addr}"))
                .and_then(|e| e.tls_config(tls.clone()))
                .expect("valid address and TLS configuration"),
        };
        endpoint.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true).connect_lazy()
    }

    /// Ask every running node for its `Cluster.Status`: the first node that
    /// says it leads wins; failing that, the first leader id another node
    /// reports (unconfirmed). `None` while no node knows a leader.
    pub async fn leader(&self) -> Option<Leader> {
        let mut reported = None;
        for i in 0..self.addrs.len() {
            if !self.is_running(i + 1) {
                continue;
            }
            let mut req = tonic::Request::new(pb::StatusRequest {});
            req.set_timeout(STATUS_TIMEOUT);
            let Ok(status) = ClusterClient::new(self.channel(i)).status(req).await else {
                continue;
            };
            let status = status.into_inner();
            if status.state == "leader" {
                return Some(Leader { id: status.node_id, confirmed: true });
            }
            if reported.is_none() && status.leader_id != 0 {
                reported = Some(Leader { id: status.leader_id, confirmed: false });
            }
        }
        reported
    }

    /// Poll [`LocalCluster::leader`] every 50 ms for up to `timeout`; with
    /// `confirmed`, only a node that itself says it leads counts.
    pub async fn wait_leader(&self, timeout: Duration, confirmed: bool) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.leader().await {
                Some(l) if l.confirmed || !confirmed => return Ok(l.id),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        if confirmed {
            bail!("no node says it leads within {timeout:?}")
        }
        bail!("no leader within {timeout:?}")
    }

    /// Whether a child handle is held for node `id` (it may have exited
    /// without [`LocalCluster::first_exit`] noticing yet).
    pub fn is_running(&self, id: usize) -> bool {
        id.checked_sub(1).and_then(|i| self.lock().get(i).map(Option::is_some)).unwrap_or(false)
    }

    /// Wait until some held child has exited and return its node id and
    /// exit status, polling every 200 ms. The handle is kept (call
    /// [`LocalCluster::forget`] to drop it), so calling again returns the
    /// same node at once. Never returns while no child is held.
    pub async fn first_exit(&self) -> (usize, ExitStatus) {
        loop {
            let (exited, any) = {
                let mut children = self.lock();
                let any = children.iter().any(Option::is_some);
                let exited = children.iter_mut().enumerate().find_map(|(i, slot)| {
                    let status = slot.as_mut()?.try_wait().ok()??;
                    Some((i + 1, status))
                });
                (exited, any)
            };
            if let Some(exited) = exited {
                return exited;
            }
            if !any {
                return std::future::pending().await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Drop the handle of node `id` (say, after it exited on its own), so
    /// that the other methods treat it as not running.
    pub fn forget(&self, id: usize) {
        let mut children = self.lock();
        if let Some(slot) = id.checked_sub(1).and_then(|i| children.get_mut(i)) {
            *slot = None;
        }
    }

    /// `kill -9` node `id` and wait for it to exit; it is then not running
    /// (restart it with [`LocalCluster::spawn`]). A node not running is left alone.
    pub async fn kill(&mut self, id: usize) -> anyhow::Result<()> {
        let slot = id.checked_sub(1).and_then(|i| self.children_mut().get_mut(i));
        if let Some(mut child) = slot.and_then(Option::take) {
            child.start_kill().with_context(|| format!("cannot kill node {id}"))?;
            let _ = child.wait().await;
        }
        Ok(())
    }

    /// Stop every running node: SIGTERM to all, then wait up to five
    /// seconds for each and kill what is left, printing `node <i> stopped`
    /// or `node <i> killed after 5 s` on stderr for each.
    pub async fn stop(&mut self) {
        let children = self.children_mut();
        for child in children.iter().flatten() {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) on a pid we spawned and still own (not yet reaped).
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        for (i, slot) in children.iter_mut().enumerate() {
            let Some(mut child) = slot.take() else { continue };
            let id = i + 1;
            match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                Ok(_) => eprintln!("node {id} stopped"),
                Err(_) => {
                    let _ = child.kill().await;
                    eprintln!("node {id} killed after 5 s");
                }
            }
        }
    }

    /// The child handles, for a short synchronous look (never across an await).
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Child>>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The child handles, without locking (`&mut self` rules out sharing).
    fn children_mut(&mut self) -> &mut Vec<Option<Child>> {
        self.children.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `127.0.0.1:<port>` for `nodes` nodes from `base_port` up, refusing a
/// cluster without nodes or one whose last port would pass 65535.
fn addresses(nodes: u16, base_port: u16) -> anyhow::Result<Vec<String>> {
    if nodes == 0 {
        bail!("a local cluster needs at least one node");
    }
    let last = u32::from(base_port) + u32::from(nodes) - 1;
    if last > u32::from(u16::MAX) {
        bail!("--base-port {base_port} leaves no room for {nodes} nodes");
    }
    Ok((0..nodes).map(|i| format!("127.0.0.1:{}", base_port + i)).collect())
}
