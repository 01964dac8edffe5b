//! The harness must be able to fail: with the node's test-only failpoint
//! that answers LINEARIZABLE reads from local state (no read index), a run
//! under faults must be reported invalid. Partitions when root (network
//! namespaces), leader pauses otherwise.

use std::time::Duration;

use switchboard_jepsen::checker::Verdict;
use switchboard_jepsen::cluster::is_root;
use switchboard_jepsen::nemesis::Kind;
use switchboard_jepsen::run::{self, node_binary, Options};
use switchboard_jepsen::workload::Workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_failpoint_is_caught() {
    let out = tempfile::tempdir().unwrap();
    let nemesis = if is_root() { Kind::Partition } else { Kind::Pause };
    let opts = Options {
        nodes: 3,
        time_s: 15,
        nemeses: vec![nemesis],
        workloads: vec![Workload::Register],
        seed: 42,
        clients: 4,
        bin: node_binary(None).expect("node binary"),
        out: out.path().to_path_buf(),
        netns: true,
        node_env: vec![("SWITCHBOARD_FAILPOINT".into(), "stale-linearizable-reads".into())],
        check_time_limit: Duration::from_secs(30),
        keep_data: false,
        torn: false,
    };
    let outcome = run::run(&opts).await.expect("the run completes");
    eprintln!("{}", outcome.summary);
    assert_eq!(
        outcome.verdict,
        Verdict::Invalid,
        "stale reads went unnoticed: {}",
        outcome.summary
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outcome.dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["valid"], false);
    let anomalies = results["anomalies"].as_array().unwrap();
    assert!(!anomalies.is_empty());
    // Either checker may be the one to catch it (which one depends on
    // timing): a history checker's anomaly names its window of operations;
    // the anchor check's names the listings and the nodes that gave them.
    for a in anomalies {
        let named = match a["workload"].as_str() {
            Some("anchors") => a["what"]
                .as_str()
                .is_some_and(|w| w.contains("listing by node") || w.contains("listed by node")),
            _ => a["window"].as_array().is_some_and(|w| !w.is_empty()),
        };
        assert!(named, "an anomaly names its evidence: {a}");
    }
    for f in ["history.jsonl", "nemesis.jsonl", "latency.svg", "throughput.svg", "node1.log"] {
        assert!(outcome.dir.join(f).exists(), "{f} written");
    }
}
