//! `switchboard bench --sip`: the SIP redirect server under load.
//!
//! A local 3-node cluster serves SIP; 10 000 numbers are registered (through
//! gRPC, so the figures are about the INVITE path only) and the dial plan
//! routes them. Then, at node 1 over UDP:
//! - 32 closed-loop clients (each its own socket: INVITE, wait for the 302,
//!   ACK, next), flat out and then at half that rate: calls/s, response time
//!   p50/p99 with microsecond resolution, node 1's CPU per call;
//! - sipp (when installed), open loop at fixed rates with the scenario in
//!   `bench_invite.xml`: the rate achieved, failed calls, retransmissions,
//!   node 1's CPU per call; comparable with sipp against Kamailio (see
//!   docs/bench.md).
//!
//! Figures only, never pass/fail. Every loop is bounded in time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::dial_plan_client::DialPlanClient;
use tokio::net::UdpSocket;

use super::bench::BenchArgs;
use super::compare::{self, cpu_us, read_number, READ_KEYS};
use super::local::LocalCluster;

/// The sipp scenario (INVITE, 302, ACK), written next to the cluster.
const SCENARIO: &str = include_str!("bench_invite.xml");
/// Closed-loop clients.
const CLIENTS: usize = 32;

/// What one closed-loop run gave.
struct Loop {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
    timeouts: u64,
}

fn sipp_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join("sipp"))
        .find(|p| p.is_file())
}

fn invite(me: SocketAddr, to: SocketAddr, number: &str, call: &str) -> Vec<u8> {
    format!(
        "INVITE sip:{number}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bench@{me}>;tag={call}\r\nTo: <sip:{number}@{to}>\r\n\
         Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:bench@{me}>\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn ack(me: SocketAddr, to: SocketAddr, number: &str, call: &str, to_tag: &str) -> Vec<u8> {
    format!(
        "ACK sip:{number}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bench@{me}>;tag={call}\r\nTo: <sip:{number}@{to}>;tag={to_tag}\r\n\
         Call-ID: {call}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// `CLIENTS` closed-loop clients for `secs`; at most `per_sec` calls/s in
/// all when given.
async fn closed_loop(
    target: SocketAddr,
    secs: u64,
    per_sec: Option<f64>,
    pids: &[u32],
) -> anyhow::Result<Loop> {
    let cpu_before = cpu_us(pids);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let me = socket.local_addr()?;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut timeouts = 0u64;
            let gap = per_sec.map(|r| Duration::from_secs_f64(CLIENTS as f64 / r));
            let mut next = Instant::now() + Duration::from_micros(c as u64 * 97);
            let mut buf = vec![0u8; 4096];
            let mut n = 0u64;
            while Instant::now() < until {
                if let Some(g) = gap {
                    tokio::time::sleep_until(next.into()).await;
                    next += g;
                }
                n += 1;
                let call = format!("b{c}x{n}");
                let number = read_number(n * CLIENTS as u64 + c as u64);
                let t = Instant::now();
                if socket.send_to(&invite(me, target, &number, &call), target).await.is_err() {
                    timeouts += 1;
                    continue;
                }
                // Wait for this call's answer; a late answer to an earlier
                // call is skipped.
                let got = tokio::time::timeout(Duration::from_millis(500), async {
                    loop {
                        let len = socket.recv(&mut buf).await.ok()?;
                        let text = std::str::from_utf8(&buf[..len]).ok()?;
                        if text.contains(&format!("Call-ID: {call}\r\n")) {
                            return Some(text.to_owned());
                        }
                    }
                })
                .await;
                match got {
                    Ok(Some(reply)) if reply.starts_with("SIP/2.0 302 ") => {
                        lat.push(t.elapsed().as_micros() as u64);
                        let tag = reply
                            .lines()
                            .find(|l| l.starts_with("To: "))
                            .and_then(|l| l.split(";tag=").nth(1))
                            .unwrap_or_default()
                            .to_owned();
                        let _ =
                            socket.send_to(&ack(me, target, &number, &call, &tag), target).await;
                    }
                    _ => timeouts += 1,
                }
            }
            (lat, timeouts)
        }));
    }
    let (mut all, mut timeouts) = (Vec::new(), 0);
    for t in tasks {
        let (lat, to) = t.await?;
        all.extend(lat);
        timeouts += to;
    }
    let cpu = cpu_us(pids).saturating_sub(cpu_before);
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            f64::NAN
        } else {
            all[((all.len() - 1) as f64 * p).round() as usize] as f64
        }
    };
    Ok(Loop {
        rate: all.len() as f64 / secs as f64,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        cpu_us: if all.is_empty() { f64::NAN } else { cpu as f64 / all.len() as f64 },
        timeouts,
    })
}

/// One sipp run at `rate` calls/s for `secs`: (achieved calls/s,
/// successful, failed, retransmissions, CPU µs per call of `pids`).
async fn sipp_run(
    sipp: &PathBuf,
    dir: &std::path::Path,
    target: &str,
    rate: u32,
    secs: u64,
    pids: &[u32],
) -> anyhow::Result<(f64, u64, u64, u64, f64)> {
    let stats = dir.join(format!("sipp-{rate}.csv"));
    let calls = u64::from(rate) * secs;
    let cpu_before = cpu_us(pids);
    let started = Instant::now();
    let mut child = tokio::process::Command::new(sipp)
        .arg("-sf")
        .arg(dir.join("bench_invite.xml"))
        .arg("-inf")
        .arg(dir.join("numbers.csv"))
        .args(["-i", "127.0.0.1", "-t", "u1", "-nostdin", "-default_behaviors", "all,-bye"])
        .args(["-r", &rate.to_string(), "-m", &calls.to_string(), "-l", &(rate * 2).to_string()])
        .args(["-timeout", &format!("{}s", secs + 20), "-recv_timeout", "2000"])
        .args(["-trace_stat", "-fd", "1", "-stf"])
        .arg(&stats)
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir(dir)
        .kill_on_drop(true)
        .spawn()
        .context("starting sipp")?;
    let limit = Duration::from_secs(secs + 30);
    if tokio::time::timeout(limit, child.wait()).await.is_err() {
        let _ = child.kill().await;
        bail!("sipp did not finish within {limit:?}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_us(pids).saturating_sub(cpu_before);
    let csv = std::fs::read_to_string(&stats).context("sipp statistics")?;
    let column = |name: &str| -> u64 {
        let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
        let last: Vec<&str> = lines.next_back().unwrap_or_default().split(';').collect();
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| last.get(i)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let ok = column("SuccessfulCall(C)");
    let per_call = if ok == 0 { f64::NAN } else { cpu as f64 / ok as f64 };
    Ok((ok as f64 / elapsed, ok, column("FailedCall(C)"), column("Retransmissions(C)"), per_call))
}

/// Run the SIP benchmark.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let sip_base = args.base_port + 100;
    let mut cluster = LocalCluster::temporary(args.nodes.max(1), args.base_port)?
        .with_sip(sip_base)?
        .with_config("[gateways]\nprobe_interval_ms = 0\n")?
        .with_serve_args(&["--capacity", "0"])
        .with_env("RUST_LOG", "error");
    let mut pids = Vec::new();
    for id in 1..=cluster.addrs().len() {
        pids.extend(cluster.spawn(id, true)?);
    }
    cluster.wait_leader(Duration::from_secs(30), false).await?;
    let target: SocketAddr = cluster.sip_addrs()[0].parse()?;
    let node1 = pids.first().copied().into_iter().collect::<Vec<_>>();
    DialPlanClient::new(cluster.channel(0))
        .put_route(pb::PutRouteRequest {
            route: Some(pb::DialRoute {
                pattern: "6XXXXXXX".into(),
                priority: 0,
                group: String::new(),
                strip: 0,
                prefix: String::new(),
            }),
        })
        .await?;
    compare::populate(|c, n| compare::populate_switchboard(cluster.channel(c), n)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "SIP redirect server: {} nodes, {READ_KEYS} registered numbers, INVITEs at node 1 ({target}) over UDP",
        cluster.addrs().len()
    );
    let secs = args.seconds;
    let flat = closed_loop(target, secs, None, &node1).await?;
    let half = closed_loop(target, secs, Some(flat.rate / 2.0), &node1).await?;
    println!("  closed loop, {CLIENTS} clients, {secs} s each (INVITE -> 302 -> ACK):");
    for (label, l) in [("flat out", &flat), ("half load", &half)] {
        println!(
            "    {label:<10} {:>8.0} calls/s  p50 {:>6.0} us  p99 {:>6.0} us  node 1 CPU {:>5.1} us/call  timeouts {}",
            l.rate, l.p50_us, l.p99_us, l.cpu_us, l.timeouts
        );
    }
    match sipp_binary() {
        None => {
            println!("  sipp is not installed (Debian package sip-tester): open-loop runs skipped")
        }
        Some(sipp) => {
            let dir = cluster.root().to_path_buf();
            std::fs::write(dir.join("bench_invite.xml"), SCENARIO)?;
            let mut csv = String::from("SEQUENTIAL\n");
            for n in 0..READ_KEYS {
                csv.push_str(&read_number(n));
                csv.push('\n');
            }
            std::fs::write(dir.join("numbers.csv"), csv)?;
            println!("  sipp open loop, {secs} s each (INVITE -> 302 -> ACK, UDP):");
            for rate in [2_000u32, 5_000, 10_000, 20_000] {
                match sipp_run(&sipp, &dir, &target.to_string(), rate, secs, &node1).await {
                    Ok((achieved, ok, failed, retrans, cpu)) => println!(
                        "    offered {rate:>6}/s  achieved {achieved:>8.0} calls/s  ok {ok}  failed {failed}  retransmissions {retrans}  node 1 CPU {cpu:>5.1} us/call"
                    ),
                    Err(e) => println!("    offered {rate:>6}/s  {e:#}"),
                }
            }
        }
    }
    cluster.stop().await;
    Ok(())
}
