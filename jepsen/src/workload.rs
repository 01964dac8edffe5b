//! Workloads: concurrent clients that drive the cluster through the public
//! gRPC API and record every operation — invoke and complete times from one
//! monotonic clock, and `ok` / `fail` / `info` (indeterminate) results.
//!
//! - `register`: per-number registers — register with a unique contact
//!   (write), LINEARIZABLE lookup (read), unregister (optionally naming the
//!   generation last seen);
//! - `cas`: calls as compare-and-set registers — start, update with an
//!   expected version, LINEARIZABLE get;
//! - `set`: unique registrations, each added once; every acknowledged one
//!   must be present at the end;
//! - `local`: LOCAL lookups at one node: may be stale, but never a value
//!   that was never written, and never older than what that node already
//!   showed (recorded apart from the history, checked by [`check_local`]);
//! - `route`: Route requests (mostly LOCAL, some LINEARIZABLE) at random
//!   nodes for numbers and a gateway route set up once before the run:
//!   each answer must be the one the setup allows, skewed clocks or not
//!   (see [`crate::route`]).
//!
//! Error classification: a write that fails with a code that proves it was
//! refused (`INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`,
//! `FAILED_PRECONDITION`, `RESOURCE_EXHAUSTED`) is `fail`; anything else
//! (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, transport errors, ...) is `info`,
//! because the request may have reached the leader. A failed read is `fail`
//! (reads change nothing). After an `info` the client continues as a new
//! process, as in Jepsen, since its old operation may still take effect.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::calls_client::CallsClient;
use switchboard_proto::v1::registrar_client::RegistrarClient;
use tonic::Code;

use crate::api::Api;
use crate::history::{Call, CallValue, Op, OpResult, Ret};
use crate::nemesis::Recorder;
use crate::route;

/// Keys of the register workload (phone numbers).
pub const REGISTER_KEYS: usize = 8;
/// Keys of the cas workload (call ids).
pub const CAS_KEYS: usize = 4;
/// The set workload's key and the prefix of its numbers.
pub const SET_KEY: &str = "set";
const SET_PREFIX: &str = "88";
/// Per-request deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A workload kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Per-number registers.
    Register,
    /// Calls as compare-and-set registers.
    Cas,
    /// No lost registrations.
    Set,
    /// LOCAL reads: never invented, never backwards.
    Local,
    /// Routes of a fixed setup: always the one right answer.
    Route,
}

impl Workload {
    /// Parse a comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<Workload>> {
        let mut out = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.push(match p {
                "register" => Workload::Register,
                "cas" => Workload::Cas,
                "set" => Workload::Set,
                "local" => Workload::Local,
                "route" => Workload::Route,
                other => {
                    return Err(anyhow!(
                        "unknown workload {other:?}; expected register, cas, set, local or route"
                    ))
                }
            });
        }
        if out.is_empty() {
            return Err(anyhow!("no workload given"));
        }
        Ok(out)
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Cas => "cas",
            Workload::Set => "set",
            Workload::Local => "local",
            Workload::Route => "route",
        }
    }
}

/// The number a register-workload key stands for.
pub fn register_key(i: usize) -> String {
    format!("770{i:02}")
}

/// One LOCAL read, kept apart from the linearizability history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRead {
    /// The node asked.
    pub node: u64,
    /// The number read.
    pub key: String,
    /// The contact seen (None = no binding).
    pub contact: Option<String>,
    /// Its generation.
    pub generation: Option<u64>,
    /// The node's applied index when it answered.
    pub applied_index: u64,
    /// Invoke time, ns.
    pub invoke_ns: u64,
    /// Completion time, ns.
    pub complete_ns: u64,
}

/// What all clients share: the API, the clock and the records.
pub struct Recorded {
    ops: Mutex<Vec<Op>>,
    locals: Mutex<Vec<LocalRead>>,
    next_id: AtomicU64,
    next_process: AtomicU64,
    set_seq: AtomicU64,
}

impl Default for Recorded {
    fn default() -> Self {
        Recorded {
            ops: Mutex::default(),
            locals: Mutex::default(),
            next_id: AtomicU64::new(1),
            next_process: AtomicU64::new(1_000_000),
            set_seq: AtomicU64::new(0),
        }
    }
}

impl Recorded {
    /// All operations, in completion order.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// All LOCAL reads.
    pub fn locals(&self) -> Vec<LocalRead> {
        self.locals.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Record a completed operation (its id from [`Recorded::next_op_id`]).
    pub(crate) fn push(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    /// A fresh operation id.
    pub(crate) fn next_op_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

fn is_definite_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::ResourceExhausted
    )
}

/// A request with the workloads' deadline.
pub(crate) fn req<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(REQUEST_TIMEOUT);
    r
}

/// A registration the workloads make: one device per number, a day's
/// lifetime (nothing expires during a run), controlled by the asked node.
fn register_request(
    number: &str,
    device: &str,
    contact: &str,
    expires_s: u32,
) -> tonic::Request<pb::RegisterRequest> {
    req(pb::RegisterRequest {
        number: number.to_owned(),
        device_id: device.to_owned(),
        contact: contact.to_owned(),
        device_name: String::new(),
        mac: String::new(),
        node_id: 0,
        q: 1000,
        expires_s,
        request_id: None,
    })
}

/// The lifetime of the workloads' registrations for a run of `time_s`
/// seconds: long enough that none expires during the run and its final
/// reads (the models know nothing of expiry), short enough that a node
/// whose clock jumps ahead by the `clock` nemesis's 5-20 minutes would
/// expire them all if its clock were trusted.
pub fn registration_ttl_s(time_s: u64) -> u32 {
    u32::try_from(time_s.saturating_add(240)).unwrap_or(u32::MAX)
}

/// One client: a logical process bound to one node.
pub struct Client {
    process: u64,
    node: u64,
    api: Api,
    rec: Recorder,
    out: Arc<Recorded>,
    rng: StdRng,
    seq: u64,
    /// Last generation this client saw per register key.
    generations: BTreeMap<String, u64>,
    /// Last version this client saw per call.
    versions: BTreeMap<String, u64>,
    /// Lifetime of the registrations it makes, s.
    ttl_s: u32,
}

impl Client {
    /// A client for `process`, talking to `node`.
    pub fn new(
        process: u64,
        node: u64,
        api: Api,
        rec: Recorder,
        out: Arc<Recorded>,
        seed: u64,
    ) -> Client {
        Client {
            process,
            node,
            api,
            rec,
            out,
            rng: StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ process),
            seq: 0,
            generations: BTreeMap::new(),
            versions: BTreeMap::new(),
            ttl_s: 86_400,
        }
    }

    /// Registrations this client makes live `ttl_s` seconds.
    pub fn with_ttl(mut self, ttl_s: u32) -> Client {
        self.ttl_s = ttl_s;
        self
    }

    /// Run `workload` until `until`.
    pub async fn run(mut self, workload: Workload, until: Instant) {
        while Instant::now() < until {
            let indeterminate = match workload {
                Workload::Register => self.register_op().await,
                Workload::Cas => self.cas_op().await,
                Workload::Set => self.set_op().await,
                Workload::Local => {
                    self.local_op().await;
                    false
                }
                Workload::Route => self.route_op().await,
            };
            if indeterminate {
                // The old op may still take effect: continue as a new process.
                self.process = self.out.next_process.fetch_add(1, Ordering::Relaxed);
            }
            let pause = self.rng.random_range(5..30);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    fn record(&self, key: String, call: Call, result: OpResult, invoke_ns: u64) -> bool {
        let indeterminate = matches!(result, OpResult::Info(_));
        let op = Op {
            id: self.out.next_id.fetch_add(1, Ordering::Relaxed),
            process: self.process,
            key,
            call,
            result,
            invoke_ns,
            complete_ns: Some(self.rec.now_ns()),
        };
        self.out.push(op);
        indeterminate
    }

    fn write_error(s: &tonic::Status) -> OpResult {
        let text = format!("{:?}: {}", s.code(), s.message());
        if is_definite_refusal(s.code()) {
            OpResult::Fail(text)
        } else {
            OpResult::Info(text)
        }
    }

    async fn register_op(&mut self) -> bool {
        let key = register_key(self.rng.random_range(0..REGISTER_KEYS));
        let mut client = RegistrarClient::new(self.api.channel(self.node));
        let roll = self.rng.random_range(0..10);
        let invoke = self.rec.now_ns();
        if roll < 4 {
            self.seq += 1;
            let contact = format!("sip:p{}-{}@jepsen", self.process, self.seq);
            let r = client.register(register_request(&key, "dev", &contact, self.ttl_s)).await;
            let result = match r {
                Ok(resp) => match resp.into_inner().binding {
                    Some(b) => {
                        self.generations.insert(key.clone(), b.generation);
                        OpResult::Ok(Ret::Registered { generation: b.generation })
                    }
                    None => OpResult::Info("register answered without a binding".into()),
                },
                Err(s) => Self::write_error(&s),
            };
            self.record(key, Call::Register { contact }, result, invoke)
        } else if roll < 8 {
            let r = client
                .lookup(req(pb::LookupRequest {
                    number: key.clone(),
                    consistency: pb::Consistency::Linearizable as i32,
                }))
                .await;
            let result = match r {
                Ok(resp) => OpResult::Ok(Ret::Found(
                    resp.into_inner().bindings.first().map(|b| b.contact.clone()),
                )),
                Err(s) => OpResult::Fail(format!("{:?}: {}", s.code(), s.message())),
            };
            self.record(key, Call::Lookup, result, invoke)
        } else {
            let generation =
                if self.rng.random_bool(0.5) { self.generations.get(&key).copied() } else { None };
            let r = client
                .unregister(req(pb::UnregisterRequest {
                    number: key.clone(),
                    device_id: "dev".into(),
                    generation: generation.unwrap_or(0),
                    request_id: None,
                }))
                .await;
            let result = match r {
                Ok(resp) => OpResult::Ok(Ret::Removed(!resp.into_inner().removed.is_empty())),
                Err(s) => Self::write_error(&s),
            };
            self.record(key, Call::Unregister { generation }, result, invoke)
        }
    }

    async fn cas_op(&mut self) -> bool {
        let key = format!("cas-{}", self.rng.random_range(0..CAS_KEYS));
        let mut client = CallsClient::new(self.api.channel(self.node));
        let roll = self.rng.random_range(0..10);
        let invoke = self.rec.now_ns();
        if roll < 1 {
            let r = client
                .start_call(req(pb::StartCallRequest {
                    call_id: key.clone(),
                    from: "1000".into(),
                    to: "2000".into(),
                    node_id: 0,
                    gateway: String::new(),
                    request_id: None,
                }))
                .await;
            let result = match r {
                Ok(resp) => {
                    let v = resp.into_inner().call.map_or(0, |c| c.version);
                    self.versions.insert(key.clone(), v);
                    OpResult::Ok(Ret::Started { version: v })
                }
                Err(s) => Self::write_error(&s),
            };
            self.record(key, Call::Start { state: "setup".into() }, result, invoke)
        } else if roll < 6 {
            let expected = match self.versions.get(&key) {
                Some(v) if self.rng.random_bool(0.8) => *v,
                _ => self.rng.random_range(1..6),
            };
            let new_state =
                ["ringing", "connected", "held"][self.rng.random_range(0..3)].to_string();
            let r = client
                .update_call(req(pb::UpdateCallRequest {
                    call_id: key.clone(),
                    state: new_state.clone(),
                    expected_version: expected,
                    request_id: None,
                }))
                .await;
            let result = match r {
                Ok(resp) => {
                    let v = resp.into_inner().call.map_or(0, |c| c.version);
                    self.versions.insert(key.clone(), v);
                    OpResult::Ok(Ret::Cased { version: v })
                }
                Err(s) if s.code() == Code::NotFound => {
                    OpResult::Ok(Ret::CasConflict { actual: None })
                }
                Err(s) if s.code() == Code::FailedPrecondition => {
                    match found_version(s.message()) {
                        Some(actual) => {
                            self.versions.insert(key.clone(), actual);
                            OpResult::Ok(Ret::CasConflict { actual: Some(actual) })
                        }
                        None => OpResult::Fail(s.message().to_owned()),
                    }
                }
                Err(s) => Self::write_error(&s),
            };
            self.record(key, Call::Cas { expected_version: expected, new_state }, result, invoke)
        } else {
            let r = client
                .get_call(req(pb::GetCallRequest {
                    call_id: key.clone(),
                    consistency: pb::Consistency::Linearizable as i32,
                }))
                .await;
            let result = match r {
                Ok(resp) => {
                    let c = resp.into_inner().call;
                    if let Some(c) = &c {
                        self.versions.insert(key.clone(), c.version);
                    }
                    OpResult::Ok(Ret::Value(
                        c.map(|c| CallValue { state: c.state, version: c.version }),
                    ))
                }
                Err(s) if s.code() == Code::NotFound => OpResult::Ok(Ret::Value(None)),
                Err(s) => OpResult::Fail(format!("{:?}: {}", s.code(), s.message())),
            };
            self.record(key, Call::Read, result, invoke)
        }
    }

    async fn set_op(&mut self) -> bool {
        let n = self.out.set_seq.fetch_add(1, Ordering::Relaxed);
        let element = format!("{SET_PREFIX}{n:06}");
        let invoke = self.rec.now_ns();
        let r = RegistrarClient::new(self.api.channel(self.node))
            .register(register_request(
                &element,
                "set",
                &format!("sip:{element}@jepsen"),
                self.ttl_s,
            ))
            .await;
        let result = match r {
            Ok(_) => OpResult::Ok(Ret::Added),
            Err(s) => Self::write_error(&s),
        };
        self.record(SET_KEY.into(), Call::Add { element }, result, invoke)
    }

    /// A Route at a random node: a registered number (3 in 4) or the
    /// gateway route; LINEARIZABLE 1 in 5, else LOCAL.
    async fn route_op(&mut self) -> bool {
        let ids = self.api.ids();
        let node = ids[self.rng.random_range(0..ids.len())];
        let digits = if self.rng.random_bool(0.75) {
            route::number(self.rng.random_range(0..route::ROUTE_NUMBERS))
        } else {
            route::gateway_digits(self.rng.random_range(0..10_000))
        };
        let linearizable = self.rng.random_bool(0.2);
        let invoke = self.rec.now_ns();
        let result = route::ask(&self.api, node, &digits, linearizable).await;
        self.record(digits, Call::Route { node, linearizable }, result, invoke)
    }

    async fn local_op(&mut self) {
        let key = register_key(self.rng.random_range(0..REGISTER_KEYS));
        let invoke = self.rec.now_ns();
        let r = RegistrarClient::new(self.api.channel(self.node))
            .lookup(req(pb::LookupRequest {
                number: key.clone(),
                consistency: pb::Consistency::Local as i32,
            }))
            .await;
        if let Ok(resp) = r {
            let resp = resp.into_inner();
            let first = resp.bindings.first();
            let read = LocalRead {
                node: self.node,
                key,
                contact: first.map(|b| b.contact.clone()),
                generation: first.map(|b| b.generation),
                applied_index: resp.applied_index,
                invoke_ns: invoke,
                complete_ns: self.rec.now_ns(),
            };
            self.out.locals.lock().unwrap_or_else(|p| p.into_inner()).push(read);
        }
    }
}

/// The version in a compare-and-set conflict message ("... found N").
fn found_version(message: &str) -> Option<u64> {
    let rest = &message[message.rfind("found ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The set workload's elements as node `id` reads them with a
/// LINEARIZABLE list of registrations.
///
/// The list comes in pages, each a linearizable read of its own. That is
/// still a valid set read: every element acknowledged before the first
/// page was asked for is present in whichever later page covers it.
pub async fn read_set(api: &Api, id: u64) -> Result<Vec<String>, tonic::Status> {
    let mut client = RegistrarClient::new(api.channel(id));
    let (mut found, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_registrations(req(pb::ListRegistrationsRequest {
                consistency: pb::Consistency::Linearizable as i32,
                page_size: 10_000,
                page_token: std::mem::take(&mut token),
                prefix: SET_PREFIX.to_string(),
            }))
            .await?
            .into_inner();
        found.extend(
            page.registrations
                .into_iter()
                .map(|r| r.number)
                .filter(|n| n.len() == SET_PREFIX.len() + 6),
        );
        if page.next_page_token.is_empty() {
            return Ok(found);
        }
        token = page.next_page_token;
    }
}

/// The final read of the set workload, retried until the healed cluster answers.
pub async fn final_set_read(
    api: &Api,
    rec: &Recorder,
    out: &Recorded,
    deadline: Instant,
) -> Result<()> {
    let ids = api.ids();
    let mut last = anyhow!("not tried");
    while Instant::now() < deadline {
        for &id in &ids {
            let invoke = rec.now_ns();
            match read_set(api, id).await {
                Ok(elements) => {
                    out.push(Op {
                        id: out.next_id.fetch_add(1, Ordering::Relaxed),
                        process: 0,
                        key: SET_KEY.into(),
                        call: Call::ReadSet,
                        result: OpResult::Ok(Ret::Elements(elements)),
                        invoke_ns: invoke,
                        complete_ns: Some(rec.now_ns()),
                    });
                    return Ok(());
                }
                Err(s) => last = anyhow!("node {id}: {:?}: {}", s.code(), s.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last)
}

/// What the LOCAL-read check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalResult {
    /// Reads checked.
    pub reads: usize,
    /// Reads that returned a contact no client ever tried to write.
    pub invented: Vec<LocalRead>,
    /// Reads at a node that showed an older state than an earlier read there
    /// (lower applied index, or an older generation of the same key).
    pub backwards: Vec<(LocalRead, LocalRead)>,
}

impl LocalResult {
    /// Whether nothing was wrong.
    pub fn valid(&self) -> bool {
        self.invented.is_empty() && self.backwards.is_empty()
    }
}

/// Check LOCAL reads against everything the register workload tried to write.
///
/// `wipes` are (node, time) pairs at which the harness wiped a node's data
/// directory before adding it back: after a wipe the node is a new member
/// catching up from nothing, so its reads are compared only with reads of
/// the same incarnation.
pub fn check_local(locals: &[LocalRead], history: &[Op], wipes: &[(u64, u64)]) -> LocalResult {
    let written: BTreeSet<(&str, &str)> = history
        .iter()
        .filter_map(|op| match &op.call {
            Call::Register { contact } => Some((op.key.as_str(), contact.as_str())),
            _ => None,
        })
        .collect();
    let mut result = LocalResult { reads: locals.len(), ..Default::default() };
    for r in locals {
        if let Some(c) = &r.contact {
            if !written.contains(&(r.key.as_str(), c.as_str())) {
                result.invented.push(r.clone());
            }
        }
    }
    // Per node, in completion order: a read that *began* after an earlier
    // read *ended* must not show an older state.
    let mut by_node: BTreeMap<(u64, usize), Vec<&LocalRead>> = BTreeMap::new();
    for r in locals {
        let incarnation = wipes.iter().filter(|(n, at)| *n == r.node && *at <= r.invoke_ns).count();
        by_node.entry((r.node, incarnation)).or_default().push(r);
    }
    for reads in by_node.values_mut() {
        reads.sort_by_key(|r| r.complete_ns);
        let mut best_applied: Option<&LocalRead> = None;
        let mut best_gen: BTreeMap<&str, &LocalRead> = BTreeMap::new();
        for r in reads.iter() {
            if let Some(b) = best_applied {
                if b.complete_ns < r.invoke_ns && r.applied_index < b.applied_index {
                    result.backwards.push(((*b).clone(), (*r).clone()));
                }
            }
            if best_applied.is_none_or(|b| r.applied_index > b.applied_index) {
                best_applied = Some(r);
            }
            if let Some(g) = r.generation {
                if let Some(b) = best_gen.get(r.key.as_str()) {
                    if b.complete_ns < r.invoke_ns && b.generation.is_some_and(|bg| g < bg) {
                        result.backwards.push(((*b).clone(), (*r).clone()));
                    }
                }
                if best_gen
                    .get(r.key.as_str())
                    .is_none_or(|b| b.generation.is_some_and(|bg| g > bg))
                {
                    best_gen.insert(r.key.as_str(), r);
                }
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        node: u64,
        contact: Option<&str>,
        generation: Option<u64>,
        applied: u64,
        t: u64,
    ) -> LocalRead {
        LocalRead {
            node,
            key: register_key(0),
            contact: contact.map(str::to_owned),
            generation,
            applied_index: applied,
            invoke_ns: t,
            complete_ns: t + 1,
        }
    }

    fn wrote(contact: &str) -> Op {
        Op {
            id: 1,
            process: 1,
            key: register_key(0),
            call: Call::Register { contact: contact.into() },
            result: OpResult::Info("timeout".into()),
            invoke_ns: 0,
            complete_ns: None,
        }
    }

    #[test]
    fn local_reads_may_be_stale_but_not_invented_or_backwards() {
        let h = vec![wrote("sip:a"), wrote("sip:b")];
        let ok = vec![
            read(1, None, None, 5, 10),
            read(1, Some("sip:a"), Some(3), 7, 20),
            read(2, None, None, 1, 30),
        ];
        assert!(check_local(&ok, &h, &[]).valid());
        let invented = vec![read(1, Some("sip:zzz"), Some(3), 7, 20)];
        assert_eq!(check_local(&invented, &h, &[]).invented.len(), 1);
        let back =
            vec![read(1, Some("sip:b"), Some(5), 9, 10), read(1, Some("sip:a"), Some(3), 8, 20)];
        let r = check_local(&back, &h, &[]);
        assert_eq!(r.backwards.len(), 2, "{r:?}");
        // A wipe of node 1 at t=15 starts a new incarnation: not backwards.
        assert!(check_local(&back, &h, &[(1, 15)]).valid());
        // A wipe of another node does not excuse node 1.
        assert!(!check_local(&back, &h, &[(2, 15)]).valid());
    }

    #[test]
    fn conflict_message_version_is_parsed() {
        assert_eq!(found_version("version conflict on call cas-1: expected 2, found 5"), Some(5));
        assert_eq!(found_version("no number here"), None);
    }
}
