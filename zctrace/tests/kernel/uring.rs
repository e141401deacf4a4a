//! io_uring: fio's io_uring engine (a program zctrace did not write) and
//! the demo's three ring methods, with their copies under io_uring methods.

use serde_json::Value;

use crate::common::*;

const PAYLOAD_MIB: f64 = 64.0;

/// The sum of one measured field over a command's rows of one method.
fn total(rows: &[Value], comm: &str, method: &str, path: &str) -> f64 {
    rows_of(rows, comm, method)
        .iter()
        .map(|r| mib(r, &format!("measured.{path}")))
        .sum()
}

/// `zctrace run` on fio with the io_uring engine, 64 MiB in 64 KiB blocks,
/// 8 requests in flight; returns the final rows.
fn fio(s: &Scratch, rw: &str) -> Vec<Value> {
    let file = s.path("fio.bin");
    let filename = format!("--filename={file}");
    let rw = format!("--rw={rw}");
    let (code, rows) = run_traced(
        s,
        &[
            "fio",
            "--name=zctrace",
            &filename,
            &rw,
            "--bs=64k",
            "--size=64M",
            "--ioengine=io_uring",
            "--iodepth=8",
            "--output=/dev/null",
        ],
    );
    assert_eq!(code, Some(0), "fio failed: {rows:?}");
    rows
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn fio_io_uring_reads_are_kernel_to_user_copies_under_uring_read() {
    let s = Scratch::new();
    // A cached 64 MiB file for fio to read.
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(s.path("fio.bin"), &data).expect("write fio.bin");
    let rows = fio(&s, "read");
    let k2u = total(
        &rows,
        "fio",
        "uring-read",
        "cpu_copy_bytes.kernel_to_user.value",
    );
    assert_between(
        "fio io_uring read: kernel->user MiB",
        k2u,
        0.95 * PAYLOAD_MIB,
        PAYLOAD_MIB + 1.0,
    );
    let ops: f64 = rows_of(&rows, "fio", "uring-read")
        .iter()
        .map(|r| num(r, "measured.uring.ops"))
        .sum();
    assert!(ops >= 1024.0, "64 MiB in 64 KiB requests: {ops} ops");
    // Nothing of the payload is left in "other" or io-uring rows.
    for m in ["other", "io-uring"] {
        let stray = total(&rows, "fio", m, "cpu_copy_bytes.kernel_to_user.value");
        assert!(stray < 1.0, "{stray} MiB under {m}: {rows:?}");
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn fio_io_uring_writes_are_user_to_kernel_copies_under_uring_write() {
    let s = Scratch::new();
    let rows = fio(&s, "write");
    let u2k = total(
        &rows,
        "fio",
        "uring-write",
        "cpu_copy_bytes.user_to_kernel.value",
    );
    assert_between(
        "fio io_uring write: user->kernel MiB",
        u2k,
        0.95 * PAYLOAD_MIB,
        PAYLOAD_MIB + 1.0,
    );
    let written = std::fs::metadata(s.path("fio.bin")).expect("fio wrote its file");
    assert_eq!(written.len(), 64 << 20);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn the_demo_s_ring_methods_cost_what_their_classic_twins_do_in_copies_not_switches() {
    let all = demo("uring-read-send,uring-splice,uring-send-zc");
    for m in &all {
        assert!(m["skipped"].is_null(), "{m}");
    }
    // 16 MiB in 256 chunks, 16 chunks per io_uring_enter.
    let rs = method(&all, "uring-read-send");
    assert_between(
        "uring-read-send CPU copies per byte",
        (num(rs, "sender.cpu_copy_bytes.user_to_kernel.value")
            + num(rs, "sender.cpu_copy_bytes.kernel_to_user.value"))
            / num(rs, "bytes"),
        1.9,
        2.05,
    );
    assert_eq!(
        num(rs, "sender.uring.ops"),
        512.0,
        "a read and a send per chunk"
    );
    for m in &all {
        let per_chunk = num(m, "sender.syscalls") / num(m, "chunks");
        assert_between(
            &format!("{} syscalls per chunk", m["method"]),
            per_chunk,
            0.05,
            0.2,
        );
    }
    let sp = method(&all, "uring-splice");
    let user = mib(sp, "sender.cpu_copy_bytes.user_to_kernel.value")
        + mib(sp, "sender.cpu_copy_bytes.kernel_to_user.value");
    assert!(
        user < 0.1,
        "uring-splice copied {user} MiB through user memory"
    );
    // Into the pipe and on into the socket: each byte referenced twice.
    assert_between(
        "uring-splice page references MiB",
        mib(sp, "sender.page_ref_bytes.value"),
        31.9,
        32.1,
    );
    let zc = method(&all, "uring-send-zc");
    let user = mib(zc, "sender.cpu_copy_bytes.user_to_kernel.value");
    assert!(user < 0.1, "uring-send-zc copied {user} MiB");
    assert_between(
        "uring-send-zc pinned (page reference) MiB",
        mib(zc, "sender.page_ref_bytes.value"),
        15.9,
        16.1,
    );
    // Every send's notification seen by the probes, as the ring saw them.
    assert_eq!(
        num(zc, "sender.uring.zc_notifications"),
        num(zc, "zerocopy.completed"),
        "{zc}"
    );
    assert_eq!(num(zc, "zerocopy.completed"), num(zc, "zerocopy.sends"));
    assert_eq!(
        num(zc, "sender.uring.zc_copied"),
        num(zc, "zerocopy.copied"),
        "loopback: the kernel copies on delivery, and says so"
    );
}
