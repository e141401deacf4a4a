//! Block requests: device DMA, charged to the thread that queued them,
//! once per request.
//!
//! A request is issued to the device either at once, by the thread that
//! submitted it, or later: an I/O scheduler (mq-deadline, bfq, kyber)
//! holds it until the device has room, and a kernel worker (kblockd) or
//! whichever thread runs the queue next issues it then. So the thread that
//! inserted a request into the queue is remembered (`block_rq_insert`) and
//! charged at issue, whoever issues it; so is an untraced process's, whose
//! request is then out of scope even when a kernel thread issues it, and a
//! kernel thread's (writeback), unattributed in the ledger even when a
//! traced thread issues it. A request issued without an insert is charged
//! to the issuing thread.
//!
//! A request queued inside a syscall nothing has classified yet (the call
//! is classified when it returns) waits for that call's row: it is tied
//! to an accumulator of the call (`CALL_RQS`), which its issue adds its
//! bytes to and the call's return settles on the call's row, whichever
//! comes second charging them (atomically, so once).
//!
//! A driver may refuse a request it was just issued (its ring is full):
//! the kernel requeues it (`block_rq_requeue`) and issues it again later,
//! and the issue tracepoint fires each time. The bytes move once, so a
//! requeued request is remembered as counted and its next issue adds
//! nothing.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, macros::map, maps::LruHashMap,
    programs::RawTracePointContext,
};
use zctrace_common::{CounterKey, MAX_BLOCK_RQS, MAX_CALL_RQS, ThreadState, counter, ledger};

use crate::{
    kernel::{current_is_kthread, layout, read},
    state::{
        Now, Regs, Task, charge, charge_row, current_traced, fetch_add, ledger_add, now, row_for,
        row_key, swap,
    },
};

/// `REQ_OP_MASK`, `REQ_OP_READ`, `REQ_OP_WRITE` (include/linux/blk_types.h).
const REQ_OP_MASK: u32 = 0xff;
const REQ_OP_READ: u32 = 0;
const REQ_OP_WRITE: u32 = 1;

/// [`Pending::state`]: queued by a traced thread, charged to `key`.
const TRACED: u32 = 0;
/// Queued by a process zctrace does not trace: out of scope.
const UNTRACED: u32 = 1;
/// Issued and counted once already, then requeued by the driver.
const COUNTED: u32 = 2;
/// Queued by a kernel thread (writeback, a requeue worker) that zctrace
/// does not trace: in scope, nobody's (the ledger's kernel_thread).
const KERNEL: u32 = 3;
/// Queued by a traced thread inside a call nothing had classified yet:
/// `key` names the call's accumulator in `CALL_RQS` (see [`call_id`]).
const IN_CALL: u32 = 4;

/// What is known of a request between insert (or requeue) and issue.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    /// The row the inserting thread was in (its syscall, its method).
    key: CounterKey,
    state: u32,
    /// `request.start_time_ns` when remembered: a request structure is
    /// reused for the next request once done, and one that was queued but
    /// never issued itself (merged into another) leaves its entry behind;
    /// a different start time says the entry is not this request's.
    born: u64,
}

/// Requests between insert and issue, by `struct request *`. LRU: an entry
/// never issued is pushed out by newer ones (whose requests then fall back
/// to the issuing thread, and are counted as unattributed if that is a
/// kernel thread: said, not lost).
#[map]
static BLOCK_RQS: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(MAX_BLOCK_RQS, 0);

/// The ledgered counter of a request's operation, if it moves payload.
#[inline(always)]
fn payload_counter(rq: u64) -> Option<usize> {
    let op: u32 = read::<u32>(rq, layout!(request_cmd_flags))? & REQ_OP_MASK;
    match op {
        REQ_OP_READ => Some(counter::DISK_READ_BYTES),
        REQ_OP_WRITE => Some(counter::DISK_WRITE_BYTES),
        _ => None,
    }
}

#[inline(always)]
fn born(rq: u64) -> Option<u64> {
    read(rq, layout!(request_start_time_ns))
}

/// This request's entry, if the entry is this use of the structure's.
#[inline(always)]
fn pending(rq: u64) -> Option<Pending> {
    // SAFETY: a copy of the value is taken at once.
    let p = unsafe { BLOCK_RQS.get(rq) }.copied()?;
    (born(rq) == Some(p.born)).then_some(p)
}

/// `block_rq_insert(rq)`: in the context of the thread queueing it (or of
/// the kernel worker putting a requeued request back).
pub fn try_rq_insert(ctx: &RawTracePointContext) -> Result<(), ()> {
    let rq = ctx.arg::<u64>(0);
    payload_counter(rq).ok_or(())?;
    let (key, state) = match current_traced() {
        Some(task) => key_now(task).ok_or(())?,
        None if current_is_kthread() => (CounterKey::OVERFLOW, KERNEL),
        None => (CounterKey::OVERFLOW, UNTRACED),
    };
    if pending(rq).is_some_and(|p| p.state == COUNTED) {
        return Ok(());
    }
    let born = born(rq).ok_or(())?;
    BLOCK_RQS
        .insert(rq, Pending { key, state, born }, 0)
        .map_err(|_| ())
}

/// Where a request the traced `task` queues now is to be charged: the
/// key of the row it is in (kept rather than the row's index, which
/// userspace may give to another key before the issue), or, inside a call
/// nothing has classified yet, the call's accumulator.
#[inline(always)]
fn key_now(task: Task) -> Option<(CounterKey, u32)> {
    match now(task, Regs::Current) {
        Now::User(r) | Now::Call(r) => Some((row_key(r)?, TRACED)),
        // SAFETY: this thread's live state, in its own context.
        Now::Defer(st) => Some((open_call(unsafe { &mut *st })?, IN_CALL)),
    }
}

/// A call's requests waiting for its row: the bytes issued so far, by
/// direction, and, once the call has returned (`closed`), its row's key.
#[repr(C)]
#[derive(Clone, Copy)]
struct CallRqs {
    bytes: [u64; 2],
    closed: u64,
    key: CounterKey,
    _pad: u32,
}

/// The accumulators of calls with such requests, by [`call_id`].
#[map]
static CALL_RQS: LruHashMap<u64, CallRqs> = LruHashMap::with_max_entries(MAX_CALL_RQS, 0);

/// An accumulator's id: the stamp its call took, the low bits of the
/// clock when its first request was queued (not the thread id, which an
/// exec from a secondary thread changes mid-call). While a call's entry
/// is in the map, another call that takes the same stamp cannot share it:
/// that call's insert fails (`BPF_NOEXIST`) and its requests fall back to
/// the issuing thread.
#[inline(always)]
fn call_id(stamp: u32) -> u64 {
    u64::from(stamp)
}

/// [`IN_CALL`]'s `key` field carries the call's stamp (in `tid`).
#[inline(always)]
fn in_call_key(stamp: u32) -> CounterKey {
    CounterKey {
        tid: stamp,
        ..CounterKey::OVERFLOW
    }
}

/// The accumulator of `st`'s call in flight (opened with its first
/// request), as the key its requests remember.
#[inline(always)]
fn open_call(st: &mut ThreadState) -> Option<CounterKey> {
    if st.rq_stamp == 0 {
        // SAFETY: a plain helper call.
        let stamp = (unsafe { bpf_ktime_get_ns() } as u32) | 1;
        let acc = CallRqs {
            bytes: [0; 2],
            closed: 0,
            key: CounterKey::OVERFLOW,
            _pad: 0,
        };
        CALL_RQS
            .insert(call_id(stamp), acc, u64::from(BPF_NOEXIST))
            .ok()?;
        st.rq_stamp = stamp;
        // The call's return settles it with what hooks deferred.
        st.deferred_any = 1;
    }
    Some(in_call_key(st.rq_stamp))
}

/// The slot of an accumulator's bytes for a payload counter.
#[inline(always)]
fn direction(idx: usize) -> usize {
    usize::from(idx == counter::DISK_WRITE_BYTES)
}

/// Takes what `acc` holds of counter `idx` (atomically: the issue and the
/// call's return may both try) and charges it to `row`.
#[inline(always)]
fn take(acc: *mut CallRqs, idx: usize, row: u32) {
    // SAFETY: a live map value; the swap is atomic.
    let v = swap(unsafe { &raw mut (*acc).bytes[direction(idx)] }, 0);
    if v != 0 {
        charge_row(row, idx, v);
    }
}

/// The issue of a request queued in a call nothing had classified: its
/// bytes go to the call's accumulator, and are charged at once if the call
/// has returned meanwhile.
#[inline(always)]
fn issue_in_call(key: &CounterKey, idx: usize, len: u64) {
    let Some(acc) = CALL_RQS.get_ptr_mut(call_id(key.tid)) else {
        // Pushed out of the map: nobody's, and said.
        ledger_add(ledger::unattributed(idx, ledger::NO_ROW), len);
        return;
    };
    // SAFETY: a live map value; the add is atomic and fully ordered, so
    // `closed` is read after it.
    fetch_add(unsafe { &raw mut (*acc).bytes[direction(idx)] }, len);
    // SAFETY: as above.
    if unsafe { core::ptr::read_volatile(&(*acc).closed) } != 0 {
        // SAFETY: written before `closed` was set.
        let key = unsafe { core::ptr::read_volatile(&(*acc).key) };
        take(acc, idx, row_for(&key));
    }
}

/// The call `st` returns from (or exits in) has its row, `row`: the bytes
/// its requests issued so far are charged there, and later issues are
/// charged there at once.
#[inline(never)]
pub fn settle_call(st: &mut ThreadState, row: u32) {
    let id = call_id(st.rq_stamp);
    st.rq_stamp = 0;
    let Some(acc) = CALL_RQS.get_ptr_mut(id) else {
        return;
    };
    if let Some(key) = row_key(row) {
        // SAFETY: a live map value; `closed` is set by a fully ordered
        // swap after the key is written.
        unsafe { core::ptr::write_volatile(&raw mut (*acc).key, key) };
    }
    // SAFETY: as above.
    swap(unsafe { &raw mut (*acc).closed }, 1);
    take(acc, counter::DISK_READ_BYTES, row);
    take(acc, counter::DISK_WRITE_BYTES, row);
}

/// `block_rq_requeue(rq)`: the request goes back to the queue after its
/// issue was counted.
pub fn try_rq_requeue(ctx: &RawTracePointContext) -> Result<(), ()> {
    let rq = ctx.arg::<u64>(0);
    payload_counter(rq).ok_or(())?;
    let p = Pending {
        key: CounterKey::OVERFLOW,
        state: COUNTED,
        born: born(rq).ok_or(())?,
    };
    BLOCK_RQS.insert(rq, p, 0).map_err(|_| ())
}

/// `block_rq_issue(rq)`.
pub fn try_rq_issue(ctx: &RawTracePointContext) -> Result<(), ()> {
    let rq = ctx.arg::<u64>(0);
    let len: u32 = read(rq, layout!(request_data_len)).ok_or(())?;
    let idx = payload_counter(rq).ok_or(())?;
    if let Some(p) = pending(rq) {
        let _ = BLOCK_RQS.remove(rq);
        match p.state {
            TRACED => charge_row(row_for(&p.key), idx, u64::from(len)),
            IN_CALL => issue_in_call(&p.key, idx, u64::from(len)),
            KERNEL => ledger_add(
                ledger::unattributed(idx, ledger::KERNEL_THREAD),
                u64::from(len),
            ),
            // UNTRACED: another process's; COUNTED: counted at its first
            // issue.
            _ => {}
        }
        return Ok(());
    }
    charge(current_traced(), idx, u64::from(len), false);
    Ok(())
}
