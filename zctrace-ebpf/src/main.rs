//! zctrace's eBPF programs.
//!
//! Every entry point is one line that hands its context to a `try_` function
//! in the module of its probe family. All programs start by checking whether
//! the current task belongs to a traced process: they run for every process
//! on the machine, so the common case must be one hash lookup and out.
#![no_std]
#![no_main]
// Atomic add without compare-and-swap (see state::add).
#![feature(core_intrinsics)]
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

use aya_ebpf::{
    macros::{btf_tracepoint, fexit, raw_tracepoint},
    programs::{BtfTracePointContext, FExitContext, RawTracePointContext},
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    syscalls::try_enter(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    syscalls::try_exit(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
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

#[raw_tracepoint(tracepoint = "net_dev_xmit")]
pub fn net_dev_xmit(ctx: RawTracePointContext) -> i32 {
    net::try_xmit(&ctx).map_or(0, |()| 0)
}

#[raw_tracepoint(tracepoint = "block_rq_issue")]
pub fn block_rq_issue(ctx: RawTracePointContext) -> i32 {
    block::try_rq_issue(&ctx).map_or(0, |()| 0)
}

// The copy-site tier. Userspace loads each against the running kernel's
// BTF and records the kernel's reason when one is refused.

#[fexit(function = "filemap_read")]
pub fn copy_filemap_read(ctx: FExitContext) -> i32 {
    copysite::try_filemap_read(&ctx).map_or(0, |()| 0)
}

#[fexit(function = "shmem_file_read_iter")]
pub fn copy_shmem_file_read_iter(ctx: FExitContext) -> i32 {
    copysite::try_shmem_file_read_iter(&ctx).map_or(0, |()| 0)
}

#[fexit(function = "generic_perform_write")]
pub fn copy_generic_perform_write(ctx: FExitContext) -> i32 {
    copysite::try_generic_perform_write(&ctx).map_or(0, |()| 0)
}

#[fexit(function = "pipe_read")]
pub fn copy_pipe_read(ctx: FExitContext) -> i32 {
    copysite::try_pipe_read(&ctx).map_or(0, |()| 0)
}

#[fexit(function = "pipe_write")]
pub fn copy_pipe_write(ctx: FExitContext) -> i32 {
    copysite::try_pipe_write(&ctx).map_or(0, |()| 0)
}

#[fexit(function = "skb_copy_datagram_iter")]
pub fn copy_skb_copy_datagram_iter(ctx: FExitContext) -> i32 {
    copysite::try_skb_copy_datagram_iter(&ctx).map_or(0, |()| 0)
}

#[fexit(function = "tcp_sendmsg_locked")]
pub fn copy_tcp_sendmsg_locked(ctx: FExitContext) -> i32 {
    copysite::try_tcp_sendmsg_locked(&ctx).map_or(0, |()| 0)
}

#[fexit(function = "do_tcp_sendpages")]
pub fn copy_do_tcp_sendpages(ctx: FExitContext) -> i32 {
    copysite::try_do_tcp_sendpages(&ctx).map_or(0, |()| 0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
