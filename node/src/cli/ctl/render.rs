//! What `ctl` prints: the JSON documents that are not plain serialisations
//! of a response (route, call), and every human-readable rendering.
//!
//! Human text is compact: a table for lists, `key: value` lines otherwise.
//! Times are shown relative to this machine's clock ("in 59m", "12s ago");
//! the JSON keeps the raw milliseconds. Every string that came from the
//! server goes through [`one_line`] so a stray control character cannot
//! break a line or a table.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use switchboard_proto::v1 as pb;

use super::conn::one_line;

/// `value` as one compact JSON document.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(value)?)
}

/// Milliseconds since the Unix epoch on this machine (0 if the clock is
/// before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The `--json` document of a route answer: `{"targets":[...],"handling_node":N}`
/// on success, `{"failure":{"code":C,"reason":"..."}}` when it cannot be routed.
pub fn route_json(r: &pb::RouteResponse) -> anyhow::Result<String> {
    #[derive(Serialize)]
    struct Routed<'a> {
        targets: &'a [pb::Target],
        handling_node: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        explanation: Option<&'a pb::RouteExplanation>,
    }
    #[derive(Serialize)]
    struct Failed<'a> {
        failure: &'a pb::RouteFailure,
        #[serde(skip_serializing_if = "Option::is_none")]
        explanation: Option<&'a pb::RouteExplanation>,
    }
    let explanation = r.explanation.as_ref();
    match &r.failure {
        Some(failure) => json(&Failed { failure, explanation }),
        None => json(&Routed { targets: &r.targets, handling_node: r.handling_node, explanation }),
    }
}

/// A route answer as text: numbered targets and the handling node, or the
/// SIP failure (`503 Service Unavailable: <reason>`).
pub fn route_text(r: &pb::RouteResponse) -> String {
    if let Some(f) = &r.failure {
        let mut line = match sip_reason(f.code) {
            Some(phrase) => format!("{} {phrase}", f.code),
            None => f.code.to_string(),
        };
        let reason = one_line(&f.reason);
        if !reason.is_empty() {
            line = format!("{line}: {reason}");
        }
        return line;
    }
    let mut out = String::new();
    if r.targets.is_empty() {
        out.push_str("no targets\n");
    }
    for (i, t) in r.targets.iter().enumerate() {
        out.push_str(&format!(
            "{}. {} ({} {})\n",
            i + 1,
            one_line(&t.uri),
            one_line(&t.kind),
            one_line(&t.id)
        ));
    }
    out.push_str(&format!("handling node: {}", r.handling_node));
    out
}

/// A route's explanation as text: the patterns, then the candidates, then
/// the handling node, one reason per line.
pub fn explanation_text(why: &pb::RouteExplanation) -> String {
    let mut out = String::from("dial plan:\n");
    if why.patterns.is_empty() {
        out.push_str("  (nothing considered)\n");
    }
    for p in &why.patterns {
        out.push_str(&format!(
            "  {:<10} {:<16} {}\n",
            one_line(&p.verdict),
            one_line(&p.pattern),
            one_line(&p.reason)
        ));
    }
    if !why.digits.is_empty() {
        out.push_str(&format!("digits after strip/prefix: {}\n", one_line(&why.digits)));
    }
    if !why.candidates.is_empty() {
        out.push_str("candidates:\n");
    }
    for c in &why.candidates {
        let place = match c.position {
            0 => "-".to_owned(),
            n => n.to_string(),
        };
        out.push_str(&format!(
            "  {place:>2}. {} {:<16} {}\n",
            one_line(&c.kind),
            one_line(&c.id),
            one_line(&c.reason)
        ));
    }
    if !why.handling.is_empty() {
        out.push_str(&format!("handling: {}\n", one_line(&why.handling)));
    }
    out.trim_end().to_owned()
}

/// The reason phrase of the SIP codes a route failure uses.
fn sip_reason(code: u32) -> Option<&'static str> {
    Some(match code {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        484 => "Address Incomplete",
        486 => "Busy Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        _ => return None,
    })
}

/// `key: value` pairs, in the order they are printed.
pub type Pairs = Vec<(&'static str, String)>;

/// `key: value` lines, the key column padded.
pub fn lines(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{:width$} {v}", format!("{k}:"), width = width + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table: a header row and left-aligned columns two spaces apart.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Table { rows: vec![header.iter().map(|h| (*h).to_owned()).collect()] }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width = |c: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        self.rows
            .iter()
            .map(|r| {
                let mut line = String::new();
                for (c, cell) in r.iter().enumerate() {
                    if c + 1 == r.len() {
                        line.push_str(cell);
                    } else {
                        let pad = widths[c] - cell.chars().count() + 2;
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
                line.trim_end().to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A length of time, coarse: `42s`, `3m20s`, `2h5m`, `3d4h`.
fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// An expiry time relative to `now`.
fn until(at_ms: u64, now: u64) -> String {
    match at_ms {
        0 => "-".into(),
        t if t > now => format!("in {}", span(t - now)),
        t => format!("expired {} ago", span(now - t)),
    }
}

/// A past time relative to `now`.
fn ago(at_ms: u64, now: u64) -> String {
    match at_ms {
        0 => "-".into(),
        t if t >= now => "just now".into(),
        t => format!("{} ago", span(now - t)),
    }
}

/// A q-value in thousandths as a decimal: 1000 -> `1`, 500 -> `0.5`.
fn q_text(q: u32) -> String {
    let s = format!("{}.{:03}", q / 1000, q % 1000);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A node id, 0 shown as `-`.
fn node_text(id: u64) -> String {
    if id == 0 {
        "-".into()
    } else {
        id.to_string()
    }
}

/// A possibly empty string, empty shown as `-`.
fn or_dash(s: &str) -> String {
    let s = one_line(s);
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// `yes` or `no`.
fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// Where a write was committed (nothing if unknown).
pub fn meta_pairs(meta: Option<&pb::WriteMeta>) -> Pairs {
    match meta {
        Some(m) => vec![("index", m.index.to_string()), ("leader", m.leader_id.to_string())],
        None => Vec::new(),
    }
}

/// Text lines joined, empty ones dropped.
pub fn join(parts: &[String]) -> String {
    parts.iter().filter(|p| !p.is_empty()).cloned().collect::<Vec<_>>().join("\n")
}

/// One binding as `key: value` pairs.
pub fn binding_pairs(number: &str, b: &pb::Binding, now: u64) -> Pairs {
    vec![
        ("number", one_line(number)),
        ("device", one_line(&b.device_id)),
        ("contact", one_line(&b.contact)),
        ("name", or_dash(&b.device_name)),
        ("mac", or_dash(&b.mac)),
        ("node", node_text(b.node_id)),
        ("q", q_text(b.q)),
        ("expires", until(b.expires_at_ms, now)),
        ("generation", b.generation.to_string()),
    ]
}

/// Bindings as a table, optionally with the number in front.
fn bindings_rows(table: &mut Table, number: Option<&str>, bindings: &[pb::Binding], now: u64) {
    for b in bindings {
        let mut row = Vec::new();
        if let Some(n) = number {
            row.push(one_line(n));
        }
        row.extend([
            one_line(&b.device_id),
            one_line(&b.contact),
            q_text(b.q),
            node_text(b.node_id),
            until(b.expires_at_ms, now),
            b.generation.to_string(),
            or_dash(&b.device_name),
            or_dash(&b.mac),
        ]);
        table.row(row);
    }
}

const BINDING_COLUMNS: [&str; 8] =
    ["DEVICE", "CONTACT", "Q", "NODE", "EXPIRES", "GENERATION", "NAME", "MAC"];

/// A number's bindings as a table (`no live bindings` when empty).
pub fn bindings_table(bindings: &[pb::Binding], now: u64) -> String {
    if bindings.is_empty() {
        return "no live bindings".into();
    }
    let mut t = Table::new(&BINDING_COLUMNS);
    bindings_rows(&mut t, None, bindings, now);
    t.render()
}

/// Every registration as a table, one row per binding.
pub fn registrations_table(regs: &[pb::Registration], now: u64) -> String {
    if regs.iter().all(|r| r.bindings.is_empty()) {
        return "no registrations".into();
    }
    let mut header = vec!["NUMBER"];
    header.extend(BINDING_COLUMNS);
    let mut t = Table::new(&header);
    for r in regs {
        bindings_rows(&mut t, Some(&r.number), &r.bindings, now);
    }
    t.render()
}

/// A gateway's status: `in_service`, or `out_of_service (timeout, 25s left)`.
fn gateway_status(g: &pb::Gateway, now: u64) -> String {
    let status = or_dash(&g.status);
    if g.status != "out_of_service" {
        return status;
    }
    let mut notes = Vec::new();
    if !g.out_of_service_reason.is_empty() {
        notes.push(one_line(&g.out_of_service_reason));
    }
    if g.out_of_service_until_ms > now {
        notes.push(format!("{} left", span(g.out_of_service_until_ms - now)));
    }
    if notes.is_empty() {
        status
    } else {
        format!("{status} ({})", notes.join(", "))
    }
}

/// A capacity, 0 shown as `unlimited`.
fn capacity_text(c: u32) -> String {
    if c == 0 {
        "unlimited".into()
    } else {
        c.to_string()
    }
}

/// One gateway as `key: value` pairs.
pub fn gateway_pairs(g: &pb::Gateway, now: u64) -> Pairs {
    vec![
        ("id", one_line(&g.id)),
        ("group", one_line(&g.group)),
        ("address", one_line(&g.address)),
        ("priority", g.priority.to_string()),
        ("weight", g.weight.to_string()),
        ("capacity", capacity_text(g.capacity)),
        ("status", gateway_status(g, now)),
        ("active calls", g.active_calls.to_string()),
        ("attempts", g.attempts.to_string()),
        ("timeouts", g.timeouts.to_string()),
        ("failures", g.failures.to_string()),
    ]
}

/// Every gateway as a table.
pub fn gateways_table(gateways: &[pb::Gateway], now: u64) -> String {
    if gateways.is_empty() {
        return "no gateways".into();
    }
    let mut t = Table::new(&[
        "ID", "GROUP", "ADDRESS", "PRIORITY", "WEIGHT", "CAPACITY", "ACTIVE", "ATTEMPTS",
        "TIMEOUTS", "FAILURES", "STATUS",
    ]);
    for g in gateways {
        t.row(vec![
            one_line(&g.id),
            one_line(&g.group),
            one_line(&g.address),
            g.priority.to_string(),
            g.weight.to_string(),
            capacity_text(g.capacity),
            g.active_calls.to_string(),
            g.attempts.to_string(),
            g.timeouts.to_string(),
            g.failures.to_string(),
            gateway_status(g, now),
        ]);
    }
    t.render()
}

/// Every dial-plan route as a table.
pub fn routes_table(routes: &[pb::DialRoute]) -> String {
    if routes.is_empty() {
        return "no routes".into();
    }
    let mut t = Table::new(&["PATTERN", "PRIORITY", "TARGET", "STRIP", "PREFIX"]);
    for r in routes {
        let target = if r.group.is_empty() {
            "registered".to_owned()
        } else {
            format!("group {}", one_line(&r.group))
        };
        t.row(vec![
            one_line(&r.pattern),
            r.priority.to_string(),
            target,
            r.strip.to_string(),
            or_dash(&r.prefix),
        ]);
    }
    t.render()
}

/// Every SIP user and its realm as a table.
pub fn users_table(users: &[pb::SipUser]) -> String {
    if users.is_empty() {
        return "no users".into();
    }
    let mut t = Table::new(&["USER", "REALM"]);
    for u in users {
        t.row(vec![one_line(&u.user), one_line(&u.realm)]);
    }
    t.render()
}

/// Every token (never a secret) as a table.
pub fn tokens_table(tokens: &[pb::TokenInfo], now: u64) -> String {
    if tokens.is_empty() {
        return "no tokens (the client API is open)".into();
    }
    let mut t = Table::new(&["ID", "ROLE", "NAME", "CREATED", "EXPIRES"]);
    for k in tokens {
        t.row(vec![
            one_line(&k.id),
            one_line(&k.role),
            or_dash(&k.name),
            ago(k.created_at_ms, now),
            match k.expires_at_ms {
                0 => "never".into(),
                e => until(e, now),
            },
        ]);
    }
    t.render()
}

/// One call as `key: value` pairs.
pub fn call_pairs(c: &pb::Call, now: u64) -> Pairs {
    vec![
        ("call", one_line(&c.call_id)),
        ("from", one_line(&c.from)),
        ("to", one_line(&c.to)),
        ("state", one_line(&c.state)),
        ("owner", node_text(c.owner)),
        ("standby", node_text(c.standby)),
        ("gateway", or_dash(&c.gateway)),
        ("version", c.version.to_string()),
        ("started", ago(c.started_at_ms, now)),
        ("updated", ago(c.updated_at_ms, now)),
    ]
}

/// Calls as a table.
pub fn calls_table(calls: &[pb::Call], now: u64) -> String {
    if calls.is_empty() {
        return "no calls".into();
    }
    let mut t = Table::new(&[
        "CALL", "FROM", "TO", "STATE", "OWNER", "STANDBY", "GATEWAY", "VERSION", "STARTED",
    ]);
    for c in calls {
        t.row(vec![
            one_line(&c.call_id),
            one_line(&c.from),
            one_line(&c.to),
            one_line(&c.state),
            node_text(c.owner),
            node_text(c.standby),
            or_dash(&c.gateway),
            c.version.to_string(),
            ago(c.started_at_ms, now),
        ]);
    }
    t.render()
}

/// Whose member list `status` shows.
pub enum MembersFrom<'a> {
    /// The answering node's own list (it is the leader, or no leader is known).
    Answer,
    /// The leader's list, fetched from the leader.
    Leader(&'a pb::StatusResponse),
    /// The leader could not be asked; the answering node's list, and why.
    LeaderFailed(&'a str),
}

/// Cluster status: leader, term, the answering node, then the members.
pub fn status_text(answer: &pb::StatusResponse, from: MembersFrom<'_>) -> String {
    let leader_addr = |s: &pb::StatusResponse| {
        s.members
            .iter()
            .find(|m| m.id == s.leader_id)
            .map(|m| format!(" at {}", one_line(&m.addr)))
            .unwrap_or_default()
    };
    let leader = match answer.leader_id {
        0 => "unknown".to_owned(),
        id => format!("{id}{}", leader_addr(answer)),
    };
    let mut out = lines(&[
        ("leader", leader),
        ("term", answer.term.to_string()),
        ("answered by", format!("node {} ({})", answer.node_id, or_dash(&answer.state))),
        (
            "its log",
            format!(
                "last index {}, applied {}, snapshot {}, purged {}",
                answer.last_log_index,
                answer.applied_index,
                answer.snapshot_index,
                answer.purged_index
            ),
        ),
    ]);
    let (view, heading) = match from {
        MembersFrom::Answer => (answer, format!("members (as seen by node {}):", answer.node_id)),
        MembersFrom::Leader(l) => {
            (l, format!("members (leader's view, answered by node {}):", l.node_id))
        }
        MembersFrom::LeaderFailed(why) => (
            answer,
            format!(
                "members (as seen by node {}; the leader did not answer: {}):",
                answer.node_id,
                one_line(why)
            ),
        ),
    };
    out.push('\n');
    out.push_str(&heading);
    out.push('\n');
    out.push_str(&members_table(view));
    out
}

/// Members as a table; the leader's role is shown as `leader`.
fn members_table(s: &pb::StatusResponse) -> String {
    if s.members.is_empty() {
        return "no members".into();
    }
    let mut t = Table::new(&["ID", "ADDR", "ROLE", "STATUS", "APPLIED", "LAG", "REACHABLE"]);
    for m in &s.members {
        let role = if m.id == s.leader_id { "leader".to_owned() } else { or_dash(&m.role) };
        t.row(vec![
            m.id.to_string(),
            one_line(&m.addr),
            role,
            or_dash(&m.status),
            m.applied_index.to_string(),
            m.lag.to_string(),
            yes_no(m.reachable),
        ]);
    }
    t.render()
}

/// One change-feed event as one line: `index kind key detail`.
pub fn event_text(e: &pb::Event) -> String {
    let mut line = format!("{} {} {}", e.index, or_dash(&e.kind), or_dash(&e.key));
    let detail = one_line(&e.detail_json);
    if !detail.is_empty() {
        line.push(' ');
        line.push_str(&detail);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parsed(s: &str) -> Value {
        serde_json::from_str(s).expect("valid JSON")
    }

    fn routed() -> pb::RouteResponse {
        pb::RouteResponse {
            targets: vec![
                pb::Target {
                    uri: "sip:1001@10.0.0.1:5060".into(),
                    kind: "device".into(),
                    id: "desk".into(),
                },
                pb::Target {
                    uri: "sip:1001@gw.example:5060".into(),
                    kind: "gateway".into(),
                    id: "gw-east".into(),
                },
            ],
            handling_node: 2,
            failure: None,
            explanation: None,
        }
    }

    fn unroutable() -> pb::RouteResponse {
        pb::RouteResponse {
            targets: vec![],
            handling_node: 0,
            failure: Some(pb::RouteFailure {
                code: 503,
                reason: "every gateway of group pstn is out of service".into(),
            }),
            explanation: None,
        }
    }

    fn call() -> pb::Call {
        pb::Call {
            call_id: "c1".into(),
            from: "1000".into(),
            to: "1001".into(),
            state: "ringing".into(),
            owner: 1,
            standby: 2,
            gateway: String::new(),
            version: 3,
            started_at_ms: 1_000,
            updated_at_ms: 5_000,
        }
    }

    #[test]
    fn route_success_json_is_targets_and_handling_node() {
        let doc = route_json(&routed()).unwrap();
        assert!(doc.starts_with(r#"{"targets":"#), "{doc}");
        assert_eq!(
            parsed(&doc),
            json!({
                "targets": [
                    {"uri": "sip:1001@10.0.0.1:5060", "kind": "device", "id": "desk"},
                    {"uri": "sip:1001@gw.example:5060", "kind": "gateway", "id": "gw-east"},
                ],
                "handling_node": 2,
            })
        );
    }

    #[test]
    fn route_failure_json_is_only_the_failure() {
        assert_eq!(
            parsed(&route_json(&unroutable()).unwrap()),
            json!({"failure": {"code": 503, "reason": "every gateway of group pstn is out of service"}})
        );
    }

    #[test]
    fn route_text_numbers_targets_or_names_the_sip_failure() {
        assert_eq!(
            route_text(&routed()),
            "1. sip:1001@10.0.0.1:5060 (device desk)\n\
             2. sip:1001@gw.example:5060 (gateway gw-east)\n\
             handling node: 2"
        );
        assert_eq!(
            route_text(&unroutable()),
            "503 Service Unavailable: every gateway of group pstn is out of service"
        );
        let odd = pb::RouteResponse {
            failure: Some(pb::RouteFailure { code: 599, reason: String::new() }),
            ..Default::default()
        };
        assert_eq!(route_text(&odd), "599");
    }

    #[test]
    fn call_json_is_the_call_itself() {
        let doc = json(&call()).unwrap();
        assert_eq!(
            parsed(&doc),
            json!({
                "call_id": "c1", "from": "1000", "to": "1001", "state": "ringing",
                "owner": 1, "standby": 2, "gateway": "", "version": 3,
                "started_at_ms": 1000, "updated_at_ms": 5000,
            })
        );
    }

    #[test]
    fn call_text_is_key_value_lines() {
        let text = lines(&call_pairs(&call(), 65_000));
        assert!(text.starts_with("call:    c1\n"), "{text}");
        assert!(text.contains("\nstate:   ringing\n"));
        assert!(text.contains("\ngateway: -\n"));
        assert!(text.contains("\nstarted: 1m4s ago\n"));
        assert!(text.ends_with("updated: 1m0s ago"));
    }

    #[test]
    fn tables_align_and_hide_control_characters() {
        let calls = vec![call(), pb::Call { call_id: "a-much-longer-id\nx".into(), ..call() }];
        let text = calls_table(&calls, 10_000);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 3);
        let col = |row: &str| row.find("FROM").or_else(|| row.find("1000")).unwrap();
        assert_eq!(col(rows[0]), col(rows[1]));
        assert_eq!(col(rows[1]), col(rows[2]));
        assert!(rows[2].starts_with("a-much-longer-id x"));
        assert_eq!(calls_table(&[], 0), "no calls");
    }

    #[test]
    fn q_values_print_as_decimals() {
        assert_eq!(q_text(1000), "1");
        assert_eq!(q_text(500), "0.5");
        assert_eq!(q_text(125), "0.125");
        assert_eq!(q_text(0), "0");
        assert_eq!(q_text(2500), "2.5");
        assert_eq!(q_text(3000), "3");
    }

    #[test]
    fn status_shows_the_leaders_view_when_asked() {
        let member = |id, role: &str| pb::Member {
            id,
            addr: format!("127.0.0.1:700{id}"),
            role: role.into(),
            status: "up".into(),
            applied_index: 10,
            reachable: true,
            ..Default::default()
        };
        let answer = pb::StatusResponse {
            node_id: 1,
            leader_id: 2,
            term: 4,
            state: "follower".into(),
            last_log_index: 10,
            applied_index: 10,
            members: vec![member(1, "voter"), member(2, "voter")],
            ..Default::default()
        };
        let leader = pb::StatusResponse { node_id: 2, state: "leader".into(), ..answer.clone() };
        let text = status_text(&answer, MembersFrom::Leader(&leader));
        assert!(text.starts_with("leader:      2 at 127.0.0.1:7002\nterm:        4\n"));
        assert!(text.contains("answered by: node 1 (follower)\nits log:     last index 10,"));
        assert!(text.contains("members (leader's view, answered by node 2):\nID"));
        assert!(text.contains("\n2   127.0.0.1:7002  leader"));
        let text = status_text(&answer, MembersFrom::LeaderFailed("refused"));
        assert!(text.contains("the leader did not answer: refused"));
    }
}
