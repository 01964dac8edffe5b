//! `switchboard bench --scale`: a big state in a real cluster, and what it
//! costs.
//!
//! Starts `--nodes` real `serve` processes (plus one spare address for a
//! node added later), loads `--scale-registrations` registrations and
//! `--scale-calls` calls through the public gRPC API, then measures:
//! - resident memory (VmRSS) of every node;
//! - a snapshot built on every node (`Cluster.Snapshot`): build time, size,
//!   how long the state lock was held, and the worst write latency seen by
//!   a client writing at the leader meanwhile (apply must not stop);
//! - `Route` to registered numbers at one node, flat out then at half load;
//! - a follower killed with `kill -9` and restarted: time until it serves
//!   every acknowledged write again;
//! - a new, empty node added: time until it serves the whole state.
//!
//! Figures, not pass/fail: the machine decides the numbers. Every loop is
//! bounded in time; a load that cannot finish in [`LOAD_LIMIT`] stops the
//! run with an error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::calls_client::CallsClient;
use switchboard_proto::v1::cluster_client::ClusterClient;
use switchboard_proto::v1::dial_plan_client::DialPlanClient;
use switchboard_proto::v1::registrar_client::RegistrarClient;
use tonic::transport::Channel;

use super::bench::{routes, BenchArgs};
use super::compare;
use super::local::LocalCluster;

/// The longest a load phase may take before the run gives up.
const LOAD_LIMIT: Duration = Duration::from_secs(1_800);
/// The longest a restarted or added node may take to serve everything.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(300);
/// Concurrent clients of the load phases.
const LOADERS: usize = 256;

/// The `i`-th registered number: 9 digits starting with 4.
fn number(i: u64) -> String {
    format!("4{i:08}")
}

/// Run the scale benchmark and print the figures.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (regs, calls) = (args.scale_registrations, args.scale_calls);
    if regs == 0 || regs > 100_000_000 {
        bail!("--scale-registrations must be between 1 and 100000000");
    }
    let nodes = args.nodes.max(1);
    let spare = nodes as usize + 1;
    let mut cluster = LocalCluster::temporary(nodes + 1, args.base_port)?
        .with_initial_members(nodes as usize)
        .with_serve_args(&["--capacity", "0"])
        .with_env("RUST_LOG", "error");
    let mut pids = Vec::new();
    for id in 1..=nodes as usize {
        pids.push(cluster.spawn(id, true)?.context("node without a pid")?);
    }
    let leader = cluster.wait_leader(Duration::from_secs(30), true).await?;
    println!(
        "cluster: {nodes} nodes on {} (leader {leader}), data in {}",
        cluster.addrs()[..nodes as usize].join(","),
        cluster.root().display()
    );
    DialPlanClient::new(cluster.channel(0))
        .put_route(pb::PutRouteRequest {
            route: Some(pb::DialRoute {
                pattern: "4XXXXXXXX".into(),
                priority: 0,
                group: String::new(),
                strip: 0,
                prefix: String::new(),
            }),
        })
        .await?;

    let members = nodes as usize;
    let t = Instant::now();
    load(regs, "registrations", members, &cluster, |ch, i| async move {
        let req = compare::register(number(i), i);
        RegistrarClient::new(ch).register(req).await.map(|_| ())
    })
    .await?;
    let reg_secs = t.elapsed().as_secs_f64();
    println!("loaded {regs} registrations in {reg_secs:.0} s ({:.0}/s)", regs as f64 / reg_secs);
    if calls > 0 {
        let t = Instant::now();
        load(calls, "calls", members, &cluster, move |ch, i| async move {
            let req = pb::StartCallRequest {
                call_id: format!("scale-{i}"),
                from: number(i % regs),
                to: number((i + 1) % regs),
                node_id: 0,
                gateway: String::new(),
                request_id: None,
            };
            CallsClient::new(ch).start_call(req).await.map(|_| ())
        })
        .await?;
        let secs = t.elapsed().as_secs_f64();
        println!("loaded {calls} calls in {secs:.0} s ({:.0}/s)", calls as f64 / secs);
    }
    let applied = caught_up(&cluster, members).await?;
    println!("every node applied index {applied}");
    print_rss("after the load", &pids);

    // Snapshots, one node at a time, while a client writes at the leader.
    let leader = cluster.wait_leader(Duration::from_secs(10), true).await? as usize;
    println!("\nsnapshot of each node (Cluster.Snapshot), one client writing at the leader:");
    println!(
        "  {:>4}  {:>9}  {:>9}  {:>11}  {:>12}",
        "node", "build ms", "MiB", "lock held", "worst write"
    );
    let mut builds = Vec::new();
    for id in 1..=members {
        let writer = Writer::start(cluster.channel(leader - 1));
        let mut client = ClusterClient::new(cluster.channel(id - 1));
        let mut req = tonic::Request::new(pb::SnapshotRequest {});
        req.set_timeout(Duration::from_secs(300));
        let answer = client.snapshot(req).await;
        let worst = writer.stop().await;
        let s = answer.with_context(|| format!("snapshot of node {id}"))?.into_inner();
        println!(
            "  {id:>4}  {:>9}  {:>9.1}  {:>8} us  {:>9.1} ms",
            s.build_ms,
            s.bytes as f64 / (1 << 20) as f64,
            s.view_us,
            worst
        );
        builds.push(s.build_ms);
    }
    builds.sort_unstable();
    println!("  median build {} ms (target < 5000 ms)", builds[builds.len() / 2]);
    print_rss("after the snapshots", &pids);

    // Routes to registered numbers from local state at one node.
    println!("\nredirects (Route to registered numbers, LOCAL, at node 1, 32 clients, 5 s each):");
    let (max_rate, p50, p99) = routes(&cluster, 5, None, move |r| number(r % regs)).await;
    println!("  flat out:   {max_rate:>9.0} routes/s  p50 {p50:.3} ms  p99 {p99:.3} ms");
    let (rate, p50, p99) =
        routes(&cluster, 5, Some(max_rate / 2.0), move |r| number(r % regs)).await;
    println!(
        "  half load:  {rate:>9.0} routes/s  p50 {p50:.3} ms  p99 {p99:.3} ms (target p99 < 1 ms)"
    );

    // A follower killed and restarted from its data directory.
    let leader = cluster.wait_leader(Duration::from_secs(10), true).await? as usize;
    let victim = if leader == members { 1 } else { members };
    let target = caught_up(&cluster, members).await?;
    cluster.kill(victim).await?;
    let t = Instant::now();
    pids[victim - 1] = cluster.spawn(victim, false)?.context("node without a pid")?;
    serving(&cluster, victim, target, regs).await?;
    println!(
        "\nrestart: node {victim} killed (-9) and restarted; serving every write after {:.1} s \
         (target < 10 s)",
        t.elapsed().as_secs_f64()
    );

    // A new, empty node: added, caught up by snapshot, serving.
    let addr = cluster.addrs()[spare - 1].clone();
    let t = Instant::now();
    let new_pid = cluster.spawn(spare, false)?.context("node without a pid")?;
    let target = caught_up(&cluster, members).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10), true).await? as usize;
    let mut req = tonic::Request::new(pb::AddNodeRequest { id: spare as u64, addr });
    req.set_timeout(CATCH_UP_LIMIT);
    ClusterClient::new(cluster.channel(leader - 1))
        .add_node(req)
        .await
        .with_context(|| format!("adding node {spare}"))?;
    let added = t.elapsed().as_secs_f64();
    serving(&cluster, spare, target, regs).await?;
    println!(
        "add: node {spare} started empty and added; a voter after {added:.1} s, serving the whole \
         state after {:.1} s (target < 20 s)",
        t.elapsed().as_secs_f64()
    );
    pids.push(new_pid);
    print_rss("at the end", &pids);
    cluster.stop().await;
    Ok(())
}

/// Run `op(channel, i)` for i in 0..n with [`LOADERS`] clients spread over
/// the first `members` nodes, retrying each a few times; progress every 10 s.
async fn load<F, Fut>(
    n: u64,
    what: &str,
    members: usize,
    cluster: &LocalCluster,
    op: F,
) -> anyhow::Result<()>
where
    F: Fn(Channel, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + LOAD_LIMIT;
    let mut tasks = Vec::new();
    for c in 0..LOADERS {
        let ch = cluster.channel(c % members);
        let (next, done, failed, op) = (next.clone(), done.clone(), failed.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() > deadline {
                    return;
                }
                let mut ok = false;
                for attempt in 0..5u64 {
                    if op(ch.clone(), i).await.is_ok() {
                        ok = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
                }
                let counter = if ok { &done } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let progress = {
        let (done, what) = (done.clone(), what.to_string());
        let start = Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let d = done.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                println!("  {what}: {d} of {n} after {secs:.0} s ({:.0}/s)", d as f64 / secs);
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    let (d, f) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    if d < n {
        bail!(
            "loading {what}: {d} of {n} written, {f} failed after 5 tries (limit {LOAD_LIMIT:?})"
        );
    }
    Ok(())
}

/// Wait until nodes 1..=members have applied the leader's applied index
/// (asked now); returns that index.
async fn caught_up(cluster: &LocalCluster, members: usize) -> anyhow::Result<u64> {
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    let leader = cluster.wait_leader(Duration::from_secs(10), true).await? as usize;
    let target =
        status(cluster, leader).await.ok_or_else(|| anyhow!("the leader does not answer"))?.1;
    for id in 1..=members {
        while status(cluster, id).await.is_none_or(|(_, applied)| applied < target) {
            if Instant::now() > deadline {
                bail!("node {id} did not apply index {target} within {CATCH_UP_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(target)
}

/// Node `id`'s (node id, applied index), if it answers.
async fn status(cluster: &LocalCluster, id: usize) -> Option<(u64, u64)> {
    let mut req = tonic::Request::new(pb::StatusRequest {});
    req.set_timeout(Duration::from_secs(2));
    let s = ClusterClient::new(cluster.channel(id - 1)).status(req).await.ok()?.into_inner();
    Some((s.node_id, s.applied_index))
}

/// Wait until node `id` has applied `target` and answers a LOCAL lookup of
/// the last registered number with its binding.
async fn serving(cluster: &LocalCluster, id: usize, target: u64, regs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    let last = number(regs - 1);
    loop {
        let applied = status(cluster, id).await.is_some_and(|(_, a)| a >= target);
        if applied {
            let mut req = tonic::Request::new(pb::LookupRequest {
                number: last.clone(),
                consistency: pb::Consistency::Local as i32,
            });
            req.set_timeout(Duration::from_secs(2));
            let found = RegistrarClient::new(cluster.channel(id - 1)).lookup(req).await;
            if found.is_ok_and(|r| !r.into_inner().bindings.is_empty()) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("node {id} was not serving index {target} within {CATCH_UP_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One client registering at the leader in a loop; [`Writer::stop`]
/// returns the slowest write it saw, ms.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<f64>,
}

impl Writer {
    fn start(ch: Channel) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut client = RegistrarClient::new(ch);
            let mut worst = 0f64;
            let mut n = 900_000_000u64;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let t = Instant::now();
                let mut req = tonic::Request::new(compare::register(format!("5{n:08}"), n));
                req.set_timeout(Duration::from_secs(10));
                let _ = client.register(req).await;
                worst = worst.max(t.elapsed().as_secs_f64() * 1000.0);
            }
            worst
        });
        Writer { stop, task }
    }

    async fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(f64::NAN)
    }
}

/// Print every node's resident memory.
fn print_rss(when: &str, pids: &[u32]) {
    let rss: Vec<String> = pids
        .iter()
        .enumerate()
        .map(|(i, pid)| match rss_mib(*pid) {
            Some(m) => format!("node {} {m:.0} MiB", i + 1),
            None => format!("node {} -", i + 1),
        })
        .collect();
    println!("RSS {when}: {} (target < 1536 MiB)", rss.join(", "));
}

/// VmRSS of `pid` in MiB, from /proc.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
