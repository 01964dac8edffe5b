//! `switchboard.v1.Users`: SIP digest credentials. Writes carry HA1
//! digests computed by the client (the password never reaches the
//! cluster); the list answers names and realms, never digests.

use switchboard_proto::v1 as pb;
use switchboard_proto::v1::users_server::Users;
use switchboard_storage::state::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::convert::{consistency, meta};
use super::unexpected;
use crate::error::ApiError;
use crate::node::Node;

/// The Users service of one node.
pub struct UsersService {
    node: Node,
}

impl UsersService {
    /// Serve SIP credentials for `node`.
    pub fn new(node: Node) -> Self {
        UsersService { node }
    }
}

/// A digest of exactly `N` bytes, or `InvalidArgument` naming the field.
fn digest<const N: usize>(field: &str, bytes: &[u8]) -> Result<[u8; N], ApiError> {
    bytes.try_into().map_err(|_| {
        ApiError::InvalidArgument(format!("{field} must be {N} bytes, got {}", bytes.len()))
    })
}

#[tonic::async_trait]
impl Users for UsersService {
    async fn put_user(
        &self,
        req: Request<pb::PutUserRequest>,
    ) -> Result<Response<pb::PutUserResponse>, Status> {
        let r = req.into_inner();
        let command = Command::PutUser {
            ha1_md5: digest("ha1_md5", &r.ha1_md5)?,
            ha1_sha256: digest("ha1_sha256", &r.ha1_sha256)?,
            user: r.user,
            realm: r.realm,
        };
        let w = self.node.write(command).await?;
        let Outcome::UserPut { replaced, .. } = w.outcome else {
            return Err(unexpected(&w.outcome));
        };
        Ok(Response::new(pb::PutUserResponse { replaced, meta: meta(&w) }))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let w = self.node.write(Command::DeleteUser { user: req.into_inner().user }).await?;
        Ok(Response::new(pb::DeleteUserResponse { meta: meta(&w) }))
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.node.read_barrier(consistency(req.into_inner().consistency)?).await?;
        Ok(Response::new(self.node.read(|s, _| {
            pb::ListUsersResponse {
                users: s
                    .users
                    .iter()
                    .map(|(user, u)| pb::SipUser { user: user.to_owned(), realm: u.realm.clone() })
                    .collect(),
            }
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_the_wrong_length_are_invalid_arguments() {
        assert_eq!(digest::<16>("ha1_md5", &[1; 16]).unwrap(), [1; 16]);
        for len in [0, 15, 17, 32] {
            let e = digest::<16>("ha1_md5", &vec![0; len]).unwrap_err();
            assert_eq!(Status::from(e.clone()).code(), tonic::Code::InvalidArgument, "{e}");
            assert!(e.to_string().contains("ha1_md5 must be 16 bytes"), "{e}");
        }
    }
}
