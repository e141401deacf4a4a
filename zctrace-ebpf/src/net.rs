//! Socket tracepoints: the receive copy to user memory, how a TCP send moves
//! its payload, and transmitted bytes per kind of device.

use aya_ebpf::programs::{BtfTracePointContext, RawTracePointContext};
use zctrace_common::{Call, SendClass, counter};

use crate::{
    kernel::{layout, read},
    state::{bump, current_traced},
};

/// `IFF_LOOPBACK` (uapi).
const IFF_LOOPBACK: u32 = 0x8;

/// `skb_copy_datagram_iovec(skb, len)`: socket payload copied to the
/// receiver's iterator (user memory for recv/read).
pub fn try_skb_copy(ctx: &RawTracePointContext) -> Result<(), ()> {
    let task = current_traced().ok_or(())?;
    let len = ctx.arg::<u64>(1) as i32;
    if len <= 0 {
        return Ok(());
    }
    bump(task, counter::K2U_OBSERVED, len as u64);
    Ok(())
}

/// `tcp_sendmsg_locked(sk, msg, skb, size_goal)`: the message's iterator
/// type and flags say whether the payload is copied from user memory,
/// pinned (MSG_ZEROCOPY) or attached by page reference (MSG_SPLICE_PAGES).
/// The first sighting per syscall classifies the whole call.
pub fn try_tcp_sendmsg(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let task = current_traced().ok_or(())?;
    if task.st.is_null() {
        return Ok(());
    }
    // SAFETY: this thread's own state (see syscalls::try_enter).
    let st = unsafe { &mut *task.st };
    if st.call == Call::None as u32 || st.send_class != SendClass::Unknown as u32 {
        return Ok(());
    }
    let msg = ctx.arg::<u64>(1);
    let iter_type: u8 = read(msg, layout!(msghdr_iter) + layout!(iter_type)).ok_or(())?;
    let flags: u32 = read(msg, layout!(msghdr_flags)).ok_or(())?;
    st.send_class = SendClass::classify(iter_type, flags, layout!(user_iter_mask)) as u32;
    Ok(())
}

/// `net_dev_xmit(skb, rc, dev, skb_len)`.
pub fn try_xmit(ctx: &RawTracePointContext) -> Result<(), ()> {
    let task = current_traced().ok_or(())?;
    if ctx.arg::<u64>(1) as i32 != 0 {
        return Ok(());
    }
    let dev = ctx.arg::<u64>(2);
    let len = ctx.arg::<u64>(3) as u32;
    let flags: u32 = read(dev, layout!(netdev_flags)).ok_or(())?;
    let idx = if flags & IFF_LOOPBACK != 0 {
        counter::XMIT_LOOPBACK_BYTES
    } else {
        counter::XMIT_DEVICE_BYTES
    };
    bump(task, idx, len as u64);
    Ok(())
}
