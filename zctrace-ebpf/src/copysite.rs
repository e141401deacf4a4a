//! The copy-site tier: programs on the traceable functions that perform (or
//! decide) the copies. The copy routines themselves (`_copy_to_iter`, ...)
//! live in the kernel's lib/, built without ftrace, so their callers are
//! hooked; each sees the iterator, whose type says whether user memory is on
//! the other side, and returns the byte count. None of these functions
//! calls another of them, so no byte is counted twice within the tier (and
//! the tier's counters are kept apart from the tracepoint tier's).
//!
//! Each site is described once ([`Site`]) and served by two mechanisms:
//! fexit (arguments and return value in one program) or, where fexit is
//! refused, a kprobe that saves the arguments at entry and a kretprobe that
//! finishes at return.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::HashMap,
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use zctrace_common::{SendClass, counter};

use crate::{
    kernel::{layout, read},
    state::{charge, current_traced},
};

/// What a hooked function is and which of its arguments matter.
#[derive(Clone, Copy)]
pub enum Site {
    /// `f(.., iter, ..) -> ssize_t`: `ret` bytes through `iter` (argument
    /// `iter`); user memory on the other side means direction `user`.
    Iter { iter: usize, user: usize },
    /// `skb_copy_datagram_iter(skb, offset, to, size) -> 0`.
    SkbCopy,
    /// `tcp_sendmsg_locked(sk, msg, size) -> copied`.
    TcpSend,
    /// `do_tcp_sendpages(sk, page, offset, size, flags) -> sent`.
    SendPages,
}

impl Site {
    /// Which two arguments to keep: indexes, or None.
    const fn wanted(self) -> (Option<usize>, Option<usize>) {
        match self {
            Site::Iter { iter, .. } => (Some(iter), None),
            Site::SkbCopy => (Some(2), Some(3)),
            Site::TcpSend => (Some(1), None),
            Site::SendPages => (None, None),
        }
    }
}

/// Arguments saved by the kprobe half until the kretprobe half runs, keyed
/// by (thread, site id).
#[map]
static SAVED_ARGS: HashMap<u64, [u64; 2]> = HashMap::with_max_entries(4096, 0);

#[inline(always)]
fn saved_key(id: u64) -> u64 {
    (bpf_get_current_pid_tgid() << 8) | (id & 0xff)
}

/// The fexit program of a site.
#[inline(always)]
pub fn fexit(ctx: &FExitContext, site: Site) -> Result<(), ()> {
    current_traced().ok_or(())?;
    let (a, b) = site.wanted();
    let args = [
        a.map_or(0, |i| ctx.arg::<u64>(i)),
        b.map_or(0, |i| ctx.arg::<u64>(i)),
    ];
    let ret = ctx.ret::<i64>().map_err(|_| ())?;
    done(site, args, ret)
}

/// The kprobe half: remember the arguments of a traced thread's call.
#[inline(always)]
pub fn entry(ctx: &ProbeContext, id: u64, site: Site) -> Result<(), ()> {
    current_traced().ok_or(())?;
    let (a, b) = site.wanted();
    let args = [
        a.and_then(|i| ctx.arg::<u64>(i)).unwrap_or(0),
        b.and_then(|i| ctx.arg::<u64>(i)).unwrap_or(0),
    ];
    SAVED_ARGS
        .insert(saved_key(id), args, u64::from(BPF_ANY))
        .map_err(|_| ())
}

/// The kretprobe half: take the saved arguments and count.
#[inline(always)]
pub fn exit(ctx: &RetProbeContext, id: u64, site: Site) -> Result<(), ()> {
    current_traced().ok_or(())?;
    let key = saved_key(id);
    // SAFETY: a copy is taken at once; only this thread writes its key.
    let args = *unsafe { SAVED_ARGS.get(key) }.ok_or(())?;
    let _ = SAVED_ARGS.remove(key);
    done(site, args, ctx.ret::<i64>())
}

/// Counts one completed call of a site.
#[inline(always)]
fn done(site: Site, args: [u64; 2], ret: i64) -> Result<(), ()> {
    let (idx, bytes) = match site {
        Site::Iter { user, .. } => (by_iter(args[0], user)?, ret),
        Site::SkbCopy => {
            if ret != 0 {
                return Ok(());
            }
            (
                by_iter(args[0], counter::COPY_SITE_K2U)?,
                i64::from(args[1] as i32),
            )
        }
        Site::TcpSend => {
            let msg = args[0];
            let iter_type: u8 = read(msg, layout!(msghdr_iter) + layout!(iter_type)).ok_or(())?;
            let flags: u32 = read(msg, layout!(msghdr_flags)).ok_or(())?;
            let idx = match SendClass::classify(iter_type, flags, layout!(user_iter_mask)) {
                SendClass::UserCopy => counter::COPY_SITE_U2K,
                SendClass::KernelCopy => counter::COPY_SITE_K2K,
                SendClass::PageRefs | SendClass::ZeroCopyPinned | SendClass::Unknown => {
                    counter::COPY_SITE_REFS
                }
            };
            (idx, ret)
        }
        Site::SendPages => (counter::COPY_SITE_REFS, ret),
    };
    if bytes <= 0 {
        return Ok(());
    }
    charge(current_traced(), idx, bytes as u64, false);
    Ok(())
}

/// The counter for bytes through `iter`: `user` when user memory is on the
/// other side, kernel-to-kernel otherwise; a pipe iterator (before 6.4,
/// splice reads) takes page references instead of copying.
#[inline(always)]
fn by_iter(iter: u64, user: usize) -> Result<usize, ()> {
    let t: u8 = read(iter, layout!(iter_type)).ok_or(())?;
    Ok(if u32::from(t) == layout!(iter_pipe) {
        counter::COPY_SITE_REFS
    } else if t < 32 && (layout!(user_iter_mask) >> t) & 1 == 1 {
        user
    } else {
        counter::COPY_SITE_K2K
    })
}
