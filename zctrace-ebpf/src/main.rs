//! zctrace's eBPF programs.
//!
//! Every entry point is one line that hands its context to a `try_` function
//! in the module of its probe family. All programs start by finding the
//! current thread's state, which also says whether its process is traced:
//! they run for every process on the machine, so the common case is one
//! array lookup in the thread table (`state.rs`) and two compares.
#![no_std]
#![no_main]
// Atomic add without compare-and-swap (see state::add).
#![feature(core_intrinsics)]
// BPF inline assembly (see state::fetch_add).
#![feature(asm_experimental_arch)]
#![expect(
    internal_features,
    reason = "core_intrinsics is the only way to emit BPF atomic add"
)]

mod block;
mod copysite;
mod kernel;
mod net;
mod sched;
mod state;
mod syscalls;
mod uring;

use aya_ebpf::{
    macros::{btf_tracepoint, fexit, kprobe, kretprobe, raw_tracepoint},
    programs::{
        BtfTracePointContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext,
    },
};

#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    syscalls::try_enter(&ctx).map_or(0, |()| 0)
}

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    syscalls::try_exit(&ctx).map_or(0, |()| 0)
}

/// sys_exit's classifier, reached by a tail call (see
/// `syscalls::classify_in_flight`); never attached itself.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_classify(ctx: BtfTracePointContext) -> i32 {
    syscalls::try_exit_classify::<false>(&ctx).map_or(0, |()| 0)
}

/// The same, in the form older verifiers check within their budget.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_classify_split(ctx: BtfTracePointContext) -> i32 {
    syscalls::try_exit_classify::<true>(&ctx).map_or(0, |()| 0)
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    sched::try_switch(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    sched::try_fork(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    sched::try_exit(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "task_rename")]
pub fn task_rename(ctx: RawTracePointContext) -> i32 {
    sched::try_rename(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn cgroup_attach_task(_ctx: RawTracePointContext) -> i32 {
    sched::try_cgroup_attach().map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(ctx: RawTracePointContext) -> i32 {
    sched::try_fault(&ctx, zctrace_common::counter::FAULTS_USER).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> i32 {
    sched::try_fault(&ctx, zctrace_common::counter::FAULTS_KERNEL).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "skb_copy_datagram_iovec")]
pub fn skb_copy_datagram_iovec(ctx: RawTracePointContext) -> i32 {
    net::try_skb_copy(&ctx).map_or(0, |()| 0)
}

#[btf_tracepoint(function = "tcp_sendmsg_locked")]
pub fn tcp_sendmsg_locked(ctx: BtfTracePointContext) -> i32 {
    net::try_tcp_sendmsg(&ctx).map_or(0, |()| 0)
}

#[btf_tracepoint(function = "net_dev_xmit")]
pub fn net_dev_xmit(ctx: BtfTracePointContext) -> i32 {
    net::try_xmit(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "block_rq_insert")]
pub fn block_rq_insert(ctx: RawTracePointContext) -> i32 {
    block::try_rq_insert(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "block_rq_requeue")]
pub fn block_rq_requeue(ctx: RawTracePointContext) -> i32 {
    block::try_rq_requeue(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "block_rq_issue")]
pub fn block_rq_issue(ctx: RawTracePointContext) -> i32 {
    block::try_rq_issue(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: RawTracePointContext) -> i32 {
    uring::try_submit(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "io_uring_complete")]
pub fn io_uring_complete(ctx: RawTracePointContext) -> i32 {
    uring::try_complete(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "io_uring_cqe_overflow")]
pub fn io_uring_cqe_overflow(ctx: RawTracePointContext) -> i32 {
    uring::try_overflow(&ctx).map_or(0, |()| 0)
}

// The copy-site tier: for each site an fexit program and a kprobe/kretprobe
// pair; userspace loads the fexit one and falls back to the pair where the
// kernel refuses it, recording the reasons. The function to hook is named at
// load time from userspace.
macro_rules! copy_site {
    ($id:expr, $site:expr, $fexit:ident, $entry:ident, $exit:ident) => {
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> i32 {
            copysite::fexit(&ctx, $site).map_or(0, |()| 0)
        }

        #[kprobe]
        pub fn $entry(ctx: ProbeContext) -> u32 {
            copysite::entry(&ctx, $id, $site).map_or(0, |()| 0)
        }

        #[kretprobe]
        pub fn $exit(ctx: RetProbeContext) -> u32 {
            copysite::exit(&ctx, $id, $site).map_or(0, |()| 0)
        }
    };
}

use copysite::Site;
use zctrace_common::counter::{COPY_SITE_K2U as K2U, COPY_SITE_U2K as U2K};

copy_site!(
    1,
    Site::Iter { iter: 1, user: K2U },
    fx_filemap_read,
    kp_filemap_read,
    kr_filemap_read
);
copy_site!(
    2,
    Site::Iter { iter: 1, user: K2U },
    fx_shmem_read,
    kp_shmem_read,
    kr_shmem_read
);
copy_site!(
    3,
    Site::Iter { iter: 1, user: U2K },
    fx_perform_write,
    kp_perform_write,
    kr_perform_write
);
copy_site!(
    4,
    Site::Iter { iter: 1, user: K2U },
    fx_pipe_read,
    kp_pipe_read,
    kr_pipe_read
);
copy_site!(
    5,
    Site::Iter { iter: 1, user: U2K },
    fx_pipe_write,
    kp_pipe_write,
    kr_pipe_write
);
copy_site!(6, Site::SkbCopy, fx_skb_copy, kp_skb_copy, kr_skb_copy);
copy_site!(
    7,
    Site::TcpSend,
    fx_tcp_sendmsg,
    kp_tcp_sendmsg,
    kr_tcp_sendmsg
);
copy_site!(8, Site::SendPages, fx_sendpages, kp_sendpages, kr_sendpages);

// The overhead floor (`zctrace floor`, `cargo xtask bench`): programs that
// do nothing, attached to the same tracepoints as the tracepoint tier, so
// the benchmark can tell the cost of enabling hooks from zctrace's work.

#[raw_tracepoint]
pub fn floor_raw(_ctx: RawTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "tcp_sendmsg_locked")]
pub fn floor_tcp_sendmsg_locked(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sys_enter")]
pub fn floor_sys_enter(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn floor_sys_exit(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "net_dev_xmit")]
pub fn floor_net_dev_xmit(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn floor_sched_switch(_ctx: BtfTracePointContext) -> i32 {
    0
}

// The floor of the other mechanism (`zctrace floor --mechanism fexit`):
// empty programs on the read and write system calls' own functions
// (`__x64_sys_read`, ...), which only those calls enter, where the kernel
// allows fexit; against the raw syscall tracepoints, which send every
// thread of every process down the slow syscall path.

#[fexit]
pub fn floor_fexit_read(_ctx: FExitContext) -> i32 {
    0
}

#[fexit]
pub fn floor_fexit_write(_ctx: FExitContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
