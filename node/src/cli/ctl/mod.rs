//! `switchboard ctl`: an etcdctl-like client for a Switchboard cluster.
//!
//! Every command is one gRPC call (two for `status` in text mode, which
//! also asks the leader, and for `call update` without `--expected-version`,
//! which reads the current version first) against the endpoints given with
//! `--endpoints`. Endpoints are tried in order; a connection failure or an
//! `UNAVAILABLE` answer moves on to the next one, and a leader hint attached
//! to an `UNAVAILABLE` is tried first. Any other error is final.
//!
//! Output is compact text (tables for lists, `key: value` lines otherwise),
//! or with `--json` exactly one JSON document per command (one per line for
//! `watch`). Errors are one line `error: ...` on stderr and exit code 1.
//!
//! # Layout
//!
//! - this file: the command line (clap derive) and [`run`];
//! - `conn`: endpoint parsing, connecting, time-outs and fail-over;
//! - `exec`: one function per command: request, call, pick the output;
//! - `render`: the JSON shaping and the human-readable text.

mod conn;
mod exec;
mod render;

use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};

/// Flags shared by every `ctl` command, then the command.
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// Nodes to talk to, tried in order: host:port[,host:port...].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SWITCHBOARD_ENDPOINTS",
        default_value = "127.0.0.1:7001",
        value_delimiter = ',',
        value_name = "HOST:PORT",
        value_parser = conn::parse_endpoint
    )]
    pub endpoints: Vec<String>,
    /// Connect with TLS, trusting the CA certificate(s) in this PEM file
    /// (the cluster CA, or whichever CA signed the nodes' certificates).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SWITCHBOARD_TLS_CA",
        value_name = "FILE"
    )]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Print one JSON document per command (one per line for `watch`).
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// Time limit of each request, in seconds (fractions allowed) [default:
    /// 5; 120 for `cluster add`, which waits for the new node to catch up].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "SECONDS",
        value_parser = parse_timeout
    )]
    pub timeout: Option<Duration>,
    /// Id of this write, CLIENT:SEQ, so that it is applied at most once
    /// (registrations, calls, gateway reports): the cluster answers a
    /// repeat with the first outcome. By default every invocation makes a
    /// fresh one and reuses it when it retries at another node.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "CLIENT:SEQ",
        value_parser = parse_request_id
    )]
    pub request_id: Option<(String, u64)>,
    /// Bearer token for a cluster that requires one (`token create` prints
    /// it). Prefer the environment variable: a flag shows in `ps`.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SWITCHBOARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = conn::parse_token
    )]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Parse `--request-id CLIENT:SEQ` (the client may itself contain ':').
fn parse_request_id(s: &str) -> Result<(String, u64), String> {
    let (client, seq) = s.rsplit_once(':').ok_or("expected CLIENT:SEQ, e.g. ops-7:42")?;
    if client.is_empty() || client.len() > 128 {
        return Err("the client part must be 1 to 128 bytes".into());
    }
    let seq = seq.parse::<u64>().map_err(|e| format!("SEQ {seq:?}: {e}"))?;
    Ok((client.to_owned(), seq))
}

/// A `ctl` command.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Leader, term and every member with its progress.
    Status,
    /// Register (or re-register) a device's contact under a number.
    Register(RegisterArgs),
    /// Extend a device's registration (the device heartbeat).
    Refresh(RefreshArgs),
    /// Remove a number's bindings: all of them, one device's, or one generation.
    Unregister(UnregisterArgs),
    /// The live bindings of a number, best first.
    Lookup(LookupArgs),
    /// Numbers with their live bindings, in number order (fetched in pages).
    Registrations(RegistrationsArgs),
    /// Route dialled digits: ordered targets and the handling node.
    Route(RouteArgs),
    /// Destination gateways.
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Dial-plan routes.
    #[command(subcommand)]
    Dialplan(DialplanCommand),
    /// Calls in progress.
    #[command(subcommand)]
    Call(CallCommand),
    /// Operations on one node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Cluster membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// SIP digest credentials (REGISTER authentication).
    #[command(subcommand)]
    User(UserCommand),
    /// Bearer tokens for the client API (roles read, write, admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Stream changes, one line per event, until interrupted.
    Watch(WatchArgs),
}

/// Read consistency flag shared by the read commands.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct ReadArgs {
    /// Linearizable read: confirmed with the leader (slower, never stale).
    #[arg(long)]
    pub linearizable: bool,
}

/// Arguments of `register`.
#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// The number (digits, +, *, #).
    pub number: String,
    /// SIP URI of the device.
    pub contact_uri: String,
    /// Device id (default: the contact URI).
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// Lifetime in seconds (default: the server's).
    #[arg(long, value_name = "S")]
    pub expires: Option<u32>,
    /// Preference as a SIP q-value, 0.001..=1 (default 1).
    #[arg(long, value_name = "Q", value_parser = parse_q)]
    pub q: Option<u32>,
    /// Controlling node (default: the node that receives the request).
    #[arg(long, value_name = "N")]
    pub node: Option<u64>,
    /// Device name.
    #[arg(long, value_name = "DEVICE_NAME")]
    pub name: Option<String>,
    /// Device MAC address.
    #[arg(long)]
    pub mac: Option<String>,
}

/// `user put|delete|list`.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Set a SIP user's password. It is read from stdin (one line) and
    /// hashed here: only H(user:realm:password), MD5 and SHA-256, is sent.
    Put(UserPutArgs),
    /// Remove a SIP user's credentials.
    Delete {
        /// The user (the number it registers).
        number: String,
    },
    /// Every SIP user and its realm (never the hashes).
    List(ReadArgs),
}

/// `token create|list|delete`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it, once: it is stored hashed and cannot be
    /// shown again. The first token (made while the API is still open)
    /// should be an admin token: from then on every call needs a token.
    Create {
        /// What it may do: read (lookups, routes, lists, watch, status),
        /// write (also registrations, calls, gateway reports), admin (also
        /// the dial plan, gateways, users, tokens, membership).
        #[arg(long, value_parser = ["read", "write", "admin"])]
        role: String,
        /// Who or what holds it.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime in seconds (default: no expiry).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        ttl: Option<u64>,
    },
    /// Every token: id, role, name, created, expires (never the secret).
    List(ReadArgs),
    /// Delete a token by id (the last admin token stays while others exist).
    Delete {
        /// The token's id (`token list`; the part after `sbt_`).
        id: String,
    },
}

/// Arguments of `user put`.
#[derive(Debug, Clone, Args)]
pub struct UserPutArgs {
    /// The user: the number it registers (digits, +, *, #).
    pub number: String,
    /// The realm to hash the password for (default: `sip.realm` of
    /// `--config`, else "switchboard"); it must be the realm the nodes
    /// challenge with.
    #[arg(long, value_name = "R", value_parser = NonEmptyStringValueParser::new())]
    pub realm: Option<String>,
    /// A node configuration file to take the default realm from.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Read the password from stdin, one line (required: a password is
    /// never taken from the command line, where `ps` and shell history
    /// would show it).
    #[arg(long, required = true)]
    pub password_stdin: bool,
}

/// Arguments of `refresh`.
#[derive(Debug, Clone, Args)]
pub struct RefreshArgs {
    /// The number.
    pub number: String,
    /// The device to refresh.
    #[arg(long, value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    pub device: String,
    /// New lifetime in seconds (default: the server's).
    #[arg(long, value_name = "S")]
    pub expires: Option<u32>,
}

/// Arguments of `unregister`.
#[derive(Debug, Clone, Args)]
pub struct UnregisterArgs {
    /// The number.
    pub number: String,
    /// Only this device (default: every device of the number).
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// Only the binding with this generation.
    #[arg(long, value_name = "G")]
    pub generation: Option<u64>,
}

/// Arguments of `lookup`.
#[derive(Debug, Clone, Args)]
pub struct LookupArgs {
    /// The number.
    pub number: String,
    /// Read consistency.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `registrations`.
#[derive(Debug, Clone, Args)]
pub struct RegistrationsArgs {
    /// Only numbers that start with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Stop after this many numbers (default: all of them).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Read consistency (of each page).
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Arguments of `route`.
#[derive(Debug, Clone, Args)]
pub struct RouteArgs {
    /// Dialled digits.
    pub digits: String,
    /// Node the call arrived at (default: the answering node).
    #[arg(long, value_name = "N")]
    pub origin_node: Option<u64>,
    /// Also say why: every dial-plan pattern considered, every device or
    /// gateway offered or skipped, and why the handling node was chosen.
    #[arg(long)]
    pub explain: bool,
    /// Read consistency.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// `gateway` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum GatewayCommand {
    /// Add or replace a gateway (its status and counters are kept).
    Put(GatewayPutArgs),
    /// Remove a gateway.
    Delete {
        /// Gateway id.
        id: String,
    },
    /// Every gateway with its status.
    List(ReadArgs),
    /// Report how a call attempt through a gateway went.
    Report(GatewayReportArgs),
}

/// Arguments of `gateway put`.
#[derive(Debug, Clone, Args)]
pub struct GatewayPutArgs {
    /// Gateway id.
    pub id: String,
    /// Its address, host:port.
    pub address: String,
    /// Group (trunk) that dial-plan routes select it by.
    #[arg(long, value_name = "G")]
    pub group: String,
    /// Priority; lower is offered first.
    #[arg(long, value_name = "P")]
    pub priority: Option<u32>,
    /// Share among gateways of equal priority (default 1).
    #[arg(long, value_name = "W")]
    pub weight: Option<u32>,
    /// Most concurrent calls (default: no limit).
    #[arg(long, value_name = "C")]
    pub capacity: Option<u32>,
}

/// Arguments of `gateway report`.
#[derive(Debug, Clone, Args)]
pub struct GatewayReportArgs {
    /// Gateway id.
    pub id: String,
    /// How the attempt went.
    pub outcome: Outcome,
    /// After a timeout or failure: how long to keep it out of service, seconds.
    #[arg(long, value_name = "S")]
    pub retry_after: Option<u32>,
}

/// How a call attempt through a gateway went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Outcome {
    /// The gateway answered.
    #[value(name = "ok")]
    Answered,
    /// The gateway did not answer in time.
    Timeout,
    /// The gateway answered with a failure.
    Failure,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Failure => "failure",
        }
    }
}

/// `dialplan` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DialplanCommand {
    /// Add or replace the route with this pattern.
    Put(DialplanPutArgs),
    /// Remove a route.
    Delete {
        /// The route's pattern.
        pattern: String,
    },
    /// Every route, in pattern order.
    List(ReadArgs),
}

/// Arguments of `dialplan put`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["group", "registered"])))]
pub struct DialplanPutArgs {
    /// Pattern: literals 0-9 * # +, X = one digit, trailing @ = the rest.
    pub pattern: String,
    /// Offer the gateways of this group.
    #[arg(long, value_name = "G", value_parser = NonEmptyStringValueParser::new())]
    pub group: Option<String>,
    /// Offer the devices registered under the (rewritten) number.
    #[arg(long)]
    pub registered: bool,
    /// Leading digits to remove.
    #[arg(long, value_name = "N")]
    pub strip: Option<u32>,
    /// Digits to prepend after stripping.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Tie-breaker among equally specific patterns; lower wins.
    #[arg(long, value_name = "P")]
    pub priority: Option<u32>,
}

/// `call` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CallCommand {
    /// Record a new call.
    Start(CallStartArgs),
    /// Change a call's state (compare-and-set on its version).
    Update(CallUpdateArgs),
    /// End a call.
    End(CallEndArgs),
    /// One call.
    Get {
        /// Call id.
        call_id: String,
        /// Read consistency.
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Calls in progress, optionally of one node.
    List {
        /// Only calls owned by this node.
        #[arg(long, value_name = "N")]
        node: Option<u64>,
        /// Read consistency.
        #[command(flatten)]
        read: ReadArgs,
    },
}

/// Arguments of `call start`.
#[derive(Debug, Clone, Args)]
pub struct CallStartArgs {
    /// Unique call id.
    pub call_id: String,
    /// Calling party.
    #[arg(long, value_name = "A")]
    pub from: String,
    /// Called party.
    #[arg(long, value_name = "B")]
    pub to: String,
    /// Owner node (default: the live node with the most room).
    #[arg(long, value_name = "N")]
    pub node: Option<u64>,
    /// Gateway carrying the call.
    #[arg(long, value_name = "G")]
    pub gateway: Option<String>,
}

/// Arguments of `call update`.
#[derive(Debug, Clone, Args)]
pub struct CallUpdateArgs {
    /// Call id.
    pub call_id: String,
    /// New state.
    pub state: CallState,
    /// Version last seen; without it the current version is read first.
    #[arg(long, value_name = "V")]
    pub expected_version: Option<u64>,
}

/// Arguments of `call end`.
#[derive(Debug, Clone, Args)]
pub struct CallEndArgs {
    /// Call id.
    pub call_id: String,
    /// Only if the call is at this version (default: unconditionally).
    #[arg(long, value_name = "V")]
    pub expected_version: Option<u64>,
}

/// A call state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallState {
    /// Being set up.
    Setup,
    /// The called party is alerted.
    Ringing,
    /// Answered.
    Connected,
    /// On hold.
    Held,
    /// Over.
    Released,
}

impl CallState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Setup => "setup",
            CallState::Ringing => "ringing",
            CallState::Connected => "connected",
            CallState::Held => "held",
            CallState::Released => "released",
        }
    }
}

/// `node` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum NodeCommand {
    /// Move calls off a node; a draining leader hands over leadership.
    Drain {
        /// Node id.
        id: u64,
    },
    /// Put a drained node back in service (it takes new calls again).
    Resume {
        /// Node id.
        id: u64,
    },
}

/// `cluster` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Add a node: learner first, voter once caught up (may need a longer --timeout).
    Add {
        /// Node id (> 0).
        id: u64,
        /// Its gRPC address, host:port.
        #[arg(value_parser = conn::parse_endpoint)]
        address: String,
    },
    /// Remove a node from the cluster (its calls are moved off first).
    Remove {
        /// Node id.
        id: u64,
    },
    /// Build a snapshot of the answering node's state now (the first
    /// endpoint that answers; name one node with --endpoints).
    Snapshot,
}

/// Arguments of `watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// First log index wanted (default: only changes from now on).
    #[arg(long, value_name = "I")]
    pub from_index: Option<u64>,
}

/// Run one `ctl` command. The error, if any, is meant to be printed as one
/// line (`{:#}`); nothing has been printed for it yet.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let tls = match &args.tls_ca {
        Some(path) => Some(crate::tls::client_config("--tls-ca", path)?),
        None => None,
    };
    let timeout = args.timeout();
    let conn =
        conn::Conn::new(args.endpoints, timeout).with_tls(tls).with_token(args.token.as_deref())?;
    exec::set_request_id(args.request_id);
    exec::execute(&conn, args.json, args.command).await
}

/// The time limit of a request when `--timeout` is not given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// ... and of `cluster add`: the node answers once the new member has
/// caught up (up to `raft.learner_catch_up_ms`, 60 s by default) and been
/// promoted, which 5 s rarely covers once the cluster holds much state.
const ADD_NODE_TIMEOUT: Duration = Duration::from_secs(120);

impl CtlArgs {
    /// The time limit of each request: `--timeout`, or the command's own
    /// default.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(match self.command {
            CtlCommand::Cluster(ClusterCommand::Add { .. }) => ADD_NODE_TIMEOUT,
            _ => DEFAULT_TIMEOUT,
        })
    }
}

/// `--timeout`: positive seconds, fractions allowed.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err("the timeout must be more than 0 seconds".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} seconds is too long"))
}

/// `--q`: a SIP q-value (0..=1) as the API's thousandths.
///
/// The API reads 0 as "the default" (1.0), so a value that rounds to 0 is
/// refused instead of silently becoming the highest preference.
fn parse_q(s: &str) -> Result<u32, String> {
    let q: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a q-value (a decimal between 0 and 1, e.g. 0.5)"))?;
    if !(0.0..=1.0).contains(&q) {
        return Err(format!("q-value {s} is outside 0..=1"));
    }
    // In range, so the product is within 0.0..=1000.0 and the cast is exact.
    let thousandths = (q * 1000.0).round() as u32;
    if thousandths == 0 {
        return Err(format!(
            "q-value {s} rounds to 0, which the API reads as the default (1.0); use 0.001 or more"
        ));
    }
    Ok(thousandths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The shape `main.rs` gives the command line.
    #[derive(Debug, Parser)]
    #[command(name = "switchboard")]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Ctl(CtlArgs),
    }

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        let argv = ["switchboard", "ctl"].iter().chain(args).copied();
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Top::Ctl(a) => a,
        })
    }

    #[test]
    fn user_put_needs_password_stdin_and_takes_a_realm() {
        let a = parse(&["user", "put", "1000", "--password-stdin", "--realm", "pbx"]).unwrap();
        let CtlCommand::User(UserCommand::Put(p)) = a.command else { panic!("not user put") };
        assert_eq!(
            (p.number.as_str(), p.realm.as_deref(), p.password_stdin),
            ("1000", Some("pbx"), true)
        );
        let e = parse(&["user", "put", "1000"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(parse(&["user", "put", "1000", "--password", "x"]).is_err());
        assert!(parse(&["user", "put", "1000", "--password-stdin", "--realm", ""]).is_err());
        assert!(matches!(
            parse(&["user", "delete", "1000"]).unwrap().command,
            CtlCommand::User(UserCommand::Delete { .. })
        ));
        assert!(matches!(
            parse(&["user", "list", "--json"]).unwrap().command,
            CtlCommand::User(UserCommand::List(_))
        ));
    }

    #[test]
    fn request_ids_are_client_colon_seq() {
        let a = parse(&["--request-id", "ops:7:42", "register", "1000", "sip:a@b"]).unwrap();
        assert_eq!(a.request_id, Some(("ops:7".to_string(), 42)));
        assert!(parse(&["--request-id", "ops", "status"]).is_err());
        assert!(parse(&["--request-id", ":1", "status"]).is_err());
        assert!(parse(&["--request-id", "ops:x", "status"]).is_err());
        assert_eq!(parse(&["status"]).unwrap().request_id, None);
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let a = parse(&["--endpoints", "a:1,b:2", "--json", "status"]).unwrap();
        assert_eq!(a.endpoints, ["a:1", "b:2"]);
        assert!(a.json);
        assert_eq!(a.timeout(), Duration::from_secs(5));
        assert!(matches!(a.command, CtlCommand::Status));

        let a = parse(&["route", "95551234", "--json", "--timeout", "0.5"]).unwrap();
        assert!(a.json);
        assert_eq!(a.timeout(), Duration::from_millis(500));
        let CtlCommand::Route(r) = a.command else { panic!("not route") };
        assert_eq!(r.digits, "95551234");
        assert_eq!(r.origin_node, None);
        assert!(!r.read.linearizable);
    }

    #[test]
    fn bad_endpoints_and_timeouts_are_usage_errors() {
        for bad in ["nohost", "host:", ":7001", "host:99999", "http://h:1", "a:1,", "::1:7001"] {
            let e = parse(&["--endpoints", bad, "status"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
        assert!(parse(&["--endpoints", "[::1]:7001, localhost:7002", "status"]).is_ok());
        for bad in ["0", "-1", "abc", "NaN", "1e300"] {
            assert!(parse(&["--timeout", bad, "status"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn register_parses_every_flag() {
        let a = parse(&[
            "register",
            "1003",
            "sip:1003@10.0.0.3:5060",
            "--device",
            "desk",
            "--expires",
            "600",
            "--q",
            "0.5",
            "--node",
            "2",
            "--name",
            "Desk phone",
            "--mac",
            "aa:bb:cc:dd:ee:ff",
        ])
        .unwrap();
        let CtlCommand::Register(r) = a.command else { panic!("not register") };
        assert_eq!(r.number, "1003");
        assert_eq!(r.contact_uri, "sip:1003@10.0.0.3:5060");
        assert_eq!(r.device.as_deref(), Some("desk"));
        assert_eq!(r.expires, Some(600));
        assert_eq!(r.q, Some(500));
        assert_eq!(r.node, Some(2));
        assert_eq!(r.name.as_deref(), Some("Desk phone"));
        assert_eq!(r.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));

        let e = parse(&["register", "1003", "sip:x", "--q", "1.5"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(parse(&["register", "1003"]).is_err());
    }

    #[test]
    fn q_values_become_thousandths() {
        assert_eq!(parse_q("1"), Ok(1000));
        assert_eq!(parse_q("1.0"), Ok(1000));
        assert_eq!(parse_q("0.5"), Ok(500));
        assert_eq!(parse_q("0.001"), Ok(1));
        assert_eq!(parse_q("0.1234"), Ok(123));
        assert_eq!(parse_q("0.9996"), Ok(1000));
        assert_eq!(parse_q(" .25 "), Ok(250));
        for bad in ["1.001", "-0.1", "2", "abc", "", "NaN", "inf", "0", "0.0004"] {
            assert!(parse_q(bad).is_err(), "{bad}");
        }
        assert!(parse_q("1.5").unwrap_err().contains("outside 0..=1"));
        assert!(parse_q("0").unwrap_err().contains("default"));
    }

    #[test]
    fn dialplan_put_needs_exactly_one_of_group_or_registered() {
        let a = parse(&["dialplan", "put", "9@", "--group", "pstn", "--strip", "1"]).unwrap();
        let CtlCommand::Dialplan(DialplanCommand::Put(p)) = a.command else {
            panic!("not dialplan put")
        };
        assert_eq!(p.pattern, "9@");
        assert_eq!(p.group.as_deref(), Some("pstn"));
        assert!(!p.registered);
        assert_eq!(p.strip, Some(1));

        let a = parse(&["dialplan", "put", "1XXX", "--registered", "--priority", "3"]).unwrap();
        let CtlCommand::Dialplan(DialplanCommand::Put(p)) = a.command else {
            panic!("not dialplan put")
        };
        assert_eq!(p.group, None);
        assert!(p.registered);
        assert_eq!(p.priority, Some(3));

        let both = parse(&["dialplan", "put", "1XXX", "--registered", "--group", "g"]);
        assert_eq!(both.unwrap_err().kind(), clap::error::ErrorKind::ArgumentConflict);
        let neither = parse(&["dialplan", "put", "1XXX"]);
        assert_eq!(neither.unwrap_err().kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(parse(&["dialplan", "put", "1XXX", "--group", ""]).is_err());
    }

    #[test]
    fn gateway_call_and_cluster_commands_parse() {
        let a = parse(&["gateway", "report", "gw-east", "timeout", "--retry-after", "30"]).unwrap();
        let CtlCommand::Gateway(GatewayCommand::Report(r)) = a.command else {
            panic!("not gateway report")
        };
        assert_eq!((r.id.as_str(), r.outcome), ("gw-east", Outcome::Timeout));
        assert_eq!(r.retry_after, Some(30));
        let a = parse(&["gateway", "report", "gw", "ok"]).unwrap();
        let CtlCommand::Gateway(GatewayCommand::Report(r)) = a.command else {
            panic!("not gateway report")
        };
        assert_eq!(r.outcome.as_str(), "ok");
        assert!(parse(&["gateway", "report", "gw", "maybe"]).is_err());
        assert!(parse(&["gateway", "put", "gw", "10.0.0.1:5060"]).is_err()); // --group missing

        let a = parse(&["call", "update", "c1", "connected", "--expected-version", "2"]).unwrap();
        let CtlCommand::Call(CallCommand::Update(u)) = a.command else { panic!("not call update") };
        assert_eq!(u.state, CallState::Connected);
        assert_eq!(u.expected_version, Some(2));
        assert!(parse(&["call", "update", "c1", "dancing"]).is_err());

        let a = parse(&["call", "start", "c1", "--from", "1000", "--to", "1001"]).unwrap();
        let CtlCommand::Call(CallCommand::Start(s)) = a.command else { panic!("not call start") };
        assert_eq!((s.from.as_str(), s.to.as_str()), ("1000", "1001"));
        assert!(parse(&["call", "start", "c1", "--from", "1000"]).is_err());

        let a = parse(&["call", "list", "--node", "3", "--linearizable"]).unwrap();
        assert!(matches!(
            a.command,
            CtlCommand::Call(CallCommand::List {
                node: Some(3),
                read: ReadArgs { linearizable: true }
            })
        ));

        let a = parse(&["cluster", "add", "4", "127.0.0.1:7004"]).unwrap();
        assert!(matches!(a.command, CtlCommand::Cluster(ClusterCommand::Add { id: 4, .. })));
        assert_eq!(a.timeout(), ADD_NODE_TIMEOUT, "adding a node waits for it to catch up");
        let a = parse(&["cluster", "add", "4", "127.0.0.1:7004", "--timeout", "9"]).unwrap();
        assert_eq!(a.timeout(), Duration::from_secs(9));
        assert!(parse(&["cluster", "add", "4", "not-an-address"]).is_err());
        assert!(parse(&["node", "drain", "x"]).is_err());

        let a = parse(&["watch", "--from-index", "17"]).unwrap();
        assert!(matches!(a.command, CtlCommand::Watch(WatchArgs { from_index: Some(17) })));
    }
}
