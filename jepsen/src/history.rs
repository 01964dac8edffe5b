//! What a chaos run records: client operations ([`Op`]) and fault injections
//! ([`NemesisEvent`]), kept in two separate logs, and their JSON-lines form
//! (`history.jsonl`, one record per line).
//!
//! Every timestamp comes from one monotonic clock and counts nanoseconds since
//! the run started, so an op's invoke and completion can be compared with any
//! other op's and with nemesis events.
//!
//! # What a result means
//!
//! - [`OpResult::Ok`]: the server acknowledged the operation and returned
//!   [`Ret`]. It took effect exactly once, at some instant between
//!   `invoke_ns` and `complete_ns`.
//! - [`OpResult::Fail`]: the operation definitely did **not** take effect (for
//!   example the server refused it before replicating anything). The checkers
//!   remove it.
//! - [`OpResult::Info`], or `complete_ns == None`: the outcome is unknown (a
//!   timeout, a dropped connection). It may take effect at any instant after
//!   `invoke_ns`, even after the client gave up, or never.
//!
//! The call and return vocabulary ([`Call`], [`Ret`]) covers every workload
//! (register, cas, set, route); each model or checker says which calls it handles.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One client operation: what was asked, of which key, by whom, when, and
/// what came back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within a history.
    pub id: u64,
    /// The client (logical process) that issued it. A process has at most one
    /// operation outstanding at a time.
    pub process: u64,
    /// The key the operation concerns (a phone number, a call id, a set
    /// name). Keys are independent: the checker checks each on its own.
    pub key: String,
    /// What was asked.
    pub call: Call,
    /// What came back.
    pub result: OpResult,
    /// When the client sent the request (ns since the run started).
    pub invoke_ns: u64,
    /// When the client got the answer or gave up (ns since the run started);
    /// `None` if the run ended with the operation still outstanding.
    pub complete_ns: Option<u64>,
}

impl Op {
    /// Whether the outcome is unknown: the result is [`OpResult::Info`] or the
    /// operation never completed. An indeterminate operation may have taken
    /// effect at any instant after its invocation, or never.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self.result, OpResult::Info(_)) || self.complete_ns.is_none()
    }

    /// Whether the operation definitely did not take effect
    /// ([`OpResult::Fail`]).
    pub fn is_failed(&self) -> bool {
        matches!(self.result, OpResult::Fail(_))
    }

    /// The server's answer if the operation was acknowledged and completed,
    /// `None` otherwise.
    pub fn ok_ret(&self) -> Option<&Ret> {
        match (&self.result, self.complete_ns) {
            (OpResult::Ok(ret), Some(_)) => Some(ret),
            _ => None,
        }
    }
}

/// How an operation ended. See the module documentation for exactly what each
/// variant lets a checker assume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpResult {
    /// Acknowledged; the operation took effect once and returned this.
    Ok(Ret),
    /// Definitely did not take effect; the text says why.
    Fail(String),
    /// Unknown whether it took effect; the text says why.
    Info(String),
}

/// A request, for every workload. Which variants a key sees depends on its
/// workload; a [`crate::model::Model`] states which ones it handles.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// Register workload: bind the key (a phone number) to `contact`,
    /// replacing any previous binding. Returns [`Ret::Registered`].
    Register {
        /// The contact URI to bind.
        contact: String,
    },
    /// Register workload: read the key's current contact. Returns
    /// [`Ret::Found`].
    Lookup,
    /// Register workload: remove the key's binding; only the binding with this
    /// generation when `generation` is given. Returns [`Ret::Removed`].
    Unregister {
        /// Restrict the removal to the binding created at this generation.
        generation: Option<u64>,
    },
    /// Cas workload: create the call (the key is a call id) in `state`.
    /// Returns [`Ret::Started`].
    Start {
        /// The call's initial state (for example `"ringing"`).
        state: String,
    },
    /// Cas workload: move the call to `new_state` if its version is still
    /// `expected_version`. Returns [`Ret::Cased`] or [`Ret::CasConflict`].
    Cas {
        /// The version the client last saw.
        expected_version: u64,
        /// The state to move to.
        new_state: String,
    },
    /// Cas workload: read the call's state and version. Returns
    /// [`Ret::Value`].
    Read,
    /// Set workload: add `element` to the set named by the key. Returns
    /// [`Ret::Added`].
    Add {
        /// The element; unique per key within a run.
        element: String,
    },
    /// Set workload: read every element of the set. Returns
    /// [`Ret::Elements`].
    ReadSet,
    /// Route workload: route the dialled digits (the key) at `node`.
    /// Returns [`Ret::Routed`] or [`Ret::Unroutable`].
    Route {
        /// The node asked (the answer is its local state, or its state after
        /// a read index when `linearizable`).
        node: u64,
        /// LINEARIZABLE rather than LOCAL consistency.
        linearizable: bool,
    },
}

impl Call {
    /// Whether the call never changes state (a read). A read whose outcome is
    /// unknown tells nothing and the linearizability checker drops it.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Call::Lookup | Call::Read | Call::ReadSet | Call::Route { .. })
    }
}

/// A successful answer, for every workload (the variant documents which
/// [`Call`] it answers).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ret {
    /// Answers [`Call::Register`]: the generation the server gave the new
    /// binding.
    Registered {
        /// Unique, increasing server-assigned generation.
        generation: u64,
    },
    /// Answers [`Call::Lookup`]: the bound contact, if any.
    Found(Option<String>),
    /// Answers [`Call::Unregister`]: whether a binding was removed.
    Removed(bool),
    /// Answers [`Call::Start`]: the new call's version (always 1).
    Started {
        /// The version of the created call.
        version: u64,
    },
    /// Answers [`Call::Cas`] when the swap happened: the new version.
    Cased {
        /// The version after the swap (`expected_version + 1`).
        version: u64,
    },
    /// Answers [`Call::Cas`] when the swap was refused because the version
    /// differed: the version the server had (`None` when no such call
    /// exists). This is a successful, definite answer: nothing changed.
    CasConflict {
        /// The call's version when the swap was refused, `None` for no call.
        actual: Option<u64>,
    },
    /// Answers [`Call::Read`]: the call's state and version, `None` for no
    /// call.
    Value(Option<CallValue>),
    /// Answers [`Call::Add`].
    Added,
    /// Answers [`Call::ReadSet`]: the elements, in any order.
    Elements(Vec<String>),
    /// Answers [`Call::Route`]: the ordered targets and the handling node.
    Routed {
        /// Targets in the order given.
        targets: Vec<RouteTarget>,
        /// The node that should handle the call.
        handling_node: u64,
    },
    /// Answers [`Call::Route`] when the call cannot be routed: the SIP-style
    /// failure the server gave.
    Unroutable {
        /// 400, 404, 480 or 503.
        code: u32,
        /// The server's reason.
        reason: String,
    },
}

/// One target of a route answer, as the Router service gives it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteTarget {
    /// SIP URI to try.
    pub uri: String,
    /// `"device"` or `"gateway"`.
    pub kind: String,
    /// Device id or gateway id.
    pub id: String,
}

/// A call's state and version as the cas workload sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallValue {
    /// The call state (for example `"ringing"`, `"answered"`).
    pub state: String,
    /// Starts at 1, incremented by every successful compare-and-set.
    pub version: u64,
}

/// Whether a nemesis event opens or closes a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NemesisPhase {
    /// The fault begins (a partition is created, a node is killed).
    Start,
    /// The fault ends (the partition heals, the node restarts).
    Stop,
}

/// A fault injection, recorded apart from the client operations (nemesis
/// events are not operations and are never checked for linearizability; the
/// report lays them next to the history).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// When it happened (ns since the run started, same clock as [`Op`]).
    pub at_ns: u64,
    /// Which nemesis (for example `"partition"`, `"kill"`, `"clock"`).
    pub kind: String,
    /// Free-form detail (which nodes, which halves).
    pub detail: String,
    /// Whether the fault begins or ends.
    pub phase: NemesisPhase,
}

/// Why a history could not be written, read or used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading or writing the underlying stream failed.
    #[error("history I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// A record could not be encoded as JSON.
    #[error("cannot encode a history record: {0}")]
    Encode(#[source] serde_json::Error),
    /// A line is not a valid record.
    #[error("history line {line} is not a valid record: {source}")]
    Decode {
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Two operations share an id.
    #[error("op id {0} appears more than once")]
    DuplicateId(u64),
    /// An operation completes before it was invoked.
    #[error("op {id} completes at {complete_ns} ns, before its invocation at {invoke_ns} ns")]
    CompletesBeforeInvoke {
        /// The operation.
        id: u64,
        /// Its invocation time.
        invoke_ns: u64,
        /// Its completion time.
        complete_ns: u64,
    },
    /// A process had two operations outstanding at once.
    #[error("process {process} has ops {first} and {second} outstanding at the same time")]
    ConcurrentInProcess {
        /// The process.
        process: u64,
        /// The earlier operation (by invocation).
        first: u64,
        /// The operation invoked while `first` was outstanding.
        second: u64,
    },
}

/// Writes `records` as JSON lines: one compact JSON object per line, each
/// line ending in `\n`. Works for [`Op`]s (`history.jsonl`) and
/// [`NemesisEvent`]s alike, and can be called repeatedly on the same writer to
/// append. The writer is flushed at the end.
pub fn write_jsonl<'a, T, W, I>(mut out: W, records: I) -> Result<(), HistoryError>
where
    T: Serialize + 'a,
    W: Write,
    I: IntoIterator<Item = &'a T>,
{
    for record in records {
        serde_json::to_writer(&mut out, record).map_err(HistoryError::Encode)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads JSON lines written by [`write_jsonl`]. Blank lines are skipped; any
/// other line that does not decode is an error naming its line number.
pub fn read_jsonl<T, R>(input: R) -> Result<Vec<T>, HistoryError>
where
    T: DeserializeOwned,
    R: BufRead,
{
    let mut records = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line)
            .map_err(|source| HistoryError::Decode { line: index + 1, source })?;
        records.push(record);
    }
    Ok(records)
}

/// Checks the invariants the checkers rely on: ids are unique, no operation
/// completes before its invocation, and a process never has two operations
/// outstanding at once (an operation with `complete_ns == None` must be its
/// process's last, invoked after all the others completed).
///
/// Two operations of one process may touch (one completes at the very
/// nanosecond the next is invoked).
pub fn validate(ops: &[Op]) -> Result<(), HistoryError> {
    let mut ids = HashMap::with_capacity(ops.len());
    let mut by_process: HashMap<u64, Vec<&Op>> = HashMap::new();
    for op in ops {
        if ids.insert(op.id, ()).is_some() {
            return Err(HistoryError::DuplicateId(op.id));
        }
        if let Some(complete_ns) = op.complete_ns {
            if complete_ns < op.invoke_ns {
                return Err(HistoryError::CompletesBeforeInvoke {
                    id: op.id,
                    invoke_ns: op.invoke_ns,
                    complete_ns,
                });
            }
        }
        by_process.entry(op.process).or_default().push(op);
    }
    for (process, mut mine) in by_process {
        mine.sort_by_key(|op| (op.invoke_ns, op.id));
        for pair in mine.windows(2) {
            let (first, second) = (pair[0], pair[1]);
            let overlaps = match first.complete_ns {
                None => true,
                Some(done) => done > second.invoke_ns,
            };
            if overlaps {
                return Err(HistoryError::ConcurrentInProcess {
                    process,
                    first: first.id,
                    second: second.id,
                });
            }
        }
    }
    Ok(())
}

impl fmt::Display for Op {
    /// One line: `#id p<process> <key> <call> -> <result> [invoke, complete]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} p{} {} {:?} -> ", self.id, self.process, self.key, self.call)?;
        match &self.result {
            OpResult::Ok(ret) => write!(f, "ok {ret:?}")?,
            OpResult::Fail(why) => write!(f, "fail ({why})")?,
            OpResult::Info(why) => write!(f, "info ({why})")?,
        }
        match self.complete_ns {
            Some(done) => write!(f, " [{} ns, {} ns]", self.invoke_ns, done),
            None => write!(f, " [{} ns, never]", self.invoke_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, process: u64, invoke_ns: u64, complete_ns: Option<u64>) -> Op {
        Op {
            id,
            process,
            key: "1000".into(),
            call: Call::Lookup,
            result: OpResult::Ok(Ret::Found(None)),
            invoke_ns,
            complete_ns,
        }
    }

    #[test]
    fn ops_round_trip_through_jsonl() {
        let ops = vec![
            Op {
                id: 1,
                process: 7,
                key: "1000".into(),
                call: Call::Register { contact: "sip:a@h".into() },
                result: OpResult::Ok(Ret::Registered { generation: 3 }),
                invoke_ns: 10,
                complete_ns: Some(20),
            },
            Op {
                id: 2,
                process: 8,
                key: "call-1".into(),
                call: Call::Cas { expected_version: 1, new_state: "answered".into() },
                result: OpResult::Info("timeout".into()),
                invoke_ns: 15,
                complete_ns: None,
            },
            Op {
                id: 3,
                process: 9,
                key: "call-1".into(),
                call: Call::Read,
                result: OpResult::Ok(Ret::Value(Some(CallValue {
                    state: "ringing".into(),
                    version: 1,
                }))),
                invoke_ns: 16,
                complete_ns: Some(18),
            },
            Op {
                id: 4,
                process: 10,
                key: "s".into(),
                call: Call::ReadSet,
                result: OpResult::Ok(Ret::Elements(vec!["a".into(), "b".into()])),
                invoke_ns: 30,
                complete_ns: Some(31),
            },
            Op {
                id: 5,
                process: 11,
                key: "call-2".into(),
                call: Call::Cas { expected_version: 4, new_state: "x".into() },
                result: OpResult::Ok(Ret::CasConflict { actual: None }),
                invoke_ns: 30,
                complete_ns: Some(31),
            },
            Op {
                id: 6,
                process: 12,
                key: "1000".into(),
                call: Call::Unregister { generation: None },
                result: OpResult::Fail("not leader".into()),
                invoke_ns: 40,
                complete_ns: Some(41),
            },
        ];
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &ops).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), ops.len());
        assert!(text.ends_with('\n'));
        let back: Vec<Op> = read_jsonl(&buf[..]).unwrap();
        assert_eq!(back, ops);
    }

    #[test]
    fn the_json_shape_is_stable() {
        let op = Op {
            id: 1,
            process: 2,
            key: "1000".into(),
            call: Call::Register { contact: "c".into() },
            result: OpResult::Ok(Ret::Registered { generation: 9 }),
            invoke_ns: 5,
            complete_ns: Some(6),
        };
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            r#"{"id":1,"process":2,"key":"1000","call":{"register":{"contact":"c"}},"result":{"ok":{"registered":{"generation":9}}},"invoke_ns":5,"complete_ns":6}"#
        );
        let lookup: Call = serde_json::from_str(r#""lookup""#).unwrap();
        assert_eq!(lookup, Call::Lookup);
    }

    #[test]
    fn nemesis_events_round_trip_and_appending_works() {
        let first = [NemesisEvent {
            at_ns: 100,
            kind: "partition".into(),
            detail: "n1 | n2 n3".into(),
            phase: NemesisPhase::Start,
        }];
        let second = [NemesisEvent {
            at_ns: 900,
            kind: "partition".into(),
            detail: "heal".into(),
            phase: NemesisPhase::Stop,
        }];
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &first).unwrap();
        write_jsonl(&mut buf, &second).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.contains(r#""phase":"start""#), "{text}");
        let back: Vec<NemesisEvent> = read_jsonl(&buf[..]).unwrap();
        assert_eq!(back, [first[0].clone(), second[0].clone()]);
    }

    #[test]
    fn reading_skips_blank_lines_and_names_the_bad_line() {
        let good = r#"{"at_ns":1,"kind":"kill","detail":"n1","phase":"start"}"#;
        let text = format!("{good}\n\n{good}\n");
        let back: Vec<NemesisEvent> = read_jsonl(text.as_bytes()).unwrap();
        assert_eq!(back.len(), 2);

        let text = format!("{good}\n{{\"at_ns\": \"soon\"}}\n");
        let err = read_jsonl::<NemesisEvent, _>(text.as_bytes()).unwrap_err();
        assert!(matches!(err, HistoryError::Decode { line: 2, .. }), "{err}");
    }

    #[test]
    fn indeterminate_and_failed_ops_are_recognised() {
        let mut o = op(1, 1, 0, Some(5));
        assert!(!o.is_indeterminate());
        assert_eq!(o.ok_ret(), Some(&Ret::Found(None)));
        o.complete_ns = None;
        assert!(o.is_indeterminate());
        assert_eq!(o.ok_ret(), None);
        o.complete_ns = Some(5);
        o.result = OpResult::Info("timeout".into());
        assert!(o.is_indeterminate());
        assert!(!o.is_failed());
        o.result = OpResult::Fail("refused".into());
        assert!(o.is_failed());
        assert!(!o.is_indeterminate());
    }

    #[test]
    fn validate_accepts_a_well_formed_history() {
        // Process 1: back to back (touching), then one left outstanding.
        let ops = [op(1, 1, 0, Some(10)), op(2, 1, 10, Some(20)), op(3, 1, 25, None)];
        validate(&ops).unwrap();
    }

    #[test]
    fn validate_rejects_duplicates_reversed_times_and_overlaps() {
        let err = validate(&[op(1, 1, 0, Some(1)), op(1, 2, 0, Some(1))]).unwrap_err();
        assert!(matches!(err, HistoryError::DuplicateId(1)), "{err}");

        let err = validate(&[op(4, 1, 10, Some(9))]).unwrap_err();
        assert!(
            matches!(
                err,
                HistoryError::CompletesBeforeInvoke { id: 4, invoke_ns: 10, complete_ns: 9 }
            ),
            "{err}"
        );

        let err = validate(&[op(1, 3, 0, Some(10)), op(2, 3, 5, Some(12))]).unwrap_err();
        assert!(
            matches!(err, HistoryError::ConcurrentInProcess { process: 3, first: 1, second: 2 }),
            "{err}"
        );

        let err = validate(&[op(1, 3, 0, None), op(2, 3, 50, Some(60))]).unwrap_err();
        assert!(
            matches!(err, HistoryError::ConcurrentInProcess { process: 3, first: 1, second: 2 }),
            "{err}"
        );
    }

    #[test]
    fn display_is_one_readable_line() {
        let mut o = op(3, 2, 10, None);
        o.result = OpResult::Info("timeout".into());
        assert_eq!(o.to_string(), "#3 p2 1000 Lookup -> info (timeout) [10 ns, never]");
    }
}
