//! `sys_enter` / `sys_exit`: the in-flight syscall per thread, its method,
//! syscall counts and the copies derived from each call's result.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::BtfTracePointContext,
};
use zctrace_common::{
    Call, CallInfo, EnterMemo, Event, FLAG_EXEC, FLAG_FROM_MAPPING, FLAG_MAPS_FILE, FLAG_TIMED,
    FdKind, MSG_ERRQUEUE, MSG_ZEROCOPY, Method, NO_COUNTER, NO_ROW, SendClass, ThreadState,
    classify, counter, derived_counter, event_kind, ledger,
};

use crate::{
    kernel::{
        PtRegs, call_of, changes_fds, current_comm, fd_info, is_exec, layout, read_user,
        syscall_args,
    },
    state::{
        add, bump_epoch, emit, enter_task, epoch, events_enabled, exit_state, ledger_add,
        regs_addr, row_of, row_ptr,
    },
};

/// `sys_enter(struct pt_regs *regs, long id)`, as a BTF tracepoint: the
/// saved registers are read directly, without a probe-read helper.
pub fn try_enter(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let regs = ctx.arg::<*const PtRegs>(0);
    let task = enter_task(regs_addr(regs)).ok_or(())?;
    let nr = ctx.arg::<u64>(1);
    if changes_fds(nr) {
        bump_epoch(&task);
    }
    let call = call_of(nr);
    // SAFETY: `st` is this thread's state; only this thread's own
    // programs write it, and they do not run concurrently.
    let st = unsafe { &mut *task.st };
    // The clock only for the event log's durations (two helper calls a
    // syscall otherwise spent on a number nobody looks at).
    let timed = call.is_io() && events_enabled();
    if timed {
        st.enter_ns = bpf_ktime_get_ns_safe();
    }
    let per_call = if timed { FLAG_TIMED } else { 0 } | if is_exec(nr) { FLAG_EXEC } else { 0 };
    // The arguments and the fd epoch, read once, for the replay and the
    // full description alike.
    let (args, epoch) = if call.is_io() {
        (syscall_args(regs), epoch(&task))
    } else {
        (None, 0)
    };
    if let Some(a) = &args
        && replay(st, call, a, nr as u32, epoch, per_call)
    {
        return Ok(());
    }
    let (info, args) = match args {
        Some(a) => (describe(call, &a, st, epoch), a),
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
    st.send_class = SendClass::Unknown as u32;
    st.derived = derived_counter(&info).map_or(NO_COUNTER, |c| c as u32);
    // From here on only values read back from the thread's state: the
    // call, its flags and kinds are then numbers the verifier knows nothing
    // about, so the row lookup and the memo below are checked once, not
    // once per syscall family and classification (which made sys_enter's
    // verification some 200,000 instructions: a third of a second at every
    // start).
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
    // The call's row, found now (usually in the thread's row cache) so
    // that sys_exit and the hooks inside the call just index it.
    st.row = row_of(st, method, call_v, flow);
    // Remember it when it may be replayed (see `replay`).
    let flags = flags_v & !(FLAG_TIMED | FLAG_EXEC);
    let memo = match Call::from_u32(call_v) {
        Some(Call::Read | Call::Pread | Call::Readv | Call::Write | Call::Pwrite) => {
            flags & FLAG_FROM_MAPPING == 0
        }
        Some(Call::Writev) => st.map_len == 0,
        _ => false,
    };
    if memo && st.row != NO_ROW {
        st.memo_store(EnterMemo {
            nr: (nr as u32).wrapping_add(1),
            fd: args[0] as u32,
            epoch,
            methods: EnterMemo::methods(before, call_v, method, next),
            flags,
            derived: derived_v,
            row: st.row,
            kinds: in_v | out_v << 8 | u32::from(before_src) << 16 | u32::from(next_src) << 24,
        });
    }
    Ok(())
}

/// Replays the thread's memo of this call, when it holds one made under
/// the same conditions (see `EnterMemo`): a read of the same fd, or a
/// write of the same fd from a buffer outside the thread's file mapping
/// (a writev's first buffer would take a user-memory read to check: only
/// without a mapping), at the same fd epoch, from the same method.
#[inline(always)]
fn replay(
    st: &mut ThreadState,
    call: Call,
    a: &[u64; 6],
    nr: u32,
    epoch: u32,
    per_call: u32,
) -> bool {
    let ok = match call {
        Call::Read | Call::Pread | Call::Readv => true,
        Call::Write | Call::Pwrite => st.map_len == 0 || !st.in_mapping(a[1]),
        Call::Writev => st.map_len == 0,
        _ => false,
    };
    if !ok {
        return false;
    }
    let Some(m) = st.memo_find(nr, a[0] as u32, epoch) else {
        return false;
    };
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
    st.flags = flags | per_call;
    st.send_class = SendClass::Unknown as u32;
    st.derived = derived;
    st.row = row;
    if per_call & FLAG_TIMED != 0 {
        st.in_kind = kinds & 0xff;
        st.out_kind = kinds >> 8;
    }
    true
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

/// `sys_exit(struct pt_regs *regs, long ret)`: counts the call on the row
/// sys_enter found, with the bytes its result reports.
pub fn try_exit(ctx: &BtfTracePointContext) -> Result<(), ()> {
    // Thread state exists only for threads of traced processes (sys_enter
    // created it): one lookup both filters and finds it.
    let st = exit_state(regs_addr(ctx.arg::<*const PtRegs>(0))).ok_or(())?;
    // SAFETY: this thread's own storage (see `try_enter`).
    let st = unsafe { &mut *st };
    if st.call == Call::None as u32 {
        return Ok(());
    }
    let call = st.call;
    st.call = Call::None as u32;
    let ret = ctx.arg::<i64>(1);
    let info_call = Call::from_u32(call).unwrap_or(Call::Other);
    if ret <= 0 && info_call.returns_bytes() {
        // It moved nothing (end of file, EAGAIN, an error): not part of a
        // transfer, so not in its method's syscalls per chunk.
        nothing_moved(st, call);
    } else if let Some(r) = row_ptr(st.row) {
        counted(st, r, info_call, ret);
    }
    if st.flags & FLAG_TIMED != 0 && events_enabled() {
        let now = bpf_ktime_get_ns_safe();
        emit(&Event {
            ts_ns: now,
            dur_ns: now.saturating_sub(st.enter_ns),
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
    Ok(())
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
fn describe(call: Call, a: &[u64; 6], st: &mut ThreadState, epoch: u32) -> CallInfo {
    let mut info = CallInfo::new(call);
    let o_direct = layout!(o_direct);
    // (fd data comes from, fd data goes to, send/recv flags)
    let (fd_in, fd_out, msg_flags) = match call {
        Call::Read | Call::Pread | Call::Readv => (Some(a[0]), None, 0),
        Call::Recvfrom => (Some(a[0]), None, a[3] as u32),
        Call::Recvmsg => (Some(a[0]), None, a[2] as u32),
        Call::Write | Call::Pwrite | Call::Writev | Call::Vmsplice => (None, Some(a[0]), 0),
        Call::Sendto => (None, Some(a[0]), a[3] as u32),
        Call::Sendmsg => (None, Some(a[0]), a[2] as u32),
        Call::Sendfile => (Some(a[1]), Some(a[0]), 0),
        Call::Splice | Call::CopyFileRange => (Some(a[0]), Some(a[2]), 0),
        Call::Tee => (Some(a[0]), Some(a[1]), 0),
        Call::Mmap => (Some(a[4]), None, 0),
        _ => (None, None, 0),
    };
    if let Some(fd) = fd_in {
        let (kind, flags) = cached_fd_info(st, fd, epoch);
        info.in_kind = kind;
        info.direct |= matches!(kind, FdKind::File) && flags & o_direct != 0;
    }
    if let Some(fd) = fd_out {
        let (kind, flags) = cached_fd_info(st, fd, epoch);
        info.out_kind = kind;
        info.direct |= matches!(kind, FdKind::File) && flags & o_direct != 0;
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
