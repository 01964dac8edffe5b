//! The harness refuses options that would silently do nothing.

use std::process::Command;

#[test]
fn torn_without_the_power_nemesis_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard-jepsen"))
        .args(["test", "--torn", "--nemesis", "kill", "--time", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--torn tears the power nemesis's cuts: add power to --nemesis"), "{err}");
}
