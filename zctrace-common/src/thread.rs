//! The kernel-private per-thread state: what `sys_enter` leaves for
//! `sys_exit` and the other hooks, and the caches that keep the hot path
//! cheap. Userspace never reads it (it is not `Pod`); it lives here so the
//! logic is unit-tested on the host.

use crate::method::{Call, CallInfo, FdKind, Method};

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
    pub traced: u8,
    /// Where the data in the thread's buffers came from (the [`FdKind`]
    /// of its last read; Memory before any).
    pub src: u8,
    /// `current` and `src` before the call in flight: a call that moves
    /// no payload (a read at end of file, EAGAIN) puts them back at exit.
    pub prev_current: u8,
    pub prev_src: u8,
    /// The flow of the call in flight (src | dst << 8).
    pub flow: u32,
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
    /// When the call in flight entered (written by sys_enter, attached only
    /// while the event log is open; see `enter_session`).
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
    /// What the call in flight was classified from, when a hook inside
    /// it classified it before sys_exit: its syscall number + 1 (0: none)
    /// and first argument. sys_exit takes that classification only if its
    /// own call matches (see [`ThreadState::in_flight_is`]).
    pub call_nr: u32,
    pub call_fd: u32,
    /// Non-zero: some of `deferred` may be non-zero.
    pub deferred_any: u32,
    /// The event log's session (`config::EVENTS_ENABLED`) in which
    /// sys_enter wrote `enter_ns`: a time from an earlier session, or
    /// from before sys_enter was attached, is not this call's.
    pub enter_session: u32,
    /// The family of the syscall being classified, stored and read back
    /// so that the verifier checks what follows once, not once per family
    /// (see `syscalls::family`).
    pub family: u32,
    /// Non-zero while disk requests queued inside the call in flight,
    /// before anything had classified it, wait for its row: the stamp of
    /// their accumulator (see `block::CALL_RQS`), settled when the call
    /// returns.
    pub rq_stamp: u32,
    // Fourth line: the memo. 384 bytes in all: six whole cache lines (the
    // thread table's values start page aligned).
    /// The thread's last classifications of single-fd reads and writes,
    /// replayed while nothing they depend on has changed.
    pub memo: [EnterMemo; MEMO_SIZE],
    // Fifth and sixth lines: counts waiting for the call's classification.
    /// What hooks inside a syscall saw before anything had classified the
    /// call (it is classified when it returns): counted on its row by
    /// sys_exit. Indexed by [`deferred_slot`]; added to atomically (a
    /// softirq on this CPU may add while the thread's own hook does).
    pub deferred: [u64; DEFERRED_SLOTS],
    /// Where the call being classified takes data from and puts it (fds,
    /// `u64::MAX` for none) and its send/receive flags, stored and read
    /// back for the verifier (see `syscalls::describe`).
    pub scratch: [u64; 16 - DEFERRED_SLOTS],
}

/// Slots of [`ThreadState::deferred`].
pub const DEFERRED_SLOTS: usize = 13;

/// The counters a hook inside a syscall may charge before the call is
/// classified, in slot order.
pub const DEFERRED_COUNTERS: [usize; DEFERRED_SLOTS] = [
    crate::counter::K2U_OBSERVED,
    crate::counter::FAULTS_KERNEL,
    crate::counter::CS_VOLUNTARY,
    crate::counter::CS_INVOLUNTARY,
    crate::counter::DISK_READ_BYTES,
    crate::counter::DISK_WRITE_BYTES,
    crate::counter::XMIT_LOOPBACK_BYTES,
    crate::counter::XMIT_DEVICE_BYTES,
    crate::counter::K2K_OBSERVED,
    crate::counter::COPY_SITE_U2K,
    crate::counter::COPY_SITE_K2U,
    crate::counter::COPY_SITE_K2K,
    crate::counter::COPY_SITE_REFS,
];

/// The [`ThreadState::deferred`] slot of counter `idx`, if it may be
/// deferred.
pub const fn deferred_slot(idx: usize) -> Option<usize> {
    match idx {
        crate::counter::K2U_OBSERVED => Some(0),
        crate::counter::FAULTS_KERNEL..=crate::counter::COPY_SITE_REFS => {
            Some(idx - crate::counter::FAULTS_KERNEL + 1)
        }
        _ => None,
    }
}

/// Bits of [`EnterMemo::flags`] above the thread-state flags: what else a
/// call must satisfy for the entry to stand for it, so that a replay need
/// not tell call families apart. The call's buffer (second argument) must
/// lie outside the thread's file mapping (write, pwrite, sendto).
pub const MEMO_BUF_OUTSIDE_MAPPING: u32 = 1 << 16;
/// The thread must have no file mapping (writev, sendmsg: their first
/// buffer would take a user-memory read to check).
pub const MEMO_NO_MAPPING: u32 = 1 << 17;
/// The call's flags are its third argument (recvmsg, sendmsg) or its
/// fourth (recvfrom, sendto): their zerocopy and errqueue bits must be
/// the entry's.
pub const MEMO_MSG_FLAGS_ARG2: u32 = 1 << 18;
pub const MEMO_MSG_FLAGS_ARG3: u32 = 1 << 19;
/// The bits of [`EnterMemo::flags`] that are the thread-state flags.
pub const MEMO_STATE_FLAGS: u32 = 0xffff;

/// The zerocopy and errqueue bits (`ThreadState::flags` bits 1 and 2) of a
/// send's or receive's flags argument.
pub const fn msg_flag_bits(flags: u32) -> u32 {
    ((flags & crate::MSG_ZEROCOPY != 0) as u32) << 1
        | ((flags & crate::MSG_ERRQUEUE != 0) as u32) << 2
}

/// What a memo entry of `call` must check at replay (the `MEMO_*` bits),
/// or None if its classification cannot be replayed.
pub const fn memo_checks(call: Call) -> Option<u32> {
    match call {
        Call::Read | Call::Pread | Call::Readv => Some(0),
        Call::Recvfrom => Some(MEMO_MSG_FLAGS_ARG3),
        Call::Recvmsg => Some(MEMO_MSG_FLAGS_ARG2),
        Call::Write | Call::Pwrite => Some(MEMO_BUF_OUTSIDE_MAPPING),
        Call::Sendto => Some(MEMO_BUF_OUTSIDE_MAPPING | MEMO_MSG_FLAGS_ARG3),
        Call::Writev => Some(MEMO_NO_MAPPING),
        Call::Sendmsg => Some(MEMO_NO_MAPPING | MEMO_MSG_FLAGS_ARG2),
        _ => None,
    }
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
    /// [`ThreadState::flags`] of the call (without per-call bits), and
    /// above them the `MEMO_*` checks a call must pass to be replayed.
    pub flags: u32,
    pub derived: u32,
    pub row: u32,
    /// in_kind | out_kind << 8 | src before << 16 | src after << 24.
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
/// Bit of [`ThreadState::flags`]: the call writes from the thread's file
/// mapping.
pub const FLAG_FROM_MAPPING: u32 = 1 << 4;
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
        call_nr: 0,
        call_fd: 0,
        deferred_any: 0,
        enter_session: 0,
        family: 0,
        rq_stamp: 0,
        memo: [EnterMemo::EMPTY; MEMO_SIZE],
        deferred: [0; DEFERRED_SLOTS],
        scratch: [0; 16 - DEFERRED_SLOTS],
        traced: 0,
        src: FdKind::Memory as u8,
        prev_current: Method::Other as u8,
        prev_src: FdKind::Memory as u8,
        flow: 0,
    };

    const fn row_cache_key(method: u32, call: u32, flow: u32) -> u32 {
        (method & 0xff) << 16 | (call & 0xff) << 8 | (flow & 0xf) << 4 | (flow >> 8) & 0xf
    }

    /// The cached counter row of (method, call, flow), if the thread used
    /// it recently. `flow` is src | dst << 8.
    #[inline(always)]
    pub fn cached_row(&self, method: u32, call: u32, flow: u32) -> Option<u32> {
        let k = Self::row_cache_key(method, call, flow);
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
    pub fn remember_row(&mut self, method: u32, call: u32, flow: u32, idx: u32) {
        let i = self.row_next as usize % ROW_CACHE;
        self.row_key[i] = Self::row_cache_key(method, call, flow);
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
    /// the thread's current method and data source, if there is one.
    #[inline(always)]
    pub fn memo_find(&self, nr: u32, fd: u32, epoch: u32) -> Option<&EnterMemo> {
        let mut i = 0;
        while i < MEMO_SIZE {
            let m = &self.memo[i];
            if m.nr == nr.wrapping_add(1)
                && m.fd == fd
                && m.epoch == epoch
                && m.current() == self.current
                && (m.kinds >> 16) & 0xff == self.src as u32
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
            from_mapping: self.flags & FLAG_FROM_MAPPING != 0,
        }
    }

    /// Whether the classification a hook inside the call in flight made
    /// is of this call (syscall `nr` on first argument `fd`): if not, it
    /// was made after an earlier call had returned (see sys_exit).
    pub const fn in_flight_is(&self, nr: u32, fd: u32) -> bool {
        self.call != Call::None as u32 && self.call_nr == nr.wrapping_add(1) && self.call_fd == fd
    }

    /// Whether memo entry `m` stands for a call with arguments `a` (its
    /// number, first argument and the fd epoch matched already): the
    /// entry's own checks.
    #[inline(always)]
    pub fn memo_applies(&self, m: &EnterMemo, a: &[u64; 6]) -> bool {
        let f = m.flags;
        if f & MEMO_NO_MAPPING != 0 && self.map_len != 0 {
            return false;
        }
        if f & MEMO_BUF_OUTSIDE_MAPPING != 0 && self.in_mapping(a[1]) {
            return false;
        }
        let msg = if f & MEMO_MSG_FLAGS_ARG2 != 0 {
            a[2] as u32
        } else if f & MEMO_MSG_FLAGS_ARG3 != 0 {
            a[3] as u32
        } else {
            0
        };
        f & 6 == msg_flag_bits(msg)
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
            | if info.from_mapping {
                FLAG_FROM_MAPPING
            } else {
                0
            }
    }
}

const _: () = {
    // Six whole cache lines: the thread table's values start page aligned.
    assert!(core::mem::size_of::<ThreadState>() == 384);
    // Every deferrable counter has the slot its position says.
    let mut i = 0;
    while i < DEFERRED_SLOTS {
        assert!(matches!(deferred_slot(DEFERRED_COUNTERS[i]), Some(s) if s == i));
        i += 1;
    }
};
