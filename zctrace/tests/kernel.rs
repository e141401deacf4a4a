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
    // One write() per chunk; mmap() and munmap() are bookkeeping, like open().
    assert_between("syscalls", num(m, "sender.syscalls"), 256.0, 258.0);
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

/// A scratch directory with a 32 MiB file of non-zero bytes.
struct Scratch {
    dir: tempfile::TempDir,
}

const SCRATCH_LEN: u64 = 32 << 20;

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..SCRATCH_LEN).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(dir.path().join("big.bin"), data).expect("write big.bin");
        Scratch { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// `zctrace run --json -o FILE -- argv`: exit status and final rows.
fn run_traced(s: &Scratch, argv: &[&str]) -> (Option<i32>, Vec<Value>) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let report = s.path("report.jsonl");
    let mut args = vec!["run", "--json", "-o", &report, "--"];
    args.extend_from_slice(argv);
    let out = zctrace(&args);
    (out.status.code(), final_rows(&report, &out))
}

fn final_rows(report: &str, out: &Output) -> Vec<Value> {
    let text = std::fs::read_to_string(report)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let last: Value =
        serde_json::from_str(text.lines().last().expect("a JSON line")).expect("JSON");
    assert_eq!(last["final"], true, "{last}");
    assert!(last["ts"].as_f64().is_some_and(|t| t > 1.6e9), "{last}");
    last["rows"].as_array().expect("rows").clone()
}

fn rows_of<'a>(rows: &'a [Value], comm: &str, method: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| r["comm"] == comm && r["method"] == method)
        .collect()
}

#[test]
fn run_cat_reads_the_file_into_user_memory() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let big = s.path("big.bin");
    let (code, rows) = run_traced(&s, &["cat", &big]);
    assert_eq!(code, Some(0));
    let rw = rows_of(&rows, "cat", "read-write");
    assert_eq!(rw.len(), 1, "{rows:?}");
    assert_between(
        "cat kernel->user MiB",
        mib(rw[0], "measured.cpu_copy_bytes.kernel_to_user.value"),
        32.0,
        32.2,
    );
    assert_eq!(rw[0]["exited"], true);
    assert!(
        rows.iter().all(|r| r["method"] != "mmap-write"),
        "loader mappings are not mmap+write: {rows:?}"
    );
}

#[test]
fn run_cp_uses_copy_file_range_with_no_user_copies() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let (code, rows) = run_traced(&s, &["cp", &s.path("big.bin"), &s.path("copy.bin")]);
    assert_eq!(code, Some(0));
    let cfr = rows_of(&rows, "cp", "copy-file-range");
    assert_eq!(
        cfr.len(),
        1,
        "coreutils cp copies with copy_file_range: {rows:?}"
    );
    assert_between("copied MiB", mib(cfr[0], "measured.io_bytes"), 32.0, 32.0);
    let user: f64 = rows
        .iter()
        .map(|r| {
            num(r, "measured.cpu_copy_bytes.user_to_kernel.value")
                + num(r, "measured.cpu_copy_bytes.kernel_to_user.value")
        })
        .sum();
    assert!(user < MIB, "cp moved {user} bytes through user memory");
}

#[test]
fn run_follows_forks_passes_the_exit_status_and_sees_threads() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let big = s.path("big.bin");
    let script = format!("cat {big} >/dev/null; cat {big} >/dev/null; exit 7");
    let (code, rows) = run_traced(&s, &["sh", "-c", &script]);
    assert_eq!(code, Some(7), "exit status passes through");
    let cats = rows_of(&rows, "cat", "read-write");
    assert_eq!(cats.len(), 2, "two forked cats: {rows:?}");
    for c in cats {
        assert_between(
            "each cat MiB",
            mib(c, "measured.cpu_copy_bytes.kernel_to_user.value"),
            32.0,
            32.2,
        );
    }
    // Two threads of one process, each reading the whole file.
    let py = format!(
        "import threading\n\
         def r():\n    f=open('{big}','rb')\n    while f.read(65536): pass\n\
         t=[threading.Thread(target=r) for _ in range(2)]\n\
         [x.start() for x in t]; [x.join() for x in t]\n"
    );
    let (code, rows) = run_traced(&s, &["/usr/bin/python3", "-c", &py]);
    assert_eq!(code, Some(0));
    let rw: Vec<_> = rows
        .iter()
        .filter(|r| r["method"] == "read-write")
        .collect();
    assert_eq!(rw.len(), 1, "one process: {rows:?}");
    assert_between(
        "two threads MiB",
        mib(rw[0], "measured.cpu_copy_bytes.kernel_to_user.value"),
        64.0,
        65.0,
    );
}

#[test]
fn run_python_socket_sendfile_is_classified_as_sendfile() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let big = s.path("big.bin");
    let py = format!(
        "import socket, threading\n\
         srv=socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)\n\
         got=[0]\n\
         def rx():\n    c,_=srv.accept()\n    while True:\n        b=c.recv(65536)\n        if not b: break\n        got[0]+=len(b)\n\
         t=threading.Thread(target=rx); t.start()\n\
         s=socket.create_connection(srv.getsockname())\n\
         s.sendfile(open('{big}','rb')); s.close(); t.join()\n\
         assert got[0]=={SCRATCH_LEN}, got\n"
    );
    let (code, rows) = run_traced(&s, &["/usr/bin/python3", "-c", &py]);
    assert_eq!(code, Some(0), "{rows:?}");
    let sf: Vec<_> = rows.iter().filter(|r| r["method"] == "sendfile").collect();
    assert_eq!(sf.len(), 1, "{rows:?}");
    assert_between(
        "page refs MiB",
        mib(sf[0], "measured.page_ref_bytes.value"),
        32.0,
        32.0,
    );
    assert_eq!(sf[0]["measured"]["page_ref_bytes"]["source"], "observed");
    assert_eq!(
        num(sf[0], "measured.cpu_copy_bytes.user_to_kernel.value"),
        0.0
    );
    let rx: Vec<_> = rows
        .iter()
        .filter(|r| r["method"] == "socket-recv")
        .collect();
    assert_between(
        "receive copy MiB",
        mib(rx[0], "measured.cpu_copy_bytes.kernel_to_user.value"),
        32.0,
        32.1,
    );
}

/// Starts `zctrace attach PID --json -o report` and returns once it is
/// attached: the report file appears after the probes are in and the PID
/// is in the traced set.
fn spawn_attach(pid: &str, report: &str) -> std::process::Child {
    let zc = Command::new(env!("CARGO_BIN_EXE_zctrace"))
        .args(["attach", pid, "--json", "-o", report, "--duration", "30s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("zctrace attach");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::path::Path::new(report).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "zctrace attach did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    zc
}

/// A shell that forks `cat big.bin` only once the test opens the FIFO "go"
/// for writing (after zctrace has attached: no timing guess), then runs
/// `tail`. The shell waits in its own `read` builtin, so nothing but the
/// cat (and `tail`) is forked for the dashboard to list.
fn gated_cat(s: &Scratch, tail: &str) -> std::process::Child {
    let (go, big) = (s.path("go"), s.path("big.bin"));
    let made = Command::new("mkfifo").arg(&go).status().expect("mkfifo");
    assert!(made.success());
    Command::new("sh")
        .args(["-c", &format!("read _ < {go}; cat {big} >/dev/null{tail}")])
        .spawn()
        .expect("spawn target")
}

#[test]
fn attach_follows_children_of_a_running_process() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let go = s.path("go");
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut target = gated_cat(&s, "");
    let pid = target.id().to_string();
    let report = s.path("attach.jsonl");
    let zc = spawn_attach(&pid, &report);
    std::fs::write(&go, b"").expect("go");
    assert!(target.wait().expect("wait").success());
    let out = zc.wait_with_output().expect("zctrace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = final_rows(&report, &out);
    let cats = rows_of(&rows, "cat", "read-write");
    assert_eq!(cats.len(), 1, "{rows:?}");
    assert_between(
        "cat MiB",
        mib(cats[0], "measured.cpu_copy_bytes.kernel_to_user.value"),
        32.0,
        32.2,
    );
}

#[test]
fn attach_refuses_bad_targets_with_one_line_and_status_5() {
    if !root() {
        return;
    }
    // `run` loads the probes before it finds the command missing.
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (pid, words) in [("2", "kernel thread"), ("4194303", "no process")] {
        let out = zctrace(&["attach", pid]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{pid}: {err}");
        assert!(
            err.contains(words) && err.trim_end().lines().count() == 1,
            "{pid}: {err}"
        );
    }
    let out = zctrace(&["run", "--", "no-such-command-zc"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found"));
}

/// A tmux session running zctrace; killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(w: u16, h: u16, cmd: &str) -> Self {
        let name = format!("zctrace-test-{}-{w}x{h}", std::process::id());
        // CI runs with no terminal and maybe no TERM: tmux needs one to
        // describe its own.
        let status = Command::new("tmux")
            .env(
                "TERM",
                std::env::var("TERM")
                    .ok()
                    .filter(|t| !t.is_empty() && t != "dumb")
                    .unwrap_or_else(|| "xterm-256color".into()),
            )
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
            ])
            .arg(format!("{cmd}; echo ZCTRACE_EXIT=$?; sleep 60"))
            .status()
            .expect("tmux (cargo xtask setup installs it)");
        assert!(status.success());
        Tmux { name }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("send-keys");
    }

    /// Polls the screen until `pred` holds (20 s at most).
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}:\n{s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn alternate_screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["display-message", "-p", "-t", &self.name, "#{alternate_on}"])
            .output()
            .expect("display-message");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

#[test]
fn dashboard_end_to_end_in_tmux() {
    if !root() {
        return;
    }
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = env!("CARGO_BIN_EXE_zctrace");
    let t = Tmux::start(
        80,
        24,
        &format!("{bin} demo --size 8M --methods read-write,sendfile,splice"),
    );
    // Live numbers from the probes: read+write's 2 syscalls and 2 CPU
    // copies per chunk, sendfile's 0 copies.
    let s = t.wait_for("all methods done", |s| s.matches(" done ").count() >= 3);
    let row = |name: &str| {
        s.lines()
            .find(|l| l.contains(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row("read-write").contains("2 / 2.00"), "{s}");
    assert!(row("sendfile").contains("0 / 0.00"), "{s}");
    assert_eq!(t.alternate_screen(), "1");
    t.keys(&["2"]);
    t.wait_for("the copy-path diagram", |s| {
        s.contains("user/kernel boundary") && s.contains("CPU copy 8.0M")
    });
    t.keys(&["j", "3", "n"]);
    t.wait_for("step 2 of sendfile", |s| s.contains("step 2/5 of sendfile"));
    t.keys(&["?"]);
    t.wait_for("help", |s| s.contains(" keys ") && s.contains("Ctrl-C"));
    t.keys(&["x", "q"]);
    t.wait_for("a clean exit", |s| s.contains("ZCTRACE_EXIT=0"));
    assert_eq!(t.alternate_screen(), "0", "alternate screen left behind");
    let s = t.screen();
    assert!(
        !s.contains("┌"),
        "dashboard left on the normal screen:\n{s}"
    );
}

#[test]
fn dashboard_says_when_the_terminal_is_too_small_and_ctrl_c_quits() {
    if !root() {
        return;
    }
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = env!("CARGO_BIN_EXE_zctrace");
    let t = Tmux::start(50, 12, &format!("{bin} demo --size 4M --methods sendfile"));
    t.wait_for("the too-small message", |s| {
        s.contains("terminal too small: 50x12")
    });
    t.keys(&["C-c"]);
    t.wait_for("a clean exit", |s| s.contains("ZCTRACE_EXIT=0"));
    assert_eq!(t.alternate_screen(), "0");
}

#[test]
fn pitfalls_show_a_real_sigbus_and_the_lease_cure() {
    if !root() {
        return;
    }
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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
fn attach_dashboard_shows_the_forked_child_and_quits_cleanly() {
    if !root() {
        return;
    }
    let s = Scratch::new();
    let go = s.path("go");
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut target = gated_cat(&s, "; sleep 1");
    let bin = env!("CARGO_BIN_EXE_zctrace");
    let t = Tmux::start(80, 24, &format!("{bin} attach {}", target.id()));
    t.wait_for("the dashboard", |s| s.contains("attached to"));
    std::fs::write(&go, b"").expect("go");
    t.wait_for("cat's read-write row", |s| {
        s.lines()
            .any(|l| l.contains("cat") && l.contains("read-write") && l.contains("32.0M"))
    });
    t.wait_for("the targets to exit", |s| {
        s.contains("every traced process has exited")
    });
    t.keys(&["q"]);
    t.wait_for("a clean exit", |s| s.contains("ZCTRACE_EXIT=0"));
    assert_eq!(t.alternate_screen(), "0");
    assert!(target.wait().expect("wait").success());
}

/// Serves `s`'s big.bin with Debian's nginx (one process, loopback only)
/// and downloads it once with curl while `zctrace attach` watches the
/// server by PID. Returns the server's final rows.
fn nginx_download(s: &Scratch, sendfile: bool) -> Vec<Value> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let prefix = s.path("");
    let conf = s.path(&format!("nginx-{sendfile}.conf"));
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1;\n\
             error_log {prefix}/nginx-error.log; pid {prefix}/nginx.pid;\n\
             events {{ worker_connections 16; }}\n\
             http {{ access_log off; sendfile {}; \n\
               client_body_temp_path {prefix}; proxy_temp_path {prefix}; fastcgi_temp_path {prefix};\n\
               uwsgi_temp_path {prefix}; scgi_temp_path {prefix};\n\
               server {{ listen 127.0.0.1:{port}; root {prefix}; }} }}\n",
            if sendfile { "on" } else { "off" }
        ),
    )
    .expect("nginx.conf");
    let mut server = Command::new("nginx")
        .args(["-c", &conf, "-p", &prefix])
        .spawn()
        .expect("nginx (cargo xtask setup installs nginx-light)");
    let url = format!("http://127.0.0.1:{port}/big.bin");
    // Wait until it answers before attaching, so startup is not measured.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-r", "0-0", &url])
        .status()
        .map_or(true, |st| !st.success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not come up on {url}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let report = s.path(&format!("nginx-{sendfile}.jsonl"));
    let pid = server.id().to_string();
    let zc = spawn_attach(&pid, &report);
    let got = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{size_download}", &url])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        SCRATCH_LEN.to_string(),
        "downloaded bytes"
    );
    // Stop the server: attach reports its final numbers when it exits.
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&server),
        rustix::process::Signal::TERM,
    );
    let _ = server.wait();
    let out = zc.wait_with_output().expect("zctrace");
    assert!(out.status.success());
    final_rows(&report, &out)
}

#[test]
fn nginx_is_sendfile_with_sendfile_on_and_read_write_with_it_off() {
    if !root() {
        return;
    }
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    let rows = nginx_download(&s, true);
    let sf = rows_of(&rows, "nginx", "sendfile");
    assert_eq!(sf.len(), 1, "sendfile on: {rows:?}");
    assert_between(
        "page refs MiB",
        mib(sf[0], "measured.page_ref_bytes.value"),
        32.0,
        32.1,
    );
    assert!(
        rows_of(&rows, "nginx", "read-write")
            .iter()
            .all(|r| mib(r, "measured.io_bytes") < 1.0),
        "{rows:?}"
    );

    let rows = nginx_download(&s, false);
    assert!(
        rows_of(&rows, "nginx", "sendfile").is_empty(),
        "sendfile off: {rows:?}"
    );
    let rw = rows_of(&rows, "nginx", "read-write");
    assert_eq!(rw.len(), 1, "sendfile off: {rows:?}");
    assert_between(
        "kernel->user MiB",
        mib(rw[0], "measured.cpu_copy_bytes.kernel_to_user.value"),
        32.0,
        32.2,
    );
    assert_between(
        "user->kernel MiB",
        mib(rw[0], "measured.cpu_copy_bytes.user_to_kernel.value"),
        32.0,
        32.2,
    );
}

#[test]
fn selftest_passes_on_this_kernel() {
    if !root() {
        return;
    }
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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
fn cold_runs_show_the_disk_dma_of_the_textbook() {
    if !root() {
        return;
    }
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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
fn the_event_log_fills_only_while_it_is_on_screen() {
    if !root() {
        return;
    }
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = env!("CARGO_BIN_EXE_zctrace");
    let t = Tmux::start(
        100,
        30,
        &format!("{bin} demo --loop --size 4M --methods read-write,sendfile"),
    );
    t.wait_for("the methods view", |s| s.contains(" done "));
    t.keys(&["4"]);
    // Syscall events of the demo's own threads, with their methods and fd
    // kinds; the window shows the newest ones, so look across screens.
    let (mut saw_sendfile, mut saw_file_read) = (false, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut s = String::new();
    while !(saw_sendfile && saw_file_read) {
        assert!(
            std::time::Instant::now() < deadline,
            "events missing from the log:\n{s}"
        );
        s = t.screen();
        // The fd column shows where the data comes from: the file.
        saw_sendfile |= s
            .lines()
            .any(|l| l.matches(" sendfile ").count() == 2 && l.contains(" file "));
        saw_file_read |= s
            .lines()
            .any(|l| l.contains(" read ") && l.contains("read-write") && l.contains("file"));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(s.contains("dropped by the kernel"), "{s}");
    t.keys(&["q"]);
    t.wait_for("a clean exit", |s| s.contains("ZCTRACE_EXIT=0"));
}
