//! The status page in a real browser: three `switchboard serve` processes
//! with `--http`, the page of a follower open in headless Chromium, the
//! leader killed with `kill -9`, and the page — the DOM Chromium rendered,
//! not the JSON — must show the dead leader as down within 2 s, then keep
//! working (a new leader, the `node_down` event) although the node serving
//! it lost its leader. A screenshot is saved as `target/status-page.png`.
//!
//! Chromium is driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: NUL-terminated JSON messages on file
//! descriptors 3 and 4), which needs no WebSocket client and no new
//! dependency: create a tab, attach to it, evaluate expressions in the page,
//! capture a screenshot.
//!
//! Skipped (and passing, with a message) when `chromium` is not on PATH
//! (Debian package `chromium`; `.ci/run` installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;
use support::{free_port, Nodes, BIN};

/// How long after the kill the page may still show the leader as up.
const DOWN_WITHIN: Duration = Duration::from_secs(2);

/// Three nodes, each serving its status page; (nodes, gRPC, HTTP addresses).
fn start_cluster(dir: &Path) -> (Nodes, Vec<String>, Vec<String>) {
    let http: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let (nodes, grpc) = support::start_three(dir, "[gateways]\nprobe_interval_ms = 0\n", |i| {
        vec!["--http".into(), http[i - 1].clone()]
    });
    (nodes, grpc, http)
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    conn.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    let code = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// `/api/status` of the node whose page is at `addr`, as JSON.
fn status(addr: &str) -> Option<serde_json::Value> {
    let (code, body) = http_get(addr, "/api/status")?;
    (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

fn ctl(endpoints: &str, args: &[&str]) {
    let out = Command::new(BIN)
        .args(["ctl", "--endpoints", endpoints])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Headless Chromium driven over `--remote-debugging-pipe`.
struct Browser {
    child: Child,
    to_browser: std::io::PipeWriter,
    replies: mpsc::Receiver<serde_json::Value>,
    next_id: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(exe: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (browser_reads, to_browser) = std::io::pipe().unwrap();
        let (from_browser, browser_writes) = std::io::pipe().unwrap();
        let (r, w): (RawFd, RawFd) = (browser_reads.as_raw_fd(), browser_writes.as_raw_fd());
        let mut cmd = Command::new(exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-pipe",
            "--window-size=1400,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls
        // (fcntl, dup2) on descriptors this process owns. Both ends are
        // first copied above 10, so that putting one on 3 cannot overwrite
        // the other if it happened to be 3 or 4; dup2 clears close-on-exec
        // on 3 and 4, which Chromium reads and writes.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                let r = libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 10);
                let w = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        drop((browser_reads, browser_writes));
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            let mut message = Vec::new();
            // Ends when Chromium exits (EOF) or the test is done (send fails).
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop_if(|b| *b == 0);
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&message) {
                    if v.get("id").is_some() && tx.send(v).is_err() {
                        return;
                    }
                }
                message.clear();
            }
        });
        Browser { child, to_browser, replies, next_id: 0, session: None, _profile: profile }
    }

    /// Send one command (to the attached tab once there is one) and wait
    /// at most 10 s for its answer's `result`.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            message["sessionId"] = s.clone().into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .replies
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("chromium did not answer {method} within 10 s: {e}"));
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Open `url` in a new tab and direct later commands to it.
    fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", serde_json::json!({"url": url}));
        let attached = self.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.session = Some(attached["sessionId"].as_str().expect("session id").to_string());
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// A PNG of the page.
    fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png", "captureBeyondViewport": true}),
        );
        base64_decode(r["data"].as_str().expect("screenshot data"))
    }
}

/// Standard base64 (the screenshot's encoding), padding ignored.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:?}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend(n.to_be_bytes()[1..chunk.len()].iter());
    }
    out
}

/// Health of every member row of the page, as rendered (`[[id, health], ...]`).
const HEALTH: &str =
    "[...document.querySelectorAll('#members tr')].map(r => [r.id, r.dataset.health])";

#[test]
fn base64_decodes_what_chromium_sends() {
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    assert_eq!(base64_decode("YWI="), b"ab");
}

#[test]
fn page_shows_a_killed_leader_down_within_two_seconds() {
    let Some(chromium) = support::on_path(&["chromium", "chromium-browser"]) else {
        eprintln!("SKIPPED: chromium not installed (Debian package `chromium`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, grpc, http) = start_cluster(dir.path());
    let endpoints = grpc.join(",");

    // A leader that every node knows, and every member up in the table.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_leader = loop {
        let views: Vec<_> = http.iter().filter_map(|a| status(a)).collect();
        let leaders: Vec<_> = views.iter().map(|v| v["leader_id"].as_u64()).collect();
        let all_up = views.iter().all(|v| {
            v["members"].as_array().is_some_and(|m| {
                m.len() == 3 && m.iter().all(|m| m["health"] == "up" && m["liveness"] == "up")
            })
        });
        if views.len() == 3
            && all_up
            && leaders[0].is_some()
            && leaders.iter().all(|l| *l == leaders[0])
        {
            break leaders[0].unwrap();
        }
        assert!(Instant::now() < deadline, "cluster not ready in 30 s: {views:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Something to show besides members: gateways (one out of service) and a call.
    ctl(
        &endpoints,
        &[
            "gateway",
            "put",
            "gw-east",
            "127.0.0.1:5091",
            "--group",
            "pstn",
            "--weight",
            "60",
            "--capacity",
            "30",
        ],
    );
    ctl(
        &endpoints,
        &["gateway", "put", "gw-west", "127.0.0.1:5092", "--group", "pstn", "--weight", "40"],
    );
    ctl(&endpoints, &["gateway", "report", "gw-west", "timeout", "--retry-after", "120"]);
    ctl(&endpoints, &["call", "start", "call-1", "--from", "1000", "--to", "95551234"]);

    // The page of a follower: it must go on working when its leader dies.
    let follower = (1..=3u64).find(|&id| id != first_leader).unwrap();
    let page = &http[follower as usize - 1];
    let (code, body) = http_get(page, "/").expect("the page is served");
    assert_eq!(code, 200);
    assert!(body.contains("\"node_id\":") && !body.contains("/*STATUS*/null"), "status embedded");

    let mut browser = Browser::launch(&chromium);
    browser.open(&format!("http://{page}/"));
    // Wait until the page shows every member up, both gateways and a
    // leader other than the node serving it. Leadership may still move
    // after start-up; should it move to the serving node, follow the page
    // of another node instead.
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let health = browser.eval(HEALTH);
        let gateways = browser.eval("document.querySelectorAll('#gateways tr').length");
        let shown = browser.eval("document.getElementById('leader').textContent");
        let served = browser.eval("document.getElementById('served-by').textContent");
        let want = serde_json::json!([["member-1", "up"], ["member-2", "up"], ["member-3", "up"]]);
        let shown = shown.as_str().and_then(|l| l.parse::<u64>().ok());
        let served = served.as_str().and_then(|l| l.parse::<u64>().ok());
        if health == want && gateways == 2 {
            match (shown, served) {
                (Some(l), Some(s)) if l != s => break l,
                (Some(l), Some(_)) => {
                    let other = (1..=3u64).find(|&id| id != l).unwrap();
                    let url = format!("http://{}/", http[other as usize - 1]);
                    browser.call("Page.navigate", serde_json::json!({ "url": url }));
                }
                _ => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed the cluster up with a leader elsewhere: {health}, leader {shown:?}, served by {served:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        browser.eval("document.querySelector('#gateway-gw-west').dataset.status"),
        "out_of_service"
    );

    // kill -9 of the leader's process, then watch the rendered DOM.
    let victim = format!("member-{leader}");
    let child = nodes.0[leader as usize - 1].as_mut().unwrap();
    child.kill().expect("kill -9 the leader");
    let killed = Instant::now();
    child.wait().unwrap();
    let shown_down = loop {
        let health = browser.eval(&format!("document.getElementById('{victim}').dataset.health"));
        if health == "down" {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < DOWN_WITHIN,
            "{:?} after the kill the page still shows node {leader} as {health}",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("the page showed the killed leader {leader} down {shown_down:?} after the kill");

    // The page keeps working: a new leader, and the node_down event it commits.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = browser.eval("document.getElementById('leader').textContent");
        let down_event = browser.eval(&format!(
            "[...document.querySelectorAll('#events div')].some(d => d.dataset.kind === 'node_down' && d.textContent.includes(' node_down {leader}'))"
        ));
        let liveness = browser
            .eval(&format!("document.querySelector('#{victim} td:nth-child(5)').textContent"));
        let new_leader =
            shown.as_str().and_then(|s| s.parse::<u64>().ok()).is_some_and(|l| l != leader);
        if new_leader
            && down_event == true
            && liveness.as_str().is_some_and(|l| l.starts_with("down"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "page stuck after the kill: leader {shown}, node_down event {down_event}, table {liveness}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(browser.eval("document.getElementById('banner').classList.contains('show')"), false);

    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} bytes", png.len());
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().to_path_buf();
    let shot = target.join("status-page.png");
    std::fs::write(&shot, png).unwrap();
    eprintln!("screenshot: {}", shot.display());
}
