//! The SIP front end (issue 9) on real sockets of a 3-node cluster: a
//! REGISTER at node 1 is routed by an INVITE at node 3; retransmissions
//! are answered without a second write; RFC 3261 §10.3 ordering; digest
//! authentication with a nonce minted at one node and used at another
//! (answered by an independent client, the `digest_auth` crate); TCP
//! framing and keep-alives; no leader -> 503; and the table of malformed
//! requests, each with its expected answer, after which the node still
//! serves.

use std::time::Duration;

use switchboard::sip::digest::{ha1, Algorithm};
use switchboard_proto::v1 as pb;
use switchboard_tests::sip::{request, Reply, Tcp, Udp};
use switchboard_tests::{lookup, Cluster};

async fn routes(cluster: &Cluster) {
    let mut dp = cluster.dial_plan(1).await;
    for (pattern, group, strip) in [("2XXX", "", 0), ("9@", "pstn", 1)] {
        dp.put_route(pb::PutRouteRequest {
            route: Some(pb::DialRoute {
                pattern: pattern.into(),
                priority: 0,
                group: group.into(),
                strip,
                prefix: String::new(),
            }),
        })
        .await
        .unwrap();
    }
    let mut gw = cluster.gateways(1).await;
    for (i, id) in ["gw-a", "gw-b", "gw-c"].iter().enumerate() {
        gw.put_gateway(pb::PutGatewayRequest {
            id: (*id).into(),
            group: "pstn".into(),
            address: format!("127.0.0.1:{}", 15001 + i),
            priority: i as u32 + 1,
            weight: 1,
            capacity: 0,
        })
        .await
        .unwrap();
    }
}

fn contacts(r: &Reply) -> Vec<String> {
    r.headers("Contact")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_at_one_node_invite_at_another_over_udp_and_tcp() {
    let cluster = Cluster::start_sip(3, |_| {}).await;
    routes(&cluster).await;
    let (n1, n3) = (cluster.sip_addr(1), cluster.sip_addr(3));
    let phone = Udp::new().await;
    let via = ("UDP", phone.addr());

    let reg = request(
        "REGISTER",
        "sip:127.0.0.1",
        "sip:2001@127.0.0.1",
        "reg-1",
        1,
        via,
        "Contact: <sip:2001@10.0.0.5:5070>;expires=600\r\nUser-Agent: desk-2001\r\n",
    );
    let ok = phone.ask(n1, &reg).await;
    assert_eq!(ok.code(), 200, "{}", ok.text);
    assert_eq!(contacts(&ok), ["<sip:2001@10.0.0.5:5070>;expires=600"]);
    let via_back = ok.header("Via").unwrap();
    assert!(
        via_back.contains(&format!(";received=127.0.0.1;rport={}", phone.addr().port())),
        "{via_back}"
    );

    // Every node knows the binding, controlled by node 1.
    let b = cluster.registrar(2).await.lookup(lookup("2001", true)).await.unwrap().into_inner();
    assert_eq!(b.bindings.len(), 1);
    assert_eq!((b.bindings[0].node_id, b.bindings[0].device_name.as_str()), (1, "desk-2001"));
    let first_expiry = b.bindings[0].expires_at_ms;

    // A retransmission: the same answer, and no second write (a second
    // write would move the expiry on).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = phone.ask(n1, &reg).await;
    assert_eq!(again.text, ok.text);
    let b = cluster.registrar(2).await.lookup(lookup("2001", true)).await.unwrap().into_inner();
    assert_eq!(b.bindings[0].expires_at_ms, first_expiry, "the retransmission wrote again");

    // The same Call-ID with a lower CSeq is refused (RFC 3261 §10.3 step 7).
    let reg2 = request(
        "REGISTER",
        "sip:127.0.0.1",
        "sip:2001@127.0.0.1",
        "reg-1",
        5,
        via,
        "Contact: <sip:2001@10.0.0.5:5070>\r\n",
    );
    assert_eq!(phone.ask(n1, &reg2).await.code(), 200);
    let old = request(
        "REGISTER",
        "sip:127.0.0.1",
        "sip:2001@127.0.0.1",
        "reg-1",
        3,
        via,
        "Contact: <sip:2001@10.0.0.5:5070>\r\n",
    );
    let refused = phone.ask(n1, &old).await;
    assert_eq!(refused.code(), 400, "{}", refused.text);
    assert!(refused.header("Warning").is_some());

    // A query (no Contact) lists the bindings; at another node too.
    let query = request("REGISTER", "sip:127.0.0.1", "sip:2001@127.0.0.1", "q-1", 1, via, "");
    let listed = phone.ask(cluster.sip_addr(2), &query).await;
    assert_eq!(listed.code(), 200);
    assert_eq!(contacts(&listed).len(), 1);

    // The INVITE at node 3 finds the device registered at node 1.
    let inv = request("INVITE", "sip:2001@127.0.0.1", "sip:2001@127.0.0.1", "inv-1", 1, via, "");
    let moved = phone.ask(n3, &inv).await;
    assert_eq!(moved.code(), 302, "{}", moved.text);
    assert_eq!(contacts(&moved), ["<sip:2001@10.0.0.5:5070>;q=1"]);
    let handling = moved.header("X-Switchboard-Node").unwrap();
    assert!(handling.starts_with("3;sip="), "{handling}");
    // The ACK to the 302 is absorbed; a retransmitted INVITE gets the same bytes.
    phone
        .send(n3, &request("ACK", "sip:2001@127.0.0.1", "sip:2001@127.0.0.1", "inv-1", 1, via, ""))
        .await;
    assert_eq!(phone.ask(n3, &inv).await.text, moved.text);

    // Gateways over TCP, on one connection, the request split in two writes.
    let mut tcp = Tcp::connect(n3).await;
    let inv = request(
        "INVITE",
        "sip:90123@127.0.0.1",
        "sip:90123@127.0.0.1",
        "inv-2",
        1,
        ("TCP", tcp.addr()),
        "",
    );
    tcp.send(&inv[..40]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    tcp.send(&inv[40..]).await;
    let moved = tcp.recv(Duration::from_secs(5)).await.expect("302 over TCP");
    assert_eq!(moved.code(), 302, "{}", moved.text);
    assert_eq!(
        contacts(&moved),
        [
            "<sip:0123@127.0.0.1:15001>;q=1",
            "<sip:0123@127.0.0.1:15002>;q=0.667",
            "<sip:0123@127.0.0.1:15003>;q=0.334"
        ]
    );
    // A CRLFCRLF ping gets a CRLF pong (RFC 5626 §3.5.1).
    tcp.send(b"\r\n\r\n").await;
    assert_eq!(tcp.read_exact(2, Duration::from_secs(5)).await.as_deref(), Some(&b"\r\n"[..]));
    // A REGISTER over TCP, answered on the same connection.
    let reg = request(
        "REGISTER",
        "sip:127.0.0.1",
        "sip:2002@127.0.0.1",
        "reg-tcp",
        1,
        ("TCP", tcp.addr()),
        "Contact: <sip:2002@10.0.0.6;transport=tcp>\r\n",
    );
    tcp.send(&reg).await;
    let ok = tcp.recv(Duration::from_secs(5)).await.expect("200 over TCP");
    assert_eq!(ok.code(), 200, "{}", ok.text);
    // A message without Content-Length cannot be framed: 400, then closed.
    tcp.send(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK9\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x>\r\nCall-ID: nocl\r\nCSeq: 1 OPTIONS\r\n\r\n").await;
    let bad = tcp.recv(Duration::from_secs(5)).await.expect("400 before closing");
    assert_eq!(bad.code(), 400, "{}", bad.text);
    assert!(tcp.closed(Duration::from_secs(5)).await);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_authentication_with_a_nonce_from_another_node() {
    let cluster =
        Cluster::start_sip(3, |c| c.sip.algorithms = vec!["SHA-256".into(), "MD5".into()]).await;
    let realm = "switchboard";
    let mut users = cluster.users(1).await;
    users
        .put_user(pb::PutUserRequest {
            user: "3001".into(),
            realm: realm.into(),
            ha1_md5: ha1(Algorithm::Md5, "3001", realm, "s3cret"),
            ha1_sha256: ha1(Algorithm::Sha256, "3001", realm, "s3cret"),
        })
        .await
        .unwrap();
    let phone = Udp::new().await;
    let via = ("UDP", phone.addr());
    let contact = "Contact: <sip:3001@10.0.0.7>\r\n";
    // Wait until node 1 has applied the user: then it challenges.
    let mut challenge = None;
    for cseq in 1..100 {
        let r = phone
            .ask(
                cluster.sip_addr(1),
                &request(
                    "REGISTER",
                    "sip:127.0.0.1",
                    "sip:3001@127.0.0.1",
                    "auth-0",
                    cseq,
                    via,
                    contact,
                ),
            )
            .await;
        if r.code() == 401 {
            challenge = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let challenge = challenge.expect("a 401 once the user exists");
    let offers = challenge.headers("WWW-Authenticate");
    assert_eq!(offers.len(), 2, "{}", challenge.text);
    assert!(
        offers[0].contains("algorithm=SHA-256") && offers[1].contains("algorithm=MD5"),
        "{offers:?}"
    );

    let answer = |offer: &str, user: &str, password: &str| {
        let mut prompt = digest_auth::parse(offer).expect("digest_auth parses the challenge");
        let ctx = digest_auth::AuthContext::new_with_method(
            user,
            password,
            "sip:127.0.0.1",
            None::<&[u8]>,
            digest_auth::HttpMethod("REGISTER".into()),
        );
        format!("Authorization: {}\r\n", prompt.respond(&ctx).unwrap().to_header_string())
    };
    // Both algorithms, each answered at node 2 with node 1's nonce.
    for (i, offer) in offers.iter().enumerate() {
        let extra = format!("{}{contact}", answer(offer, "3001", "s3cret"));
        let r = phone
            .ask(
                cluster.sip_addr(2),
                &request(
                    "REGISTER",
                    "sip:127.0.0.1",
                    "sip:3001@127.0.0.1",
                    &format!("auth-ok-{i}"),
                    1,
                    via,
                    &extra,
                ),
            )
            .await;
        assert_eq!(r.code(), 200, "{offer}: {}", r.text);
    }
    // A wrong password is challenged again; another user's credentials are forbidden.
    let extra = format!("{}{contact}", answer(&offers[1], "3001", "wrong"));
    let r = phone
        .ask(
            cluster.sip_addr(2),
            &request("REGISTER", "sip:127.0.0.1", "sip:3001@127.0.0.1", "auth-bad", 1, via, &extra),
        )
        .await;
    assert_eq!(r.code(), 401, "{}", r.text);
    users
        .put_user(pb::PutUserRequest {
            user: "3002".into(),
            realm: realm.into(),
            ha1_md5: ha1(Algorithm::Md5, "3002", realm, "other"),
            ha1_sha256: ha1(Algorithm::Sha256, "3002", realm, "other"),
        })
        .await
        .unwrap();
    let extra = format!("{}{contact}", answer(&offers[1], "3002", "other"));
    let r = phone
        .ask(
            cluster.sip_addr(1),
            &request("REGISTER", "sip:127.0.0.1", "sip:3001@127.0.0.1", "auth-x", 1, via, &extra),
        )
        .await;
    assert_eq!(r.code(), 403, "{}", r.text);
    // An INVITE needs no credentials (the redirect server only redirects).
    let r = phone
        .ask(
            cluster.sip_addr(3),
            &request("OPTIONS", "sip:127.0.0.1", "sip:127.0.0.1", "opt", 1, via, ""),
        )
        .await;
    assert_eq!(r.code(), 200);
    assert!(r.header("Allow").unwrap().contains("REGISTER"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unsupported_requests_get_their_codes_and_the_node_keeps_serving() {
    let cluster = Cluster::start_sip(3, |_| {}).await;
    let node = cluster.sip_addr(2);
    let phone = Udp::new().await;
    let via = ("UDP", phone.addr());
    let a = phone.addr();
    let base = |tail: &str| {
        format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKneg;rport\r\n\
             From: <sip:a@h>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: neg\r\nCSeq: 1 OPTIONS\r\n{tail}"
        )
        .into_bytes()
    };
    let mut many = String::new();
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("Content-Length short", base("Content-Length: 50\r\n\r\nv=0\r\n"), Some(400)),
        ("Content-Length not a number", base("Content-Length: abc\r\n\r\n"), Some(400)),
        ("Content-Length huge", base("Content-Length: 99999999999999\r\n\r\n"), Some(400)),
        ("Max-Forwards not a number", base("Max-Forwards: lots\r\n\r\n"), Some(400)),
        ("two Call-IDs", base("Call-ID: other\r\n\r\n"), Some(400)),
        (
            "missing Call-ID",
            format!("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKm;rport\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:x>\r\nCSeq: 1 OPTIONS\r\n\r\n").into_bytes(),
            Some(400),
        ),
        ("missing From", format!("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKf;rport\r\nTo: <sip:x>\r\nCall-ID: f\r\nCSeq: 1 OPTIONS\r\n\r\n").into_bytes(), Some(400)),
        ("CSeq method differs", request("INVITE", "sip:1@h", "sip:1@h", "m", 1, via, "").replace_cseq(), Some(400)),
        ("Request-URI with headers", request("INVITE", "sip:1@h?Subject=x", "sip:1@h", "rh", 1, via, ""), Some(400)),
        ("Request-URI scheme", request("INVITE", "mailto:a@h", "sip:1@h", "sc", 1, via, ""), Some(416)),
        ("Max-Forwards 0", request("INVITE", "sip:2001@h", "sip:2001@h", "mf", 1, via, "").replace_mf0(), Some(483)),
        ("BYE", request("BYE", "sip:2001@h", "sip:2001@h", "bye", 1, via, ""), Some(405)),
        ("CANCEL", request("CANCEL", "sip:2001@h", "sip:2001@h", "can", 1, via, ""), Some(405)),
        ("SUBSCRIBE", request("SUBSCRIBE", "sip:2001@h", "sip:2001@h", "sub", 1, via, ""), Some(405)),
        ("unknown method", request("FROBNICATE", "sip:2001@h", "sip:2001@h", "fro", 1, via, ""), Some(501)),
        ("too many headers", base(&format!("{many}\r\n")), None),
        ("no Via", b"OPTIONS sip:x SIP/2.0\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:x>\r\nCall-ID: nv\r\nCSeq: 1 OPTIONS\r\n\r\n".to_vec(), None),
        ("SIP/3.0", b"OPTIONS sip:x SIP/3.0\r\nVia: SIP/3.0/UDP h\r\n\r\n".to_vec(), None),
        ("binary garbage", (0..=255u8).cycle().take(3000).collect(), None),
        ("64 KB datagram", { let mut v = base("X-Pad: "); v.resize(65_000, b'a'); v.extend_from_slice(b"\r\n\r\n"); v }, None),
        ("a response", b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKr\r\nCSeq: 1 OPTIONS\r\n\r\n".to_vec(), None),
    ];
    let ping = request("OPTIONS", "sip:127.0.0.1", "sip:127.0.0.1", "alive", 1, via, "");
    for (name, bytes, want) in &cases {
        phone.send(node, bytes).await;
        let got = phone.recv(Duration::from_millis(if want.is_some() { 5_000 } else { 500 })).await;
        assert_eq!(got.as_ref().map(Reply::code), *want, "{name}: {got:?}");
        if let Some(r) = got {
            if r.code() == 400 {
                assert!(
                    r.header("Warning").is_some_and(|w| w.starts_with("399 switchboard \"")),
                    "{name}: {}",
                    r.text
                );
            }
        }
        // Still serving.
        assert_eq!(phone.ask(node, &ping).await.code(), 200, "after {name}");
    }
    // And the Expires rules of REGISTER (§10.3): 423 with Min-Expires, `*` rules.
    let reg = |cseq: u32, extra: &str| {
        request("REGISTER", "sip:127.0.0.1", "sip:2005@127.0.0.1", "neg-reg", cseq, via, extra)
    };
    let r = phone.ask(node, &reg(1, "Contact: <sip:2005@h>;expires=5\r\n")).await;
    assert_eq!((r.code(), r.header("Min-Expires").as_deref()), (423, Some("60")), "{}", r.text);
    assert_eq!(phone.ask(node, &reg(2, "Contact: *\r\n")).await.code(), 400);
    assert_eq!(phone.ask(node, &reg(3, "Contact: *\r\nExpires: 0\r\n")).await.code(), 200);
    assert_eq!(
        phone.ask(node, &reg(4, "Require: gruu\r\nContact: <sip:2005@h>\r\n")).await.code(),
        420
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_without_a_leader_gets_503_with_retry_after() {
    let mut cluster = Cluster::start_sip(3, |c| c.writes.timeout_ms = 1_500).await;
    let phone = Udp::new().await;
    cluster.stop_node(1).await;
    cluster.stop_node(2).await;
    let r = phone
        .ask(
            cluster.sip_addr(3),
            &request(
                "REGISTER",
                "sip:127.0.0.1",
                "sip:2009@127.0.0.1",
                "nl",
                1,
                ("UDP", phone.addr()),
                "Contact: <sip:2009@h>\r\n",
            ),
        )
        .await;
    assert_eq!(r.code(), 503, "{}", r.text);
    assert_eq!(r.header("Retry-After").as_deref(), Some("2"));
    // INVITEs are answered from local state all the same.
    let r = phone
        .ask(
            cluster.sip_addr(3),
            &request("INVITE", "sip:2009@h", "sip:2009@h", "nl-i", 1, ("UDP", phone.addr()), ""),
        )
        .await;
    assert_eq!(r.code(), 404, "{}", r.text);
    cluster.start_node(1).await;
    cluster.start_node(2).await;
    cluster.shutdown().await;
}

/// Byte edits for the negative table.
trait Edit {
    fn replace_cseq(self) -> Vec<u8>;
    fn replace_mf0(self) -> Vec<u8>;
}

impl Edit for Vec<u8> {
    fn replace_cseq(self) -> Vec<u8> {
        String::from_utf8(self).unwrap().replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS").into_bytes()
    }
    fn replace_mf0(self) -> Vec<u8> {
        String::from_utf8(self).unwrap().replace("Max-Forwards: 70", "Max-Forwards: 0").into_bytes()
    }
}

/// A node that has not joined a cluster has no state to answer from: an
/// INVITE gets 503 (never a 404 for a number it has simply not heard of).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_cluster_answers_invites_with_503() {
    let mut cluster = Cluster::start_sip(3, |_| {}).await;
    cluster.add_node_config(4).await;
    let addr = switchboard_tests::free_addr();
    cluster.nodes.get_mut(&4).unwrap().config.sip.listen = Some(addr);
    cluster.start_node(4).await;
    let phone = Udp::new().await;
    let inv = request("INVITE", "sip:2001@h", "sip:2001@h", "out-1", 1, ("UDP", phone.addr()), "");
    let mut reply = None;
    for _ in 0..50 {
        phone.send(addr, &inv).await;
        if let Some(r) = phone.recv(Duration::from_millis(200)).await {
            reply = Some(r);
            break;
        }
    }
    let r = reply.expect("node 4 answers SIP");
    assert_eq!(r.code(), 503, "{}", r.text);
    assert!(r.header("Warning").unwrap().contains("not joined"), "{}", r.text);
    cluster.stop_node(4).await;
    cluster.shutdown().await;
}

/// TCP limits: past `tcp_max_connections` a connection is closed at once;
/// a connection silent for `tcp_idle_timeout_s` is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connection_limit_and_idle_timeout() {
    let cluster = Cluster::start_sip(3, |c| {
        c.sip.tcp_max_connections = 2;
        c.sip.tcp_idle_timeout_s = 1;
    })
    .await;
    let node = cluster.sip_addr(1);
    let mut a = Tcp::connect(node).await;
    let mut b = Tcp::connect(node).await;
    // Both are served.
    for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
        let ping = request(
            "OPTIONS",
            "sip:127.0.0.1",
            "sip:127.0.0.1",
            &format!("lim-{i}"),
            1,
            ("TCP", c.addr()),
            "",
        );
        c.send(&ping).await;
        assert_eq!(c.recv(Duration::from_secs(5)).await.expect("served").code(), 200);
    }
    // A third is closed without an answer.
    let mut third = Tcp::connect(node).await;
    assert!(third.closed(Duration::from_secs(2)).await, "the third connection was kept");
    // Silent for over a second: closed; then a new connection is accepted.
    assert!(a.closed(Duration::from_secs(3)).await, "an idle connection was kept open");
    assert!(b.closed(Duration::from_secs(3)).await);
    let mut c = Tcp::connect(node).await;
    let ping =
        request("OPTIONS", "sip:127.0.0.1", "sip:127.0.0.1", "lim-after", 1, ("TCP", c.addr()), "");
    c.send(&ping).await;
    assert_eq!(
        c.recv(Duration::from_secs(5)).await.expect("served after the others closed").code(),
        200
    );
    cluster.shutdown().await;
}

/// A nonce older than `nonce_ttl_s`, answered with the right password, gets
/// a 401 with `stale=true` (so the phone retries without asking its user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_nonce_is_stale() {
    let cluster = Cluster::start_sip(3, |c| {
        c.sip.nonce_ttl_s = 1;
        c.sip.algorithms = vec!["MD5".into()];
    })
    .await;
    let realm = "switchboard";
    cluster
        .users(1)
        .await
        .put_user(pb::PutUserRequest {
            user: "3005".into(),
            realm: realm.into(),
            ha1_md5: ha1(Algorithm::Md5, "3005", realm, "pw"),
            ha1_sha256: ha1(Algorithm::Sha256, "3005", realm, "pw"),
        })
        .await
        .unwrap();
    let phone = Udp::new().await;
    let via = ("UDP", phone.addr());
    let contact = "Contact: <sip:3005@10.0.0.8>\r\n";
    let mut offer = None;
    for cseq in 1..100 {
        let r = phone
            .ask(
                cluster.sip_addr(1),
                &request(
                    "REGISTER",
                    "sip:127.0.0.1",
                    "sip:3005@127.0.0.1",
                    "st-0",
                    cseq,
                    via,
                    contact,
                ),
            )
            .await;
        if r.code() == 401 {
            offer = r.header("WWW-Authenticate");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let offer = offer.expect("a challenge");
    assert!(!offer.contains("stale"), "{offer}");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let mut prompt = digest_auth::parse(&offer).unwrap();
    let ctx = digest_auth::AuthContext::new_with_method(
        "3005",
        "pw",
        "sip:127.0.0.1",
        None::<&[u8]>,
        digest_auth::HttpMethod("REGISTER".into()),
    );
    let extra =
        format!("Authorization: {}\r\n{contact}", prompt.respond(&ctx).unwrap().to_header_string());
    let r = phone
        .ask(
            cluster.sip_addr(2),
            &request("REGISTER", "sip:127.0.0.1", "sip:3005@127.0.0.1", "st-1", 1, via, &extra),
        )
        .await;
    assert_eq!(r.code(), 401, "{}", r.text);
    assert!(r.header("WWW-Authenticate").unwrap().contains("stale=true"), "{}", r.text);
    cluster.shutdown().await;
}
