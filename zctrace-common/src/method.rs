//! How zctrace names what a syscall does: the call families, the I/O
//! methods, fd kinds, and the classification the kernel applies per call.

/// The I/O method a syscall is part of.
///
/// The kernel decides this per syscall from the call, the kinds of its file
/// descriptors and what the thread did before (see [`classify`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// Anything that is not part of a file-to-socket transfer method.
    Other = 0,
    /// `read()` from a file, then `write()`/`send()` of the same buffer.
    ReadWrite = 1,
    /// `mmap()` a file, then `write()` from the mapping.
    MmapWrite = 2,
    /// `sendfile()`.
    Sendfile = 3,
    /// `splice()` file to pipe, pipe to socket.
    Splice = 4,
    /// `vmsplice()` user pages into a pipe, then `splice()` onwards.
    Vmsplice = 5,
    /// `tee()` duplicating a pipe, drained by `splice()`.
    Tee = 6,
    /// `send()` with `MSG_ZEROCOPY`.
    ZeroCopySend = 7,
    /// `copy_file_range()`.
    CopyFileRange = 8,
    /// `read()`/`write()` on a file opened with `O_DIRECT`.
    DirectIo = 9,
    /// Receiving from a socket (`read`/`recv*` on a socket).
    SocketRecv = 10,
    /// Sending user memory to a socket with no file read before it.
    SocketSend = 11,
    /// `io_uring_enter()` calls that submitted no request (waiting for
    /// completions); the enters that submit are counted with the method
    /// of their last request.
    IoUring = 12,
    /// io_uring reads: `IORING_OP_READ`, `READV`, `READ_FIXED`,
    /// `READ_MULTISHOT`.
    UringRead = 13,
    /// io_uring writes: `IORING_OP_WRITE`, `WRITEV`, `WRITE_FIXED`.
    UringWrite = 14,
    /// `IORING_OP_SEND`, `SENDMSG`: user memory copied into the socket.
    UringSend = 15,
    /// `IORING_OP_RECV`, `RECVMSG`: socket data copied to user memory.
    UringRecv = 16,
    /// `IORING_OP_SEND_ZC`, `SENDMSG_ZC`: user pages pinned, a second
    /// completion (the notification) when the kernel lets go of them.
    UringSendZc = 17,
    /// `IORING_OP_SPLICE`, `TEE`: page references between pipes, files and
    /// sockets.
    UringSplice = 18,
    /// Every other io_uring operation (no payload: poll, timeouts, open,
    /// close, fsync, ...).
    UringOther = 19,
    /// The demo's ring method: file reads and socket sends through one
    /// ring (the kernel counts them as uring-read and uring-send).
    UringReadSend = 20,
    /// Counts that found the row map full: kept in the process's fallback
    /// row (or, when even that found no room, in one shared overflow row,
    /// pid 0) rather than lost. Totals stay exact; the method and flow of
    /// these counts are what is lost, and reports say how much.
    Fallback = 21,
    /// Both files mapped, the bytes copied by `memcpy` in user mode from
    /// one mapping into the other (the demo's file-to-file copy with no
    /// copy syscall). The kernel never classifies a call as this: the copy
    /// happens where no probe runs, and only the demo knows it happened.
    MmapMemcpy = 22,
}

impl Method {
    pub const COUNT: usize = 23;
    pub const ALL: [Method; Method::COUNT] = [
        Method::Other,
        Method::ReadWrite,
        Method::MmapWrite,
        Method::Sendfile,
        Method::Splice,
        Method::Vmsplice,
        Method::Tee,
        Method::ZeroCopySend,
        Method::CopyFileRange,
        Method::DirectIo,
        Method::SocketRecv,
        Method::SocketSend,
        Method::IoUring,
        Method::UringRead,
        Method::UringWrite,
        Method::UringSend,
        Method::UringRecv,
        Method::UringSendZc,
        Method::UringSplice,
        Method::UringOther,
        Method::UringReadSend,
        Method::Fallback,
        Method::MmapMemcpy,
    ];

    /// Validates a value read from a map. No table lookup: an index into
    /// `ALL` spilled to the stack loses its bounds on older verifiers
    /// (6.1, 6.12), which then refuse the program.
    pub const fn from_u32(v: u32) -> Option<Method> {
        if (v as usize) < Method::COUNT {
            // SAFETY: Method is repr(u32) and its discriminants are exactly
            // 0..COUNT (asserted below), and `v` is in that range.
            Some(unsafe { core::mem::transmute::<u32, Method>(v) })
        } else {
            None
        }
    }

    /// Stable, lower-case identifier (used on the command line and in JSON).
    pub const fn name(self) -> &'static str {
        match self {
            Method::Other => "other",
            Method::ReadWrite => "read-write",
            Method::MmapWrite => "mmap-write",
            Method::Sendfile => "sendfile",
            Method::Splice => "splice",
            Method::Vmsplice => "vmsplice",
            Method::Tee => "tee",
            Method::ZeroCopySend => "msg-zerocopy",
            Method::CopyFileRange => "copy-file-range",
            Method::DirectIo => "o-direct",
            Method::SocketRecv => "socket-recv",
            Method::SocketSend => "socket-send",
            Method::IoUring => "io-uring",
            Method::UringRead => "uring-read",
            Method::UringWrite => "uring-write",
            Method::UringSend => "uring-send",
            Method::UringRecv => "uring-recv",
            Method::UringSendZc => "uring-send-zc",
            Method::UringSplice => "uring-splice",
            Method::UringOther => "uring-other",
            Method::UringReadSend => "uring-read-send",
            Method::Fallback => "map-full",
            Method::MmapMemcpy => "mmap-memcpy",
        }
    }
}

/// The syscall family a thread is in, as far as zctrace distinguishes them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    /// Not in a syscall (user mode).
    None = 0,
    Read = 1,
    Pread = 2,
    Readv = 3,
    Write = 4,
    Pwrite = 5,
    Writev = 6,
    Sendfile = 7,
    Splice = 8,
    Vmsplice = 9,
    Tee = 10,
    CopyFileRange = 11,
    Sendto = 12,
    Sendmsg = 13,
    Recvfrom = 14,
    Recvmsg = 15,
    Mmap = 16,
    Munmap = 17,
    IoUringEnter = 18,
    /// Any other syscall (counted for mode switches only).
    Other = 19,
}

impl Call {
    pub const COUNT: usize = 20;
    pub const ALL: [Call; Call::COUNT] = [
        Call::None,
        Call::Read,
        Call::Pread,
        Call::Readv,
        Call::Write,
        Call::Pwrite,
        Call::Writev,
        Call::Sendfile,
        Call::Splice,
        Call::Vmsplice,
        Call::Tee,
        Call::CopyFileRange,
        Call::Sendto,
        Call::Sendmsg,
        Call::Recvfrom,
        Call::Recvmsg,
        Call::Mmap,
        Call::Munmap,
        Call::IoUringEnter,
        Call::Other,
    ];

    /// Validates a value read from a map (no table lookup: see
    /// [`Method::from_u32`]).
    pub const fn from_u32(v: u32) -> Option<Call> {
        if (v as usize) < Call::COUNT {
            // SAFETY: Call is repr(u32) with discriminants exactly 0..COUNT
            // (asserted below), and `v` is in that range.
            Some(unsafe { core::mem::transmute::<u32, Call>(v) })
        } else {
            None
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Call::None => "-",
            Call::Read => "read",
            Call::Pread => "pread64",
            Call::Readv => "readv",
            Call::Write => "write",
            Call::Pwrite => "pwrite64",
            Call::Writev => "writev",
            Call::Sendfile => "sendfile",
            Call::Splice => "splice",
            Call::Vmsplice => "vmsplice",
            Call::Tee => "tee",
            Call::CopyFileRange => "copy_file_range",
            Call::Sendto => "sendto",
            Call::Sendmsg => "sendmsg",
            Call::Recvfrom => "recvfrom",
            Call::Recvmsg => "recvmsg",
            Call::Mmap => "mmap",
            Call::Munmap => "munmap",
            Call::IoUringEnter => "io_uring_enter",
            Call::Other => "other",
        }
    }

    /// Whether zctrace looks at this call's arguments (its fds and flags).
    pub const fn is_io(self) -> bool {
        !matches!(self, Call::None | Call::Other)
    }

    /// Whether a positive return value is a byte count (mmap returns an
    /// address, io_uring_enter a number of submissions).
    pub const fn returns_bytes(self) -> bool {
        !matches!(
            self,
            Call::None | Call::Other | Call::Mmap | Call::Munmap | Call::IoUringEnter
        )
    }
}

// The discriminants are 0..COUNT in order, which `from_u32` relies on.
const _: () = {
    let mut i = 0;
    while i < Method::COUNT {
        assert!(Method::ALL[i] as usize == i);
        i += 1;
    }
    let mut i = 0;
    while i < Call::COUNT {
        assert!(Call::ALL[i] as usize == i);
        i += 1;
    }
    // FdKind::from_u32 relies on 0..COUNT being exactly its kinds.
    assert!(FdKind::Unix as usize == FdKind::COUNT - 1 && FdKind::Unknown as usize == 0);
};

/// What a file descriptor refers to, from the inode's `S_IFMT` bits and,
/// for sockets, the socket's family and protocol; [`FdKind::Memory`] is the
/// other end of a transfer that starts or ends in the program's own memory.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FdKind {
    Unknown = 0,
    File = 1,
    Pipe = 2,
    /// A socket of another family or protocol than the three below.
    Socket = 3,
    CharDev = 4,
    Other = 5,
    /// The program's memory: what a read fills and a write with no read
    /// before it sends (anonymous memory, not a file's mapping).
    Memory = 6,
    Tcp = 7,
    Udp = 8,
    Unix = 9,
}

impl FdKind {
    pub const COUNT: usize = 10;

    pub const fn from_mode(mode: u32) -> FdKind {
        match mode & 0o170_000 {
            0o100_000 => FdKind::File,
            0o010_000 => FdKind::Pipe,
            0o140_000 => FdKind::Socket,
            0o020_000 => FdKind::CharDev,
            0 => FdKind::Unknown,
            _ => FdKind::Other,
        }
    }

    /// A socket's kind from `sk_family` and `sk_protocol`.
    pub const fn of_socket(family: u16, protocol: u16) -> FdKind {
        const AF_UNIX: u16 = 1;
        const AF_INET: u16 = 2;
        const AF_INET6: u16 = 10;
        const IPPROTO_TCP: u16 = 6;
        const IPPROTO_UDP: u16 = 17;
        match (family, protocol) {
            (AF_UNIX, _) => FdKind::Unix,
            (AF_INET | AF_INET6, IPPROTO_TCP) => FdKind::Tcp,
            (AF_INET | AF_INET6, IPPROTO_UDP) => FdKind::Udp,
            _ => FdKind::Socket,
        }
    }

    /// Validates a value read from a map: one range check, no table (a
    /// match would hand the verifier one constant per kind, and it would
    /// check all that follows once for each).
    pub const fn from_u32(v: u32) -> FdKind {
        if (v as usize) < FdKind::COUNT {
            // SAFETY: FdKind is repr(u32) and its discriminants are exactly
            // 0..COUNT (asserted below), and `v` is in that range.
            unsafe { core::mem::transmute::<u32, FdKind>(v) }
        } else {
            FdKind::Unknown
        }
    }

    pub const fn is_socket(self) -> bool {
        matches!(
            self,
            FdKind::Socket | FdKind::Tcp | FdKind::Udp | FdKind::Unix
        )
    }

    pub const fn name(self) -> &'static str {
        match self {
            FdKind::Unknown => "?",
            FdKind::File => "file",
            FdKind::Pipe => "pipe",
            FdKind::Socket => "socket",
            FdKind::CharDev => "chardev",
            FdKind::Other => "other",
            FdKind::Memory => "memory",
            FdKind::Tcp => "tcp",
            FdKind::Udp => "udp",
            FdKind::Unix => "unix",
        }
    }
}

/// Where a row's payload came from and went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub src: FdKind,
    pub dst: FdKind,
}

impl Flow {
    /// No payload (a syscall that moves none, or one not understood).
    pub const NONE: Flow = Flow {
        src: FdKind::Unknown,
        dst: FdKind::Unknown,
    };

    pub const fn new(src: FdKind, dst: FdKind) -> Flow {
        Flow { src, dst }
    }
}

/// `MSG_ZEROCOPY` (uapi, all architectures).
pub const MSG_ZEROCOPY: u32 = 0x0400_0000;
/// `MSG_ERRQUEUE` (uapi, all architectures).
pub const MSG_ERRQUEUE: u32 = 0x2000;
/// `MSG_SPLICE_PAGES` (kernel-internal, 6.5+): the message carries page
/// references to be attached to the skb rather than copied.
pub const MSG_SPLICE_PAGES: u32 = 0x0800_0000;

/// What zctrace knows about one syscall when it enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallInfo {
    pub call: Call,
    /// Kind of the descriptor data comes from (the fd for reads).
    pub in_kind: FdKind,
    /// Kind of the descriptor data goes to (the fd for writes).
    pub out_kind: FdKind,
    /// The file side was opened with `O_DIRECT`.
    pub direct: bool,
    /// `MSG_ZEROCOPY` in the send flags.
    pub zerocopy: bool,
    /// `MSG_ERRQUEUE` in the receive flags (zero-copy completions).
    pub errqueue: bool,
    /// `mmap(MAP_SHARED)` of a file's data (not anonymous memory, not the
    /// dynamic loader's private, executable or fixed mappings).
    pub maps_file: bool,
    /// The data written comes from the thread's last shared file mapping
    /// (the buffer address lies inside it).
    pub from_mapping: bool,
}

impl CallInfo {
    pub const fn new(call: Call) -> CallInfo {
        CallInfo {
            call,
            in_kind: FdKind::Unknown,
            out_kind: FdKind::Unknown,
            direct: false,
            zerocopy: false,
            errqueue: false,
            maps_file: false,
            from_mapping: false,
        }
    }
}

/// What [`classify`] decided for one syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    /// The call's method.
    pub method: Method,
    /// The call's flow: where its payload comes from and goes to.
    pub flow: Flow,
    /// The thread's method and data source after the call (if it moves
    /// payload: a call that moves none leaves the thread as it was).
    pub next: Method,
    pub next_src: FdKind,
}

/// Decides the method and flow of one syscall, and what the thread is
/// doing after it.
///
/// `current` is what the thread was doing before (the method of its last
/// transfer-starting call) and `src` where the data in its buffers came
/// from (the kind of its last read; [`FdKind::Memory`] before any). A read
/// into user memory starts a read+write whose destination the next write
/// names: a file read then a socket write is read-write file -> tcp, a
/// socket receive then a file write is read-write tcp -> file (a
/// download). A socket receive is `socket-recv` (socket -> memory) itself;
/// a write with no read before it is `socket-send` to a socket and
/// read-write memory -> X otherwise. A write whose buffer lies in a shared
/// file mapping is mmap+write. Only syscalls that move no payload (or that
/// zctrace cannot read) are [`Method::Other`].
#[inline(always)]
pub fn classify(info: &CallInfo, current: Method, src: FdKind) -> Classified {
    let keep = |method: Method, flow: Flow| Classified {
        method,
        flow,
        next: current,
        next_src: src,
    };
    let start = |method: Method, flow: Flow| Classified {
        method,
        flow,
        next: method,
        next_src: flow.src,
    };
    let (i, o) = (info.in_kind, info.out_kind);
    match info.call {
        Call::Read | Call::Pread | Call::Readv | Call::Recvfrom | Call::Recvmsg => {
            let read = Flow::new(i, FdKind::Memory);
            if info.errqueue {
                // Zero-copy completion reports: part of msg-zerocopy.
                return keep(Method::ZeroCopySend, read);
            }
            match i {
                FdKind::File if info.direct => start(Method::DirectIo, read),
                FdKind::Unknown => keep(Method::Other, Flow::NONE),
                // Received data written on is a read+write from the socket.
                _ if i.is_socket() => Classified {
                    method: Method::SocketRecv,
                    flow: read,
                    next: Method::ReadWrite,
                    next_src: i,
                },
                _ => start(Method::ReadWrite, read),
            }
        }
        Call::Write | Call::Pwrite | Call::Writev => classify_write(info, current, src),
        Call::Sendto | Call::Sendmsg => {
            if info.zerocopy {
                start(Method::ZeroCopySend, Flow::new(FdKind::Memory, o))
            } else {
                classify_write(info, current, src)
            }
        }
        Call::Sendfile => start(Method::Sendfile, Flow::new(i, o)),
        Call::Splice => {
            let flow = Flow::new(i, o);
            match current {
                Method::Tee => start(Method::Tee, flow),
                Method::Vmsplice if matches!(i, FdKind::Pipe) => start(Method::Vmsplice, flow),
                _ => start(Method::Splice, flow),
            }
        }
        Call::Vmsplice => start(Method::Vmsplice, Flow::new(FdKind::Memory, o)),
        Call::Tee => start(Method::Tee, Flow::new(i, o)),
        Call::CopyFileRange => start(Method::CopyFileRange, Flow::new(i, o)),
        // Mapping a file moves no data by itself (like opening it): the
        // writes from the mapping are what make mmap+write.
        Call::Mmap | Call::Munmap => keep(Method::Other, Flow::NONE),
        // The requests carry the flows (see the io_uring hooks).
        Call::IoUringEnter => Classified {
            method: Method::IoUring,
            flow: Flow::NONE,
            next: Method::IoUring,
            next_src: src,
        },
        Call::None | Call::Other => keep(Method::Other, Flow::NONE),
    }
}

#[inline(always)]
fn classify_write(info: &CallInfo, current: Method, src: FdKind) -> Classified {
    let o = info.out_kind;
    if info.from_mapping {
        let flow = Flow::new(FdKind::File, o);
        return Classified {
            method: Method::MmapWrite,
            flow,
            next: Method::MmapWrite,
            next_src: FdKind::File,
        };
    }
    let keep = |method: Method, flow: Flow| Classified {
        method,
        flow,
        next: current,
        next_src: src,
    };
    match current {
        Method::ReadWrite | Method::MmapWrite | Method::DirectIo => {
            keep(current, Flow::new(src, o))
        }
        _ => {
            let flow = Flow::new(FdKind::Memory, o);
            match o {
                FdKind::File if info.direct => Classified {
                    method: Method::DirectIo,
                    flow,
                    next: Method::DirectIo,
                    next_src: FdKind::Memory,
                },
                FdKind::Unknown => keep(Method::Other, Flow::NONE),
                _ if o.is_socket() => keep(Method::SocketSend, flow),
                _ => keep(Method::ReadWrite, flow),
            }
        }
    }
}

/// Indexes into [`Counters::v`]. "Derived" counters are inferred from a
/// syscall's result and fd kinds; "observed" ones come from a probe at or
/// next to the place the kernel moves the bytes. They are never summed.
pub mod counter {
    /// Syscalls made (counted when they return; calls that never return,
    /// like exit_group, when the thread exits).
    pub const SYSCALLS: usize = 0;
    /// Bytes reported by successful I/O syscalls (their return values).
    pub const IO_BYTES: usize = 1;
    /// CPU copy user to kernel, derived from syscall results.
    pub const U2K_DERIVED: usize = 2;
    /// CPU copy kernel to user, derived from syscall results.
    pub const K2U_DERIVED: usize = 3;
    /// CPU copy kernel to kernel, derived from syscall results.
    pub const K2K_DERIVED: usize = 4;
    /// Page references handed over, derived from syscall results.
    pub const PAGEREF_DERIVED: usize = 5;
    /// User memory copied into socket buffers (`tcp:tcp_sendmsg_locked` saw a
    /// user-backed iterator).
    pub const U2K_OBSERVED: usize = 6;
    /// Socket data copied to user memory (`skb:skb_copy_datagram_iovec`).
    pub const K2U_OBSERVED: usize = 7;
    /// Pages attached to socket buffers by reference
    /// (`tcp:tcp_sendmsg_locked` saw `MSG_SPLICE_PAGES`).
    pub const PAGEREF_OBSERVED: usize = 8;
    /// User pages pinned for `MSG_ZEROCOPY` (`tcp:tcp_sendmsg_locked`).
    pub const ZC_PINNED_OBSERVED: usize = 9;
    /// Bytes moved by `O_DIRECT` I/O (device DMA to/from user memory).
    pub const DIRECT_IO_BYTES: usize = 10;
    /// Page faults taken in user mode (each is two mode switches).
    pub const FAULTS_USER: usize = 11;
    /// Page faults taken in kernel mode (e.g. copying from an mmap'd file).
    pub const FAULTS_KERNEL: usize = 12;
    /// The thread gave up the CPU voluntarily (it blocked).
    pub const CS_VOLUNTARY: usize = 13;
    /// The thread was preempted while runnable.
    pub const CS_INVOLUNTARY: usize = 14;
    /// Block requests issued for reading (device DMA into memory).
    pub const DISK_READ_BYTES: usize = 15;
    /// Block requests issued for writing.
    pub const DISK_WRITE_BYTES: usize = 16;
    /// Bytes transmitted on a device that does no DMA: loopback, or a
    /// software device with no bus device under it (veth, bridge, tun).
    pub const XMIT_LOOPBACK_BYTES: usize = 17;
    /// Bytes transmitted on a device on a bus (NIC DMA).
    pub const XMIT_DEVICE_BYTES: usize = 18;
    /// CPU copy kernel to kernel observed at a copy site (copy-site tier, or
    /// a kernel-backed iterator without `MSG_SPLICE_PAGES` at the socket).
    pub const K2K_OBSERVED: usize = 19;
    /// Copy-site tier (fexit/kprobe on the functions that do the copying,
    /// with the iterator's type): user to kernel.
    pub const COPY_SITE_U2K: usize = 20;
    /// Copy-site tier: kernel to user.
    pub const COPY_SITE_K2U: usize = 21;
    /// Copy-site tier: kernel to kernel.
    pub const COPY_SITE_K2K: usize = 22;
    /// Copy-site tier: pages handed to a socket by reference (or pinned).
    pub const COPY_SITE_REFS: usize = 23;
    /// io_uring requests completed (their results are the bytes, as a
    /// syscall's are: derived copies and page references by opcode).
    pub const URING_OPS: usize = 24;
    /// Zero-copy send notifications: the kernel let go of the pinned pages.
    pub const URING_ZC_NOTIFS: usize = 25;
    /// Notifications saying the kernel copied the data after all
    /// (`IORING_NOTIF_USAGE_ZC_COPIED`, when the program asked for reports).
    pub const URING_ZC_COPIED: usize = 26;
    pub const COUNT: usize = 27;

    /// Whether a hook sees this counter's bytes where the kernel moves
    /// them (copies, page references, block requests, transmits), so its
    /// bytes are kept in the ledger: seen = charged to rows + unattributed.
    pub const fn is_ledgered(idx: usize) -> bool {
        is_observed_payload(idx)
            || matches!(
                idx,
                DISK_READ_BYTES | DISK_WRITE_BYTES | XMIT_LOOPBACK_BYTES | XMIT_DEVICE_BYTES
            )
    }

    /// Whether the counter holds payload copied or referenced, as seen by
    /// a hook (not derived from a result; not a count of events or DMA).
    pub const fn is_observed_payload(idx: usize) -> bool {
        matches!(
            idx,
            U2K_OBSERVED
                | K2U_OBSERVED
                | PAGEREF_OBSERVED
                | ZC_PINNED_OBSERVED
                | K2K_OBSERVED
                | COPY_SITE_U2K
                | COPY_SITE_K2U
                | COPY_SITE_K2K
                | COPY_SITE_REFS
        )
    }
}

/// Which derived counter a successful I/O syscall's return value goes to.
pub const fn derived_counter(info: &CallInfo) -> Option<usize> {
    match info.call {
        Call::Read | Call::Pread | Call::Readv | Call::Recvfrom | Call::Recvmsg => {
            if info.errqueue {
                return None;
            }
            match info.in_kind {
                FdKind::File if info.direct => Some(counter::DIRECT_IO_BYTES),
                FdKind::File | FdKind::Pipe => Some(counter::K2U_DERIVED),
                k if k.is_socket() => Some(counter::K2U_DERIVED),
                _ => None,
            }
        }
        Call::Write | Call::Pwrite | Call::Writev | Call::Sendto | Call::Sendmsg => {
            match info.out_kind {
                FdKind::File if info.direct => Some(counter::DIRECT_IO_BYTES),
                k if k.is_socket() && info.zerocopy => Some(counter::PAGEREF_DERIVED),
                FdKind::File | FdKind::Pipe => Some(counter::U2K_DERIVED),
                k if k.is_socket() => Some(counter::U2K_DERIVED),
                _ => None,
            }
        }
        // Into a regular file the pages must be copied into its page cache;
        // into a pipe or socket they travel by reference.
        Call::Sendfile | Call::Splice => match info.out_kind {
            FdKind::File => Some(counter::K2K_DERIVED),
            _ => Some(counter::PAGEREF_DERIVED),
        },
        Call::Vmsplice | Call::Tee => Some(counter::PAGEREF_DERIVED),
        Call::CopyFileRange => Some(counter::K2K_DERIVED),
        _ => None,
    }
}

/// How a socket send moved its payload, from `tcp_sendmsg_locked`'s message.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendClass {
    Unknown = 0,
    UserCopy = 1,
    PageRefs = 2,
    ZeroCopyPinned = 3,
    KernelCopy = 4,
}

impl SendClass {
    pub const fn from_u32(v: u32) -> SendClass {
        match v {
            1 => SendClass::UserCopy,
            2 => SendClass::PageRefs,
            3 => SendClass::ZeroCopyPinned,
            4 => SendClass::KernelCopy,
            _ => SendClass::Unknown,
        }
    }

    /// Classifies from the iterator type and message flags. `user_iter_mask`
    /// has bit `n` set when `iter_type == n` means user memory (read from the
    /// running kernel's BTF, as the enum values differ between versions).
    pub const fn classify(iter_type: u8, msg_flags: u32, user_iter_mask: u32) -> SendClass {
        let user = iter_type < 32 && (user_iter_mask >> iter_type) & 1 == 1;
        if msg_flags & MSG_ZEROCOPY != 0 && user {
            SendClass::ZeroCopyPinned
        } else if user {
            SendClass::UserCopy
        } else if msg_flags & MSG_SPLICE_PAGES != 0 {
            SendClass::PageRefs
        } else {
            SendClass::KernelCopy
        }
    }

    pub const fn observed_counter(self) -> Option<usize> {
        match self {
            SendClass::Unknown => None,
            SendClass::UserCopy => Some(counter::U2K_OBSERVED),
            SendClass::PageRefs => Some(counter::PAGEREF_OBSERVED),
            SendClass::ZeroCopyPinned => Some(counter::ZC_PINNED_OBSERVED),
            SendClass::KernelCopy => Some(counter::K2K_OBSERVED),
        }
    }
}

/// io_uring operations by their UAPI opcode (`enum io_uring_op`, stable
/// across kernels).
pub mod uring_op {
    pub const READV: u8 = 1;
    pub const WRITEV: u8 = 2;
    pub const READ_FIXED: u8 = 4;
    pub const WRITE_FIXED: u8 = 5;
    pub const SENDMSG: u8 = 9;
    pub const RECVMSG: u8 = 10;
    pub const READ: u8 = 22;
    pub const WRITE: u8 = 23;
    pub const SEND: u8 = 26;
    pub const RECV: u8 = 27;
    pub const SPLICE: u8 = 30;
    pub const TEE: u8 = 33;
    pub const SEND_ZC: u8 = 47;
    pub const SENDMSG_ZC: u8 = 48;
    pub const READ_MULTISHOT: u8 = 49;
}

/// `IORING_CQE_F_MORE`: another completion of this request follows (a
/// zero-copy send's notification).
pub const IORING_CQE_F_MORE: u32 = 1 << 1;
/// `IORING_CQE_F_NOTIF`: this completion is a zero-copy notification.
pub const IORING_CQE_F_NOTIF: u32 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`, in a notification's result.
pub const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

/// The method of an io_uring request.
pub const fn uring_method(opcode: u8) -> Method {
    use uring_op::*;
    match opcode {
        READ | READV | READ_FIXED | READ_MULTISHOT => Method::UringRead,
        WRITE | WRITEV | WRITE_FIXED => Method::UringWrite,
        SEND | SENDMSG => Method::UringSend,
        RECV | RECVMSG => Method::UringRecv,
        SEND_ZC | SENDMSG_ZC => Method::UringSendZc,
        SPLICE | TEE => Method::UringSplice,
        _ => Method::UringOther,
    }
}

/// Where a completed request's bytes go, derived as a syscall's result is:
/// `file` is the kind of the request's file (for splice, the destination),
/// `direct` whether it was opened with `O_DIRECT`.
pub const fn uring_counter(opcode: u8, file: FdKind, direct: bool) -> Option<usize> {
    match uring_method(opcode) {
        Method::UringRead | Method::UringWrite if direct && matches!(file, FdKind::File) => {
            Some(counter::DIRECT_IO_BYTES)
        }
        Method::UringRead | Method::UringRecv => Some(counter::K2U_DERIVED),
        Method::UringWrite | Method::UringSend => Some(counter::U2K_DERIVED),
        // Pinned user pages, handed to the socket by reference (as
        // msg-zerocopy's are).
        Method::UringSendZc => Some(counter::PAGEREF_DERIVED),
        // Into a regular file the pages are copied into its page cache.
        Method::UringSplice if matches!(file, FdKind::File) && opcode == uring_op::SPLICE => {
            Some(counter::K2K_DERIVED)
        }
        Method::UringSplice => Some(counter::PAGEREF_DERIVED),
        _ => None,
    }
}

/// The flow of an io_uring request whose file (`req->file`) is of kind
/// `file`: a read fills memory from it, a write or send empties memory
/// into it. For a splice or tee the request's file is the destination and
/// the source is not read (`?`).
pub const fn uring_flow(opcode: u8, file: FdKind) -> Flow {
    match uring_method(opcode) {
        Method::UringRead | Method::UringRecv => Flow::new(file, FdKind::Memory),
        Method::UringWrite | Method::UringSend | Method::UringSendZc => {
            Flow::new(FdKind::Memory, file)
        }
        Method::UringSplice => Flow::new(FdKind::Unknown, file),
        _ => Flow::NONE,
    }
}
