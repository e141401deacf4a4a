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
//! A driver may refuse a request it was just issued (its ring is full):
//! the kernel requeues it (`block_rq_requeue`) and issues it again later,
//! and the issue tracepoint fires each time. The bytes move once, so a
//! requeued request is remembered as counted and its next issue adds
//! nothing.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, ProgramArray},
    programs::RawTracePointContext,
};
use zctrace_common::{Call, CounterKey, MAX_BLOCK_RQS, chain, counter, ledger, stat};

use crate::{
    kernel::{current_is_kthread, in_syscall, layout, read},
    state::{
        Task, charge, charge_row, current_regs_ptr, current_traced, ledger_add, row_for, row_key,
        row_key_now, row_of, stat_add,
    },
    syscalls::classify_in_flight,
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
        Some(task) => (key_now(ctx, task).ok_or(())?, TRACED),
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

/// The row key of the traced thread queueing a request. Inside a syscall
/// nothing has classified yet, `block_rq_insert_classify` classifies it
/// and hands the request back to `block_rq_insert`, which then finds it
/// classified.
#[inline(always)]
fn key_now(ctx: &RawTracePointContext, task: Task) -> Option<CounterKey> {
    if let Some(key) = row_key_now(task) {
        return Some(key);
    }
    // SAFETY: the chain holds raw tracepoint programs of this hook.
    unsafe { INSERT_CHAIN.tail_call(ctx, chain::CLASSIFY) };
    // Not reached unless the hand-over failed: the thread's current
    // method's row, and said.
    stat_add(stat::CHAIN_FAILED, 1);
    if task.st.is_null() {
        return None;
    }
    // SAFETY: this thread's live state.
    let st = unsafe { &mut *task.st };
    row_key(row_of(st, st.current, Call::None as u32, 0))
}

/// `block_rq_insert_classify`: classifies the call in flight of the thread
/// queueing a request (see `key_now`), then back to `block_rq_insert`.
pub fn try_insert_classify<const SPLIT: bool>(ctx: &RawTracePointContext) -> Result<(), ()> {
    let task = current_traced().ok_or(())?;
    if task.st.is_null() {
        return Ok(());
    }
    // SAFETY: this thread's live state.
    let st = unsafe { &mut *task.st };
    let regs = current_regs_ptr();
    if st.call == Call::None as u32 && in_syscall(regs) {
        classify_in_flight::<SPLIT>(st, &task, regs);
    }
    // SAFETY: as in `key_now`.
    unsafe { INSERT_CHAIN.tail_call(ctx, chain::BACK) };
    stat_add(stat::CHAIN_FAILED, 1);
    Ok(())
}

/// block_rq_insert's chain (see `key_now`).
#[map]
pub static INSERT_CHAIN: ProgramArray = ProgramArray::with_max_entries(chain::SLOTS, 0);

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
