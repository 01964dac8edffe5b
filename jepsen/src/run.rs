//! One test run: start the cluster, run the workloads with the nemeses for
//! the given time, heal, make the final reads, check, and write the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::api::Api;
use crate::checker::{self, CheckOptions, Verdict};
use crate::cluster::{Cluster, Mode};
use crate::history::{Call, Op};
use crate::model::{check_set, CasModel, RegisterModel};
use crate::nemesis::{Kind, Nemesis, Recorder};
use crate::power::PowerCycle;
use crate::report::{self, Counts, Results, WorkloadResult};
use crate::route::{self, check::check_routes};
use crate::workload::{self, check_local, Client, Recorded, Workload};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of nodes.
    pub nodes: u64,
    /// Seconds of load and faults.
    pub time_s: u64,
    /// Nemeses.
    pub nemeses: Vec<Kind>,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Seed of the schedule and the clients.
    pub seed: u64,
    /// Clients per workload (the local workload uses one per node).
    pub clients: u64,
    /// The node binary.
    pub bin: PathBuf,
    /// Where run directories go.
    pub out: PathBuf,
    /// Use network namespaces when root (else local processes).
    pub netns: bool,
    /// Environment for every node (e.g. a test-only failpoint).
    pub node_env: Vec<(String, String)>,
    /// Per-key checker time limit.
    pub check_time_limit: Duration,
    /// Keep the nodes' data directories (and, with the power nemesis, a
    /// copy of every disk after every cut) instead of deleting them.
    pub keep_data: bool,
    /// Torn power cuts (see `powerfs::fs::PowerFs::new`).
    pub torn: bool,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Combined verdict.
    pub verdict: Verdict,
    /// The run's directory.
    pub dir: PathBuf,
    /// One-line summary.
    pub summary: String,
}

/// The node binary: `explicit`, or `switchboard` in the target directory
/// this executable was built into. The harness needs the node's test-only
/// failpoints (stale reads, clock offsets), which a production build does
/// not have, so a binary whose `--version` does not name them is rebuilt
/// with cargo (same profile, `--features switchboard/failpoints`). The
/// harness runs the binary; it never links the node.
pub fn node_binary(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let me = std::env::current_exe().context("locating this executable")?;
    let dir = me.parent().ok_or_else(|| anyhow!("no parent directory of {}", me.display()))?;
    let dir = if dir.ends_with("deps") { dir.parent().unwrap_or(dir) } else { dir };
    let bin = dir.join("switchboard");
    if !has_failpoints(&bin) {
        eprintln!("building the node binary with failpoints ({})", bin.display());
        let mut cmd =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "switchboard", "--features", "switchboard/failpoints"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build -p switchboard")?;
        if !status.success() || !has_failpoints(&bin) {
            return Err(anyhow!("could not build {} with failpoints; pass --bin", bin.display()));
        }
    }
    Ok(bin)
}

/// Whether the node binary at `bin` was built with failpoints.
fn has_failpoints(bin: &Path) -> bool {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("failpoints"))
}

/// Run once.
pub async fn run(opts: &Options) -> Result<Outcome> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = opts.out.join(format!("run-{stamp}-seed{}", opts.seed));
    let cluster_dir = dir.join("cluster");
    let mut cluster =
        Cluster::new(opts.nodes, opts.bin.clone(), cluster_dir, opts.netns, opts.node_env.clone())?;
    if opts.nemeses.contains(&Kind::Power) {
        // This executable serves the power-loss file system (`powerfs`).
        let me = std::env::current_exe().context("locating this executable")?;
        cluster.enable_powerfs(me, opts.torn.then_some(opts.seed))?;
        cluster.keep_cuts(opts.keep_data);
    }
    let mode = cluster.mode;
    let cluster = Arc::new(Mutex::new(cluster));
    // Ctrl-C (or SIGTERM) ends the run early but still tears everything down.
    let result = tokio::select! {
        r = run_in(opts, &dir, cluster.clone(), mode) => r,
        _ = interrupted() => Err(anyhow!("interrupted; cluster stopped and network removed")),
    };
    // Always stop the nodes and remove the network, then keep their logs.
    let mut c = cluster.lock().unwrap_or_else(|p| p.into_inner());
    c.teardown();
    let _ = c.collect_logs(&dir);
    // The nodes' data directories are large and of no use after the check
    // (unless kept for diagnosis).
    if !opts.keep_data {
        let _ = std::fs::remove_dir_all(dir.join("cluster"));
    }
    result
}

async fn run_in(
    opts: &Options,
    dir: &std::path::Path,
    cluster: Arc<Mutex<Cluster>>,
    mode: Mode,
) -> Result<Outcome> {
    let addrs: BTreeMap<u64, String> = {
        let mut c = cluster.lock().unwrap_or_else(|p| p.into_inner());
        for id in 1..=opts.nodes {
            c.start(id, true)?;
        }
        (1..=opts.nodes).map(|id| (id, c.addr(id))).collect()
    };
    let api = Api::new(&addrs)?;
    let ids = api.ids();
    wait_healthy(&api, &ids, Duration::from_secs(60)).await.context("cluster did not come up")?;

    let anchors = crate::anchors::place(&api, &ids).await?;

    let start = Instant::now();
    let rec = Recorder::new(start);
    let out = Arc::new(Recorded::default());
    let ttl_s = workload::registration_ttl_s(opts.time_s);
    // The route workload's numbers, dial plan and gateways, written (and
    // read back at every node) before any fault; the run's time starts after.
    let route_setup = if opts.workloads.contains(&Workload::Route) {
        let deadline = Instant::now() + Duration::from_secs(30);
        Some(route::setup(&api, &rec, &out, route::Plan::new(ttl_s), deadline).await?)
    } else {
        None
    };
    let until = Instant::now() + Duration::from_secs(opts.time_s);
    let mut tasks = Vec::new();
    let mut process = 0;
    for &w in &opts.workloads {
        let n = if w == Workload::Local { opts.nodes } else { opts.clients };
        for i in 0..n {
            process += 1;
            let node = ids[(i as usize) % ids.len()];
            let client =
                Client::new(process, node, api.clone(), rec.clone(), out.clone(), opts.seed)
                    .with_ttl(ttl_s);
            tasks.push(tokio::spawn(client.run(w, until)));
        }
    }
    let nemesis =
        Nemesis::new(cluster.clone(), api.clone(), opts.nemeses.clone(), opts.seed, rec.clone())
            .with_audit(out.clone());
    let power_log = nemesis.power_log();
    let kinds: Vec<String> =
        nemesis.kinds().iter().map(|k| format!("{k:?}").to_lowercase()).collect();
    let nemesis_task = tokio::spawn(nemesis.run(until));
    let monitor = tokio::spawn(crate::anchors::monitor(
        api.clone(),
        ids.clone(),
        anchors.clone(),
        rec.clone(),
        until,
    ));
    for t in tasks {
        let _ = t.await;
    }
    let events = nemesis_task.await.map_err(|e| anyhow!("nemesis task: {e}"))?;
    let moves = monitor.await.map_err(|e| anyhow!("anchor monitor task: {e}"))?;

    // Healed: wait for the cluster, then the final reads.
    wait_healthy(&api, &ids, Duration::from_secs(60))
        .await
        .context("cluster did not recover after healing")?;
    if opts.workloads.contains(&Workload::Set) {
        workload::final_set_read(&api, &rec, &out, Instant::now() + Duration::from_secs(30))
            .await?;
    }
    let end_s = rec.now_ns() as f64 / 1e9;
    let ops = out.ops();
    let locals = out.locals();

    // Check, per workload.
    let check_opts = CheckOptions {
        budget: checker::Budget {
            time_limit: Some(opts.check_time_limit),
            ..checker::Budget::default()
        },
        threads: None,
    };
    let mut workloads = BTreeMap::new();
    let mut anomalies = Vec::new();
    let of = |pred: fn(&Call) -> bool| -> Vec<Op> {
        ops.iter().filter(|o| pred(&o.call)).cloned().collect()
    };
    for &w in &opts.workloads {
        let mut note = None;
        let (verdict, counts, detail) = match w {
            Workload::Register => {
                let h = of(|c| {
                    matches!(c, Call::Register { .. } | Call::Lookup | Call::Unregister { .. })
                });
                let r = checker::check(&RegisterModel, &h, &check_opts)?;
                anomalies.extend(report::linearizability_anomalies("register", &r, &h));
                (r.verdict, Counts::of(&h), serde_json::to_value(&r)?)
            }
            Workload::Cas => {
                let h = of(|c| matches!(c, Call::Start { .. } | Call::Cas { .. } | Call::Read));
                let r = checker::check(&CasModel, &h, &check_opts)?;
                anomalies.extend(report::linearizability_anomalies("cas", &r, &h));
                (r.verdict, Counts::of(&h), serde_json::to_value(&r)?)
            }
            Workload::Set => {
                let h = of(|c| matches!(c, Call::Add { .. } | Call::ReadSet));
                let r = check_set(&h);
                anomalies.extend(report::set_anomalies(&r));
                (r.verdict, Counts::of(&h), serde_json::to_value(&r)?)
            }
            Workload::Local => {
                let wipes: Vec<(u64, u64)> = events
                    .iter()
                    .filter(|e| e.kind == crate::nemesis::WIPE)
                    .filter_map(|e| Some((e.detail.parse().ok()?, e.at_ns)))
                    .collect();
                let r = check_local(&locals, &ops, &wipes);
                anomalies.extend(report::local_anomalies(&r));
                let v = if r.valid() { Verdict::Valid } else { Verdict::Invalid };
                let counts = Counts { ok: r.reads, fail: 0, info: 0 };
                (v, counts, serde_json::to_value(&r)?)
            }
            Workload::Route => {
                let setup =
                    route_setup.as_ref().ok_or_else(|| anyhow!("route workload not set up"))?;
                let h = of(|c| matches!(c, Call::Route { .. }));
                let r = check_routes(&setup.plan, &h, &events, &ids);
                anomalies.extend(report::route_anomalies(&r));
                note = Some(format!(
                    "{} answers checked, {} by a node while its clock was skewed",
                    r.checked, r.during_skew
                ));
                let detail = serde_json::json!({ "setup": setup, "check": r });
                (r.verdict(), Counts::of(&h), detail)
            }
        };
        workloads.insert(w.name().to_owned(), WorkloadResult { counts, verdict, detail, note });
    }
    // No call may have moved off a node that no fault harmed at the time.
    let r = crate::anchors::check(&api, &ids, &anchors, moves, &rec).await?;
    anomalies.extend(r.anomalies());
    let counts = Counts { ok: r.placed.len(), fail: 0, info: 0 };
    let result = WorkloadResult {
        counts,
        verdict: r.verdict(),
        detail: serde_json::to_value(&r)?,
        note: None,
    };
    workloads.insert("anchors".to_owned(), result);
    let power = power_log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let power_verdict =
        if power.iter().all(PowerCycle::ok) { Verdict::Valid } else { Verdict::Invalid };
    let verdict = Verdict::combine(
        workloads.values().map(|w| w.verdict).chain(std::iter::once(power_verdict)),
    );
    let mode_text = match mode {
        Mode::Netns => "netns: one network namespace per node, partitions with nftables".to_owned(),
        Mode::Local => {
            "local: processes on 127.0.0.1 (not root, or ip/nft missing): no partition faults"
                .to_owned()
        }
    };
    let faults = events.iter().filter(|e| e.phase == crate::history::NemesisPhase::Start).count();
    let results = Results {
        valid: report::verdict_json(verdict),
        seed: opts.seed,
        nodes: opts.nodes,
        time_s: opts.time_s,
        mode: mode_text,
        nemeses: kinds,
        faults,
        workloads,
        power: power.clone(),
        anomalies,
    };
    report::write(dir, &results, &ops, &events, &locals, end_s)?;
    let per: Vec<String> = results
        .workloads
        .iter()
        .map(|(name, w)| {
            format!(
                "{name} {:?} ({} ok/{} fail/{} info{})",
                w.verdict,
                w.counts.ok,
                w.counts.fail,
                w.counts.info,
                w.note.as_ref().map_or(String::new(), |n| format!("; {n}"))
            )
        })
        .collect();
    let power_text = if power.is_empty() {
        String::new()
    } else {
        let whole = power.iter().filter(|c| c.scope == "cluster").count();
        let lost: usize = power.iter().map(|c| c.lost.len()).sum();
        let failed = power.iter().filter(|c| c.failure.is_some()).count();
        let acked = power.iter().map(|c| c.acknowledged).max().unwrap_or(0);
        format!(
            " power cycles {} ({} node, {whole} cluster), set elements acknowledged {acked}, \
             lost {lost}, failed cycles {failed};",
            power.len(),
            power.len() - whole
        )
    };
    let summary = format!(
        "{}: seed {} nodes {} {}s faults {}{power_text} [{}] {}",
        match verdict {
            Verdict::Valid => "VALID",
            Verdict::Invalid => "INVALID",
            Verdict::Unknown => "UNKNOWN",
        },
        opts.seed,
        opts.nodes,
        opts.time_s,
        faults,
        per.join("; "),
        dir.display()
    );
    Ok(Outcome { verdict, dir: dir.to_path_buf(), summary })
}

/// Completes on SIGINT or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Wait until every node answers and they agree on a leader.
async fn wait_healthy(api: &Api, ids: &[u64], timeout: Duration) -> Result<()> {
    api.wait_leader(ids, timeout).await.map(|_| ())
}
