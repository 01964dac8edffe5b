//! `switchboard bench --compare etcd`: the same client model against a
//! local Switchboard cluster and a local etcd cluster, alternating, on the
//! same machine, each figure given for both with the ratio.
//!
//! The client model (issue 10): every client has its own connection to one
//! node, clients round-robin over the nodes; a write is a `Register` of a
//! random number with a ~120-byte contact (etcd: a `Put` of a 120-byte
//! value under the number); reads pick among 10 000 pre-populated numbers.
//! Server CPU per operation is the growth of the server processes'
//! user + system time (`/proc/<pid>/stat`) over the run, divided by the
//! operations completed.
//!
//! Owns: the workloads, the CPU accounting and the table. Does not own the
//! clusters ([`super::local`], [`super::etcd`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_proto::etcd::kv_client::KvClient;
use switchboard_proto::etcd::{PutRequest, RangeRequest};
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::registrar_client::RegistrarClient;
use switchboard_proto::v1::router_client::RouterClient;
use tonic::transport::Channel;

/// Numbers pre-populated for the reads.
pub const READ_KEYS: u64 = 10_000;
/// Bytes of a written value (the contact URI, or etcd's value).
const VALUE_LEN: usize = 120;

/// One operation kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Switchboard `Register`.
    Register,
    /// Switchboard `Lookup`, LOCAL.
    LookupLocal,
    /// Switchboard `Lookup`, LINEARIZABLE.
    LookupLinearizable,
    /// Switchboard `Route` (LOCAL) of a registered number.
    Route,
    /// etcd `Put`.
    Put,
    /// etcd `Range` of one key, serializable.
    GetSerializable,
    /// etcd `Range` of one key, linearizable.
    GetLinearizable,
}

/// What one measurement gave.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// Operations per second.
    pub rate: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Server CPU per operation, µs (all server processes).
    pub cpu_us: f64,
    /// Failed operations.
    pub errors: u64,
}

/// The number the `n`th pre-populated key stands for.
pub fn read_number(n: u64) -> String {
    format!("6{:07}", n % READ_KEYS)
}

/// A contact URI of [`VALUE_LEN`] bytes.
pub(super) fn contact(n: u64) -> String {
    let mut c = format!("sip:{n}@bench.invalid;x=");
    while c.len() < VALUE_LEN {
        c.push('a');
    }
    c
}

pub(super) fn register(number: String, n: u64) -> pb::RegisterRequest {
    pb::RegisterRequest {
        number,
        device_id: "bench".into(),
        contact: contact(n),
        device_name: String::new(),
        mac: String::new(),
        node_id: 0,
        q: 1000,
        expires_s: 86_400,
        request_id: None,
    }
}

/// xorshift64*: a cheap per-client random stream (no crate needed for
/// picking keys).
pub(super) fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Perform one `op` on `ch` with random draw `r`; whether it succeeded.
pub async fn once(op: Op, ch: &Channel, r: u64) -> bool {
    match op {
        Op::Register => {
            let number = format!("5{:09}", r % 1_000_000_000);
            RegistrarClient::new(ch.clone()).register(register(number, r)).await.is_ok()
        }
        Op::LookupLocal | Op::LookupLinearizable => {
            let consistency = if op == Op::LookupLocal {
                pb::Consistency::Local
            } else {
                pb::Consistency::Linearizable
            };
            let req = pb::LookupRequest { number: read_number(r), consistency: consistency as i32 };
            RegistrarClient::new(ch.clone()).lookup(req).await.is_ok()
        }
        Op::Route => {
            let req = pb::RouteRequest { digits: read_number(r), ..Default::default() };
            RouterClient::new(ch.clone()).route(req).await.is_ok()
        }
        Op::Put => {
            let req = PutRequest {
                key: format!("5{:09}", r % 1_000_000_000).into_bytes(),
                value: contact(r).into_bytes(),
            };
            KvClient::new(ch.clone()).put(req).await.is_ok()
        }
        Op::GetSerializable | Op::GetLinearizable => {
            let req = RangeRequest {
                key: read_number(r).into_bytes(),
                serializable: op == Op::GetSerializable,
                ..Default::default()
            };
            KvClient::new(ch.clone()).range(req).await.is_ok()
        }
    }
}

/// User + system CPU time of `pids`, µs.
pub fn cpu_us(pids: &[u32]) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces) start
            // after the last ')': state is field 3, utime 14, stime 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let user: u64 = f.get(11)?.parse().ok()?;
            let system: u64 = f.get(12)?.parse().ok()?;
            Some((user + system) * 1_000_000 / ticks)
        })
        .sum()
}

/// Run `op` from `clients` clients, client `c` on `channel(c)`, for
/// `secs` seconds; `pids` are the server processes to charge CPU to.
pub async fn measure(
    op: Op,
    clients: usize,
    secs: u64,
    channel: impl Fn(usize) -> Channel,
    pids: &[u32],
) -> Figures {
    let cpu_before = cpu_us(pids);
    let until = Instant::now() + Duration::from_secs(secs);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let ch = channel(c);
        let errors = Arc::clone(&errors);
        let mut seed =
            0x9e37_79b9_7f4a_7c15 ^ ((c as u64 + 1) << 20) ^ u64::from(std::process::id());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let r = next_random(&mut seed);
                let t = Instant::now();
                if once(op, &ch, r).await {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let cpu = cpu_us(pids).saturating_sub(cpu_before);
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            f64::NAN
        } else {
            all[((all.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        }
    };
    Figures {
        rate: all.len() as f64 / secs as f64,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        cpu_us: if all.is_empty() { f64::NAN } else { cpu as f64 / all.len() as f64 },
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Write the [`READ_KEYS`] numbers with 32 clients.
pub async fn populate<F, Fut>(write: F) -> anyhow::Result<()>
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let per = READ_KEYS.div_ceil(32);
    let mut tasks = Vec::new();
    for c in 0..32u64 {
        let futs: Vec<Fut> =
            (c * per..((c + 1) * per).min(READ_KEYS)).map(|n| write(c as usize, n)).collect();
        tasks.push(tokio::spawn(async move {
            let mut failed = 0u64;
            for f in futs {
                if !f.await {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap_or(per);
    }
    anyhow::ensure!(failed == 0, "{failed} of {READ_KEYS} pre-populating writes failed");
    Ok(())
}

/// The pre-populating write of number `n` to Switchboard.
pub async fn populate_switchboard(ch: Channel, n: u64) -> bool {
    RegistrarClient::new(ch).register(register(read_number(n), n)).await.is_ok()
}

/// The pre-populating write of number `n` to etcd.
pub async fn populate_etcd(ch: Channel, n: u64) -> bool {
    let req = PutRequest { key: read_number(n).into_bytes(), value: contact(n).into_bytes() };
    KvClient::new(ch).put(req).await.is_ok()
}

/// One table row: both sides and the ratio of rates.
pub fn row(label: &str, etcd: Option<&Figures>, sb: &Figures) {
    let side = |f: &Figures| {
        format!(
            "{:>8.0}/s p50 {:>6.2} p99 {:>6.2} ms {:>6.0} us/op{}",
            f.rate,
            f.p50_ms,
            f.p99_ms,
            f.cpu_us,
            if f.errors > 0 { format!(" ({} err)", f.errors) } else { String::new() }
        )
    };
    match etcd {
        Some(e) => println!(
            "  {label:<28} etcd {} | switchboard {} | {:.2}x",
            side(e),
            side(sb),
            sb.rate / e.rate
        ),
        None => println!("  {label:<28} switchboard {}", side(sb)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_is_the_value_size_and_numbers_are_in_range() {
        assert_eq!(contact(123).len(), VALUE_LEN);
        assert_eq!(read_number(READ_KEYS + 7), read_number(7));
        assert_eq!(read_number(1).len(), 8);
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let me = [std::process::id()];
        let before = cpu_us(&me);
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(next_random(&mut x.clone()) | 1);
        }
        assert!(x != 0);
        assert!(cpu_us(&me) > before, "CPU time did not grow");
    }
}
