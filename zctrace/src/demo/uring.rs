//! The demo's io_uring methods: the same transfers as read+write, splice
//! and MSG_ZEROCOPY, queued in a ring and handed to the kernel a batch at a
//! time, so one `io_uring_enter` serves many chunks.
//!
//! Each batch is one chain of linked requests (`IOSQE_IO_LINK`), so the
//! kernel runs them in order: a TCP stream must receive its chunks in
//! order, and a pipe must be filled and drained in turn. A request that
//! moves fewer bytes than asked breaks the chain (the rest complete with
//! `ECANCELED`); the method then finishes that chunk with single requests
//! and starts the next batch where it left off.

use std::{fs::File, io, net::TcpStream, os::fd::AsRawFd};

use io_uring::{IoUring, cqueue, opcode, squeue, types::Fd};
use rustix::fd::{AsFd, OwnedFd};

use super::methods::{Transfer, ZeroCopyReport, pipe, remaining};

/// Chunks per batch: one `io_uring_enter` hands the kernel this many
/// chunks' requests (two per chunk for read+send and splice).
pub const BATCH: usize = 16;

/// Completion queue entries.
const CQ_ENTRIES: u32 = 4096;

/// `IORING_SEND_ZC_REPORT_USAGE`: the notification says whether the kernel
/// copied after all.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`, in a notification's result.
const NOTIF_COPIED: u32 = 1 << 31;

/// A ring and what its zero-copy notifications said.
struct Ring {
    ring: IoUring,
    /// Zero-copy sends that promised a notification, and the notifications
    /// seen (of them, how many report a copy).
    notifs_due: u64,
    notifs: u64,
    copied: u64,
}

/// Why the ring cannot be used here (io_uring disabled by sysctl or
/// seccomp, or a kernel without it): the method is skipped with this.
fn unavailable(e: &io::Error) -> String {
    format!(
        "io_uring is not available here ({e}; see /proc/sys/kernel/io_uring_disabled, or a \
         seccomp filter)"
    )
}

impl Ring {
    fn new() -> Result<Self, String> {
        // Room for every notification that may be outstanding (a zero-copy
        // send's second completion comes when the receiver has read the
        // data): a full queue would push completions to the overflow list.
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .build((4 * BATCH) as u32)
            .map_err(|e| unavailable(&e))?;
        Ok(Ring {
            ring,
            notifs_due: 0,
            notifs: 0,
            copied: 0,
        })
    }

    /// Submits `sqes` as one linked chain and waits for each one's first
    /// completion; returns their results in order.
    ///
    /// # Safety
    /// Every buffer the entries point to must stay valid and unmoved until
    /// this returns (it waits for every entry's completion; a zero-copy
    /// send's pages stay in use until its notification: see `finish`).
    unsafe fn chain(&mut self, sqes: &[squeue::Entry]) -> io::Result<Vec<i32>> {
        let n = sqes.len();
        let mut results = vec![None; n];
        {
            let mut sq = self.ring.submission();
            for (i, e) in sqes.iter().enumerate() {
                let mut e = e.clone().user_data(i as u64);
                if i + 1 < n {
                    e = e.flags(squeue::Flags::IO_LINK);
                }
                // SAFETY: the caller keeps the buffers alive (see above);
                // the queue has room for 4 * BATCH entries and every chain
                // is at most 2 * BATCH long, all reaped before the next.
                unsafe { sq.push(&e) }.map_err(|_| io::Error::other("submission queue full"))?;
            }
        }
        let mut got = 0;
        while got < n {
            self.ring.submit_and_wait(n - got)?;
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for cqe in cqes {
                if self.note_notification(&cqe) {
                    continue;
                }
                if let Some(slot) = results.get_mut(cqe.user_data() as usize)
                    && slot.is_none()
                {
                    *slot = Some(cqe.result());
                    got += 1;
                    if cqueue::more(cqe.flags()) {
                        self.notifs_due += 1;
                    }
                }
            }
        }
        Ok(results.into_iter().map(|r| r.unwrap_or(0)).collect())
    }

    /// Counts a zero-copy notification; false for any other completion.
    fn note_notification(&mut self, cqe: &cqueue::Entry) -> bool {
        if !cqueue::notif(cqe.flags()) {
            return false;
        }
        self.notifs += 1;
        if cqe.result() as u32 & NOTIF_COPIED != 0 {
            self.copied += 1;
        }
        true
    }

    /// Waits for every notification still due: until then the kernel may
    /// still read the pinned pages.
    fn finish(&mut self) -> io::Result<()> {
        while self.notifs < self.notifs_due {
            self.ring.submit_and_wait(1)?;
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for cqe in &cqes {
                self.note_notification(cqe);
            }
        }
        Ok(())
    }

    /// Sends all of `buf` with single send requests (a chunk whose chained
    /// send came up short).
    fn send_all(&mut self, sock: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let e = opcode::Send::new(Fd(sock.as_raw_fd()), buf.as_ptr(), len32(buf.len()))
                .flags(libc::MSG_WAITALL)
                .build();
            // SAFETY: `buf` outlives the call, which waits for the send.
            let n = check(unsafe { self.chain(&[e]) }?[0])?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Moves exactly `n` bytes from the pipe to the socket with splice
    /// requests.
    fn drain_pipe(&mut self, pipe_r: &OwnedFd, sock: &TcpStream, mut n: usize) -> io::Result<()> {
        while n > 0 {
            let e = splice(pipe_r, sock, None, n);
            // SAFETY: no user buffer is involved.
            let m = check(unsafe { self.chain(&[e]) }?[0])?;
            if m == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            n -= m;
        }
        Ok(())
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A request's result as a byte count, or its error.
fn check(res: i32) -> io::Result<usize> {
    usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(-res))
}

const ECANCELED: i32 = -libc::ECANCELED;

/// After a short request broke a chain at `at`, every later request of it
/// must have been cancelled: one that ran would have put its chunk on the
/// stream ahead of the missing bytes.
fn broken_after(res: &[i32], at: usize) -> io::Result<()> {
    if res[at..].iter().all(|&r| r == ECANCELED) {
        Ok(())
    } else {
        Err(io::Error::other(
            "a request after a short one in a linked chain was not cancelled",
        ))
    }
}

fn splice(from: &impl AsFd, to: &impl AsFd, off_in: Option<u64>, len: usize) -> squeue::Entry {
    let off = off_in.map_or(-1, |o| o as i64);
    opcode::Splice::new(
        Fd(from.as_fd().as_raw_fd()),
        off,
        Fd(to.as_fd().as_raw_fd()),
        -1,
        len32(len),
    )
    .build()
}

/// Moves the file in batches of [`BATCH`] chunks, two linked requests per
/// chunk: `pair` gives them for the chunk at `off` of `len` bytes in slot
/// `i` of the batch; after the batch `settle` takes the two results and
/// finishes the chunk if the second moved less than the first (returning
/// the bytes the first moved). A chunk that came up short breaks the chain:
/// the next batch starts right after it.
fn in_pairs<S>(
    t: &Transfer,
    ring: &mut Ring,
    state: &mut S,
    pair: fn(&mut S, u64, usize, usize) -> [squeue::Entry; 2],
    settle: fn(&mut S, &mut Ring, usize, usize, usize) -> io::Result<()>,
) -> io::Result<()> {
    let mut off = 0u64;
    while off < t.len() {
        t.tick()?;
        let mut sqes = Vec::with_capacity(2 * BATCH);
        let mut lens = Vec::with_capacity(BATCH);
        let mut o = off;
        for i in 0..BATCH {
            let len = remaining(t, o);
            if len == 0 {
                break;
            }
            sqes.extend(pair(state, o, len, i));
            lens.push(len);
            o += len as u64;
        }
        // SAFETY: the buffers `pair` pointed the requests at belong to
        // `state`, which is neither moved nor touched until every request
        // completed (chain waits for all of them).
        let res = unsafe { ring.chain(&sqes) }?;
        for (i, &len) in lens.iter().enumerate() {
            let (first, second) = (res[2 * i], res[2 * i + 1]);
            if first == ECANCELED {
                break;
            }
            let moved = check(first)?;
            if moved == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let passed = if second == ECANCELED {
                0
            } else {
                check(second)?
            };
            if passed < moved {
                settle(state, ring, i, passed, moved)?;
            }
            off += moved as u64;
            if moved < len || passed < moved {
                broken_after(&res, 2 * i + 2)?;
                break;
            }
        }
    }
    Ok(())
}

/// `uring-read-send`: per chunk a read of the file into its own buffer,
/// linked to a send of that buffer; a batch of chunks per enter.
pub fn read_send(t: &Transfer, sock: &TcpStream) -> io::Result<Result<(), String>> {
    struct State<'a> {
        file: File,
        sock: &'a TcpStream,
        bufs: Vec<Vec<u8>>,
    }
    let mut ring = match Ring::new() {
        Ok(r) => r,
        Err(why) => return Ok(Err(why)),
    };
    let mut st = State {
        file: File::open(t.src)?,
        sock,
        bufs: vec![vec![0u8; t.chunk]; BATCH],
    };
    in_pairs(
        t,
        &mut ring,
        &mut st,
        |st, off, len, i| {
            let buf = st.bufs[i].as_mut_ptr();
            [
                opcode::Read::new(Fd(st.file.as_raw_fd()), buf, len32(len))
                    .offset(off)
                    .build(),
                opcode::Send::new(Fd(st.sock.as_raw_fd()), buf, len32(len))
                    .flags(libc::MSG_WAITALL)
                    .build(),
            ]
        },
        |st, ring, i, sent, read| ring.send_all(st.sock, &st.bufs[i][sent..read]),
    )?;
    Ok(Ok(()))
}

/// `uring-splice`: per chunk a splice of the file into a pipe, linked to a
/// splice of the pipe into the socket; a batch of chunks per enter.
pub fn splice_file(t: &Transfer, sock: &TcpStream) -> io::Result<Result<(), String>> {
    struct State<'a> {
        file: File,
        sock: &'a TcpStream,
        pipe_r: OwnedFd,
        pipe_w: OwnedFd,
    }
    let mut ring = match Ring::new() {
        Ok(r) => r,
        Err(why) => return Ok(Err(why)),
    };
    let (pipe_r, pipe_w) = pipe(t.chunk)?;
    let mut st = State {
        file: File::open(t.src)?,
        sock,
        pipe_r,
        pipe_w,
    };
    in_pairs(
        t,
        &mut ring,
        &mut st,
        |st, off, len, _| {
            [
                splice(&st.file, &st.pipe_w, Some(off), len),
                splice(&st.pipe_r, st.sock, None, len),
            ]
        },
        |st, ring, _, drained, filled| ring.drain_pipe(&st.pipe_r, st.sock, filled - drained),
    )?;
    Ok(Ok(()))
}

/// `uring-send-zc`: zero-copy sends of the payload in memory, a batch per
/// enter, usage reports asked for; returns what the notifications said.
pub fn send_zc(t: &Transfer, sock: &TcpStream) -> io::Result<Result<ZeroCopyReport, String>> {
    let mut ring = match Ring::new() {
        Ok(r) => r,
        Err(why) => return Ok(Err(why)),
    };
    let mut report = ZeroCopyReport::default();
    let mut off = 0usize;
    let total = t.payload.len();
    while off < total {
        t.tick()?;
        let mut sqes = Vec::with_capacity(BATCH);
        let mut spans = Vec::with_capacity(BATCH);
        let mut o = off;
        for _ in 0..BATCH {
            let len = remaining(t, o as u64);
            if len == 0 {
                break;
            }
            let buf = &t.payload[o..o + len];
            sqes.push(
                opcode::SendZc::new(Fd(sock.as_raw_fd()), buf.as_ptr(), len32(len))
                    .flags(libc::MSG_WAITALL)
                    .zc_flags(SEND_ZC_REPORT_USAGE)
                    .build(),
            );
            spans.push((o, len));
            o += len;
        }
        // SAFETY: the payload outlives the method's thread (see
        // demo::run_method), and `finish` waits for every notification
        // before this returns.
        let res = unsafe { ring.chain(&sqes) }?;
        for (i, &(start, len)) in spans.iter().enumerate() {
            let r = res[i];
            if r == ECANCELED {
                break;
            }
            if i == 0 && off == 0 && (r == -libc::EINVAL || r == -libc::EOPNOTSUPP) {
                return Ok(Err(format!(
                    "this kernel refuses IORING_OP_SEND_ZC ({})",
                    io::Error::from_raw_os_error(-r)
                )));
            }
            let sent = check(r)?;
            report.sends += 1;
            if sent < len {
                ring.send_all(sock, &t.payload[start + sent..start + len])?;
            }
            off = start + len;
            if sent < len {
                broken_after(&res, i + 1)?;
                break;
            }
        }
    }
    ring.finish()?;
    report.completed = ring.notifs;
    report.copied = ring.copied;
    Ok(Ok(report))
}
