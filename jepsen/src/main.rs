//! `switchboard-jepsen test ...`: run the chaos harness (see the README's
//! "Chaos testing" section). Exit code 0 only when every run is valid.
//! `switchboard-jepsen powerfs ...`: the power-loss file system daemon the
//! `power` nemesis starts (see `powerfs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
use switchboard_jepsen::checker::Verdict;
use switchboard_jepsen::nemesis::Kind;
use switchboard_jepsen::run::{self, Options};
use switchboard_jepsen::workload::Workload;

/// Black-box chaos tests for a Switchboard cluster.
#[derive(Debug, Parser)]
#[command(name = "switchboard-jepsen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a cluster, run workloads under faults, check the history.
    Test(TestArgs),
    /// Serve the power-loss FUSE file system (the `power` nemesis starts
    /// one per node; SIGUSR1 cuts the power). Runs until unmounted.
    Powerfs(PowerfsArgs),
}

#[derive(Debug, clap::Args)]
struct PowerfsArgs {
    /// Backing directory: what survives a power cut.
    #[arg(long)]
    backing: PathBuf,
    /// Mount point.
    #[arg(long)]
    mount: PathBuf,
    /// Where to write the report of a power cut.
    #[arg(long)]
    report: PathBuf,
    /// Tear power cuts with this seed: each unsynced page reached the disk
    /// or not, at random. Without it every unsynced byte is lost.
    #[arg(long)]
    torn_seed: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Nodes in the cluster (3 or 5).
    #[arg(long, default_value_t = 5)]
    nodes: u64,
    /// Seconds of load and faults per run.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Faults: partition,kill,pause,member,leader-isolation,clock,snapshot,
    /// power (or none). `power` is not in the default: it needs root and
    /// /dev/fuse and is run on its own (see docs/chaos.md).
    #[arg(long, default_value = "partition,kill,pause,member,leader-isolation,clock,snapshot")]
    nemesis: String,
    /// Workloads: register,cas,set,local,route (all by default). `route`
    /// sets up numbers and a gateway route before the run and checks every
    /// Route answer, at skewed nodes too.
    #[arg(long, default_value = "register,cas,set,local,route")]
    workload: String,
    /// Seed of the first run (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Runs, each with the next seed.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Clients per workload.
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// Directory for run reports.
    #[arg(long, default_value = "target/jepsen")]
    out: PathBuf,
    /// The `switchboard` binary (default: next to this one, built if missing).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Do not use network namespaces even as root.
    #[arg(long)]
    no_netns: bool,
    /// Test-only node failpoint (see the node's failpoint module), e.g. stale-linearizable-reads.
    #[arg(long)]
    failpoint: Option<String>,
    /// Per-key time limit of the linearizability checker, seconds.
    #[arg(long, default_value_t = 60)]
    check_time_limit: u64,
    /// Keep the nodes' data directories, and with the power nemesis a copy
    /// of every node's disk after every cut (cluster/n<i>.disk.cut<k>).
    #[arg(long)]
    keep_data: bool,
    /// Tear the power nemesis's cuts: each unsynced page reached the disk
    /// or not, at random (seeded from --seed), instead of every unsynced
    /// byte being lost.
    #[arg(long)]
    torn: bool,
}

async fn test(args: TestArgs) -> Result<bool> {
    let nemeses = Kind::parse_list(&args.nemesis)?;
    let workloads = Workload::parse_list(&args.workload)?;
    if args.nodes == 0 || args.nodes > 9 {
        return Err(anyhow!("--nodes must be 1..=9"));
    }
    if args.torn && !nemeses.contains(&Kind::Power) {
        return Err(anyhow!("--torn tears the power nemesis's cuts: add power to --nemesis"));
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let bin = run::node_binary(args.bin)?;
    let mut node_env = Vec::new();
    if let Some(fp) = args.failpoint {
        node_env.push(("SWITCHBOARD_FAILPOINT".to_owned(), fp));
    }
    let mut all_valid = true;
    let mut summaries = Vec::new();
    for i in 0..args.runs {
        let opts = Options {
            nodes: args.nodes,
            time_s: args.time,
            nemeses: nemeses.clone(),
            workloads: workloads.clone(),
            seed: seed + i,
            clients: args.clients,
            bin: bin.clone(),
            out: args.out.clone(),
            netns: !args.no_netns,
            node_env: node_env.clone(),
            check_time_limit: Duration::from_secs(args.check_time_limit),
            keep_data: args.keep_data,
            torn: args.torn,
        };
        eprintln!("run {}/{} seed {}", i + 1, args.runs, opts.seed);
        let outcome = run::run(&opts).await?;
        eprintln!("{}", outcome.summary);
        all_valid &= outcome.verdict == Verdict::Valid;
        summaries.push(outcome.summary);
    }
    if args.runs > 1 {
        for s in &summaries {
            println!("{s}");
        }
    }
    let valid = summaries.iter().filter(|s| s.starts_with("VALID")).count();
    println!(
        "{}: {valid}/{} runs valid (seed {seed}{})",
        if all_valid { "VALID" } else { "NOT VALID" },
        args.runs,
        if args.runs > 1 { format!("..{}", seed + args.runs - 1) } else { String::new() }
    );
    Ok(all_valid)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Powerfs(a) = &cli.command {
        // A plain thread-per-request daemon: no async runtime.
        let args = switchboard_jepsen::powerfs::daemon::DaemonArgs {
            backing: a.backing.clone(),
            mount: a.mount.clone(),
            report: a.report.clone(),
            torn_seed: a.torn_seed,
        };
        return match switchboard_jepsen::powerfs::daemon::serve(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(async {
        match cli.command {
            Cmd::Test(args) => test(args).await,
            Cmd::Powerfs(_) => Ok(true),
        }
    }) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
