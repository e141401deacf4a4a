//! `sys_enter` / `sys_exit`: the in-flight syscall per thread, its method,
//! syscall counts and the copies derived from each call's result.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::RawTracePointContext,
};
use zctrace_common::{
    Call, CallInfo, CounterKey, Event, FdKind, MSG_ERRQUEUE, MSG_ZEROCOPY, Method, SendClass,
    ThreadState, classify, counter, derived_counter, event_kind,
};

use crate::{
    kernel::{call_of, changes_fds, current_comm, fd_info, layout, read_user, syscall_args},
    state::{add, bump_epoch, current_traced, emit, epoch, events_enabled, row, thread_state},
};

pub fn try_enter(ctx: &RawTracePointContext) -> Result<(), ()> {
    let task = current_traced().ok_or(())?;
    let nr = ctx.arg::<u64>(1);
    if changes_fds(nr) {
        bump_epoch(&task);
    }
    let call = call_of(nr);
    let st = thread_state(task.tid).ok_or(())?;
    // SAFETY: `st` points at this thread's map value; only this thread's
    // own programs write it, and they do not run concurrently.
    let st = unsafe { &mut *st };
    let (info, args) = if call.is_io() {
        describe(call, ctx.arg::<u64>(0), st, epoch(&task))
    } else {
        (CallInfo::new(call), [0; 6])
    };
    let current = Method::from_u32(st.current).unwrap_or(Method::Other);
    let (method, next) = classify(&info, current);
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
    // The clock only for the event log's durations (two helper calls a
    // syscall otherwise spent on a number nobody looks at).
    st.enter_ns = if call.is_io() && events_enabled() {
        bpf_ktime_get_ns_safe()
    } else {
        0
    };
    st.call = call as u32;
    st.method = method as u32;
    st.current = next as u32;
    st.in_kind = info.in_kind as u32;
    st.out_kind = info.out_kind as u32;
    st.flags = ThreadState::pack_flags(&info);
    st.send_class = SendClass::Unknown as u32;
    // Counted at exit, with the result: one counter-row lookup a syscall.
    Ok(())
}

#[inline(always)]
fn overlaps(st: &ThreadState, addr: u64, len: u64) -> bool {
    st.map_len > 0
        && addr < st.map_start.saturating_add(st.map_len)
        && st.map_start < addr.saturating_add(len)
}

pub fn try_exit(ctx: &RawTracePointContext) -> Result<(), ()> {
    // Thread state exists only for threads of traced processes: one lookup
    // both filters and finds it.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let st = crate::state::THREADS.get_ptr_mut(tid).ok_or(())?;
    // SAFETY: as in `try_enter`.
    let st = unsafe { &mut *st };
    if st.call == Call::None as u32 {
        return Ok(());
    }
    let info = st.info();
    st.call = Call::None as u32;
    let key = CounterKey {
        tgid: (pid_tgid >> 32) as u32,
        tid,
        method: st.method,
        call: info.call as u32,
    };
    let r = row(&key).ok_or(())?;
    add(r, counter::SYSCALLS, 1);
    if !info.call.is_io() {
        return Ok(());
    }
    let ret = ctx.arg::<i64>(1);
    // A successful mmap returns the address (errors are -4095..-1).
    if matches!(info.call, Call::Mmap) && info.maps_file && !(-4095..0).contains(&ret) {
        st.map_start = ret as u64;
        st.map_len = st.mmap_len;
    }
    if ret > 0 && info.call.returns_bytes() {
        let bytes = ret as u64;
        add(r, counter::IO_BYTES, bytes);
        if let Some(c) = derived_counter(&info) {
            add(r, c, bytes);
        }
        if let Some(c) = SendClass::from_u32(st.send_class).observed_counter() {
            add(r, c, bytes);
        }
    }
    if st.enter_ns != 0 && events_enabled() {
        let now = bpf_ktime_get_ns_safe();
        emit(&Event {
            ts_ns: now,
            dur_ns: now.saturating_sub(st.enter_ns),
            ret,
            tgid: key.tgid,
            tid,
            kind: event_kind::SYSCALL,
            method: st.method,
            call: info.call as u32,
            in_kind: if info.in_kind as u32 != 0 {
                info.in_kind as u32
            } else {
                info.out_kind as u32
            },
            comm: current_comm(),
        });
    }
    Ok(())
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
fn describe(call: Call, regs: u64, st: &mut ThreadState, epoch: u32) -> (CallInfo, [u64; 6]) {
    let mut info = CallInfo::new(call);
    let Some(a) = syscall_args(regs) else {
        return (info, [0; 6]);
    };
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
    (info, a)
}
