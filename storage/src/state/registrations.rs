//! The composite registration table: number -> the bindings of the devices
//! registered under it, each controlled by one node.

use std::collections::BTreeMap;

use imbl::{OrdMap, OrdSet};

use serde::{Deserialize, Serialize};

use super::NodeId;

/// One device registered under a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Identifies the device among the number's bindings.
    pub device_id: String,
    /// Where to reach the device (SIP URI).
    pub contact: String,
    /// Device name as the device reported it.
    pub device_name: String,
    /// MAC address as the device reported it.
    pub mac: String,
    /// The node that controls the registration.
    pub node: NodeId,
    /// Preference, 0..=1000 (q-value x 1000); higher first.
    pub q: u16,
    /// Replicated-clock time at which the binding lapses.
    pub expires_at_ms: u64,
    /// Names this binding: a replicated counter bumped by every `Register`
    /// (one log entry may hold several registrations, so the log index alone
    /// would not be unique). A conditional delete names it, and removes
    /// nothing once a newer registration replaced the binding.
    pub generation: u64,
    /// The SIP request that last wrote the binding, when it came over SIP:
    /// a later REGISTER with the same Call-ID must carry a higher CSeq.
    pub sip: Option<SipOrigin>,
}

/// The Call-ID and CSeq of the SIP REGISTER that last wrote a binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipOrigin {
    /// The request's Call-ID.
    pub call_id: String,
    /// The request's CSeq number.
    pub cseq: u32,
}

impl Binding {
    /// Whether the binding is still valid at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms > now_ms
    }
}

/// number -> bindings, each number's bindings kept sorted by device id.
///
/// Built for a million numbers: the table is a persistent map (a snapshot
/// clones it in O(1)), and two indexes are kept up to date by every change
/// so that nothing a leader does each second scans all bindings:
/// - `expiry`: (expires_at_ms, number, device_id) of every binding, so the
///   sweep finds what lapsed by walking from the front;
/// - `per_node`: how many bindings each node controls (metrics).
///
/// Only `by_number` is serialised; the indexes are derived from it on
/// decode, so the snapshot format is that of a plain ordered map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Table", into = "Table")]
pub struct Registrations {
    by_number: OrdMap<String, Vec<Binding>>,
    expiry: OrdSet<(u64, String, String)>,
    per_node: BTreeMap<NodeId, u64>,
}

/// What the indexes keep of one binding.
struct Indexed {
    expires_at_ms: u64,
    device_id: String,
    node: NodeId,
}

impl Indexed {
    fn of(b: &Binding) -> Self {
        Indexed { expires_at_ms: b.expires_at_ms, device_id: b.device_id.clone(), node: b.node }
    }
}

/// What a snapshot holds of [`Registrations`].
#[derive(Serialize, Deserialize)]
struct Table {
    by_number: OrdMap<String, Vec<Binding>>,
}

impl From<Table> for Registrations {
    fn from(t: Table) -> Self {
        let mut r = Registrations { by_number: t.by_number, ..Default::default() };
        let all: Vec<(String, Indexed)> = r
            .by_number
            .iter()
            .flat_map(|(n, list)| list.iter().map(move |b| (n.clone(), Indexed::of(b))))
            .collect();
        for (number, b) in all {
            r.index(&number, b, true);
        }
        r
    }
}

impl From<Registrations> for Table {
    fn from(r: Registrations) -> Self {
        Table { by_number: r.by_number }
    }
}

impl Registrations {
    /// All bindings of `number` (live or not), sorted by device id.
    pub fn bindings(&self, number: &str) -> &[Binding] {
        self.by_number.get(number).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the number has any binding at all (live or not).
    pub fn contains(&self, number: &str) -> bool {
        self.by_number.contains_key(number)
    }

    /// Every (number, bindings) pair, in number order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[Binding])> {
        self.by_number.iter().map(|(n, b)| (n.as_str(), b.as_slice()))
    }

    /// The (number, bindings) pairs that start with `prefix` and come
    /// after `after` (from the first for `None`), in number order: the
    /// walk behind one page of a listing. Starts with a seek, never a scan.
    pub fn iter_from<'a>(
        &'a self,
        after: Option<&str>,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a [Binding])> + 'a {
        use std::ops::Bound;
        let from = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        self.by_number
            .range((from, Bound::Unbounded))
            .take_while(move |(n, _)| n.starts_with(prefix))
            .map(|(n, b)| (n.as_str(), b.as_slice()))
    }

    /// Number of numbers with at least one binding.
    pub fn len(&self) -> usize {
        self.by_number.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_number.is_empty()
    }

    /// Whether any binding has lapsed at `now_ms` (the expiry index's front).
    pub fn any_expired(&self, now_ms: u64) -> bool {
        self.expiry.get_min().is_some_and(|(at, _, _)| *at <= now_ms)
    }

    /// Bindings controlled by each node that controls any, in id order.
    pub fn count_by_node(&self) -> &BTreeMap<NodeId, u64> {
        &self.per_node
    }

    /// Add (`add`) or drop `b` from the indexes.
    fn index(&mut self, number: &str, b: Indexed, add: bool) {
        let key = (b.expires_at_ms, number.to_owned(), b.device_id);
        if add {
            self.expiry.insert(key);
            *self.per_node.entry(b.node).or_default() += 1;
        } else {
            self.expiry.remove(&key);
            if let Some(n) = self.per_node.get_mut(&b.node) {
                *n -= 1;
                if *n == 0 {
                    self.per_node.remove(&b.node);
                }
            }
        }
    }

    /// Insert or replace `binding` (by device id); returns the one replaced.
    pub(crate) fn upsert(&mut self, number: &str, binding: Binding) -> Option<Binding> {
        let added = Indexed::of(&binding);
        let list = self.by_number.entry(number.to_owned()).or_default();
        let replaced = match list.binary_search_by(|b| b.device_id.as_str().cmp(&binding.device_id))
        {
            Ok(i) => Some(std::mem::replace(&mut list[i], binding)),
            Err(i) => {
                list.insert(i, binding);
                None
            }
        };
        // Old out before new in: the two may have the same index key.
        if let Some(old) = &replaced {
            self.index(number, Indexed::of(old), false);
        }
        self.index(number, added, true);
        replaced
    }

    /// Change the binding of `device_id` under `number` through `f`,
    /// keeping the indexes right; `None` when there is no such binding.
    pub(crate) fn modify<R>(
        &mut self,
        number: &str,
        device_id: &str,
        f: impl FnOnce(&mut Binding) -> R,
    ) -> Option<R> {
        let list = self.by_number.get_mut(number)?;
        let i = list.binary_search_by(|b| b.device_id.as_str().cmp(device_id)).ok()?;
        let before = Indexed::of(&list[i]);
        let r = f(&mut list[i]);
        debug_assert_eq!(list[i].device_id, before.device_id, "modify may not rename");
        let after = Indexed::of(&list[i]);
        self.index(number, before, false);
        self.index(number, after, true);
        Some(r)
    }

    /// Remove the bindings of `number` for which `doomed` holds; returns them.
    pub(crate) fn remove_where(
        &mut self,
        number: &str,
        mut doomed: impl FnMut(&Binding) -> bool,
    ) -> Vec<Binding> {
        let Some(list) = self.by_number.get_mut(number) else {
            return Vec::new();
        };
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(list).into_iter().partition(&mut doomed);
        if kept.is_empty() {
            self.by_number.remove(number);
        } else {
            *list = kept;
        }
        for b in &gone {
            self.index(number, Indexed::of(b), false);
        }
        gone
    }

    /// Remove, across all numbers, the bindings for which `doomed` holds;
    /// returns (number, binding) pairs in number order. Scans the whole
    /// table: only for rare events (a node's registrations purged).
    pub(crate) fn remove_all_where(
        &mut self,
        mut doomed: impl FnMut(&Binding) -> bool,
    ) -> Vec<(String, Binding)> {
        let numbers: Vec<String> = self
            .by_number
            .iter()
            .filter(|(_, list)| list.iter().any(&mut doomed))
            .map(|(n, _)| n.clone())
            .collect();
        let mut removed = Vec::new();
        for number in numbers {
            for b in self.remove_where(&number, &mut doomed) {
                removed.push((number.clone(), b));
            }
        }
        removed
    }

    /// Remove every binding that has lapsed at `now_ms`; returns (number,
    /// binding) pairs in number order, then device id order (the order a
    /// full scan would give). Walks only the lapsed front of the expiry index.
    pub(crate) fn remove_expired(&mut self, now_ms: u64) -> Vec<(String, Binding)> {
        let mut lapsed: Vec<(String, String)> = self
            .expiry
            .iter()
            .take_while(|(at, _, _)| *at <= now_ms)
            .map(|(_, number, device)| (number.clone(), device.clone()))
            .collect();
        lapsed.sort_unstable();
        lapsed.dedup_by(|a, b| a.0 == b.0);
        let mut removed = Vec::new();
        for (number, _) in lapsed {
            for b in self.remove_where(&number, |b| !b.is_live(now_ms)) {
                removed.push((number.clone(), b));
            }
        }
        removed
    }

    /// Rebuild the indexes from the table and compare; `Err` names the
    /// first difference (for tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        let fresh = Registrations::from(Table { by_number: self.by_number.clone() });
        if fresh.expiry != self.expiry {
            return Err(format!(
                "expiry index has {} entries, a rebuild {}",
                self.expiry.len(),
                fresh.expiry.len()
            ));
        }
        if fresh.per_node != self.per_node {
            return Err(format!(
                "per-node counts {:?} != recount {:?}",
                self.per_node, fresh.per_node
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binding(device: u8, node: NodeId, expires_at_ms: u64) -> Binding {
        Binding {
            device_id: format!("d{device}"),
            contact: format!("sip:d{device}@example.invalid"),
            device_name: String::new(),
            mac: String::new(),
            node,
            q: 1000,
            expires_at_ms,
            generation: u64::from(device),
            sip: None,
        }
    }

    /// The table as a snapshot held it before it became a persistent map.
    #[derive(Serialize)]
    struct Before {
        by_number: BTreeMap<String, Vec<Binding>>,
    }

    #[test]
    fn snapshot_bytes_are_those_of_a_plain_ordered_map() {
        let mut r = Registrations::default();
        let mut plain = BTreeMap::new();
        for (n, d, at) in [("200", 1, 50), ("100", 2, 10), ("100", 1, 30)] {
            r.upsert(n, binding(d, 1, at));
            let list: &mut Vec<Binding> = plain.entry(n.to_string()).or_default();
            list.push(binding(d, 1, at));
            list.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        }
        let now = crate::codec::encode(&r).unwrap();
        assert_eq!(now, crate::codec::encode(&Before { by_number: plain }).unwrap());
        let back: Registrations = crate::codec::decode(&now).unwrap();
        assert_eq!(back, r, "indexes rebuilt on decode");
    }

    #[test]
    fn pages_start_after_the_token_and_keep_to_the_prefix() {
        let mut r = Registrations::default();
        for n in ["1", "20", "21", "215", "22", "3"] {
            r.upsert(n, binding(1, 1, 10));
        }
        let walk = |after, prefix| r.iter_from(after, prefix).map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(walk(None, ""), ["1", "20", "21", "215", "22", "3"]);
        assert_eq!(walk(Some("21"), ""), ["215", "22", "3"]);
        assert_eq!(walk(None, "21"), ["21", "215"]);
        assert_eq!(walk(Some("21"), "21"), ["215"]);
        assert_eq!(walk(Some("0"), "2"), ["20", "21", "215", "22"]);
        assert_eq!(walk(Some("215"), "2"), ["22"]);
        assert!(walk(Some("9"), "2").is_empty());
    }

    proptest! {
        /// The sweep through the expiry index removes exactly what a scan
        /// of every binding would, in the same order, and keeps the
        /// indexes exact.
        #[test]
        fn expiry_index_sweep_equals_a_full_scan(
            ops in prop::collection::vec((0u8..20, 0u8..4, 1u64..4, 0u64..100), 1..80),
            now in 0u64..100,
        ) {
            let mut r = Registrations::default();
            for (number, device, node, at) in ops {
                r.upsert(&format!("{number}"), binding(device, node, at));
            }
            let mut scan = Vec::new();
            for (n, list) in r.iter() {
                scan.extend(list.iter().filter(|b| !b.is_live(now)).map(|b| (n.to_string(), b.clone())));
            }
            prop_assert_eq!(r.any_expired(now), !scan.is_empty());
            let swept = r.remove_expired(now);
            prop_assert_eq!(swept, scan);
            prop_assert!(!r.any_expired(now));
            prop_assert!(r.check_invariants().is_ok(), "{:?}", r.check_invariants());
        }
    }
}
