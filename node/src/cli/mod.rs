//! The command line: `serve` (one node), `dev` (a local cluster) and `ctl`
//! (an etcdctl-like client).

pub mod bench;
pub mod compare;
pub mod ctl;
pub mod dev;
pub mod etcd;
pub mod local;
pub mod scale;
pub mod serve;
pub mod sipbench;
pub mod stages;
