//! `zctrace demo`: every method's counters in honest ranges, from real
//! transfers checked by the receiver.

use crate::common::*;
use serde_json::Value;

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn read_write_costs_two_cpu_copies_per_byte_on_the_sender() {
    let all = demo("read-write");
    let m = method(&all, "read-write");
    assert!(m["skipped"].is_null(), "{m}");
    // 256 reads + 256 writes (+1 read that returns 0 at end of file).
    assert_between("syscalls", num(m, "sender.syscalls"), 512.0, 520.0);
    assert_between(
        "mode switches",
        num(m, "sender.mode_switches"),
        1024.0,
        1100.0,
    );
    assert_between(
        "user->kernel MiB",
        mib(m, "sender.cpu_copy_bytes.user_to_kernel.value"),
        15.9,
        16.1,
    );
    assert_between(
        "kernel->user MiB",
        mib(m, "sender.cpu_copy_bytes.kernel_to_user.value"),
        15.9,
        16.1,
    );
    // The socket side is seen by tcp_sendmsg_locked, the file side derived.
    assert_eq!(
        m["sender"]["cpu_copy_bytes"]["user_to_kernel"]["source"],
        "observed"
    );
    assert_eq!(
        m["sender"]["cpu_copy_bytes"]["kernel_to_user"]["source"],
        "derived"
    );
    assert_eq!(num(m, "sender.page_ref_bytes.value"), 0.0);
    // The receiver's copy is charged to the receiver, not to the sender.
    assert_between(
        "receiver kernel->user MiB",
        mib(m, "receiver.cpu_copy_bytes.kernel_to_user.value"),
        15.9,
        16.1,
    );
    assert_eq!(
        m["receiver"]["cpu_copy_bytes"]["kernel_to_user"]["source"],
        "observed"
    );
    assert_eq!(num(m, "receiver.cpu_copy_bytes.user_to_kernel.value"), 0.0);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn sendfile_and_splice_move_page_references_not_copies() {
    let all = demo("sendfile,splice");
    let sf = method(&all, "sendfile");
    assert_between(
        "sendfile syscalls",
        num(sf, "sender.syscalls"),
        256.0,
        262.0,
    );
    assert_between(
        "sendfile mode switches",
        num(sf, "sender.mode_switches"),
        512.0,
        540.0,
    );
    for dir in ["user_to_kernel", "kernel_to_user", "kernel_to_kernel"] {
        assert_eq!(
            num(sf, &format!("sender.cpu_copy_bytes.{dir}.value")),
            0.0,
            "sendfile {dir}"
        );
    }
    assert_between(
        "sendfile page refs MiB",
        mib(sf, "sender.page_ref_bytes.value"),
        15.9,
        16.1,
    );
    assert_eq!(sf["sender"]["page_ref_bytes"]["source"], "observed");
    assert_between(
        "receiver copies MiB",
        mib(sf, "receiver.cpu_copy_bytes.kernel_to_user.value"),
        15.9,
        16.1,
    );

    let sp = method(&all, "splice");
    assert_between("splice syscalls", num(sp, "sender.syscalls"), 512.0, 530.0);
    assert_eq!(
        num(sp, "sender.cpu_copy_bytes.user_to_kernel.value")
            + num(sp, "sender.cpu_copy_bytes.kernel_to_user.value"),
        0.0
    );
    // file->pipe and pipe->socket: two hand-overs of the same pages.
    assert_between(
        "splice page refs MiB",
        mib(sp, "sender.page_ref_bytes.value"),
        31.9,
        32.1,
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn mmap_write_copies_once_and_takes_faults() {
    let all = demo("mmap-write");
    let m = method(&all, "mmap-write");
    assert_between(
        "user->kernel MiB",
        mib(m, "sender.cpu_copy_bytes.user_to_kernel.value"),
        15.9,
        16.1,
    );
    assert_eq!(num(m, "sender.cpu_copy_bytes.kernel_to_user.value"), 0.0);
    assert!(
        num(m, "sender.page_faults_user") + num(m, "sender.page_faults_kernel") >= 1.0,
        "mapping the file must fault: {m}"
    );
    // One write() per chunk; mmap() and munmap() are bookkeeping, like open().
    assert_between("syscalls", num(m, "sender.syscalls"), 256.0, 258.0);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn pipe_methods_and_zerocopy_send_make_no_cpu_copies() {
    let all = demo("vmsplice,tee,msg-zerocopy");
    for name in ["vmsplice", "tee", "msg-zerocopy"] {
        let m = method(&all, name);
        assert!(m["skipped"].is_null(), "{m}");
        let cpu = num(m, "sender.cpu_copy_bytes.user_to_kernel.value")
            + num(m, "sender.cpu_copy_bytes.kernel_to_user.value")
            + num(m, "sender.cpu_copy_bytes.kernel_to_kernel.value");
        assert_eq!(cpu, 0.0, "{name} CPU copies");
        assert!(mib(m, "sender.page_ref_bytes.value") >= 15.9, "{name}: {m}");
    }
    // tee feeds two receivers from one file read.
    let tee = method(&all, "tee");
    assert_between(
        "tee receivers MiB",
        mib(tee, "receiver.cpu_copy_bytes.kernel_to_user.value"),
        31.9,
        32.1,
    );
    let zc = method(&all, "msg-zerocopy");
    assert_between(
        "pinned MiB",
        mib(zc, "sender.zerocopy_pinned_bytes"),
        15.9,
        16.1,
    );
    let sends = num(zc, "zerocopy.sends");
    assert!(sends >= 256.0, "{zc}");
    assert_eq!(num(zc, "zerocopy.completed"), sends, "every send completes");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn copy_file_range_and_o_direct() {
    let all = demo("copy-file-range,o-direct");
    let cfr = method(&all, "copy-file-range");
    assert_eq!(num(cfr, "sender.cpu_copy_bytes.user_to_kernel.value"), 0.0);
    assert_eq!(num(cfr, "sender.cpu_copy_bytes.kernel_to_user.value"), 0.0);
    assert_between(
        "copy_file_range syscalls",
        num(cfr, "sender.syscalls"),
        256.0,
        260.0,
    );
    assert!(cfr["receiver"].is_null(), "file to file has no receiver");

    let od = method(&all, "o-direct");
    if let Some(why) = od["skipped"].as_str() {
        assert!(why.contains("O_DIRECT"), "{why}");
        return;
    }
    assert_between(
        "O_DIRECT MiB",
        mib(od, "sender.direct_io_bytes"),
        15.9,
        16.1,
    );
    assert_eq!(
        num(od, "sender.cpu_copy_bytes.kernel_to_user.value"),
        0.0,
        "no page cache copy"
    );
    assert_between(
        "disk read MiB",
        mib(od, "sender.dma_bytes.disk_read"),
        15.9,
        16.2,
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn pitfalls_show_a_real_sigbus_and_the_lease_cure() {
    let _guard = serial();
    let out = zctrace(&[
        "demo",
        "--json",
        "--pitfalls",
        "--methods",
        "sendfile",
        "--size",
        "1M",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let p = doc["pitfalls"].as_array().expect("pitfalls");
    assert_eq!(p.len(), 2);
    assert_eq!(p[0]["as_expected"], true, "{}", p[0]);
    assert!(
        p[0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("SIGBUS (signal 7)")
    );
    assert_eq!(p[1]["as_expected"], true, "{}", p[1]);
    assert!(
        p[1]["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("intact")
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn selftest_passes_on_this_kernel() {
    let _guard = serial();
    let s = Scratch::new();
    let out = zctrace(&["selftest", "--dir", &s.path("")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ZCTRACE-SELFTEST: PASS")),
        "{text}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn cold_runs_show_the_disk_dma_of_the_textbook() {
    let _guard = serial();
    let out = zctrace(&[
        "demo",
        "--json",
        "--cold",
        "--size",
        "16M",
        "--chunk",
        "64K",
        "--methods",
        "read-write,sendfile",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for m in doc["methods"].as_array().expect("methods") {
        // Evicted from the page cache: the device DMAs the file in again,
        // issued by the sender thread itself.
        assert_between(
            "disk read MiB",
            mib(m, "sender.dma_bytes.disk_read"),
            15.9,
            16.5,
        );
        assert!(m["notes"].to_string().contains("disk DMA"), "{m}");
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn mmap_memcpy_copies_in_user_mode_where_only_page_faults_show() {
    // The demo reads the copy back and compares its CRC with the source's
    // (a mismatch fails the run), so success means the bytes arrived.
    let all = demo("mmap-memcpy");
    let m = method(&all, "mmap-memcpy");
    assert!(m["skipped"].is_null(), "{m}");
    assert!(m["receiver"].is_null(), "no socket: {m}");
    // Set-up only (open, ftruncate, two mmaps, msync, munmap, close): no
    // syscall per chunk.
    let syscalls = num(m, "sender.syscalls");
    assert_between("set-up syscalls", syscalls, 4.0, 100.0);
    // The copy is a memcpy in user mode: no copy by the kernel, none seen.
    for dir in ["user_to_kernel", "kernel_to_user", "kernel_to_kernel"] {
        assert_eq!(
            num(m, &format!("sender.cpu_copy_bytes.{dir}.value")),
            0.0,
            "{dir}: {m}"
        );
    }
    assert_eq!(num(m, "sender.page_ref_bytes.value"), 0.0);
    // Both mappings fault in: at least once each, at most once per 4 KiB
    // page of each (fault-around and large folios map several at a time).
    let faults = num(m, "sender.page_faults_user");
    assert_between("user page faults", faults, 2.0, 2.0 * 4096.0 + 64.0);
    assert_eq!(
        num(m, "sender.mode_switches"),
        2.0 * syscalls + 2.0 * faults,
        "2 per syscall and 2 per user fault"
    );
    let notes = m["notes"].to_string();
    assert!(
        notes.contains("inferred"),
        "the copy is said to be inferred: {notes}"
    );
}
