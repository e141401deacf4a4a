//! `zctrace run`: real programs traced from their first instruction.

use crate::common::*;
use serde_json::Value;

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn run_cat_reads_the_file_into_user_memory() {
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
#[ignore = "needs root: cargo xtask test runs it"]
fn run_cp_uses_copy_file_range_with_no_user_copies() {
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
#[ignore = "needs root: cargo xtask test runs it"]
fn run_follows_forks_passes_the_exit_status_and_sees_threads() {
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
#[ignore = "needs root: cargo xtask test runs it"]
fn run_python_socket_sendfile_is_classified_as_sendfile() {
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

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_process_that_renames_itself_is_listed_by_its_new_name_within_a_sample() {
    // prctl(PR_SET_NAME) half-way through, then the process lives on: the
    // kernel's rename event names it in the next samples (before the
    // rename hook, /proc was read again only every 10 s, so the old name
    // stayed until then; at exit the exit event corrects it, so the check
    // is on the live samples).
    let _guard = serial();
    let s = Scratch::new();
    let report = s.path("rename.jsonl");
    let py = "import ctypes, time\n\
              libc = ctypes.CDLL(None)\n\
              open('/etc/hostname').read(); time.sleep(1)\n\
              libc.prctl(15, b'zc-renamed', 0, 0, 0)\n\
              open('/etc/hostname').read(); time.sleep(2)\n";
    let out = zctrace(&[
        "run",
        "--json",
        "-o",
        &report,
        "--interval",
        "250ms",
        "--",
        "/usr/bin/python3",
        "-c",
        py,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    final_report(&report, &out);
    let text = std::fs::read_to_string(&report).expect("report");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let names = |l: &Value| -> Vec<String> {
        l["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["comm"].as_str().map(str::to_owned))
            .collect()
    };
    let at = |t: f64| {
        lines
            .iter()
            .filter(|l| l["final"] == false)
            .find(|l| l["elapsed_s"].as_f64().is_some_and(|e| e >= t))
            .unwrap_or_else(|| panic!("no live sample after {t} s: {text}"))
    };
    assert!(names(at(0.5)).iter().any(|n| n == "python3"), "{text}");
    let late = names(at(2.0));
    assert!(late.iter().any(|n| n == "zc-renamed"), "{late:?}");
    assert!(!late.iter().any(|n| n == "python3"), "{late:?}");
}
