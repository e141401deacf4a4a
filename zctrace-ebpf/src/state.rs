//! Maps, the traced-process filter, per-thread state and counter rows.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use zctrace_common::{
    CounterKey, Counters, EVENT_RING_BYTES, Event, MAX_COUNTER_ROWS, MAX_PROCESSES, MAX_THREADS,
    Settings, ThreadState, config, stat,
};

/// Traced processes (tgid -> 1), maintained by userspace and by fork/exit.
#[map]
pub static TRACED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PROCESSES, 0);

/// Per-thread state (tid -> in-flight syscall and current method).
#[map]
pub static THREADS: HashMap<u32, ThreadState> = HashMap::with_max_entries(MAX_THREADS, 0);

/// Exact counters, per CPU, one row per (tgid, tid, method, call).
#[map]
pub static COUNTERS: PerCpuHashMap<CounterKey, Counters> =
    PerCpuHashMap::with_max_entries(MAX_COUNTER_ROWS, 0);

/// Health counters (drops, full maps), per CPU.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT as u32, 0);

/// Runtime switches written by userspace.
#[map]
pub static CONFIG: Array<u32> = Array::with_max_entries(config::COUNT, 0);

/// The live event stream.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

/// Set by userspace before load (lives in .rodata, so the verifier sees it
/// as a constant and prunes the branches it disables).
#[unsafe(no_mangle)]
static SETTINGS: Settings = Settings {
    trace_all: 0,
    follow_forks: 0,
};

/// The zero row new counter rows are created from (read-only data, so the
/// 168 bytes do not take BPF stack).
static ZERO_ROW: Counters = Counters::ZERO;

#[inline(always)]
pub fn settings() -> Settings {
    // SAFETY: SETTINGS is a plain static; the volatile read keeps the
    // compiler from folding in the zero it was declared with, since the
    // loader rewrites it.
    unsafe { core::ptr::read_volatile(&SETTINGS) }
}

/// The current task, when its process is traced.
#[derive(Clone, Copy)]
pub struct Task {
    pub tgid: u32,
    pub tid: u32,
    /// The process's entry in TRACED (its fd epoch), None in trace-all mode.
    pub epoch: Option<*mut u32>,
}

#[inline(always)]
pub fn current_traced() -> Option<Task> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut task = Task {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        epoch: None,
    };
    if settings().trace_all != 0 {
        // The idle task is not a process anyone traces.
        return (task.tgid != 0).then_some(task);
    }
    task.epoch = Some(TRACED.get_ptr_mut(task.tgid)?);
    Some(task)
}

/// Bumps the process's fd epoch: cached fd kinds are stale from now on.
#[inline(always)]
pub fn bump_epoch(task: &Task) {
    if let Some(p) = task.epoch {
        // SAFETY: a live TRACED value (u32); atomic because the process's
        // other threads read and bump it concurrently.
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, 1) };
    }
}

/// The process's current fd epoch (0 where there is none: never cached).
#[inline(always)]
pub fn epoch(task: &Task) -> u32 {
    // SAFETY: a live TRACED value; a u32 read cannot tear.
    task.epoch
        .map_or(0, |p| unsafe { core::ptr::read_volatile(p) })
}

/// The thread's state, created on first sight.
#[inline(always)]
pub fn thread_state(tid: u32) -> Option<*mut ThreadState> {
    if let Some(p) = THREADS.get_ptr_mut(tid) {
        return Some(p);
    }
    // EEXIST (a racing insert on another CPU) is fine: look it up again.
    let _ = THREADS.insert(tid, ThreadState::NEW, BPF_NOEXIST.into());
    let p = THREADS.get_ptr_mut(tid);
    if p.is_none() {
        stat_add(stat::THREAD_MAP_FULL, 1);
    }
    p
}

/// This CPU's counter row for `key`, created on first use.
#[inline(always)]
pub fn row(key: &CounterKey) -> Option<*mut Counters> {
    if let Some(p) = COUNTERS.get_ptr_mut(key) {
        return Some(p);
    }
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value would copy 168 bytes onto the 512-byte BPF stack"
    )]
    let _ = COUNTERS.insert(key, &ZERO_ROW, BPF_NOEXIST.into());
    let p = COUNTERS.get_ptr_mut(key);
    if p.is_none() {
        stat_add(stat::COUNTER_MAP_FULL, 1);
    }
    p
}

/// Adds to one counter of a row. Atomic, because a softirq program (socket
/// transmit, block completion) can interrupt a task program on the same CPU.
#[inline(always)]
pub fn add(row: *mut Counters, idx: usize, by: u64) {
    if idx >= zctrace_common::counter::COUNT {
        return;
    }
    // SAFETY: `row` points into a live per-CPU map value returned by the
    // lookup helper and `idx` is in bounds. The BPF target has atomic add
    // (BPF_ATOMIC) but no compare-and-swap, so AtomicU64::fetch_add is not
    // offered; the intrinsic compiles to the single atomic add instruction.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            core::ptr::addr_of_mut!((*row).v[idx]),
            by,
        )
    };
}

/// Adds `by` to counter `idx` of the row for `key`.
#[inline(always)]
pub fn bump(key: &CounterKey, idx: usize, by: u64) {
    if let Some(r) = row(key) {
        add(r, idx, by);
    }
}

#[inline(always)]
pub fn stat_add(idx: usize, by: u64) {
    if let Some(p) = STATS.get_ptr_mut(idx as u32) {
        // SAFETY: a live per-CPU array slot; see `add` for why atomic.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, by) };
    }
}

#[inline(always)]
pub fn events_enabled() -> bool {
    CONFIG.get(config::EVENTS_ENABLED).is_some_and(|v| *v != 0)
}

/// Writes an event, counting it as dropped when the ring buffer is full.
#[inline(always)]
pub fn emit(ev: &Event) {
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            entry.write(*ev);
            entry.submit(0);
            stat_add(stat::EVENTS_SENT, 1);
        }
        None => stat_add(stat::EVENTS_DROPPED, 1),
    }
}

/// The counter row key for an event happening on `task` right now: the
/// syscall it is inside, or (in user mode) the method it is doing.
#[inline(always)]
pub fn key_now(task: Task) -> CounterKey {
    let (method, call) = match THREADS.get_ptr(task.tid) {
        Some(st) => {
            // SAFETY: a live map value; a torn read only misattributes one
            // event to a neighbouring method, it cannot fault.
            let st = unsafe { &*st };
            if st.call != zctrace_common::Call::None as u32 {
                (st.method, st.call)
            } else {
                (st.current, st.call)
            }
        }
        None => (
            zctrace_common::Method::Other as u32,
            zctrace_common::Call::None as u32,
        ),
    };
    CounterKey {
        tgid: task.tgid,
        tid: task.tid,
        method,
        call,
    }
}
