//! `sys_exit`: each syscall of a traced thread classified (its call, fds
//! and method, from the arguments still in its saved registers), counted
//! with the bytes its result reports, and charged what hooks inside it
//! deferred. One program per syscall instead of two: an empty program on
//! sys_enter and sys_exit costs every process on the host about twice
//! what one on sys_exit alone does. `sys_enter` is attached only while the
//! event log is open, to time the calls it shows.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::ProgramArray,
    programs::BtfTracePointContext,
};
use zctrace_common::{
    Call, CallInfo, EnterMemo, Event, FLAG_EXEC, FLAG_FROM_MAPPING, FLAG_MAPS_FILE, FLAG_TIMED,
    FdKind, MEMO_NO_MAPPING, MEMO_STATE_FLAGS, MSG_ERRQUEUE, MSG_ZEROCOPY, Method, NO_COUNTER,
    NO_ROW, SendClass, ThreadState, chain, classify, counter, derived_counter, event_kind, ledger,
    memo_checks, stat,
};

use crate::{
    kernel::{
        PtRegs, call_of, changes_fds, current_comm, fd_info, is_exec, is_fork, layout, read_user,
        syscall_args, syscall_nr,
    },
    state::{
        Task, add, bump_epoch, emit, epoch, events_session, exit_task, flush_deferred, ledger_add,
        regs_addr, row_of, row_ptr, stat_add, traced_at,
    },
};

/// `sys_enter(struct pt_regs *regs, long id)`, attached only while the
/// event log is open: when a traced thread's call started, for the
/// duration the log shows.
pub fn try_enter(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let task = traced_at(regs_addr(ctx.arg::<*const PtRegs>(0))).ok_or(())?;
    let session = events_session();
    if task.st.is_null() || session == 0 {
        return Ok(());
    }
    // SAFETY: this thread's own state (see `try_exit`).
    unsafe {
        (*task.st).enter_ns = bpf_ktime_get_ns_safe();
        (*task.st).enter_session = session;
    }
    Ok(())
}

/// Starts classifying the call in flight of the thread whose saved
/// registers are `regs`: notes what the classification is made from (see
/// `ThreadState::in_flight_is`) and replays the thread's memo of it if it
/// has one (a loop of reads or writes of one fd). True: classified.
#[inline(always)]
pub fn replay_in_flight(st: &mut ThreadState, task: &Task, regs: *const PtRegs) -> bool {
    let nr = syscall_nr(regs) as u32;
    st.call_nr = nr.wrapping_add(1);
    let Some(a) = syscall_args(regs) else {
        st.call_fd = 0;
        return false;
    };
    st.call_fd = a[0] as u32;
    replay(st, &a, nr, epoch(task))
}

/// Classifies the call in flight of the thread whose saved registers are
/// `regs` (inside the call, or at its exit): its family, fds, method, flow
/// and row, stored in its state for sys_exit and the hooks inside the
/// call. A program of its own (`sys_exit_classify`, and one for the block
/// hook), reached by a tail call: verified apart from the counting, as the
/// two together exceed 6.1's million-instruction verifier budget.
///
/// Two forms of the same code (`SPLIT`): newer verifiers check it fastest
/// with every value that fans out into one path per call family or fd
/// kind stored and read back from the thread's state (one path with
/// unknown values); 6.1's verifier, which prunes less, needs the paths
/// split per family (it runs out of its million instructions on the other
/// form). The loader picks by kernel version and falls back to the other.
#[inline(always)]
pub fn classify_in_flight<const SPLIT: bool>(
    st: &mut ThreadState,
    task: &Task,
    regs: *const PtRegs,
) {
    if SPLIT && replay_in_flight(st, task, regs) {
        return;
    }
    let nr = syscall_nr(regs) as u64;
    st.call_nr = (nr as u32).wrapping_add(1);
    st.call_fd = first_arg(regs);
    let call = if SPLIT { call_of(nr) } else { family(st, nr) };
    let per_call = if is_exec(nr) { FLAG_EXEC } else { 0 };
    let (args, epoch) = if call.is_io() {
        (syscall_args(regs), epoch(task))
    } else {
        (None, 0)
    };
    let (info, args) = match args {
        Some(a) => (describe::<SPLIT>(call, &a, st, epoch), a),
        None => (CallInfo::new(call), [0; 6]),
    };
    // The description, stored and read back: what follows depends on the
    // call and its fds only through numbers the verifier knows nothing
    // about, and is checked once rather than once per call family and fd
    // kind (see the second read-back below).
    st.call = call as u32;
    st.in_kind = info.in_kind as u32;
    st.out_kind = info.out_kind as u32;
    st.flags = ThreadState::pack_flags(&info) | per_call;
    let (info, per_call) = reread_info(st);
    let call = info.call;
    let (before, before_src) = (st.current, st.src);
    let c = classify(
        &info,
        Method::from_u32(before).unwrap_or(Method::Other),
        FdKind::from_u32(u32::from(before_src)),
    );
    let (method, next) = (c.method, c.next);
    let flow = c.flow.src as u32 | (c.flow.dst as u32) << 8;
    match call {
        Call::Mmap if info.maps_file => st.mmap_len = args[1],
        // Unmapping any part of the remembered mapping forgets it, so a
        // later heap allocation at the same address is not mistaken for it.
        Call::Munmap if overlaps(st, args[0], args[1]) => {
            st.map_start = 0;
            st.map_len = 0;
        }
        _ => {}
    }
    let flags = ThreadState::pack_flags(&info);
    st.call = call as u32;
    st.method = method as u32;
    st.prev_current = before as u8;
    st.prev_src = before_src;
    st.current = next as u32;
    st.src = c.next_src as u8;
    st.flow = flow;
    // Read back from the map value: the verifier then sees numbers it
    // knows nothing about instead of one constant per classification, and
    // the paths below are checked once, not once per method (6.1's
    // verifier otherwise runs out of its million instructions).
    // SAFETY: plain loads of this thread's own state.
    let (method, next, flow, next_src) = unsafe {
        (
            core::ptr::read_volatile(&st.method),
            core::ptr::read_volatile(&st.current),
            core::ptr::read_volatile(&st.flow),
            core::ptr::read_volatile(&st.src),
        )
    };
    st.in_kind = info.in_kind as u32;
    st.out_kind = info.out_kind as u32;
    st.flags = flags | per_call;
    st.derived = derived_counter(&info).map_or(NO_COUNTER, |c| c as u32);
    // From here on only values read back from the thread's state: the
    // call, its flags and kinds are then numbers the verifier knows nothing
    // about, so the row lookup and the memo below are checked once, not
    // once per syscall family and classification.
    // SAFETY: plain loads of this thread's own state.
    let (call_v, flags_v, derived_v, in_v, out_v) = unsafe {
        (
            core::ptr::read_volatile(&st.call),
            core::ptr::read_volatile(&st.flags),
            core::ptr::read_volatile(&st.derived),
            core::ptr::read_volatile(&st.in_kind),
            core::ptr::read_volatile(&st.out_kind),
        )
    };
    st.row = row_of(st, method, call_v, flow);
    // Remember it when it may be replayed (see `replay`).
    let flags = flags_v & !(FLAG_TIMED | FLAG_EXEC);
    // A call made from the thread's file mapping is not (its buffer is
    // checked at each replay, and such a call would not pass).
    const NOT_REMEMBERED: u64 = u64::MAX;
    let checks = match Call::from_u32(call_v).and_then(memo_checks) {
        Some(c)
            if flags & FLAG_FROM_MAPPING == 0 && (c & MEMO_NO_MAPPING == 0 || st.map_len == 0) =>
        {
            u64::from(c)
        }
        _ => NOT_REMEMBERED,
    };
    // Read back, as above: one path through the store, not one per family.
    let checks = launder::<SPLIT>(&mut st.scratch[0], checks);
    if checks != NOT_REMEMBERED && st.row != NO_ROW {
        let checks = checks as u32;
        st.memo_store(EnterMemo {
            nr: (nr as u32).wrapping_add(1),
            fd: args[0] as u32,
            epoch,
            methods: EnterMemo::methods(before, call_v, method, next),
            flags: flags | checks,
            derived: derived_v,
            row: st.row,
            kinds: in_v | out_v << 8 | u32::from(before_src) << 16 | u32::from(next_src) << 24,
        });
    }
}

/// What `classify_in_flight` stores for an io_uring_enter (method
/// io_uring, no flow, the thread doing io_uring from now on: `classify`'s
/// case for it), without the describing and classifying code that the
/// request-submission hook would otherwise carry through the verifier.
/// That hook then sets the request's method and row.
#[inline(always)]
pub fn uring_enter_in_flight(st: &mut ThreadState, regs: *const PtRegs) {
    st.call_nr = (syscall_nr(regs) as u32).wrapping_add(1);
    st.call_fd = first_arg(regs);
    st.prev_current = st.current as u8;
    st.prev_src = st.src;
    st.current = Method::IoUring as u32;
    st.method = Method::IoUring as u32;
    st.flow = 0;
    st.flags = 0;
    st.derived = NO_COUNTER;
    st.in_kind = 0;
    st.out_kind = 0;
    st.call = Call::IoUringEnter as u32;
}

/// Replays the thread's memo of this call, when it holds one made under
/// the same conditions (see `EnterMemo`): the same syscall on the same fd
/// at the same fd epoch, from the same method, passing the entry's own
/// checks (`ThreadState::memo_applies`). Nothing here tells call families
/// apart: only calls whose classification can be replayed are remembered,
/// each with what it must check.
#[inline(always)]
fn replay(st: &mut ThreadState, a: &[u64; 6], nr: u32, epoch: u32) -> bool {
    let Some(m) = st.memo_find(nr, a[0] as u32, epoch) else {
        return false;
    };
    if !st.memo_applies(m, a) {
        return false;
    }
    let (methods, flags, derived, row, kinds) = (m.methods, m.flags, m.derived, m.row, m.kinds);
    let m = EnterMemo {
        methods,
        ..EnterMemo::EMPTY
    };
    st.call = m.call();
    st.method = m.method();
    st.prev_current = st.current as u8;
    st.prev_src = st.src;
    st.current = m.next();
    st.src = (kinds >> 24) as u8;
    st.flags = flags & MEMO_STATE_FLAGS;
    st.derived = derived;
    st.row = row;
    st.in_kind = kinds & 0xff;
    st.out_kind = (kinds >> 8) & 0xff;
    true
}

/// The call's first argument (its fd, for the calls zctrace classifies by
/// fd), as `ThreadState::in_flight_is` compares it.
#[inline(always)]
pub fn first_arg(regs: *const PtRegs) -> u32 {
    syscall_args(regs).map_or(0, |a| a[0] as u32)
}

/// The family of syscall `nr`, through the thread's state: `call_of` is a
/// chain of compares, each ending in a constant the verifier would follow
/// separately through everything after it; read back from the map value
/// it is one number the verifier knows nothing about.
#[inline(always)]
fn family(st: &mut ThreadState, nr: u64) -> Call {
    st.family = call_of(nr) as u32;
    // SAFETY: a plain load of this thread's own state.
    Call::from_u32(unsafe { core::ptr::read_volatile(&st.family) }).unwrap_or(Call::Other)
}

/// The row the thread's memo gives the call in flight, if it has one for
/// it, without classifying it (the thread's state is left as it is): what
/// a hook inside the call charges at once instead of deferring it.
#[inline(always)]
pub fn memo_row(st: &ThreadState, task: &Task, regs: *const PtRegs) -> Option<u32> {
    let nr = syscall_nr(regs) as u32;
    let a = syscall_args(regs)?;
    st.memo_find(nr, a[0] as u32, epoch(task))
        .filter(|m| st.memo_applies(m, &a))
        .map(|m| m.row)
}

/// The call in flight as stored in the thread's state (volatile loads, so
/// nothing the compiler knows of the stored values survives), and its
/// per-call flags.
#[inline(always)]
fn reread_info(st: &ThreadState) -> (CallInfo, u32) {
    // SAFETY: plain loads of this thread's own state.
    let (call, in_kind, out_kind, flags) = unsafe {
        (
            core::ptr::read_volatile(&st.call),
            core::ptr::read_volatile(&st.in_kind),
            core::ptr::read_volatile(&st.out_kind),
            core::ptr::read_volatile(&st.flags),
        )
    };
    let info = CallInfo {
        call: Call::from_u32(call).unwrap_or(Call::Other),
        in_kind: FdKind::from_u32(in_kind),
        out_kind: FdKind::from_u32(out_kind),
        direct: flags & 1 != 0,
        zerocopy: flags & 2 != 0,
        errqueue: flags & 4 != 0,
        maps_file: flags & FLAG_MAPS_FILE != 0,
        from_mapping: flags & FLAG_FROM_MAPPING != 0,
    };
    (info, flags & (FLAG_TIMED | FLAG_EXEC))
}

#[inline(always)]
fn overlaps(st: &ThreadState, addr: u64, len: u64) -> bool {
    st.map_len > 0
        && addr < st.map_start.saturating_add(st.map_len)
        && st.map_start < addr.saturating_add(len)
}

/// `sys_exit(struct pt_regs *regs, long ret)`: classifies the call that
/// returns (unless a hook inside it already did, for this very call), and
/// counts it on its row with the bytes its result reports and what the
/// hooks inside it deferred.
pub fn try_exit(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let (task, st, regs) = exiting_thread(ctx).ok_or(())?;
    let nr = syscall_nr(regs) as u64;
    let ret = ctx.arg::<i64>(1);
    // An exec on arm64 leaves no syscall number in the new program's
    // registers (nor does rt_sigreturn, whose spurious exec handling only
    // re-reads what did not change).
    let arm64_exec = cfg!(bpf_target_arch = "aarch64") && nr == u64::MAX && ret == 0;
    if changes_fds(nr) || arm64_exec {
        // After the call: the fds it changed are read afresh from now on.
        bump_epoch(&task);
    }
    if is_fork(nr) && ret == 0 {
        // A new thread leaving its parent's clone: not a call of its own.
        st.call = Call::None as u32;
        return Ok(());
    }
    if !st.in_flight_is(nr as u32, first_arg(regs)) {
        if st.call != Call::None as u32 {
            // Classified by a hook that ran after an earlier call had
            // returned: undo what it did to the thread's method.
            st.current = u32::from(st.prev_current);
            st.src = st.prev_src;
            st.call = Call::None as u32;
        }
        if !replay_in_flight(st, &task, regs) {
            // sys_exit_classify classifies it and comes back here, where
            // the call is then the one in flight.
            // SAFETY: the chain holds programs of this type and hook.
            unsafe { EXIT_CHAIN.tail_call(ctx, chain::CLASSIFY) };
            unclassified(st, nr);
        }
    }
    if arm64_exec {
        st.flags |= FLAG_EXEC;
    }
    let call = st.call;
    let info_call = Call::from_u32(call).unwrap_or(Call::Other);
    if ret <= 0 && info_call.returns_bytes() {
        // It moved nothing (end of file, EAGAIN, an error): not part of a
        // transfer, so not in its method's syscalls per chunk.
        nothing_moved(st, call);
    } else if let Some(r) = row_ptr(st.row) {
        counted(st, r, info_call, ret);
    }
    if info_call.is_io() {
        let session = events_session();
        if session != 0 {
            log_call(st, call, ret, session);
        }
    }
    end_call(st);
    Ok(())
}

/// `sys_exit_classify`: sys_exit's classification (see
/// `classify_in_flight`), then back to sys_exit to count the call.
pub fn try_exit_classify<const SPLIT: bool>(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let (task, st, regs) = exiting_thread(ctx).ok_or(())?;
    classify_in_flight::<SPLIT>(st, &task, regs);
    // SAFETY: as in `try_exit`.
    unsafe { EXIT_CHAIN.tail_call(ctx, chain::BACK) };
    // The way back failed: count the call here, plainly.
    stat_add(stat::CHAIN_FAILED, 1);
    if let Some(r) = row_ptr(st.row) {
        add(r, counter::SYSCALLS, 1);
    }
    end_call(st);
    Ok(())
}

/// The thread leaving a syscall, if its process is traced: its task, its
/// state and its saved registers. Thread state exists only for threads of
/// traced processes: one lookup both filters and finds (or creates) it.
#[inline(always)]
fn exiting_thread(
    ctx: &BtfTracePointContext,
) -> Option<(Task, &'static mut ThreadState, *const PtRegs)> {
    let regs = ctx.arg::<*const PtRegs>(0);
    let task = exit_task(regs_addr(regs))?;
    if task.st.is_null() {
        return None;
    }
    // SAFETY: this thread's own state: only its own programs write it
    // (softirqs on its CPU add to its deferred counts atomically), and
    // they do not run concurrently.
    Some((task, unsafe { &mut *task.st }, regs))
}

/// The end of a call: what hooks deferred during it counted on its row,
/// and the thread back in user mode.
#[inline(always)]
fn end_call(st: &mut ThreadState) {
    if st.deferred_any != 0 {
        flush_deferred(st, st.row);
    }
    st.call = Call::None as u32;
    st.call_nr = 0;
    st.send_class = SendClass::Unknown as u32;
}

/// A call whose classification could not be reached (the tail call
/// failed, which the loader's checks make a bug, not a state of the
/// kernel): counted as method other of its family, and said.
#[inline(never)]
fn unclassified(st: &mut ThreadState, nr: u64) {
    stat_add(stat::CHAIN_FAILED, 1);
    let call = call_of(nr) as u32;
    st.call = call;
    st.method = Method::Other as u32;
    st.prev_current = st.current as u8;
    st.prev_src = st.src;
    st.flags = 0;
    st.derived = NO_COUNTER;
    st.row = row_of(st, Method::Other as u32, call, 0);
}

/// The programs sys_exit and its classifier hand each other over to
/// (userspace fills it before attaching sys_exit).
#[map]
pub static EXIT_CHAIN: ProgramArray = ProgramArray::with_max_entries(chain::SLOTS, 0);

/// The call's line in the event log, timed from sys_enter when that ran
/// for it.
#[inline(never)]
fn log_call(st: &mut ThreadState, call: u32, ret: i64, session: u32) {
    let now = bpf_ktime_get_ns_safe();
    // 0: not timed (the call began before sys_enter was attached).
    let dur_ns = if st.enter_ns != 0 && st.enter_session == session {
        now.saturating_sub(st.enter_ns).max(1)
    } else {
        0
    };
    st.enter_ns = 0;
    emit(&Event {
        ts_ns: now,
        dur_ns,
        ret,
        tgid: st.tgid,
        tid: st.tid,
        kind: event_kind::SYSCALL,
        method: st.method,
        call,
        in_kind: if st.in_kind != 0 {
            st.in_kind
        } else {
            st.out_kind
        },
        comm: current_comm(),
    });
}

/// Counts a call on its row, with the bytes its result reports.
#[inline(always)]
fn counted(st: &mut ThreadState, r: *mut zctrace_common::Counters, call: Call, ret: i64) {
    add(r, counter::SYSCALLS, 1);
    if st.flags & (FLAG_EXEC | FLAG_MAPS_FILE) != 0 {
        after_exec_or_mmap(st, ret);
    }
    if ret > 0 && call.returns_bytes() {
        let bytes = ret as u64;
        add(r, counter::IO_BYTES, bytes);
        if st.derived != NO_COUNTER {
            add(r, st.derived as usize, bytes);
        }
        if let Some(c) = SendClass::from_u32(st.send_class).observed_counter() {
            // What tcp_sendmsg_locked saw, by the call's result: charged
            // to the call's row, which always exists.
            ledger_add(ledger::charged(c), bytes);
            add(r, c, bytes);
        }
    }
}

/// A byte-moving call that moved nothing: counted as a syscall of the
/// process's bookkeeping (method other, no flow), and the thread's method
/// and data source are put back as they were before it.
#[inline(never)]
fn nothing_moved(st: &mut ThreadState, call: u32) {
    st.current = u32::from(st.prev_current);
    st.src = st.prev_src;
    let row = row_of(st, Method::Other as u32, call, 0);
    if let Some(r) = row_ptr(row) {
        add(r, counter::SYSCALLS, 1);
    }
}

/// The rare tails of sys_exit, out of the hot path.
#[inline(never)]
fn after_exec_or_mmap(st: &mut ThreadState, ret: i64) {
    if st.flags & FLAG_EXEC != 0 {
        // An exec from a secondary thread takes over the leader's id, and
        // the new program's rows are the same thread's: re-read the ids.
        let pid_tgid = bpf_get_current_pid_tgid();
        st.tgid = (pid_tgid >> 32) as u32;
        st.tid = pid_tgid as u32;
        st.forget_rows();
        if ret == 0 {
            // Userspace learns the new name now, not by reading /proc.
            emit(&Event {
                ts_ns: 0,
                dur_ns: 0,
                ret: 0,
                tgid: st.tgid,
                tid: st.tid,
                kind: event_kind::EXEC,
                method: 0,
                call: 0,
                in_kind: 0,
                comm: current_comm(),
            });
        }
    } else if !(-4095..0).contains(&ret) {
        // A successful mmap of a file returns the address (errors are
        // -4095..-1).
        st.map_start = ret as u64;
        st.map_len = st.mmap_len;
    }
}

/// `v`, stored in `slot` of the thread's state and read back (unless
/// `SPLIT`: see `classify_in_flight`): the verifier then knows nothing of
/// it, and the paths that computed it meet.
#[inline(always)]
fn launder<const SPLIT: bool>(slot: &mut u64, v: u64) -> u64 {
    if SPLIT {
        return v;
    }
    *slot = v;
    // SAFETY: a plain load of this thread's own state.
    unsafe { core::ptr::read_volatile(slot) }
}

/// An fd's kind and flags: `cached_fd_info` inline in the split form, else
/// out of line (checked once per caller state, not once per fd and call
/// family).
#[inline(always)]
fn fd_kind<const SPLIT: bool>(st: &mut ThreadState, fd: u64, epoch: u32) -> (FdKind, u32) {
    if SPLIT {
        cached_fd_info(st, fd, epoch)
    } else {
        cached_fd_info_outlined(st, fd, epoch)
    }
}

#[inline(never)]
fn cached_fd_info_outlined(st: &mut ThreadState, fd: u64, epoch: u32) -> (FdKind, u32) {
    cached_fd_info(st, fd, epoch)
}

/// `fd_info` through the thread's two-entry cache (see ThreadState).
#[inline(always)]
fn cached_fd_info(st: &mut ThreadState, fd: u64, epoch: u32) -> (FdKind, u32) {
    let fd32 = fd as u32;
    for i in 0..2 {
        if epoch != 0 && st.fd_cache_fd[i] == fd32 && st.fd_cache_epoch[i] == epoch {
            return (FdKind::from_u32(st.fd_cache_kind[i]), st.fd_cache_flags[i]);
        }
    }
    let (kind, flags) = fd_info(fd);
    if epoch != 0 && !matches!(kind, FdKind::Unknown) {
        // Replace a stale slot if there is one, else the older (slot 1 is
        // refilled from slot 0, so slot 0 always holds the newest).
        let i = usize::from(st.fd_cache_epoch[0] == epoch && st.fd_cache_epoch[1] != epoch);
        if i == 0 && st.fd_cache_epoch[0] == epoch {
            st.fd_cache_fd[1] = st.fd_cache_fd[0];
            st.fd_cache_epoch[1] = st.fd_cache_epoch[0];
            st.fd_cache_kind[1] = st.fd_cache_kind[0];
            st.fd_cache_flags[1] = st.fd_cache_flags[0];
        }
        st.fd_cache_fd[i] = fd32;
        st.fd_cache_epoch[i] = epoch;
        st.fd_cache_kind[i] = kind as u32;
        st.fd_cache_flags[i] = flags;
    }
    (kind, flags)
}

#[inline(always)]
fn bpf_ktime_get_ns_safe() -> u64 {
    // SAFETY: the helper takes no arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Reads the arguments that matter for `call`: its fds' kinds and flags,
/// and whether written data comes from the thread's file mapping.
#[inline(always)]
fn describe<const SPLIT: bool>(
    call: Call,
    a: &[u64; 6],
    st: &mut ThreadState,
    epoch: u32,
) -> CallInfo {
    let mut info = CallInfo::new(call);
    let o_direct = layout!(o_direct);
    // (fd data comes from, fd data goes to, send/recv flags)
    const NONE: u64 = u64::MAX;
    let (fd_in, fd_out, msg_flags) = match call {
        Call::Read | Call::Pread | Call::Readv => (a[0], NONE, 0),
        Call::Recvfrom => (a[0], NONE, a[3]),
        Call::Recvmsg => (a[0], NONE, a[2]),
        Call::Write | Call::Pwrite | Call::Writev | Call::Vmsplice => (NONE, a[0], 0),
        Call::Sendto => (NONE, a[0], a[3]),
        Call::Sendmsg => (NONE, a[0], a[2]),
        Call::Sendfile => (a[1], a[0], 0),
        Call::Splice | Call::CopyFileRange => (a[0], a[2], 0),
        Call::Tee => (a[0], a[1], 0),
        Call::Mmap => (a[4], NONE, 0),
        _ => (NONE, NONE, 0),
    };
    // Stored and read back: the fd lookups below are then checked once,
    // not once per call family.
    let fd_in = launder::<SPLIT>(&mut st.scratch[0], fd_in);
    let fd_out = launder::<SPLIT>(&mut st.scratch[1], fd_out);
    let msg_flags = launder::<SPLIT>(&mut st.scratch[2], msg_flags) as u32;
    let fd_in = (fd_in != NONE).then_some(fd_in);
    let fd_out = (fd_out != NONE).then_some(fd_out);
    // Each fd's kind and flags are read back from the thread's state too:
    // a kind is a constant on each path out of the lookup, and the two
    // lookups' paths would multiply.
    if let Some(fd) = fd_in {
        let (kind, flags) = fd_kind::<SPLIT>(st, fd, epoch);
        let kind = launder::<SPLIT>(&mut st.scratch[0], u64::from(kind as u32)) as u32;
        let flags = launder::<SPLIT>(&mut st.scratch[1], u64::from(flags)) as u32;
        info.in_kind = FdKind::from_u32(kind);
        info.direct |= kind == FdKind::File as u32 && flags & o_direct != 0;
    }
    if let Some(fd) = fd_out {
        let (kind, flags) = fd_kind::<SPLIT>(st, fd, epoch);
        let kind = launder::<SPLIT>(&mut st.scratch[0], u64::from(kind as u32)) as u32;
        let flags = launder::<SPLIT>(&mut st.scratch[1], u64::from(flags)) as u32;
        info.out_kind = FdKind::from_u32(kind);
        info.direct |= kind == FdKind::File as u32 && flags & o_direct != 0;
    }
    info.zerocopy = msg_flags & MSG_ZEROCOPY != 0;
    info.errqueue = msg_flags & MSG_ERRQUEUE != 0;
    if matches!(call, Call::Mmap) {
        // A shared, non-executable, non-fixed mapping of a regular file is
        // a file mapped to be read as data (what mmap+write does); the
        // loader's library and locale mappings are private, executable or
        // fixed, and are left out.
        const PROT_EXEC: u64 = 0x4;
        const MAP_SHARED: u64 = 0x1;
        const MAP_FIXED: u64 = 0x10;
        info.maps_file = matches!(info.in_kind, FdKind::File)
            && a[2] & PROT_EXEC == 0
            && a[3] & MAP_SHARED != 0
            && a[3] & MAP_FIXED == 0;
        info.in_kind = FdKind::Unknown;
        info.direct = false;
    }
    if st.map_len > 0 {
        let buf = match call {
            Call::Write | Call::Pwrite | Call::Sendto => Some(a[1]),
            // First iovec: writev(fd, iov, n); sendmsg(fd, msg, flags) with
            // msg->msg_iov at offset 16 of the 64-bit uapi struct msghdr.
            Call::Writev => read_user::<u64>(a[1]),
            Call::Sendmsg => read_user::<u64>(a[1] + 16).and_then(read_user::<u64>),
            _ => None,
        };
        info.from_mapping = buf.is_some_and(|b| st.in_mapping(b));
    }
    info
}
