//! `switchboard`: parse the command line, install logging, run the command.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use switchboard::cli;

/// Switchboard: a Raft-replicated telephony control plane.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version = switchboard::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one node.
    Serve(cli::serve::ServeArgs),
    /// Run a local cluster of real nodes with example data.
    Dev(cli::dev::DevArgs),
    /// Talk to a running cluster (an etcdctl-like client).
    Ctl(cli::ctl::CtlArgs),
    /// Measure a local cluster: write and redirect throughput and latency, failover time.
    Bench(cli::bench::BenchArgs),
    /// Print a shell completion script (e.g. `switchboard completions bash >
    /// /usr/share/bash-completion/completions/switchboard`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (roff): switchboard.1 and one per subcommand
    /// (switchboard-serve.1, switchboard-ctl-route.1, ...).
    Man {
        /// Directory to write them into (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: std::path::PathBuf,
    },
}

/// Structured logs on stderr; `RUST_LOG` wins over the configured level.
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Caps glibc's malloc at two arenas unless `MALLOC_ARENA_MAX` says
/// otherwise. glibc gives threads that contend for the heap arenas of
/// their own, up to eight per core, and memory freed in one arena is not
/// reused by the others: measured at 1 M registrations (docs/bench.md),
/// each node held ~1.6 GiB with the default and 1.3-1.4 GiB with two
/// arenas, and loaded faster. Called before the runtime starts any thread.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator, and no other thread
        // exists yet to be allocating concurrently.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Serve(args) => {
                let level =
                    args.config().map(|c| c.log).unwrap_or_else(|_| "info,openraft=warn".into());
                init_tracing(&level);
                cli::serve::serve(args).await
            }
            Cmd::Dev(args) => {
                init_tracing("warn");
                cli::dev::dev(args).await
            }
            // No tracing for ctl: its output is its answer, errors are one line.
            Cmd::Ctl(args) => cli::ctl::run(args).await,
            Cmd::Bench(args) => {
                init_tracing("warn");
                cli::bench::bench(args).await
            }
            Cmd::Completions { shell } => {
                // Into memory first: clap_complete panics when its writer
                // fails (stdout closed early, as by `| head`).
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "switchboard", &mut script);
                std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
                    .map_err(|e| anyhow::anyhow!("writing the completion script: {e}"))
            }
            Cmd::Man { out } => std::fs::create_dir_all(&out)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &out))
                .map(|()| eprintln!("wrote the manual pages to {}", out.display()))
                .map_err(|e| anyhow::anyhow!("writing manual pages to {}: {e}", out.display())),
        }
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Dropping a runtime waits for its blocking threads without limit; one
    // stuck in a storage call that was given up (a disk that stopped
    // answering) would keep the process alive after it has failed.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}
