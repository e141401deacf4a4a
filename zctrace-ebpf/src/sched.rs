//! Scheduler and fault tracepoints: context switches, page faults, and
//! following forks and exits of traced processes.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use zctrace_common::{Call, Event, Method, counter, event_kind, stat};

use aya_ebpf::helpers::generated::bpf_task_pt_regs;

use crate::{
    kernel::{PtRegs, call_of, current_comm, in_syscall, layout, read, syscall_nr},
    state::{
        Regs, TRACED, add, bump, bump_generation, current_regs_ptr, current_traced, emit,
        exiting_state, flush_deferred, regs_addr, row_of, row_ptr, settings, stat_add, traced_at,
    },
};

/// `sched_switch(preempt, prev, next, prev_state)` runs on the CPU that
/// `prev` is leaving, so the current task is the one switched out: each
/// switch of a traced thread is counted once. A BTF tracepoint: `prev` is
/// a typed pointer, so a CPU leaving its idle task (pid 0, about half of
/// all switches on a lightly loaded machine) is turned away by one plain
/// load, before any lookup, with the scheduler's lock held.
pub fn try_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let prev = ctx.arg::<*const u8>(1);
    if prev.is_null() {
        return Ok(());
    }
    let off = layout!(task_pid) as usize;
    // SAFETY: a fault-safe load of prev->pid at the offset read from this
    // kernel's BTF.
    if unsafe { core::ptr::read_volatile(prev.add(off).cast::<i32>()) } == 0 {
        return Ok(());
    }
    // prev is the current task until the switch: its registers come from
    // the pointer in hand (one helper call, not two).
    // SAFETY: `prev` is a task pointer the kernel handed over.
    let regs = unsafe { bpf_task_pt_regs(prev.cast_mut().cast()) } as *const PtRegs;
    let task = traced_at(regs_addr(regs)).ok_or(())?;
    let preempt = ctx.arg::<u64>(0) & 0xff != 0;
    let prev_state = ctx.arg::<u64>(3) as u32;
    // Preempted, or switched out while still runnable (TASK_RUNNING == 0):
    // involuntary. Otherwise it blocked: voluntary.
    let idx = if preempt || prev_state == 0 {
        counter::CS_INVOLUNTARY
    } else {
        counter::CS_VOLUNTARY
    };
    bump(task, idx, 1, Regs::At(regs));
    Ok(())
}

/// `page_fault_user` / `page_fault_kernel`: charged to the syscall in
/// flight (a write() from an mmap'd file faults inside the kernel), or in
/// user mode to the thread's current method.
pub fn try_fault(ctx: &RawTracePointContext, idx: usize) -> Result<(), ()> {
    let task = if idx == counter::FAULTS_USER {
        // `page_fault_user(address, regs, error_code)`: a fault from user
        // mode saved the registers where the thread's syscalls do (the top
        // of its kernel stack), so `regs` finds its state with no helper
        // call. (A fault in the kernel saves them elsewhere.)
        traced_at(ctx.arg::<u64>(1))
    } else {
        current_traced()
    }
    .ok_or(())?;
    let regs = if idx == counter::FAULTS_USER {
        Regs::User
    } else {
        Regs::Current
    };
    bump(task, idx, 1, regs);
    Ok(())
}

/// `sched_process_fork(parent, child)` runs in the parent.
pub fn try_fork(ctx: &RawTracePointContext) -> Result<(), ()> {
    let s = settings();
    if s.follow_forks == 0 || s.trace_all != 0 {
        return Ok(());
    }
    let parent = current_traced().ok_or(())?;
    let child = ctx.arg::<u64>(1);
    let pid: u32 = read(child, layout!(task_pid)).ok_or(())?;
    let tgid: u32 = read(child, layout!(task_tgid)).ok_or(())?;
    if pid != tgid {
        // A new thread: its tgid is already traced.
        return Ok(());
    }
    if TRACED.insert(tgid, 1, 0).is_err() {
        stat_add(stat::PROCESS_MAP_FULL, 1);
        return Err(());
    }
    emit(&Event {
        ts_ns: 0,
        dur_ns: 0,
        ret: tgid as i64,
        tgid: parent.tgid,
        tid: parent.tid,
        kind: event_kind::FORK,
        method: 0,
        call: 0,
        in_kind: 0,
        comm: current_comm(),
    });
    Ok(())
}

/// `sched_process_exit` runs in the exiting thread.
pub fn try_exit(_ctx: &RawTracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // A call that never returns (exit, exit_group) is counted here, with
    // what hooks inside it deferred.
    let mut traced = false;
    exiting_state(|st| {
        traced = true;
        let regs = current_regs_ptr();
        let row = if in_syscall(regs) {
            let nr = syscall_nr(regs) as u64;
            let call = call_of(nr);
            // Neither call moves data: classified as `classify` does any
            // such call (method other, no flow), unless a hook did already.
            let row = if st.in_flight_is(nr as u32, crate::syscalls::first_arg(regs)) {
                st.row
            } else {
                row_of(st, Method::Other as u32, call as u32, 0)
            };
            if let Some(r) = row_ptr(row) {
                add(r, counter::SYSCALLS, 1);
            }
            row
        } else {
            row_of(st, st.current, Call::None as u32, 0)
        };
        if st.deferred_any != 0 {
            flush_deferred(st, row);
        }
    });
    if tid != tgid {
        return Ok(());
    }
    // In the traced set, or traced for another reason (every process, a
    // cgroup): userspace learns the name it died with and retires its rows.
    let listed = TRACED.get_ptr(tgid).is_some();
    if !listed && !traced {
        return Ok(());
    }
    if listed && settings().trace_all == 0 {
        let _ = TRACED.remove(tgid);
    }
    emit(&Event {
        ts_ns: 0,
        dur_ns: 0,
        ret: 0,
        tgid,
        tid,
        kind: event_kind::PROCESS_EXIT,
        method: 0,
        call: 0,
        in_kind: 0,
        comm: current_comm(),
    });
    Ok(())
}

/// `task_rename(task, comm)`: a task takes a new name, in the context of
/// whoever renames it (the task itself by prctl or exec, or a writer of
/// its /proc/PID/comm). A traced process's main thread's new name is sent
/// to userspace, which then never reads /proc for names unless an event
/// was dropped. With a cgroup target every process's is sent (whether the
/// renamed task is in the subtree is not cheap to tell here); userspace
/// keeps names only of processes it knows.
pub fn try_rename(ctx: &RawTracePointContext) -> Result<(), ()> {
    let task = ctx.arg::<u64>(0);
    let pid: u32 = read(task, layout!(task_pid)).ok_or(())?;
    let tgid: u32 = read(task, layout!(task_tgid)).ok_or(())?;
    if pid != tgid || pid == 0 {
        return Ok(());
    }
    let s = settings();
    if s.trace_all == 0 && s.cgroup_id == 0 && TRACED.get_ptr(tgid).is_none() {
        return Ok(());
    }
    let mut comm = [0u8; 16];
    // SAFETY: a kernel string; the helper checks the address and stops at
    // the buffer's end.
    unsafe {
        bpf_probe_read_kernel_str_bytes(ctx.arg::<*const u8>(1), &mut comm).map_err(|_| ())?;
    }
    emit(&Event {
        ts_ns: 0,
        dur_ns: 0,
        ret: 0,
        tgid,
        tid: pid,
        kind: event_kind::RENAME,
        method: 0,
        call: 0,
        in_kind: 0,
        comm,
    });
    Ok(())
}

/// `cgroup_attach_task(dst, path, task, threadgroup)`: a task moved to
/// another cgroup. With a cgroup target, every thread checks again whether
/// it is in the target's subtree (a process moved in is traced from its
/// next syscall, one moved out no longer).
pub fn try_cgroup_attach() -> Result<(), ()> {
    if settings().cgroup_id != 0 {
        bump_generation();
    }
    Ok(())
}
