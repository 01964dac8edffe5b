//! `switchboard dev`: a local cluster for trying Switchboard out.
//!
//! Starts N real `switchboard serve` processes (this same binary) on
//! 127.0.0.1 ports P, P+1, ... with real sled data directories under
//! `--data`, waits for a leader, loads an example dial plan, gateways and a
//! few registrations, prints one `ready: leader=<id>` line, then endpoints
//! and example commands. Every node also serves SIP (UDP and TCP) on
//! 127.0.0.1 from `--sip-base-port` (5061) up, and a demo SIP user
//! ([`DEMO_USER`]) is put so that a softphone can register at once; and
//! serves its status page on 127.0.0.1 from `--http-base-port` (8001) up.
//! Ctrl-C (SIGINT) or SIGTERM stops every node with
//! SIGTERM and waits for them. A data directory from an earlier run is
//! reused: the cluster comes back with its data.
//!
//! With `--tls`, a throwaway CA and one certificate per node (for
//! 127.0.0.1 and localhost) are made afresh on every start into
//! `<data>/tls/`, the nodes serve TLS with them (mutual TLS between
//! nodes), and the printed `ctl` lines carry `--tls-ca <data>/tls/ca.pem`.
//! The CA key is never written: nothing else can be signed with it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::dial_plan_client::DialPlanClient;
use switchboard_proto::v1::gateways_client::GatewaysClient;
use switchboard_proto::v1::registrar_client::RegistrarClient;
use switchboard_proto::v1::users_client::UsersClient;
use tonic::transport::Channel;

use super::local::LocalCluster;

/// Flags of `switchboard dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Number of nodes (3 or more for fault tolerance).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// gRPC port of node 1; node i listens on base-port + i - 1.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Directory holding each node's data directory and log file.
    #[arg(long, default_value = "switchboard-dev")]
    pub data: PathBuf,
    /// SIP port (UDP and TCP) of node 1; node i serves SIP on
    /// sip-base-port + i - 1. 0 = no SIP.
    #[arg(long, default_value_t = 5061)]
    pub sip_base_port: u16,
    /// Status page port of node 1 (http://127.0.0.1:PORT/); node i serves
    /// it on http-base-port + i - 1. 0 = no status page.
    #[arg(long, default_value_t = 8001)]
    pub http_base_port: u16,
    /// Serve TLS: make a throwaway CA and node certificates in
    /// `<data>/tls/` and start the nodes with them.
    #[arg(long)]
    pub tls: bool,
}

/// The demo SIP user (number, password) put when SIP is on. Only for
/// trying a softphone out: the password is printed and not secret.
pub const DEMO_USER: (&str, &str) = ("1001", "demo-1001");

/// Node configuration when SIP is on: MD5 offered first, so that phones
/// (and sipp) that read only the first challenge or know no SHA-256 can
/// register; the others still pick SHA-256 from the second challenge.
const SIP_CONFIG: &str = "[sip]\nalgorithms = [\"MD5\", \"SHA-256\"]\n";

/// How long the cluster may take to elect a leader and take the example data.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Run the local cluster until SIGINT/SIGTERM.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let mut cluster =
        LocalCluster::in_dir(args.nodes, args.base_port, args.data.clone())?.with_log_files();
    if args.tls {
        let dir = args.data.join("tls");
        write_dev_certs(&dir, args.nodes)?;
        cluster = cluster.with_tls(dir)?;
    }
    let sip = args.sip_base_port != 0;
    if sip {
        cluster = cluster.with_sip(args.sip_base_port)?.with_config(SIP_CONFIG)?;
    }
    if args.http_base_port != 0 {
        cluster = cluster.with_http(args.http_base_port)?;
    }

    // Stand-ins for the example gateways, so that the leader's OPTIONS
    // probes find them alive; gw-intl (5094) is left silent on purpose, so
    // probing takes it out of service a few seconds after start-up.
    for port in [5091u16, 5092, 5093] {
        match tokio::net::UdpSocket::bind(("127.0.0.1", port)).await {
            Ok(socket) => {
                tokio::spawn(gateway_standin(socket));
            }
            Err(e) => eprintln!("note: example gateway 127.0.0.1:{port} not simulated: {e}"),
        }
    }

    for (i, addr) in cluster.addrs().iter().enumerate() {
        let id = i + 1;
        let pid = cluster.spawn(id, true)?;
        eprintln!(
            "started node {id} (pid {}) on {addr}, log {}",
            pid.unwrap_or(0),
            cluster.log_path(id).display()
        );
    }

    let ready = tokio::select! {
        r = tokio::time::timeout(READY_TIMEOUT, prepare(&cluster, sip)) => r,
        _ = super::serve::shutdown_signal() => {
            cluster.stop().await;
            return Ok(());
        }
        dead = cluster.first_exit() => {
            let (id, status) = dead;
            let log = cluster.log_path(id);
            cluster.stop().await;
            bail!("node {id} exited during start-up ({status}); see {}:\n{}", log.display(), tail(&log));
        }
    };
    let leader = match ready {
        Ok(Ok(leader)) => leader,
        Ok(Err(e)) => {
            cluster.stop().await;
            return Err(e);
        }
        Err(_) => {
            cluster.stop().await;
            bail!(
                "no leader with the example data after {READY_TIMEOUT:?}; see the logs in {}",
                args.data.display()
            );
        }
    };

    let ep = cluster.addrs().join(",");
    let ca = args.data.join("tls").join("ca.pem");
    // Every printed ctl line: with TLS, it names the CA to trust.
    let ctl = if args.tls {
        format!("switchboard ctl --tls-ca {} --endpoints {ep}", ca.display())
    } else {
        format!("switchboard ctl --endpoints {ep}")
    };
    println!("ready: leader={leader}");
    println!("endpoints: {ep}");
    if args.tls {
        println!(
            "tls: on (throwaway CA {}; clients: {ctl} ... or SWITCHBOARD_TLS_CA={})",
            ca.display(),
            ca.display()
        );
    }
    println!("data: {}", args.data.display());
    for (i, addr) in cluster.sip_addrs().iter().enumerate() {
        println!("sip: node {} {addr} (UDP and TCP)", i + 1);
    }
    for (i, addr) in cluster.http_addrs().iter().enumerate() {
        println!("status page: node {} http://{addr}/ (JSON: http://{addr}/api/status)", i + 1);
    }
    if sip {
        let (user, password) = DEMO_USER;
        println!(
            "DEMO SIP user (for trying a softphone only; the password is not secret): \
             user {user}, password {password}, realm {}, register at {}",
            crate::config::DEFAULT_REALM,
            cluster.sip_addrs()[0]
        );
    }
    println!("try:");
    for example in [
        "status".to_string(),
        "lookup 1000".into(),
        "route 1001".into(),
        "route 95551234 --json".into(),
        "register 1003 sip:1003@127.0.0.1:5083 --device desk-1003".into(),
        "gateway report gw-east timeout --retry-after 30".into(),
        "call start call-1 --from 1000 --to 1001".into(),
        "watch".into(),
    ] {
        println!("  {ctl} {example}");
    }
    println!("Ctrl-C stops every node.");

    // A node that dies (say, `kill -9` to watch a failover) is reported with
    // the command that restarts it; the others keep running until Ctrl-C.
    let signal = super::serve::shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            dead = cluster.first_exit() => {
                let (id, status) = dead;
                let mut tls = cluster.tls_args(id).join(" ");
                if !tls.is_empty() {
                    tls.insert(0, ' ');
                }
                eprintln!(
                    "node {id} exited ({status}); the others keep running. Restart it with:\n  \
                     {} serve --id {id} --listen {}{tls}{} --data {} 2>>{}",
                    cluster.exe().display(),
                    cluster.addrs()[id - 1],
                    restart_flags(&cluster, id),
                    cluster.data_dir(id).display(),
                    cluster.log_path(id).display()
                );
                cluster.forget(id);
            }
        }
    }
    cluster.stop().await;
    Ok(())
}

/// Make a throwaway CA and a certificate for each of `nodes` nodes (valid
/// for 127.0.0.1 and localhost, the dev cluster's addresses) in `dir`:
/// `ca.pem`, `node<i>.pem`, `node<i>-key.pem` (keys readable by the owner
/// only). Files of an earlier run are replaced.
fn write_dev_certs(dir: &Path, nodes: u16) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: String, text: &str, mode: u32| -> anyhow::Result<()> {
        let path = dir.join(name);
        // Remove first: `mode` applies only to a file being created.
        let _ = std::fs::remove_file(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))
    };
    let ca = crate::tls::issue::Ca::new("switchboard dev throwaway CA")
        .map_err(|e| anyhow!("cannot make the dev CA: {e}"))?;
    write("ca.pem".into(), &ca.cert_pem(), 0o644)?;
    for id in 1..=nodes {
        let node = ca
            .issue(&format!("switchboard dev node {id}"), &["127.0.0.1", "localhost"])
            .map_err(|e| anyhow!("cannot make the certificate of node {id}: {e}"))?;
        write(format!("node{id}.pem"), &node.cert_pem, 0o644)?;
        write(format!("node{id}-key.pem"), &node.key_pem, 0o600)?;
    }
    Ok(())
}

/// Answer SIP OPTIONS like a live gateway would.
async fn gateway_standin(socket: tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
        if let Some(reply) = crate::sip::options::answer(&buf[..n]) {
            let _ = socket.send_to(reply.as_bytes(), from).await;
        }
    }
}

/// Wait for a leader, then load the example data through the public API
/// (with `sip`, the demo SIP user too).
async fn prepare(cluster: &LocalCluster, sip: bool) -> anyhow::Result<u64> {
    let leader = loop {
        if let Some(found) = cluster.leader().await {
            break found.id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let index = usize::try_from(leader).unwrap_or(1).saturating_sub(1);
    load_examples(cluster.channel(index)).await?;
    if sip {
        put_demo_user(cluster.channel(index)).await?;
    }
    Ok(leader)
}

/// The example data: idempotent puts, so a restarted dev cluster can load it again.
async fn load_examples(ch: Channel) -> anyhow::Result<()> {
    let plan = DialPlanClient::new(ch.clone());
    for (pattern, group, strip, prefix) in
        [("1XXX", "", 0, ""), ("9@", "pstn", 1, "+1"), ("00@", "intl", 2, "+")]
    {
        let route = pb::DialRoute {
            pattern: pattern.into(),
            priority: 10,
            group: group.into(),
            strip,
            prefix: prefix.into(),
        };
        retry(|| {
            let mut plan = plan.clone();
            let route = route.clone();
            async move { plan.put_route(pb::PutRouteRequest { route: Some(route) }).await }
        })
        .await
        .with_context(|| format!("loading route {pattern}"))?;
    }
    let gateways = GatewaysClient::new(ch.clone());
    for (id, group, address, priority, weight) in [
        ("gw-east", "pstn", "127.0.0.1:5091", 10, 60),
        ("gw-west", "pstn", "127.0.0.1:5092", 10, 40),
        ("gw-backup", "pstn", "127.0.0.1:5093", 20, 1),
        ("gw-intl", "intl", "127.0.0.1:5094", 10, 1),
    ] {
        let req = pb::PutGatewayRequest {
            id: id.into(),
            group: group.into(),
            address: address.into(),
            priority,
            weight,
            capacity: 100,
        };
        retry(|| {
            let mut g = gateways.clone();
            let req = req.clone();
            async move { g.put_gateway(req).await }
        })
        .await
        .with_context(|| format!("loading gateway {id}"))?;
    }
    let registrar = RegistrarClient::new(ch);
    for (number, device, port) in
        [("1000", "desk-1000", 5080), ("1001", "desk-1001", 5081), ("1002", "soft-1002", 5082)]
    {
        let req = pb::RegisterRequest {
            number: number.into(),
            device_id: device.into(),
            contact: format!("sip:{number}@127.0.0.1:{port}"),
            device_name: format!("SEP-{device}"),
            mac: String::new(),
            node_id: 0,
            q: 1000,
            expires_s: 24 * 3600,
            request_id: None,
        };
        retry(|| {
            let mut r = registrar.clone();
            let req = req.clone();
            async move { r.register(req).await }
        })
        .await
        .with_context(|| format!("registering {number}"))?;
    }
    Ok(())
}

/// Put [`DEMO_USER`] (idempotent: the same credentials again).
async fn put_demo_user(ch: Channel) -> anyhow::Result<()> {
    use crate::sip::digest::{ha1, Algorithm};
    let (user, password) = DEMO_USER;
    let realm = crate::config::DEFAULT_REALM;
    let req = pb::PutUserRequest {
        user: user.into(),
        realm: realm.into(),
        ha1_md5: ha1(Algorithm::Md5, user, realm, password),
        ha1_sha256: ha1(Algorithm::Sha256, user, realm, password),
    };
    let users = UsersClient::new(ch);
    retry(|| {
        let mut u = users.clone();
        let req = req.clone();
        async move { u.put_user(req).await }
    })
    .await
    .with_context(|| format!("putting the demo SIP user {user}"))?;
    Ok(())
}

/// Retry a request while the cluster is still settling (no leader yet).
async fn retry<T, F, Fut>(mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut last = None;
    for _ in 0..50 {
        match f().await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s)
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) =>
            {
                last = Some(s);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => return Err(anyhow!("{:?}: {}", s.code(), s.message())),
        }
    }
    Err(anyhow!("cluster not ready: {}", last.map(|s| s.message().to_string()).unwrap_or_default()))
}

/// The last ten lines of a node's log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// The `serve` flags beyond id, listen and data that node `id` was started
/// with (SIP, its config file, the status page), for the restart hint.
fn restart_flags(cluster: &LocalCluster, id: usize) -> String {
    let mut flags = String::new();
    if let Some(sip) = cluster.sip_addrs().get(id - 1) {
        flags.push_str(&format!(" --sip {sip}"));
    }
    let config = cluster.root().join("serve.toml");
    if config.exists() {
        flags.push_str(&format!(" --config {}", config.display()));
    }
    if let Some(http) = cluster.http_addrs().get(id - 1) {
        flags.push_str(&format!(" --http {http}"));
    }
    flags
}
