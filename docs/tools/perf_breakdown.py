#!/usr/bin/env python3
"""Where the servers' CPU goes, by kind of work, from a `perf record -g` file.

Usage (see docs/bench.md for the whole recipe):

    perf record -F 499 -g --call-graph dwarf,16384 -p PID,PID,PID -o perf.data -- sleep 5
    perf script -i perf.data -F comm,tid,ip,sym | python3 docs/tools/perf_breakdown.py

Every sample is put in the first category below whose pattern matches any
frame of its stack, so a `writev` made by h2 counts as "kernel TCP send",
not as HTTP/2. Percentages are of the samples given (the server processes'
busy time), not of the machine.
"""
import re
import sys
from collections import Counter

# (category, regex over one frame's symbol); first match over the stack wins.
CATEGORIES = [
    ("disk: fsync, sync_file_range", r"^(fsync|fdatasync|sync_file_range|ext4_sync_file|do_fsync|__x64_sys_sync_file_range)$"),
    ("disk: other file I/O", r"^(pwrite64|__libc_pwrite|__GI___libc_pwrite|ksys_pwrite64|vfs_write|getdents64|__x64_sys_getdents64|openat64|__libc_open64|__GI___readdir64|statx)$"),
    ("kernel TCP send (loopback, incl. receiver softirq)", r"^(__GI___writev|writev|__libc_sendmsg|__send|__libc_send|tcp_sendmsg|__GI___libc_write)$"),
    ("kernel TCP receive", r"^(__libc_recv|recv|__libc_recvmsg|recvfrom|__libc_read|read|tcp_recvmsg)$"),
    ("thread wake-ups and sleeps (futex)", r"^(__x64_sys_futex|futex_wake|futex_wait|do_futex)$"),
    ("epoll and timers", r"^(epoll_wait|__x64_sys_epoll_wait|eventfd_write|clock_gettime|__clock_gettime|__vdso_clock_gettime|__x64_sys_nanosleep)$"),
    ("memory allocator", r"^(malloc|free|_int_malloc|_int_free|realloc|_int_realloc|cfree@GLIBC_2.2.5|__libc_malloc|__libc_free|__libc_realloc|unlink_chunk.*|malloc_consolidate|sysmalloc|__memmove_.*|__memcpy_.*|__memset_.*)$"),
    ("encode/decode (bincode, prost)", r"(bincode::|prost::|switchboard_storage::codec)"),
    ("sled (in memory)", r"sled::"),
    ("state machine apply", r"(switchboard_storage::state::|switchboard_storage::sm_store)"),
    ("openraft core", r"openraft::"),
    ("HTTP/2 and gRPC (h2, hyper, tonic)", r"(h2::|hyper::|hyper_util::|tonic::)"),
    ("tokio scheduler", r"tokio::runtime::"),
    ("kernel scheduler and interrupts", r"^(schedule|__schedule|irqentry_exit_to_user_mode|asm_sysvec_.*|finish_task_switch.*)$"),
]
COMPILED = [(name, re.compile(rx)) for name, rx in CATEGORIES]


def samples(lines):
    """Yields the symbol list (leaf first) of each sample in `perf script`."""
    stack = None
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack is not None:
                yield stack
            stack = None
        elif not line.startswith(("\t", " ")) or stack is None:
            stack = []
        else:
            parts = line.strip().split(None, 1)
            sym = parts[1] if len(parts) > 1 else ""
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            sym = re.sub(r" \(inlined\)$", "", sym)
            stack.append(sym)
    if stack is not None:
        yield stack


def main():
    counts = Counter()
    total = 0
    for stack in samples(sys.stdin):
        total += 1
        for name, rx in COMPILED:
            if any(rx.search(frame) for frame in stack):
                counts[name] += 1
                break
        else:
            counts["other"] += 1
    if total == 0:
        sys.exit("no samples on stdin (pipe `perf script -F comm,tid,ip,sym` into this)")
    print(f"{total} samples")
    for name, n in counts.most_common():
        print(f"  {100.0 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
