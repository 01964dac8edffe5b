//! Nemeses: faults scheduled against the cluster and written into the
//! history, each healed before the next one and all healed before the final
//! reads.
//!
//! - `partition`: random halves (majority / minority), isolating the
//!   current leader, a majorities ring (every node sees a different
//!   majority), and a one-way partition (a node stops hearing one peer);
//! - `kill`: `kill -9` of a random node (sometimes the leader), restarted
//!   from its data directory;
//! - `pause`: SIGSTOP of a random node, SIGCONT later;
//! - `member`: remove a node through the API, wipe it, start it empty and
//!   add it back; or drain the leader (it hands leadership over);
//! - `leader-isolation`: cut the current leader off for 1-3 s (it keeps
//!   deciding from its stale view meanwhile: liveness, probes, sweeps);
//! - `clock`: shift one node's wall clock by 5-20 minutes, ahead or behind
//!   (the node's test-only clock-offset failpoint: the real clock cannot be
//!   changed per namespace), then back;
//! - `snapshot`: cut one node off for 5-8 s while the others keep writing,
//!   so that they snapshot and purge their logs past it and it must be
//!   caught up by a snapshot install (the nodes run with small snapshot
//!   thresholds).
//!
//! Every node a fault harms is recorded as *touched* (see `anchors`);
//! clock skew touches nobody: it must not make the cluster declare anyone
//! down.
//! - `power`: power loss (data directories on the power-loss file system,
//!   [`crate::powerfs`]): every unsynced byte of one node, or of every node
//!   at once, is dropped and the processes are killed with SIGKILL; they are
//!   restarted, the cluster must agree on a leader, and every set element
//!   acknowledged before the cut must be read back ([`crate::power`]). A
//!   cycle whose cluster does not come back stops the schedule, with the
//!   reason recorded.
//!
//! The schedule is seeded: one fault every few seconds, chosen from the
//! enabled kinds, held for a few seconds, then healed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};

use crate::api::Api;
use crate::cluster::{Cluster, Mode};
use crate::history::{NemesisEvent, NemesisPhase as Phase};
use crate::power::{audit, PowerCycle};
use crate::workload::Recorded;

/// Kind of the point event recorded when a node's data directory is wiped
/// (its detail is the node id).
pub const WIPE: &str = "wipe";

/// Kind of the events of the `clock` nemesis (details by [`clock_detail`]).
pub const CLOCK: &str = "clock";

/// The detail of a `clock` event: the node whose wall clock is shifted, by
/// how many minutes (read back by [`parse_clock_detail`]).
pub fn clock_detail(node: u64, minutes: i64) -> String {
    format!("node {node} clock {minutes:+} min")
}

/// The node and the minutes of a [`clock_detail`].
pub fn parse_clock_detail(detail: &str) -> Option<(u64, i64)> {
    let mut words = detail.split_whitespace();
    if words.next()? != "node" {
        return None;
    }
    let node = words.next()?.parse().ok()?;
    if words.next()? != "clock" {
        return None;
    }
    Some((node, words.next()?.parse().ok()?))
}

/// Kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Network partitions (netns mode only).
    Partition,
    /// kill -9 and restart.
    Kill,
    /// SIGSTOP / SIGCONT.
    Pause,
    /// Remove and re-add a node; drain the leader.
    Member,
    /// Cut the leader off for 1-3 s (netns mode only).
    LeaderIsolation,
    /// Shift one node's wall clock by minutes.
    Clock,
    /// Cut one node off until the others have snapshotted past it (netns only).
    Snapshot,
    /// Power loss of one node or of all (unsynced data dropped, SIGKILL).
    Power,
}

impl Kind {
    /// Parse a comma-separated list (`partition,kill,pause,member`, or `none`).
    pub fn parse_list(s: &str) -> Result<Vec<Kind>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.push(match part {
                "partition" => Kind::Partition,
                "kill" => Kind::Kill,
                "pause" => Kind::Pause,
                "member" => Kind::Member,
                "leader-isolation" => Kind::LeaderIsolation,
                "clock" => Kind::Clock,
                "snapshot" => Kind::Snapshot,
                "power" => Kind::Power,
                "none" => continue,
                other => {
                    return Err(anyhow!(
                        "unknown nemesis {other:?}; expected partition, kill, pause, member, \
                         leader-isolation, clock, snapshot, power or none"
                    ))
                }
            });
        }
        Ok(out)
    }
}

/// Shared clock and event log.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<NemesisEvent>>>,
    touches: Arc<Mutex<Vec<Touch>>>,
}

/// A node harmed by a fault, from `from_ns` until `until_ns` (`None` while
/// the fault lasts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Touch {
    /// The node.
    pub node: u64,
    /// When the fault started harming it.
    pub from_ns: u64,
    /// When the fault was healed.
    pub until_ns: Option<u64>,
}

impl Recorder {
    /// A recorder whose time zero is `start`.
    pub fn new(start: Instant) -> Self {
        Recorder { start, events: Arc::default(), touches: Arc::default() }
    }

    /// Note that a fault starts harming `nodes` (see `anchors`).
    pub fn touch(&self, nodes: &[u64]) {
        let now = self.now_ns();
        let mut t = self.touches.lock().unwrap_or_else(|p| p.into_inner());
        t.extend(nodes.iter().map(|&node| Touch { node, from_ns: now, until_ns: None }));
    }

    /// The current fault is healed: close every open touch.
    pub fn release_all(&self) {
        let now = self.now_ns();
        let mut t = self.touches.lock().unwrap_or_else(|p| p.into_inner());
        for touch in t.iter_mut().filter(|t| t.until_ns.is_none()) {
            touch.until_ns = Some(now);
        }
    }

    /// Every touch so far.
    pub fn touches(&self) -> Vec<Touch> {
        self.touches.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn record(&self, phase: Phase, kind: &str, detail: String) {
        let e = NemesisEvent { at_ns: self.now_ns(), kind: kind.to_owned(), detail, phase };
        eprintln!("nemesis {:>7.2}s {:?} {kind} {}", e.at_ns as f64 / 1e9, e.phase, e.detail);
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<NemesisEvent> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The fault scheduler.
pub struct Nemesis {
    cluster: Arc<Mutex<Cluster>>,
    api: Api,
    kinds: Vec<Kind>,
    rng: StdRng,
    rec: Recorder,
    /// Nodes removed from the membership and not yet re-added.
    removed: Vec<u64>,
    /// The clients' records, for the audit after each power cycle.
    out: Option<Arc<Recorded>>,
    /// Every power cycle so far.
    power_log: Arc<Mutex<Vec<PowerCycle>>>,
    /// A power cycle left the cluster without a leader: no more faults.
    broken: bool,
}

fn lock(c: &Arc<Mutex<Cluster>>) -> std::sync::MutexGuard<'_, Cluster> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

impl Nemesis {
    /// A scheduler over `kinds`; partitions are dropped in local mode.
    pub fn new(
        cluster: Arc<Mutex<Cluster>>,
        api: Api,
        mut kinds: Vec<Kind>,
        seed: u64,
        rec: Recorder,
    ) -> Self {
        if lock(&cluster).mode == Mode::Local {
            kinds
                .retain(|k| !matches!(k, Kind::Partition | Kind::LeaderIsolation | Kind::Snapshot));
        }
        Nemesis {
            cluster,
            api,
            kinds,
            rng: StdRng::seed_from_u64(seed ^ 0x6e656d65),
            rec,
            removed: Vec::new(),
            out: None,
            power_log: Arc::default(),
            broken: false,
        }
    }

    /// Audit acknowledged set elements after each power cycle against `out`.
    pub fn with_audit(mut self, out: Arc<Recorded>) -> Self {
        self.out = Some(out);
        self
    }

    /// The power cycles run so far (shared; complete once [`Nemesis::run`] returns).
    pub fn power_log(&self) -> Arc<Mutex<Vec<PowerCycle>>> {
        self.power_log.clone()
    }

    /// The kinds actually scheduled.
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// Run faults until `until`, then heal everything.
    pub async fn run(mut self, until: Instant) -> Vec<NemesisEvent> {
        if !self.kinds.is_empty() {
            // Let the workload warm up on a healthy cluster first.
            self.sleep_until(Instant::now() + Duration::from_secs(2), until).await;
            while !self.broken && Instant::now() + Duration::from_secs(2) < until {
                let kind = *self.kinds.choose(&mut self.rng).unwrap_or(&Kind::Kill);
                let hold = Duration::from_millis(self.rng.random_range(1_500..4_000));
                if let Err(e) = self.fault(kind, hold, until).await {
                    self.rec.record(Phase::Stop, "nemesis-error", e.to_string());
                    self.heal_all().await;
                }
                self.rec.release_all();
                let quiet = Duration::from_millis(self.rng.random_range(1_000..3_000));
                self.sleep_until(Instant::now() + quiet, until).await;
            }
        }
        self.heal_all().await;
        self.rec.events()
    }

    async fn sleep_until(&self, t: Instant, until: Instant) {
        let t = t.min(until);
        tokio::time::sleep(t.saturating_duration_since(Instant::now())).await;
    }

    fn live(&self) -> Vec<u64> {
        lock(&self.cluster).ids().iter().copied().filter(|id| !self.removed.contains(id)).collect()
    }

    async fn fault(&mut self, kind: Kind, hold: Duration, until: Instant) -> Result<()> {
        let live = self.live();
        let leader = self.api.leader(&live).await;
        match kind {
            Kind::Partition => {
                let choice = self.rng.random_range(0..4);
                let mut nodes = live.clone();
                nodes.shuffle(&mut self.rng);
                let (name, detail) = match (choice, leader) {
                    (0, _) | (1, None) => {
                        let cut = nodes.len() / 2;
                        let (a, b) = nodes.split_at(cut);
                        let groups = vec![a.to_vec(), b.to_vec()];
                        // The smaller side (both, when even) may be declared down.
                        self.rec.touch(a);
                        if a.len() == b.len() {
                            self.rec.touch(b);
                        }
                        lock(&self.cluster).partition(&groups)?;
                        ("partition-halves", format!("{groups:?}"))
                    }
                    (1, Some(l)) => {
                        let rest: Vec<u64> = live.iter().copied().filter(|&n| n != l).collect();
                        self.rec.touch(&[l]);
                        lock(&self.cluster).partition(&[vec![l], rest])?;
                        ("partition-leader", format!("isolated leader {l}"))
                    }
                    (2, _) => {
                        // Ring: node i hears only its neighbours; with 5 nodes
                        // every node sees a majority, but a different one.
                        let n = nodes.len();
                        self.rec.touch(&nodes);
                        let mut c = lock(&self.cluster);
                        for (i, &a) in nodes.iter().enumerate() {
                            for (j, &b) in nodes.iter().enumerate() {
                                let d = (i + n - j) % n;
                                if i != j && d != 1 && d != n - 1 {
                                    c.block(a, b)?;
                                }
                            }
                        }
                        ("partition-ring", format!("ring {nodes:?}"))
                    }
                    _ => {
                        let (a, b) = (nodes[0], nodes[1]);
                        self.rec.touch(&[a, b]);
                        lock(&self.cluster).block(a, b)?;
                        ("partition-one-way", format!("{a} stops hearing {b}"))
                    }
                };
                self.rec.record(Phase::Start, name, detail.clone());
                self.sleep_until(Instant::now() + hold, until).await;
                lock(&self.cluster).heal()?;
                self.rec.record(Phase::Stop, name, detail);
            }
            Kind::Kill => {
                let victim = self.victim(leader, &live, 0.5)?;
                self.rec.touch(&[victim]);
                lock(&self.cluster).kill(victim)?;
                self.rec.record(Phase::Start, "kill", format!("kill -9 node {victim}"));
                self.sleep_until(Instant::now() + hold, until).await;
                lock(&self.cluster).start(victim, false)?;
                self.rec.record(Phase::Stop, "kill", format!("restarted node {victim}"));
            }
            Kind::Pause => {
                let victim = self.victim(leader, &live, 0.5)?;
                self.rec.touch(&[victim]);
                lock(&self.cluster).pause(victim)?;
                self.rec.record(Phase::Start, "pause", format!("SIGSTOP node {victim}"));
                self.sleep_until(Instant::now() + hold, until).await;
                lock(&self.cluster).resume(victim)?;
                self.rec.record(Phase::Stop, "pause", format!("SIGCONT node {victim}"));
            }
            Kind::Power => {
                let whole = self.rng.random_bool(0.4);
                let victims =
                    if whole { live.clone() } else { vec![self.victim(leader, &live, 0.5)?] };
                let hold = hold.min(until.saturating_duration_since(Instant::now()));
                self.rec.touch(&victims);
                self.power_cycle(whole, victims, hold).await?;
            }
            Kind::Member => {
                if self.rng.random_bool(0.5) {
                    let Some(l) = leader else { return Err(anyhow!("no leader to drain")) };
                    self.rec.touch(&[l]);
                    self.rec.record(Phase::Start, "drain-leader", format!("drain node {l}"));
                    // `{e:#}`, not `{r:?}`: the Debug form of an anyhow error
                    // carries a stack backtrace when RUST_BACKTRACE is set.
                    let r = match self.api.drain(l, &live).await {
                        Ok(()) => "Ok".to_owned(),
                        Err(e) => format!("Err: {e:#}"),
                    };
                    self.rec.record(Phase::Stop, "drain-leader", format!("drain node {l}: {r}"));
                } else {
                    let candidates: Vec<u64> =
                        live.iter().copied().filter(|&n| Some(n) != leader).collect();
                    let victim =
                        *candidates.choose(&mut self.rng).ok_or_else(|| anyhow!("no follower"))?;
                    let via: Vec<u64> = live.iter().copied().filter(|&n| n != victim).collect();
                    self.rec.touch(&[victim]);
                    self.rec.record(Phase::Start, "member-remove", format!("remove node {victim}"));
                    self.api.remove_node(victim, &via).await?;
                    self.removed.push(victim);
                    // On the blocking pool: `terminate` waits (up to 10 s)
                    // for the process to exit, with thread sleeps. Run on a
                    // runtime worker, that wait stopped every client (a 10 s
                    // hole in the history at each member-remove).
                    let cluster = self.cluster.clone();
                    let stopping = Instant::now();
                    tokio::task::spawn_blocking(move || -> Result<()> {
                        let mut c = lock(&cluster);
                        c.terminate(victim)?;
                        c.wipe(victim)
                    })
                    .await
                    .map_err(|e| anyhow!("terminating node {victim}: {e}"))??;
                    let stopped_ms = stopping.elapsed().as_millis();
                    // The detail is just the node id: the LOCAL-read audit
                    // treats the node as a new incarnation from here on.
                    self.rec.record(Phase::Stop, WIPE, victim.to_string());
                    self.sleep_until(Instant::now() + hold, until).await;
                    self.readd(victim, &via).await?;
                    self.rec.record(
                        Phase::Stop,
                        "member-remove",
                        format!("re-added node {victim} (it took {stopped_ms} ms to stop)"),
                    );
                }
            }
            Kind::LeaderIsolation => {
                let Some(l) = leader else { return Err(anyhow!("no leader to isolate")) };
                let hold = Duration::from_millis(self.rng.random_range(1_000..3_000));
                let detail = format!("isolated leader {l} for {} ms", hold.as_millis());
                self.isolate(l, &live, hold, until, "leader-isolation", detail).await?;
            }
            Kind::Clock => {
                let victim = self.victim(leader, &live, 0.5)?;
                // More than the workloads' registration lifetime for runs
                // up to a minute (see workload::registration_ttl_s).
                let minutes = self.rng.random_range(5..=20i64);
                let offset = if self.rng.random_bool(0.5) { minutes } else { -minutes } * 60_000;
                lock(&self.cluster).set_clock_offset(victim, offset)?;
                let detail = clock_detail(victim, offset / 60_000);
                self.rec.record(Phase::Start, CLOCK, detail.clone());
                self.sleep_until(Instant::now() + hold, until).await;
                lock(&self.cluster).set_clock_offset(victim, 0)?;
                self.rec.record(Phase::Stop, CLOCK, detail);
            }
            Kind::Snapshot => {
                let victim = self.victim(leader, &live, 0.33)?;
                let hold = Duration::from_millis(self.rng.random_range(5_000..8_000));
                let detail = format!("isolated node {victim} for {} ms", hold.as_millis());
                self.isolate(victim, &live, hold, until, "snapshot-partition", detail).await?;
            }
        }
        Ok(())
    }

    /// One power cycle: cut `victims`, hold, restart, wait for a leader,
    /// audit the acknowledged set elements.
    async fn power_cycle(&mut self, whole: bool, victims: Vec<u64>, hold: Duration) -> Result<()> {
        let live = self.live();
        let scope = if whole { "cluster" } else { "node" };
        let name = format!("power-{scope}");
        let cut_ns = self.rec.now_ns();
        let cluster = self.cluster.clone();
        let v = victims.clone();
        let reports = tokio::task::spawn_blocking(move || lock(&cluster).power_cut(&v))
            .await
            .map_err(|e| anyhow!("power cut task: {e}"))??;
        let bytes: u64 = reports.iter().map(|(_, r)| r.bytes).sum();
        let files: u64 = reports.iter().map(|(_, r)| r.files).sum();
        let on_write = reports.iter().filter(|(_, r)| r.on_write).count();
        let torn: u64 = reports.iter().map(|(_, r)| r.written_back).sum();
        self.rec.record(
            Phase::Start,
            &name,
            format!(
                "power cut at nodes {victims:?} ({on_write} right after a write): {bytes} \
                 unsynced bytes in {files} files, {torn} of them torn onto the disk and the rest \
                 dropped, then SIGKILL"
            ),
        );
        let mut cycle = PowerCycle {
            scope: scope.into(),
            nodes: victims.clone(),
            cut_at_s: cut_ns as f64 / 1e9,
            dropped_bytes: bytes,
            dropped_files: files,
            torn_bytes: torn,
            cut_on_write: on_write,
            ..PowerCycle::default()
        };
        tokio::time::sleep(hold).await;
        let cluster = self.cluster.clone();
        let v = victims.clone();
        let started = tokio::task::spawn_blocking(move || -> Result<()> {
            let mut c = lock(&cluster);
            for id in v {
                c.start(id, false)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| anyhow!("restart task: {e}"))?;
        let restarted = Instant::now();
        let failure = match started {
            Err(e) => Some(format!("restarting {victims:?}: {e:#}")),
            Ok(()) => {
                self.rec.record(Phase::Stop, &name, format!("restarted nodes {victims:?}"));
                match self.api.wait_leader(&live, Duration::from_secs(60)).await {
                    Ok(_) => {
                        cycle.recovered_after_s = Some(restarted.elapsed().as_secs_f64());
                        None
                    }
                    Err(e) => Some(format!("no agreed leader 60 s after the restart: {e:#}")),
                }
            }
        };
        if let Some(mut why) = failure {
            let mut c = lock(&self.cluster);
            for &id in &victims {
                if !c.is_running(id) {
                    why.push_str(&format!(
                        "; node {id} is not running, its log ends: {}",
                        c.log_tail(id, 3)
                    ));
                }
            }
            drop(c);
            self.rec.record(Phase::Stop, "power-failed", why.clone());
            cycle.failure = Some(why.clone());
            self.power_log.lock().unwrap_or_else(|p| p.into_inner()).push(cycle);
            self.broken = true;
            return Err(anyhow!(why));
        }
        if let Some(out) = &self.out {
            match audit(&self.api, out, &self.rec, Duration::from_secs(30)).await {
                Ok((acknowledged, lost)) => {
                    cycle.acknowledged = acknowledged;
                    cycle.lost = lost;
                }
                Err(e) => cycle.failure = Some(format!("{e:#}")),
            }
            let mut shown = cycle.lost.clone();
            shown.truncate(20);
            self.rec.record(
                Phase::Stop,
                "power-audit",
                format!(
                    "{} set elements acknowledged before the read, {} lost {shown:?}{}",
                    cycle.acknowledged,
                    cycle.lost.len(),
                    cycle.failure.as_deref().map(|f| format!("; {f}")).unwrap_or_default()
                ),
            );
        }
        self.power_log.lock().unwrap_or_else(|p| p.into_inner()).push(cycle);
        Ok(())
    }

    /// The leader with probability `p_leader` (when there is one), else a
    /// random live node.
    fn victim(&mut self, leader: Option<u64>, live: &[u64], p_leader: f64) -> Result<u64> {
        match leader {
            Some(l) if self.rng.random_bool(p_leader) => Ok(l),
            _ => live.choose(&mut self.rng).copied().ok_or_else(|| anyhow!("no node")),
        }
    }

    /// Cut `node` off from the rest of `live` for `hold`, recorded as `name`.
    async fn isolate(
        &mut self,
        node: u64,
        live: &[u64],
        hold: Duration,
        until: Instant,
        name: &str,
        detail: String,
    ) -> Result<()> {
        let rest: Vec<u64> = live.iter().copied().filter(|&n| n != node).collect();
        self.rec.touch(&[node]);
        lock(&self.cluster).partition(&[vec![node], rest])?;
        self.rec.record(Phase::Start, name, detail.clone());
        self.sleep_until(Instant::now() + hold, until).await;
        lock(&self.cluster).heal()?;
        self.rec.record(Phase::Stop, name, detail);
        Ok(())
    }

    async fn readd(&mut self, id: u64, via: &[u64]) -> Result<()> {
        lock(&self.cluster).start(id, false)?;
        let mut last = anyhow!("not tried");
        for _ in 0..10 {
            match self.api.add_node(id, via).await {
                Ok(()) => {
                    self.removed.retain(|&n| n != id);
                    return Ok(());
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(last)
    }

    /// Heal partitions, resume paused nodes, restart dead ones, re-add removed ones.
    pub async fn heal_all(&mut self) {
        let ids = {
            let mut c = lock(&self.cluster);
            let _ = c.heal();
            for id in c.ids().to_vec() {
                let _ = c.set_clock_offset(id, 0);
            }
            for id in c.paused() {
                let _ = c.resume(id);
            }
            c.ids().to_vec()
        };
        for &id in &ids {
            if self.removed.contains(&id) {
                continue;
            }
            let mut c = lock(&self.cluster);
            if !c.is_running(id) {
                let _ = c.start(id, false);
            }
        }
        for id in self.removed.clone() {
            let via: Vec<u64> =
                ids.iter().copied().filter(|&n| n != id && !self.removed.contains(&n)).collect();
            if let Err(e) = self.readd(id, &via).await {
                self.rec.record(Phase::Stop, "nemesis-error", format!("re-adding node {id}: {e}"));
            }
        }
        self.rec.record(Phase::Stop, "heal", "all faults healed".into());
        self.rec.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_details_read_back() {
        assert_eq!(clock_detail(2, 7), "node 2 clock +7 min");
        assert_eq!(parse_clock_detail(&clock_detail(2, 7)), Some((2, 7)));
        assert_eq!(parse_clock_detail(&clock_detail(5, -20)), Some((5, -20)));
        assert_eq!(parse_clock_detail("isolated node 3 for 900 ms"), None);
    }
}
