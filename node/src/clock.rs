//! [`Clock`]: the node's view of time, built so that one node's wall clock
//! cannot move the cluster's.
//!
//! The replicated state holds a clock (`State::clock_ms`) that only entries
//! move: never back, and by at most `Policy::max_clock_step_ms` per entry.
//! Around it:
//!
//! - **Reads** judge expiry against [`Clock::cluster_now`]: the replicated
//!   clock plus the monotonic time since this node applied that value —
//!   not the serving node's own wall clock, so a node whose clock is off
//!   answers like the others. Between entries it runs at the rate of the
//!   local monotonic clock; the leader's ticks (one entry a second on an
//!   idle cluster) keep the two close.
//! - **The leader's stamp** ([`Clock::stamp`]) is the median of the wall
//!   clocks of a majority of the voters (its own, and each member's as it
//!   reported in its last liveness ping, aged by the monotonic time since),
//!   never below `cluster_now`. One node whose clock jumps by minutes —
//!   the leader included — is outvoted; without a fresh majority of
//!   samples the leader only lets time run at its monotonic rate.
//!
//! Does not own: the replicated clock itself (`storage::state::apply`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_storage::state::NodeId;

/// A member's wall-clock sample older than this is not used.
const SAMPLE_MAX_AGE: Duration = Duration::from_secs(2);

/// One node's clocks. Shared through [`crate::node::Node`].
pub struct Clock {
    /// This node's advertised address and data directory: they key the
    /// test-only clock-offset failpoint.
    me: String,
    data: PathBuf,
    /// Members' wall clocks from their last ping answers, by node id. A std
    /// Mutex: held for a few instructions, never across an await.
    samples: Mutex<BTreeMap<NodeId, (u64, Instant)>>,
}

impl Clock {
    /// The clocks of the node advertised at `me` with data directory `data`.
    pub fn new(me: &str, data: PathBuf) -> Clock {
        Clock { me: me.to_owned(), data, samples: Mutex::new(BTreeMap::new()) }
    }

    /// This node's wall clock, ms since the Unix epoch (0 before 1970),
    /// shifted by the test-only offset failpoint when it is compiled in.
    pub fn wall_ms(&self) -> u64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let offset = crate::failpoint::clock_offset_ms(&self.me, &self.data);
        wall.saturating_add_signed(offset)
    }

    /// The replicated clock `clock_ms`, applied here at `applied_at`,
    /// carried forward by the monotonic time since.
    pub fn cluster_now(&self, (clock_ms, applied_at): (u64, Instant)) -> u64 {
        clock_ms.saturating_add(applied_at.elapsed().as_millis() as u64)
    }

    /// Note member `id`'s wall clock as it answered a ping just now.
    pub fn record_member(&self, id: NodeId, wall_ms: u64) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.insert(id, (wall_ms, Instant::now()));
    }

    /// Forget the members' samples (this node stopped leading).
    pub fn forget_members(&self) {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The time the leader stamps on an entry, given the replicated clock
    /// (and when it was applied here) and the number of `voters`. See the
    /// module header.
    pub fn stamp(&self, clock: (u64, Instant), voters: usize) -> u64 {
        let own = self.wall_ms();
        // A fresh cluster has no time yet: the first entry sets it.
        if clock.0 == 0 {
            return own;
        }
        let floor = self.cluster_now(clock);
        let mut walls = vec![own];
        {
            let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            for (wall, at) in samples.values() {
                let age = at.elapsed();
                if age <= SAMPLE_MAX_AGE {
                    walls.push(wall.saturating_add(age.as_millis() as u64));
                }
            }
        }
        median_of_majority(&mut walls, voters).map_or(floor, |m| m.max(floor))
    }
}

/// The median of `walls` when they come from a majority of `voters`; for an
/// even count the lower middle (a fast clock moves time less than a slow
/// one holds it back, since time never goes back anyway).
fn median_of_majority(walls: &mut [u64], voters: usize) -> Option<u64> {
    if walls.is_empty() || walls.len() * 2 <= voters {
        return None;
    }
    walls.sort_unstable();
    Some(walls[(walls.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_skewed_clock_is_outvoted() {
        let t = 1_700_000_000_000;
        let ten_min = 600_000;
        assert_eq!(median_of_majority(&mut [t + ten_min, t, t + 3], 3), Some(t + 3));
        assert_eq!(median_of_majority(&mut [t - ten_min, t, t + 3], 3), Some(t));
        assert_eq!(
            median_of_majority(&mut [t + ten_min, t + 1, t, t + 2, t - ten_min], 5),
            Some(t + 1)
        );
        // Without a majority of samples there is no median to trust.
        assert_eq!(median_of_majority(&mut [t + ten_min], 3), None);
        assert_eq!(median_of_majority(&mut [t, t + 1], 5), None);
        assert_eq!(median_of_majority(&mut [t, t + 1], 3), Some(t));
    }

    #[test]
    fn the_stamp_never_goes_below_the_replicated_clock() {
        let c = Clock::new("test-clock-floor", std::env::temp_dir());
        let far_future = c.wall_ms() + 3_600_000;
        assert!(c.stamp((far_future, Instant::now()), 1) >= far_future);
        // The first stamp of a fresh cluster is the wall clock.
        let wall = c.wall_ms();
        let first = c.stamp((0, Instant::now()), 3);
        assert!(first >= wall && first < wall + 1_000);
    }

    #[test]
    fn cluster_now_runs_on_from_the_replicated_clock() {
        let c = Clock::new("test-clock-now", std::env::temp_dir());
        let applied = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let later = c.cluster_now((5_000, applied));
        assert!((5_020..5_500).contains(&later), "{later}");
    }
}
