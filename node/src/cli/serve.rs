//! `switchboard serve`: run one node from a TOML file and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::config::Config;

/// Flags of `switchboard serve`; each overrides the config file.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML configuration file (every key optional; see the README).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// This node's id (> 0).
    #[arg(long)]
    pub id: Option<u64>,
    /// gRPC listen address for clients and peers.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address others reach this node at (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Data directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Bootstrap membership `1=host:port,2=host:port,...` (used only on an empty data directory).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Prometheus metrics address (host:port).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Status page address (host:port): an HTML page and JSON endpoints
    /// (/api/status, /api/events) showing this node's view of the cluster.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// SIP listen address (host:port), UDP and TCP.
    #[arg(long)]
    pub sip: Option<SocketAddr>,
    /// This node's call capacity (0 = no limit).
    #[arg(long)]
    pub capacity: Option<u32>,
    /// TLS: this node's certificate (PEM), presented to clients and peers.
    /// Needs --tls-key and --tls-ca too.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// TLS: the cluster CA (PEM); peers must present a certificate it signed.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl ServeArgs {
    /// The configuration: file (if any), then flags on top.
    pub fn config(&self) -> Result<Config, crate::config::ConfigError> {
        let mut c = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        if let Some(v) = self.id {
            c.id = v;
        }
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.advertise {
            c.advertise = Some(v.clone());
        }
        if let Some(v) = &self.data {
            c.data = v.clone();
        }
        if let Some(v) = &self.initial_cluster {
            c.initial_cluster = Some(v.clone());
        }
        if let Some(v) = self.metrics {
            c.metrics = Some(v);
        }
        if let Some(v) = self.http {
            c.http = Some(v);
        }
        if let Some(v) = self.sip {
            c.sip.listen = Some(v);
        }
        if let Some(v) = self.capacity {
            c.calls.capacity = v;
        }
        if let Some(v) = &self.tls_cert {
            c.tls.cert = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            c.tls.key = Some(v.clone());
        }
        if let Some(v) = &self.tls_ca {
            c.tls.ca = Some(v.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

/// Run `serve` until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    crate::run(config, listener, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
