//! Free ports on 127.0.0.1 for tests, taken below the kernel's ephemeral
//! range.
//!
//! Binding port 0 and releasing the socket hands out a port from the
//! ephemeral range, and any outgoing connection in the meantime (a Raft
//! peer, a test client) may take that very port as its source port before
//! the node under test binds it. CI saw exactly that: a node that could not
//! bind its SIP port and so never answered. Ports below the ephemeral range
//! are never handed out implicitly. Within one process a counter keeps the
//! tests apart; a start derived from the process id keeps two test processes
//! apart; and every port is checked bindable for both TCP and UDP before it
//! is handed out.
//!
//! Shared by this crate and the node's integration tests (through `#[path]`,
//! since those cannot depend on this crate): std only.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where test ports come from: `[low, high)` just below the ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 when unreadable).
fn range() -> (u32, u32) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()))
        .unwrap_or(32768);
    let high = ephemeral_low.min(65535);
    (1024u32.max(high.saturating_sub(12768)), high)
}

/// A port on 127.0.0.1 that is free for both TCP and UDP just now and that
/// no other call in this process has returned.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive ports on 127.0.0.1 (for `dev`'s base
/// ports), each free for both TCP and UDP just now, none of which any other
/// call in this process has returned.
pub fn free_ports(n: u16) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = u32::from(n.max(1));
    let (low, high) = range();
    let span = high.saturating_sub(low);
    if span < 100 + n {
        // An ephemeral range that starts this low leaves no room below it:
        // fall back to the kernel's choice (and its small race).
        return fallback(n);
    }
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        // The block is taken whole from the counter: no other call can be
        // handed a port inside it.
        let first = low + (start + NEXT.fetch_add(n, Ordering::Relaxed)) % span;
        if first + n <= high && (first..first + n).all(|p| free_for_both(p as u16)) {
            return first as u16;
        }
    }
    panic!("no {n} consecutive ports in {low}..{high} are free on 127.0.0.1");
}

fn free_for_both(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

fn fallback(n: u32) -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local addr").port();
        drop(tcp);
        if u32::from(port) + n <= 65535 && (port..port + n as u16).all(free_for_both) {
            return port;
        }
    }
    panic!("no {n} consecutive ports free for both TCP and UDP on 127.0.0.1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_repeat() {
        let (low, high) = range();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        if high - low >= 100 {
            assert!(ports.iter().all(|&p| (low..high).contains(&(p as u32))), "{ports:?}");
        }
        // A block is never handed out again, not even a port inside it.
        let block = free_ports(3);
        let more: Vec<u16> = (0..50).map(|_| free_port()).collect();
        assert!(more.iter().all(|p| !(block..block + 3).contains(p)), "{block} {more:?}");
    }
}
