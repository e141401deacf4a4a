//! `zctrace attach` and `zctrace run`: trace real programs and report, per
//! process and method, what their I/O cost.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs::File,
    io::{self, Write},
    os::unix::process::{CommandExt as _, ExitStatusExt},
    path::Path,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use zctrace_common::{CounterKey, Counters, Event, FdKind, Flow, Method, event_kind};

use crate::{
    model::{HookSet, Measured, Snapshot, human_bytes},
    probe::{Probes, Stats},
    sample::{Retire, Sample, Sampler, SamplerOptions},
};

/// A problem with the process to trace (exit status 5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

#[derive(Clone, Debug)]
pub struct TraceOptions {
    pub duration: Option<Duration>,
    /// Report every interval (JSON lines, or a table in text mode).
    pub interval: Option<Duration>,
    pub json: bool,
    /// Where reports go (None: stdout for attach, stderr for run).
    pub output: Option<PathBuf>,
}

/// One (process, method, flow) row of a report (and thread, with
/// `--per-thread`).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    pub comm: String,
    pub exited: bool,
    #[serde(serialize_with = "crate::model::serialize_method")]
    pub method: Method,
    /// Where the payload came from and went to (null: no payload).
    #[serde(serialize_with = "serialize_kind")]
    pub source: FdKind,
    #[serde(serialize_with = "serialize_kind")]
    pub destination: FdKind,
    pub measured: Measured,
}

fn serialize_kind<S: serde::Serializer>(k: &FdKind, s: S) -> Result<S::Ok, S::Error> {
    match k {
        FdKind::Unknown => s.serialize_none(),
        k => s.serialize_str(k.name()),
    }
}

impl Row {
    /// The process name, marked `*` once it has exited.
    pub fn label(&self) -> String {
        if self.exited {
            format!("{}*", self.comm)
        } else {
            self.comm.clone()
        }
    }

    /// "file>tcp", or "-" for a row that moves no payload.
    pub fn flow(&self) -> String {
        flow_label(Flow::new(self.source, self.destination))
    }
}

/// "file>tcp", or "-" for no payload.
pub fn flow_label(f: Flow) -> String {
    if f == Flow::NONE {
        "-".to_owned()
    } else {
        format!("{}>{}", f.src.name(), f.dst.name())
    }
}

/// The version of the run/attach JSON lines (and of the demo's document):
/// bumped on incompatible change. 2: rows have a flow (`source`,
/// `destination`) and are per process (`tid` with --per-thread); `stats`
/// has the ledger and the fallback rows.
pub const JSON_SCHEMA: u32 = 2;

#[derive(Serialize)]
struct JsonLine<'a> {
    schema: u32,
    /// Seconds since the Unix epoch.
    ts: f64,
    elapsed_s: f64,
    #[serde(rename = "final")]
    is_final: bool,
    rows: &'a [Row],
    /// The probes' losses and unattributed work, as in the demo's JSON.
    stats: &'a Stats,
}

/// Process names, looked up once, kept after the process exits.
pub struct Names {
    /// Name, exited, and when /proc was last read for it.
    names: BTreeMap<u32, (String, bool, Option<std::time::Instant>)>,
    /// Processes already looked up in /proc during this sample.
    fresh: std::collections::BTreeSet<u32>,
    /// How often a live process's name and state are read from /proc
    /// again: without the rename hook, to catch renames (prctl
    /// PR_SET_NAME) and what a dropped event would have said; with it,
    /// never, unless the kernel dropped an event (see `lost_events`).
    backstop: Option<std::time::Duration>,
}

impl Default for Names {
    fn default() -> Self {
        Names::new(false)
    }
}

/// See [`Names::backstop`].
const NAME_BACKSTOP: std::time::Duration = std::time::Duration::from_secs(10);

impl Names {
    /// `renames`: the kernel reports renames (the `task_rename` hook), as
    /// it does every exec and exit.
    pub fn new(renames: bool) -> Self {
        Names {
            names: BTreeMap::new(),
            fresh: std::collections::BTreeSet::new(),
            backstop: (!renames).then_some(NAME_BACKSTOP),
        }
    }

    /// The kernel dropped events (counted in every report): an exit, an
    /// exec or a rename may be among them, so every live process's name
    /// and state are read from /proc again when next needed.
    pub fn lost_events(&mut self) {
        for e in self.names.values_mut().filter(|e| !e.1) {
            e.2 = None;
        }
    }

    /// The current name while the process lives (it changes at exec), the
    /// last one known after it exits. /proc is read at first sight, then
    /// only every `NAME_BACKSTOP` (exec and exit events keep names and
    /// liveness current), and at most once per process per sample (see
    /// `next_sample`).
    pub fn get(&mut self, pid: u32) -> (String, bool) {
        let (name, exited) = self.entry(pid);
        (name.clone(), exited)
    }

    /// Whether the process has exited, as `get` knows it (without copying
    /// its name).
    pub fn has_exited(&mut self, pid: u32) -> bool {
        self.entry(pid).1
    }

    fn entry(&mut self, pid: u32) -> (&String, bool) {
        let now = std::time::Instant::now();
        let entry = self
            .names
            .entry(pid)
            .or_insert_with(|| ("?".into(), false, None));
        let recent = entry
            .2
            .is_some_and(|t| self.backstop.is_none_or(|b| now.duration_since(t) < b));
        if entry.1 || recent || !self.fresh.insert(pid) {
            return (&entry.0, entry.1);
        }
        entry.2 = Some(now);
        match proc_stat(pid) {
            // A zombie still has its name.
            Some((comm, alive)) => {
                entry.0 = comm;
                entry.1 = !alive;
            }
            None => entry.1 = true,
        }
        (&entry.0, entry.1)
    }

    /// A new sample: names are looked up again.
    pub fn next_sample(&mut self) {
        self.fresh.clear();
    }

    /// Forgets a process whose numbers have been folded elsewhere (its PID
    /// may be reused by a new process).
    pub fn forget(&mut self, pid: u32) {
        self.names.remove(&pid);
        self.fresh.remove(&pid);
    }

    /// From the kernel's exit event: the name the process died with.
    fn exited(&mut self, pid: u32, comm: &str) {
        self.names.insert(pid, (comm.to_owned(), true, None));
    }

    /// From the kernel's exec event: the process's new name.
    fn execed(&mut self, pid: u32, comm: &str) {
        let now = Some(std::time::Instant::now());
        self.names.insert(pid, (comm.to_owned(), false, now));
    }

    /// From the kernel's rename event: the new name of a process already
    /// known (with a cgroup target the kernel reports every process's).
    fn renamed(&mut self, pid: u32, comm: &str) {
        if let Some(e) = self.names.get_mut(&pid).filter(|e| !e.1) {
            e.0 = comm.to_owned();
        }
    }

    /// Reads the ring buffer, learning names from exit events; returns the
    /// events (at most `keep` of them) for an event log.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>, keep: usize) -> Vec<Event> {
        let mut kept = Vec::new();
        while let Some(item) = ring.next() {
            let Some(ev) = Event::from_bytes(&item) else {
                continue;
            };
            if ev.kind == event_kind::PROCESS_EXIT {
                self.exited(ev.tgid, ev.comm_str());
            } else if ev.kind == event_kind::EXEC {
                self.execed(ev.tgid, ev.comm_str());
            } else if ev.kind == event_kind::RENAME {
                self.renamed(ev.tgid, ev.comm_str());
            }
            if kept.len() < keep {
                kept.push(ev);
            }
        }
        kept
    }
}

fn proc_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, alive)| alive)
}

/// A process's name and whether it is alive, from one read of
/// /proc/PID/stat ("PID (NAME) STATE ..."; the name may hold spaces and
/// parentheses, so it ends at the last ")"). A zombie still has /proc/PID;
/// it has exited for our purposes.
fn proc_stat(pid: u32) -> Option<(String, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(") ")?;
    let (_, name) = head.split_once(" (")?;
    let alive = rest.chars().next().is_some_and(|s| s != 'Z' && s != 'X');
    Some((name.to_owned(), alive))
}

/// Report rows: counter rows summed per (process, thread when kept,
/// method, flow). A transfer's halves join: the reads of a read-write
/// (source -> memory) go with the writes that name their destination
/// (source -> file), and socket receives whose data the process wrote on
/// join that read-write row (a download is recv + write). A half with no
/// other half stays as it is: socket -> memory is a receive the program
/// consumed itself.
pub fn rows(snap: &Snapshot, hooks: HookSet, names: &mut Names) -> Vec<Row> {
    let mut out = Vec::new();
    // The snapshot is in key order, so each thread's rows (each process's,
    // per process) are one run of it: grouped and joined there, in a small
    // vector, with the result in the order a map of every group would give.
    let mut it = snap.rows.iter().peekable();
    let mut groups: Vec<(GroupKey, Counters, bool)> = Vec::new();
    while let Some((first, _)) = it.peek() {
        let (pid, tid) = (first.tgid, first.tid);
        groups.clear();
        while let Some((k, v)) = it.next_if(|(k, _)| (k.tgid, k.tid) == (pid, tid)) {
            // The overflow row, and rows a reset left at zero, say nothing.
            if *v == Counters::ZERO {
                continue;
            }
            let g = group_key(k);
            match groups.iter_mut().find(|(key, ..)| *key == g) {
                Some((_, c, _)) => c.add(v),
                None => groups.push((g, *v, true)),
            }
        }
        groups.sort_by_key(|(k, ..)| *k);
        join_halves(&mut groups);
        let (comm, exited) = if pid == 0 {
            ("(overflow)".to_owned(), false)
        } else if groups.iter().any(|(.., live)| *live) {
            names.get(pid)
        } else {
            continue;
        };
        for ((pid, tid, method, flow), c, _) in groups.iter().filter(|(.., live)| *live) {
            out.push(Row {
                pid: *pid,
                tid: (*tid != 0).then_some(*tid),
                comm: comm.clone(),
                exited,
                method: *method,
                source: flow.src,
                destination: flow.dst,
                measured: Measured::from_counters(c, hooks),
            });
        }
    }
    out
}

/// (pid, tid, method, flow).
type GroupKey = (u32, u32, Method, Flow);

fn group_key(k: &CounterKey) -> GroupKey {
    let m = Method::from_u32(k.method).unwrap_or(Method::Other);
    (k.tgid, k.tid, m, k.flow())
}

/// Moves each read half (X -> memory) into the write half of the same
/// thread and source that moved the most bytes (X -> Y), first within its
/// method, then (socket receives) into read-write. `groups` are one
/// thread's, in key order; a group moved away is marked dead.
fn join_halves(groups: &mut [(GroupKey, Counters, bool)]) {
    join(
        groups,
        |(_, _, m, f)| {
            f.dst == FdKind::Memory
                && matches!(m, Method::ReadWrite | Method::SocketRecv | Method::DirectIo)
        },
        |(_, _, method, flow), (_, _, m, f)| {
            let into = if method == Method::SocketRecv {
                Method::ReadWrite
            } else {
                method
            };
            m == into && f.src == flow.src && f.dst != FdKind::Memory
        },
    );
    // What a method's threads did in user mode between its calls (page
    // faults, being switched out) has no flow of its own: it joins the
    // method's biggest flow.
    join(
        groups,
        |(_, _, m, f)| f == Flow::NONE && !matches!(m, Method::Other | Method::Fallback),
        |(_, _, method, _), (_, _, m, f)| m == method && f != Flow::NONE,
    );
}

/// Moves each group that `from` picks, in key order, into the live group
/// `fits` picks with the most bytes (the last such in key order on a tie);
/// a group nothing fits stays.
fn join(
    groups: &mut [(GroupKey, Counters, bool)],
    from: impl Fn(GroupKey) -> bool,
    fits: impl Fn(GroupKey, GroupKey) -> bool,
) {
    for i in 0..groups.len() {
        let half = groups[i].0;
        if !groups[i].2 || !from(half) {
            continue;
        }
        let target = groups
            .iter()
            .enumerate()
            .filter(|(_, (k, _, live))| *live && fits(half, *k))
            .max_by_key(|(_, (_, c, _))| c.v[zctrace_common::counter::IO_BYTES])
            .map(|(j, _)| j);
        if let Some(j) = target {
            let c = groups[i].1;
            groups[i].2 = false;
            groups[j].1.add(&c);
        }
    }
}

/// A byte count and where it came from: "12.0M o" (observed), "d" (derived).
fn tagged(b: &crate::model::Bytes) -> String {
    let tag = match b.source {
        crate::model::Source::Observed => "o",
        crate::model::Source::Derived => "d",
    };
    format!("{} {tag}", human_bytes(b.value))
}

/// The strace -c style table.
fn table(rows: &[Row]) -> String {
    let tids = rows.iter().any(|r| r.tid.is_some());
    let mut s = format!(
        "{:>7} {}{:<15} {:<15} {:<13} {:>9} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}\n",
        "PID",
        if tids {
            format!("{:>7} ", "TID")
        } else {
            String::new()
        },
        "COMM",
        "METHOD",
        "FLOW",
        "SYSCALLS",
        "MODE-SW",
        "CTX-SW v/i",
        "USER>K",
        "K>USER",
        "K>K",
        "PAGE-REF",
        "DISK",
        "IO-BYTES"
    );
    for r in rows {
        let m = &r.measured;
        let c = &m.cpu_copy_bytes;
        let comm = r.label();
        s += &format!(
            "{:>7} {}{:<15} {:<15} {:<13} {:>9} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}\n",
            r.pid,
            match (tids, r.tid) {
                (true, Some(t)) => format!("{t:>7} "),
                (true, None) => format!("{:>7} ", "-"),
                _ => String::new(),
            },
            comm,
            r.method.name(),
            r.flow(),
            m.syscalls,
            m.mode_switches,
            format!(
                "{}/{}",
                m.context_switches.voluntary, m.context_switches.involuntary
            ),
            tagged(&c.user_to_kernel),
            tagged(&c.kernel_to_user),
            tagged(&c.kernel_to_kernel),
            tagged(&m.page_ref_bytes),
            human_bytes(m.dma_bytes.disk_read + m.dma_bytes.disk_write),
            human_bytes(m.io_bytes),
        );
    }
    s += "copies: o = observed at a kernel hook, d = derived from syscall results; * = exited; \
          flow: where the payload came from > went to\n";
    s
}

/// The report destination.
pub fn sink(opts: &TraceOptions, default_stderr: bool) -> Result<Box<dyn Write>> {
    Ok(match &opts.output {
        Some(p) => Box::new(File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None if default_stderr => Box::new(io::stderr()),
        None => Box::new(io::stdout()),
    })
}

/// Samples the counters until `done()` or the duration or a signal, writing
/// interval reports (`emit`), then the final one.
pub fn watch(
    sampler: &mut Sampler,
    opts: &TraceOptions,
    stop: &AtomicBool,
    out: &mut dyn Write,
    mut done: impl FnMut() -> Result<bool>,
    mut emit: impl FnMut(&mut dyn Write, Instant, &Sample, bool) -> Result<()>,
) -> Result<()> {
    let started = Instant::now();
    let mut next_report = opts.interval.map(|i| started + i);
    // The metrics endpoint needs fresh numbers between reports.
    let mut next_metrics = sampler.exports().then_some(started);
    let tick = Duration::from_millis(50);
    loop {
        sampler.poll_events();
        let finished = done()?
            || stop.load(Ordering::Relaxed)
            || opts.duration.is_some_and(|d| started.elapsed() >= d);
        let due = next_report.is_some_and(|t| Instant::now() >= t);
        if !finished
            && !due
            && let Some(t) = next_metrics.as_mut()
            && Instant::now() >= *t
        {
            sampler.sample()?;
            *t += crate::metrics::PERIOD;
        }
        if finished || due {
            let sample = sampler.sample()?;
            emit(out, started, &sample, finished)?;
            out.flush()?;
            if let (Some(t), Some(i)) = (next_report.as_mut(), opts.interval) {
                *t += i;
            }
        }
        if finished {
            return Ok(());
        }
        std::thread::sleep(tick);
    }
}

pub fn report(
    out: &mut dyn Write,
    opts: &TraceOptions,
    started: Instant,
    sample: &Sample,
    fin: bool,
) -> Result<()> {
    let rows = &sample.processes;
    if opts.json {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = JsonLine {
            schema: JSON_SCHEMA,
            ts,
            elapsed_s: started.elapsed().as_secs_f64(),
            is_final: fin,
            rows,
            stats: &sample.stats,
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    } else {
        writeln!(
            out,
            "\n{} after {:.2} s:",
            if fin {
                "zctrace: final"
            } else {
                "zctrace: interval"
            },
            started.elapsed().as_secs_f64()
        )?;
        out.write_all(table(rows).as_bytes())?;
        out.write_all(crate::demo::report::footer(&sample.stats).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// Checks a PID given on the command line and returns its process (tgid).
pub fn resolve_target(pid: u32) -> Result<u32> {
    if pid == std::process::id() {
        bail!(TargetError(format!(
            "refusing to trace zctrace itself (PID {pid})"
        )));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| TargetError(format!("no process with PID {pid}")))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    let tgid = field("Tgid:").unwrap_or(pid);
    // Kernel threads have no user memory; `Kthread: 1` since 6.x, and the
    // PF_KTHREAD flag (0x00200000) in /proc/PID/stat everywhere.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let flags = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    if field("Kthread:") == Some(1) || flags & 0x0020_0000 != 0 {
        bail!(TargetError(format!(
            "PID {pid} is a kernel thread: it makes no syscalls to trace"
        )));
    }
    if !proc_alive(tgid) {
        bail!(TargetError(format!("PID {pid} has already exited")));
    }
    Ok(tgid)
}

/// Puts the processes in the traced set; returns their process ids.
pub fn start_attach(probes: &mut Probes, pids: &[u32]) -> Result<Vec<u32>> {
    let mut targets = Vec::new();
    for &pid in pids {
        let tgid = resolve_target(pid)?;
        if tgid != pid {
            eprintln!("zctrace: {pid} is a thread of process {tgid}; tracing the process");
        }
        probes.trace_pid(tgid)?;
        targets.push(tgid);
    }
    Ok(targets)
}

/// Whether every target has exited.
pub fn all_exited(targets: &[u32]) -> bool {
    targets.iter().all(|p| !proc_alive(*p))
}

/// `zctrace attach PID...` (and/or `--cgroup`) with tables or JSON.
pub fn attach(
    mut sampler: Sampler,
    targets: &[u32],
    cgroup: Option<&crate::cgroup::Cgroup>,
    opts: &TraceOptions,
    stop: &AtomicBool,
) -> Result<()> {
    let mut out = sink(opts, false)?;
    watch(
        &mut sampler,
        opts,
        stop,
        &mut *out,
        || Ok(targets_gone(targets, cgroup).is_some()),
        |out, started, s, fin| report(out, opts, started, s, fin),
    )
}

/// Why an attach is over, once it is: every named process has exited and
/// the cgroup (if any) has been removed.
pub fn targets_gone(targets: &[u32], cgroup: Option<&crate::cgroup::Cgroup>) -> Option<String> {
    if !all_exited(targets) {
        return None;
    }
    match cgroup {
        Some(c) if crate::cgroup::exists(c) => None,
        Some(c) => Some(format!("cgroup {} was removed", c.name)),
        None => Some("every traced process has exited".to_owned()),
    }
}

/// Starts `argv` traced from its first instruction. While it is spawned,
/// zctrace traces itself with fork-following on, so the kernel adds the
/// child to the traced set inside `fork()` itself; then zctrace takes itself
/// out (its own rows are left out of reports). `quiet` sends the command's
/// output to `log` (the dashboard owns the terminal).
pub fn spawn_traced(
    probes: &mut Probes,
    argv: &[OsString],
    log: Option<&Path>,
    cgroup: Option<&crate::cgroup::Cgroup>,
) -> Result<Child> {
    let Some((prog, args)) = argv.split_first() else {
        bail!(TargetError(
            "no command given: zctrace run -- CMD [ARGS...]".into()
        ));
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if let Some(log) = log {
        let f = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
    }
    if let Some(c) = cgroup {
        let procs = crate::cgroup::procs_file(c)?;
        // SAFETY: the closure only opens and writes a file with a path made
        // before fork (no allocation, no lock): async-signal-safe.
        unsafe {
            cmd.pre_exec(move || crate::cgroup::join_self(&procs));
        }
    }
    let me = std::process::id();
    probes.trace_pid(me)?;
    let spawned = cmd.spawn();
    probes.untrace_pid(me)?;
    spawned.map_err(|e| {
        let what = prog.to_string_lossy();
        if e.kind() == io::ErrorKind::NotFound {
            anyhow::Error::new(TargetError(format!("command not found: {what}")))
        } else {
            anyhow::Error::new(TargetError(format!("cannot start {what}: {e}")))
        }
    })
}

/// Waits for the command (stopping it with SIGTERM if it still runs) and
/// turns its status into ours: its code, or 128 + the signal.
pub fn finish(child: &mut Child) -> Result<u8> {
    let status = match child.try_wait()? {
        Some(s) => s,
        None => {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(child),
                rustix::process::Signal::TERM,
            );
            child.wait()?
        }
    };
    Ok(exit_code(status))
}

pub fn exit_code(status: std::process::ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        _ => 1,
    }
}

/// `zctrace run -- CMD...` with tables or JSON; returns the command's
/// exit status for ours.
pub fn run(
    mut probes: Probes,
    argv: &[OsString],
    cgroup: Option<&crate::cgroup::Cgroup>,
    metrics: Option<std::sync::Arc<crate::metrics::Exporter>>,
    opts: &TraceOptions,
    stop: &AtomicBool,
) -> Result<u8> {
    let mut child = spawn_traced(&mut probes, argv, None, cgroup)?;
    let mut out = sink(opts, true)?;
    let mut sampler = Sampler::new(
        probes,
        SamplerOptions {
            hide: Some(std::process::id()),
            processes: true,
            retire: Retire::Keep,
            metrics,
            ..SamplerOptions::default()
        },
    );
    let watched = watch(
        &mut sampler,
        opts,
        stop,
        &mut *out,
        || Ok(child.try_wait()?.is_some()),
        |out, started, s, fin| report(out, opts, started, s, fin),
    );
    let code = finish(&mut child)?;
    watched?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use zctrace_common::{Call, counter};

    use super::*;

    fn key(tid: u32, method: Method, call: Call, src: FdKind, dst: FdKind) -> CounterKey {
        CounterKey {
            tgid: 10,
            tid,
            method: method as u32,
            call: call as u32,
            src: src as u16,
            dst: dst as u16,
        }
    }

    fn bytes(n: u64) -> Counters {
        let mut c = Counters::ZERO;
        c.v[counter::SYSCALLS] = 1;
        c.v[counter::IO_BYTES] = n;
        c
    }

    #[test]
    fn names_follow_renames_and_read_proc_again_only_after_lost_events() {
        let me = std::process::id();
        let (comm, _) = proc_stat(me).expect("own stat");
        let mut names = Names::new(true);
        names.next_sample();
        assert_eq!(names.get(me), (comm.clone(), false), "read at first sight");
        // A rename event changes a known name; no /proc read undoes it, in
        // later samples either (no backstop with the rename hook).
        names.renamed(me, "renamed");
        names.next_sample();
        assert_eq!(names.get(me).0, "renamed");
        // Unknown processes are not added by a rename (a cgroup target
        // reports every process's).
        names.renamed(u32::MAX, "other");
        assert!(!names.names.contains_key(&u32::MAX));
        // Dropped events: /proc is read again at the next sample.
        names.lost_events();
        names.next_sample();
        assert_eq!(names.get(me).0, comm);
        // Without the rename hook, the backstop re-reads after its period
        // only (not within it).
        let mut old = Names::new(false);
        old.next_sample();
        old.get(me);
        old.renamed(me, "renamed");
        old.next_sample();
        assert_eq!(old.get(me).0, "renamed", "within the backstop period");
        // An exited process keeps the name it died with.
        names.exited(me, "gone");
        names.lost_events();
        names.next_sample();
        assert_eq!(names.get(me), ("gone".into(), true));
    }

    #[test]
    fn rows_group_by_process_method_and_flow_and_the_table_shows_them() {
        use FdKind::*;
        let mut snap = Snapshot::default();
        let mut c = Counters::ZERO;
        c.v[counter::SYSCALLS] = 514;
        c.v[counter::K2U_DERIVED] = 32 << 20;
        snap.rows
            .insert(key(0, Method::ReadWrite, Call::Read, File, Memory), c);
        let mut w = Counters::ZERO;
        w.v[counter::SYSCALLS] = 514;
        w.v[counter::U2K_DERIVED] = 32 << 20;
        snap.rows
            .insert(key(0, Method::ReadWrite, Call::Write, File, Tcp), w);
        let mut names = Names::default();
        let rows = rows(&snap, HookSet::default(), &mut names);
        assert_eq!(rows.len(), 1, "the read half joins the write half");
        assert_eq!(rows[0].measured.syscalls, 1028);
        assert_eq!((rows[0].source, rows[0].destination), (File, Tcp));
        assert_eq!(rows[0].tid, None);
        let t = table(&rows);
        assert!(t.contains("read-write      file>tcp"), "{t}");
        assert!(t.contains("32.0M d"), "{t}");
        assert!(!t.contains("TID"), "no thread column by default: {t}");
        // PID 10 does not exist here (or is not ours): shown as exited.
        assert!(rows[0].exited || proc_alive(10));
    }

    /// The map-based grouping this module had before, kept as the oracle
    /// the per-thread one is checked against.
    mod oracle {
        use std::collections::BTreeMap;

        use zctrace_common::{CounterKey, Counters, FdKind, Flow, Method};

        use crate::{
            model::{HookSet, Measured, Snapshot},
            trace::{Names, Row},
        };

        pub(super) fn map_rows(snap: &Snapshot, hooks: HookSet, names: &mut Names) -> Vec<Row> {
            let mut by = group(snap);
            join_halves(&mut by);
            by.into_iter()
                .map(|((pid, tid, method, flow), c)| {
                    let (comm, exited) = if pid == 0 {
                        ("(overflow)".to_owned(), false)
                    } else {
                        names.get(pid)
                    };
                    Row {
                        pid,
                        tid: (tid != 0).then_some(tid),
                        comm,
                        exited,
                        method,
                        source: flow.src,
                        destination: flow.dst,
                        measured: Measured::from_counters(&c, hooks),
                    }
                })
                .collect()
        }

        /// (pid, tid, method, flow).
        type GroupKey = (u32, u32, Method, Flow);

        fn group(snap: &Snapshot) -> BTreeMap<GroupKey, Counters> {
            let mut by: BTreeMap<GroupKey, Counters> = BTreeMap::new();
            for (k, v) in &snap.rows {
                // The overflow row, and rows a reset left at zero, say nothing.
                if *v == Counters::ZERO {
                    continue;
                }
                by.entry(group_key(k)).or_default().add(v);
            }
            by
        }

        fn group_key(k: &CounterKey) -> GroupKey {
            let m = Method::from_u32(k.method).unwrap_or(Method::Other);
            (k.tgid, k.tid, m, k.flow())
        }

        /// Moves each read half (X -> memory) into the write half of the same
        /// process, thread and source that moved the most bytes (X -> Y), first
        /// within its method, then (socket receives) into read-write.
        fn join_halves(by: &mut BTreeMap<GroupKey, Counters>) {
            let halves: Vec<GroupKey> = by
                .keys()
                .filter(|(_, _, m, f)| {
                    f.dst == FdKind::Memory
                        && matches!(m, Method::ReadWrite | Method::SocketRecv | Method::DirectIo)
                })
                .copied()
                .collect();
            join(by, halves, |(pid, tid, method, flow), (p, t, m, f)| {
                let into = if method == Method::SocketRecv {
                    Method::ReadWrite
                } else {
                    method
                };
                (p, t, m) == (pid, tid, into) && f.src == flow.src && f.dst != FdKind::Memory
            });
            // What a method's threads did in user mode between its calls (page
            // faults, being switched out) has no flow of its own: it joins the
            // method's biggest flow.
            let user_mode: Vec<GroupKey> = by
                .keys()
                .filter(|(_, _, m, f)| {
                    *f == Flow::NONE && !matches!(m, Method::Other | Method::Fallback)
                })
                .copied()
                .collect();
            join(by, user_mode, |(pid, tid, method, _), (p, t, m, f)| {
                (p, t, m) == (pid, tid, method) && f != Flow::NONE
            });
        }

        /// Moves each group of `from` into the group `fits` picks with the most
        /// bytes among those of the same process and thread (a group nothing fits
        /// stays). Only that thread's keys are looked at: a range of the map, so
        /// 10,000 threads cost 10,000 short scans, not 10,000 scans of every row.
        fn join(
            by: &mut BTreeMap<GroupKey, Counters>,
            from: Vec<GroupKey>,
            fits: impl Fn(GroupKey, GroupKey) -> bool,
        ) {
            for half in from {
                let (pid, tid) = (half.0, half.1);
                let target = by
                    .range((pid, tid, Method::Other, Flow::NONE)..)
                    .take_while(|(k, _)| k.0 == pid && k.1 == tid)
                    .filter(|(k, _)| fits(half, **k))
                    .max_by_key(|(_, c)| c.v[zctrace_common::counter::IO_BYTES])
                    .map(|(k, _)| *k);
                if let Some(target) = target
                    && let Some(c) = by.remove(&half)
                {
                    by.entry(target).or_default().add(&c);
                }
            }
        }
    }

    #[test]
    fn rows_per_thread_match_the_map_based_grouping_on_random_snapshots() {
        use FdKind::*;
        // The same snapshots on every run.
        let mut next = crate::model::xorshift(0x9E37_79B9_7F4A_7C15);
        let methods = [
            Method::Other,
            Method::ReadWrite,
            Method::SocketRecv,
            Method::DirectIo,
            Method::Sendfile,
            Method::Fallback,
        ];
        let calls = [
            Call::None,
            Call::Read,
            Call::Write,
            Call::Recvfrom,
            Call::Sendfile,
        ];
        let kinds = [Unknown, File, Memory, Tcp, Pipe];
        let json = |rows: &[Row]| serde_json::to_string(rows).unwrap();
        for _ in 0..500 {
            let mut snap = Snapshot::default();
            for _ in 0..next(40) {
                let k = CounterKey {
                    tgid: next(2) as u32,
                    tid: next(2) as u32,
                    method: methods[next(6) as usize] as u32,
                    call: calls[next(5) as usize] as u32,
                    src: kinds[next(5) as usize] as u16,
                    dst: kinds[next(5) as usize] as u16,
                };
                // Few distinct byte counts, so ties happen.
                let mut c = Counters::ZERO;
                if next(8) != 0 {
                    c.v[counter::SYSCALLS] = 1 + next(3);
                    c.v[counter::IO_BYTES] = next(4) * 100;
                }
                snap.rows.insert(k, c);
            }
            let mut names = Names::default();
            let want = oracle::map_rows(&snap, HookSet::default(), &mut names);
            let got = rows(&snap, HookSet::default(), &mut names);
            assert_eq!(json(&got), json(&want), "{snap:?}");
        }
    }

    #[test]
    fn a_download_joins_its_receives_and_other_halves_stay() {
        use FdKind::*;
        let mut snap = Snapshot::default();
        // curl: a config file read (nothing written from it), receives,
        // and the file writes of what it received.
        snap.rows.insert(
            key(0, Method::ReadWrite, Call::Read, File, Memory),
            bytes(900),
        );
        snap.rows.insert(
            key(0, Method::SocketRecv, Call::Recvfrom, Tcp, Memory),
            bytes(1 << 20),
        );
        snap.rows.insert(
            key(0, Method::ReadWrite, Call::Write, Tcp, File),
            bytes(1 << 20),
        );
        // Faults between the calls: no flow, joins the method's biggest.
        snap.rows.insert(
            key(0, Method::ReadWrite, Call::None, Unknown, Unknown),
            bytes(0),
        );
        // A receive nobody wrote on stays a receive.
        let mut other = key(0, Method::SocketRecv, Call::Recvfrom, Udp, Memory);
        other.tgid = 11;
        snap.rows.insert(other, bytes(5));
        let rows = rows(&snap, HookSet::default(), &mut Names::default());
        let got: Vec<(u32, &str, String, u64, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r.pid,
                    r.method.name(),
                    r.flow(),
                    r.measured.syscalls,
                    r.measured.io_bytes,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (10, "read-write", "file>memory".to_owned(), 1, 900),
                (10, "read-write", "tcp>file".to_owned(), 3, 2 << 20),
                (11, "socket-recv", "udp>memory".to_owned(), 1, 5),
            ]
        );
    }

    #[test]
    fn per_thread_rows_show_a_thread_column_and_the_overflow_row_is_named() {
        use FdKind::*;
        let mut snap = Snapshot::default();
        snap.rows.insert(
            key(12, Method::ReadWrite, Call::Write, Memory, Pipe),
            bytes(7),
        );
        snap.rows.insert(CounterKey::OVERFLOW, bytes(3));
        let rows = rows(&snap, HookSet::default(), &mut Names::default());
        assert_eq!(rows[0].comm, "(overflow)");
        assert_eq!(rows[0].method, Method::Fallback);
        assert_eq!(rows[1].tid, Some(12));
        let t = table(&rows);
        assert!(t.lines().next().is_some_and(|l| l.contains("TID")), "{t}");
        assert!(t.contains("map-full"), "{t}");
    }

    #[test]
    fn bad_targets_are_one_line_errors() {
        let e = resolve_target(std::process::id()).expect_err("self");
        assert!(e.to_string().contains("itself"), "{e}");
        let e = resolve_target(u32::MAX - 7).expect_err("no such pid");
        assert!(e.to_string().contains("no process"), "{e}");
        // kthreadd is PID 2 on every Linux system.
        let e = resolve_target(2).expect_err("kernel thread");
        assert!(e.to_string().contains("kernel thread"), "{e}");
    }
}
