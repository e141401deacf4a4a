//! io_uring: each request followed from submission to completion by its
//! request pointer (`user_data` is the program's and need not be unique),
//! and charged to the submitting thread, its process and its opcode's
//! method. A request may run inline in `io_uring_enter`, as task work or on
//! an io-wq worker; its completion carries its result, which is the bytes
//! moved, as a syscall's return value is.

use aya_ebpf::{macros::map, maps::HashMap, programs::RawTracePointContext};
use zctrace_common::{
    Call, CounterKey, FdKind, IORING_CQE_F_MORE, IORING_CQE_F_NOTIF, IORING_NOTIF_USAGE_ZC_COPIED,
    MAX_URING_REQS, Method, counter, ledger, stat, uring_counter, uring_flow, uring_method,
};

use crate::{
    kernel::{call_of, file_info, in_syscall, layout, read, syscall_nr},
    state::{
        add_atomic, current_regs_ptr, current_traced, ledger_add, row_for, row_of, row_ptr,
        row_tid, stat_add,
    },
    syscalls::uring_enter_in_flight,
};

/// Who submitted a request in flight, and what it is.
#[repr(C)]
#[derive(Clone, Copy)]
struct Owner {
    tgid: u32,
    tid: u32,
    opcode: u32,
    /// Non-zero: this is a zero-copy send's notification.
    due: u32,
}

/// Requests in flight of traced processes, by `struct io_kiocb *`.
#[map]
static URING_REQS: HashMap<u64, Owner> = HashMap::with_max_entries(MAX_URING_REQS, 0);

/// `io_uring_submit_req(req)` (`io_uring_submit_sqe` before 6.3, whose
/// request LAYOUT says where to find): in the submitting thread (or the
/// ring's SQPOLL thread), before the request is issued.
pub fn try_submit(ctx: &RawTracePointContext) -> Result<(), ()> {
    let task = current_traced().ok_or(())?;
    let req = if layout!(uring_submit_req_arg) == 1 {
        ctx.arg::<u64>(1)
    } else {
        ctx.arg::<u64>(0)
    };
    let opcode: u8 = read(req, layout!(kiocb_opcode)).ok_or(())?;
    let method = uring_method(opcode) as u32;
    if !task.st.is_null() {
        // SAFETY: this thread's own state (see syscalls::try_enter).
        let st = unsafe { &mut *task.st };
        // What the hooks see while the request is issued inline, and the
        // io_uring_enter itself, belong to the request's method.
        if st.call == Call::None as u32 {
            let regs = current_regs_ptr();
            if in_syscall(regs) && call_of(syscall_nr(regs) as u64) == Call::IoUringEnter {
                uring_enter_in_flight(st, regs);
            }
        }
        if st.call == Call::IoUringEnter as u32 {
            st.method = method;
            st.row = row_of(st, method, Call::IoUringEnter as u32, 0);
        }
    }
    let owner = Owner {
        tgid: task.tgid,
        tid: task.tid,
        opcode: opcode as u32,
        due: 0,
    };
    if URING_REQS.insert(req, owner, 0).is_err() {
        stat_add(stat::URING_MAP_FULL, 1);
    }
    // A zero-copy send's notification is a request of its own, allocated
    // when the send was prepared and never submitted: remember it too.
    if method == Method::UringSendZc as u32
        && let Some(notif) = read::<u64>(req, layout!(kiocb_notif))
        && notif != 0
        && URING_REQS
            .insert(notif, Owner { due: 1, ..owner }, 0)
            .is_err()
    {
        stat_add(stat::URING_MAP_FULL, 1);
    }
    Ok(())
}

/// `io_uring_complete`: (ctx, req, cqe) on newer kernels, (ctx, req,
/// user_data, res, cflags, ...) on older ones (LAYOUT says which).
pub fn try_complete(ctx: &RawTracePointContext) -> Result<(), ()> {
    let req = ctx.arg::<u64>(1);
    let (res, cflags) = if layout!(uring_complete_cqe) != 0 {
        // struct io_uring_cqe (uapi): u64 user_data, s32 res, u32 flags.
        let cqe = ctx.arg::<u64>(2);
        (
            read::<i32>(cqe, 8).ok_or(())?,
            read::<u32>(cqe, 12).ok_or(())?,
        )
    } else {
        (ctx.arg::<u64>(3) as i32, ctx.arg::<u64>(4) as u32)
    };
    // SAFETY: a copy of the value is taken at once.
    let Some(owner) = (unsafe { URING_REQS.get(req) }).copied() else {
        // Submitted before zctrace attached (or not remembered: the map
        // was full), by a traced process: said, not dropped.
        if current_traced().is_some() {
            stat_add(stat::URING_UNATTRIBUTED_OPS, 1);
            if res > 0 && cflags & IORING_CQE_F_NOTIF == 0 {
                stat_add(stat::URING_UNATTRIBUTED_BYTES, res as u64);
                ledger_add(
                    ledger::unattributed(ledger::URING_BYTES, ledger::URING_UNMATCHED),
                    res as u64,
                );
            }
        }
        return Ok(());
    };
    if owner.due != 0 || cflags & IORING_CQE_F_NOTIF != 0 {
        let _ = URING_REQS.remove(req);
        return notification(owner, res);
    }
    let opcode = owner.opcode as u8;
    let method = uring_method(opcode);
    // A multishot request completes many times, flagged "more": it stays.
    // (A zero-copy send flagged "more" is done: its notification is
    // another request.)
    if cflags & IORING_CQE_F_MORE == 0 || matches!(method, Method::UringSendZc) {
        let _ = URING_REQS.remove(req);
    }
    if res <= 0 {
        let row = row_ptr(row_for(&key(owner, method, 0))).ok_or(())?;
        add_atomic(row, counter::URING_OPS, 1);
        return Ok(());
    }
    // The request's file names the flow, and its kind and flags decide the
    // counter of O_DIRECT reads and writes and of a splice into a file.
    let (kind, flags) = read::<u64>(req, layout!(kiocb_file))
        .and_then(file_info)
        .unwrap_or((FdKind::Unknown, 0));
    let direct = flags & layout!(o_direct) != 0;
    let flow = uring_flow(opcode, kind);
    let row = row_ptr(row_for(&key(
        owner,
        method,
        flow.src as u32 | (flow.dst as u32) << 8,
    )))
    .ok_or(())?;
    // Completions can be posted from another thread (an io-wq worker) or
    // from interrupt context: atomic adds (see state::add_atomic).
    add_atomic(row, counter::URING_OPS, 1);
    let bytes = res as u64;
    ledger_add(ledger::charged(ledger::URING_BYTES), bytes);
    add_atomic(row, counter::IO_BYTES, bytes);
    if let Some(c) = uring_counter(opcode, kind, direct) {
        add_atomic(row, c, bytes);
    }
    Ok(())
}

/// The row of a request's completions: its submitter's process (and
/// thread, where rows are per thread), its method, its flow.
#[inline(always)]
fn key(owner: Owner, method: Method, flow: u32) -> CounterKey {
    CounterKey {
        tgid: owner.tgid,
        tid: row_tid(owner.tid),
        method: method as u32,
        call: Call::IoUringEnter as u32,
        src: (flow & 0xff) as u16,
        dst: (flow >> 8) as u16,
    }
}

/// A zero-copy send's notification: the pinned pages are free again; its
/// result says whether the kernel had to copy them after all (when the
/// program asked for usage reports).
#[inline(never)]
fn notification(owner: Owner, res: i32) -> Result<(), ()> {
    let row = row_ptr(row_for(&key(owner, Method::UringSendZc, 0))).ok_or(())?;
    add_atomic(row, counter::URING_ZC_NOTIFS, 1);
    if res as u32 & IORING_NOTIF_USAGE_ZC_COPIED != 0 {
        add_atomic(row, counter::URING_ZC_COPIED, 1);
    }
    Ok(())
}

/// `io_uring_cqe_overflow(ctx, user_data, res, cflags, ocqe)`: a completion
/// that found the completion queue full and went to the overflow list. The
/// io_uring_complete tracepoint never reports it, and this one does not say
/// which request it was: it is counted as unattributed, never dropped.
pub fn try_overflow(ctx: &RawTracePointContext) -> Result<(), ()> {
    current_traced().ok_or(())?;
    stat_add(stat::URING_OVERFLOW_OPS, 1);
    let res = ctx.arg::<u64>(2) as i32;
    let cflags = ctx.arg::<u64>(3) as u32;
    if res > 0 && cflags & IORING_CQE_F_NOTIF == 0 {
        stat_add(stat::URING_OVERFLOW_BYTES, res as u64);
        ledger_add(
            ledger::unattributed(ledger::URING_BYTES, ledger::URING_OVERFLOW),
            res as u64,
        );
    }
    Ok(())
}
