//! sipp, the SIP traffic generator (Debian package `sip-tester`), against
//! three real `switchboard serve` processes: the scenarios of `tests/sip/`
//! as a third-party client sees the SIP front end.
//!
//! 1 000 users register with MD5 digest authentication at node 1 over UDP,
//! a few again over TCP; INVITEs at node 3 are redirected (302) to the
//! contacts bound at node 1; INVITEs for an outside number get the three
//! gateways in q order over UDP and TCP (and a copy of that scenario
//! expecting the wrong order must fail, so the check can fail); OPTIONS
//! gets 200. Each sipp run must end with exit code 0, the expected number
//! of successful calls and no failed call or unexpected message.
//!
//! Skipped (and passing, with a message) when `sipp` is not on PATH.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchboard::sip::digest::{ha1, Algorithm};
use switchboard_proto::v1 as pb;
use switchboard_proto::v1::cluster_client::ClusterClient;
use switchboard_proto::v1::dial_plan_client::DialPlanClient;
use switchboard_proto::v1::gateways_client::GatewaysClient;
use switchboard_proto::v1::users_client::UsersClient;
use tonic::transport::Channel;

mod support;
use support::Nodes;
const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/sip");
const REALM: &str = "switchboard";
/// Users 2000..2999, password `pw<number>`.
const USERS: std::ops::Range<u32> = 2000..3000;
/// The longest one sipp run may take, enforced by sipp (`-timeout`) and,
/// a few seconds later, by killing it.
const SIPP_TIMEOUT_S: u64 = 30;

fn password(number: u32) -> String {
    format!("pw{number}")
}

/// Three nodes, each with gRPC and SIP on free ports, gateway probing off
/// (the gateways are not real) and MD5 the only digest algorithm (sipp
/// answers nothing else).
fn start_cluster(dir: &Path) -> (Nodes, Vec<String>, Vec<String>) {
    let config = "[gateways]\nprobe_interval_ms = 0\n\n[sip]\nalgorithms = [\"MD5\"]\n";
    let sip: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", support::free_port())).collect();
    let (nodes, grpc) =
        support::start_three(dir, config, |i| vec!["--sip".into(), sip[i - 1].clone()]);
    (nodes, grpc, sip)
}

fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// The gRPC address of the node that says it leads (20 s at most).
async fn wait_leader(grpc: &[String]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for addr in grpc {
            if let Ok(s) = ClusterClient::new(channel(addr)).status(pb::StatusRequest {}).await {
                if s.get_ref().state == "leader" {
                    return addr.clone();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader within 20 s");
}

/// Routes `2XXX` (registered numbers) and `9@` (group pstn, strip 1), and
/// gateways gw-a/b/c at 127.0.0.1:15001-15003 with priorities 1-3.
async fn routes(leader: &str) {
    let mut dp = DialPlanClient::new(channel(leader));
    for (pattern, group, strip) in [("2XXX", "", 0), ("9@", "pstn", 1)] {
        let route = pb::DialRoute {
            pattern: pattern.into(),
            priority: 0,
            group: group.into(),
            strip,
            prefix: String::new(),
        };
        dp.put_route(pb::PutRouteRequest { route: Some(route) }).await.expect("put route");
    }
    let mut gw = GatewaysClient::new(channel(leader));
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
        .expect("put gateway");
    }
}

/// The 1 000 users, 50 writes in flight.
async fn users(leader: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..50u32 {
        let users = UsersClient::new(channel(leader));
        tasks.spawn(async move {
            let mut users = users;
            for n in USERS.clone().filter(|n| n % 50 == lane) {
                let (user, pw) = (n.to_string(), password(n));
                users
                    .put_user(pb::PutUserRequest {
                        user: user.clone(),
                        realm: REALM.into(),
                        ha1_md5: ha1(Algorithm::Md5, &user, REALM, &pw),
                        ha1_sha256: ha1(Algorithm::Sha256, &user, REALM, &pw),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("put user {n}: {e}"));
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("user writer");
    }
}

/// Wait until the node at SIP address `addr` challenges an unauthenticated
/// REGISTER with 401. A brand-new cluster answers 503 (Retry-After) until
/// its first leader has committed the nonce secret and this node has
/// applied it; holding the users is not enough, since the secret may
/// commit after them. Sent by hand over UDP so sipp's own runs stay clean.
fn wait_challenge(addr: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let local = socket.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::from("no answer");
    for attempt in 0u32.. {
        let request = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-ready-{attempt}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{n}@127.0.0.1>;tag=ready\r\n\
             To: <sip:{n}@127.0.0.1>\r\n\
             Call-ID: ready-{attempt}@127.0.0.1\r\n\
             CSeq: 1 REGISTER\r\n\
             Content-Length: 0\r\n\r\n",
            n = USERS.start,
        );
        socket.send_to(request.as_bytes(), addr).expect("send");
        let mut buf = [0u8; 4096];
        if let Ok(n) = socket.recv(&mut buf) {
            last = String::from_utf8_lossy(&buf[..n]).into_owned();
            if last.starts_with("SIP/2.0 401 ") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never challenged a REGISTER; last answer:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The users as node `addr` sees them after catching up with the leader.
async fn user_count(addr: &str) -> usize {
    let req = pb::ListUsersRequest { consistency: pb::Consistency::Linearizable as i32 };
    UsersClient::new(channel(addr))
        .list_users(req)
        .await
        .expect("list users")
        .into_inner()
        .users
        .len()
}

/// What one sipp run did, from its exit code and `-trace_stat` file.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    successful: u64,
    failed: u64,
    unexpected: u64,
    /// sipp's last screen and error log, for assertion messages.
    report: String,
}

impl Run {
    /// Exit code 0, `calls` successful calls, none failed, no unexpected message.
    fn assert_clean(&self, what: &str, calls: u64) {
        assert!(
            self.code == Some(0)
                && self.successful == calls
                && self.failed == 0
                && self.unexpected == 0,
            "{what}: expected exit 0 and {calls} successful calls, no failed one, no unexpected \
             message; got exit {:?}, {} successful, {} failed, {} unexpected\n{}",
            self.code,
            self.successful,
            self.failed,
            self.unexpected,
            self.report
        );
    }
}

/// A column of sipp's statistics CSV (`;`-separated, header line first),
/// from its last line.
fn stat(csv: &str, column: &str) -> u64 {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap_or_default().split(';').collect();
    let i = header
        .iter()
        .position(|h| *h == column)
        .unwrap_or_else(|| panic!("no {column} column in sipp statistics:\n{csv}"));
    last.get(i)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {column} value in sipp statistics:\n{csv}"))
}

/// Run sipp with a scenario of `tests/sip/` against `target`, with
/// statistics, screen and error logs in `dir`; `-timeout` bounds it, and a
/// kill five seconds later in case sipp does not stop on its own.
async fn run_sipp(
    sipp: &Path,
    dir: &Path,
    name: &str,
    scenario: &Path,
    target: &str,
    args: &[&str],
) -> Run {
    let stats = dir.join(format!("{name}.csv"));
    let screen = dir.join(format!("{name}.screen"));
    let errors = dir.join(format!("{name}.errors"));
    let logs = dir.join(format!("{name}.logs"));
    let port = support::free_port().to_string();
    let timeout = format!("{SIPP_TIMEOUT_S}s");
    let mut cmd = tokio::process::Command::new(sipp);
    cmd.arg("-sf")
        .arg(scenario)
        .args(["-i", "127.0.0.1", "-p", &port, "-nostdin", "-timeout", &timeout])
        // A call the scenario fails is not followed by a BYE (noise in the error log).
        .args(["-default_behaviors", "all,-bye"])
        .args(["-timeout_error", "-recv_timeout", "5000", "-trace_stat", "-fd", "1", "-stf"])
        .arg(&stats)
        .args(["-trace_screen", "-screen_file"])
        .arg(&screen)
        .args(["-trace_err", "-error_file"])
        .arg(&errors)
        .args(["-trace_logs", "-log_file"])
        .arg(&logs)
        .args(args)
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("start sipp");
    let limit = Duration::from_secs(SIPP_TIMEOUT_S + 5);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name}: sipp still running after {limit:?}; killed"))
        .expect("sipp output");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let csv = read(&stats);
    let tail = |text: String, n: usize| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    };
    let report = format!(
        "--- sipp stderr\n{}\n--- screen\n{}\n--- errors\n{}\n--- logs\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(read(&screen), 60),
        tail(read(&errors), 40),
        tail(read(&logs), 20)
    );
    if csv.is_empty() {
        panic!("{name}: sipp wrote no statistics (exit {:?})\n{report}", out.status.code());
    }
    Run {
        code: out.status.code(),
        successful: stat(&csv, "SuccessfulCall(C)"),
        failed: stat(&csv, "FailedCall(C)"),
        unexpected: stat(&csv, "FailedUnexpectedMessage(C)"),
        report,
    }
}

/// A copy of scenario `file` with `right` replaced by `wrong`, which must
/// fail its one call (exit code 1): the check `right` stands in can fail.
#[allow(clippy::too_many_arguments)]
async fn must_fail(
    sipp: &Path,
    dir: &Path,
    name: &str,
    file: &Path,
    right: &str,
    wrong: &str,
    target: &str,
    args: &[&str],
) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        text.contains(right),
        "{name}: {} no longer has {right:?}; update this test",
        file.display()
    );
    let copy = dir.join(format!("{name}.xml"));
    std::fs::write(&copy, text.replace(right, wrong)).unwrap();
    let run = run_sipp(sipp, dir, name, &copy, target, &[args, &["-m", "1"]].concat()).await;
    assert!(
        run.code == Some(1) && run.failed == 1 && run.successful == 0,
        "{name}: expected the call to fail (exit 1, 1 failed call): {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_and_is_redirected_over_udp_and_tcp() {
    let Some(sipp_bin) = support::on_path(&["sipp"]) else {
        println!("SKIPPED: sipp is not on PATH (install the sip-tester package to run this test)");
        return;
    };
    let started = Instant::now();
    // SWITCHBOARD_SIPP_KEEP=1 keeps the node logs, CSV files and sipp's
    // statistics, screens and logs after the test.
    let temp = tempfile::tempdir().unwrap();
    let (_temp, root) = if std::env::var_os("SWITCHBOARD_SIPP_KEEP").is_some() {
        let root = temp.keep();
        eprintln!("keeping {}", root.display());
        (None, root)
    } else {
        let root = temp.path().to_path_buf();
        (Some(temp), root)
    };
    let (_nodes, grpc, sip) = start_cluster(&root);
    let leader = wait_leader(&grpc).await;
    routes(&leader).await;
    users(&leader).await;
    // Node 1 verifies the digests: it must hold every user first.
    assert_eq!(user_count(&grpc[0]).await, USERS.len());
    for addr in &sip {
        wait_challenge(addr);
    }
    eprintln!("cluster ready with {} users in {:?}", USERS.len(), started.elapsed());

    let scenario = |f: &str| Path::new(SCENARIOS).join(f);
    let d = root.as_path();
    let csv = |name: &str, numbers: std::ops::Range<u32>| {
        let path = d.join(name);
        let mut text = String::from("SEQUENTIAL\n");
        for n in numbers {
            text.push_str(&format!("{n};[authentication username={n} password={}]\n", password(n)));
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let all = csv("users.csv", USERS);
    let few = csv("users_tcp.csv", 2000..2020);
    let (all, few) = (all.to_str().unwrap(), few.to_str().unwrap());
    let n = USERS.len().to_string();

    // 1 000 REGISTERs with digest authentication at node 1 over UDP...
    let reg = scenario("register_auth.xml");
    let args = ["-inf", all, "-m", &n, "-r", "250"];
    let run = run_sipp(&sipp_bin, d, "register_udp", &reg, &sip[0], &args).await;
    run.assert_clean("register_auth over UDP", USERS.len() as u64);
    // ...and a few again over one TCP connection (same contacts: refreshes).
    let args = ["-t", "t1", "-inf", few, "-m", "20", "-r", "100"];
    let run = run_sipp(&sipp_bin, d, "register_tcp", &reg, &sip[0], &args).await;
    run.assert_clean("register_auth over TCP", 20);
    // The check of the 200's Contact can fail.
    let expected = r#"value="sip:[field0]@[local_ip]:5070""#;
    let other = r#"value="sip:[field0]@[local_ip]:5071""#;
    let args = ["-inf", few];
    must_fail(&sipp_bin, d, "register_wrong", &reg, expected, other, &sip[0], &args).await;
    // A wrong password is refused (a second 401): the call fails.
    let bad = d.join("users_bad.csv");
    std::fs::write(&bad, "SEQUENTIAL\n2000;[authentication username=2000 password=nope]\n")
        .unwrap();
    let args = ["-inf", bad.to_str().unwrap(), "-m", "1"];
    let run = run_sipp(&sipp_bin, d, "register_bad_password", &reg, &sip[0], &args).await;
    assert!(
        run.code == Some(1) && run.failed == 1 && run.unexpected == 1,
        "a wrong password must fail the call on an unexpected 401: {run:?}"
    );
    eprintln!("registered in {:?}", started.elapsed());

    // INVITEs at node 3 for every number bound at node 1: 302 to that contact.
    let inv = scenario("invite302_registered.xml");
    let args = ["-inf", all, "-m", &n, "-r", "500"];
    let run = run_sipp(&sipp_bin, d, "invite_registered", &inv, &sip[2], &args).await;
    run.assert_clean("invite302_registered at node 3", USERS.len() as u64);
    let args = ["-inf", few];
    must_fail(&sipp_bin, d, "invite_wrong", &inv, expected, other, &sip[2], &args).await;

    // INVITEs to the PSTN at node 2: three gateways in q order, UDP and TCP.
    let gws = scenario("invite302_gateways.xml");
    for (name, transport) in [("gateways_udp", "u1"), ("gateways_tcp", "t1")] {
        let args = ["-t", transport, "-m", "100", "-r", "200"];
        let run = run_sipp(&sipp_bin, d, name, &gws, &sip[1], &args).await;
        run.assert_clean(name, 100);
    }
    // The order check can fail: expecting gw-b first fails the call...
    let right = r"15001&gt;;q=1[^0-9.].*Contact: &lt;sip:0123@127\.0\.0\.1:15002&gt;;q=0\.667";
    let wrong = r"15002&gt;;q=1[^0-9.].*Contact: &lt;sip:0123@127\.0\.0\.1:15001&gt;;q=0\.667";
    must_fail(&sipp_bin, d, "gateways_swapped", &gws, right, wrong, &sip[1], &[]).await;
    // ...and so can the "no Contact after gw-c" check (there are after gw-a).
    let last = r#"regexp="15003&gt;;q=0\.334[^0-9].*Contact:""#;
    let first = r#"regexp="15001&gt;;q=1[^0-9.].*Contact:""#;
    must_fail(&sipp_bin, d, "gateways_extra", &gws, last, first, &sip[1], &[]).await;

    // OPTIONS at every node.
    let opt = scenario("options.xml");
    for (i, addr) in sip.iter().enumerate() {
        let run =
            run_sipp(&sipp_bin, d, &format!("options{}", i + 1), &opt, addr, &["-m", "10"]).await;
        run.assert_clean("options", 10);
    }
    eprintln!("sipp test done in {:?}", started.elapsed());
}
