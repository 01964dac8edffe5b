use switchboard_storage::state::registrations::{Binding, SipOrigin};

use super::*;

const LIMITS: Limits = Limits { min_s: 60, max_s: 7200, default_s: 3600 };

fn register(extra: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK1\r\n\
         To: <sip:2001@example.com>\r\n\
         From: <sip:2001@example.com>;tag=1\r\n\
         Call-ID: call-1\r\n\
         CSeq: 7 REGISTER\r\n\
         User-Agent: Desk \x01Phone\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn decode_raw(extra: &str) -> Result<Request, Refusal> {
    let raw = register(extra);
    let msg = Message::parse(&raw).unwrap();
    msg.check().unwrap();
    decode(&msg, 3, &LIMITS)
}

fn contacts_of(r: Request) -> Vec<SipContact> {
    match r {
        Request::Change(Command::SipRegister { contacts, node, call_id, cseq, .. }) => {
            assert_eq!((node, call_id.as_str(), cseq), (3, "call-1", 7));
            contacts
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn expiry_comes_from_the_contact_then_expires_then_the_default() {
    let c = contacts_of(
        decode_raw("Expires: 120\r\nContact: <sip:a@h>;expires=600, <sip:b@h>\r\nContact: <sip:c@h>;expires=99999\r\n")
            .unwrap(),
    );
    let ttls: Vec<u64> = c.iter().map(|c| c.ttl_ms).collect();
    assert_eq!(ttls, [600_000, 120_000, 7_200_000], "contact, header, then capped at the maximum");
    let c = contacts_of(decode_raw("Contact: <sip:a@h>\r\n").unwrap());
    assert_eq!(c[0].ttl_ms, 3_600_000);
    assert_eq!(c[0].device_name, "Desk Phone", "control characters dropped");
    assert_eq!(c[0].q, 1000);
}

#[test]
fn device_identity_prefers_the_instance() {
    let c = contacts_of(
        decode_raw(
            "Contact: <sip:a@10.0.0.1>;+sip.instance=\"<urn:uuid:0000-1>\";q=0.25, <sip:b@h;transport=tcp>\r\n",
        )
        .unwrap(),
    );
    assert_eq!(c[0].device_id, "urn:uuid:0000-1");
    assert_eq!(c[0].q, 250);
    assert_eq!(c[1].device_id, "sip:b@h;transport=tcp");
    let long = format!("Contact: <sip:{}@h>\r\n", "a".repeat(200));
    let c = contacts_of(decode_raw(&long).unwrap());
    assert!(c[0].device_id.starts_with("contact-"), "{}", c[0].device_id);
}

#[test]
fn refusals_of_rfc_3261_section_10_3() {
    let code = |extra: &str| decode_raw(extra).unwrap_err().code;
    let r = decode_raw("Contact: <sip:a@h>;expires=30\r\n").unwrap_err();
    assert_eq!((r.code, r.min_expires), (423, Some(60)));
    assert_eq!(code("Contact: *\r\n"), 400, "* without Expires: 0");
    assert_eq!(code("Contact: *\r\nExpires: 10\r\n"), 400);
    assert_eq!(code("Contact: *, <sip:a@h>\r\nExpires: 0\r\n"), 400);
    assert_eq!(code("Contact: <sip:a@h>;q=2\r\n"), 400);
    assert_eq!(code("Contact: <sip:a@h>;expires=x\r\n"), 400);
    assert_eq!(code("Contact: <mailto:a@h>\r\n"), 400);
    let r = decode_raw("Require: path, gruu\r\nContact: <sip:a@h>\r\n").unwrap_err();
    assert_eq!((r.code, r.unsupported.as_deref()), (420, Some("path, gruu")));
    let many: String = (0..=MAX_CONTACTS).map(|i| format!("Contact: <sip:a{i}@h>\r\n")).collect();
    assert_eq!(code(&many), 403);
}

#[test]
fn star_query_and_removal() {
    match decode_raw("Contact: *\r\nExpires: 0\r\n").unwrap() {
        Request::Change(Command::SipRegister { remove_all, contacts, .. }) => {
            assert!(remove_all && contacts.is_empty())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(decode_raw("").unwrap(), Request::Query { number: "2001".into() });
    let c = contacts_of(decode_raw("Contact: <sip:a@h>;expires=0\r\n").unwrap());
    assert_eq!(c[0].ttl_ms, 0, "expires=0 removes, below the minimum or not");
}

#[test]
fn address_of_record_must_be_a_number() {
    let raw = String::from_utf8(register(""))
        .unwrap()
        .replace("sip:2001@example.com>\r\nFrom", "sip:alice@example.com>\r\nFrom");
    let msg = Message::parse(raw.as_bytes()).unwrap();
    assert_eq!(decode(&msg, 1, &LIMITS).unwrap_err().code, 404);
    let tel = String::from_utf8(register(""))
        .unwrap()
        .replace("<sip:2001@example.com>\r\nFrom", "<tel:+1-555-0100>\r\nFrom");
    let msg = Message::parse(tel.as_bytes()).unwrap();
    assert_eq!(aor(&msg).unwrap(), "+15550100");
}

fn binding(device: &str, call_id: &str, cseq: u32) -> Binding {
    Binding {
        device_id: device.into(),
        contact: format!("sip:{device}@h"),
        device_name: String::new(),
        mac: String::new(),
        node: 1,
        q: 1000,
        expires_at_ms: 10_000,
        generation: 1,
        sip: Some(SipOrigin { call_id: call_id.into(), cseq }),
    }
}

fn change(devices: &[&str], cseq: u32) -> Command {
    Command::SipRegister {
        number: "2001".into(),
        call_id: "c".into(),
        cseq,
        node: 1,
        remove_all: false,
        contacts: devices
            .iter()
            .map(|d| SipContact {
                device_id: (*d).into(),
                contact: format!("sip:{d}@h"),
                device_name: String::new(),
                q: 1000,
                ttl_ms: 1000,
            })
            .collect(),
    }
}

#[test]
fn ordering_against_the_stored_call_id_and_cseq() {
    let stored = [binding("a", "c", 5), binding("b", "other", 9)];
    assert_eq!(order(&change(&["a"], 6), &stored), Order::New);
    assert_eq!(order(&change(&["a"], 5), &stored), Order::Retransmission);
    assert_eq!(order(&change(&["a"], 4), &stored), Order::Stale);
    assert_eq!(
        order(&change(&["a", "b"], 5), &stored),
        Order::Stale,
        "same CSeq but another binding changed"
    );
    assert_eq!(
        order(&change(&["a", "z"], 5), &stored),
        Order::New,
        "a new contact: not a retransmission"
    );
    assert_eq!(order(&change(&["b"], 1), &stored), Order::New, "another Call-ID: any CSeq");
}

#[test]
fn contact_list_rounds_expiry_up_and_skips_the_expired() {
    let mut a = binding("a", "c", 1);
    a.expires_at_ms = 600_000;
    a.q = 500;
    let mut gone = binding("b", "c", 1);
    gone.expires_at_ms = 5;
    let mut u = binding("urn:uuid:1", "c", 1);
    u.expires_at_ms = 1_500;
    let v = contact_values(&[a, gone, u], 10);
    assert_eq!(
        v,
        [
            "<sip:a@h>;expires=600;q=0.500",
            "<sip:urn:uuid:1@h>;expires=1;+sip.instance=\"<urn:uuid:1>\""
        ]
    );
}
