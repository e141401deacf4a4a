//! Loading, attaching and reading zctrace's eBPF programs.
//!
//! `Probes::load` reads the running kernel's layout from BTF, loads the
//! embedded object with that layout, and attaches every hook it can, one by
//! one, recording for each whether it attached and, if not, the kernel's
//! reason. Dropping `Probes` detaches everything: nothing is pinned.

pub mod attach;
mod batch;
pub mod btf;
mod maps;
pub mod mechanism;
pub mod memory;
mod rows;

use self::maps::reserve_overflow_row;

use std::path::Path;

#[cfg(feature = "bench")]
use crate::hooks::{FLOOR_RAW, Kind};
pub use crate::hooks::{Hook, HookSet, Tier};

#[cfg(feature = "bench")]
use aya::programs::{BtfTracePoint, RawTracePoint};
use aya::{Ebpf, EbpfLoader, maps::Array};
use thiserror::Error;
use zctrace_common::{Counters, MAX_COUNTER_ROWS, Settings, config};

use self::btf::{KernelBtf, LayoutError, VMLINUX_BTF};
use crate::model::ledger::{Account, FallbackCounts};

/// The eBPF object, compiled from zctrace-ebpf by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/zctrace"));

/// How many counter rows to make: MAX_COUNTER_ROWS, or fewer where that
/// many per-CPU rows would take more than 64 MiB (many CPUs).
fn row_capacity(cpus: usize) -> u32 {
    const BUDGET: usize = 64 << 20;
    let cpus = cpus.max(1);
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
    /// The older name it is attached under on this kernel (e.g.
    /// `io_uring_submit_sqe` before 6.3), if not its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_as: Option<&'static str>,
    /// Attaches here, but is attached only while needed (see
    /// `hooks::Spec::on_demand`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
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
    #[error("{0} (zctrace reads the kernel's struct layouts from its BTF)")]
    Layout(#[from] LayoutError),
    #[error(
        "this kernel ({kernel}) lacks {} that zctrace's probes need: Linux 5.15 or newer has them",
        missing.join(", ")
    )]
    KernelTooOld {
        kernel: String,
        missing: Vec<&'static str>,
    },
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
    #[error("reading the counter rows failed: {0}")]
    Batch(std::io::Error),
    #[error("--max-rows {0}: at least {MIN_ROWS} rows are needed")]
    TooFewRows(u32),
    #[error("--max-rows {0}: a copy of every row for each of {1} CPUs would not fit in one map")]
    TooManyRows(u32, usize),
    #[error("cannot map the counter rows into memory: {0}")]
    MapRows(std::io::Error),
    /// The bench's floor could not be set up.
    #[cfg(feature = "bench")]
    #[error("{0}")]
    Floor(String),
    #[error("hook {} could not be attached or detached: {reason}", hook.target())]
    Attach { hook: Hook, reason: AttachError },
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
            ProbeError::Layout(_)
            | ProbeError::KernelTooOld { .. }
            | ProbeError::Required { .. } => 4,
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
    /// Counter rows per thread, not per process.
    pub per_thread: bool,
    /// Make the row map this size instead of the default (a deliberately
    /// small map shows what happens when it fills).
    pub max_rows: Option<u32>,
    /// Also trace every process in this cgroup's subtree.
    pub cgroup: Option<crate::cgroup::CgroupId>,
}

/// The smallest row map `max_rows` may ask for: the overflow row and a
/// fallback reserve of two, and room for a few exact rows.
pub const MIN_ROWS: u32 = 8;
/// The largest row map `max_rows` may ask for.
pub const MAX_ROWS: u32 = 1 << 20;

/// What the sampler knows of the rows' keys (see `zctrace_common::RowKey`).
#[derive(Default)]
pub(crate) struct KeyCache {
    /// The kernel's count of rows given a key when ROW_KEYS was last read
    /// and every entry in it was settled: while the count stays there,
    /// nothing is read again.
    added: Option<u64>,
    /// Per row: the `seq` last seen, and the key verified then (none: the
    /// row was released, or has had no key yet).
    rows: Vec<(u64, Option<zctrace_common::CounterKey>)>,
    /// The rows with keys, as (key, row), in key order: a snapshot is
    /// built in this order without sorting the rows themselves.
    sorted: Vec<(zctrace_common::CounterKey, u32)>,
    /// Rows given a key since `sorted` was last brought up to date.
    fresh: Vec<(zctrace_common::CounterKey, u32)>,
}

impl KeyCache {
    /// Row `i` now holds `key`.
    fn set(&mut self, i: usize, seq: u64, key: Option<zctrace_common::CounterKey>) {
        if let Some(slot) = self.rows.get_mut(i) {
            *slot = (seq, key);
            if let Some(k) = key {
                self.fresh.push((k, i as u32));
            }
        }
    }

    /// Brings `sorted` up to date with `rows`: what no longer holds its
    /// row is dropped, and the rows keyed since are merged in, sorted
    /// among themselves (a machine where processes come and go keys a few
    /// rows a sample: re-sorting every row each time cost more than the
    /// rest of the key reading).
    fn sort(&mut self) {
        let rows = &self.rows;
        let holds = |&(k, i): &(zctrace_common::CounterKey, u32)| {
            rows.get(i as usize).and_then(|r| r.1) == Some(k)
        };
        self.sorted.retain(holds);
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.retain(holds);
        if fresh.is_empty() {
            return;
        }
        fresh.sort_unstable();
        let old = std::mem::take(&mut self.sorted);
        let mut merged = Vec::with_capacity(old.len() + fresh.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() && j < fresh.len() {
            if old[i] <= fresh[j] {
                merged.push(old[i]);
                i += 1;
            } else {
                merged.push(fresh[j]);
                j += 1;
            }
        }
        merged.extend_from_slice(&old[i..]);
        merged.extend_from_slice(&fresh[j..]);
        merged.dedup();
        self.sorted = merged;
    }
}

/// Loaded and attached probes. Detached when dropped.
pub struct Probes {
    ebpf: Ebpf,
    hooks: Vec<HookStatus>,
    /// What the rows recycled so far had counted of each ledger counter
    /// (the ledger checks that seen = charged + released + unattributed).
    released: [u64; zctrace_common::counter::COUNT],
    /// Rows in the row map (per CPU).
    capacity: u32,
    /// The row map, mapped (none for the bench's floor, which has no rows).
    rows: Option<rows::MappedRows>,
    /// The rows' keys, mapped (likewise).
    keys: Option<rows::MappedKeys>,
    /// The rows' keys as last read (see `snapshot`).
    key_cache: std::cell::RefCell<KeyCache>,
    /// How long loading took, phase by phase.
    pub timings: LoadTimings,
    /// sys_enter's link while the event log is open.
    enter_link: Option<aya::programs::tp_btf::BtfTracePointLinkId>,
    /// The event log's sessions so far (see `set_events`).
    event_sessions: u32,
}

/// Where start-up time goes (`zctrace hooks` shows it).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LoadTimings {
    /// Reading and indexing the kernel's BTF (both parses).
    pub btf_ms: f64,
    /// Creating the maps and relocating the object.
    pub maps_ms: f64,
    /// Verifying and attaching every program.
    pub programs_ms: f64,
}

fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Health counters summed over CPUs, and the ledger's balance.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub events_dropped: u64,
    pub events_sent: u64,
    /// Threads whose state could not be created (their syscalls are not
    /// counted: the kernel refused the memory).
    pub thread_map_full: u64,
    /// Syscalls and disk requests counted without their classification
    /// (a hand-over between a hook's programs failed: a bug, said rather
    /// than hidden): counted, under method other.
    pub unclassified_calls: u64,
    /// Counts that found the row map full and went to a fallback row
    /// (see `fallback`): nothing lost, method and flow unknown.
    pub counter_map_full: u64,
    /// Rows in the row map, and how many are in use.
    pub row_capacity: u32,
    pub rows_used: u64,
    /// What the fallback rows hold.
    pub fallback: FallbackCounts,
    /// Disk bytes issued by kernel threads (writeback): nobody's.
    pub disk_unattributed_bytes: u64,
    pub process_map_full: u64,
    /// io_uring requests (and their bytes) that completed in traced
    /// processes without being seen submitted: submitted before zctrace
    /// attached, or not remembered because the in-flight map was full.
    pub uring_unattributed_ops: u64,
    pub uring_unattributed_bytes: u64,
    /// Submitted requests the in-flight map had no room for.
    pub uring_map_full: u64,
    /// Completions that overflowed the program's completion queue (the
    /// kernel reports them without their request), and their bytes.
    pub uring_overflow_ops: u64,
    pub uring_overflow_bytes: u64,
    /// Copies the hooks saw on io-wq worker threads: already counted by
    /// the requests' results, so kept apart rather than counted twice.
    pub uring_worker_bytes: u64,
    /// Payload bytes the hooks saw that no process is charged with.
    pub unattributed_bytes: u64,
    /// Bytes the hooks saw that are in no row and no bucket (0 unless
    /// something was lost, or traffic flowed while sampling).
    pub unaccounted_bytes: i64,
    /// The ledger, counter by counter.
    pub accounts: Vec<Account>,
}

impl Probes {
    pub fn load(opts: ProbeOptions) -> Result<Self, ProbeError> {
        let started = std::time::Instant::now();
        // aya's loader parses the kernel's BTF itself when it is made (for
        // relocations; it has no way to be handed one), which is a fifth
        // of start-up: it is made on a thread of its own meanwhile.
        let (loader, read) = std::thread::scope(|s| {
            let loader = s.spawn(EbpfLoader::new);
            // Read once here: indexed for the layout (member offsets),
            // parsed by aya to load the BTF programs.
            let read = (|| {
                let raw_btf = std::fs::read(VMLINUX_BTF).map_err(|source| LayoutError::Read {
                    path: VMLINUX_BTF.to_owned(),
                    source,
                })?;
                let aya_btf = aya::Btf::parse(&raw_btf, aya::Endianness::default()).ok();
                let kernel_btf = KernelBtf::parse(raw_btf, Path::new(VMLINUX_BTF))?;
                Ok::<_, LayoutError>((aya_btf, kernel_btf))
            })();
            (loader.join(), read)
        });
        let (aya_btf, kernel_btf) = read?;
        let loader = loader.unwrap_or_else(|_| EbpfLoader::new());
        let missing = kernel_btf.missing_features()?;
        if !missing.is_empty() {
            return Err(ProbeError::KernelTooOld {
                kernel: crate::preflight::kernel_release(),
                missing,
            });
        }
        let layout = kernel_btf.kernel_layout()?;
        let settings = Settings {
            trace_all: u32::from(opts.trace_all),
            follow_forks: u32::from(opts.follow_forks),
            per_thread: u32::from(opts.per_thread),
            cgroup_level: opts.cgroup.map_or(0, |c| c.level),
            cgroup_id: opts.cgroup.map_or(0, |c| c.id),
        };
        let row_cpus = rows::row_cpus().map_err(ProbeError::Cpus)?;
        let rows = match opts.max_rows {
            Some(n) if n < MIN_ROWS => return Err(ProbeError::TooFewRows(n)),
            Some(n) => n.min(MAX_ROWS),
            None => row_capacity(row_cpus),
        };
        // One copy of every row per CPU, in one array the kernel can map:
        // it must stay under 4 GiB.
        let row_elems = u32::try_from(rows as usize * row_cpus)
            .ok()
            .filter(|&n| n as usize * std::mem::size_of::<Counters>() < u32::MAX as usize)
            .ok_or(ProbeError::TooManyRows(rows, row_cpus))?;
        let btf_ms = ms_since(started);
        let started = std::time::Instant::now();
        let mut loader = loader;
        let mut ebpf = loader
            .btf(aya_btf.as_ref())
            // THREADS is task storage, which aya creates but has no type for.
            .allow_unsupported_maps()
            .override_global("LAYOUT", &layout, true)
            .override_global("SETTINGS", &settings, true)
            .map_max_entries("ROWS", row_elems)
            .map_max_entries("ROW_INDEX", rows)
            .map_max_entries("ROW_KEYS", rows)
            .map_max_entries("FREE_ROWS", rows)
            .override_global("ROW_CAPACITY", &rows, true)
            .load(EBPF_OBJECT)?;
        let (mapped, keys) = {
            use std::os::fd::{AsFd as _, AsRawFd as _};
            let fd = |name: &'static str| match ebpf.map(name) {
                Some(aya::maps::Map::Array(d)) => Ok(d.fd().as_fd().as_raw_fd()),
                _ => Err(ProbeError::MissingMap(name)),
            };
            (
                rows::MappedRows::map(fd("ROWS")?, rows as usize, row_cpus)
                    .map_err(ProbeError::MapRows)?,
                rows::MappedKeys::map(fd("ROW_KEYS")?, rows as usize)
                    .map_err(ProbeError::MapRows)?,
            )
        };
        // Row 0 is the overflow row, there before any program runs (with
        // every process traced, the first programs run as they attach);
        // new rows are handed out from 1.
        reserve_overflow_row(&mut ebpf)?;
        let maps_ms = ms_since(started);
        let started = std::time::Instant::now();
        let mut hooks = Vec::with_capacity(Hook::ALL.len());
        let mut preloaded = attach::preload(&mut ebpf, &Hook::ALL, aya_btf.as_ref());
        // The on-demand hooks are checked last (see `check_on_demand`):
        // detaching sys_enter's check just before sys_exit's attach made
        // that attach wait some 10 ms. Listed in hook order all the same.
        let (mut always, on_demand): (Vec<Hook>, Vec<Hook>) =
            Hook::ALL.into_iter().partition(|h| !h.spec().on_demand);
        always.extend(on_demand);
        for hook in always {
            let spec = hook.spec();
            let result = if spec.on_demand {
                attach::check_on_demand(&mut ebpf, hook, aya_btf.as_ref(), &mut preloaded)
            } else {
                attach::attach(&mut ebpf, hook, aya_btf.as_ref(), &mut preloaded)
            };
            if spec.required
                && let Err(reason) = &result
            {
                return Err(ProbeError::Required {
                    hook,
                    reason: reason.clone(),
                });
            }
            let (via, reason, attached_as) = match result {
                Ok(a) => (
                    Some(a.via),
                    None,
                    (a.target != spec.target).then_some(a.target),
                ),
                Err(e) => (None, Some(e.message), None),
            };
            hooks.push(HookStatus {
                hook,
                tier: spec.tier,
                attached: via.is_some(),
                via,
                reason,
                purpose: spec.purpose,
                attached_as,
                on_demand: spec.on_demand,
            });
        }
        hooks.sort_by_key(|h| h.hook);
        let mut probes = Self {
            ebpf,
            hooks,
            released: [0; zctrace_common::counter::COUNT],
            capacity: rows,
            rows: Some(mapped),
            keys: Some(keys),
            key_cache: std::cell::RefCell::default(),
            timings: LoadTimings {
                btf_ms,
                maps_ms,
                programs_ms: ms_since(started),
            },
            enter_link: None,
            event_sessions: 0,
        };
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
    /// `mechanism` picks which: every tracepoint hook, the two syscall
    /// tracepoints alone, or fexit on the read and write system calls'
    /// functions (an error with the kernel's reason where fexit is
    /// refused).
    #[cfg(feature = "bench")]
    pub fn load_floor(mechanism: crate::cli::FloorMechanism) -> Result<(Self, usize), ProbeError> {
        use crate::cli::FloorMechanism;
        if mechanism == FloorMechanism::Zctrace {
            let probes = Probes::load(ProbeOptions::default())?;
            let attached = probes.hooks().iter().filter(|h| h.attached).count();
            return Ok((probes, attached));
        }
        let aya_btf = aya::Btf::from_sys_fs().ok();
        let mut ebpf = EbpfLoader::new()
            .btf(aya_btf.as_ref())
            .allow_unsupported_maps()
            .load(EBPF_OBJECT)?;
        let mut attached = 0;
        let wanted = |h: Hook| match mechanism {
            FloorMechanism::Hooks => true,
            FloorMechanism::SyscallTracepoints => matches!(h, Hook::SysEnter | Hook::SysExit),
            FloorMechanism::Fexit | FloorMechanism::Zctrace => false,
        };
        if mechanism == FloorMechanism::Fexit {
            let btf = aya_btf
                .as_ref()
                .ok_or_else(|| ProbeError::Floor("the kernel's BTF could not be read".into()))?;
            // The syscall functions' names carry the architecture's prefix.
            let prefix = if cfg!(target_arch = "aarch64") {
                "__arm64_sys_"
            } else {
                "__x64_sys_"
            };
            for (program, call) in [("floor_fexit_read", "read"), ("floor_fexit_write", "write")] {
                let target = format!("{prefix}{call}");
                let p = ebpf
                    .program_mut(program)
                    .ok_or(ProbeError::MissingMap(program))?;
                let p: &mut aya::programs::FExit = p.try_into().map_err(aya::EbpfError::from)?;
                let fail = |e: aya::programs::ProgramError| {
                    ProbeError::Floor(format!("fexit on {target}: {}", error_chain(&e)))
                };
                p.load(&target, btf).map_err(fail)?;
                p.attach().map_err(fail)?;
                attached += 1;
            }
        }
        if let Some(p) = ebpf.program_mut(FLOOR_RAW) {
            let p: &mut RawTracePoint = p.try_into().map_err(aya::EbpfError::from)?;
            p.load().map_err(aya::EbpfError::from)?;
            for h in Hook::ALL {
                if h.spec().kind == Kind::RawTracepoint && wanted(h) {
                    attached += usize::from(p.attach(h.target()).is_ok());
                }
            }
        }
        // One empty BTF tracepoint program per BTF tracepoint hook.
        for h in Hook::ALL {
            let spec = h.spec();
            if spec.kind != Kind::BtfTracepoint || !wanted(h) {
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
                released: [0; zctrace_common::counter::COUNT],
                capacity: 0,
                rows: None,
                keys: None,
                key_cache: std::cell::RefCell::default(),
                timings: LoadTimings::default(),
                enter_link: None,
                event_sessions: 0,
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

    /// The cache's merge keeps `sorted` what a full sort of the keyed rows
    /// gives, through keys given, released and given again (a seeded
    /// random walk; the full sort is the oracle).
    #[test]
    fn the_key_cache_stays_sorted_as_rows_are_keyed_and_released() {
        let mut c = KeyCache {
            rows: vec![(0, None); 64],
            ..KeyCache::default()
        };
        let mut next = crate::model::xorshift(0x2545_f491_4f6c_dd1d);
        for round in 0..400u64 {
            for _ in 0..next(6) {
                let i = next(64) as usize;
                let seq = c.rows[i].0 + 1;
                if next(3) == 0 {
                    c.set(i, seq, None);
                } else {
                    let key = zctrace_common::CounterKey {
                        tgid: next(5) as u32,
                        tid: 0,
                        method: next(4) as u32,
                        call: next(3) as u32,
                        src: 0,
                        dst: 0,
                    };
                    c.set(i, seq, Some(key));
                }
            }
            if round % 3 == 0 {
                c.sort();
                let mut oracle: Vec<_> = c
                    .rows
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, k))| Some(((*k)?, i as u32)))
                    .collect();
                oracle.sort_unstable();
                assert_eq!(c.sorted, oracle, "round {round}");
            }
        }
    }

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
