//! Node configuration: a TOML file, overridden by command-line flags.
//!
//! Every default lives in one place — the `Default` impls below — and
//! [`Config::validate`] checks the combination before anything starts, so
//! a bad value is a clear startup error rather than a surprise at run time.
//! The Raft timings default to values chosen for fast failover on a LAN:
//! heartbeats every 40 ms and elections after 100–200 ms of silence (spread
//! per node, see [`RaftTimings::election_range`]). openraft 0.9 also makes a
//! follower wait out the leader lease (its election maximum) before it
//! campaigns, so a leader crash costs lease + timeout: about 0.3–0.5 s with
//! these defaults (measured: docs/bench.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_storage::state::NodeId;

/// A configuration problem, found before the node starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the line and the key).
        message: String,
    },
    /// A value or combination of values is not acceptable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole node configuration. Field docs are the configuration reference
/// (README "Configuration").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id (> 0), unique in the cluster; also its Raft id.
    pub id: NodeId,
    /// gRPC listen address, for clients and peers.
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this node; defaults to `listen`.
    pub advertise: Option<String>,
    /// Data directory (sled database: Raft log, vote, snapshots).
    pub data: PathBuf,
    /// Bootstrap membership, `id=host:port,...` (etcd-style). Used only when
    /// the data directory is empty; ignored on restart.
    pub initial_cluster: Option<String>,
    /// Prometheus metrics listen address (text format over HTTP); off when
    /// unset. It has no TLS and no authentication: keep it on 127.0.0.1.
    pub metrics: Option<SocketAddr>,
    /// Status page listen address (HTML page and JSON endpoints over HTTP,
    /// see README "Status page"); off when unset. It shows cluster state
    /// (addresses, numbers, gateways) without authentication: bind it to a
    /// management network or 127.0.0.1.
    pub http: Option<SocketAddr>,
    /// The SIP front end. `sip = "host:port"` is short for `[sip] listen =
    /// "host:port"`; off when no address is set.
    #[serde(deserialize_with = "sip_or_address")]
    pub sip: Sip,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    pub log: String,
    /// Raft timings and snapshot policy.
    pub raft: RaftTimings,
    /// Write path: group commit and timeouts.
    pub writes: Writes,
    /// Registration defaults.
    pub registrations: Registrations,
    /// This node's call capacity and the cluster's stand-by policy.
    pub calls: Calls,
    /// Gateway report defaults and keep-alive probing.
    pub gateways: Gateways,
    /// How the leader detects dead members.
    pub liveness: Liveness,
    /// Time limits on the data directory.
    pub storage: Storage,
    /// TLS on the gRPC port: mutual TLS between nodes, server-auth TLS for
    /// clients. Off unless all three files are set.
    pub tls: Tls,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: 0,
            listen: "127.0.0.1:7001".parse().expect("literal address"),
            advertise: None,
            data: PathBuf::from("switchboard-data"),
            initial_cluster: None,
            metrics: None,
            http: None,
            sip: Sip::default(),
            log: "info,openraft=warn".into(),
            raft: RaftTimings::default(),
            writes: Writes::default(),
            registrations: Registrations::default(),
            calls: Calls::default(),
            gateways: Gateways::default(),
            liveness: Liveness::default(),
            storage: Storage::default(),
            tls: Tls::default(),
        }
    }
}

/// TLS files (PEM). All three or none: a node that serves TLS also needs
/// the CA to check its peers' certificates and its own certificate to
/// present to them, so a partial table is refused rather than guessed at.
/// The files are read and checked at start-up (see `crate::tls`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// This node's certificate chain (leaf first). It is the server
    /// certificate clients and peers check, and the client certificate this
    /// node presents to its peers, so it needs the node's address (IP or
    /// DNS name) as a subject alternative name.
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1). Keep it readable
    /// by the node's user only.
    pub key: Option<PathBuf>,
    /// The cluster CA certificate(s): peers must present a certificate
    /// signed by it, and this node checks the peers it calls against it.
    pub ca: Option<PathBuf>,
}

impl Tls {
    /// Whether TLS is configured (all three files set; see [`Config::validate`]).
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some() && self.ca.is_some()
    }
}

/// Raft timings and snapshot policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTimings {
    /// Leader heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Shortest election timeout, ms.
    pub election_min_ms: u64,
    /// Longest election timeout, ms.
    pub election_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind the last snapshot (for slow followers).
    pub keep_entries_after_snapshot: u64,
    /// Timeout for sending one snapshot chunk / installing a snapshot, ms.
    /// openraft's 200 ms default is far too short for large states.
    pub install_snapshot_timeout_ms: u64,
    /// Timeout of one AppendEntries / Vote RPC, ms.
    pub rpc_timeout_ms: u64,
    /// How long `AddNode` waits for the new node to acknowledge the log up
    /// to its own addition before it gives up (the node stays a learner), ms.
    pub learner_catch_up_ms: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            // 30 / 80-160 ms: failover (kill -9 of the leader) median 288 ms,
            // max 340 ms on the 2-core bench machine; 40 / 100-200 missed the
            // 400 ms median (docs/bench.md). Validated by five-node chaos runs.
            heartbeat_ms: 30,
            election_min_ms: 80,
            election_max_ms: 160,
            snapshot_after_entries: 20_000,
            keep_entries_after_snapshot: 5_000,
            install_snapshot_timeout_ms: 30_000,
            rpc_timeout_ms: 1_000,
            learner_catch_up_ms: 60_000,
        }
    }
}

impl RaftTimings {
    /// The election timeout range for node `id`.
    ///
    /// openraft 0.9 draws each node's timeout once, at start-up; two
    /// survivors that drew close values can split votes again and again. So
    /// each node gets its own quarter-width slice of the configured range,
    /// staggered by id, and draws inside that.
    pub fn election_range(&self, id: NodeId) -> (u64, u64) {
        let width = self.election_max_ms - self.election_min_ms;
        let slice = (width / 4).max(1);
        let lo = self.election_min_ms + (id % 4) * (width - slice) / 3;
        (lo, lo + slice)
    }
}

/// Write path settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Writes {
    /// Most client writes grouped into one log entry.
    pub max_batch: usize,
    /// Most batches in flight at once (each is one Raft entry).
    pub max_inflight: usize,
    /// How long a client write may take, end to end, ms.
    pub timeout_ms: u64,
}

impl Default for Writes {
    fn default() -> Self {
        Writes { max_batch: 512, max_inflight: 4, timeout_ms: 5_000 }
    }
}

/// Time limits on the data directory: a disk (or file system) that stops
/// answering stops the node with a message instead of hanging it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// Longest one storage call may take once running (an append with its
    /// fsync, a snapshot write), ms; past it Raft stops with the cause and
    /// `serve` exits 1.
    pub io_timeout_ms: u64,
    /// Longest opening the data directory may take at start-up, s.
    pub open_timeout_s: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            io_timeout_ms: switchboard_storage::engine::DEFAULT_IO_TIME_LIMIT.as_millis() as u64,
            open_timeout_s: 600,
        }
    }
}

/// Registration defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Registrations {
    /// Lifetime of a registration when the request gives none, s.
    pub default_expires_s: u32,
    /// Purge the registrations a node controls once the leader has
    /// declared it down and it stayed down for `purge_after_s`.
    pub purge_on_node_down: bool,
    /// How long a node must stay down before its registrations are purged,
    /// s (0 = at once). Its calls move at once regardless; a node back
    /// within this time keeps its registrations, so a network blip does not
    /// unregister its devices until they next re-register.
    pub purge_after_s: u64,
    /// How often the leader sweeps expired bindings (and checks for due
    /// purges and clock ticks), ms.
    pub sweep_interval_ms: u64,
    /// The most one entry may advance the replicated clock, ms (0 = no
    /// cap). A leader whose wall clock jumps ahead then moves cluster time
    /// by at most this much per entry.
    pub max_clock_step_ms: u64,
}

impl Default for Registrations {
    fn default() -> Self {
        Registrations {
            default_expires_s: 3_600,
            purge_on_node_down: true,
            purge_after_s: switchboard_storage::state::DEFAULT_PURGE_AFTER_MS / 1_000,
            sweep_interval_ms: 1_000,
            max_clock_step_ms: switchboard_storage::state::DEFAULT_MAX_CLOCK_STEP_MS,
        }
    }
}

/// Calls: this node's capacity and the cluster's takeover policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Calls {
    /// Most concurrent calls this node owns (0 = no limit).
    pub capacity: u32,
    /// `hot` (calls move to their stand-by) or `cold` (calls are released).
    pub takeover: String,
}

impl Default for Calls {
    fn default() -> Self {
        Calls { capacity: 1_000, takeover: "hot".into() }
    }
}

/// Gateway defaults and keep-alive probing (SIP OPTIONS over UDP, sent by
/// the leader; like Kamailio's dispatcher `ds_ping_interval` and thresholds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gateways {
    /// How long a gateway reported as timed out / failed stays out of
    /// service when the report gives no time, s.
    pub default_retry_after_s: u32,
    /// Probe every gateway this often, ms (0 = no probing).
    pub probe_interval_ms: u64,
    /// A probe without a response within this time failed, ms.
    pub probe_timeout_ms: u64,
    /// Consecutive failed probes that take a gateway out of service.
    pub probe_failures_to_down: u32,
    /// Consecutive answered probes that bring back a gateway the prober took out.
    pub probe_successes_to_up: u32,
    /// How long a gateway the prober took out stays out before it may be
    /// offered again, s (extended while probes keep failing).
    pub probe_retry_after_s: u32,
}

impl Default for Gateways {
    fn default() -> Self {
        Gateways {
            default_retry_after_s: 30,
            probe_interval_ms: 1_000,
            probe_timeout_ms: 500,
            probe_failures_to_down: 3,
            probe_successes_to_up: 2,
            probe_retry_after_s: 10,
        }
    }
}

/// Member liveness: the leader polls every node of the node table and
/// declares one down after `missed_polls` unanswered polls in a row (the
/// defaults detect a dead node within about 0.8 s); a node that answers
/// again is declared up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Liveness {
    /// Poll interval, ms; a poll not answered within it is missed.
    pub poll_interval_ms: u64,
    /// Missed polls in a row before the node is declared down.
    pub missed_polls: u32,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness { poll_interval_ms: 200, missed_polls: 3 }
    }
}

/// The realm used when none is configured (also `ctl user put`'s default).
pub const DEFAULT_REALM: &str = "switchboard";

/// The SIP front end: a registrar and redirect server on UDP and TCP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sip {
    /// Listen address for both UDP and TCP; the front end is off when unset.
    pub listen: Option<SocketAddr>,
    /// Serve SIP over UDP.
    pub udp: bool,
    /// Serve SIP over TCP.
    pub tcp: bool,
    /// Digest authentication realm: challenges name it, and `ctl user put`
    /// hashes passwords for it by default. A user stored for another realm
    /// cannot authenticate here.
    pub realm: String,
    /// `auto` (default): REGISTER needs digest credentials once any user
    /// exists; `required`: always (no users = nobody may register);
    /// `off`: never.
    pub auth: AuthMode,
    /// How long a nonce stays valid, s; an older one gets `stale=true`.
    pub nonce_ttl_s: u64,
    /// Shortest registration accepted, s; shorter gets 423 with Min-Expires.
    pub min_expires_s: u32,
    /// Longest registration granted, s; longer requests are shortened.
    pub max_expires_s: u32,
    /// Most simultaneous TCP connections; more are refused at accept.
    pub tcp_max_connections: usize,
    /// A TCP connection silent for this long is closed, s.
    pub tcp_idle_timeout_s: u64,
    /// Retry-After of a 503 sent while no leader is known, s.
    pub retry_after_s: u32,
    /// Digest algorithms offered in 401 challenges, most preferred first:
    /// `SHA-256` and/or `MD5` (RFC 8760). Clients answer the first one they
    /// support; sipp 3.6 and some older phones read only the first
    /// challenge and fail on SHA-256, so a cluster serving them lists
    /// `["MD5"]` (or `MD5` first).
    pub algorithms: Vec<String>,
}

impl Sip {
    /// Whether a REGISTER must authenticate, given whether any user has
    /// credentials in the replicated state.
    pub fn required(&self, any_user: bool) -> bool {
        match self.auth {
            AuthMode::Auto => any_user,
            AuthMode::Required => true,
            AuthMode::Off => false,
        }
    }
}

impl Default for Sip {
    fn default() -> Self {
        Sip {
            listen: None,
            udp: true,
            tcp: true,
            realm: DEFAULT_REALM.into(),
            auth: AuthMode::Auto,
            nonce_ttl_s: 300,
            min_expires_s: 60,
            max_expires_s: 7_200,
            tcp_max_connections: 1_024,
            tcp_idle_timeout_s: 600,
            retry_after_s: 2,
            algorithms: vec!["SHA-256".into(), "MD5".into()],
        }
    }
}

/// When REGISTER requests must authenticate (see [`Sip::auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Required when at least one user has credentials, else off.
    Auto,
    /// Always required (with no users, every REGISTER is refused).
    Required,
    /// Never: credentials are kept but not asked for.
    Off,
}

/// `sip` accepts a bare address as well as a table: `sip = "0.0.0.0:5060"`.
/// Written by hand because serde's untagged enums lose the table's error
/// messages (a misspelt key would only say "did not match any variant").
fn sip_or_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Sip, D::Error> {
    struct Either;
    impl<'de> serde::de::Visitor<'de> for Either {
        type Value = Sip;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a SIP listen address \"host:port\" or a [sip] table")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sip, E> {
            let listen = v.parse().map_err(|e| E::custom(format!("sip address {v:?}: {e}")))?;
            Ok(Sip { listen: Some(listen), ..Sip::default() })
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Sip, A::Error> {
            Sip::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(Either)
}

impl Config {
    /// Read a TOML file (missing keys take their defaults).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
    }

    /// The address peers and clients should use for this node.
    pub fn advertise_addr(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// The parsed `initial_cluster`, if any.
    pub fn initial_members(&self) -> Result<Option<BTreeMap<NodeId, String>>, ConfigError> {
        self.initial_cluster.as_deref().map(parse_members).transpose()
    }

    /// Check the configuration as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.id == 0 {
            return bad("id must be > 0 (set `id` or --id)".into());
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_min_ms <= r.heartbeat_ms * 2 {
            return bad(format!(
                "raft.election_min_ms ({}) must exceed twice raft.heartbeat_ms ({}), which must be > 0",
                r.election_min_ms, r.heartbeat_ms
            ));
        }
        if r.election_max_ms <= r.election_min_ms {
            return bad(format!(
                "raft.election_max_ms ({}) must exceed raft.election_min_ms ({})",
                r.election_max_ms, r.election_min_ms
            ));
        }
        // Settings that mean nothing at zero (counts, intervals, time
        // limits), each refused by its own name.
        let (w, st, reg, l, sip) =
            (&self.writes, &self.storage, &self.registrations, &self.liveness, &self.sip);
        let positive = [
            ("raft.snapshot_after_entries", r.snapshot_after_entries),
            ("raft.install_snapshot_timeout_ms", r.install_snapshot_timeout_ms),
            ("raft.rpc_timeout_ms", r.rpc_timeout_ms),
            ("raft.learner_catch_up_ms", r.learner_catch_up_ms),
            ("writes.max_inflight", w.max_inflight as u64),
            ("writes.timeout_ms", w.timeout_ms),
            ("storage.io_timeout_ms", st.io_timeout_ms),
            ("storage.open_timeout_s", st.open_timeout_s),
            ("registrations.default_expires_s", u64::from(reg.default_expires_s)),
            ("registrations.sweep_interval_ms", reg.sweep_interval_ms),
            ("liveness.poll_interval_ms", l.poll_interval_ms),
            ("liveness.missed_polls", u64::from(l.missed_polls)),
            ("sip.nonce_ttl_s", sip.nonce_ttl_s),
            ("sip.tcp_max_connections", sip.tcp_max_connections as u64),
            ("sip.tcp_idle_timeout_s", sip.tcp_idle_timeout_s),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be > 0"));
        }
        if w.max_batch == 0 || w.max_batch > switchboard_storage::state::command::MAX_BATCH {
            return bad(format!(
                "writes.max_batch must be 1..={}",
                switchboard_storage::state::command::MAX_BATCH
            ));
        }
        let g = &self.gateways;
        if g.probe_interval_ms > 0
            && (g.probe_timeout_ms == 0
                || g.probe_timeout_ms > g.probe_interval_ms
                || g.probe_failures_to_down == 0
                || g.probe_successes_to_up == 0)
        {
            return bad(format!(
                "gateways: probe_timeout_ms ({}) must be 1..=probe_interval_ms ({}) and the probe thresholds > 0",
                g.probe_timeout_ms, g.probe_interval_ms
            ));
        }
        if !matches!(self.calls.takeover.as_str(), "hot" | "cold") {
            return bad(format!(
                "calls.takeover must be \"hot\" or \"cold\", not {:?}",
                self.calls.takeover
            ));
        }
        if sip.listen.is_some() && !sip.udp && !sip.tcp {
            return bad("sip: udp and tcp are both off; unset sip.listen to turn SIP off".into());
        }
        if sip.realm.is_empty()
            || sip.realm.len() > switchboard_storage::state::command::MAX_ID_LEN
            || sip.realm.chars().any(|c| c.is_control() || c == '"' || c == '\\')
        {
            return bad(format!(
                "sip.realm {:?} must be 1 to {} bytes without quotes, backslashes or control characters",
                sip.realm,
                switchboard_storage::state::command::MAX_ID_LEN
            ));
        }
        if sip.algorithms.is_empty() || sip.algorithms.iter().any(|a| a != "SHA-256" && a != "MD5")
        {
            return bad(format!(
                "sip.algorithms {:?} must list \"SHA-256\" and/or \"MD5\"",
                sip.algorithms
            ));
        }
        if sip.min_expires_s == 0 || sip.max_expires_s < sip.min_expires_s {
            return bad(format!(
                "sip.min_expires_s ({}) must be > 0 and at most sip.max_expires_s ({})",
                sip.min_expires_s, sip.max_expires_s
            ));
        }
        if let Some(http) = self.http {
            let clash = [Some(self.listen), self.metrics, self.sip.listen]
                .into_iter()
                .flatten()
                .any(|a| a == http && a.port() != 0);
            if clash {
                return bad(format!(
                    "http address {http} is also the gRPC, metrics or SIP address; give the status page its own port"
                ));
            }
        }
        let tls = [("cert", &self.tls.cert), ("key", &self.tls.key), ("ca", &self.tls.ca)];
        let missing: Vec<String> =
            tls.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| format!("tls.{k}")).collect();
        if !missing.is_empty() && missing.len() < tls.len() {
            return bad(format!(
                "TLS is half configured: {} missing; set all of tls.cert, tls.key and tls.ca \
                 (--tls-cert, --tls-key, --tls-ca) or none",
                missing.join(" and ")
            ));
        }
        if let Some(members) = self.initial_members()? {
            if !members.contains_key(&self.id) {
                return bad(format!("initial_cluster does not list this node's id {}", self.id));
            }
        }
        Ok(())
    }

    /// The openraft configuration derived from this one.
    pub fn openraft(&self) -> Result<openraft::Config, ConfigError> {
        let r = &self.raft;
        let (lo, hi) = r.election_range(self.id);
        let cfg = openraft::Config {
            cluster_name: "switchboard".into(),
            heartbeat_interval: r.heartbeat_ms,
            election_timeout_min: lo,
            election_timeout_max: hi,
            install_snapshot_timeout: r.install_snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_after_entries),
            max_in_snapshot_log_to_keep: r.keep_entries_after_snapshot,
            ..Default::default()
        };
        cfg.validate().map_err(|e| ConfigError::Invalid(format!("raft: {e}")))
    }

    /// The client write timeout.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.writes.timeout_ms)
    }
}

/// Parse `1=host:port,2=host:port,...`.
pub fn parse_members(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            ConfigError::Invalid(format!("initial_cluster entry {part:?} is not id=host:port"))
        })?;
        let id: NodeId = id.trim().parse().map_err(|_| {
            ConfigError::Invalid(format!("initial_cluster entry {part:?}: {id:?} is not a node id"))
        })?;
        let addr = addr.trim();
        if id == 0
            || addr.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(ConfigError::Invalid(format!(
                "initial_cluster entry {part:?}: need id > 0 and host:port"
            )));
        }
        if out.insert(id, addr.to_owned()).is_some() {
            return Err(ConfigError::Invalid(format!("initial_cluster lists node {id} twice")));
        }
    }
    if out.is_empty() {
        return Err(ConfigError::Invalid("initial_cluster is empty".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_once_an_id_is_set() {
        let c = Config { id: 1, ..Config::default() };
        c.validate().unwrap();
        c.openraft().unwrap();
        assert!(Config::default().validate().is_err(), "id 0 is refused");
    }

    #[test]
    fn a_zero_setting_is_named() {
        let mut c = Config { id: 1, ..Config::default() };
        c.raft.learner_catch_up_ms = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("raft.learner_catch_up_ms must be > 0"), "{e}");
        let mut c = Config { id: 1, ..Config::default() };
        c.raft.rpc_timeout_ms = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("raft.rpc_timeout_ms must be > 0"), "{e}");
        let mut c = Config { id: 1, ..Config::default() };
        c.sip.tcp_max_connections = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sip.tcp_max_connections must be > 0"), "{e}");
    }

    #[test]
    fn election_ranges_are_staggered_and_inside_the_configured_range() {
        let r = RaftTimings::default();
        let ranges: Vec<_> = (1..=4).map(|id| r.election_range(id)).collect();
        for (lo, hi) in &ranges {
            assert!(*lo >= r.election_min_ms && *hi <= r.election_max_ms && lo < hi, "{ranges:?}");
        }
        assert_ne!(ranges[0], ranges[1]);
        assert_ne!(ranges[1], ranges[2]);
    }

    #[test]
    fn members_parse_and_reject_garbage() {
        let m = parse_members("1=127.0.0.1:7001, 2=localhost:7002").unwrap();
        assert_eq!(m[&2], "localhost:7002");
        for bad in ["", "1", "x=a:1", "0=a:1", "1=a", "1=:80", "1=a:1,1=b:2", "1=a:99999"] {
            assert!(parse_members(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sip_is_an_address_or_a_table() {
        let c: Config = toml::from_str("id = 1\nsip = \"127.0.0.1:5060\"\n").unwrap();
        assert_eq!(c.sip.listen, Some("127.0.0.1:5060".parse().unwrap()));
        assert!(c.sip.udp && c.sip.tcp);
        let c: Config = toml::from_str(
            "id = 1\n[sip]\nlisten = \"127.0.0.1:5070\"\nauth = \"off\"\ntcp = false\n",
        )
        .unwrap();
        assert_eq!(c.sip.listen, Some("127.0.0.1:5070".parse().unwrap()));
        assert_eq!(c.sip.auth, AuthMode::Off);
        assert!(!c.sip.tcp);
        let e = toml::from_str::<Config>("id = 1\n[sip]\nlisen = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = toml::from_str::<Config>("id = 1\nsip = \"nowhere\"\n").unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
        let mut c = Config { id: 1, ..Config::default() };
        c.sip.min_expires_s = 7_201;
        assert!(c.validate().unwrap_err().to_string().contains("min_expires_s"));
    }

    #[test]
    fn sip_auth_defaults_and_modes() {
        let c: Config = toml::from_str("id = 1\nsip = \"127.0.0.1:5060\"\n").unwrap();
        assert_eq!((c.sip.realm.as_str(), c.sip.nonce_ttl_s), ("switchboard", 300));
        assert!(!c.sip.required(false) && c.sip.required(true), "auto");
        let c: Config = toml::from_str("id = 1\n[sip]\nauth = \"off\"\nrealm = \"pbx\"\n").unwrap();
        assert!(!c.sip.required(true));
        let c: Config = toml::from_str("id = 1\n[sip]\nauth = \"required\"\n").unwrap();
        assert!(c.sip.required(false));
        assert!(toml::from_str::<Config>("id = 1\n[sip]\nauth = \"maybe\"\n").is_err());
        for (realm, ttl) in [("switchboard", 0), ("", 300), ("a\"b", 300)] {
            let mut c = Config { id: 1, ..Config::default() };
            c.sip.realm = realm.into();
            c.sip.nonce_ttl_s = ttl;
            assert!(c.validate().is_err(), "{realm:?} {ttl}");
        }
    }

    #[test]
    fn http_is_off_by_default_and_needs_its_own_port() {
        assert_eq!(Config::default().http, None);
        let c: Config = toml::from_str("id = 1\nhttp = \"127.0.0.1:8081\"\n").unwrap();
        assert_eq!(c.http, Some("127.0.0.1:8081".parse().unwrap()));
        c.validate().unwrap();
        let c: Config = toml::from_str("id = 1\nhttp = \"127.0.0.1:7001\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("http address 127.0.0.1:7001 is also the gRPC"), "{e}");
        let e = toml::from_str::<Config>("id = 1\nhttp = \"localhost\"\n").unwrap_err();
        assert!(e.to_string().contains("http"), "{e}");
    }

    #[test]
    fn tls_is_all_three_files_or_none() {
        let c: Config = toml::from_str("id = 1\n").unwrap();
        assert!(!c.tls.enabled());
        c.validate().unwrap();
        let c: Config = toml::from_str(
            "id = 1\n[tls]\ncert = \"n.pem\"\nkey = \"n-key.pem\"\nca = \"ca.pem\"\n",
        )
        .unwrap();
        assert!(c.tls.enabled());
        assert_eq!(c.tls.ca.as_deref(), Some(Path::new("ca.pem")));
        c.validate().unwrap();

        let c: Config = toml::from_str("id = 1\n[tls]\ncert = \"n.pem\"\n").unwrap();
        assert!(!c.tls.enabled());
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "invalid configuration: TLS is half configured: tls.key and tls.ca missing; set \
             all of tls.cert, tls.key and tls.ca (--tls-cert, --tls-key, --tls-ca) or none"
        );
        let c: Config =
            toml::from_str("id = 1\n[tls]\ncert = \"n.pem\"\nkey = \"k.pem\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(": tls.ca missing;"), "{e}");
        let e = toml::from_str::<Config>("id = 1\n[tls]\ncrt = \"n.pem\"\n").unwrap_err();
        assert!(e.to_string().contains("crt"), "{e}");
    }

    #[test]
    fn toml_with_unknown_keys_is_refused_with_the_key_named() {
        let err = toml::from_str::<Config>("id = 1\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
        let c: Config = toml::from_str("id = 3\n[raft]\nheartbeat_ms = 20\n").unwrap();
        assert_eq!((c.id, c.raft.heartbeat_ms, c.raft.election_min_ms), (3, 20, 80));
    }
}

/// The example configurations shipped under packaging/ must load and pass
/// validation, so the Dockerfile, compose file and systemd unit never point
/// at a file the binary would refuse.
#[cfg(test)]
mod packaged_examples {
    use super::*;

    #[test]
    fn every_packaged_example_loads_and_validates() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");
        let examples = [
            ("compose/node1.toml", 1, "node1:7001"),
            ("compose/node2.toml", 2, "node2:7001"),
            ("compose/node3.toml", 3, "node3:7001"),
            ("systemd/switchboard.toml", 1, "10.0.0.1:7001"),
        ];
        for (file, id, advertise) in examples {
            let c = Config::from_file(&root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!((c.id, c.advertise_addr().as_str()), (id, advertise), "{file}");
            let members = c.initial_members().unwrap().expect("initial_cluster set");
            assert_eq!(members.len(), 3, "{file}");
            assert_eq!(members[&id], advertise, "{file}: a node is its own member");
            assert_eq!(c.data, Path::new("/var/lib/switchboard"), "{file}: the packaged data dir");
        }
    }
}
