use switchboard_storage::state::dialplan::{Route, RouteTarget};
use switchboard_storage::state::gateways::ReportedOutcome;
use switchboard_storage::state::{apply, Command};

use super::*;

struct World {
    state: State,
    index: u64,
}

impl World {
    fn new() -> World {
        let mut w = World { state: State::default(), index: 0 };
        for id in 1..=3 {
            w.run(Command::PutNode {
                id,
                grpc_addr: format!("127.0.0.1:{}", 7100 + id),
                sip_addr: format!("127.0.0.1:{}", 5060 + id),
                capacity: 0,
            });
        }
        w.run(Command::PutRoute(Route {
            pattern: "9@".into(),
            priority: 0,
            target: RouteTarget::GatewayGroup("pstn".into()),
            strip: 1,
            prefix: String::new(),
        }));
        for (i, id) in ["gw-a", "gw-b", "gw-c"].iter().enumerate() {
            w.gateway(id, i as u32 + 1);
        }
        w
    }

    fn gateway(&mut self, id: &str, priority: u32) {
        self.run(Command::PutGateway {
            id: id.into(),
            group: "pstn".into(),
            address: format!("{id}.example:5060"),
            priority,
            weight: 1,
            capacity: 0,
        });
    }

    fn run(&mut self, cmd: Command) {
        self.index += 1;
        let out = apply(&mut self.state, self.index, 1_000, &cmd);
        assert!(out.error().is_none(), "{cmd:?}: {out:?}");
    }

    fn invite(&self, ruri: &str, udp: bool) -> (u16, String) {
        let raw = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK77\r\n\
             From: <sip:caller@h>;tag=a\r\nTo: <{ruri}>\r\nCall-ID: inv-1\r\nCSeq: 1 INVITE\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        let msg = Message::parse(raw.as_bytes()).unwrap();
        msg.check().unwrap();
        let ask = Ask {
            node: 1,
            now_ms: 2_000,
            spread: 0,
            source: "10.0.0.9:5060".parse().unwrap(),
            udp,
            retry_after_s: 2,
        };
        let mut out = Vec::new();
        let code = answer(&msg, &self.state, &ask, &mut out);
        (code, String::from_utf8(out).unwrap())
    }
}

fn contacts(reply: &str) -> Vec<&str> {
    reply.lines().filter_map(|l| l.strip_prefix("Contact: ")).collect()
}

#[test]
fn gateways_in_route_order_with_distinct_descending_q() {
    let w = World::new();
    let (code, reply) = w.invite("sip:90123@node", true);
    assert_eq!(code, 302, "{reply}");
    assert!(reply.starts_with("SIP/2.0 302 Moved Temporarily\r\n"), "{reply}");
    assert_eq!(
        contacts(&reply),
        [
            "<sip:0123@gw-a.example:5060>;q=1",
            "<sip:0123@gw-b.example:5060>;q=0.667",
            "<sip:0123@gw-c.example:5060>;q=0.334"
        ]
    );
    assert!(reply.contains("\r\nX-Switchboard-Node: 1;sip=127.0.0.1:5061\r\n"), "{reply}");
    assert!(reply.contains(";tag=sb"), "a To-tag is added: {reply}");
    assert_eq!(w.invite("sip:90123@node", true).1, reply, "a retransmission gets the same bytes");
    assert!(!reply.contains("100 Trying"));
}

#[test]
fn udp_replies_stay_under_1300_bytes_tcp_replies_are_not_cut() {
    let mut w = World::new();
    for i in 0..40 {
        w.gateway(&format!("extra-gateway-with-a-long-name-{i:02}"), 10 + i);
    }
    let (_, udp) = w.invite("sip:90123@node", true);
    assert!(udp.len() <= UDP_LIMIT, "{} bytes", udp.len());
    let n = contacts(&udp).len();
    assert!((3..MAX_CONTACTS).contains(&n), "{n} contacts");
    let (_, tcp) = w.invite("sip:90123@node", false);
    assert_eq!(contacts(&tcp).len(), MAX_CONTACTS);
    assert!(udp.ends_with("Content-Length: 0\r\n\r\n"));
}

#[test]
fn failures_carry_the_route_code() {
    let mut w = World::new();
    let (code, reply) = w.invite("sip:5555@node", true);
    assert_eq!(code, 404, "{reply}");
    assert!(reply.contains("Warning: 399 switchboard \""), "{reply}");
    assert_eq!(w.invite("sip:alice@node", true).0, 404, "not digits");
    assert_eq!(w.invite("sip:node", true).0, 404, "no user part");
    assert_eq!(w.invite("tel:9-0123", true).0, 302, "tel: with visual separators");
    for id in ["gw-a", "gw-b", "gw-c"] {
        w.run(Command::ReportOutcome {
            id: id.into(),
            outcome: ReportedOutcome::Timeout,
            retry_after_ms: 60_000,
        });
    }
    let (code, reply) = w.invite("sip:90123@node", true);
    assert_eq!(code, 503, "{reply}");
    assert!(reply.contains("\r\nRetry-After: 2\r\n"), "{reply}");
}

#[test]
fn q_text_forms() {
    assert_eq!(q_text(1000), "1");
    assert_eq!(q_text(500), "0.5");
    assert_eq!(q_text(667), "0.667");
    assert_eq!(q_text(40), "0.04");
}
