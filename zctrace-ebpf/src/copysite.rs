//! The copy-site tier: fexit programs on the traceable functions that
//! perform (or decide) the copies. The copy routines themselves
//! (`_copy_to_iter`, ...) live in the kernel's lib/, built without ftrace,
//! so their callers are hooked; each sees the iterator, whose type says
//! whether user memory is on the other side, and returns the byte count.
//! None of these functions calls another of them, so no byte is counted
//! twice within the tier (and the tier's counters are kept apart from the
//! tracepoint tier's).

use aya_ebpf::programs::FExitContext;
use zctrace_common::{SendClass, counter};

use crate::{
    kernel::{layout, read},
    state::{bump, current_traced, key_now},
};

/// Charges `bytes` to counter `idx` of the current task's in-flight call.
#[inline(always)]
fn charge(idx: usize, bytes: i64) -> Result<(), ()> {
    if bytes <= 0 {
        return Ok(());
    }
    let task = current_traced().ok_or(())?;
    bump(&key_now(task), idx, bytes as u64);
    Ok(())
}

/// The return value, as a signed byte count.
#[inline(always)]
fn ret(ctx: &FExitContext) -> Result<i64, ()> {
    ctx.ret::<i64>().map_err(|_| ())
}

/// Copies in one direction or the other, depending on the iterator; a
/// pipe iterator (before 6.4, splice reads) takes page references instead.
#[inline(always)]
fn by_iter(iter: u64, user: usize, bytes: i64) -> Result<(), ()> {
    let t: u8 = read(iter, layout!(iter_type)).ok_or(())?;
    let idx = if u32::from(t) == layout!(iter_pipe) {
        counter::COPY_SITE_REFS
    } else if t < 32 && (layout!(user_iter_mask) >> t) & 1 == 1 {
        user
    } else {
        counter::COPY_SITE_K2K
    };
    charge(idx, bytes)
}

/// `filemap_read(iocb, iter, already_read)`: page cache -> iterator.
pub fn try_filemap_read(ctx: &FExitContext) -> Result<(), ()> {
    current_traced().ok_or(())?;
    by_iter(ctx.arg::<u64>(1), counter::COPY_SITE_K2U, ret(ctx)?)
}

/// `shmem_file_read_iter(iocb, to)`: tmpfs pages -> iterator (tmpfs does
/// not read through `filemap_read`).
pub fn try_shmem_file_read_iter(ctx: &FExitContext) -> Result<(), ()> {
    current_traced().ok_or(())?;
    by_iter(ctx.arg::<u64>(1), counter::COPY_SITE_K2U, ret(ctx)?)
}

/// `generic_perform_write(iocb, iter)`: iterator -> page cache.
pub fn try_generic_perform_write(ctx: &FExitContext) -> Result<(), ()> {
    current_traced().ok_or(())?;
    by_iter(ctx.arg::<u64>(1), counter::COPY_SITE_U2K, ret(ctx)?)
}

/// `pipe_read(iocb, to)`: pipe buffers -> iterator.
pub fn try_pipe_read(ctx: &FExitContext) -> Result<(), ()> {
    current_traced().ok_or(())?;
    by_iter(ctx.arg::<u64>(1), counter::COPY_SITE_K2U, ret(ctx)?)
}

/// `pipe_write(iocb, from)`: iterator -> pipe buffers.
pub fn try_pipe_write(ctx: &FExitContext) -> Result<(), ()> {
    current_traced().ok_or(())?;
    by_iter(ctx.arg::<u64>(1), counter::COPY_SITE_U2K, ret(ctx)?)
}

/// `skb_copy_datagram_iter(skb, offset, to, size)`: returns 0 when `size`
/// bytes were copied into `to`.
pub fn try_skb_copy_datagram_iter(ctx: &FExitContext) -> Result<(), ()> {
    current_traced().ok_or(())?;
    if ret(ctx)? != 0 {
        return Ok(());
    }
    let size = ctx.arg::<u64>(3) as i32;
    by_iter(ctx.arg::<u64>(2), counter::COPY_SITE_K2U, i64::from(size))
}

/// `tcp_sendmsg_locked(sk, msg, size)`: returns the bytes queued; the
/// message's iterator and flags say copy, pin or page references.
pub fn try_tcp_sendmsg_locked(ctx: &FExitContext) -> Result<(), ()> {
    current_traced().ok_or(())?;
    let bytes = ret(ctx)?;
    let msg = ctx.arg::<u64>(1);
    let iter_type: u8 = read(msg, layout!(msghdr_iter) + layout!(iter_type)).ok_or(())?;
    let flags: u32 = read(msg, layout!(msghdr_flags)).ok_or(())?;
    let idx = match SendClass::classify(iter_type, flags, layout!(user_iter_mask)) {
        SendClass::UserCopy => counter::COPY_SITE_U2K,
        SendClass::KernelCopy => counter::COPY_SITE_K2K,
        SendClass::PageRefs | SendClass::ZeroCopyPinned | SendClass::Unknown => {
            counter::COPY_SITE_REFS
        }
    };
    charge(idx, bytes)
}

/// `do_tcp_sendpages(sk, page, offset, size, flags)` (before 6.5): pages
/// attached to the socket by reference.
pub fn try_do_tcp_sendpages(ctx: &FExitContext) -> Result<(), ()> {
    current_traced().ok_or(())?;
    charge(counter::COPY_SITE_REFS, ret(ctx)?)
}
