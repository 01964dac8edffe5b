//! The harness's view of the cluster's public gRPC API: channels to each
//! node and the admin calls the nemeses need (status, membership, drain).
//! Workload clients use the same channels.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Result};
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

/// One lazily connected channel per node.
#[derive(Clone)]
pub struct Api {
    channels: BTreeMap<u64, (String, Channel)>,
}

impl Api {
    /// Channels to `addrs` (node id -> host:port); nothing connects yet.
    pub fn new(addrs: &BTreeMap<u64, String>) -> Result<Api> {
        let mut channels = BTreeMap::new();
        for (id, addr) in addrs {
            let ch = Channel::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .connect_lazy();
            channels.insert(*id, (addr.clone(), ch));
        }
        Ok(Api { channels })
    }

    /// The channel to node `id`.
    pub fn channel(&self, id: u64) -> Channel {
        self.channels[&id].1.clone()
    }

    /// Node `id`'s address.
    pub fn addr(&self, id: u64) -> &str {
        &self.channels[&id].0
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.channels.keys().copied().collect()
    }

    /// Status from node `id` (within `timeout`).
    pub async fn status(&self, id: u64, timeout: Duration) -> Result<pb::StatusResponse> {
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(timeout);
        let r = tokio::time::timeout(timeout, ClusterClient::new(self.channel(id)).status(req))
            .await
            .map_err(|_| anyhow!("node {id}: status timed out"))?
            .map_err(|s| anyhow!("node {id}: {}", s.message()))?;
        Ok(r.into_inner())
    }

    /// The leader as the first answering node among `among` reports it.
    pub async fn leader(&self, among: &[u64]) -> Option<u64> {
        for &id in among {
            if let Ok(s) = self.status(id, Duration::from_millis(500)).await {
                if s.leader_id != 0 {
                    return Some(s.leader_id);
                }
            }
        }
        None
    }

    /// Remove node `id` from the cluster, asking each of `via` in turn.
    pub async fn remove_node(&self, id: u64, via: &[u64]) -> Result<()> {
        let mut last = anyhow!("no node to ask");
        for &v in via {
            let mut req = tonic::Request::new(pb::RemoveNodeRequest { id });
            req.set_timeout(Duration::from_secs(10));
            match ClusterClient::new(self.channel(v)).remove_node(req).await {
                Ok(_) => return Ok(()),
                Err(s) => last = anyhow!("via {v}: {:?}: {}", s.code(), s.message()),
            }
        }
        Err(last)
    }

    /// Add node `id` at `addr`, asking each of `via` in turn.
    pub async fn add_node(&self, id: u64, via: &[u64]) -> Result<()> {
        let addr = self.addr(id).to_owned();
        let mut last = anyhow!("no node to ask");
        for &v in via {
            let mut req = tonic::Request::new(pb::AddNodeRequest { id, addr: addr.clone() });
            req.set_timeout(Duration::from_secs(20));
            match ClusterClient::new(self.channel(v)).add_node(req).await {
                Ok(_) => return Ok(()),
                Err(s) => last = anyhow!("via {v}: {:?}: {}", s.code(), s.message()),
            }
        }
        Err(last)
    }

    /// Drain node `id` (its calls move; as leader it hands over).
    pub async fn drain(&self, id: u64, via: &[u64]) -> Result<()> {
        let mut last = anyhow!("no node to ask");
        for &v in via {
            let mut req = tonic::Request::new(pb::DrainNodeRequest { id });
            req.set_timeout(Duration::from_secs(10));
            match ClusterClient::new(self.channel(v)).drain_node(req).await {
                Ok(_) => return Ok(()),
                Err(s) => last = anyhow!("via {v}: {:?}: {}", s.code(), s.message()),
            }
        }
        Err(last)
    }

    /// Voter ids according to node `id`.
    pub async fn members(&self, id: u64) -> Result<Vec<u64>> {
        let s = self.status(id, Duration::from_secs(1)).await?;
        Ok(s.members.iter().map(|m| m.id).collect())
    }

    /// Wait until every node of `ids` answers and all agree on one leader;
    /// returns it, or the leaders seen when `timeout` runs out.
    pub async fn wait_leader(&self, ids: &[u64], timeout: Duration) -> Result<u64> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for &id in ids {
                match self.status(id, Duration::from_millis(500)).await {
                    Ok(s) => leaders.push(s.leader_id),
                    Err(_) => leaders.push(0),
                }
            }
            if let Some(&first) = leaders.first() {
                if first != 0 && leaders.iter().all(|&l| l == first) {
                    return Ok(first);
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(anyhow!("leaders seen by nodes {ids:?}: {leaders:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
