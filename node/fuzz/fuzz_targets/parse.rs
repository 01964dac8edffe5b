//! Any bytes through the SIP parser, the request check and every typed view
//! the protocol logic uses: nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::sip::addr::{contacts, q_value, Contacts, NameAddr};
use switchboard::sip::message::{Message, Name, StartLine};
use switchboard::sip::uri::Uri;
use switchboard::sip::via::Via;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(data) else { return };
    let _ = m.check();
    let _ = (m.method(), m.call_id(), m.cseq(), m.max_forwards(), m.expires(), m.body());
    let _ = m.has_option(Name::Supported, b"path");
    if let StartLine::Request { uri, .. } = m.start {
        let _ = Uri::parse(uri.as_bytes()).map(|u| u.param(b"transport"));
    }
    for v in m.elements(Name::Via) {
        if let Ok(via) = Via::parse(v) {
            let _ = (via.branch(), via.wants_rport());
        }
    }
    for name in [Name::From, Name::To] {
        if let Some(Ok(a)) = m.first(name).map(NameAddr::parse) {
            let _ = (a.tag(), Uri::parse(a.uri));
        }
    }
    if let Ok(Contacts::List(list)) = contacts(m.elements(Name::Contact)) {
        for c in list {
            let _ = Uri::parse(c.uri);
            let _ = c.param(b"q").flatten().map(q_value);
            let _ = c.param(b"expires");
        }
    }
});
