//! One function per `ctl` command: build the request, call the cluster
//! (with fail-over, see `conn`), pick the output and print it.

use std::io::Write;

use anyhow::Context;
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::calls_client::CallsClient;
use switchboard_proto::v1::cluster_client::ClusterClient;
use switchboard_proto::v1::dial_plan_client::DialPlanClient;
use switchboard_proto::v1::events_client::EventsClient;
use switchboard_proto::v1::gateways_client::GatewaysClient;
use switchboard_proto::v1::registrar_client::RegistrarClient;
use switchboard_proto::v1::router_client::RouterClient;
use switchboard_proto::v1::tokens_client::TokensClient;
use switchboard_proto::v1::users_client::UsersClient;

use super::conn::{describe, parse_endpoint, Conn, MAX_MESSAGE};
use super::render::{self, join, json, lines, meta_pairs, now_ms, MembersFrom};
use super::{
    CallCommand, ClusterCommand, CtlCommand, DialplanCommand, GatewayCommand, LookupArgs,
    NodeCommand, ReadArgs, RefreshArgs, RegisterArgs, RegistrationsArgs, RouteArgs, TokenCommand,
    UnregisterArgs, UserCommand, UserPutArgs,
};
use crate::sip::digest::{ha1, Algorithm};

/// One unary call with fail-over: `rpc!(conn, Client.method(request))`.
/// The request is cloned for each endpoint tried and carries the time-out.
macro_rules! rpc {
    ($conn:expr, $client:ident . $method:ident ($req:expr)) => {{
        let req = $req;
        let conn: &Conn = $conn;
        conn.call(move |channel, timeout| {
            let mut request = tonic::Request::new(req.clone());
            request.set_timeout(timeout);
            conn.authorize(&mut request);
            async move {
                $client::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .$method(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }};
}

/// The wire consistency for `--linearizable`.
fn consistency(read: ReadArgs) -> i32 {
    if read.linearizable {
        pb::Consistency::Linearizable as i32
    } else {
        pb::Consistency::Local as i32
    }
}

/// Write `text` and a newline to stdout. `Ok(false)` when the reader has
/// gone (broken pipe): not an error, there is just nobody left to tell.
fn emit(text: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// This invocation's request id (see `--request-id`): one per process, so
/// a static; every write the invocation makes carries it, and so do the
/// retries `Conn::call` makes at other nodes.
static REQUEST_ID: std::sync::OnceLock<pb::RequestId> = std::sync::OnceLock::new();

/// Fix this invocation's request id: the given one, or a fresh one.
pub fn set_request_id(given: Option<(String, u64)>) {
    let id = given.map_or_else(
        || {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            pb::RequestId { client: format!("ctl-{}-{nanos:x}", std::process::id()), seq: 1 }
        },
        |(client, seq)| pb::RequestId { client, seq },
    );
    let _ = REQUEST_ID.set(id);
}

/// The request id writes carry (`None` before `set_request_id`).
fn request_id() -> Option<pb::RequestId> {
    REQUEST_ID.get().cloned()
}

/// Run `command` and print its output.
pub async fn execute(conn: &Conn, as_json: bool, command: CtlCommand) -> anyhow::Result<()> {
    let now = now_ms();
    let text = match command {
        CtlCommand::Watch(w) => return watch(conn, as_json, w.from_index.unwrap_or(0)).await,
        CtlCommand::Status => status(conn, as_json).await?,
        CtlCommand::Register(a) => register(conn, as_json, a, now).await?,
        CtlCommand::Refresh(a) => refresh(conn, as_json, a, now).await?,
        CtlCommand::Unregister(a) => unregister(conn, as_json, a, now).await?,
        CtlCommand::Lookup(a) => lookup(conn, as_json, a, now).await?,
        CtlCommand::Registrations(a) => registrations(conn, as_json, a, now).await?,
        CtlCommand::Route(a) => route(conn, as_json, a).await?,
        CtlCommand::Gateway(g) => gateway(conn, as_json, g, now).await?,
        CtlCommand::Dialplan(d) => dialplan(conn, as_json, d).await?,
        CtlCommand::Call(c) => call(conn, as_json, c, now).await?,
        CtlCommand::Node(n) => node(conn, as_json, n).await?,
        CtlCommand::Cluster(c) => cluster(conn, as_json, c).await?,
        CtlCommand::User(u) => user(conn, as_json, u).await?,
        CtlCommand::Token(t) => token(conn, as_json, t, now).await?,
    };
    emit(&text)?;
    Ok(())
}

/// `register`.
async fn register(conn: &Conn, as_json: bool, a: RegisterArgs, now: u64) -> anyhow::Result<String> {
    let req = pb::RegisterRequest {
        number: a.number,
        device_id: a.device.unwrap_or_default(),
        contact: a.contact_uri,
        device_name: a.name.unwrap_or_default(),
        mac: a.mac.unwrap_or_default(),
        node_id: a.node.unwrap_or(0),
        q: a.q.unwrap_or(0),
        expires_s: a.expires.unwrap_or(0),
        request_id: request_id(),
    };
    let number = req.number.clone();
    let r = rpc!(conn, RegistrarClient.register(req))?;
    registered(as_json, &number, &r, now)
}

/// `refresh`.
async fn refresh(conn: &Conn, as_json: bool, a: RefreshArgs, now: u64) -> anyhow::Result<String> {
    let req = pb::RefreshRequest {
        number: a.number,
        device_id: a.device,
        generation: 0,
        expires_s: a.expires.unwrap_or(0),
        request_id: request_id(),
    };
    let number = req.number.clone();
    let r = rpc!(conn, RegistrarClient.refresh(req))?;
    registered(as_json, &number, &r, now)
}

/// `unregister`.
async fn unregister(
    conn: &Conn,
    as_json: bool,
    a: UnregisterArgs,
    now: u64,
) -> anyhow::Result<String> {
    let req = pb::UnregisterRequest {
        number: a.number,
        device_id: a.device.unwrap_or_default(),
        generation: a.generation.unwrap_or(0),
        request_id: request_id(),
    };
    let r = rpc!(conn, RegistrarClient.unregister(req))?;
    if as_json {
        return json(&r);
    }
    let mut pairs = vec![("removed", r.removed.len().to_string())];
    pairs.extend(meta_pairs(r.meta.as_ref()));
    let mut parts = vec![lines(&pairs)];
    if !r.removed.is_empty() {
        parts.push(render::bindings_table(&r.removed, now));
    }
    Ok(join(&parts))
}

/// `lookup`.
async fn lookup(conn: &Conn, as_json: bool, a: LookupArgs, now: u64) -> anyhow::Result<String> {
    let req = pb::LookupRequest { number: a.number, consistency: consistency(a.read) };
    let r = rpc!(conn, RegistrarClient.lookup(req))?;
    if as_json {
        return json(&r);
    }
    if r.bindings.is_empty() && !r.known {
        return Ok("no bindings: the number is not registered".into());
    }
    Ok(render::bindings_table(&r.bindings, now))
}

/// `registrations`.
///
/// Pages through the list (each page its own read at the asked
/// consistency); with `--limit`, stops there and the JSON carries the
/// token to go on from.
async fn registrations(
    conn: &Conn,
    as_json: bool,
    a: RegistrationsArgs,
    now: u64,
) -> anyhow::Result<String> {
    let limit = a.limit.unwrap_or(usize::MAX);
    let mut all = pb::ListRegistrationsResponse::default();
    while all.registrations.len() < limit {
        let want = (limit - all.registrations.len()).min(PAGE);
        let req = pb::ListRegistrationsRequest {
            consistency: consistency(a.read),
            page_size: want as u32,
            page_token: std::mem::take(&mut all.next_page_token),
            prefix: a.prefix.clone(),
        };
        let page = rpc!(conn, RegistrarClient.list_registrations(req))?;
        all.registrations.extend(page.registrations);
        all.applied_index = page.applied_index;
        all.next_page_token = page.next_page_token;
        if all.next_page_token.is_empty() {
            break;
        }
    }
    if as_json {
        return json(&all);
    }
    Ok(render::registrations_table(&all.registrations, now))
}

/// Numbers asked for per page by `registrations`.
const PAGE: usize = 5_000;

/// `route`.
async fn route(conn: &Conn, as_json: bool, a: RouteArgs) -> anyhow::Result<String> {
    let req = pb::RouteRequest {
        digits: a.digits,
        origin_node: a.origin_node.unwrap_or(0),
        consistency: consistency(a.read),
        explain: a.explain,
    };
    let r = rpc!(conn, RouterClient.route(req))?;
    // A route failure (404, 480, 503, ...) is the router's answer to the
    // question asked, not a failure of the command: the request reached the
    // cluster and was answered. So it is printed on stdout and the exit
    // code stays 0, as for a lookup that finds nothing; scripts read the
    // `failure` field (or the SIP code in the text).
    match (as_json, &r.explanation) {
        (true, _) => render::route_json(&r),
        (false, Some(why)) => {
            Ok(format!("{}\n{}", render::route_text(&r), render::explanation_text(why)))
        }
        (false, None) => Ok(render::route_text(&r)),
    }
}

/// `node drain|resume`.
async fn node(conn: &Conn, as_json: bool, command: NodeCommand) -> anyhow::Result<String> {
    match command {
        NodeCommand::Drain { id } => {
            let r = rpc!(conn, ClusterClient.drain_node(pb::DrainNodeRequest { id }))?;
            if as_json {
                return json(&r);
            }
            let mut pairs = vec![("moved calls", r.moved_calls.to_string())];
            pairs.extend(meta_pairs(r.meta.as_ref()));
            Ok(lines(&pairs))
        }
        NodeCommand::Resume { id } => {
            let r = rpc!(conn, ClusterClient.resume_node(pb::ResumeNodeRequest { id }))?;
            if as_json {
                return json(&r);
            }
            Ok(lines(&meta_pairs(r.meta.as_ref())))
        }
    }
}

/// `cluster add|remove`.
async fn cluster(conn: &Conn, as_json: bool, command: ClusterCommand) -> anyhow::Result<String> {
    match command {
        ClusterCommand::Add { id, address } => {
            let req = pb::AddNodeRequest { id, addr: address };
            let r = rpc!(conn, ClusterClient.add_node(req))?;
            membership_changed(as_json, &r, r.status.as_ref(), format!("added node {id}"))
        }
        ClusterCommand::Remove { id } => {
            let r = rpc!(conn, ClusterClient.remove_node(pb::RemoveNodeRequest { id }))?;
            membership_changed(as_json, &r, r.status.as_ref(), format!("removed node {id}"))
        }
        ClusterCommand::Snapshot => {
            let r = rpc!(conn, ClusterClient.snapshot(pb::SnapshotRequest {}))?;
            if as_json {
                return json(&r);
            }
            Ok(lines(&[
                ("node", r.node_id.to_string()),
                ("index", r.index.to_string()),
                ("bytes", r.bytes.to_string()),
                ("build_ms", r.build_ms.to_string()),
                ("view_us", r.view_us.to_string()),
            ]))
        }
    }
}

/// Output of register and refresh: the binding as stored.
fn registered(
    as_json: bool,
    number: &str,
    r: &pb::RegisterResponse,
    now: u64,
) -> anyhow::Result<String> {
    if as_json {
        return json(r);
    }
    let mut pairs =
        r.binding.as_ref().map(|b| render::binding_pairs(number, b, now)).unwrap_or_default();
    pairs.extend(meta_pairs(r.meta.as_ref()));
    Ok(lines(&pairs))
}

/// Output of cluster add/remove: the status after the change.
fn membership_changed<T: serde::Serialize>(
    as_json: bool,
    response: &T,
    status: Option<&pb::StatusResponse>,
    done: String,
) -> anyhow::Result<String> {
    if as_json {
        return json(response);
    }
    let status = status.map(|s| render::status_text(s, MembersFrom::Answer)).unwrap_or_default();
    Ok(join(&[format!("ok: {done}"), status]))
}

/// `gateway put|delete|list|report`.
async fn gateway(
    conn: &Conn,
    as_json: bool,
    command: GatewayCommand,
    now: u64,
) -> anyhow::Result<String> {
    match command {
        GatewayCommand::Put(a) => {
            let req = pb::PutGatewayRequest {
                id: a.id,
                group: a.group,
                address: a.address,
                priority: a.priority.unwrap_or(0),
                weight: a.weight.unwrap_or(0),
                capacity: a.capacity.unwrap_or(0),
            };
            let id = req.id.clone();
            let r = rpc!(conn, GatewaysClient.put_gateway(req))?;
            ack(as_json, &r, format!("gateway {id} stored"), r.meta.as_ref())
        }
        GatewayCommand::Delete { id } => {
            let req = pb::DeleteGatewayRequest { id: id.clone() };
            let r = rpc!(conn, GatewaysClient.delete_gateway(req))?;
            ack(as_json, &r, format!("gateway {id} deleted"), r.meta.as_ref())
        }
        GatewayCommand::List(read) => {
            let req = pb::ListGatewaysRequest { consistency: consistency(read) };
            let r = rpc!(conn, GatewaysClient.list_gateways(req))?;
            if as_json {
                return json(&r);
            }
            Ok(render::gateways_table(&r.gateways, now))
        }
        GatewayCommand::Report(a) => {
            let req = pb::ReportOutcomeRequest {
                id: a.id,
                outcome: a.outcome.as_str().into(),
                retry_after_s: a.retry_after.unwrap_or(0),
                request_id: request_id(),
            };
            let r = rpc!(conn, GatewaysClient.report_outcome(req))?;
            if as_json {
                return json(&r);
            }
            let mut pairs =
                r.gateway.as_ref().map(|g| render::gateway_pairs(g, now)).unwrap_or_default();
            pairs.push(("status changed", if r.changed { "yes" } else { "no" }.into()));
            pairs.extend(meta_pairs(r.meta.as_ref()));
            Ok(lines(&pairs))
        }
    }
}

/// `dialplan put|delete|list`.
async fn dialplan(conn: &Conn, as_json: bool, command: DialplanCommand) -> anyhow::Result<String> {
    match command {
        DialplanCommand::Put(a) => {
            let route = pb::DialRoute {
                pattern: a.pattern,
                priority: a.priority.unwrap_or(0),
                // Empty group = "registered number"; clap guarantees that
                // exactly one of --group and --registered was given.
                group: a.group.unwrap_or_default(),
                strip: a.strip.unwrap_or(0),
                prefix: a.prefix.unwrap_or_default(),
            };
            let pattern = route.pattern.clone();
            let req = pb::PutRouteRequest { route: Some(route) };
            let r = rpc!(conn, DialPlanClient.put_route(req))?;
            ack(as_json, &r, format!("route {pattern} stored"), r.meta.as_ref())
        }
        DialplanCommand::Delete { pattern } => {
            let req = pb::DeleteRouteRequest { pattern: pattern.clone() };
            let r = rpc!(conn, DialPlanClient.delete_route(req))?;
            ack(as_json, &r, format!("route {pattern} deleted"), r.meta.as_ref())
        }
        DialplanCommand::List(read) => {
            let req = pb::ListRoutesRequest { consistency: consistency(read) };
            let r = rpc!(conn, DialPlanClient.list_routes(req))?;
            if as_json {
                return json(&r);
            }
            Ok(render::routes_table(&r.routes))
        }
    }
}

/// `user put|delete|list`.
async fn user(conn: &Conn, as_json: bool, command: UserCommand) -> anyhow::Result<String> {
    match command {
        UserCommand::Put(a) => {
            let realm = put_realm(&a)?;
            let password = read_password(&mut std::io::stdin().lock())?;
            let req = pb::PutUserRequest {
                ha1_md5: ha1(Algorithm::Md5, &a.number, &realm, &password),
                ha1_sha256: ha1(Algorithm::Sha256, &a.number, &realm, &password),
                user: a.number,
                realm,
            };
            let done = format!("user {} stored for realm {}", req.user, req.realm);
            let r = rpc!(conn, UsersClient.put_user(req))?;
            ack(as_json, &r, done, r.meta.as_ref())
        }
        UserCommand::Delete { number } => {
            let req = pb::DeleteUserRequest { user: number.clone() };
            let r = rpc!(conn, UsersClient.delete_user(req))?;
            ack(as_json, &r, format!("user {number} deleted"), r.meta.as_ref())
        }
        UserCommand::List(read) => {
            let req = pb::ListUsersRequest { consistency: consistency(read) };
            let r = rpc!(conn, UsersClient.list_users(req))?;
            if as_json {
                return json(&r);
            }
            Ok(render::users_table(&r.users))
        }
    }
}

/// `token`.
async fn token(
    conn: &Conn,
    as_json: bool,
    command: TokenCommand,
    now: u64,
) -> anyhow::Result<String> {
    match command {
        TokenCommand::Create { role, name, ttl } => {
            let req = pb::CreateTokenRequest { role, name, ttl_s: ttl.unwrap_or(0) };
            let r = rpc!(conn, TokensClient.create_token(req))?;
            if as_json {
                return json(&r);
            }
            // The token alone on stdout (`TOKEN=$(switchboard ctl token
            // create ...)`); the advice on stderr.
            let info = r.info.unwrap_or_default();
            eprintln!(
                "token {} with role {}: shown this once, store it now; use it with --token or \
                 SWITCHBOARD_TOKEN",
                info.id, info.role
            );
            Ok(r.token)
        }
        TokenCommand::List(read) => {
            let req = pb::ListTokensRequest { consistency: consistency(read) };
            let r = rpc!(conn, TokensClient.list_tokens(req))?;
            if as_json {
                return json(&r);
            }
            Ok(render::tokens_table(&r.tokens, now))
        }
        TokenCommand::Delete { id } => {
            let req = pb::DeleteTokenRequest { id: id.clone() };
            let r = rpc!(conn, TokensClient.delete_token(req))?;
            ack(as_json, &r, format!("token {id} deleted"), r.meta.as_ref())
        }
    }
}

/// The realm `user put` hashes for: `--realm`, else the configuration
/// file's, else the default.
fn put_realm(a: &UserPutArgs) -> anyhow::Result<String> {
    if let Some(r) = &a.realm {
        return Ok(r.clone());
    }
    match &a.config {
        Some(path) => Ok(crate::config::Config::from_file(path)?.sip.realm),
        None => Ok(crate::config::DEFAULT_REALM.to_owned()),
    }
}

/// One line of `input` (the trailing newline removed) as the password;
/// refuses end of input and an empty line with a message that says so.
fn read_password(input: &mut impl std::io::BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = input.read_line(&mut line).context("cannot read the password from stdin")?;
    if n == 0 {
        anyhow::bail!("no password on stdin (it is empty or closed); pipe one line, e.g. `printf '%s\\n' \"$PW\" | switchboard ctl user put ...`");
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!("empty password refused");
    }
    Ok(password.to_owned())
}

/// Output of a write with nothing to show but where it was committed.
fn ack<T: serde::Serialize>(
    as_json: bool,
    response: &T,
    done: String,
    meta: Option<&pb::WriteMeta>,
) -> anyhow::Result<String> {
    if as_json {
        return json(response);
    }
    let mut pairs = vec![("ok", super::conn::one_line(&done))];
    pairs.extend(meta_pairs(meta));
    Ok(lines(&pairs))
}

/// `call start|update|end|get|list`.
async fn call(
    conn: &Conn,
    as_json: bool,
    command: CallCommand,
    now: u64,
) -> anyhow::Result<String> {
    let r = match command {
        CallCommand::Start(a) => {
            let req = pb::StartCallRequest {
                call_id: a.call_id,
                from: a.from,
                to: a.to,
                node_id: a.node.unwrap_or(0),
                gateway: a.gateway.unwrap_or_default(),
                request_id: request_id(),
            };
            rpc!(conn, CallsClient.start_call(req))?
        }
        CallCommand::Update(a) => {
            // The server always compares versions on an update. Without
            // --expected-version, compare against the version read just
            // now (linearizably): a concurrent change still wins and this
            // update fails with "failed precondition" instead of
            // overwriting it.
            let expected_version = match a.expected_version {
                Some(v) => v,
                None => {
                    let req = pb::GetCallRequest {
                        call_id: a.call_id.clone(),
                        consistency: pb::Consistency::Linearizable as i32,
                    };
                    let current = rpc!(conn, CallsClient.get_call(req))?;
                    the_call(current)?.version
                }
            };
            let req = pb::UpdateCallRequest {
                call_id: a.call_id,
                state: a.state.as_str().into(),
                expected_version,
                request_id: request_id(),
            };
            rpc!(conn, CallsClient.update_call(req))?
        }
        CallCommand::End(a) => {
            let req = pb::EndCallRequest {
                call_id: a.call_id,
                expected_version: a.expected_version.unwrap_or(0),
                request_id: request_id(),
            };
            rpc!(conn, CallsClient.end_call(req))?
        }
        CallCommand::Get { call_id, read } => {
            let req = pb::GetCallRequest { call_id, consistency: consistency(read) };
            rpc!(conn, CallsClient.get_call(req))?
        }
        CallCommand::List { node, read } => {
            let req =
                pb::ListCallsRequest { node_id: node.unwrap_or(0), consistency: consistency(read) };
            let r = rpc!(conn, CallsClient.list_calls(req))?;
            if as_json {
                return json(&r);
            }
            return Ok(render::calls_table(&r.calls, now));
        }
    };
    let meta = r.meta;
    let call = the_call(r)?;
    if as_json {
        return json(&call);
    }
    let mut pairs = render::call_pairs(&call, now);
    pairs.extend(meta_pairs(meta.as_ref()));
    Ok(lines(&pairs))
}

/// The call in a call response; its absence is the server's bug, reported.
fn the_call(r: pb::CallResponse) -> anyhow::Result<pb::Call> {
    r.call.context("internal error: the server answered without the call")
}

/// `status`: the answering node's view; in text, also the leader's view of
/// the members when the answering node is not the leader.
async fn status(conn: &Conn, as_json: bool) -> anyhow::Result<String> {
    let answer = rpc!(conn, ClusterClient.status(pb::StatusRequest {}))?;
    if as_json {
        return json(&answer);
    }
    if answer.leader_id == 0 || answer.leader_id == answer.node_id {
        return Ok(render::status_text(&answer, MembersFrom::Answer));
    }
    let leader_addr =
        answer.members.iter().find(|m| m.id == answer.leader_id).map(|m| m.addr.clone());
    let leader = match leader_addr {
        None => Err(format!("leader {} is not in the members list", answer.leader_id)),
        Some(addr) => match parse_endpoint(&addr) {
            Err(e) => Err(e),
            Ok(addr) => {
                let only = conn.only(addr);
                rpc!(&only, ClusterClient.status(pb::StatusRequest {}))
                    .map_err(|e| format!("{e:#}"))
            }
        },
    };
    Ok(match &leader {
        Ok(view) => render::status_text(&answer, MembersFrom::Leader(view)),
        Err(why) => render::status_text(&answer, MembersFrom::LeaderFailed(why)),
    })
}

/// `watch`: one line per event until the stream ends, fails, the reader
/// goes away, or Ctrl-C.
async fn watch(conn: &Conn, as_json: bool, from_index: u64) -> anyhow::Result<()> {
    let mut stream = conn
        .call(move |channel, _timeout| async move {
            // No time-out on the request: it would end the stream. The
            // time-out still bounds the wait for the stream to open.
            let mut request = tonic::Request::new(pb::WatchRequest { from_index });
            conn.authorize(&mut request);
            EventsClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .watch(request)
                .await
                .map(tonic::Response::into_inner)
        })
        .await?;
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handling here: run until the stream ends instead.
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(interrupted);
    loop {
        let next = tokio::select! {
            next = stream.message() => next,
            () = &mut interrupted => return Ok(()),
        };
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => anyhow::bail!("unavailable: the server ended the watch stream"),
            Err(status) => anyhow::bail!("{}", describe(&status)),
        };
        let line = if as_json { json(&event)? } else { render::event_text(&event) };
        if !emit(&line)? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod user_tests {
    use super::*;

    #[test]
    fn a_password_is_one_line_and_never_empty() {
        let read = |s: &str| read_password(&mut s.as_bytes());
        assert_eq!(read("s3cret\n").unwrap(), "s3cret");
        assert_eq!(read("s3cret\r\nignored\n").unwrap(), "s3cret");
        assert_eq!(read("no newline").unwrap(), "no newline");
        assert_eq!(read(" spaces kept \n").unwrap(), " spaces kept ");
        let e = read("").unwrap_err().to_string();
        assert!(e.contains("no password on stdin"), "{e}");
        for empty in ["\n", "\r\n"] {
            let e = read(empty).unwrap_err().to_string();
            assert!(e.contains("empty password refused"), "{e}");
        }
    }
}
