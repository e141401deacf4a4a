//! The probes through the library's API, in this test process: following
//! forks, both homes of thread state, row recycling, context switches held
//! to the scheduler's own counts, ring-buffer drops.
use std::{fs::File, io::Read as _, thread};

use zctrace_common::{Call, counter};

use zctrace::probe::{ProbeOptions, Probes};

use crate::common::serial;

/// Bytes of /etc/services, read by a child `cat`.
fn child_cat() -> (u32, u64) {
    let len = std::fs::metadata("/etc/services")
        .expect("/etc/services")
        .len();
    let mut child = std::process::Command::new("cat")
        .arg("/etc/services")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn cat");
    let pid = child.id();
    assert!(child.wait().expect("wait").success());
    (pid, len)
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn forked_children_are_followed_only_when_asked_and_nothing_else_is_traced() {
    let _guard = serial();
    let me = std::process::id();
    for follow in [true, false] {
        let mut p = Probes::load(ProbeOptions {
            follow_forks: follow,
            ..ProbeOptions::default()
        })
        .expect("load probes");
        p.trace_pid(me).expect("trace self");
        let (pid, len) = child_cat();
        let snap = p.snapshot().expect("snapshot");
        let child = snap.sum(|k| k.tgid == pid);
        if follow {
            // cat read the whole file from the page cache into its
            // buffer (the dynamic loader also reads a few ELF headers).
            let k2u = child.v[counter::K2U_DERIVED];
            assert!(
                (len..len + 65_536).contains(&k2u),
                "child's reads: {k2u} for {len}"
            );
            assert!(child.v[counter::SYSCALLS] > 3, "{child:?}");
        } else {
            assert_eq!(child, zctrace_common::Counters::ZERO, "child not traced");
        }
        // The machine is busy (cargo, the test harness, daemons): only
        // the traced set may show up (and the overflow row, always there,
        // empty while the map has room; rows are per process).
        for k in snap.rows.keys() {
            assert_eq!(k.tid, 0, "per-process rows: {k:?}");
            if *k == zctrace_common::CounterKey::OVERFLOW {
                assert_eq!(snap.rows[k], zctrace_common::Counters::ZERO);
                continue;
            }
            assert!(
                k.tgid == me || (follow && k.tgid == pid),
                "untraced {k:?} follow {follow} pid {pid} {:?}",
                snap.rows[k]
            );
        }
    }
}

/// `n` one-byte reads of /dev/zero on a new thread; returns its tid.
fn reader_thread(n: u64) -> u32 {
    thread::spawn(move || {
        let mut zero = File::open("/dev/zero").expect("open /dev/zero");
        let mut b = [0u8; 1];
        for _ in 0..n {
            zero.read_exact(&mut b).expect("read");
        }
        my_tid()
    })
    .join()
    .expect("reader thread")
}

/// Both homes of thread state count alike: the thread table, and task
/// storage (where a thread goes when another holds its table slot).
/// Also: untracing stops the counting at once (generation bump), and
/// recycled rows come back zeroed and count exactly for a new thread.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn thread_table_and_task_storage_count_alike_and_rows_recycle() {
    let _guard = serial();
    let me = std::process::id();
    const READS: u64 = 20_000;
    for no_thread_table in [false, true] {
        let mut p = Probes::load(ProbeOptions {
            follow_forks: true,
            no_thread_table,
            per_thread: true,
            ..ProbeOptions::default()
        })
        .expect("load probes");
        p.trace_pid(me).expect("trace self");
        let tid = reader_thread(READS);
        let (pid, len) = child_cat();
        let snap = p.snapshot().expect("snapshot");
        let reads = snap.sum(|k| k.tid == tid && k.call == Call::Read as u32);
        let what = if no_thread_table {
            "task storage"
        } else {
            "thread table"
        };
        assert_eq!(reads.v[counter::SYSCALLS], READS, "{what}");
        assert_eq!(reads.v[counter::IO_BYTES], READS, "{what}");
        let k2u = snap.sum(|k| k.tgid == pid).v[counter::K2U_DERIVED];
        assert!(
            (len..len + 65_536).contains(&k2u),
            "{what}: cat {k2u} of {len}"
        );
        // The finished reader's rows go back to the free list, zeroed.
        assert!(p.remove_rows(&[tid]).expect("recycle") > 0);
        assert_eq!(
            p.snapshot().expect("snapshot").sum(|k| k.tid == tid),
            zctrace_common::Counters::ZERO
        );
        // A new thread (maybe on a recycled row) counts exactly.
        let tid2 = reader_thread(READS);
        let snap = p.snapshot().expect("snapshot");
        let reads = snap.sum(|k| k.tid == tid2 && k.call == Call::Read as u32);
        assert_eq!(reads.v[counter::SYSCALLS], READS, "{what}, recycled rows");
        // Untraced: a thread's reads no longer count.
        p.untrace_pid(me).expect("untrace");
        let tid3 = reader_thread(1_000);
        let snap = p.snapshot().expect("snapshot");
        assert_eq!(
            snap.sum(|k| k.tid == tid3),
            zctrace_common::Counters::ZERO,
            "{what}"
        );
    }
}

/// The calling thread's (voluntary, involuntary) switches so far, as the
/// scheduler itself counts them.
fn kernel_count() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .expect(name)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

/// A thread's switches as the probes counted them against the kernel's
/// own counts, read by the thread as its last act (a thread's counts
/// start at zero): the probes also see its switches after that, as it
/// exits.
fn assert_switches_match(p: &mut Probes, tid: u32, kernel: (u64, u64)) {
    let c = p.snapshot().expect("snapshot").sum(|k| k.tid == tid);
    for (what, n, k) in [
        ("voluntary", c.v[counter::CS_VOLUNTARY], kernel.0),
        ("involuntary", c.v[counter::CS_INVOLUNTARY], kernel.1),
    ] {
        assert!(
            (k..=k + 2).contains(&n),
            "{n} {what} switches counted, the kernel counted {k}"
        );
    }
}

/// The calling thread's id and (voluntary, involuntary) switch counts.
fn me_and_my_switches() -> (u32, (u64, u64)) {
    (my_tid(), kernel_count())
}

fn my_tid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// The probes, loaded with the defaults, tracing this test process.
fn traced_self() -> Probes {
    let mut p = Probes::load(ProbeOptions {
        per_thread: true,
        ..ProbeOptions::default()
    })
    .expect("load probes");
    p.trace_pid(std::process::id()).expect("trace self");
    p
}

/// Each nanosleep blocks: one voluntary switch per sleep, charged to
/// the sleeping thread (sched_switch's idle shortcut must not hide it),
/// as many as the scheduler itself counted.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_sleeping_thread_s_context_switches_match_the_kernel_s_own_count() {
    let _guard = serial();
    let mut p = traced_self();
    const SLEEPS: u64 = 20;
    let (tid, kernel) = thread::spawn(|| {
        for _ in 0..SLEEPS {
            thread::sleep(std::time::Duration::from_millis(2));
        }
        me_and_my_switches()
    })
    .join()
    .expect("sleeper thread");
    assert!(kernel.0 >= SLEEPS, "{kernel:?}");
    assert_switches_match(&mut p, tid, kernel);
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn preempted_threads_involuntary_switches_match_the_kernel_s_own_count() {
    let _guard = serial();
    let mut p = traced_self();
    // Two threads spinning on one CPU take turns by preemption.
    let spinner = || {
        thread::spawn(|| {
            let mut one = rustix::thread::CpuSet::new();
            one.set(0);
            rustix::thread::sched_setaffinity(None, &one).expect("pin to CPU 0");
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_millis(100) {
                std::hint::spin_loop();
            }
            me_and_my_switches()
        })
    };
    let (a, b) = (spinner(), spinner());
    for (tid, kernel) in [a.join().expect("spinner"), b.join().expect("spinner")] {
        assert!(kernel.1 >= 3, "hardly preempted: {kernel:?}");
        assert_switches_match(&mut p, tid, kernel);
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_flooded_ring_buffer_counts_drops_while_counters_stay_exact() {
    let _guard = serial();
    let mut p = Probes::load(ProbeOptions {
        per_thread: true,
        ..ProbeOptions::default()
    })
    .expect("load probes");
    p.set_events(true).expect("enable events");
    // Taken but not read until the end, so it fills up.
    let mut ring = p.take_events().expect("ring buffer");
    p.trace_pid(std::process::id()).expect("trace self");
    // 1 MiB of 48-byte events (plus 8-byte headers) holds ~18,700.
    const READS: u64 = 50_000;
    let tid = reader_thread(READS);
    // Other tests' threads in this process keep making syscalls: stop
    // tracing, so nothing new lands in the ring while it is drained.
    p.untrace_pid(std::process::id()).expect("untrace");
    let snap = p.snapshot().expect("snapshot");
    let stats = p.stats(&snap).expect("stats");
    let reads = snap.sum(|k| k.tid == tid && k.call == Call::Read as u32);
    assert_eq!(
        reads.v[counter::SYSCALLS],
        READS,
        "every read counted exactly"
    );
    assert_eq!(reads.v[counter::IO_BYTES], READS, "one byte each");
    assert!(
        stats.events_dropped > 0,
        "the ring must overflow: {stats:?}"
    );
    assert!(
        stats.events_sent + stats.events_dropped >= READS,
        "{stats:?}"
    );
    let mut in_ring = 0u64;
    while ring.next().is_some() {
        in_ring += 1;
    }
    assert_eq!(
        in_ring, stats.events_sent,
        "sent events are all in the ring"
    );
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn mapped_snapshots_read_the_same_rows_as_row_by_row() {
    let _guard = serial();
    let mut p = Probes::load(ProbeOptions {
        per_thread: true,
        ..ProbeOptions::default()
    })
    .expect("load probes");
    p.trace_pid(std::process::id()).expect("trace self");
    // 600 threads, each with its own rows (more than one batch of the
    // index would hold at 4096 only with several rows each: each reader
    // makes an open, reads and a close, in different rows).
    let tids: Vec<u32> = (0..600).map(|i| reader_thread(1 + i % 7)).collect();
    // Both ways, the rows of these threads; and thread i made 1 + i % m
    // one-byte reads of /dev/zero.
    let check = |p: &Probes, of: &[u32], m: u64| {
        let mapped = p.snapshot().expect("mapped snapshot");
        let one_by_one = p.snapshot_per_row().expect("row-by-row snapshot");
        let rows = |s: &zctrace::model::Snapshot| {
            s.rows
                .iter()
                .filter(|(k, _)| of.contains(&k.tid))
                .map(|(k, v)| (*k, *v))
                .collect::<Vec<_>>()
        };
        let (a, b) = (rows(&mapped), rows(&one_by_one));
        assert!(
            a.len() >= of.len(),
            "{} rows of {} threads",
            a.len(),
            of.len()
        );
        assert_eq!(a, b, "the same rows and counts both ways");
        for (i, tid) in of.iter().enumerate() {
            let reads: u64 = a
                .iter()
                .filter(|(k, _)| k.tid == *tid && k.call == Call::Read as u32)
                .map(|(_, v)| v.v[counter::SYSCALLS])
                .sum();
            assert_eq!(reads, 1 + i as u64 % m, "thread {tid}");
        }
    };
    check(&p, &tids, 7);
    // Recycle half the readers' rows, then make new readers, which are
    // given the freed rows under new keys: the sampler's cache of the
    // rows' keys must drop the released rows and learn the reused ones.
    let (gone, kept) = tids.split_at(300);
    assert!(p.remove_rows(gone).expect("recycle") >= 300);
    let fresh: Vec<u32> = (0..300).map(|i| reader_thread(1 + i % 5)).collect();
    let snap = p.snapshot().expect("mapped snapshot");
    assert!(
        !snap.rows.keys().any(|k| gone.contains(&k.tid)),
        "released rows are gone"
    );
    check(&p, &fresh, 5);
    let kept_rows =
        |s: &zctrace::model::Snapshot| s.rows.iter().filter(|(k, _)| kept.contains(&k.tid)).count();
    assert_eq!(
        kept_rows(&snap),
        kept_rows(&p.snapshot_per_row().expect("row by row"))
    );
}

/// Links on the sys_enter tracepoint, machine-wide (bpftool).
fn sys_enter_links() -> usize {
    let out = std::process::Command::new("bpftool")
        .args(["link", "show", "-j"])
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool link show failed");
    let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    links
        .iter()
        .filter(|l| l["tp_name"].as_str() == Some("sys_enter"))
        .count()
}

/// Counting needs sys_exit alone; sys_enter, which every process on the
/// host would pay for, is attached only while the event log is on, and
/// then times each call it logs. A call already in flight when the log
/// opens is logged untimed (duration 0), never with an older start.
#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn sys_enter_is_attached_only_while_the_event_log_is_on_and_times_every_logged_call() {
    let _guard = serial();
    let before = sys_enter_links();
    let mut p = Probes::load(ProbeOptions {
        per_thread: true,
        ..ProbeOptions::default()
    })
    .expect("load probes");
    assert_eq!(sys_enter_links(), before, "not attached while counting");
    p.set_events(true).expect("events on");
    assert_eq!(sys_enter_links(), before + 1, "attached with the log on");
    let mut ring = p.take_events().expect("ring buffer");
    p.trace_pid(std::process::id()).expect("trace self");
    const READS: u64 = 2_000;
    let tid = reader_thread(READS);
    p.untrace_pid(std::process::id()).expect("untrace");
    let (mut logged, mut timed) = (0u64, 0u64);
    while let Some(item) = ring.next() {
        if let Some(ev) = zctrace_common::Event::from_bytes(&item)
            && ev.tid == tid
            && ev.call == Call::Read as u32
        {
            logged += 1;
            timed += u64::from(ev.dur_ns > 0);
        }
    }
    assert_eq!(logged, READS, "every read logged");
    assert_eq!(
        timed, READS,
        "every read timed (each began with the log on)"
    );
    p.set_events(false).expect("events off");
    assert_eq!(sys_enter_links(), before, "detached with the log off");
    let snap = p.snapshot().expect("snapshot");
    let reads = snap.sum(|k| k.tid == tid && k.call == Call::Read as u32);
    assert_eq!(reads.v[counter::SYSCALLS], READS, "counted exactly");
    // On again: a new session, attached again.
    p.set_events(true).expect("events on again");
    assert_eq!(sys_enter_links(), before + 1, "attached again");
    drop(p);
    assert_eq!(sys_enter_links(), before, "nothing left attached");
}
