//! Loading, attaching and reading zctrace's eBPF programs.
//!
//! `Probes::load` reads the running kernel's layout from BTF, loads the
//! embedded object with that layout, and attaches every hook it can, one by
//! one, recording for each whether it attached and, if not, the kernel's
//! reason. Dropping `Probes` detaches everything: nothing is pinned.

pub mod attach;
pub mod btf;

use std::{collections::BTreeMap, path::Path};

#[cfg(feature = "bench")]
use crate::hooks::{FLOOR_RAW, Kind};
pub use crate::hooks::{Hook, HookSet, Tier};
use crate::model::Snapshot;

#[cfg(feature = "bench")]
use aya::programs::{BtfTracePoint, RawTracePoint};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, Queue, RingBuf},
};
use thiserror::Error;
use zctrace_common::{CounterKey, Counters, MAX_COUNTER_ROWS, Settings, config, stat};

use self::btf::{KernelBtf, LayoutError, VMLINUX_BTF};

/// The eBPF object, compiled from zctrace-ebpf by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/zctrace"));

/// How many counter rows to make: MAX_COUNTER_ROWS, or fewer where that
/// many per-CPU rows would take more than 64 MiB (many CPUs).
fn row_capacity() -> u32 {
    const BUDGET: usize = 64 << 20;
    let cpus = aya::util::nr_cpus().unwrap_or(1).max(1);
    let fit = BUDGET / (std::mem::size_of::<Counters>() * cpus);
    (fit as u32).clamp(1024, MAX_COUNTER_ROWS)
}

/// What became of one hook.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HookStatus {
    /// Listed by its kernel target's name.
    #[serde(rename = "name", serialize_with = "serialize_hook")]
    pub hook: Hook,
    pub tier: Tier,
    pub attached: bool,
    /// How it is attached.
    pub via: Option<Via>,
    /// The kernel's reason when it did not attach.
    pub reason: Option<String>,
    pub purpose: &'static str,
}

fn serialize_hook<S: serde::Serializer>(h: &Hook, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.target())
}

impl HookStatus {
    /// The name users see: the tracepoint or kernel function.
    pub fn name(&self) -> &'static str {
        self.hook.target()
    }
}

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("{0} (zctrace needs kernel BTF: CONFIG_DEBUG_INFO_BTF=y)")]
    Layout(#[from] LayoutError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("required hook {} did not attach: {reason}", hook.target())]
    Required { hook: Hook, reason: AttachError },
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map access failed: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("cannot count the CPUs: {0}")]
    Cpus(std::io::Error),
}

impl ProbeError {
    /// The errno the kernel gave, if one is anywhere in the error's chain.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ProbeError::Required { reason, .. } => reason.errno,
            e => attach::errno(e),
        }
    }

    /// The exit status this error means: 4 when the kernel lacks a feature,
    /// 3 when loading was refused for lack of privilege (EPERM), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ProbeError::Layout(_) | ProbeError::Required { .. } => 4,
            ProbeError::Load(_) if self.errno() == Some(libc::EPERM) => 3,
            _ => 1,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeOptions {
    /// Trace every process instead of the traced set.
    pub trace_all: bool,
    /// Add children of traced processes to the traced set.
    pub follow_forks: bool,
    /// Keep every thread's state in task storage, not the thread table
    /// (the path of threads whose slot another holds; for tests).
    pub no_thread_table: bool,
}

/// Loaded and attached probes. Detached when dropped.
pub struct Probes {
    ebpf: Ebpf,
    hooks: Vec<HookStatus>,
}

/// Health counters summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub events_dropped: u64,
    pub events_sent: u64,
    pub thread_map_full: u64,
    pub counter_map_full: u64,
    pub disk_unattributed_bytes: u64,
    pub process_map_full: u64,
}

impl Probes {
    pub fn load(opts: ProbeOptions) -> Result<Self, ProbeError> {
        // Read once, parsed twice: for the layout (btf-rs gives member
        // offsets) and for aya (to load the BTF programs).
        let raw_btf = std::fs::read(VMLINUX_BTF).map_err(|e| LayoutError::Read {
            path: VMLINUX_BTF.to_owned(),
            source: btf_rs::Error::from(e),
        })?;
        let kernel_btf = KernelBtf::parse(&raw_btf, Path::new(VMLINUX_BTF))?;
        let layout = kernel_btf.kernel_layout()?;
        let settings = Settings {
            trace_all: u32::from(opts.trace_all),
            follow_forks: u32::from(opts.follow_forks),
        };
        let aya_btf = aya::Btf::parse(&raw_btf, aya::Endianness::default()).ok();
        let rows = row_capacity();
        let mut ebpf = EbpfLoader::new()
            .btf(aya_btf.as_ref())
            // THREADS is task storage, which aya creates but has no type for.
            .allow_unsupported_maps()
            .override_global("LAYOUT", &layout, true)
            .override_global("SETTINGS", &settings, true)
            .map_max_entries("ROWS", rows)
            .map_max_entries("ROW_INDEX", rows)
            .map_max_entries("FREE_ROWS", rows)
            .override_global("ROW_CAPACITY", &rows, true)
            .load(EBPF_OBJECT)?;
        let mut hooks = Vec::with_capacity(Hook::ALL.len());
        for hook in Hook::ALL {
            let spec = hook.spec();
            let result = attach::attach(&mut ebpf, hook, aya_btf.as_ref());
            if spec.required
                && let Err(reason) = &result
            {
                return Err(ProbeError::Required {
                    hook,
                    reason: reason.clone(),
                });
            }
            let (via, reason) = match result {
                Ok(via) => (Some(via), None),
                Err(e) => (None, Some(e.message)),
            };
            hooks.push(HookStatus {
                hook,
                tier: spec.tier,
                attached: via.is_some(),
                via,
                reason,
                purpose: spec.purpose,
            });
        }
        let mut probes = Self { ebpf, hooks };
        // Thread-table slots are released at thread exit: no table without
        // that hook.
        let table = !opts.no_thread_table && probes.hook_set().has(Hook::SchedProcessExit);
        let mut cfg: Array<_, u32> = Array::try_from(probes.map_mut("CONFIG")?)?;
        cfg.set(config::THREAD_TABLE, u32::from(table), 0)?;
        Ok(probes)
    }

    /// The overhead floor: empty programs on the tracepoint tier's hooks
    /// (nothing is counted). Returns the probes (detached on drop) and how
    /// many hooks attached.
    #[cfg(feature = "bench")]
    pub fn load_floor() -> Result<(Self, usize), ProbeError> {
        let aya_btf = aya::Btf::from_sys_fs().ok();
        let mut ebpf = EbpfLoader::new()
            .btf(aya_btf.as_ref())
            .allow_unsupported_maps()
            .load(EBPF_OBJECT)?;
        let mut attached = 0;
        if let Some(p) = ebpf.program_mut(FLOOR_RAW) {
            let p: &mut RawTracePoint = p.try_into().map_err(aya::EbpfError::from)?;
            p.load().map_err(aya::EbpfError::from)?;
            for h in Hook::ALL {
                if h.spec().kind == Kind::RawTracepoint {
                    attached += usize::from(p.attach(h.target()).is_ok());
                }
            }
        }
        // One empty BTF tracepoint program per BTF tracepoint hook.
        for h in Hook::ALL {
            let spec = h.spec();
            if spec.kind != Kind::BtfTracepoint {
                continue;
            }
            if let (Some(btf), Some(p)) = (
                aya_btf.as_ref(),
                spec.floor.and_then(|f| ebpf.program_mut(f)),
            ) && let Ok(p) = <&mut BtfTracePoint>::try_from(p)
                && p.load(spec.target, btf).is_ok()
            {
                attached += usize::from(p.attach().is_ok());
            }
        }
        Ok((
            Self {
                ebpf,
                hooks: Vec::new(),
            },
            attached,
        ))
    }

    pub fn hooks(&self) -> &[HookStatus] {
        &self.hooks
    }

    /// Which hooks attached, for the model's observed/derived choice.
    pub fn hook_set(&self) -> HookSet {
        HookSet::of(self.hooks.iter().filter(|h| h.attached).map(|h| h.hook))
    }

    /// Adds a process (all its threads) to the traced set.
    pub fn trace_pid(&mut self, tgid: u32) -> Result<(), ProbeError> {
        let mut traced: HashMap<_, u32, u32> = HashMap::try_from(self.map_mut("TRACED")?)?;
        traced.insert(tgid, 1, 0)?;
        // Its threads may sit in the thread table as untraced.
        self.bump_generation()
    }

    /// Removes a process from the traced set. Its threads keep their
    /// kernel-side state until their next probe sees the new generation,
    /// checks the set, and drops it.
    pub fn untrace_pid(&mut self, tgid: u32) -> Result<(), ProbeError> {
        let mut traced: HashMap<_, u32, u32> = HashMap::try_from(self.map_mut("TRACED")?)?;
        traced.remove(&tgid)?;
        self.bump_generation()
    }

    /// Turns the per-syscall event stream on or off.
    pub fn set_events(&mut self, on: bool) -> Result<(), ProbeError> {
        let mut cfg: Array<_, u32> = Array::try_from(self.map_mut("CONFIG")?)?;
        cfg.set(config::EVENTS_ENABLED, u32::from(on), 0)?;
        Ok(())
    }

    /// Takes the event ring buffer out (for a reader thread). Only once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(ProbeError::MissingMap("EVENTS"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Reads every counter row, summing the per-CPU values.
    pub fn snapshot(&self) -> Result<Snapshot, ProbeError> {
        let index: HashMap<_, CounterKey, u32> = HashMap::try_from(self.map("ROW_INDEX")?)?;
        let values: PerCpuArray<_, Counters> = PerCpuArray::try_from(self.map("ROWS")?)?;
        let mut rows = BTreeMap::new();
        for item in index.iter() {
            // A row recycled between listing and reading is simply skipped.
            let Ok((key, idx)) = item else { continue };
            let Ok(per_cpu) = values.get(&idx, 0) else {
                continue;
            };
            let mut sum = Counters::ZERO;
            for c in per_cpu.iter() {
                sum.add(c);
            }
            rows.insert(key, sum);
        }
        Ok(Snapshot { rows })
    }

    /// Recycles the counter rows of these threads (finished demo runs whose
    /// numbers the dashboard has kept), so `demo --loop` never runs out of
    /// rows: each loses its index entry, is zeroed, and goes back on the
    /// free list.
    pub fn remove_rows(&mut self, tids: &[u32]) -> Result<usize, ProbeError> {
        let mut index: HashMap<_, CounterKey, u32> = HashMap::try_from(self.map_mut("ROW_INDEX")?)?;
        let doomed: Vec<(CounterKey, u32)> = index
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| tids.contains(&k.tid))
            .collect();
        let mut freed = Vec::with_capacity(doomed.len());
        for (k, idx) in &doomed {
            // A row already gone is fine.
            if index.remove(k).is_ok() {
                freed.push(*idx);
            }
        }
        let mut values: PerCpuArray<_, Counters> = PerCpuArray::try_from(self.map_mut("ROWS")?)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Cpus(e))?;
        for idx in &freed {
            let zeros =
                PerCpuValues::try_from(vec![Counters::ZERO; cpus]).map_err(ProbeError::Cpus)?;
            values.set(*idx, zeros, 0)?;
        }
        let mut free: Queue<_, u32> = Queue::try_from(self.map_mut("FREE_ROWS")?)?;
        for idx in &freed {
            free.push(idx, 0)?;
        }
        // Threads that cached a recycled row forget their caches.
        self.bump_generation()?;
        Ok(freed.len())
    }

    /// Makes every thread re-check its state against the traced set and
    /// forget its cached counter rows (see `config::GENERATION`).
    fn bump_generation(&mut self) -> Result<(), ProbeError> {
        let mut cfg: Array<_, u32> = Array::try_from(self.map_mut("CONFIG")?)?;
        let generation = cfg.get(&config::GENERATION, 0)?;
        cfg.set(config::GENERATION, generation.wrapping_add(1), 0)?;
        Ok(())
    }

    pub fn stats(&self) -> Result<Stats, ProbeError> {
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map("STATS")?)?;
        let mut v = [0u64; stat::COUNT];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = arr.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(Stats {
            events_dropped: v[stat::EVENTS_DROPPED],
            events_sent: v[stat::EVENTS_SENT],
            thread_map_full: v[stat::THREAD_MAP_FULL],
            counter_map_full: v[stat::COUNTER_MAP_FULL],
            disk_unattributed_bytes: v[stat::DISK_UNATTRIBUTED_BYTES],
            process_map_full: v[stat::PROCESS_MAP_FULL],
        })
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, ProbeError> {
        self.ebpf.map(name).ok_or(ProbeError::MissingMap(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, ProbeError> {
        self.ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))
    }
}

pub use self::attach::{AttachError, Via, error_chain};

/// "attached/total" for one tier, and the first refusal's reason.
pub fn tier_summary(hooks: &[HookStatus], tier: Tier) -> (usize, usize, Option<&str>) {
    let of_tier = || hooks.iter().filter(move |h| h.tier == tier);
    let attached = of_tier().filter(|h| h.attached).count();
    let reason = of_tier().find_map(|h| h.reason.as_deref());
    (attached, of_tier().count(), reason)
}

#[cfg(test)]
mod object_tests {
    use super::*;

    /// Every program a hook names is in the object build.rs embedded, so a
    /// renamed eBPF function fails here, not as "not attached" at run time.
    #[test]
    fn every_program_a_hook_names_is_in_the_object() {
        let obj = aya_obj::Object::parse(EBPF_OBJECT).expect("parse the eBPF object");
        for hook in Hook::ALL {
            for name in hook.programs() {
                assert!(
                    obj.programs.contains_key(name),
                    "{hook:?} names {name}, which the object lacks"
                );
            }
        }
        assert!(obj.programs.contains_key(crate::hooks::FLOOR_RAW));
    }
}

#[cfg(test)]
mod tests {
    use std::{fs::File, io::Read as _, thread};

    use zctrace_common::{Call, counter};

    use super::*;

    /// Root only, like tests/kernel.rs (which explains the opt-out).
    fn root() -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        if std::env::var("ZCTRACE_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
            return false;
        }
        panic!("this test loads eBPF programs and needs root (ZCTRACE_SKIP_ROOT_TESTS=1 skips)");
    }

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
    fn forked_children_are_followed_only_when_asked_and_nothing_else_is_traced() {
        if !root() {
            return;
        }
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
            // the traced set may show up.
            for k in snap.rows.keys() {
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
    fn thread_table_and_task_storage_count_alike_and_rows_recycle() {
        if !root() {
            return;
        }
        let me = std::process::id();
        const READS: u64 = 20_000;
        for no_thread_table in [false, true] {
            let mut p = Probes::load(ProbeOptions {
                follow_forks: true,
                no_thread_table,
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
        let mut p = Probes::load(ProbeOptions::default()).expect("load probes");
        p.trace_pid(std::process::id()).expect("trace self");
        p
    }

    /// Each nanosleep blocks: one voluntary switch per sleep, charged to
    /// the sleeping thread (sched_switch's idle shortcut must not hide it),
    /// as many as the scheduler itself counted.
    #[test]
    fn a_sleeping_thread_s_context_switches_match_the_kernel_s_own_count() {
        if !root() {
            return;
        }
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
    fn preempted_threads_involuntary_switches_match_the_kernel_s_own_count() {
        if !root() {
            return;
        }
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
    fn a_flooded_ring_buffer_counts_drops_while_counters_stay_exact() {
        if !root() {
            return;
        }
        let mut p = Probes::load(ProbeOptions::default()).expect("load probes");
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
        let stats = p.stats().expect("stats");
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
}
