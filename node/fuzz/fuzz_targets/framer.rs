//! Random bytes cut into random chunks through the TCP framer: nothing may
//! panic, and the frames (up to the first error, which closes the
//! connection, and that error itself) are the same as when the whole
//! stream arrives in one read.
//!
//! Input layout: the first byte says how many chunk lengths follow (0..=15),
//! each of those bytes is one chunk's length, and the rest is the stream.
//! Whatever the lengths leave over arrives as a last chunk.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::sip::framing::{Frame, FrameError, Framer};

/// Frames until the framer wants more bytes, or the first error.
fn drain(f: &mut Framer, out: &mut Vec<Frame>) -> Option<FrameError> {
    loop {
        match f.next_frame() {
            Ok(Some(frame)) => out.push(frame),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n % 16).min(rest.len());
    let (lengths, stream) = rest.split_at(n);

    let mut whole = Framer::new();
    whole.push(stream);
    let mut want = Vec::new();
    let want_err = drain(&mut whole, &mut want);

    let mut chunked = Framer::new();
    let mut got = Vec::new();
    let mut got_err = None;
    let mut at = 0;
    let cuts = lengths.iter().map(|&l| usize::from(l)).chain([stream.len()]);
    for len in cuts {
        let end = (at + len).min(stream.len());
        chunked.push(&stream[at..end]);
        at = end;
        got_err = drain(&mut chunked, &mut got);
        if got_err.is_some() {
            break;
        }
    }
    assert_eq!(got, want);
    assert_eq!(got_err, want_err);
});
