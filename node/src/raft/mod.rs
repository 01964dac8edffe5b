//! Raft between nodes: the network openraft sends through ([`network`]) and
//! the gRPC service that receives it ([`service`]).

pub mod network;
pub mod service;
