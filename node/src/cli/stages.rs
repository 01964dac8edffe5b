//! Where a write's time goes, from the nodes' own Prometheus histograms:
//! `bench --compare` reads every node's `/metrics` before and after a
//! write measurement and prints the mean time of each stage over it.
//!
//! The exporter's histograms are summaries whose quantiles cover a rolling
//! minute, which would mix measurements; their `_sum` and `_count` are
//! cumulative, so the difference of two scrapes gives the exact mean of
//! each stage over one measurement.
//!
//! The scrape is a plain HTTP/1.0 GET over a TCP stream: the exporter
//! answers it with the whole text and closes the connection, and one request per node per measurement does not justify an
//! HTTP client dependency.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The stages printed, in the order a write meets them: (series, label).
const STAGES: [(&str, &str); 7] = [
    ("switchboard_write_seconds{path=\"forwarded\"}", "forwarded (follower)"),
    ("switchboard_leader_write_seconds", "at leader"),
    ("switchboard_raft_commit_seconds", "commit"),
    ("switchboard_log_append_seconds", "append"),
    ("switchboard_log_sync_seconds", "sync"),
    ("switchboard_apply_seconds", "apply"),
    ("switchboard_raft_entry_writes", "writes/entry"),
];

/// `_sum` and `_count` of every histogram series, summed over the nodes;
/// the key is the series name with its labels other than `node`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals(BTreeMap<String, (f64, f64)>);

impl Totals {
    /// Scrape every address; a node that does not answer adds nothing
    /// (the figures then cover the others).
    pub async fn scrape(addrs: &[String]) -> Totals {
        let mut totals = Totals::default();
        for addr in addrs {
            if let Some(text) = get_metrics(addr).await {
                totals.add(&text);
            }
        }
        totals
    }

    /// Add one node's exposition text.
    fn add(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let (base, is_sum) = if let Some(b) = name.strip_suffix("_sum") {
                (b, true)
            } else if let Some(b) = name.strip_suffix("_count") {
                (b, false)
            } else {
                continue;
            };
            let kept: Vec<&str> =
                labels.split(',').filter(|l| !l.is_empty() && !l.starts_with("node=")).collect();
            let key = if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}{{{}}}", kept.join(","))
            };
            let entry = self.0.entry(key).or_default();
            if is_sum {
                entry.0 += value;
            } else {
                entry.1 += value;
            }
        }
    }

    /// What happened between `before` and `self`: (sum, count) per series.
    pub fn since(&self, before: &Totals) -> Totals {
        let mut out = Totals::default();
        for (k, &(sum, count)) in &self.0 {
            let (s0, c0) = before.0.get(k).copied().unwrap_or_default();
            out.0.insert(k.clone(), (sum - s0, count - c0));
        }
        out
    }

    /// Add another difference (a repeat of the same measurement).
    pub fn merge(&mut self, other: &Totals) {
        for (k, &(sum, count)) in &other.0 {
            let e = self.0.entry(k.clone()).or_default();
            e.0 += sum;
            e.1 += count;
        }
    }

    /// One line: each stage's mean (ms; writes/entry as a count), stages
    /// that did not occur left out. `None` when nothing was recorded.
    pub fn line(&self) -> Option<String> {
        let parts: Vec<String> = STAGES
            .iter()
            .filter_map(|(series, label)| {
                let &(sum, count) = self.0.get(*series)?;
                (count > 0.0).then(|| {
                    let mean = sum / count;
                    if series.ends_with("_writes") {
                        format!("{label} {mean:.1}")
                    } else {
                        format!("{label} {:.2} ms", mean * 1000.0)
                    }
                })
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(" | "))
    }
}

/// The body of `http://<addr>/metrics`, or `None` on any failure.
async fn get_metrics(addr: &str) -> Option<String> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        // hyper answers in the request's version: `HTTP/1.0 200 OK`.
        let status = head.split_whitespace().nth(1)?;
        (status == "200").then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# TYPE switchboard_raft_commit_seconds summary\n\
        switchboard_raft_commit_seconds{node=\"1\",quantile=\"0.5\"} 0.002\n\
        switchboard_raft_commit_seconds_sum{node=\"1\"} 0.5\n\
        switchboard_raft_commit_seconds_count{node=\"1\"} 100\n\
        switchboard_write_seconds_sum{node=\"2\",path=\"forwarded\"} 1\n\
        switchboard_write_seconds_count{node=\"2\",path=\"forwarded\"} 100\n";
    const AFTER: &str = "switchboard_raft_commit_seconds_sum{node=\"1\"} 0.9\n\
        switchboard_raft_commit_seconds_count{node=\"1\"} 300\n\
        switchboard_write_seconds_sum{node=\"2\",path=\"forwarded\"} 1.6\n\
        switchboard_write_seconds_count{node=\"2\",path=\"forwarded\"} 300\n\
        switchboard_raft_entry_writes_sum{node=\"1\"} 400\n\
        switchboard_raft_entry_writes_count{node=\"1\"} 200\n";

    #[test]
    fn means_are_taken_over_the_difference_of_two_scrapes() {
        let (mut before, mut after) = (Totals::default(), Totals::default());
        before.add(BEFORE);
        after.add(AFTER);
        let d = after.since(&before);
        // commit: 0.4 s over 200 commits = 2 ms; forwarded: 0.6 s / 200 =
        // 3 ms; writes per entry 400 / 200 = 2; quantile lines ignored.
        assert_eq!(
            d.line().as_deref(),
            Some("forwarded (follower) 3.00 ms | commit 2.00 ms | writes/entry 2.0")
        );
        let mut twice = d.clone();
        twice.merge(&d);
        assert_eq!(twice.line(), d.line());
    }

    #[test]
    fn nodes_are_summed_and_nothing_recorded_is_no_line() {
        let mut t = Totals::default();
        t.add("switchboard_apply_seconds_sum{node=\"1\"} 0.01\nswitchboard_apply_seconds_count{node=\"1\"} 10\n");
        t.add("switchboard_apply_seconds_sum{node=\"2\"} 0.03\nswitchboard_apply_seconds_count{node=\"2\"} 10\n");
        assert_eq!(t.line().as_deref(), Some("apply 2.00 ms"));
        assert_eq!(Totals::default().line(), None);
        assert_eq!(t.since(&t).line(), None);
    }
}
