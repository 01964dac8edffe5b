//! Tests of the digest verifier: RFC 7616 §3.9.1 vectors, the header
//! grammar, a cross-check against an independent client (`digest_auth`),
//! and a bounded mutation loop that must never panic.

use super::*;

const SECRET: [u8; 32] = [7; 32];
const OTHER_SECRET: [u8; 32] = [8; 32];
const REALM: &str = "switchboard";
const T0: u64 = 1_800_000_000_000;
const TTL: u64 = 300_000;

fn user_with(realm: &str, name: &str, password: &str) -> User {
    User {
        realm: realm.to_owned(),
        ha1_md5: ha1(Algorithm::Md5, name, realm, password).try_into().unwrap(),
        ha1_sha256: ha1(Algorithm::Sha256, name, realm, password).try_into().unwrap(),
    }
}

/// RFC 7616 §3.9.1: Mufasa / "Circle of Life" at http-auth@example.org.
fn rfc7616_header(alg: &str, response: &str) -> String {
    format!(
        "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", uri=\"/dir/index.html\", \
         algorithm={alg}, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, \
         cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, \
         response=\"{response}\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
    )
}

#[test]
fn rfc7616_example_responses_for_md5_and_sha256() {
    for (alg, name, response) in [
        (Algorithm::Md5, "MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        (
            Algorithm::Sha256,
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ] {
        let header = rfc7616_header(name, response);
        let c = parse_authorization(header.as_bytes()).unwrap();
        assert_eq!(c.algorithm, alg);
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(c.opaque.as_deref(), Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"));
        let h1 = ha1(alg, "Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(hex(&expected_response(&c, b"GET", &h1)), response, "{name}");
    }
    // The HA1s themselves, as any implementation computes them.
    assert_eq!(
        hex(&ha1(Algorithm::Md5, "Mufasa", "http-auth@example.org", "Circle of Life")),
        "3d78807defe7de2157e2b0b6573a855f"
    );
    assert_eq!(
        hex(&ha1(Algorithm::Sha256, "Mufasa", "http-auth@example.org", "Circle of Life")),
        "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
    );
}

/// An answer from the `digest_auth` crate (an independent client) to our
/// challenge, for a REGISTER.
fn client_answer(challenge: &str, user: &str, password: &str) -> String {
    let mut prompt = digest_auth::parse(challenge).expect("digest_auth parses our challenge");
    let method = digest_auth::HttpMethod(REGISTER.into());
    let ctx = digest_auth::AuthContext::new_with_method(
        user,
        password,
        "sip:switchboard.example",
        None::<&[u8]>,
        method,
    );
    prompt.respond(&ctx).expect("digest_auth answers").to_header_string()
}

const REGISTER: &str = "REGISTER";

fn check(answer: &str, user: &User, secret: &[u8; 32], now: u64) -> Verdict {
    let c = parse_authorization(answer.as_bytes()).expect("parses");
    verify(&c, REGISTER.as_bytes(), user, secret, now, TTL)
}

#[test]
fn an_independent_client_is_accepted_and_every_forgery_refused() {
    let alice = user_with(REALM, "1000", "correct horse");
    for alg in [Algorithm::Md5, Algorithm::Sha256] {
        let ch = challenge(&SECRET, REALM, T0, alg, false);
        assert!(ch.contains(&format!("algorithm={}", alg.name())), "{ch}");
        assert!(ch.contains("qop=\"auth\"") && !ch.contains("stale"), "{ch}");
        let answer = client_answer(&ch, "1000", "correct horse");
        let c = parse_authorization(answer.as_bytes()).unwrap();
        assert_eq!((c.algorithm, c.username.as_ref()), (alg, "1000"), "{answer}");

        // Accepted at once, at the end of its life, from a node whose clock
        // is a little behind the minting node's.
        assert_eq!(check(&answer, &alice, &SECRET, T0 + 1), Verdict::Ok, "{alg:?} {answer}");
        assert_eq!(check(&answer, &alice, &SECRET, T0 + TTL), Verdict::Ok);
        assert_eq!(check(&answer, &alice, &SECRET, T0 - 1_000), Verdict::Ok);

        // Expired, or minted too far in the future: stale (right password).
        assert_eq!(check(&answer, &alice, &SECRET, T0 + TTL + 1), Verdict::Stale);
        assert_eq!(check(&answer, &alice, &SECRET, T0 - MAX_CLOCK_SKEW_MS - 1), Verdict::Stale);

        // Wrong password.
        let wrong = client_answer(&ch, "1000", "battery staple");
        assert_eq!(check(&wrong, &alice, &SECRET, T0 + 1), Verdict::Wrong(Reason::WrongResponse));
        // ... even when the nonce is stale: no stale=true for a bad password.
        assert_eq!(
            check(&wrong, &alice, &SECRET, T0 + TTL + 1),
            Verdict::Wrong(Reason::WrongResponse)
        );

        // A nonce minted with another cluster's secret.
        assert_eq!(
            check(&answer, &alice, &OTHER_SECRET, T0 + 1),
            Verdict::Wrong(Reason::ForeignNonce)
        );

        // Tampered nonces: a later timestamp (to stretch its life) or a
        // flipped MAC digit. The client answers the tampered challenge
        // correctly, so only the MAC can catch it.
        let nonce = nonce_of(&ch);
        let later = format!("{:016x}{}", T0 + 10 * TTL, &nonce[16..]);
        let mut flipped = nonce.clone().into_bytes();
        flipped[30] = if flipped[30] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        for forged in [later, flipped, nonce[..40].to_owned(), format!("{nonce}00")] {
            let answer = client_answer(&ch.replace(&nonce, &forged), "1000", "correct horse");
            let v = check(&answer, &alice, &SECRET, T0 + 1);
            assert!(
                matches!(v, Verdict::Wrong(Reason::ForeignNonce | Reason::MalformedNonce)),
                "{forged}: {v:?}"
            );
        }

        // A nonce minted for another realm is refused in this one.
        let elsewhere = challenge(&SECRET, "other", T0, alg, false);
        let forged = ch.replace(&nonce, &nonce_of(&elsewhere));
        let answer = client_answer(&forged, "1000", "correct horse");
        assert_eq!(check(&answer, &alice, &SECRET, T0 + 1), Verdict::Wrong(Reason::ForeignNonce));

        // The user's record is for another realm.
        let moved = user_with("pbx.example", "1000", "correct horse");
        let answer = client_answer(&ch, "1000", "correct horse");
        assert_eq!(check(&answer, &moved, &SECRET, T0 + 1), Verdict::Wrong(Reason::RealmMismatch));

        // Another user's record (the caller looked up the wrong name).
        let bob = user_with(REALM, "1001", "correct horse");
        assert_eq!(check(&answer, &bob, &SECRET, T0 + 1), Verdict::Wrong(Reason::WrongResponse));

        // The same answer replayed for another method does not verify.
        let c = parse_authorization(answer.as_bytes()).unwrap();
        assert_eq!(
            verify(&c, b"INVITE", &alice, &SECRET, T0 + 1, TTL),
            Verdict::Wrong(Reason::WrongResponse)
        );
    }
}

fn nonce_of(challenge: &str) -> String {
    let start = challenge.find("nonce=\"").unwrap() + 7;
    let len = challenge[start..].find('"').unwrap();
    challenge[start..start + len].to_owned()
}

#[test]
fn a_stale_challenge_says_so_and_clients_understand_it() {
    let ch = challenge(&SECRET, REALM, T0, Algorithm::Sha256, true);
    assert!(ch.ends_with(", stale=true"), "{ch}");
    let prompt = digest_auth::parse(&ch).unwrap();
    assert!(prompt.stale);
    assert_eq!(nonce_of(&ch).len(), NONCE_HEX_LEN);
}

#[test]
fn the_rfc2069_form_without_qop_verifies() {
    let alice = user_with(REALM, "1000", "pw");
    let ch = challenge(&SECRET, REALM, T0, Algorithm::Md5, false);
    let nonce = nonce_of(&ch);
    let h1 = hex(&ha1(Algorithm::Md5, "1000", REALM, "pw"));
    let h2 = hex(&Algorithm::Md5.hash(&[b"REGISTER:sip:switchboard.example"]));
    let response = hex(&Algorithm::Md5.hash(&[format!("{h1}:{nonce}:{h2}").as_bytes()]));
    let answer = format!(
        "Digest username=\"1000\",realm=\"switchboard\",nonce=\"{nonce}\",\
         uri=\"sip:switchboard.example\",response=\"{}\"",
        response.to_uppercase()
    );
    assert_eq!(check(&answer, &alice, &SECRET, T0), Verdict::Ok);
}

#[test]
fn realms_are_escaped_in_challenges() {
    let ch = challenge(&SECRET, "a\"b\\c\r\nX: y", T0, Algorithm::Md5, false);
    assert!(ch.starts_with("Digest realm=\"a\\\"b\\\\cX: y\", nonce=\""), "{ch}");
    assert!(!ch.contains('\r') && !ch.contains('\n'));
}

const MINIMAL: &str = "Digest username=\"1000\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", \
                       response=\"0123456789abcdef0123456789abcdef\"";

#[test]
fn parameters_in_any_order_any_case_with_escapes() {
    let h = "  dIgEsT   RESPONSE=\"0123456789ABCDEF0123456789ABCDEF\",uri=\"sip:r\" ,, \
             Nonce=n,Realm=\"a \\\"quoted\\\" realm\",UserName=\"10\\00\", foo=\"bar,baz\", \
             QOP=\"auth\", NC=00000002, CNonce=\"x y\", Algorithm=\"md5\"";
    let c = parse_authorization(h.as_bytes()).unwrap();
    assert_eq!(c.username, "1000");
    assert!(matches!(c.username, Cow::Owned(_)), "escapes force a copy");
    assert_eq!(c.realm, "a \"quoted\" realm");
    assert_eq!(c.nonce, "n");
    assert!(matches!(c.nonce, Cow::Borrowed(_)));
    assert_eq!((c.uri.as_ref(), c.algorithm), ("sip:r", Algorithm::Md5));
    assert_eq!(c.qop.as_deref(), Some("auth"));
    assert_eq!((c.nc.as_deref(), c.cnonce.as_deref()), (Some("00000002"), Some("x y")));
    assert_eq!(c.opaque, None);

    // Without qop, nc and cnonce play no part.
    let h = format!("{MINIMAL}, nc=1, cnonce=\"c\"");
    let c = parse_authorization(h.as_bytes()).unwrap();
    assert_eq!((c.qop, c.nc, c.cnonce), (None, None, None));
}

#[test]
fn malformed_headers_are_refused_with_a_reason() {
    use DigestError as E;
    let with = |extra: &str| format!("{MINIMAL}, {extra}");
    type Expect = fn(&DigestError) -> bool;
    let cases: Vec<(String, Expect)> = vec![
        ("Basic dXNlcjpwYXNz".into(), |e| *e == E::NotDigest),
        ("".into(), |e| *e == E::NotDigest),
        ("Digestusername=\"a\"".into(), |e| *e == E::NotDigest),
        ("Digest".into(), |e| matches!(e, E::Syntax { .. })),
        (with("username=\"again\""), |e| *e == E::Duplicate("username")),
        (with("REALM=\"again\""), |e| *e == E::Duplicate("realm")),
        (MINIMAL.replace("username=\"1000\", ", ""), |e| *e == E::Missing("username")),
        (MINIMAL.replace("uri=\"sip:r\", ", ""), |e| *e == E::Missing("uri")),
        (with("qop=auth, nc=00000001"), |e| *e == E::Missing("cnonce")),
        (with("qop=auth, cnonce=\"c\""), |e| *e == E::Missing("nc")),
        (
            with("algorithm=MD5-sess"),
            |e| matches!(e, E::UnsupportedAlgorithm(a) if a == "MD5-sess"),
        ),
        (with("algorithm=SHA-512-256"), |e| matches!(e, E::UnsupportedAlgorithm(_))),
        (with("algorithm=SHA-256"), |e| *e == E::BadResponse(64)),
        (with("qop=auth-int, nc=1, cnonce=c"), |e| matches!(e, E::UnsupportedQop(_))),
        (MINIMAL.replace("0123456789abcdef0123", "0123456789abcdefxx23"), |e| {
            *e == E::BadResponse(32)
        }),
        (MINIMAL.replace("uri=\"sip:r\"", "uri=\"sip:r"), |e| matches!(e, E::Syntax { .. })),
        (MINIMAL.replace("uri=\"sip:r\"", "uri=sip:r"), |e| matches!(e, E::Syntax { .. })),
        (MINIMAL.replace("uri=\"sip:r\"", "uri=\"sip\r\n:r\""), |e| matches!(e, E::Syntax { .. })),
        (MINIMAL.replace("uri=\"sip:r\"", "uri="), |e| matches!(e, E::Syntax { .. })),
        (MINIMAL.replace(", uri", " uri"), |e| matches!(e, E::Syntax { .. })),
        (MINIMAL.replace("uri=", "uri "), |e| matches!(e, E::Syntax { .. })),
        (format!("{MINIMAL}\\"), |e| matches!(e, E::Syntax { .. })),
        (format!("{MINIMAL}, x=\"{}\"", "a".repeat(MAX_HEADER_LEN)), |e| *e == E::TooLong),
    ];
    for (header, expected) in cases {
        match parse_authorization(header.as_bytes()) {
            Err(e) => assert!(expected(&e), "{header:?}: unexpected {e:?}"),
            Ok(c) => panic!("{header:?} accepted as {c:?}"),
        }
    }
    let mut latin1 = MINIMAL.as_bytes().to_vec();
    latin1[17] = 0xe9;
    assert_eq!(parse_authorization(&latin1), Err(DigestError::NotUtf8));
}

#[test]
fn mutated_headers_never_panic() {
    let alice = user_with(REALM, "1000", "pw");
    let seeds: Vec<String> = [Algorithm::Md5, Algorithm::Sha256]
        .into_iter()
        .map(|alg| client_answer(&challenge(&SECRET, REALM, T0, alg, false), "1000", "pw"))
        .chain([MINIMAL.to_owned(), rfc7616_header("MD5", "8ca523f5e9506fed4657c9700eebdbec")])
        .collect();
    let alphabet = b"\"\\,= \t\r\n\x00\xff\xc3aZ09-:@";
    // A fixed-seed LCG: the same mutations on every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((x >> 33) as usize) % n.max(1)
    };
    let mut accepted = 0;
    for round in 0..20_000 {
        let mut h = seeds[round % seeds.len()].clone().into_bytes();
        for _ in 0..=next(4) {
            let at = next(h.len() + 1);
            match next(5) {
                0 if at < h.len() => h[at] = alphabet[next(alphabet.len())],
                1 => h.insert(at, alphabet[next(alphabet.len())]),
                2 if at < h.len() => {
                    h.remove(at);
                }
                3 => h.truncate(at),
                _ => {
                    let from = next(h.len() + 1);
                    let piece = h[from..(from + next(20)).min(h.len())].to_vec();
                    h.splice(at..at, piece);
                }
            }
        }
        if let Ok(c) = parse_authorization(&h) {
            accepted += 1;
            let _ = verify(&c, b"REGISTER", &alice, &SECRET, T0, TTL);
        }
    }
    // Some mutations (in values, in unknown parameters) still parse.
    assert!(accepted > 100, "only {accepted} mutated headers parsed");
}
