//! A local etcd cluster for `switchboard bench --compare etcd`: N `etcd`
//! processes (the Debian package etcd-server) on 127.0.0.1, default
//! settings (fsync on), data in a temporary directory, stopped on drop.
//!
//! Owns: etcd's command line, waiting until it answers, the member pids
//! (for CPU accounting). Does not own the workloads ([`super::compare`]).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use switchboard_proto::etcd::kv_client::KvClient;
use switchboard_proto::etcd::RangeRequest;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// A running etcd cluster.
pub struct EtcdCluster {
    children: Vec<Child>,
    /// Client URLs' `host:port`, member 1 first.
    addrs: Vec<String>,
    _dir: tempfile::TempDir,
}

/// The `etcd` binary on PATH, if any.
pub fn binary() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join("etcd"))
        .find(|p| p.is_file())
}

impl EtcdCluster {
    /// Start `n` members: client ports `base`, `base + 2`, ...; peer ports
    /// one above each.
    pub async fn start(n: u16, base: u16) -> anyhow::Result<EtcdCluster> {
        let exe = binary().context("etcd is not installed (Debian package etcd-server)")?;
        let dir = tempfile::tempdir()?;
        let peer = |i: u16| format!("http://127.0.0.1:{}", base + 2 * i + 1);
        let initial: Vec<String> = (0..n).map(|i| format!("e{}={}", i + 1, peer(i))).collect();
        let initial = initial.join(",");
        let mut children = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..n {
            let client = format!("127.0.0.1:{}", base + 2 * i);
            let log = std::fs::File::create(dir.path().join(format!("e{}.log", i + 1)))?;
            let child = Command::new(&exe)
                .arg("--name")
                .arg(format!("e{}", i + 1))
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{}", i + 1)))
                .arg("--listen-client-urls")
                .arg(format!("http://{client}"))
                .arg("--advertise-client-urls")
                .arg(format!("http://{client}"))
                .arg("--listen-peer-urls")
                .arg(peer(i))
                .arg("--initial-advertise-peer-urls")
                .arg(peer(i))
                .arg("--initial-cluster")
                .arg(&initial)
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg("switchboard-bench")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?;
            children.push(child);
            addrs.push(client);
        }
        let cluster = EtcdCluster { children, addrs, _dir: dir };
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Wait until every member answers a linearizable read.
    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.addrs.len() {
            loop {
                let mut kv = KvClient::new(self.channel(i));
                let req = RangeRequest { key: b"ready".to_vec(), ..Default::default() };
                if kv.range(req).await.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("etcd member {} not ready after {timeout:?}", i + 1);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// A new connection to member `i % n`.
    pub fn channel(&self, i: usize) -> Channel {
        Channel::from_shared(format!("http://{}", self.addrs[i % self.addrs.len()]))
            .expect("valid address")
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy()
    }

    /// The members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    /// Stop every member.
    pub async fn stop(mut self) {
        for c in &mut self.children {
            let _ = c.kill().await;
        }
    }
}
