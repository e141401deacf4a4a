//! Reading kernel memory with the layout userspace found in the running
//! kernel's BTF (no struct layout is compiled into this object).

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user,
};
use zctrace_common::{FdKind, KernelLayout};

/// Filled in by userspace from /sys/kernel/btf/vmlinux before load.
#[unsafe(no_mangle)]
pub(crate) static LAYOUT: KernelLayout = KernelLayout {
    task_files: 0,
    task_pid: 0,
    task_tgid: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_inode: 0,
    file_flags: 0,
    inode_mode: 0,
    msghdr_iter: 0,
    msghdr_flags: 0,
    iter_type: 0,
    request_data_len: 0,
    request_cmd_flags: 0,
    request_start_time_ns: 0,
    netdev_flags: 0,
    netdev_parent: 0,
    user_iter_mask: 0,
    iter_pipe: u32::MAX,
    o_direct: 0,
    kiocb_opcode: u32::MAX,
    kiocb_file: u32::MAX,
    task_flags: u32::MAX,
    kiocb_notif: u32::MAX,
    uring_complete_cqe: 0,
    uring_submit_req_arg: 0,
    file_private: 0,
    socket_sk: 0,
    sk_family: 0,
    sk_protocol: 0,
    valid: 0,
};

/// Reads one field of [`LAYOUT`] without letting the compiler fold in the
/// zero it was declared with.
macro_rules! layout {
    ($field:ident) => {
        // SAFETY: LAYOUT is a plain static of u32s, always readable.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::kernel::LAYOUT.$field)) }
    };
}
pub(crate) use layout;

/// Reads a `T` at `base + off` in kernel memory (fails on a bad pointer).
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and returns an
    // error instead of faulting; T is a plain integer or pointer type.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// Reads a `T` from the current task's user memory.
#[inline(always)]
pub fn read_user<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user checks the address (it may fault in
    // nothing and fails instead); T is a plain integer type.
    unsafe { bpf_probe_read_user(addr as *const T).ok() }
}

/// What `fd` of the current task refers to, and its file's `f_flags`.
#[inline(always)]
pub fn fd_info(fd: u64) -> (FdKind, u32) {
    fd_info_inner(fd).unwrap_or((FdKind::Unknown, 0))
}

#[inline(always)]
fn fd_info_inner(fd: u64) -> Option<(FdKind, u32)> {
    if layout!(valid) == 0 || fd > i32::MAX as u64 {
        return None;
    }
    // SAFETY: the helper takes no arguments and returns the current task.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, layout!(task_files))?;
    let fdt: u64 = read(files, layout!(files_fdt))?;
    let max_fds: u32 = read(fdt, layout!(fdt_max_fds))?;
    if fd >= max_fds as u64 {
        return None;
    }
    let fd_array: u64 = read(fdt, layout!(fdt_fd))?;
    let file: u64 = read(fd_array, (fd * 8) as u32)?;
    file_info(file)
}

/// What an open file (`struct file *`) is, and its `f_flags`; for a
/// socket, its family and protocol say which kind.
#[inline(always)]
pub fn file_info(file: u64) -> Option<(FdKind, u32)> {
    let inode: u64 = read(file, layout!(file_inode))?;
    let mode: u16 = read(inode, layout!(inode_mode))?;
    let flags: u32 = read(file, layout!(file_flags))?;
    let kind = FdKind::from_mode(mode as u32);
    if matches!(kind, FdKind::Socket) {
        return Some((socket_kind(file).unwrap_or(FdKind::Socket), flags));
    }
    Some((kind, flags))
}

/// A socket file's kind: `file->private_data` is its `struct socket`.
#[inline(never)]
fn socket_kind(file: u64) -> Option<FdKind> {
    let sock: u64 = read(file, layout!(file_private))?;
    let sk: u64 = read(sock, layout!(socket_sk))?;
    let family: u16 = read(sk, layout!(sk_family))?;
    let protocol: u16 = read(sk, layout!(sk_protocol))?;
    Some(FdKind::of_socket(family, protocol))
}

pub use aya_ebpf::bindings::pt_regs as PtRegs;

/// arm64's `struct pt_regs` (arch/arm64/include/asm/ptrace.h): the user
/// registers, then what the syscall entry saved. Loads through a BTF
/// pointer are checked against the kernel's own type, at these offsets.
#[cfg(bpf_target_arch = "aarch64")]
#[repr(C)]
struct Arm64Regs {
    regs: [u64; 31],
    sp: u64,
    pc: u64,
    pstate: u64,
    /// x0 as the syscall was entered (x0 itself is its result at exit).
    orig_x0: u64,
    /// The syscall number, or -1 (`NO_SYSCALL`) when the registers were
    /// saved by an exception or interrupt.
    syscallno: i32,
}

/// The six syscall arguments in the saved registers. They are still there
/// at sys_exit: the kernel writes only the result register (on arm64, x0,
/// whose value at entry is kept in `orig_x0`).
#[inline(always)]
pub fn syscall_args(regs: *const PtRegs) -> Option<[u64; 6]> {
    if regs.is_null() {
        return None;
    }
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: a BTF pointer to the task's saved registers; the kernel
        // turns each load into a fault-safe one.
        let r = unsafe { &*regs };
        Some([r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9])
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        // SAFETY: as above.
        let r = unsafe { &*regs.cast::<Arm64Regs>() };
        Some([
            r.orig_x0, r.regs[1], r.regs[2], r.regs[3], r.regs[4], r.regs[5],
        ])
    }
}

/// The syscall number in the saved registers: the call in flight or the
/// one that just returned; negative when the registers were saved by an
/// interrupt or exception (every entry from user mode writes them), or by
/// rt_sigreturn (and, on arm64, exec), which reset it.
#[inline(always)]
pub fn syscall_nr(regs: *const PtRegs) -> i64 {
    if regs.is_null() {
        return -1;
    }
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: as in `syscall_args`.
        unsafe { (*regs).orig_rax as i64 }
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        // SAFETY: as in `syscall_args`.
        i64::from(unsafe { (*regs.cast::<Arm64Regs>()).syscallno })
    }
}

/// Whether the task whose saved registers these are is inside a syscall
/// that has not returned yet: the registers were saved by a syscall from
/// user mode, and its result is not in them yet. x86-64 sets the result
/// register to -ENOSYS at entry and writes the result when the call
/// returns, before sys_exit. arm64 keeps the entry's x0 in `orig_x0` and
/// overwrites x0 with the result: a result equal to the first argument
/// reads as still in flight (the caller's classification is then checked
/// against the call at sys_exit). A kernel thread's registers are zeroed,
/// never user mode.
#[inline(always)]
pub fn in_syscall(regs: *const PtRegs) -> bool {
    if regs.is_null() {
        return false;
    }
    #[cfg(bpf_target_arch = "x86_64")]
    {
        const ENOSYS: u64 = 38;
        // SAFETY: as in `syscall_args`.
        let r = unsafe { &*regs };
        r.cs & 3 == 3 && (r.orig_rax as i64) >= 0 && r.rax == ENOSYS.wrapping_neg()
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        const PSR_MODE_MASK: u64 = 0xf;
        const PSR_MODE_EL0T: u64 = 0;
        // SAFETY: as in `syscall_args`.
        let r = unsafe { &*regs.cast::<Arm64Regs>() };
        r.pstate & PSR_MODE_MASK == PSR_MODE_EL0T && r.syscallno >= 0 && r.regs[0] == r.orig_x0
    }
}

// Syscall numbers of the architecture the programs are built for.
#[cfg(bpf_target_arch = "aarch64")]
pub use zctrace_common::syscalls::aarch64::{call as call_of, changes_fds, is_exec, is_fork};
#[cfg(not(bpf_target_arch = "aarch64"))]
pub use zctrace_common::syscalls::x86_64::{call as call_of, changes_fds, is_exec, is_fork};

/// `PF_IO_WORKER` (include/linux/sched.h): an io_uring worker thread.
const PF_IO_WORKER: u32 = 0x10;

/// Whether the current task is an io-wq worker (running io_uring requests
/// for its process).
#[inline(never)]
pub fn current_is_io_worker() -> bool {
    // SAFETY: the helper takes no arguments and returns the current task.
    let task = unsafe { bpf_get_current_task() };
    read::<u32>(task, layout!(task_flags)).is_some_and(|f| f & PF_IO_WORKER != 0)
}

/// Whether the current task is a kernel thread (`PF_KTHREAD`): writeback,
/// ksoftirqd, workqueue workers; what they move is nobody's in particular.
#[inline(never)]
pub fn current_is_kthread() -> bool {
    const PF_KTHREAD: u32 = 0x0020_0000;
    // SAFETY: the helper takes no arguments and returns the current task.
    let task = unsafe { bpf_get_current_task() };
    read::<u32>(task, layout!(task_flags)).is_some_and(|f| f & PF_KTHREAD != 0)
}

/// The current task's name (zeros if the helper fails).
#[inline(always)]
pub fn current_comm() -> [u8; 16] {
    bpf_get_current_comm().unwrap_or([0; 16])
}
