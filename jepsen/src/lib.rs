//! Switchboard's black-box chaos harness (modelled on Jepsen/Knossos and
//! etcd's robustness tests). It talks to a cluster only through the public
//! gRPC API and OS-level faults, records what every client saw, and checks the
//! record against a sequential specification written separately from the
//! storage crate's `apply` (this crate deliberately does not depend on it).
//!
//! # Layout
//!
//! - [`history`]: the record of a run — client operations ([`history::Op`])
//!   and fault injections ([`history::NemesisEvent`]) — and its JSON-lines
//!   form.
//! - [`model`]: the one-key sequential specifications ([`model::Model`]:
//!   register, cas) and the set workload's final-read audit
//!   ([`model::check_set`]).
//! - [`checker`]: the linearizability checker: the Wing–Gong–Lowe search for
//!   one key ([`checker::wgl`]) and the per-key, parallel check of a whole
//!   history ([`checker::check`]).
//!
//! - [`cluster`]: real node processes in network namespaces (or on
//!   127.0.0.1 when not root), signals, nftables partitions, cleanup.
//! - [`api`]: gRPC channels to the nodes and the admin calls nemeses need.
//! - [`nemesis`]: the seeded fault schedule (partition, kill, pause, member,
//!   leader isolation, clock skew, snapshot-crossing partitions, power).
//! - [`anchors`]: calls placed on every node; none may move off a node that
//!   no fault touched.
//! - [`power`]: the audit of acknowledged writes after each power cycle.
//! - [`workload`]: the clients that produce histories, and the LOCAL-read audit.
//! - [`route`]: the route workload's fixed setup (numbers, dial plan,
//!   gateways) and its check that every Route answer is the right one.
//! - [`run`]: one run from start-up to verdict.
//! - [`report`], [`plot`]: the run directory: history, results, SVG plots, logs.
//! - [`powerfs`]: the FUSE file system that drops unsynced data on a power
//!   cut, for the `power` nemesis.

#![deny(missing_docs)]

pub mod anchors;
pub mod api;
pub mod checker;
pub mod cluster;
pub mod history;
pub mod model;
pub mod nemesis;
pub mod plot;
pub mod power;
pub mod powerfs;
pub mod report;
pub mod route;
pub mod run;
pub mod workload;
