//! TLS on the gRPC port: loading the `[tls]` files, the server and
//! node-to-node client configurations, and the check that keeps
//! node-to-node RPCs for cluster members.
//!
//! One port serves both clients and peers, so the server asks for a client
//! certificate but does not require one: clients (`ctl`, proxies) connect
//! with server-authenticated TLS only, while nodes present their own
//! certificate, signed by the cluster CA, when they call each other. The
//! `switchboard.v1.Raft` service (votes, log replication, snapshots,
//! forwarded writes, read index, liveness) then refuses any caller that did
//! not present one: see [`PeerAuth`].
//!
//! What this module does not do: bearer tokens for clients, and generating
//! certificates for production (see [`issue`] for the throwaway ones of
//! `switchboard dev --tls` and the tests).

pub mod issue;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::config;

/// Longest a TLS handshake may take on the server side: a connection that
/// opens TCP and then says nothing does not hold a task for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The status message of a node-to-node RPC refused for want of a peer
/// certificate.
pub const PEER_CERT_REQUIRED: &str =
    "node-to-node RPC refused: a peer certificate signed by the cluster CA required";

/// Why the TLS files could not be used. Each names the file (or files) and
/// the setting it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} file {}: {error}", path.display())]
    Read {
        /// Which setting (`tls.cert`, `--tls-ca`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (in the message, not a `source`: the one-line error
        /// printers would say it twice).
        error: std::io::Error,
    },
    /// A file was read but holds no usable PEM of the expected kind.
    #[error("{what} file {}: {message}", path.display())]
    Pem {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The files parse but rustls will not use them together (a key that
    /// does not match the certificate, a CA that is no usable trust anchor).
    #[error("TLS files {files} are not usable together: {message}")]
    Unusable {
        /// The files involved.
        files: String,
        /// rustls' reason.
        message: String,
    },
}

/// A node's TLS material, read and checked at start-up.
#[derive(Debug, Clone)]
pub struct NodeTls {
    identity: Identity,
    ca: Certificate,
}

impl NodeTls {
    /// Read and check the `[tls]` files; `None` when TLS is off.
    /// [`config::Config::validate`] has already refused a partial table.
    pub fn load(tls: &config::Tls) -> Result<Option<NodeTls>, TlsError> {
        let (Some(cert_path), Some(key_path), Some(ca_path)) = (&tls.cert, &tls.key, &tls.ca)
        else {
            return Ok(None);
        };
        let cert = read_certs("tls.cert", cert_path)?;
        let key = read("tls.key", key_path)?;
        if let Err(e) = PrivateKeyDer::from_pem_slice(&key) {
            return Err(TlsError::Pem {
                what: "tls.key",
                path: key_path.clone(),
                message: pem_problem(e, "PRIVATE KEY"),
            });
        }
        let ca = read_certs("tls.ca", ca_path)?;
        let node =
            NodeTls { identity: Identity::from_pem(cert, key), ca: Certificate::from_pem(ca) };
        // Build both sides once now, so that a mismatch is a start-up error
        // naming the files rather than a failure at the first connection.
        let files =
            format!("{}, {}, {}", cert_path.display(), key_path.display(), ca_path.display());
        let unusable = |e: tonic::transport::Error| TlsError::Unusable {
            files: files.clone(),
            message: chain(&e),
        };
        tonic::transport::Server::builder().tls_config(node.server()).map_err(unusable)?;
        Endpoint::from_static("https://127.0.0.1")
            .tls_config(node.peer_client())
            .map_err(unusable)?;
        Ok(Some(node))
    }

    /// The server side: this node's identity, and the cluster CA to check
    /// the client certificates that peers present. Client certificates are
    /// optional so that clients can use server-auth TLS on the same port.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(true)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The node-to-node client side: peers are checked against the cluster
    /// CA (by the host of their advertised address), and this node presents
    /// its own certificate, which the peer's [`PeerAuth`] requires.
    pub fn peer_client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(self.ca.clone()).identity(self.identity.clone())
    }
}

/// A client configuration trusting the CA(s) in `ca_path` (server-auth
/// TLS only, no client certificate): `ctl --tls-ca`, `dev --tls`. `what`
/// names the setting in errors.
pub fn client_config(what: &'static str, ca_path: &Path) -> Result<ClientTlsConfig, TlsError> {
    let ca = read_certs(what, ca_path)?;
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    Endpoint::from_static("https://127.0.0.1").tls_config(config.clone()).map_err(|e| {
        TlsError::Unusable { files: ca_path.display().to_string(), message: chain(&e) }
    })?;
    Ok(config)
}

/// The check in front of the `switchboard.v1.Raft` service (every RPC of
/// it, before the request body is read): with TLS on, the caller must have
/// presented a client certificate.
///
/// Why "presented" is enough: the server's verifier is rustls'
/// `WebPkiClientVerifier` over the cluster CA with unauthenticated clients
/// allowed. That lets a client send *no* certificate, but a certificate
/// that is sent is verified against the CA and a failure aborts the
/// handshake; so any certificate a request carries here chains to the
/// cluster CA. Whoever holds one is a cluster member: the cluster CA must
/// sign node certificates only (README "Security").
#[derive(Debug, Clone, Copy)]
pub struct PeerAuth {
    required: bool,
}

impl PeerAuth {
    /// A check that refuses callers without a certificate when `required`
    /// (TLS on), and lets everything through otherwise (plain-text
    /// clusters behave exactly as before).
    pub fn new(required: bool) -> Self {
        PeerAuth { required }
    }
}

impl tonic::service::Interceptor for PeerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.required && request.peer_certs().is_none_or(|certs| certs.is_empty()) {
            return Err(Status::unauthenticated(PEER_CERT_REQUIRED));
        }
        Ok(request)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { what, path: path.to_owned(), error })
}

/// Read a PEM file of certificates, refusing one without any or with a
/// broken section.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(what, path)?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        if let Err(e) = cert {
            let message = pem_problem(e, "CERTIFICATE");
            return Err(TlsError::Pem { what, path: path.to_owned(), message });
        }
        count += 1;
    }
    if count == 0 {
        let message = pem_problem(rustls_pki_types::pem::Error::NoItemsFound, "CERTIFICATE");
        return Err(TlsError::Pem { what, path: path.to_owned(), message });
    }
    Ok(pem)
}

/// A PEM error in words.
fn pem_problem(e: rustls_pki_types::pem::Error, kind: &str) -> String {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("no PEM {kind} section found (is it the right file, in PEM format?)")
        }
        other => format!("invalid PEM: {other}"),
    }
}

/// An error and its causes as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str, ca: &str) -> config::Tls {
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        config::Tls {
            cert: Some(write("node.pem", cert)),
            key: Some(write("node-key.pem", key)),
            ca: Some(write("ca.pem", ca)),
        }
    }

    #[test]
    fn off_unless_configured() {
        assert!(NodeTls::load(&config::Tls::default()).unwrap().is_none());
    }

    #[test]
    fn good_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = issue::Ca::new("test CA").unwrap();
        let node = ca.issue("node 1", &["127.0.0.1", "localhost"]).unwrap();
        let tls = files(dir.path(), &node.cert_pem, &node.key_pem, &ca.cert_pem());
        assert!(NodeTls::load(&tls).unwrap().is_some());
        client_config("--tls-ca", tls.ca.as_deref().unwrap()).unwrap();
    }

    #[test]
    fn missing_or_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = issue::Ca::new("test CA").unwrap();
        let node = ca.issue("node 1", &["127.0.0.1"]).unwrap();

        let mut tls = files(dir.path(), &node.cert_pem, &node.key_pem, &ca.cert_pem());
        let missing = dir.path().join("nope.pem");
        tls.ca = Some(missing.clone());
        let e = NodeTls::load(&tls).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot read tls.ca file {}: ", missing.display())), "{e}");

        // A key where the certificate belongs.
        let tls = files(dir.path(), &node.key_pem, &node.key_pem, &ca.cert_pem());
        let e = NodeTls::load(&tls).unwrap_err().to_string();
        let cert = dir.path().join("node.pem");
        assert_eq!(
            e,
            format!(
                "tls.cert file {}: no PEM CERTIFICATE section found (is it the right file, in \
                 PEM format?)",
                cert.display()
            )
        );

        // A certificate where the key belongs.
        let tls = files(dir.path(), &node.cert_pem, &node.cert_pem, &ca.cert_pem());
        let e = NodeTls::load(&tls).unwrap_err().to_string();
        assert!(e.starts_with("tls.key file "), "{e}");
        assert!(e.contains("node-key.pem: no PEM PRIVATE KEY section"), "{e}");

        // A truncated CA.
        let broken = ca.cert_pem().replace("-----END CERTIFICATE-----", "");
        let tls = files(dir.path(), &node.cert_pem, &node.key_pem, &broken);
        let e = NodeTls::load(&tls).unwrap_err().to_string();
        assert!(e.starts_with("tls.ca file ") && e.contains("invalid PEM"), "{e}");

        // Another node's key with this node's certificate.
        let other = ca.issue("node 2", &["127.0.0.1"]).unwrap();
        let tls = files(dir.path(), &node.cert_pem, &other.key_pem, &ca.cert_pem());
        let e = NodeTls::load(&tls).unwrap_err().to_string();
        assert!(e.starts_with("TLS files ") && e.contains("not usable together"), "{e}");
    }

    #[test]
    fn peer_auth_refuses_callers_without_a_certificate_only_when_required() {
        use tonic::service::Interceptor;
        let e = PeerAuth::new(true).call(Request::new(())).unwrap_err();
        assert_eq!((e.code(), e.message()), (tonic::Code::Unauthenticated, PEER_CERT_REQUIRED));
        assert!(PeerAuth::new(false).call(Request::new(())).is_ok());
    }
}
