//! `switchboard.v1.Registrar`: register, refresh, unregister, look up.

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::registrar_server::Registrar;
use switchboard_storage::state::route::lookup;
use switchboard_storage::state::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::convert::{binding, consistency, meta, once};
use super::unexpected;
use crate::node::Node;

/// The Registrar service of one node.
pub struct RegistrarService {
    node: Node,
}

impl RegistrarService {
    /// Serve registrations for `node`.
    pub fn new(node: Node) -> Self {
        RegistrarService { node }
    }

    fn ttl_ms(&self, expires_s: u32) -> u64 {
        let s = if expires_s == 0 {
            self.node.config().registrations.default_expires_s
        } else {
            expires_s
        };
        u64::from(s) * 1_000
    }
}

#[tonic::async_trait]
impl Registrar for RegistrarService {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let mut r = req.into_inner();
        let request_id = r.request_id.take();
        let q = if r.q == 0 { 1000 } else { r.q };
        let command = Command::Register {
            device_id: if r.device_id.is_empty() { r.contact.clone() } else { r.device_id },
            number: r.number,
            contact: r.contact,
            device_name: r.device_name,
            mac: r.mac,
            node: if r.node_id == 0 { self.node.id() } else { r.node_id },
            q: u16::try_from(q).unwrap_or(u16::MAX),
            ttl_ms: self.ttl_ms(r.expires_s),
        };
        let command = once(request_id, command)?;
        let w = self.node.write(command).await?;
        match &w.outcome {
            Outcome::Registered { binding: b, .. } => Ok(Response::new(pb::RegisterResponse {
                binding: Some(binding(b)),
                meta: meta(&w),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn refresh(
        &self,
        req: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let mut r = req.into_inner();
        let request_id = r.request_id.take();
        let command = Command::Refresh {
            number: r.number,
            device_id: r.device_id,
            generation: (r.generation != 0).then_some(r.generation),
            ttl_ms: self.ttl_ms(r.expires_s),
        };
        let command = once(request_id, command)?;
        let w = self.node.write(command).await?;
        match &w.outcome {
            Outcome::Refreshed { binding: b, .. } => Ok(Response::new(pb::RegisterResponse {
                binding: Some(binding(b)),
                meta: meta(&w),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn unregister(
        &self,
        req: Request<pb::UnregisterRequest>,
    ) -> Result<Response<pb::UnregisterResponse>, Status> {
        let mut r = req.into_inner();
        let request_id = r.request_id.take();
        let command = Command::Unregister {
            number: r.number,
            device_id: (!r.device_id.is_empty()).then_some(r.device_id),
            generation: (r.generation != 0).then_some(r.generation),
        };
        let command = once(request_id, command)?;
        let w = self.node.write(command).await?;
        match &w.outcome {
            Outcome::Unregistered { removed, .. } => Ok(Response::new(pb::UnregisterResponse {
                removed: removed.iter().map(binding).collect(),
                meta: meta(&w),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn lookup(
        &self,
        req: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let r = req.into_inner();
        switchboard_storage::state::dialplan::validate_digits(&r.number)
            .map_err(|e| Status::invalid_argument(format!("number: {e}")))?;
        self.node.read_barrier(consistency(r.consistency)?).await?;
        let now = self.node.cluster_now();
        Ok(Response::new(self.node.read(|s, applied| pb::LookupResponse {
            bindings: lookup(s, &r.number, now).into_iter().map(binding).collect(),
            known: s.registrations.contains(&r.number),
            applied_index: applied,
        })))
    }

    async fn list_registrations(
        &self,
        req: Request<pb::ListRegistrationsRequest>,
    ) -> Result<Response<pb::ListRegistrationsResponse>, Status> {
        let r = req.into_inner();
        let size = match r.page_size {
            0 => DEFAULT_PAGE,
            n => (n as usize).min(MAX_PAGE),
        };
        if r.page_token.len() > MAX_TOKEN || r.prefix.len() > MAX_TOKEN {
            return Err(Status::invalid_argument(format!(
                "page_token and prefix are at most {MAX_TOKEN} bytes"
            )));
        }
        self.node.read_barrier(consistency(r.consistency)?).await?;
        let now = self.node.cluster_now();
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        // Numbers whose bindings have all lapsed (not yet swept) are
        // skipped; the scan is still bounded, so one page never holds the
        // state lock for long: a page may come back short with a token.
        let budget = size.saturating_mul(4);
        Ok(Response::new(self.node.read(|s, applied| {
            let mut page = Vec::new();
            let mut last = None;
            let mut more = false;
            let numbers = s.registrations.iter_from(after, &r.prefix);
            for (scanned, (number, _)) in numbers.enumerate() {
                if page.len() == size || scanned == budget {
                    more = true;
                    break;
                }
                last = Some(number);
                let bindings: Vec<_> = lookup(s, number, now).into_iter().map(binding).collect();
                if !bindings.is_empty() {
                    page.push(pb::Registration { number: number.to_owned(), bindings });
                }
            }
            pb::ListRegistrationsResponse {
                registrations: page,
                applied_index: applied,
                next_page_token: if more {
                    last.unwrap_or_default().to_owned()
                } else {
                    String::new()
                },
            }
        })))
    }
}

/// Numbers in a registrations page when the request names no size.
const DEFAULT_PAGE: usize = 1_000;
/// Most numbers in one page (a larger page_size is lowered to it).
const MAX_PAGE: usize = 10_000;
/// Longest page_token or prefix accepted, bytes.
const MAX_TOKEN: usize = 256;
