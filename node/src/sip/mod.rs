//! SIP. For now only what the gateway prober needs: building an OPTIONS
//! request and reading the status line and dialog headers of a response
//! ([`options`]). The full front end (REGISTER, INVITE -> 302) builds on
//! this module later.

pub mod options;
