//! What crosses the user/kernel boundary. Every type is `#[repr(C)]`,
//! made of integers only and free of implicit padding; the `const`
//! assertions below hold in the eBPF build and the userspace build alike,
//! so a field added without its padding fails to compile on both sides.

use crate::method::counter;

/// Upper bound on traced processes.
pub const MAX_PROCESSES: u32 = 4_096;
/// io_uring requests in flight that zctrace remembers at once.
pub const MAX_URING_REQS: u32 = 16_384;
/// Disk requests queued by traced threads and not yet issued that zctrace
/// remembers at once (an LRU map: the oldest are pushed out).
pub const MAX_BLOCK_RQS: u32 = 4_096;
/// Calls whose disk requests, queued before anything had classified the
/// call, are waiting for the call's row (an LRU map: a request issued
/// after its call's entry was pushed out is counted as unattributed,
/// no_row).
pub const MAX_CALL_RQS: u32 = 1_024;
/// Upper bound on counter rows: one per (process, method, call, flow),
/// and per thread too where asked (`Settings::per_thread`).
pub const MAX_COUNTER_ROWS: u32 = 32_768;
/// Rows a map of `capacity` keeps for fallback rows (see
/// [`CounterKey::fallback`]): exact rows stop this many short of full.
pub const fn fallback_reserve(capacity: u32) -> u32 {
    let r = capacity / 8;
    if r < 2 { 2 } else { r }
}
/// The row every count goes to when not even a fallback row can be made
/// (index 0, created by userspace before the programs run).
pub const OVERFLOW_ROW: u32 = 0;
/// Size of the event ring buffer in bytes (a power of two, page aligned).
pub const EVENT_RING_BYTES: u32 = 1 << 20;

/// Key of a counter row: one (process, thread, method, call, flow)
/// combination. `tid` is 0 unless rows are kept per thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub tgid: u32,
    pub tid: u32,
    pub method: u32,
    pub call: u32,
    /// [`crate::FdKind`]s the payload came from and went to.
    pub src: u16,
    pub dst: u16,
}

impl CounterKey {
    /// The row a process's counts fall back to when the map has no room
    /// for their own row.
    pub const fn fallback(tgid: u32) -> CounterKey {
        CounterKey {
            tgid,
            tid: 0,
            method: crate::Method::Fallback as u32,
            call: 0,
            src: 0,
            dst: 0,
        }
    }

    /// The key of [`OVERFLOW_ROW`] (pid 0 is never traced).
    pub const OVERFLOW: CounterKey = CounterKey::fallback(0);

    pub const fn flow(&self) -> crate::Flow {
        crate::Flow::new(
            crate::FdKind::from_u32(self.src as u32),
            crate::FdKind::from_u32(self.dst as u32),
        )
    }
}

/// Which key a counter row was given (`ROW_KEYS`, indexed by row): written
/// by the context that created the row, after its index entry and before
/// it bumps the count of entries added, so the sampler learns every new
/// row's key from one batched read of an array instead of a walk of the
/// hash index. `seq` grows by one each time the row is given a key (0:
/// never given one): a changed `seq` is a new row.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowKey {
    pub seq: u64,
    pub key: CounterKey,
    pub _pad: u32,
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

/// Kinds of [`Event`].
pub mod event_kind {
    /// A tracked I/O syscall completed.
    pub const SYSCALL: u32 = 1;
    /// A traced process exited (its group leader did).
    pub const PROCESS_EXIT: u32 = 2;
    /// A traced process forked a child that is now traced too.
    pub const FORK: u32 = 3;
    /// A traced process ran execve: its new name is in `comm`.
    pub const EXEC: u32 = 4;
    /// A traced process's main thread took a new name (prctl
    /// PR_SET_NAME, a write to /proc/PID/comm; an exec too): in `comm`.
    pub const RENAME: u32 = 5;
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
/// Slots of the program chains (`EXIT_CHAIN`): a hook's
/// program hands a call it cannot classify cheaply to its classifier,
/// which classifies it and hands it back.
pub mod chain {
    /// The classifier.
    pub const CLASSIFY: u32 = 0;
    /// The hook's own program, back to which the classifier hands it.
    pub const BACK: u32 = 1;
    pub const SLOTS: u32 = 2;
}

pub mod stat {
    /// Events that did not fit in the ring buffer.
    pub const EVENTS_DROPPED: usize = 0;
    /// Events written to the ring buffer.
    pub const EVENTS_SENT: usize = 1;
    /// Thread state could not be created (map full).
    pub const THREAD_MAP_FULL: usize = 2;
    /// A counter row could not be created (map full).
    pub const COUNTER_MAP_FULL: usize = 3;
    /// Counts that went to a fallback row (the process's, or the shared
    /// overflow row) because the row map was full.
    pub const ROW_FALLBACKS: usize = 4;
    /// A forked child could not be added to the traced set (map full).
    pub const PROCESS_MAP_FULL: usize = 5;
    /// io_uring requests of traced processes that completed without being
    /// seen submitted (submitted before zctrace attached, or the in-flight
    /// map was full): their bytes are in `URING_UNATTRIBUTED_BYTES`.
    pub const URING_UNATTRIBUTED_OPS: usize = 6;
    pub const URING_UNATTRIBUTED_BYTES: usize = 7;
    /// A submitted request could not be remembered (in-flight map full).
    pub const URING_MAP_FULL: usize = 8;
    /// Completions of traced processes that went to the completion queue's
    /// overflow list (the program's queue was full): the kernel reports
    /// them without their request, so they cannot be attributed, and their
    /// bytes are counted here.
    pub const URING_OVERFLOW_OPS: usize = 9;
    pub const URING_OVERFLOW_BYTES: usize = 10;
    /// Copies the hooks saw on io_uring's io-wq worker threads, which run
    /// requests for their process: those requests' results already count
    /// the bytes (under the request's method), so they are kept here
    /// rather than counted twice.
    pub const URING_WORKER_BYTES: usize = 11;
    /// Syscalls (and disk requests) counted without their classification:
    /// a hand-over between a hook's programs (a tail call) failed. 0
    /// unless zctrace has a bug: the loader fills the chains first.
    pub const CHAIN_FAILED: usize = 12;
    pub const COUNT: usize = 13;
}

/// The ledger (a per-CPU array, [`ledger::SLOTS`] words): for every
/// counter a hook observes (`counter::is_ledgered`), the bytes the hooks
/// charged to rows, counted apart from the rows themselves, and the bytes
/// they saw in scope (traced processes, and kernel threads, which could be
/// doing anyone's work) but could not charge to any process, by reason.
/// Userspace checks charged = in rows + in released rows, and reports any
/// difference: a count that reached the ledger but no row was lost.
pub mod ledger {
    use crate::method::counter;

    /// A kernel thread (writeback, ksoftirqd, ...): nobody's in particular.
    pub const KERNEL_THREAD: usize = 0;
    /// A traced thread outside any syscall where only a syscall's work is
    /// the thread's own (a transmit run from a softirq the thread was
    /// interrupted by).
    pub const NO_SYSCALL: usize = 1;
    /// An io_uring worker thread: the request's result counts the bytes.
    pub const IO_WORKER: usize = 2;
    /// No row at all (not even the overflow row: should never happen).
    pub const NO_ROW: usize = 3;
    /// io_uring completions whose submission was not seen (before attach,
    /// or the in-flight map was full).
    pub const URING_UNMATCHED: usize = 4;
    /// io_uring completions that went to the overflow list.
    pub const URING_OVERFLOW: usize = 5;
    pub const REASONS: usize = 6;
    pub const REASON_NAMES: [&str; REASONS] = [
        "kernel_thread",
        "no_syscall",
        "io_worker",
        "no_row",
        "uring_unmatched",
        "uring_overflow",
    ];
    /// Words per counter: charged, then one per reason.
    pub const STRIDE: usize = 1 + REASONS;
    pub const SLOTS: usize = counter::COUNT * STRIDE;
    /// The ledger's io_uring completion bytes sit in the IO_BYTES slot
    /// (rows count them in IO_BYTES of their io_uring_enter rows).
    pub const URING_BYTES: usize = counter::IO_BYTES;

    pub const fn charged(counter: usize) -> usize {
        counter * STRIDE
    }

    pub const fn unattributed(counter: usize, reason: usize) -> usize {
        counter * STRIDE + 1 + reason
    }
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
    /// `request.start_time_ns` (u64): tells one use of a request structure
    /// from the next.
    pub request_start_time_ns: u32,
    pub netdev_flags: u32,
    /// `net_device.dev.parent`: the bus device under a network interface,
    /// NULL for software devices (veth, bridges, tun), which DMA nothing.
    pub netdev_parent: u32,
    /// Bit n set: `iter_type == n` is user memory (`ITER_UBUF`, `ITER_IOVEC`).
    pub user_iter_mask: u32,
    /// `ITER_PIPE` (kernels before 6.4; `u32::MAX` where absent): "copying"
    /// a page into it hands the page to the pipe by reference.
    pub iter_pipe: u32,
    /// This architecture's `O_DIRECT`.
    pub o_direct: u32,
    /// `io_kiocb.opcode` and `io_kiocb.file` (u32::MAX without io_uring).
    pub kiocb_opcode: u32,
    pub kiocb_file: u32,
    /// `task_struct.flags` (to tell io_uring's worker threads, PF_IO_WORKER).
    pub task_flags: u32,
    /// Where a zero-copy send's notification request is: `io_sr_msg.notif`
    /// inside `io_kiocb.cmd` (u32::MAX where absent).
    pub kiocb_notif: u32,
    /// Non-zero where `io_uring_complete` passes the CQE (ctx, req, cqe),
    /// zero for the older (ctx, req, user_data, res, cflags, ...).
    pub uring_complete_cqe: u32,
    /// Which argument of the submission tracepoint is the request:
    /// `io_uring_submit_req(req)` (6.3 on) and 6.2's
    /// `io_uring_submit_sqe(req, force_nonblock)`: 0; 5.15-6.1's
    /// `io_uring_submit_sqe(ctx, req, ...)`: 1.
    pub uring_submit_req_arg: u32,
    /// `file.private_data` (a socket's `struct socket *`), `socket.sk`,
    /// `sock_common.skc_family` and `sock.sk_protocol`: a socket's kind.
    pub file_private: u32,
    pub socket_sk: u32,
    pub sk_family: u32,
    pub sk_protocol: u32,
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
    /// Keep counter rows per thread (the demo's sender and receivers are
    /// threads); otherwise per process, which bounds the rows by processes
    /// x methods, not threads.
    pub per_thread: u32,
    /// With a cgroup target: its depth in the cgroup v2 hierarchy (the
    /// root is 0).
    pub cgroup_level: u32,
    /// Trace the processes in this cgroup v2 and its descendants (its id:
    /// the inode number of its directory); 0 for no cgroup target.
    pub cgroup_id: u64,
}

const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<CounterKey>() == 20 && align_of::<CounterKey>() == 4);
    assert!(size_of::<RowKey>() == 32 && align_of::<RowKey>() == 8);
    assert!(size_of::<Counters>() == 8 * counter::COUNT);
    // Three 64-bit fields, six u32s, a 16-byte name.
    assert!(size_of::<Event>() == 64 && align_of::<Event>() == 8);
    assert!(size_of::<KernelLayout>() == 4 * 31);
    assert!(size_of::<Settings>() == 24 && align_of::<Settings>() == 8);
};

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: each type is #[repr(C)], made only of integers, with no padding
    // (sizes are multiples of their alignment and fields are laid out
    // without gaps), so every bit pattern is a valid value.
    unsafe impl aya::Pod for CounterKey {}
    // SAFETY: as above (the padding is an explicit field).
    unsafe impl aya::Pod for RowKey {}
    // SAFETY: as above: an array of u64.
    unsafe impl aya::Pod for Counters {}
    // SAFETY: as above: three 64-bit fields, six u32s, 16 bytes: 64, no gaps
    // (asserted above).
    unsafe impl aya::Pod for Event {}
    // SAFETY: as above: only u32 fields.
    unsafe impl aya::Pod for KernelLayout {}
    // SAFETY: as above: four u32s then a u64: 24 bytes, no gaps (asserted
    // above).
    unsafe impl aya::Pod for Settings {}
}
