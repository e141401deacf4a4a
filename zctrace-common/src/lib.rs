//! Types and pure logic shared by zctrace's eBPF programs and its userspace.
//!
//! Everything here is `no_std`, `#[repr(C)]` and free of implicit padding, so
//! the same bytes mean the same thing on both sides of the map boundary. The
//! classification functions are plain `const fn`s: the eBPF programs call
//! them in the kernel, and the host unit tests call the very same code.
#![no_std]

/// Slots of per-process fd epochs, indexed by process id modulo this (a
/// power of two). Two processes sharing a slot only invalidate each other's
/// fd-kind caches more often; they never read a stale kind.
pub const EPOCH_SLOTS: u32 = 4_096;
/// Slots of the kernel's thread table (a power of two).
pub const THREAD_SLOTS: u32 = 1 << THREAD_SLOT_BITS;
const THREAD_SLOT_BITS: u32 = 14;

/// The thread-table slot of the thread whose saved user registers are at
/// `regs` (`task_pt_regs`, at the top of its kernel stack). Kernel stacks
/// are 16 KiB or more apart, so the address above bit 14 tells threads
/// apart; a multiplicative hash spreads those bits over the table.
pub const fn thread_slot(regs: u64) -> u32 {
    ((regs >> 14) as u32).wrapping_mul(0x9E37_79B9) >> (32 - THREAD_SLOT_BITS)
}

/// Upper bound on traced processes.
pub const MAX_PROCESSES: u32 = 4_096;
/// Upper bound on (process, thread, method, call) counter rows.
pub const MAX_COUNTER_ROWS: u32 = 32_768;
/// Size of the event ring buffer in bytes (a power of two, page aligned).
pub const EVENT_RING_BYTES: u32 = 1 << 20;

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
    /// `io_uring_enter()` (counted; the ring hides the individual ops).
    IoUring = 12,
}

impl Method {
    pub const COUNT: usize = 13;
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
    ];

    /// Validates a value read from a map (never transmute kernel bytes).
    pub const fn from_u32(v: u32) -> Option<Method> {
        if (v as usize) < Method::COUNT {
            Some(Method::ALL[v as usize])
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

    pub const fn from_u32(v: u32) -> Option<Call> {
        if (v as usize) < Call::COUNT {
            Some(Call::ALL[v as usize])
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

    /// Whether an x86_64 syscall can change what an fd number refers to
    /// (or its flags): close, dup2, dup3, close_range, fcntl, execve(at).
    pub const fn x86_64_changes_fds(nr: u64) -> bool {
        matches!(nr, 3 | 33 | 292 | 436 | 72 | 59 | 322)
    }

    /// The same for aarch64: close, dup3, close_range, fcntl, execve(at).
    pub const fn aarch64_changes_fds(nr: u64) -> bool {
        matches!(nr, 57 | 24 | 436 | 25 | 221 | 281)
    }

    /// Maps an x86_64 syscall number to the family zctrace tracks.
    pub const fn from_x86_64_nr(nr: u64) -> Call {
        match nr {
            0 => Call::Read,
            1 => Call::Write,
            9 => Call::Mmap,
            11 => Call::Munmap,
            17 => Call::Pread,
            18 => Call::Pwrite,
            19 | 295 | 327 => Call::Readv,  // readv, preadv, preadv2
            20 | 296 | 328 => Call::Writev, // writev, pwritev, pwritev2
            40 => Call::Sendfile,
            44 => Call::Sendto,
            45 => Call::Recvfrom,
            46 | 307 => Call::Sendmsg, // sendmsg, sendmmsg
            47 | 299 => Call::Recvmsg, // recvmsg, recvmmsg
            275 => Call::Splice,
            276 => Call::Tee,
            278 => Call::Vmsplice,
            326 => Call::CopyFileRange,
            426 => Call::IoUringEnter,
            _ => Call::Other,
        }
    }

    /// Maps an aarch64 (asm-generic) syscall number to the family.
    pub const fn from_aarch64_nr(nr: u64) -> Call {
        match nr {
            63 => Call::Read,
            64 => Call::Write,
            222 => Call::Mmap,
            215 => Call::Munmap,
            67 => Call::Pread,
            68 => Call::Pwrite,
            65 | 69 | 286 => Call::Readv,
            66 | 70 | 287 => Call::Writev,
            71 => Call::Sendfile,
            206 => Call::Sendto,
            207 => Call::Recvfrom,
            211 | 269 => Call::Sendmsg,
            212 | 243 => Call::Recvmsg,
            76 => Call::Splice,
            77 => Call::Tee,
            75 => Call::Vmsplice,
            285 => Call::CopyFileRange,
            426 => Call::IoUringEnter,
            _ => Call::Other,
        }
    }
}

/// What a file descriptor refers to, from the inode's `S_IFMT` bits.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    Unknown = 0,
    File = 1,
    Pipe = 2,
    Socket = 3,
    CharDev = 4,
    Other = 5,
}

impl FdKind {
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

    pub const fn from_u32(v: u32) -> FdKind {
        match v {
            1 => FdKind::File,
            2 => FdKind::Pipe,
            3 => FdKind::Socket,
            4 => FdKind::CharDev,
            5 => FdKind::Other,
            _ => FdKind::Unknown,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            FdKind::Unknown => "?",
            FdKind::File => "file",
            FdKind::Pipe => "pipe",
            FdKind::Socket => "socket",
            FdKind::CharDev => "chardev",
            FdKind::Other => "other",
        }
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

/// Decides the method of one syscall and the thread's new "current method".
///
/// `current` is what the thread was doing before (the method of its last
/// transfer-starting call). A `write()` only belongs to read+write if the
/// thread read a file first; from an mmap'd file it is mmap+write; otherwise
/// it is a plain socket send. A write whose buffer lies in a shared file
/// mapping is mmap+write. Anything unclear lands in [`Method::Other`]
/// instead of being misfiled.
pub const fn classify(info: &CallInfo, current: Method) -> (Method, Method) {
    match info.call {
        Call::Read | Call::Pread | Call::Readv => match info.in_kind {
            FdKind::File if info.direct => (Method::DirectIo, Method::DirectIo),
            FdKind::File => (Method::ReadWrite, Method::ReadWrite),
            FdKind::Socket => (Method::SocketRecv, current),
            // Data from a pipe or a device: what is written next is that
            // data, not the file read before (dd from /dev/zero).
            FdKind::Pipe | FdKind::CharDev | FdKind::Other => (Method::Other, Method::Other),
            FdKind::Unknown => (Method::Other, current),
        },
        Call::Write | Call::Pwrite | Call::Writev => classify_write(info, current),
        Call::Sendto | Call::Sendmsg => {
            if info.zerocopy {
                (Method::ZeroCopySend, Method::ZeroCopySend)
            } else {
                classify_write(info, current)
            }
        }
        Call::Recvfrom | Call::Recvmsg => {
            if info.errqueue {
                (Method::ZeroCopySend, current)
            } else {
                (Method::SocketRecv, current)
            }
        }
        Call::Sendfile => (Method::Sendfile, Method::Sendfile),
        Call::Splice => match current {
            Method::Tee => (Method::Tee, Method::Tee),
            Method::Vmsplice if matches!(info.in_kind, FdKind::Pipe) => {
                (Method::Vmsplice, Method::Vmsplice)
            }
            _ => (Method::Splice, Method::Splice),
        },
        Call::Vmsplice => (Method::Vmsplice, Method::Vmsplice),
        Call::Tee => (Method::Tee, Method::Tee),
        Call::CopyFileRange => (Method::CopyFileRange, Method::CopyFileRange),
        // Mapping a file moves no data by itself (like opening it): the
        // writes from the mapping are what make mmap+write.
        Call::Mmap | Call::Munmap => (Method::Other, current),
        Call::IoUringEnter => (Method::IoUring, Method::IoUring),
        Call::None | Call::Other => (Method::Other, current),
    }
}

const fn classify_write(info: &CallInfo, current: Method) -> (Method, Method) {
    if info.from_mapping {
        return (Method::MmapWrite, Method::MmapWrite);
    }
    match current {
        Method::ReadWrite | Method::MmapWrite | Method::DirectIo => (current, current),
        _ => match info.out_kind {
            FdKind::File if info.direct => (Method::DirectIo, Method::DirectIo),
            FdKind::Socket => (Method::SocketSend, current),
            _ => (Method::Other, current),
        },
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
    /// Bytes transmitted on a loopback device (no DMA).
    pub const XMIT_LOOPBACK_BYTES: usize = 17;
    /// Bytes transmitted on a real device (NIC DMA).
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
    pub const COUNT: usize = 24;
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
                FdKind::File | FdKind::Pipe | FdKind::Socket => Some(counter::K2U_DERIVED),
                _ => None,
            }
        }
        Call::Write | Call::Pwrite | Call::Writev | Call::Sendto | Call::Sendmsg => {
            match info.out_kind {
                FdKind::File if info.direct => Some(counter::DIRECT_IO_BYTES),
                FdKind::Socket if info.zerocopy => Some(counter::PAGEREF_DERIVED),
                FdKind::File | FdKind::Pipe | FdKind::Socket => Some(counter::U2K_DERIVED),
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

/// Key of a counter row: one (process, thread, method, call) combination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub tgid: u32,
    pub tid: u32,
    pub method: u32,
    pub call: u32,
}

/// One counter row (per CPU in the kernel; userspace sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub v: [u64; counter::COUNT],
}

impl Counters {
    pub const ZERO: Counters = Counters {
        v: [0; counter::COUNT],
    };

    /// Adds another row, saturating (a counter never wraps silently).
    pub fn add(&mut self, other: &Counters) {
        let mut i = 0;
        while i < counter::COUNT {
            self.v[i] = self.v[i].saturating_add(other.v[i]);
            i += 1;
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters::ZERO
    }
}

/// Per-thread state the kernel keeps between `sys_enter` and `sys_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadState {
    // First cache line: what sys_exit and the other hooks read.
    /// Address of the thread's saved user registers while it holds a slot
    /// of the kernel's thread table (0: the slot is free).
    pub owner: u64,
    /// Length of the thread's last shared file mapping (0: none).
    pub map_len: u64,
    /// The traced-set generation (`config::GENERATION`) this state was
    /// last checked against.
    pub generation: u32,
    /// The thread's ids, read once when the state is created (and again
    /// after an exec, which can change them).
    pub tgid: u32,
    pub tid: u32,
    /// [`Call`] in flight, `Call::None` in user mode.
    pub call: u32,
    /// [`Method`] of the call in flight.
    pub method: u32,
    /// The method the thread is currently doing (see [`classify`]).
    pub current: u32,
    /// Bit 0 direct, 1 zerocopy, 2 errqueue, 3 maps_file ([`FLAG_MAPS_FILE`]),
    /// 4 from_mapping, 5 exec ([`FLAG_EXEC`]), 6 timed ([`FLAG_TIMED`]).
    pub flags: u32,
    /// [`SendClass`] seen by `tcp_sendmsg_locked` during this call.
    pub send_class: u32,
    /// Counter row of the call in flight ([`NO_ROW`] when there is none).
    pub row: u32,
    /// Derived-copy counter the call in flight adds its bytes to
    /// ([`NO_COUNTER`] when none).
    pub derived: u32,
    /// Non-zero: the thread's process is traced. Table slots remember
    /// untraced threads too, so their syscalls are turned away by the
    /// same two compares (until the traced set changes: a generation bump).
    pub traced: u32,
    pub _pad0: u32,
    // Second line: sys_enter's caches.
    /// The kinds and flags of the thread's two most recent fds, valid while
    /// the process's fd epoch (bumped by close, dup2, dup3, close_range,
    /// fcntl, execve) is unchanged: a hit saves eight kernel reads.
    pub fd_cache_fd: [u32; 2],
    pub fd_cache_epoch: [u32; 2],
    pub fd_cache_kind: [u32; 2],
    pub fd_cache_flags: [u32; 2],
    /// The thread's recently used counter rows: (method << 8 | call) and
    /// the row's index, so the hot path finds its row without hashing.
    pub row_key: [u32; ROW_CACHE],
    pub row_idx: [u32; ROW_CACHE],
    // Third line: the rarely needed.
    /// When the call in flight entered (only with [`FLAG_TIMED`]).
    pub enter_ns: u64,
    /// Start of the thread's last shared file mapping.
    pub map_start: u64,
    /// Length asked for by an `mmap()` in flight (kept until it returns).
    pub mmap_len: u64,
    /// The next row-cache slot to replace (round robin).
    pub row_next: u32,
    /// The [`FdKind`]s of the call in flight (for the event log).
    pub in_kind: u32,
    pub out_kind: u32,
    /// The next memo entry to replace.
    pub memo_next: u32,
    pub _reserved: [u64; 3],
    // Fourth line: sys_enter's memo. 256 bytes in all: four whole cache
    // lines (the thread table's values start page aligned).
    /// The thread's last classifications of single-fd reads and writes,
    /// replayed while nothing they depend on has changed.
    pub memo: [EnterMemo; MEMO_SIZE],
}

/// Entries in [`ThreadState::memo`].
pub const MEMO_SIZE: usize = 2;

/// What sys_enter decided for one syscall, and what that depended on.
/// A read, or a write whose buffer is not in the thread's file mapping,
/// of one fd depends only on the call, the fd's kind and flags (valid
/// while the process's fd epoch is unchanged) and the thread's method
/// before it: a loop of such calls, like dd's, is classified once and
/// then replayed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnterMemo {
    /// Syscall number + 1 (0: an empty entry).
    pub nr: u32,
    pub fd: u32,
    pub epoch: u32,
    /// Method before the call | call << 8 | method << 16 | method after
    /// the call << 24 (all below 256).
    pub methods: u32,
    /// [`ThreadState::flags`] of the call (without per-call bits).
    pub flags: u32,
    pub derived: u32,
    pub row: u32,
    /// in_kind | out_kind << 8.
    pub kinds: u32,
}

impl EnterMemo {
    pub const EMPTY: EnterMemo = EnterMemo {
        nr: 0,
        fd: 0,
        epoch: 0,
        methods: 0,
        flags: 0,
        derived: 0,
        row: 0,
        kinds: 0,
    };

    /// The key part of `methods`: the thread's method before the call.
    pub const fn current(&self) -> u32 {
        self.methods & 0xff
    }

    pub const fn call(&self) -> u32 {
        (self.methods >> 8) & 0xff
    }

    pub const fn method(&self) -> u32 {
        (self.methods >> 16) & 0xff
    }

    pub const fn next(&self) -> u32 {
        self.methods >> 24
    }

    pub const fn methods(current: u32, call: u32, method: u32, next: u32) -> u32 {
        (current & 0xff) | (call & 0xff) << 8 | (method & 0xff) << 16 | (next & 0xff) << 24
    }
}

/// Entries in [`ThreadState`]'s counter-row cache.
pub const ROW_CACHE: usize = 4;
/// No counter row.
pub const NO_ROW: u32 = u32::MAX;
/// No counter.
pub const NO_COUNTER: u32 = u32::MAX;
/// Bit of [`ThreadState::flags`]: the call in flight maps a file.
pub const FLAG_MAPS_FILE: u32 = 1 << 3;
/// Bit of [`ThreadState::flags`]: the call in flight is an exec (the
/// thread's ids may change).
pub const FLAG_EXEC: u32 = 1 << 5;
/// Bit of [`ThreadState::flags`]: `enter_ns` holds the call's start (the
/// event log is on), so sys_exit reads the third cache line only then.
pub const FLAG_TIMED: u32 = 1 << 6;

impl ThreadState {
    pub const NEW: ThreadState = ThreadState {
        enter_ns: 0,
        owner: 0,
        map_start: 0,
        map_len: 0,
        mmap_len: 0,
        fd_cache_fd: [u32::MAX; 2],
        fd_cache_epoch: [0; 2],
        fd_cache_kind: [0; 2],
        fd_cache_flags: [0; 2],
        call: Call::None as u32,
        method: Method::Other as u32,
        current: Method::Other as u32,
        in_kind: 0,
        out_kind: 0,
        flags: 0,
        send_class: 0,
        generation: 0,
        tgid: 0,
        tid: 0,
        row: NO_ROW,
        derived: NO_COUNTER,
        row_key: [u32::MAX; ROW_CACHE],
        row_idx: [NO_ROW; ROW_CACHE],
        row_next: 0,
        memo_next: 0,
        _reserved: [0; 3],
        memo: [EnterMemo::EMPTY; MEMO_SIZE],
        traced: 0,
        _pad0: 0,
    };

    const fn row_cache_key(method: u32, call: u32) -> u32 {
        (method & 0xff) << 8 | (call & 0xff)
    }

    /// The cached counter row of (method, call), if the thread used it
    /// recently.
    #[inline(always)]
    pub fn cached_row(&self, method: u32, call: u32) -> Option<u32> {
        let k = Self::row_cache_key(method, call);
        let mut i = 0;
        while i < ROW_CACHE {
            if self.row_key[i] == k {
                return Some(self.row_idx[i]);
            }
            i += 1;
        }
        None
    }

    /// Remembers a counter row, replacing the oldest entry.
    #[inline(always)]
    pub fn remember_row(&mut self, method: u32, call: u32, idx: u32) {
        let i = self.row_next as usize % ROW_CACHE;
        self.row_key[i] = Self::row_cache_key(method, call);
        self.row_idx[i] = idx;
        self.row_next = ((i + 1) % ROW_CACHE) as u32;
    }

    /// Forgets every cached row, and the memo entries, which name rows
    /// (after userspace recycled rows, or an exec changed the thread's ids).
    #[inline(always)]
    pub fn forget_rows(&mut self) {
        self.row_key = [u32::MAX; ROW_CACHE];
        self.row_idx = [NO_ROW; ROW_CACHE];
        self.memo = [EnterMemo::EMPTY; MEMO_SIZE];
    }

    /// The memo entry for syscall `nr` on `fd` at fd epoch `epoch` from
    /// the thread's current method, if there is one.
    #[inline(always)]
    pub fn memo_find(&self, nr: u32, fd: u32, epoch: u32) -> Option<&EnterMemo> {
        let mut i = 0;
        while i < MEMO_SIZE {
            let m = &self.memo[i];
            if m.nr == nr.wrapping_add(1)
                && m.fd == fd
                && m.epoch == epoch
                && m.current() == self.current
            {
                return Some(m);
            }
            i += 1;
        }
        None
    }

    /// Remembers a classification: in the entry of the same syscall and
    /// fd if there is one, else in place of the older entry (a read/write
    /// loop keeps both).
    #[inline(always)]
    pub fn memo_store(&mut self, m: EnterMemo) {
        let i = if self.memo[0].nr == m.nr && self.memo[0].fd == m.fd {
            0
        } else if self.memo[1].nr == m.nr && self.memo[1].fd == m.fd {
            1
        } else {
            self.memo_next as usize % MEMO_SIZE
        };
        self.memo[i] = m;
        self.memo_next = ((i + 1) % MEMO_SIZE) as u32;
    }

    pub const fn info(&self) -> CallInfo {
        CallInfo {
            call: match Call::from_u32(self.call) {
                Some(c) => c,
                None => Call::Other,
            },
            in_kind: FdKind::from_u32(self.in_kind),
            out_kind: FdKind::from_u32(self.out_kind),
            direct: self.flags & 1 != 0,
            zerocopy: self.flags & 2 != 0,
            errqueue: self.flags & 4 != 0,
            maps_file: self.flags & FLAG_MAPS_FILE != 0,
            from_mapping: self.flags & 16 != 0,
        }
    }

    /// Whether `addr` lies in the thread's last shared file mapping.
    pub const fn in_mapping(&self, addr: u64) -> bool {
        self.map_len > 0 && addr >= self.map_start && addr - self.map_start < self.map_len
    }

    pub const fn pack_flags(info: &CallInfo) -> u32 {
        (info.direct as u32)
            | (info.zerocopy as u32) << 1
            | (info.errqueue as u32) << 2
            | (info.maps_file as u32) << 3
            | (info.from_mapping as u32) << 4
    }
}

/// Kinds of [`Event`].
pub mod event_kind {
    /// A tracked I/O syscall completed.
    pub const SYSCALL: u32 = 1;
    /// A traced process exited (its group leader did).
    pub const PROCESS_EXIT: u32 = 2;
    /// A traced process forked a child that is now traced too.
    pub const FORK: u32 = 3;
}

/// One entry of the live event stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub dur_ns: u64,
    /// Syscall return value, or the child pid for [`event_kind::FORK`].
    pub ret: i64,
    pub tgid: u32,
    pub tid: u32,
    pub kind: u32,
    pub method: u32,
    pub call: u32,
    pub in_kind: u32,
    /// The task's name (NUL padded), as the kernel had it.
    pub comm: [u8; 16],
}

impl Event {
    /// Reads an event from ring-buffer bytes (length checked; every bit
    /// pattern is a valid Event, and enum fields stay plain integers).
    pub fn from_bytes(b: &[u8]) -> Option<Event> {
        if b.len() < core::mem::size_of::<Event>() {
            return None;
        }
        // SAFETY: the length is checked, the read is unaligned-safe, and
        // Event is plain integers with no invalid bit patterns.
        Some(unsafe { core::ptr::read_unaligned(b.as_ptr().cast::<Event>()) })
    }

    /// The name as text (up to the first NUL).
    pub fn comm_str(&self) -> &str {
        let end = self
            .comm
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(self.comm.len());
        core::str::from_utf8(&self.comm[..end]).unwrap_or("?")
    }
}

/// Indexes into the per-CPU statistics array.
pub mod stat {
    /// Events that did not fit in the ring buffer.
    pub const EVENTS_DROPPED: usize = 0;
    /// Events written to the ring buffer.
    pub const EVENTS_SENT: usize = 1;
    /// Thread state could not be created (map full).
    pub const THREAD_MAP_FULL: usize = 2;
    /// A counter row could not be created (map full).
    pub const COUNTER_MAP_FULL: usize = 3;
    /// Disk bytes issued by threads zctrace does not trace (e.g. writeback).
    pub const DISK_UNATTRIBUTED_BYTES: usize = 4;
    /// A forked child could not be added to the traced set (map full).
    pub const PROCESS_MAP_FULL: usize = 5;
    pub const COUNT: usize = 6;
}

/// Indexes into the runtime configuration array.
pub mod config {
    /// Non-zero: write syscall events into the ring buffer.
    pub const EVENTS_ENABLED: u32 = 0;
    /// Bumped by userspace when a process leaves the traced set or counter
    /// rows are recycled: thread state of an older generation is checked
    /// against the set again and forgets its cached rows.
    pub const GENERATION: u32 = 1;
    /// Non-zero: threads may claim slots of the thread table. Userspace
    /// sets it once `sched_process_exit` is attached (slots are released
    /// there: without it a dead thread's slot could pass to the next
    /// thread on the same stack); tests leave it off to exercise the task
    /// storage path, which threads whose slot another holds take.
    pub const THREAD_TABLE: u32 = 2;
    pub const COUNT: u32 = 4;
}

/// Struct member offsets and enum values of the running kernel, read from
/// its BTF by userspace and set as a global before the programs load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    pub task_files: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_flags: u32,
    pub inode_mode: u32,
    pub msghdr_iter: u32,
    pub msghdr_flags: u32,
    pub iter_type: u32,
    pub request_data_len: u32,
    pub request_cmd_flags: u32,
    pub netdev_flags: u32,
    /// Bit n set: `iter_type == n` is user memory (`ITER_UBUF`, `ITER_IOVEC`).
    pub user_iter_mask: u32,
    /// `ITER_PIPE` (kernels before 6.4; `u32::MAX` where absent): "copying"
    /// a page into it hands the page to the pipe by reference.
    pub iter_pipe: u32,
    /// This architecture's `O_DIRECT`.
    pub o_direct: u32,
    /// Non-zero once filled in (the programs do nothing with a zero layout).
    pub valid: u32,
}

/// Load-time switches, set as a global before the programs load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Trace every process, not only those in the traced set.
    pub trace_all: u32,
    /// Add children forked by traced processes to the traced set.
    pub follow_forks: u32,
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: each type is #[repr(C)], made only of integers, with no padding
    // (sizes are multiples of their alignment and fields are laid out
    // without gaps), so every bit pattern is a valid value.
    unsafe impl aya::Pod for CounterKey {}
    // SAFETY: as above: an array of u64.
    unsafe impl aya::Pod for Counters {}
    // SAFETY: as above: four u64s then sixteen u32s, 96 bytes, no gaps.
    unsafe impl aya::Pod for ThreadState {}
    // SAFETY: as above: three 64-bit fields, six u32s, 16 bytes: 64, no gaps.
    unsafe impl aya::Pod for Event {}
    // SAFETY: as above: only u32 fields.
    unsafe impl aya::Pod for KernelLayout {}
    // SAFETY: as above: only u32 fields.
    unsafe impl aya::Pod for Settings {}
}

#[cfg(test)]
mod tests;
