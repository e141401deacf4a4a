//! Maps, the traced-process filter, per-thread state and counter rows.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
    ptr,
};

use aya_ebpf::{
    bindings::{
        BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, BPF_NOEXIST,
        bpf_map_type,
    },
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_task_btf, bpf_get_smp_processor_id,
            bpf_task_pt_regs, bpf_task_storage_delete, bpf_task_storage_get,
        },
    },
    macros::{btf_map, map},
    maps::{Array, HashMap, PerCpuArray, Queue, RingBuf},
};
use zctrace_common::{
    Call, CounterKey, Counters, DEFERRED_COUNTERS, DEFERRED_SLOTS, EPOCH_SLOTS, EVENT_RING_BYTES,
    Event, MAX_COUNTER_ROWS, MAX_PROCESSES, OVERFLOW_ROW, RowKey, Settings, THREAD_SLOTS,
    ThreadState, config, counter, deferred_slot, fallback_reserve, ledger, stat, thread_slot,
};

use crate::kernel::{PtRegs, in_syscall};

/// Traced processes (tgid -> 1), maintained by userspace and by fork/exit.
/// Only consulted when a thread has no state yet (or its state predates
/// the last removal from the set): not on every syscall.
#[map]
pub static TRACED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PROCESSES, 0);

/// A `BPF_MAP_TYPE_TASK_STORAGE` map in the BTF layout libbpf and aya read
/// (aya-ebpf 0.2.1 has no wrapper for it). The kernel keeps the value in
/// the task itself and frees it with the task; a lookup is a pointer walk,
/// not a hash.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
    key: *const i32,
    value: *const T,
}

// SAFETY: the fields are placeholders the loader reads from BTF; they are
// never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            map_flags: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
        }
    }

    #[inline(always)]
    fn as_ptr(&self) -> *mut c_void {
        ptr::from_ref(self).cast_mut().cast()
    }
}

/// Thread states of traced threads, direct-mapped by the address of the
/// thread's saved user registers (see `zctrace_common::thread_slot`):
/// unique per live thread, and handed to sys_enter and sys_exit as their
/// first argument, so the hot path finds the state with no helper call
/// and no hashing. A thread whose slot another holds keeps its state in
/// task storage (THREADS) instead. Made mmapable only because the kernel
/// then starts the values page aligned: each 192-byte state is three whole
/// cache lines, the first holding all that sys_exit reads.
#[map]
pub static THREAD_TABLE: Array<ThreadState> = Array::with_max_entries(THREAD_SLOTS, BPF_F_MMAPABLE);

/// Who holds each table slot: a slot belongs to the thread whose insert
/// succeeded, so two threads never share one.
#[map]
pub static SLOT_CLAIMS: HashMap<u32, u64> = HashMap::with_max_entries(THREAD_SLOTS, 0);

/// Per-thread state (in-flight syscall, current method, fd-kind cache) of
/// traced threads that have no table slot.
#[btf_map]
pub static THREADS: TaskStorage<ThreadState> = TaskStorage::new();

/// Per-process fd epochs (see `EPOCH_SLOTS`), bumped by calls that change
/// what an fd refers to; cached fd kinds carry the epoch they were read at.
#[map]
pub static EPOCHS: Array<u32> = Array::with_max_entries(EPOCH_SLOTS, 0);

/// Exact counters, one copy per CPU: one row per (tgid, tid, method, call,
/// flow), found through ROW_INDEX. An array, so the hot path indexes it
/// (threads cache their rows' indices) instead of hashing a key on every
/// syscall. CPU-major: CPU c's copy of row i is element
/// `c * ROW_CAPACITY + i`, so each CPU writes only its own stretch of
/// memory (no cache line is shared between two CPUs' writes). A plain
/// array rather than a per-CPU one so that userspace can map it and read
/// the rows in use with no system call (`BPF_F_MMAPABLE`), and so that
/// creating it is one allocation, not one per row. Userspace sizes it
/// (ROW_CAPACITY rows for each possible CPU number, and the three maps
/// below ROW_CAPACITY) before load.
#[map]
pub static ROWS: Array<Counters> = Array::with_max_entries(MAX_COUNTER_ROWS, BPF_F_MMAPABLE);

/// Which row belongs to which (tgid, tid, method, call, flow); userspace reads
/// it to label the rows and removes entries to recycle them.
#[map]
pub static ROW_INDEX: HashMap<CounterKey, u32> = HashMap::with_max_entries(MAX_COUNTER_ROWS, 0);

/// The key each row was given (see `RowKey`): the sampler's way to learn
/// new rows without walking ROW_INDEX (it maps this array and reads it
/// with no system call). ROW_CAPACITY entries.
#[map]
pub static ROW_KEYS: Array<RowKey> = Array::with_max_entries(MAX_COUNTER_ROWS, BPF_F_MMAPABLE);

/// Recycled rows (zeroed, with no index entry), which userspace gives back
/// when their threads are gone; used before never-used ones.
#[map]
pub static FREE_ROWS: Queue<u32> = Queue::with_max_entries(MAX_COUNTER_ROWS, 0);

/// Rows never used yet are handed out in order: [0] is the next one
/// (userspace starts it at 1: row 0 is the overflow row). [1] counts the
/// rows given a key (bumped after ROW_KEYS is written): the sampler reads
/// ROW_KEYS again only when it moved.
#[map]
pub static ROW_ALLOC: Array<u64> = Array::with_max_entries(2, 0);

/// How many rows ROWS has per CPU (userspace sets it with the maps' size).
#[unsafe(no_mangle)]
static ROW_CAPACITY: u32 = MAX_COUNTER_ROWS;

/// Health counters (drops, full maps), per CPU.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT as u32, 0);

/// The ledger of observed bytes (see `zctrace_common::ledger`), per CPU.
#[map]
pub static LEDGER: PerCpuArray<u64> = PerCpuArray::with_max_entries(ledger::SLOTS as u32, 0);

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
    per_thread: 0,
    cgroup_level: 0,
    cgroup_id: 0,
};

#[inline(always)]
pub fn settings() -> Settings {
    // SAFETY: SETTINGS is a plain static; the volatile read keeps the
    // compiler from folding in the zero it was declared with, since the
    // loader rewrites it.
    unsafe { core::ptr::read_volatile(&SETTINGS) }
}

/// The current task, when its process is traced, with its thread state
/// (null for a thread that has made no syscall yet: see `current_traced`).
#[derive(Clone, Copy)]
pub struct Task {
    pub tgid: u32,
    pub tid: u32,
    pub st: *mut ThreadState,
}

#[inline(always)]
fn config(idx: u32) -> u32 {
    CONFIG.get(idx).copied().unwrap_or(0)
}

/// Makes every thread re-check whether it is traced at its next probe
/// (as userspace does when it changes the traced set).
#[inline(always)]
pub fn bump_generation() {
    if let Some(p) = CONFIG.get_ptr_mut(config::GENERATION) {
        // SAFETY: a live array slot (u32), bumped atomically: other CPUs
        // read it, and userspace or another CPU may bump it too.
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, 1) };
    }
}

/// What each CPU keeps for the programs running on it, in one cache line
/// (sys_enter writes both parts, a socket hook reads the second).
#[repr(C)]
pub struct PerCpu {
    /// A scratch word (see `regs_addr`).
    scratch: u64,
    /// The thread whose syscall entered last on this CPU: its id as
    /// `bpf_get_current_pid_tgid` reports it, and its saved registers.
    /// The socket hooks fire inside syscalls, nearly always on the CPU the
    /// call entered on: when the current thread's id matches, its
    /// registers come from here, one helper call instead of two. The id
    /// check makes a stale entry (the thread moved, another ran since) a
    /// miss, never a wrong thread.
    entered_id: u64,
    entered_regs: u64,
}

#[map]
static PER_CPU: PerCpuArray<PerCpu> = PerCpuArray::with_max_entries(1, 0);

/// The address of a `pt_regs` as a plain number. The verifier types the
/// pointer (a BTF pointer) and refuses arithmetic on it, but map memory is
/// untyped: stored there and loaded back it is a number (programs loaded
/// with CAP_PERFMON, as zctrace's are, may store pointers in maps). The
/// word is per CPU; should another program on this CPU overwrite it in
/// between, the number read back differs from the pointer and the caller
/// takes the slow path.
#[inline(always)]
pub fn regs_addr(regs: *const PtRegs) -> u64 {
    let Some(cell) = PER_CPU
        .get_ptr_mut(0)
        // SAFETY: a live per-CPU map value; only the field's address is taken.
        .map(|p| unsafe { ptr::addr_of_mut!((*p).scratch) })
    else {
        return NO_REGS;
    };
    // SAFETY: a live per-CPU map value of this CPU.
    unsafe {
        ptr::write_volatile(cell, regs as u64);
        let v = ptr::read_volatile(cell);
        if v == regs as u64 && v != 0 {
            v
        } else {
            NO_REGS
        }
    }
}

/// `regs_addr`'s "unknown": never a slot's owner (free slots hold 0, and
/// no pt_regs lies at the top of the address space), never claims one.
const NO_REGS: u64 = u64::MAX;

/// The current task's saved user registers, for the hooks that are not
/// handed them (two helper calls; sys_enter and sys_exit get them free).
#[inline(always)]
fn current_regs() -> u64 {
    // SAFETY: the helper takes the current task, which is never null.
    task_regs(unsafe { bpf_get_current_task_btf() }.cast())
}

/// The current task's saved user registers as a BTF pointer, whose fields
/// are read with plain loads (two helper calls).
#[inline(always)]
pub fn current_regs_ptr() -> *const PtRegs {
    // SAFETY: the helper takes the current task, which is never null.
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf().cast()) as *const PtRegs }
}

/// The saved user registers of `task` (a BTF task pointer), as a number.
#[inline(always)]
pub fn task_regs(task: *const c_void) -> u64 {
    // SAFETY: `task` is a task pointer the kernel handed over.
    let regs = unsafe { bpf_task_pt_regs(task.cast_mut().cast()) };
    regs_addr(regs as *const PtRegs)
}

#[inline(always)]
fn task_of(st: *mut ThreadState) -> Task {
    // SAFETY: live thread state (table slot or task storage).
    let (tgid, tid) = unsafe { ((*st).tgid, (*st).tid) };
    Task { tgid, tid, st }
}

/// sys_exit's lookup: the state of the thread whose saved registers are
/// at `regs`, if its process is traced, created on first sight (in its
/// table slot when that is free). The common case is one array index and
/// two compares: no helper call, no hashing. A thread whose process has
/// just left the traced set still has the call that returns now counted
/// (what hooks inside it deferred is in its state).
#[inline(always)]
pub fn exit_task(regs: u64) -> Option<Task> {
    let idx = thread_slot(regs);
    let slot = THREAD_TABLE.get_ptr_mut(idx)?;
    // SAFETY: a live table value (only its owner writes it).
    let s = unsafe { &*slot };
    if s.owner == regs && s.generation == config(config::GENERATION) {
        note_entered(s.tgid, s.tid, regs);
        return (s.traced != 0).then(|| task_of(slot));
    }
    let was_traced = s.owner == regs && s.traced != 0;
    match resolve(regs, idx, slot, true) {
        None if was_traced => Some(task_of(slot)),
        found => found,
    }
}

/// Notes the thread leaving a syscall on this CPU (traced threads and
/// untraced alike: the untraced ones' socket events are then turned away
/// for one helper call too). Its registers stay where they are for its
/// whole life, so its next syscall's hooks find them here.
#[inline(always)]
fn note_entered(tgid: u32, tid: u32, regs: u64) {
    if let Some(e) = PER_CPU.get_ptr_mut(0) {
        // SAFETY: a live per-CPU map value of this CPU.
        unsafe {
            (*e).entered_id = u64::from(tgid) << 32 | u64::from(tid);
            (*e).entered_regs = regs;
        }
    }
}

/// The current task if its process is traced, for every hook but
/// sys_enter/sys_exit. These never claim a table slot (some run after a
/// thread's exit was seen, as its files close, and a slot claimed then
/// would outlive the thread) and create no state: a thread that has made
/// no syscall yet (a new child's first page faults) gets a null state and
/// is counted as doing no particular method.
#[inline(always)]
pub fn current_traced() -> Option<Task> {
    let id = bpf_get_current_pid_tgid();
    let regs = match PER_CPU.get_ptr(0) {
        // SAFETY: a live per-CPU map value of this CPU.
        Some(e) if unsafe { (*e).entered_id } == id && id != 0 => unsafe { (*e).entered_regs },
        _ => current_regs(),
    };
    traced_at(regs)
}

/// `current_traced` for hooks that know where the current thread's saved
/// registers are (the address must be the current thread's: a page fault
/// from user mode, the task leaving the CPU at a switch), which spares the
/// helper calls (about 20 ns each here, where every call and return pays
/// for the CPU's speculation mitigations).
#[inline(always)]
pub fn traced_at(regs: u64) -> Option<Task> {
    find(regs, false)
}

/// The thread table's fast path, shared by every hook: the slot of the
/// thread whose registers are at `regs`, when that thread owns it and its
/// state is of this generation; else `resolve`. At syscall entry (`enter`)
/// the thread is also noted as this CPU's last to enter, and may claim
/// its slot. `enter` is a constant where this is inlined.
#[inline(always)]
fn find(regs: u64, enter: bool) -> Option<Task> {
    let idx = thread_slot(regs);
    let slot = THREAD_TABLE.get_ptr_mut(idx)?;
    // SAFETY: a live table value (only its owner writes it).
    let s = unsafe { &*slot };
    if s.owner == regs && s.generation == config(config::GENERATION) {
        if enter {
            note_entered(s.tgid, s.tid, regs);
        }
        return (s.traced != 0).then(|| task_of(slot));
    }
    resolve(regs, idx, slot, enter)
}

/// Everything but the fast path: a thread seen for the first time, one
/// whose state predates the last generation bump, or one living in task
/// storage because another thread holds its slot. sys_enter (`claim`)
/// gives a thread seen for the first time its free table slot, traced or
/// not: an untraced thread's later syscalls are then turned away by the
/// fast path's compares instead of a hash lookup here.
#[inline(never)]
fn resolve(regs: u64, idx: u32, slot: *mut ThreadState, claim: bool) -> Option<Task> {
    let generation = config(config::GENERATION);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // The idle task (0) is not a process anyone traces.
    let traced = tgid != 0 && wanted(tgid);
    // SAFETY: a live table value; this thread writes it only if it owns
    // it or wins its claim.
    let s = unsafe { &mut *slot };
    if s.owner == regs {
        // The thread's own slot, from before the last generation bump.
        renew(s, generation);
        s.traced = u8::from(traced);
        return traced.then(|| task_of(slot));
    }
    let may_claim = claim && regs != NO_REGS && config(config::THREAD_TABLE) != 0 && s.owner == 0;
    if !traced {
        if may_claim && SLOT_CLAIMS.insert(idx, regs, BPF_NOEXIST.into()).is_ok() {
            *s = ThreadState::NEW;
            s.generation = generation;
            s.tgid = tgid;
            s.tid = pid_tgid as u32;
            s.owner = regs;
        }
        return None;
    }
    // SAFETY: the current task, never null.
    let task = unsafe { bpf_get_current_task_btf() };
    // SAFETY: looks up (no create) this task's storage.
    let stored = unsafe { bpf_task_storage_get(THREADS.as_ptr(), task, ptr::null_mut(), 0) }
        .cast::<ThreadState>();
    if may_claim && SLOT_CLAIMS.insert(idx, regs, BPF_NOEXIST.into()).is_ok() {
        // The slot is ours: start from the thread's stored state if it
        // has one (then drop that), else afresh. Owner last.
        if stored.is_null() {
            *s = ThreadState::NEW;
            s.tgid = tgid;
            s.tid = pid_tgid as u32;
        } else {
            // SAFETY: live storage of this task, copied then deleted.
            unsafe {
                *s = *stored;
                bpf_task_storage_delete(THREADS.as_ptr(), task);
            }
        }
        renew(s, generation);
        s.traced = 1;
        s.owner = regs;
        return Some(task_of(slot));
    }
    if !stored.is_null() {
        // SAFETY: live storage of this task.
        renew(unsafe { &mut *stored }, generation);
        return Some(task_of(stored));
    }
    if !claim {
        return Some(Task {
            tgid,
            tid: pid_tgid as u32,
            st: ptr::null_mut(),
        });
    }
    // sys_enter of a thread whose slot another thread holds: task storage,
    // created zeroed and then filled in place (a ThreadState on the BPF
    // stack would not fit next to sys_enter's frame on older verifiers).
    // SAFETY: creates this task's storage.
    let st = unsafe {
        bpf_task_storage_get(
            THREADS.as_ptr(),
            task,
            ptr::null_mut(),
            BPF_LOCAL_STORAGE_GET_F_CREATE.into(),
        )
    }
    .cast::<ThreadState>();
    if st.is_null() {
        stat_add(stat::THREAD_MAP_FULL, 1);
        return None;
    }
    // SAFETY: the new storage of this task.
    let s = unsafe { &mut *st };
    *s = ThreadState::NEW;
    s.generation = generation;
    s.tgid = tgid;
    s.tid = pid_tgid as u32;
    s.traced = 1;
    Some(task_of(st))
}

/// Whether the current thread's process is to be traced: every process,
/// one in the traced set, or one in the target cgroup's subtree (the
/// thread's ancestor at the target's depth is the target).
#[inline(always)]
fn wanted(tgid: u32) -> bool {
    let s = settings();
    if s.trace_all != 0 || TRACED.get_ptr(tgid).is_some() {
        return true;
    }
    // SAFETY: a helper with no pointer arguments.
    s.cgroup_id != 0
        && unsafe { bpf_get_current_ancestor_cgroup_id(s.cgroup_level as i32) } == s.cgroup_id
}

/// Brings a state to the current generation: the rows it cached may have
/// been recycled since, so it forgets them (the call in flight keeps its
/// row: userspace recycles only rows of threads that are gone).
#[inline(always)]
fn renew(s: &mut ThreadState, generation: u32) {
    if s.generation != generation {
        s.generation = generation;
        s.forget_rows();
    }
}

/// Gives a table slot up (owner first, so no one mistakes it for theirs).
#[inline(always)]
fn release(idx: u32, s: &mut ThreadState) {
    s.owner = 0;
    let _ = SLOT_CLAIMS.remove(idx);
}

/// The current task's state in task storage, if any.
#[inline(never)]
fn stored_state() -> Option<*mut ThreadState> {
    // SAFETY: looks up (no create) the current task's storage.
    let st = unsafe {
        bpf_task_storage_get(
            THREADS.as_ptr(),
            bpf_get_current_task_btf(),
            ptr::null_mut(),
            0,
        )
    }
    .cast::<ThreadState>();
    (!st.is_null()).then_some(st)
}

/// At a thread's exit: its state (whichever home it has), for the call
/// that never returns to be counted, then `done` frees it.
#[inline(always)]
pub fn exiting_state(done: impl FnOnce(&mut ThreadState)) {
    let regs = current_regs();
    let idx = thread_slot(regs);
    if let Some(slot) = THREAD_TABLE.get_ptr_mut(idx) {
        // SAFETY: a live table value.
        let s = unsafe { &mut *slot };
        if s.owner == regs {
            if s.traced != 0 {
                done(s);
            }
            release(idx, s);
            return;
        }
    }
    if let Some(st) = stored_state() {
        // SAFETY: live storage of the current task.
        done(unsafe { &mut *st });
        // SAFETY: the current task.
        unsafe { bpf_task_storage_delete(THREADS.as_ptr(), bpf_get_current_task_btf()) };
    }
}

#[inline(always)]
fn epoch_slot(tgid: u32) -> Option<*mut u32> {
    EPOCHS.get_ptr_mut(tgid & (EPOCH_SLOTS - 1))
}

/// Bumps the process's fd epoch: cached fd kinds are stale from now on.
#[inline(always)]
pub fn bump_epoch(task: &Task) {
    if let Some(p) = epoch_slot(task.tgid) {
        // SAFETY: a live array slot (u32); atomic because the process's
        // other threads read and bump it concurrently.
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, 1) };
    }
}

/// The process's current fd epoch (0 where there is none: never cached).
#[inline(always)]
pub fn epoch(task: &Task) -> u32 {
    // Epochs start at 1 so that 0 can mean "no epoch".
    epoch_slot(task.tgid).map_or(0, |p| {
        // SAFETY: a live array slot; a u32 read cannot tear.
        unsafe { core::ptr::read_volatile(p) }.wrapping_add(1)
    })
}

/// The index of the counter row for `key`: found, or allocated, or, when
/// the map is full, the process's fallback row, or the overflow row. Never
/// none: a count always lands somewhere, and a fallback is counted.
#[inline(never)]
pub fn row_for(key: &CounterKey) -> u32 {
    // SAFETY: ROW_CAPACITY is a plain static the loader sets.
    let capacity = unsafe { core::ptr::read_volatile(&ROW_CAPACITY) };
    // Exact rows leave a reserve for the processes' fallback rows.
    if let Some(i) = row_index(key, capacity - fallback_reserve(capacity)) {
        return i;
    }
    stat_add(stat::ROW_FALLBACKS, 1);
    row_index(&CounterKey::fallback(key.tgid), capacity).unwrap_or(OVERFLOW_ROW)
}

/// Finds or allocates the row for `key`, allocating only below `limit`.
#[inline(always)]
fn row_index(key: &CounterKey, limit: u32) -> Option<u32> {
    // SAFETY: a copy of the value is taken at once.
    if let Some(i) = unsafe { ROW_INDEX.get(key) } {
        return Some(*i);
    }
    let idx = match FREE_ROWS.pop() {
        Ok(Some(i)) => i,
        _ => {
            let next = ROW_ALLOC.get_ptr_mut(0)?;
            // SAFETY: a live map value.
            if unsafe { core::ptr::read_volatile(next) } >= u64::from(limit) {
                return None;
            }
            let i = fetch_add(next, 1);
            if i >= u64::from(limit) {
                // Another CPU took the last one. (Not given back: a
                // fallback allocation may have taken the next index since.)
                return None;
            }
            i as u32
        }
    };
    if ROW_INDEX.insert(key, idx, BPF_NOEXIST.into()).is_ok() {
        // The row's key for the sampler, then the count it watches (an
        // atomic with full ordering): a sampler that reads the count and
        // then the keys sees this one whole, or sees the old count and
        // reads the keys again next time. Only this context writes this
        // row's key: the row is its own until userspace releases it.
        if let Some(k) = ROW_KEYS.get_ptr_mut(idx) {
            // SAFETY: a live array value, written by this context alone.
            unsafe {
                (*k).key = *key;
                let seq = core::ptr::read_volatile(&(*k).seq);
                core::ptr::write_volatile(&mut (*k).seq, seq + 1);
            }
        }
        if let Some(added) = ROW_ALLOC.get_ptr_mut(1) {
            fetch_add(added, 1);
        }
        return Some(idx);
    }
    // Another context created the row first (or the index is full): give
    // the index back.
    let _ = FREE_ROWS.push(idx, 0);
    // SAFETY: as above.
    unsafe { ROW_INDEX.get(key) }.copied()
}

/// Atomically adds `v` to `*p` and returns the old value. BPF has had this
/// instruction since Linux 5.12, but LLVM emits it only for BPF CPU v3 and
/// the build uses the generic CPU, so it is written out here.
#[inline(always)]
pub fn fetch_add(p: *mut u64, v: u64) -> u64 {
    let mut r = v;
    // SAFETY: `p` is a live, aligned map value; the instruction is the
    // BPF_ATOMIC | BPF_FETCH add, which the verifier checks like any store.
    unsafe {
        core::arch::asm!(
            "{r} = atomic_fetch_add((u64 *)({p} + 0), {r})",
            p = in(reg) p,
            r = inout(reg) r,
        );
    }
    r
}

/// Atomically swaps `*p` for `v` and returns the old value (BPF_XCHG, like
/// `fetch_add` written out for the generic CPU; fully ordered).
#[inline(always)]
pub fn swap(p: *mut u64, v: u64) -> u64 {
    let mut r = v;
    // SAFETY: `p` is a live, aligned map value; BPF_ATOMIC | BPF_XCHG is
    // checked by the verifier like any store.
    unsafe {
        core::arch::asm!(
            "{r} = xchg_64({p} + 0, {r})",
            p = in(reg) p,
            r = inout(reg) r,
        );
    }
    r
}

/// The thread id rows are keyed by: the thread's own only where rows are
/// kept per thread.
#[inline(always)]
pub fn row_tid(tid: u32) -> u32 {
    if settings().per_thread != 0 { tid } else { 0 }
}

/// The thread's counter row index for (method, call, flow): from its
/// cache, else from the index (and then cached). `flow` is src | dst << 8.
#[inline(always)]
pub fn row_of(st: &mut ThreadState, method: u32, call: u32, flow: u32) -> u32 {
    if let Some(i) = st.cached_row(method, call, flow) {
        return i;
    }
    let key = CounterKey {
        tgid: st.tgid,
        tid: row_tid(st.tid),
        method,
        call,
        src: (flow & 0xff) as u16,
        dst: (flow >> 8) as u16,
    };
    let i = row_for(&key);
    st.remember_row(method, call, flow, i);
    i
}

/// This CPU's copy of row `idx` (None for NO_ROW).
#[inline(always)]
pub fn row_ptr(idx: u32) -> Option<*mut Counters> {
    // SAFETY: a plain static the loader sets.
    let capacity = unsafe { core::ptr::read_volatile(&ROW_CAPACITY) };
    // SAFETY: a helper with no arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // An index past the capacity (NO_ROW) would land in the next CPU's
    // copies: it is made all ones, past the array's end, so the lookup
    // turns it down. Without a branch: a branch here, at every call site,
    // costs the verifier more states than the rest of the lookup. (A CPU
    // number past the copies cannot happen: userspace makes one for every
    // possible CPU number, and the array's bounds check would turn it
    // down.)
    let over = (u64::from(capacity)
        .wrapping_sub(1)
        .wrapping_sub(u64::from(idx))
        >> 63) as u32;
    ROWS.get_ptr_mut(cpu.wrapping_mul(capacity).wrapping_add(idx) | over.wrapping_neg())
}

/// Adds to one counter of a row, non-atomically. Each CPU has its own copy
/// of a row, tracepoint programs run with preemption off and do not nest,
/// and the counters added this way (syscalls, their bytes) are written
/// only from task context, so a plain add cannot lose an update even when
/// threads of one process share a row; counters that interrupt-context
/// programs also write use [`add_atomic`].
#[inline(always)]
pub fn add(row: *mut Counters, idx: usize, by: u64) {
    if idx >= zctrace_common::counter::COUNT {
        return;
    }
    // SAFETY: `row` points into a live per-CPU map value and `idx` is in
    // bounds.
    unsafe { (*row).v[idx] += by };
}

/// Adds to one counter atomically: for the counters that programs running
/// in softirq or interrupt context (transmit, block issue, faults) write,
/// which can interrupt a program on the same CPU.
#[inline(always)]
pub fn add_atomic(row: *mut Counters, idx: usize, by: u64) {
    if idx >= zctrace_common::counter::COUNT {
        return;
    }
    // SAFETY: as in `add`. The BPF target has atomic add (BPF_ATOMIC) but
    // no compare-and-swap, so AtomicU64::fetch_add is not offered; the
    // intrinsic compiles to the single atomic add instruction.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            core::ptr::addr_of_mut!((*row).v[idx]),
            by,
        )
    };
}

/// Where an event happening on `task` right now is counted.
pub enum Now {
    /// In user mode (or outside any syscall): the row of the method the
    /// thread is doing.
    User(u32),
    /// Inside a syscall that a hook has already classified: its row.
    Call(u32),
    /// Inside a syscall nothing has classified yet (it is classified when
    /// it returns): the thread's state.
    Defer(*mut ThreadState),
}

/// Which registers tell whether `task` is inside a syscall.
#[derive(Clone, Copy)]
pub enum Regs {
    /// The event is known to come from user mode (a user page fault).
    User,
    /// The current task's (two helper calls to find them).
    Current,
    /// These (a BTF pointer to the task's saved registers).
    At(*const PtRegs),
}

/// Where an event on `task` belongs now (see [`Now`]).
#[inline(always)]
pub fn now(task: Task, regs: Regs) -> Now {
    if task.st.is_null() {
        let key = CounterKey {
            tgid: task.tgid,
            tid: row_tid(task.tid),
            method: zctrace_common::Method::Other as u32,
            call: Call::None as u32,
            src: 0,
            dst: 0,
        };
        return Now::User(row_for(&key));
    }
    // SAFETY: this thread's live state; only its own programs write it
    // (and softirqs on its CPU add to its deferred counts atomically).
    let st = unsafe { &mut *task.st };
    if st.call != Call::None as u32 {
        return Now::Call(st.row);
    }
    let regs = match regs {
        Regs::User => ptr::null(),
        Regs::Current => current_regs_ptr(),
        Regs::At(r) => r,
    };
    if in_syscall(regs) {
        // A call the thread's memo knows (a read/write loop's) has its row
        // already: charged at once, as sys_exit will count it there.
        return match crate::syscalls::memo_row(st, &task, regs) {
            Some(row) => Now::Call(row),
            None => Now::Defer(task.st),
        };
    }
    Now::User(row_of(st, st.current, Call::None as u32, 0))
}

/// The key of row `idx`.
#[inline(always)]
pub fn row_key(idx: u32) -> Option<CounterKey> {
    // SAFETY: a live array value; this row's key was written when the row
    // was given it, before its index was handed out.
    ROW_KEYS
        .get(idx)
        .map(|k| unsafe { core::ptr::read_volatile(&k.key) })
}

/// Adds `by` to counter `idx` of the row `task` is in now (atomically: see
/// [`add_atomic`]; the callers are the rarer, non-syscall events), or
/// defers it to the end of the syscall it is inside. For payload a hook
/// observes, `charge` keeps the ledger instead.
#[inline(always)]
pub fn bump(task: Task, idx: usize, by: u64, regs: Regs) {
    match now(task, regs) {
        Now::User(r) | Now::Call(r) => {
            if let Some(r) = row_ptr(r) {
                add_atomic(r, idx, by);
            }
        }
        Now::Defer(st) => defer(st, idx, by),
    }
}

/// Keeps `by` of counter `idx` for the call in flight, counted on its row
/// when it returns ([`flush_deferred`]).
#[inline(always)]
fn defer(st: *mut ThreadState, idx: usize, by: u64) {
    match deferred_slot(idx) {
        Some(i) if i < DEFERRED_SLOTS => {
            // SAFETY: this thread's live state; the add is atomic (see
            // `ThreadState::deferred`), the flag a plain store of 1.
            unsafe {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                    core::ptr::addr_of_mut!((*st).deferred[i]),
                    by,
                );
                core::ptr::write_volatile(core::ptr::addr_of_mut!((*st).deferred_any), 1);
            }
        }
        // Every counter a hook charges inside a call has a slot (a unit
        // test checks the list); anything else is counted on the thread's
        // current method rather than dropped.
        _ => {
            // SAFETY: as above.
            let st = unsafe { &mut *st };
            if let Some(r) = row_ptr(row_of(st, st.current, Call::None as u32, 0)) {
                add_atomic(r, idx, by);
            }
        }
    }
}

/// Counts on `row` what hooks deferred during the call that returns now
/// (and the ledger's charges of it): each slot is read and then reduced by
/// what was read, atomically, so an add racing with this is kept for the
/// next call rather than lost.
#[inline(never)]
pub fn flush_deferred(st: &mut ThreadState, row: u32) {
    // SAFETY: plain and atomic accesses to this thread's live state.
    unsafe { core::ptr::write_volatile(&mut st.deferred_any, 0) };
    if st.rq_stamp != 0 {
        crate::block::settle_call(st, row);
    }
    let mut i = 0;
    while i < DEFERRED_SLOTS {
        // SAFETY: as above.
        let v = unsafe { core::ptr::read_volatile(&st.deferred[i]) };
        if v != 0 {
            // SAFETY: as above.
            unsafe {
                atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                    &mut st.deferred[i],
                    v.wrapping_neg(),
                )
            };
            let idx = DEFERRED_COUNTERS[i];
            if counter::is_ledgered(idx) {
                charge_row(row, idx, v);
            } else if let Some(r) = row_ptr(row) {
                add_atomic(r, idx, v);
            }
        }
        i += 1;
    }
}

/// Payload bytes a hook saw (`idx` a ledgered counter): charged to the row
/// the current task is in now (and to the ledger's tally of charges), or
/// deferred to the end of the syscall it is inside, or counted as
/// unattributed with the reason. `task` is None outside the traced
/// processes: a kernel thread's bytes are in scope (unattributed: it works
/// for anyone), another process's are not. With `in_syscall`, only a
/// traced thread inside a syscall is the bytes' owner (a transmit in user
/// mode ran from an interrupt).
#[inline(always)]
pub fn charge(task: Option<Task>, idx: usize, by: u64, in_syscall: bool) {
    let Some(task) = task else {
        if crate::kernel::current_is_kthread() {
            ledger_add(ledger::unattributed(idx, ledger::KERNEL_THREAD), by);
        }
        return;
    };
    if task.st.is_null() {
        // A thread that never made a syscall and copies payload is, in
        // practice, an io-wq worker running a ring's request: the request's
        // result counts those bytes already.
        if counter::is_observed_payload(idx) && crate::kernel::current_is_io_worker() {
            stat_add(stat::URING_WORKER_BYTES, by);
            ledger_add(ledger::unattributed(idx, ledger::IO_WORKER), by);
            return;
        }
        if in_syscall {
            ledger_add(ledger::unattributed(idx, ledger::NO_SYSCALL), by);
            return;
        }
    }
    match now(task, Regs::Current) {
        Now::User(_) if in_syscall => {
            ledger_add(ledger::unattributed(idx, ledger::NO_SYSCALL), by);
        }
        Now::User(r) | Now::Call(r) => charge_row(r, idx, by),
        Now::Defer(st) => defer(st, idx, by),
    }
}

/// `charge` to a known row.
#[inline(always)]
pub fn charge_row(row: u32, idx: usize, by: u64) {
    match row_ptr(row) {
        Some(r) => {
            ledger_add(ledger::charged(idx), by);
            add_atomic(r, idx, by);
        }
        None => ledger_add(ledger::unattributed(idx, ledger::NO_ROW), by),
    }
}

/// Adds to one ledger word.
#[inline(always)]
pub fn ledger_add(slot: usize, by: u64) {
    if let Some(p) = LEDGER.get_ptr_mut(slot as u32) {
        // SAFETY: a live per-CPU array slot; see `add_atomic` for why atomic.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, by) };
    }
}

#[inline(always)]
pub fn stat_add(idx: usize, by: u64) {
    if let Some(p) = STATS.get_ptr_mut(idx as u32) {
        // SAFETY: a live per-CPU array slot; see `add_atomic` for why atomic.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, by) };
    }
}

/// The event log's session: 0 while it is off; each time userspace turns
/// it on, a new non-zero number.
#[inline(always)]
pub fn events_session() -> u32 {
    CONFIG.get(config::EVENTS_ENABLED).map_or(0, |v| *v)
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
