//! The parser against the RFC 4475 and RFC 5118 torture messages in
//! `node/tests/sip-corpus/` (see the README there): every file has an
//! expected verdict below, and every file is checked.
//!
//! A verdict is what [`read`] says: the message indexes, passes
//! [`Message::check`], and every typed view the protocol logic may ask for
//! (each Via element, From, To, each Contact, and the URIs in them) reads.
//! An address URI with a scheme we do not know (`isbn:`, `http:`) is not a
//! parse failure: the registrar refuses it by meaning, not by syntax.

use std::path::{Path, PathBuf};

use super::message::{Message, Name, StartLine};
use crate::sip::addr::{contacts, Contacts, NameAddr};
use crate::sip::uri::{Uri, UriError};
use crate::sip::via::Via;

/// What a message yields when every view reads: the facts the cross-check
/// against another parser compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    /// The method, or `None` for a response.
    pub method: Option<String>,
    /// The status code of a response.
    pub code: Option<u16>,
    /// The Request-URI as written.
    pub request_uri: Option<String>,
    /// The Call-ID.
    pub call_id: String,
    /// CSeq number and method.
    pub cseq: (u32, String),
    /// How many Via elements (across all Via headers).
    pub vias: usize,
    /// How many Contact elements (`*` counts as none).
    pub contacts: usize,
    /// The body length after cutting to Content-Length.
    pub body_len: usize,
}

fn address_uri(uri: &[u8]) -> Result<(), String> {
    match Uri::parse(uri) {
        Ok(_) | Err(UriError::Scheme) => Ok(()),
        Err(e) => Err(format!("{e}: {}", String::from_utf8_lossy(uri))),
    }
}

fn address(m: &Message<'_>, name: Name) -> Result<(), String> {
    let value = m.first(name).ok_or_else(|| format!("no {}", name.as_str()))?;
    let a = NameAddr::parse(value).map_err(|e| format!("{}: {e}", name.as_str()))?;
    address_uri(a.uri)
}

/// Parse, check and read every view of `raw`.
pub(crate) fn read(raw: &[u8]) -> Result<Summary, String> {
    let m = Message::parse(raw).map_err(|e| format!("parse: {e}"))?;
    m.check().map_err(|e| format!("check: {e}"))?;
    let mut vias = 0;
    for v in m.elements(Name::Via) {
        Via::parse(v).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(v)))?;
        vias += 1;
    }
    address(&m, Name::From)?;
    address(&m, Name::To)?;
    let contacts = match contacts(m.elements(Name::Contact))? {
        Contacts::None | Contacts::Star => 0,
        Contacts::List(list) => {
            for c in &list {
                address_uri(c.uri)?;
            }
            list.len()
        }
    };
    let cseq = m.cseq().ok_or("no CSeq")?;
    let (method, code, request_uri) = match m.start {
        StartLine::Request { method, uri } => {
            (Some(method.as_str().to_owned()), None, Some(uri.to_owned()))
        }
        StartLine::Response { code } => (None, Some(code), None),
    };
    Ok(Summary {
        method,
        code,
        request_uri,
        call_id: m.call_id().ok_or("no Call-ID")?.to_owned(),
        cseq: (cseq.number, cseq.method.to_owned()),
        vias,
        contacts,
        body_len: m.body().map_err(|e| e.to_string())?.len(),
    })
}

/// What we expect of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Every view reads.
    Accept,
    /// Something refuses it.
    Reject,
}
use Expect::{Accept, Reject};

/// Every corpus file and its verdict. Where the RFC leaves the choice to
/// the receiver ("may", "could", "reasonable to"), the comment says which
/// way we go and why; everything else is the RFC's own verdict.
const TABLE: &[(&str, Expect)] = &[
    // RFC 4475 §3.1.1: valid messages; a parser must accept them.
    ("rfc4475/wsinv.sip", Accept),
    ("rfc4475/intmeth.sip", Accept),
    ("rfc4475/esc01.sip", Accept),
    ("rfc4475/escnull.sip", Accept),
    ("rfc4475/esc02.sip", Accept),
    ("rfc4475/lwsdisp.sip", Accept),
    ("rfc4475/longreq.sip", Accept),
    ("rfc4475/dblreq.sip", Accept),
    ("rfc4475/semiuri.sip", Accept),
    ("rfc4475/transports.sip", Accept),
    ("rfc4475/mpart01.sip", Accept),
    ("rfc4475/unreason.sip", Accept),
    ("rfc4475/noreason.sip", Accept),
    // RFC 4475 §3.1.2: invalid messages.
    ("rfc4475/badinv01.sip", Reject),
    ("rfc4475/clerr.sip", Reject),
    ("rfc4475/ncl.sip", Reject),
    ("rfc4475/scalar02.sip", Reject),
    // A response: check() covers requests only, so it is the CSeq view
    // (a 32-bit number) that refuses this one.
    ("rfc4475/scalarlg.sip", Reject),
    ("rfc4475/quotbal.sip", Reject),
    ("rfc4475/ltgtruri.sip", Reject),
    ("rfc4475/lwsruri.sip", Reject),
    // "Acceptable to reject": a start line has exactly one SP between its
    // parts in the grammar, and we serve no client that gets it wrong.
    ("rfc4475/lwsstart.sip", Reject),
    ("rfc4475/trws.sip", Reject),
    ("rfc4475/escruri.sip", Reject),
    // "Shouldn't [reject] unless the contents of the Date header field were
    // actually important": we never read Date, so we accept.
    ("rfc4475/baddate.sip", Accept),
    ("rfc4475/regbadct.sip", Reject),
    // "Elements attempting to be liberal may ignore the spaces": the URI
    // between the brackets is trimmed, so `< sip:x >` reads as `<sip:x>`;
    // being strict would buy nothing, since nothing else can be meant.
    ("rfc4475/badaspec.sip", Accept),
    // "May attempt to be liberal ... and infer the missing quotes": we
    // never interpret a display name (we copy From/To byte for byte into
    // replies), and the unquoted name is read leniently on purpose so
    // that phones sending Latin-1 names are served (see addr.rs).
    ("rfc4475/baddn.sip", Accept),
    ("rfc4475/badvers.sip", Reject),
    ("rfc4475/mismatch01.sip", Reject),
    ("rfc4475/mismatch02.sip", Reject),
    ("rfc4475/bigcode.sip", Reject),
    // RFC 4475 §3.2: a branch of only the magic cookie is syntactically
    // valid; what to do with it is the transaction layer's business.
    ("rfc4475/badbranch.sip", Accept),
    // RFC 4475 §3.3: syntactically valid messages that the application
    // answers, mostly with an error.
    ("rfc4475/insuf.sip", Reject), // missing To, From, Call-ID: 400
    // The RFC's answer is 416 Unsupported URI Scheme; the check refuses a
    // Request-URI that is not sip/sips/tel, so the message is refused here
    // and the server chooses the code.
    ("rfc4475/unkscm.sip", Reject),
    ("rfc4475/novelsc.sip", Reject),
    ("rfc4475/unksm2.sip", Accept),
    ("rfc4475/bext01.sip", Accept),
    ("rfc4475/invut.sip", Accept),
    ("rfc4475/regaut01.sip", Accept),
    ("rfc4475/multi01.sip", Reject), // duplicated single-valued headers: 400
    ("rfc4475/mcl01.sip", Reject),   // two Content-Lengths: 400
    ("rfc4475/bcast.sip", Accept),
    ("rfc4475/zeromf.sip", Accept),
    ("rfc4475/cparam01.sip", Accept),
    ("rfc4475/cparam02.sip", Accept),
    ("rfc4475/regescrt.sip", Accept),
    ("rfc4475/sdp01.sip", Accept),
    ("rfc4475/inv2543.sip", Accept),
    // RFC 5118 §4.
    ("rfc5118/ipv6-good.sip", Accept),
    ("rfc5118/ipv6-bad.sip", Reject),
    ("rfc5118/port-ambiguous.sip", Accept),
    ("rfc5118/port-unambiguous.sip", Accept),
    ("rfc5118/via-received-param-with-delim.sip", Accept),
    ("rfc5118/via-received-param-no-delim.sip", Accept),
    ("rfc5118/ipv6-in-sdp.sip", Accept),
    ("rfc5118/mult-ip-in-header.sip", Accept),
    ("rfc5118/mult-ip-in-sdp.sip", Accept),
    ("rfc5118/ipv4-mapped-ipv6.sip", Accept),
    // "May exhibit robustness by successfully parsing": the host check
    // takes the characters of an IPv6 reference, not its grammar, and the
    // address is only ever compared or echoed, never dialled from a URI.
    ("rfc5118/ipv6-bug-abnf-3-colons.sip", Accept),
    ("rfc5118/ipv6-correct-abnf-2-colons.sip", Accept),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sip-corpus")
}

/// Every corpus file, relative to the corpus directory, sorted.
pub(crate) fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["rfc4475", "rfc5118"] {
        for entry in std::fs::read_dir(corpus_dir().join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sip") {
                let name = format!("{sub}/{}", path.file_name().unwrap().to_string_lossy());
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_corpus_file_gets_its_verdict() {
    let files = corpus_files();
    assert_eq!(files.len(), TABLE.len(), "the table and the corpus directory disagree");
    let mut wrong = Vec::new();
    for (name, raw) in &files {
        let Some((_, expect)) = TABLE.iter().find(|(n, _)| n == name) else {
            panic!("{name} has no verdict in TABLE");
        };
        let got = read(raw);
        let ok = matches!((expect, &got), (Accept, Ok(_)) | (Reject, Err(_)));
        if !ok {
            wrong.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn valid_messages_read_as_the_rfcs_describe_them() {
    let get = |name: &str| {
        let (_, raw) = corpus_files().into_iter().find(|(n, _)| n == name).unwrap();
        read(&raw).unwrap()
    };
    let w = get("rfc4475/wsinv.sip");
    assert_eq!((w.cseq, w.vias, w.contacts, w.body_len), ((9, "INVITE".into()), 3, 1, 150));
    let i = get("rfc4475/intmeth.sip");
    assert_eq!(i.method.as_deref(), Some("!interesting-Method0123456789_*+`.%indeed'~"));
    assert_eq!(i.call_id, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
    assert_eq!(get("rfc4475/longreq.sip").vias, 34);
    assert_eq!(get("rfc4475/esc02.sip").contacts, 2); // C%6Fntact is not Contact
    assert_eq!(get("rfc4475/escnull.sip").contacts, 2);
    let d = get("rfc4475/dblreq.sip");
    assert_eq!((d.method.as_deref(), d.body_len), (Some("REGISTER"), 0));
    assert_eq!(get("rfc4475/mpart01.sip").body_len, 553);
    assert_eq!(get("rfc4475/noreason.sip").code, Some(100));
    assert_eq!(get("rfc4475/inv2543.sip").body_len, 105);
}

#[test]
fn ipv6_references_split_where_the_brackets_say() {
    let ruri = |name: &str| {
        let (_, raw) = corpus_files().into_iter().find(|(n, _)| n == name).unwrap();
        let m = Message::parse(&raw).unwrap();
        let StartLine::Request { uri, .. } = m.start else { panic!() };
        let u = Uri::parse(uri.as_bytes()).unwrap();
        (String::from_utf8(u.host.to_vec()).unwrap(), u.port)
    };
    assert_eq!(ruri("rfc5118/port-ambiguous.sip"), ("[2001:db8::10:5070]".into(), None));
    assert_eq!(ruri("rfc5118/port-unambiguous.sip"), ("[2001:db8::10]".into(), Some(5070)));
    let (_, raw) =
        corpus_files().into_iter().find(|(n, _)| n == "rfc5118/ipv4-mapped-ipv6.sip").unwrap();
    let m = Message::parse(&raw).unwrap();
    let top = Via::parse(m.elements(Name::Via).next().unwrap()).unwrap();
    assert_eq!((top.host, top.port), (&b"[::ffff:192.0.2.10]"[..], Some(19823)));
}

/// What sipx-sip, an independent parser, makes of `raw`: the same facts as
/// [`Summary`], or why it refuses the message.
fn sipx_read(raw: &[u8]) -> Result<Summary, String> {
    use sipx_sip::headers::ContactValue;
    use sipx_sip::{CSeq, CallId, Limits, Via};
    let m = sipx_sip::parse_datagram(raw.to_vec().into(), &Limits::datagram())
        .map_err(|e| format!("parse: {e}"))?;
    let h = m.headers();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let cseq = h.typed::<CSeq>().ok_or("no CSeq")?.map_err(|e| e.to_string())?;
    let call_id = h.typed::<CallId>().ok_or("no Call-ID")?.map_err(|e| e.to_string())?;
    let mut vias = 0;
    for v in h.typed_all::<Via>() {
        v.map_err(|e| e.to_string())?;
        vias += 1;
    }
    let mut contacts = 0;
    for c in h.typed_all::<ContactValue>() {
        if let ContactValue::Address(_) = c.map_err(|e| e.to_string())? {
            contacts += 1;
        }
    }
    let (method, code, request_uri) = match &m {
        sipx_sip::Message::Request(r) => {
            (Some(text(r.method.as_bytes())), None, Some(text(&r.uri.to_bytes())))
        }
        sipx_sip::Message::Response(r) => (None, Some(r.status.code()), None),
    };
    Ok(Summary {
        method,
        code,
        request_uri,
        call_id: text(&call_id.0),
        cseq: (cseq.sequence, text(cseq.method.as_bytes())),
        vias,
        contacts,
        body_len: m.body().len(),
    })
}

#[test]
fn sipx_sip_reads_every_message_we_both_accept_the_same_way() {
    let mut agreed = 0;
    let mut differ = Vec::new();
    for (name, raw) in corpus_files() {
        match (read(&raw), sipx_read(&raw)) {
            (Ok(ours), Ok(theirs)) => {
                if ours == theirs {
                    agreed += 1;
                } else {
                    differ.push(format!("{name}:\n  ours   {ours:?}\n  theirs {theirs:?}"));
                }
            }
            // Verdicts may differ where the RFC leaves the choice open; the
            // table above pins ours.
            (ours, theirs) => {
                println!("{name}: ours {:?}, sipx-sip {:?}", ours.err(), theirs.err());
            }
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // Most of the corpus is accepted by both; a change that made one side
    // refuse everything would otherwise pass unnoticed.
    assert!(agreed >= 30, "only {agreed} messages accepted by both parsers");
}
