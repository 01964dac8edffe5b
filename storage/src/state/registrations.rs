//! The composite registration table: number -> the bindings of the devices
//! registered under it, each controlled by one node.

use std::collections::BTreeMap;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registrations {
    by_number: BTreeMap<String, Vec<Binding>>,
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

    /// Number of numbers with at least one binding.
    pub fn len(&self) -> usize {
        self.by_number.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_number.is_empty()
    }

    /// Insert or replace `binding` (by device id); returns the one replaced.
    pub(crate) fn upsert(&mut self, number: &str, binding: Binding) -> Option<Binding> {
        let list = self.by_number.entry(number.to_owned()).or_default();
        match list.binary_search_by(|b| b.device_id.as_str().cmp(&binding.device_id)) {
            Ok(i) => Some(std::mem::replace(&mut list[i], binding)),
            Err(i) => {
                list.insert(i, binding);
                None
            }
        }
    }

    /// The binding of `device_id` under `number`, mutable.
    pub(crate) fn get_mut(&mut self, number: &str, device_id: &str) -> Option<&mut Binding> {
        let list = self.by_number.get_mut(number)?;
        let i = list.binary_search_by(|b| b.device_id.as_str().cmp(device_id)).ok()?;
        Some(&mut list[i])
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
        gone
    }

    /// Remove, across all numbers, the bindings for which `doomed` holds;
    /// returns (number, binding) pairs in number order. Scans the whole table.
    pub(crate) fn remove_all_where(
        &mut self,
        mut doomed: impl FnMut(&Binding) -> bool,
    ) -> Vec<(String, Binding)> {
        let mut removed = Vec::new();
        self.by_number.retain(|number, list| {
            list.retain(|b| {
                if doomed(b) {
                    removed.push((number.clone(), b.clone()));
                    false
                } else {
                    true
                }
            });
            !list.is_empty()
        });
        removed
    }
}
