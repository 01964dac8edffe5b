use proptest::prelude::*;

use super::*;
use crate::sip::addr::{contacts, Contacts};

const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:2001@example.com>\r\n\
From: Bob <sip:2001@example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:2001@192.0.2.4>;expires=600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"\r\n\
Contact: \"Desk, 2\" <sip:2001@192.0.2.5>;q=0.5, <sip:2001@192.0.2.6>\r\n\
Expires: 7200\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn indexes_a_register() {
    let m = Message::parse(REGISTER).unwrap();
    m.check().unwrap();
    assert_eq!(m.method(), Some(Method::Register));
    assert_eq!(m.call_id(), Some("843817637684230@998sdasdh09"));
    assert_eq!(m.cseq(), Some(CSeq { number: 1826, method: "REGISTER" }));
    assert_eq!(m.max_forwards(), Some(Ok(70)));
    assert_eq!(m.expires(), Some(Ok(7200)));
    let Contacts::List(list) = contacts(m.elements(Name::Contact)).unwrap() else { panic!() };
    assert_eq!(list.len(), 3);
    assert_eq!(list[1].display, b"\"Desk, 2\"");
    assert_eq!(m.body(), Ok(&b""[..]));
}

#[test]
fn compact_names_folding_and_case() {
    let raw = b"INVITE sip:4001@h SIP/2.0\r\n\
v: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
f: <sip:a@h>;tag=1\r\n\
t: <sip:4001@h>\r\n\
i: x1\r\n\
cSeQ:\r\n  9\r\n\tINVITE\r\n\
m: <sip:a@h>\r\n\
k: path, gruu\r\n\
l: 4\r\n\r\nabcdEXTRA";
    let m = Message::parse(raw).unwrap();
    m.check().unwrap();
    assert_eq!(m.cseq(), Some(CSeq { number: 9, method: "INVITE" }));
    assert!(m.has_option(Name::Supported, b"GRUU"));
    assert_eq!(m.body(), Ok(&b"abcd"[..]));
}

#[test]
fn a_non_utf8_display_name_does_not_hide_later_headers() {
    let raw = b"OPTIONS sip:h SIP/2.0\r\n\
Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: \"J\xf6rg \xff\" <sip:a@h>;tag=1\r\n\
To: <sip:h>\r\n\
Call-ID: c\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n";
    let m = Message::parse(raw).unwrap();
    m.check().unwrap();
    assert_eq!(m.call_id(), Some("c"));
}

#[test]
fn the_check_names_what_is_wrong() {
    let cases: &[(&[u8], ParseError)] = &[
        (b"Content-Length: 10\r\n\r\nshort", ParseError::BodyTooShort),
        (b"Content-Length: ten\r\n\r\n", ParseError::ContentLength),
        (b"Content-Length: 99999999\r\n\r\n", ParseError::ContentLength),
        (b"Max-Forwards: 256\r\n\r\n", ParseError::Malformed("Max-Forwards")),
        (b"Call-ID: again\r\n\r\n", ParseError::Duplicate("Call-ID")),
        (b"Expires: soon\r\n\r\n", ParseError::Malformed("Expires")),
    ];
    for (tail, want) in cases {
        let mut raw = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
            .to_vec();
        raw.extend_from_slice(tail);
        let m = Message::parse(&raw).unwrap();
        assert_eq!(m.check(), Err(*want), "{}", String::from_utf8_lossy(tail));
    }
    let missing = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
    assert_eq!(Message::parse(missing).unwrap().check(), Err(ParseError::Missing("From")));
    let mismatch = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@h>\r\nTo: <sip:h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
    assert_eq!(Message::parse(mismatch).unwrap().check(), Err(ParseError::CSeqMethod));
    let uri_headers = b"INVITE sip:h?Subject=x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@h>\r\nTo: <sip:h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
    assert_eq!(Message::parse(uri_headers).unwrap().check(), Err(ParseError::RequestUri));
}

#[test]
fn start_line_and_limits() {
    assert_eq!(Message::parse(b"").unwrap_err(), ParseError::Empty);
    assert_eq!(Message::parse(b"\r\n\r\n").unwrap_err(), ParseError::Empty);
    assert_eq!(Message::parse(b"INVITE sip:x SIP/3.0\r\n\r\n").unwrap_err(), ParseError::Version);
    assert_eq!(Message::parse(b"SIP/2.0 99 x\r\n\r\n").unwrap_err(), ParseError::StartLine);
    assert_eq!(Message::parse(b"INVITE sip:x\r\n\r\n").unwrap_err(), ParseError::StartLine);
    assert_eq!(
        Message::parse(b"OPTIONS sip:x SIP/2.0  \r\n\r\n").unwrap_err(),
        ParseError::StartLine
    );
    assert_eq!(
        Message::parse(b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n").unwrap_err(),
        ParseError::Unterminated
    );
    assert_eq!(
        Message::parse(b"OPTIONS sip:x SIP/2.0\r\nnocolon\r\n\r\n").unwrap_err(),
        ParseError::HeaderLine
    );
    let mut many = b"OPTIONS sip:x SIP/2.0\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(Message::parse(&many).unwrap_err(), ParseError::TooManyHeaders);
    assert_eq!(Message::parse(&vec![b'a'; MAX_MESSAGE + 1]).unwrap_err(), ParseError::TooLarge);
    let mut long = b"OPTIONS sip:x SIP/2.0\r\nX-Pad: ".to_vec();
    long.resize(long.len() + MAX_HEADER_LINE, b'a');
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(Message::parse(&long).unwrap_err(), ParseError::HeaderTooLong);
    let r = Message::parse(b"SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\n\r\n").unwrap();
    assert_eq!(r.start, StartLine::Response { code: 200 });
}

/// Bytes that look like SIP: the register above, cut and mutated.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let edits = proptest::collection::vec((0usize..REGISTER.len(), any::<u8>(), 0u8..4), 1..16);
    edits.prop_map(|edits| {
        let mut m = REGISTER.to_vec();
        for (at, byte, kind) in edits {
            let at = at.min(m.len().saturating_sub(1));
            match kind {
                0 => m[at] = byte,
                1 => m.insert(at, byte),
                2 if !m.is_empty() => {
                    m.remove(at);
                }
                _ => m.insert(
                    at,
                    [b'\r', b'\n', b',', b'"', b'<', b';', b':', b' '][byte as usize % 8],
                ),
            }
        }
        m
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// No input makes the parser, the check or the typed views panic.
    #[test]
    fn mutated_input_never_panics(raw in mutated()) {
        if let Ok(m) = Message::parse(&raw) {
            let _ = m.check();
            let _ = m.cseq();
            let _ = m.body();
            let _ = contacts(m.elements(Name::Contact));
            for v in m.elements(Name::Via) {
                let _ = crate::sip::via::Via::parse(v);
            }
            if let StartLine::Request { uri, .. } = m.start {
                let _ = crate::sip::uri::Uri::parse(uri.as_bytes());
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::parse(&raw).map(|m| m.check());
    }
}

/// A typical INVITE of about 800 bytes: three Vias, two Contacts and an
/// SDP offer.
fn typical_invite() -> Vec<u8> {
    let sdp = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\ns=-\r\n\
c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";
    format!(
        "INVITE sip:+442071234567@sip.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9;rport\r\n\
Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKnashds8;received=192.0.2.2\r\n\
Via: SIP/2.0/TCP [2001:db8::9]:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 68\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=9fxced76sl\r\n\
To: <sip:+442071234567@sip.example.com;user=phone>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.101:5060;transport=udp>;expires=3600, \"Desk\" <sip:alice@192.0.2.102>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// How far [`cost`] goes: parse only, then the check, then the views.
#[derive(Clone, Copy)]
enum Stage {
    Parse,
    Check,
    All,
}

/// ns per message for parse (+ check (+ CSeq + Contacts)) over `n` rounds.
fn cost(raw: &[u8], n: u32, stage: Stage) -> f64 {
    let start = std::time::Instant::now();
    for _ in 0..n {
        let m = Message::parse(std::hint::black_box(raw)).unwrap();
        if matches!(stage, Stage::Check | Stage::All) {
            m.check().unwrap();
        }
        if matches!(stage, Stage::All) {
            std::hint::black_box(m.cseq().unwrap());
            std::hint::black_box(contacts(m.elements(Name::Contact)).unwrap());
        }
        std::hint::black_box(&m);
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

/// The figure quoted for the parser's cost; run in release mode:
/// `cargo test -p switchboard --lib --release sip::message::tests::parse_cost -- --ignored --nocapture`
#[test]
#[ignore = "a timing, meaningful only in release mode"]
fn parse_cost() {
    let invite = typical_invite();
    assert!((700..=900).contains(&invite.len()), "{} bytes", invite.len());
    for (name, raw) in [("INVITE", &invite[..]), ("REGISTER", REGISTER)] {
        cost(raw, 20_000, Stage::All); // warm up
        println!(
            "{name} ({} bytes): {:.0} ns/message (parse {:.0}, + check {:.0})",
            raw.len(),
            cost(raw, 200_000, Stage::All),
            cost(raw, 200_000, Stage::Parse),
            cost(raw, 200_000, Stage::Check),
        );
    }
}
