//! Switchboard's black-box chaos harness (modelled on Jepsen and etcd's
//! robustness tests). It talks to a cluster only through the public gRPC API
//! and OS-level faults; its checker model is written separately from the
//! storage crate's `apply`.
//!
//! Empty until the chaos issue: this crate only reserves its place in the
//! workspace.
