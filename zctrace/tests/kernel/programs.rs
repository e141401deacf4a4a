//! Real servers zctrace did not write.

use crate::common::*;
use serde_json::Value;
use std::process::Command;

/// Serves `s`'s big.bin with Debian's nginx (one process, loopback only)
/// and downloads it once with curl while `zctrace attach` watches the
/// server by PID. Returns the server's final rows.
fn nginx_download(s: &Scratch, sendfile: bool) -> Vec<Value> {
    let mut server = Nginx::start(s, sendfile);
    let url = server.url.clone();
    let report = s.path(&format!("nginx-{sendfile}.jsonl"));
    let pid = server.child.id().to_string();
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
    server.stop();
    let out = zc.wait_with_output().expect("zctrace");
    assert!(out.status.success());
    final_rows(&report, &out)
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn nginx_is_sendfile_with_sendfile_on_and_read_write_with_it_off() {
    let _guard = serial();
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

/// A report's ledger account of one counter.
fn account<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stats"]["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no {name} account: {report}"))
}

/// Drops `path` from the page cache and checks that it is gone (`fincore`
/// counts the resident bytes): a cold read's disk bytes are only known
/// when the cache state is.
fn evict(path: &str) {
    for _ in 0..20 {
        let f = std::fs::File::open(path).expect("open");
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
        let out = Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES", path])
            .output()
            .expect("fincore");
        if String::from_utf8_lossy(&out.stdout).trim() == "0" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{path} stayed in the page cache");
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn disk_reads_queued_behind_an_untraced_fio_are_dd_s_once_each() {
    // fio (not traced) keeps the disk's queue full with direct random
    // reads: dd's readahead requests then wait in the I/O scheduler and
    // are issued by a kernel worker or by fio's own thread, and the driver
    // sends some back to be issued again. Each byte dd asked for is its
    // own, once; fio's are out of scope, even when a kernel worker issues
    // them. (Before block_rq_insert and block_rq_requeue were hooked, dd
    // got 41-53 of its 64 MiB here and 6-23 MiB went unattributed.)
    let _guard = serial();
    let s = Scratch::new();
    let load = s.path("fio-load.bin");
    let mut fio = Command::new("fio")
        .args([
            "--name=load",
            &format!("--filename={load}"),
            "--size=128M",
            "--rw=randread",
            "--bs=4k",
            "--direct=1",
            "--ioengine=libaio",
            "--iodepth=64",
            "--time_based",
            "--runtime=60",
            // The job is a thread of this process, so killing it stops the
            // load (a forked job would outlive its parent).
            "--thread",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("fio");
    // fio lays its file out first: wait until it reads.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let big = s.path("big.bin");
    let mut results = Vec::new();
    for _ in 0..2 {
        evict(&big);
        let report = s.path("dd.jsonl");
        let out = zctrace(&[
            "run",
            "--json",
            "-o",
            &report,
            "--",
            "dd",
            &format!("if={big}"),
            "of=/dev/null",
            "bs=1M",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        results.push(final_report(&report, &out));
    }
    let _ = fio.kill();
    let _ = fio.wait();
    for last in results {
        let rows = last["rows"].as_array().expect("rows");
        // dd's reads of the file are its read+write row from the file to
        // /dev/null (its start-up's page faults on its own binary are
        // "other"; its report to stderr is file to pipe).
        let rw: Vec<_> = rows_of(rows, "dd", "read-write")
            .into_iter()
            .filter(|r| r["source"] == "file" && r["destination"] == "chardev")
            .collect();
        assert_eq!(rw.len(), 1, "{rows:?}");
        // The file, and at most a few blocks of its metadata.
        assert_between(
            "dd's disk read",
            num(rw[0], "measured.dma_bytes.disk_read"),
            SCRATCH_LEN as f64,
            SCRATCH_LEN as f64 + 65536.0,
        );
        let disk = account(&last, "disk_read");
        // Kernel threads' own reads are in scope (unattributed), and the
        // machine may do a few; fio's are not.
        assert!(num(disk, "unattributed") < 1048576.0, "{disk}");
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn tar_reading_cold_files_is_charged_every_disk_byte() {
    // tar opens each file anew, so its first read of each is a call
    // nothing has classified when its readahead queues the disk requests:
    // they wait for the call's row, and are charged there when the call
    // returns or when they are issued, whichever comes second. Every byte
    // of the files comes from the disk and is tar's, none unattributed.
    let _guard = serial();
    let s = Scratch::new();
    let dir = s.path("cold");
    std::fs::create_dir(&dir).expect("mkdir");
    const FILES: u64 = 16;
    const LEN: u64 = 2 << 20;
    for i in 0..FILES {
        let data: Vec<u8> = (0..LEN).map(|b| (b * 7 + i) as u8).collect();
        std::fs::write(format!("{dir}/f{i:02}"), data).expect("write");
    }
    // Written back, then evicted: a read can only come from the disk.
    rustix::fs::sync();
    for i in 0..FILES {
        evict(&format!("{dir}/f{i:02}"));
    }
    let report = s.path("tar.jsonl");
    // Not to /dev/null, which GNU tar takes as leave to read nothing.
    let archive = s.path("cold.tar");
    let out = zctrace(&[
        "run", "--json", "-o", &report, "--", "tar", "-cf", &archive, "-C", &dir, ".",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = final_report(&report, &out);
    let rows = last["rows"].as_array().expect("rows");
    // The files' reads are tar's read-write row from the files (to its
    // archive): the files' bytes, and at most a little of the directory
    // and inodes. tar's own binary, when something evicted it, is read in
    // at its exec and counted on its "other" row (these VMs reclaim idle
    // page cache: a kdamond thread runs; 532,480 bytes of /usr/bin/tar).
    let read: f64 = rows
        .iter()
        .filter(|r| r["comm"] == "tar" && r["method"] == "read-write" && r["source"] == "file")
        .map(|r| num(r, "measured.dma_bytes.disk_read"))
        .sum();
    assert_between(
        "tar's disk read of the files",
        read,
        (FILES * LEN) as f64,
        (FILES * LEN) as f64 + 262_144.0,
    );
    let disk = account(&last, "disk_read");
    assert!(num(disk, "unattributed") < 1048576.0, "{disk}");
}
