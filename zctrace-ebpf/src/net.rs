//! Socket tracepoints: the receive copy to user memory, how a TCP send moves
//! its payload, and transmitted bytes per kind of device.

use aya_ebpf::programs::{BtfTracePointContext, RawTracePointContext};
use zctrace_common::{Call, SendClass, counter};

use crate::{
    kernel::{in_syscall, layout},
    state::{charge, current_regs_ptr, current_traced},
};

/// `IFF_LOOPBACK` (uapi).
const IFF_LOOPBACK: u32 = 0x8;

/// `skb_copy_datagram_iovec(skb, len)`: socket payload copied to the
/// receiver's iterator (user memory for recv/read).
pub fn try_skb_copy(ctx: &RawTracePointContext) -> Result<(), ()> {
    let len = ctx.arg::<u64>(1) as i32;
    if len <= 0 {
        return Ok(());
    }
    charge(current_traced(), counter::K2U_OBSERVED, len as u64, false);
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
    if st.send_class != SendClass::Unknown as u32 {
        return Ok(());
    }
    // Only a send from inside a syscall (sys_exit charges what it saw).
    if st.call == Call::None as u32 && !in_syscall(current_regs_ptr()) {
        return Ok(());
    }
    // A BTF pointer: the fields are read with plain loads at offsets the
    // verifier knows (LAYOUT is frozen read-only data) and checks against
    // the kernel's struct msghdr, instead of two probe-read helper calls.
    let msg = ctx.arg::<*const u8>(1);
    if msg.is_null() {
        return Ok(());
    }
    let iter_off = (layout!(msghdr_iter) + layout!(iter_type)) as usize;
    let flags_off = layout!(msghdr_flags) as usize;
    // SAFETY: fault-safe loads of msg->msg_iter.iter_type (u8) and
    // msg->msg_flags (unsigned int) at offsets read from this kernel's BTF.
    let (iter_type, flags) = unsafe {
        (
            core::ptr::read_volatile(msg.add(iter_off)),
            core::ptr::read_volatile(msg.add(flags_off).cast::<u32>()),
        )
    };
    st.send_class = SendClass::classify(iter_type, flags, layout!(user_iter_mask)) as u32;
    Ok(())
}

/// `net_dev_xmit(skb, rc, dev, skb_len)`, as a BTF tracepoint: the device's
/// flags are a plain load (see `try_tcp_sendmsg`).
pub fn try_xmit(ctx: &BtfTracePointContext) -> Result<(), ()> {
    if ctx.arg::<u64>(1) as i32 != 0 {
        return Ok(());
    }
    let dev = ctx.arg::<*const u8>(2);
    let len = ctx.arg::<u64>(3) as u32;
    if dev.is_null() {
        return Ok(());
    }
    let off = layout!(netdev_flags) as usize;
    // SAFETY: a fault-safe load of dev->flags (unsigned int) at the offset
    // read from this kernel's BTF.
    let flags = unsafe { core::ptr::read_volatile(dev.add(off).cast::<u32>()) };
    let parent_off = layout!(netdev_parent) as usize;
    // SAFETY: as above, dev->dev.parent (a pointer, compared with NULL).
    let parent = unsafe { core::ptr::read_volatile(dev.add(parent_off).cast::<u64>()) };
    // Loopback and software devices (no bus device under them: veth,
    // bridges, tun) hand the buffers on in memory: no DMA.
    let idx = if flags & IFF_LOOPBACK != 0 || parent == 0 {
        counter::XMIT_LOOPBACK_BYTES
    } else {
        counter::XMIT_DEVICE_BYTES
    };
    // A transmit belongs to a thread only from inside its syscall (a send
    // that transmits at once); run from a softirq it is nobody's.
    charge(current_traced(), idx, len as u64, true);
    Ok(())
}
