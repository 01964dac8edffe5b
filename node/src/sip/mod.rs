//! SIP. For now: what the gateway prober needs, building an OPTIONS
//! request and reading the status line and dialog headers of a response
//! ([`options`]); and digest authentication for the registrar ([`digest`]:
//! parse `Authorization`, build challenges with stateless nonces, verify
//! responses against replicated HA1s). The full front end (REGISTER,
//! INVITE -> 302) builds on this module.

pub mod digest;
pub mod options;
