//! End-to-end tests against the running kernel: the zctrace binary loads its
//! probes for real, moves real bytes over loopback, and the counters it
//! reports must land in honest ranges.
//!
//! They need root. Without root they fail, unless ZCTRACE_SKIP_ROOT_TESTS=1
//! is set (for local non-root runs; CI runs as root and never sets it).

use std::{
    process::{Command, Output},
    sync::Mutex,
};

use serde_json::Value;

const MIB: f64 = 1024.0 * 1024.0;

/// One zctrace at a time: tests compare bpftool listings and timing-free
/// counts, and two loads at once would only blur the picture.
static SERIAL: Mutex<()> = Mutex::new(());

fn zctrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zctrace"))
        .args(args)
        .output()
        .expect("run zctrace")
}

fn root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("ZCTRACE_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: not root and ZCTRACE_SKIP_ROOT_TESTS=1");
        return false;
    }
    panic!("kernel tests load eBPF programs and need root (set ZCTRACE_SKIP_ROOT_TESTS=1 to skip)");
}

/// Runs `zctrace demo --json` for the given methods on a 16 MiB file in
/// 64 KiB chunks (256 chunks) and returns the per-method objects.
fn demo(methods: &str) -> Vec<Value> {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = zctrace(&[
        "demo",
        "--json",
        "--size",
        "16M",
        "--chunk",
        "64K",
        "--methods",
        methods,
    ]);
    assert!(
        out.status.success(),
        "zctrace demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("demo --json prints JSON");
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["file_size"], 16 << 20);
    let attached = doc["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .filter(|h| h["attached"] == true)
        .count();
    assert!(attached >= 2, "required hooks attached: {}", doc["hooks"]);
    doc["methods"].as_array().expect("methods").clone()
}

fn method<'a>(all: &'a [Value], name: &str) -> &'a Value {
    all.iter()
        .find(|m| m["method"] == name)
        .unwrap_or_else(|| panic!("no {name} in {all:?}"))
}

fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for p in path.split('.') {
        cur = &cur[p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v}"))
}

fn mib(v: &Value, path: &str) -> f64 {
    num(v, path) / MIB
}

fn assert_between(what: &str, v: f64, lo: f64, hi: f64) {
    assert!((lo..=hi).contains(&v), "{what} = {v}, expected {lo}..={hi}");
}

#[test]
fn read_write_costs_two_cpu_copies_per_byte_on_the_sender() {
    if !root() {
        return;
    }
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
fn sendfile_and_splice_move_page_references_not_copies() {
    if !root() {
        return;
    }
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
fn mmap_write_copies_once_and_takes_faults() {
    if !root() {
        return;
    }
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
    // 256 writes, plus the mmap and munmap.
    assert_between("syscalls", num(m, "sender.syscalls"), 257.0, 265.0);
}

#[test]
fn pipe_methods_and_zerocopy_send_make_no_cpu_copies() {
    if !root() {
        return;
    }
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
fn copy_file_range_and_o_direct() {
    if !root() {
        return;
    }
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
fn nothing_stays_attached_after_exit() {
    if !root() {
        return;
    }
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let count = || {
        let out = Command::new("bpftool")
            .args(["prog", "show"])
            .output()
            .expect("bpftool (cargo xtask setup installs it)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter(|l| l.contains("name sys_enter") || l.contains("name sched_process_f"))
            .count()
    };
    let before = count();
    let out = zctrace(&["hooks"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("sys_enter") && listing.contains("attached"),
        "{listing}"
    );
    assert_eq!(count(), before, "programs left loaded after zctrace exited");
}

#[test]
fn non_root_gets_one_line_naming_the_privilege() {
    if !root() {
        return;
    }
    // Drop to nobody with no capabilities (setpriv is in util-linux).
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_zctrace"))
        .args(["demo", "--no-tui"])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("CAP_BPF") && err.contains("root"), "{err}");
}

#[test]
fn bad_input_exits_2_with_a_one_line_reason() {
    for args in [
        &["demo", "--size", "0"][..],
        &["demo", "--size", "1x"],
        &["demo", "--methods", "carrier-pigeon"],
        &["demo", "--pace", "3h"],
    ] {
        let out = zctrace(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
    }
}
