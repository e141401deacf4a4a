//! The textbook numbers per method, and the one-line reasons shown when the
//! running kernel's measured numbers differ from them.

use serde::Serialize;
use zctrace_common::Method;

use super::{Measured, human_bytes, ratio};

/// Textbook cost of moving one chunk (MEASUREMENT.md's table, extended to
/// the other methods of the zero-copy literature).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Theory {
    pub syscalls_per_chunk: u32,
    pub mode_switches_per_chunk: u32,
    pub cpu_copies: u32,
    pub dma_copies: u32,
    pub total_copies: u32,
    /// The copy path, source to destination.
    pub path: &'static str,
}

const fn t(
    syscalls_per_chunk: u32,
    mode_switches_per_chunk: u32,
    cpu_copies: u32,
    dma_copies: u32,
    path: &'static str,
) -> Theory {
    Theory {
        syscalls_per_chunk,
        mode_switches_per_chunk,
        cpu_copies,
        dma_copies,
        total_copies: cpu_copies + dma_copies,
        path,
    }
}

pub const fn theory(m: Method) -> Option<Theory> {
    Some(match m {
        Method::ReadWrite => t(
            2,
            4,
            2,
            2,
            "disk =DMA=> page cache -CPU-> user buffer -CPU-> socket buffer =DMA=> NIC",
        ),
        Method::MmapWrite => t(
            1,
            4,
            1,
            2,
            "disk =DMA=> page cache (mapped into the process) -CPU-> socket buffer =DMA=> NIC",
        ),
        Method::Sendfile => t(
            1,
            2,
            0,
            2,
            "disk =DMA=> page cache ~refs~> socket buffer =gather DMA=> NIC",
        ),
        Method::Splice => t(
            2,
            4,
            0,
            2,
            "disk =DMA=> page cache ~refs~> pipe ~refs~> socket buffer =DMA=> NIC",
        ),
        Method::Vmsplice => t(
            2,
            4,
            0,
            1,
            "user pages ~refs~> pipe ~refs~> socket buffer =DMA=> NIC",
        ),
        Method::Tee => t(
            4,
            8,
            0,
            3,
            "disk =DMA=> page cache ~refs~> pipe ~tee refs~> 2nd pipe; both ~refs~> sockets =DMA=> NIC x2",
        ),
        Method::ZeroCopySend => t(
            1,
            2,
            0,
            1,
            "user pages (pinned) ~refs~> socket buffer =DMA=> NIC; completion on the error queue",
        ),
        Method::CopyFileRange => t(
            1,
            2,
            0,
            2,
            "disk =DMA=> page cache, in-kernel copy or shared extents, page cache =DMA=> disk",
        ),
        Method::DirectIo => t(
            2,
            4,
            1,
            2,
            "disk =DMA=> user buffer (no page cache) -CPU-> socket buffer =DMA=> NIC",
        ),
        Method::SocketRecv => t(1, 2, 1, 1, "NIC =DMA=> socket buffer -CPU-> user buffer"),
        Method::SocketSend => t(1, 2, 1, 1, "user buffer -CPU-> socket buffer =DMA=> NIC"),
        // A ring: the requests of many chunks go in with one
        // io_uring_enter, so syscalls and mode switches per chunk fall below
        // one (shown as 0 here: the table counts whole ones).
        Method::UringReadSend => t(
            0,
            0,
            2,
            2,
            "disk =DMA=> page cache -CPU-> user buffer -CPU-> socket buffer =DMA=> NIC, \
             requests batched through a ring",
        ),
        Method::UringSplice => t(
            0,
            0,
            0,
            2,
            "disk =DMA=> page cache ~refs~> pipe ~refs~> socket buffer =DMA=> NIC, \
             requests batched through a ring",
        ),
        Method::UringSendZc => t(
            0,
            0,
            0,
            1,
            "user pages (pinned) ~refs~> socket buffer =DMA=> NIC; a notification \
             completion when the pages are free",
        ),
        // Nothing per chunk goes through a syscall: the kernel is entered
        // only by the page faults (2 switches each), which the table's
        // per-chunk columns do not count.
        Method::MmapMemcpy => t(
            0,
            0,
            1,
            2,
            "disk =DMA=> page cache (source, mapped) -CPU memcpy in user mode-> page cache \
             (copy, mapped) =DMA=> disk at writeback",
        ),
        Method::Other
        | Method::IoUring
        | Method::UringRead
        | Method::UringWrite
        | Method::UringSend
        | Method::UringRecv
        | Method::UringOther
        | Method::Fallback => return None,
    })
}

/// Whether the method reads its payload from a file (so disk DMA would
/// appear when the file is not cached).
pub const fn reads_file(m: Method) -> bool {
    matches!(
        m,
        Method::ReadWrite
            | Method::MmapWrite
            | Method::Sendfile
            | Method::Splice
            | Method::Tee
            | Method::CopyFileRange
            | Method::UringReadSend
            | Method::UringSplice
            | Method::DirectIo
            | Method::MmapMemcpy
    )
}

/// What the measurement ran against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Bytes of payload the method delivered (per destination).
    pub payload: u64,
    /// Chunks the payload was sent in.
    pub chunks: u64,
    /// The destination was a loopback socket.
    pub loopback: bool,
}

/// One-line reasons where the measurement differs from the textbook.
pub fn explain(m: Method, meas: &Measured, ctx: &Context) -> Vec<String> {
    let mut out = Vec::new();
    let Some(th) = theory(m) else { return out };
    let cpu = meas.cpu_copies_per_byte(ctx.payload);
    let d = &meas.dma_bytes;
    if ctx.loopback && d.nic == 0 && th.dma_copies > 0 && m != Method::CopyFileRange {
        out.push("loopback: no NIC, so no transmit DMA (the textbook's last copy)".into());
    } else if !ctx.loopback && d.nic == 0 && meas.loopback_bytes > 0 {
        out.push(
            "a software interface (veth, bridge, tun): no NIC under it, so no transmit DMA (the \
             textbook's last copy)"
                .into(),
        );
    }
    if reads_file(m) && m != Method::DirectIo {
        if d.disk_read == 0 {
            out.push("file was in the page cache: no disk DMA".into());
        } else {
            out.push(format!(
                "disk DMA: {} read from the device",
                human_bytes(d.disk_read)
            ));
        }
    }
    let refs = ratio(meas.page_ref_bytes.value, ctx.payload);
    match m {
        Method::Sendfile | Method::Splice | Method::Tee | Method::Vmsplice if refs >= 0.9 => {
            out.push(format!(
                "{:.2} CPU copies per byte: the socket got page references, not copies{}",
                cpu,
                if meas.page_ref_bytes.hook.is_some() {
                    " (MSG_SPLICE_PAGES seen)"
                } else {
                    ""
                }
            ));
        }
        Method::MmapWrite => {
            out.push(format!(
                "{} user + {} kernel page faults mapped the file in (a user fault costs 2 mode \
                 switches; a fault inside write() costs none)",
                meas.page_faults_user, meas.page_faults_kernel
            ));
            if ctx.chunks > 1 && ratio(meas.mode_switches, ctx.chunks) < 3.0 {
                out.push(
                    "the textbook's 4 switches count the mmap() call with the write(); one \
                     mapping serves every chunk here, so a chunk costs one write(): 2 switches"
                        .into(),
                );
            }
        }
        Method::MmapMemcpy => {
            out.push(format!(
                "the memcpy ran in user mode, where no kernel probe runs: the {} copied are \
                 inferred (the copy's size, checked by CRC), not measured; the probes saw {} CPU \
                 copies by the kernel",
                human_bytes(ctx.payload),
                human_bytes(
                    meas.cpu_copy_bytes.user_to_kernel.value
                        + meas.cpu_copy_bytes.kernel_to_user.value
                        + meas.cpu_copy_bytes.kernel_to_kernel.value
                )
            ));
            let pages = ctx.payload.div_ceil(4096);
            out.push(format!(
                "{} user page faults for the 2 x {pages} pages of the two mappings (one fault maps \
                 several pages: fault-around, large folios), {} mode switches in all, {} of \
                 them for {} syscalls of set-up",
                meas.page_faults_user,
                meas.mode_switches,
                2 * meas.syscalls,
                meas.syscalls
            ));
            let written = meas.dma_bytes.disk_write;
            if written > 0 {
                out.push(format!(
                    "{} of dirty pages written back from this thread (msync, disk DMA){}",
                    human_bytes(written),
                    if written < ctx.payload * 9 / 10 {
                        "; the kernel's flusher threads wrote the rest before msync (their \
                         bytes are nobody's: unattributed in the ledger)"
                    } else {
                        ""
                    }
                ));
            } else {
                out.push(
                    "no block writes from this thread: the copy's filesystem has no block device \
                     (tmpfs), or the kernel's flusher threads write it back later (nobody's bytes)"
                        .into(),
                );
            }
        }
        Method::CopyFileRange => {
            let k2k = ratio(meas.cpu_copy_bytes.kernel_to_kernel.value, ctx.payload);
            if k2k >= 0.9 {
                out.push(
                    "no shared extents (reflink) on this filesystem: the kernel copied \
                     page cache to page cache (kernel-to-kernel)"
                        .into(),
                );
            }
        }
        Method::UringReadSend | Method::UringSplice | Method::UringSendZc => {
            let (plain, switches) = match m {
                Method::UringReadSend => ("read+write", 4),
                Method::UringSplice => ("splice", 4),
                _ => ("MSG_ZEROCOPY", 2),
            };
            out.push(format!(
                "a ring: {} requests went in with {} io_uring_enter calls, {:.2} mode switches per \
                 chunk where {plain} takes {switches}; the copies are the same",
                meas.uring.ops,
                meas.syscalls,
                ratio(meas.mode_switches, ctx.chunks),
            ));
            if m == Method::UringReadSend && cpu >= 1.9 {
                out.push(
                    "copies derived from the requests' results (the tracepoint tier sees no \
                     copy inside a ring's read or send)"
                        .into(),
                );
            }
        }
        Method::DirectIo if meas.direct_io_bytes > 0 => out.push(
            "O_DIRECT: the device DMAs straight into the user buffer, bypassing the page cache"
                .into(),
        ),
        _ => {}
    }
    // (A ring's syscalls per chunk are below one by design: noted above.)
    if ctx.chunks > 0 && th.syscalls_per_chunk > 0 {
        let per_chunk = ratio(meas.syscalls, ctx.chunks);
        if per_chunk > f64::from(th.syscalls_per_chunk) * 1.25 {
            out.push(format!(
                "{per_chunk:.2} syscalls per chunk vs {} in theory: some calls moved less than a chunk",
                th.syscalls_per_chunk
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use zctrace_common::{Counters, counter};

    use super::*;
    use crate::model::HookSet;

    #[test]
    fn textbook_table_matches_measurement_md() {
        let rw = theory(Method::ReadWrite).expect("read-write");
        assert_eq!((rw.syscalls_per_chunk, rw.mode_switches_per_chunk), (2, 4));
        assert_eq!((rw.cpu_copies, rw.dma_copies, rw.total_copies), (2, 2, 4));
        let mm = theory(Method::MmapWrite).expect("mmap");
        assert_eq!((mm.cpu_copies, mm.total_copies), (1, 3));
        let sf = theory(Method::Sendfile).expect("sendfile");
        assert_eq!(
            (
                sf.syscalls_per_chunk,
                sf.mode_switches_per_chunk,
                sf.total_copies
            ),
            (1, 2, 2)
        );
        let sp = theory(Method::Splice).expect("splice");
        assert_eq!(
            (sp.syscalls_per_chunk, sp.cpu_copies, sp.total_copies),
            (2, 0, 2)
        );
        assert!(theory(Method::Other).is_none());
    }

    #[test]
    fn loopback_and_cache_are_explained() {
        let mut c = Counters::ZERO;
        c.v[counter::SYSCALLS] = 512;
        c.v[counter::U2K_DERIVED] = 16 << 20;
        c.v[counter::K2U_DERIVED] = 16 << 20;
        c.v[counter::XMIT_LOOPBACK_BYTES] = 17 << 20;
        let m = Measured::from_counters(&c, HookSet::tracepoint_tier());
        let ctx = Context {
            payload: 16 << 20,
            chunks: 256,
            loopback: true,
        };
        let notes = explain(Method::ReadWrite, &m, &ctx);
        assert!(notes.iter().any(|n| n.contains("loopback")), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("page cache")), "{notes:?}");
        assert!(
            !notes.iter().any(|n| n.contains("syscalls per chunk")),
            "{notes:?}"
        );
    }

    #[test]
    fn page_references_and_short_calls_are_explained() {
        let mut c = Counters::ZERO;
        c.v[counter::SYSCALLS] = 600;
        c.v[counter::PAGEREF_OBSERVED] = 16 << 20;
        c.v[counter::DISK_READ_BYTES] = 16 << 20;
        let m = Measured::from_counters(&c, HookSet::tracepoint_tier());
        let ctx = Context {
            payload: 16 << 20,
            chunks: 256,
            loopback: true,
        };
        let notes = explain(Method::Sendfile, &m, &ctx);
        assert!(
            notes.iter().any(|n| n.contains("page references")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("disk DMA: 16.0M")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("2.34 syscalls per chunk")),
            "{notes:?}"
        );
    }
}
