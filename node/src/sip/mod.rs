//! SIP front end: every node is a registrar (REGISTER, RFC 3261 §10) and a
//! stateless redirect server (INVITE -> 302, §8.3) over UDP and TCP, backed
//! by the replicated state.
//!
//! # Layout
//! Bytes to messages, no protocol meaning:
//! - [`scan`]: lexical helpers (white space, commas, parameters);
//! - [`message`]: the zero-copy index of one message and its sanity check;
//! - [`uri`], [`addr`], [`via`]: typed views of one URI, address or Via;
//! - [`framing`]: cutting a TCP stream into messages;
//! - [`response`]: replies that copy the request's dialog headers.
//!
//! Protocol logic, pure functions of (message, state):
//! - [`registrar`]: REGISTER to a replicated command or an answer;
//! - [`redirect`]: INVITE to a 302 or a failure, from local state;
//! - [`digest`]: digest authentication (challenges, stateless nonces);
//! - [`server`]: dispatch by method, and the codes of errors.
//!
//! Edges: [`transport`] (UDP and TCP sockets), [`metrics`]; and
//! [`options`], the gateway prober's OPTIONS client.

pub mod addr;
pub mod auth;
pub mod codes;
pub mod digest;
pub mod framing;
pub mod message;
pub mod metrics;
pub mod options;
pub mod redirect;
pub mod registrar;
pub mod response;
pub mod scan;
pub mod server;
pub mod stateless;
pub mod transactions;
pub mod transport;
pub mod uri;
pub mod via;

#[cfg(test)]
mod corpus_tests;
