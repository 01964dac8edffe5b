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
        self.node.read_barrier(consistency(r.consistency)?).await?;
        let now = self.node.cluster_now();
        Ok(Response::new(self.node.read(|s, applied| {
            pb::ListRegistrationsResponse {
                registrations: s
                    .registrations
                    .iter()
                    .map(|(number, _)| pb::Registration {
                        number: number.to_owned(),
                        bindings: lookup(s, number, now).into_iter().map(binding).collect(),
                    })
                    .filter(|r| !r.bindings.is_empty())
                    .collect(),
                applied_index: applied,
            }
        })))
    }
}
