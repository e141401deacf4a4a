//! Nothing lost without a word: exact totals at any thread count, a full
//! row map declared to the byte, and the flows of real programs.

use crate::common::*;
use serde_json::Value;
use std::process::Command;

/// Builds threads.c (a thread-per-connection shape: pread + write to a
/// pipe per thread) into the scratch directory.
fn threads_program(s: &Scratch) -> String {
    let bin = s.path("threads");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kernel/threads.c");
    let built = Command::new("cc")
        .args(["-O2", "-pthread", "-o", &bin, src])
        .status()
        .expect("cc (cargo xtask setup installs gcc)");
    assert!(built.success(), "cc threads.c");
    bin
}

fn sum(rows: &[Value], path: &str, keep: impl Fn(&Value) -> bool) -> f64 {
    rows.iter().filter(|r| keep(r)).map(|r| num(r, path)).sum()
}

const U2K: &str = "measured.cpu_copy_bytes.user_to_kernel.value";
const K2U: &str = "measured.cpu_copy_bytes.kernel_to_user.value";

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn fifty_thousand_threads_are_counted_exactly_in_per_process_rows() {
    let s = Scratch::new();
    let bin = threads_program(&s);
    let big = s.path("big.bin");
    // 50,000 threads, 25,000 alive at once (pid_max here is 32768), each
    // 100 x (pread 4 KiB + write 4 KiB to a pipe); one thread drains it.
    let (threads, iters, block) = (50_000u64, 100u64, 4096u64);
    let payload = (threads * iters * block) as f64;
    let (code, report) = run_report(&s, &[], &[&bin, &big, "50000", "25000", "100", "4096"]);
    assert_eq!(code, Some(0), "every block was drained: {report}");
    let rows = report["rows"].as_array().expect("rows");
    // Per process: a handful of rows, whatever the thread count.
    assert!(rows.len() < 12, "{} rows: {rows:?}", rows.len());
    assert!(rows.iter().all(|r| r.get("tid").is_none()), "{rows:?}");
    let stats = &report["stats"];
    assert_eq!(stats["counter_map_full"], 0, "{stats}");
    assert_eq!(stats["thread_map_full"], 0, "{stats}");
    let copy = rows_of(rows, "threads", "read-write");
    let producer: Vec<_> = copy
        .iter()
        .filter(|r| r["source"] == "file" && r["destination"] == "pipe")
        .collect();
    assert_eq!(producer.len(), 1, "{rows:?}");
    // The pipe writes are the threads' and the count the program prints
    // on its stdout (a pipe): exact.
    let printed = ((threads * iters * block).to_string().len() + 1) as f64;
    assert_eq!(num(producer[0], U2K), payload + printed, "{}", producer[0]);
    // The file reads: the payload and the loader's few ELF-header reads.
    let from_file = num(producer[0], K2U);
    assert_between("file reads / payload", from_file / payload, 1.0, 1.001);
    assert_between(
        "syscalls per block",
        num(producer[0], "measured.syscalls") / (threads * iters) as f64,
        2.0,
        2.001,
    );
    let sink: Vec<_> = copy
        .iter()
        .filter(|r| r["source"] == "pipe" && r["destination"] == "memory")
        .collect();
    assert_eq!(sink.len(), 1, "the drain thread: {rows:?}");
    assert_eq!(num(sink[0], K2U), payload, "{}", sink[0]);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_full_row_map_falls_back_and_declares_it_to_the_byte() {
    let s = Scratch::new();
    let bin = threads_program(&s);
    let big = s.path("big.bin");
    // Per-thread rows in a 64-row map: 2,000 threads need thousands.
    let (threads, iters, block) = (2_000u64, 10u64, 4096u64);
    let payload = threads * iters * block;
    let (code, report) = run_report(
        &s,
        &["--per-thread", "--max-rows", "64"],
        &[&bin, &big, "2000", "2000", "10", "4096"],
    );
    assert_eq!(code, Some(0), "{report}");
    let rows = report["rows"].as_array().expect("rows");
    let stats = &report["stats"];
    assert_eq!(stats["row_capacity"], 64, "{stats}");
    assert!(num(stats, "counter_map_full") > 0.0, "{stats}");
    let fallback: Vec<_> = rows.iter().filter(|r| r["method"] == "map-full").collect();
    assert!(!fallback.is_empty(), "{rows:?}");
    // What fell back is declared to the byte: the stats' figures are the
    // map-full rows' own.
    let f = &stats["fallback"];
    let is_fallback = |r: &Value| r["method"] == "map-full";
    assert_eq!(
        num(f, "syscalls"),
        sum(rows, "measured.syscalls", is_fallback)
    );
    assert_eq!(
        num(f, "io_bytes"),
        sum(rows, "measured.io_bytes", is_fallback)
    );
    assert!(num(f, "io_bytes") > 0.0, "{f}");
    // And nothing is lost: all rows together hold every pipe write (the
    // payload, and the count the program prints on its stdout, a pipe).
    let printed = (payload.to_string().len() + 1) as f64;
    assert_eq!(
        sum(rows, U2K, |_| true),
        payload as f64 + printed,
        "{rows:?}"
    );
    // Rows kept per thread carry their thread.
    assert!(rows.iter().any(|r| r["tid"].as_u64().is_some()), "{rows:?}");
}

/// The one row of `comm`'s `method` with this flow.
fn flow_row<'a>(rows: &'a [Value], comm: &str, method: &str, src: &str, dst: &str) -> &'a Value {
    let found: Vec<_> = rows_of(rows, comm, method)
        .into_iter()
        .filter(|r| r["source"] == src && r["destination"] == dst)
        .collect();
    assert_eq!(found.len(), 1, "{comm} {method} {src}>{dst} in {rows:?}");
    found[0]
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn curl_downloading_a_file_is_read_write_from_tcp_to_a_file() {
    let s = Scratch::new();
    let server = Nginx::start(&s, true);
    let out = s.path("download.bin");
    let (code, rows) = run_traced(&s, &["curl", "-s", "-o", &out, &server.url]);
    assert_eq!(code, Some(0));
    assert_eq!(
        std::fs::metadata(&out).expect("downloaded").len(),
        SCRATCH_LEN
    );
    let dl = flow_row(&rows, "curl", "read-write", "tcp", "file");
    // Its receives joined its writes: both copies of a download.
    assert_between("socket -> user MiB", mib(dl, K2U), 32.0, 32.01);
    assert_between("user -> page cache MiB", mib(dl, U2K), 32.0, 32.0);
    assert_eq!(
        dl["measured"]["cpu_copy_bytes"]["kernel_to_user"]["source"],
        "observed"
    );
    // No file write is filed under a file read (curl reads its config and
    // certificates first).
    assert!(
        rows_of(&rows, "curl", "read-write")
            .iter()
            .all(|r| !(r["source"] == "file" && r["destination"] == "file")),
        "{rows:?}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn tar_into_cat_is_a_producer_and_a_sink() {
    let s = Scratch::new();
    let script = format!("tar cf - -C {} big.bin | cat > /dev/null", s.path(""));
    let (code, rows) = run_traced(&s, &["sh", "-c", &script]);
    assert_eq!(code, Some(0));
    let tar = flow_row(&rows, "tar", "read-write", "file", "pipe");
    assert_between("tar file reads MiB", mib(tar, K2U), 32.0, 32.1);
    // The archive: the file and its header and padding blocks.
    assert_between("tar pipe writes MiB", mib(tar, U2K), 32.0, 32.1);
    let cat = flow_row(&rows, "cat", "read-write", "pipe", "chardev");
    assert_between("cat pipe reads MiB", mib(cat, K2U), 32.0, 32.1);
    // Nothing that moved payload is `other`.
    for r in rows.iter().filter(|r| r["method"] == "other") {
        assert_eq!(num(r, "measured.io_bytes"), 0.0, "{r}");
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn rsync_receiver_writes_what_it_reads_from_its_sender() {
    let s = Scratch::new();
    let dest = s.path("dest");
    std::fs::create_dir(&dest).expect("mkdir");
    let (code, rows) = run_traced(&s, &["rsync", &s.path("big.bin"), &format!("{dest}/")]);
    assert_eq!(code, Some(0));
    assert_eq!(
        std::fs::metadata(format!("{dest}/big.bin"))
            .expect("copied")
            .len(),
        SCRATCH_LEN
    );
    // rsync forks a sender, a generator and a receiver, all named rsync:
    // one of them writes the file from the socket it reads its sender on.
    let receiver: Vec<_> = rows_of(&rows, "rsync", "read-write")
        .into_iter()
        .filter(|r| r["source"] == "unix" && r["destination"] == "file")
        .collect();
    assert_eq!(receiver.len(), 1, "{rows:?}");
    assert_between(
        "receiver file writes MiB",
        mib(receiver[0], U2K),
        32.0,
        32.01,
    );
    let sender: Vec<_> = rows_of(&rows, "rsync", "read-write")
        .into_iter()
        .filter(|r| r["source"] == "file" && r["destination"] == "unix")
        .collect();
    assert!(!sender.is_empty(), "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["method"] != "other" || num(r, "measured.io_bytes") == 0.0),
        "{rows:?}"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn socat_file_to_tcp_counts_no_empty_receives() {
    let s = Scratch::new();
    let port = free_port().to_string();
    let mut sink = Command::new("socat")
        .args([
            "-u",
            &format!("TCP-LISTEN:{port},reuseaddr"),
            "OPEN:/dev/null",
        ])
        .spawn()
        .expect("socat (cargo xtask setup installs it)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port.parse().unwrap())).is_err() {
        assert!(std::time::Instant::now() < deadline, "socat listener");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // That probe connection was the listener's one: start another.
    let _ = sink.wait();
    let mut sink = Command::new("socat")
        .args([
            "-u",
            &format!("TCP-LISTEN:{port},reuseaddr"),
            "OPEN:/dev/null",
        ])
        .spawn()
        .expect("socat");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, rows) = run_traced(
        &s,
        &[
            "socat",
            &format!("FILE:{}", s.path("big.bin")),
            &format!("TCP:127.0.0.1:{port}"),
        ],
    );
    let _ = sink.wait();
    assert_eq!(code, Some(0), "{rows:?}");
    let send = flow_row(&rows, "socat", "read-write", "file", "tcp");
    assert_between("socat socket writes MiB", mib(send, U2K), 32.0, 32.0);
    // socat polls its socket for data the other side never sends: those
    // reads move nothing and are not receives (a receive row may hold the
    // context switches of a read that blocked, then came back empty).
    for r in rows_of(&rows, "socat", "socket-recv") {
        assert!(
            num(r, "measured.syscalls") == 0.0 || num(r, "measured.io_bytes") > 0.0,
            "an empty receive counted: {r}"
        );
    }
    let per_chunk = num(send, "measured.syscalls") / (SCRATCH_LEN as f64 / 8192.0);
    assert_between("syscalls per 8 KiB chunk", per_chunk, 1.9, 2.1);
}
