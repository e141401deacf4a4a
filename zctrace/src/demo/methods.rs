//! The transfer methods, each with the real system calls. Every method runs
//! on its own thread (the probes charge work to thread ids) and moves the
//! demo file (or the identical bytes held in memory) to its destination.

use std::{
    ffi::c_void,
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    net::TcpStream,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
    ptr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use rustix::{
    fd::{AsFd, OwnedFd},
    mm::{MapFlags, ProtFlags},
    pipe::{IoSliceRaw, PipeFlags, SpliceFlags},
};
use zctrace_common::Method;

/// What every method gets.
pub struct Transfer<'a> {
    pub src: &'a Path,
    /// The file's bytes, for the methods that send from user memory.
    pub payload: &'a [u8],
    pub chunk: usize,
    pub pace: Option<Duration>,
    pub stop: &'a AtomicBool,
    pub workdir: &'a Path,
}

impl Transfer<'_> {
    /// Called once per chunk: honours Ctrl-C and the lecture pace.
    pub(super) fn tick(&self) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        if let Some(p) = self.pace {
            std::thread::sleep(p);
        }
        Ok(())
    }

    pub(super) fn len(&self) -> u64 {
        self.payload.len() as u64
    }
}

/// MSG_ZEROCOPY bookkeeping, read back from the socket's error queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ZeroCopyReport {
    /// send() calls that were accepted with MSG_ZEROCOPY.
    pub sends: u64,
    /// Of those, how many the kernel reported complete.
    pub completed: u64,
    /// Completions flagged SO_EE_CODE_ZEROCOPY_COPIED: the kernel fell back
    /// to copying (always the case on loopback).
    pub copied: u64,
}

/// What a sender thread reports.
#[derive(Debug)]
pub struct Sent {
    pub tid: u32,
    pub bytes: u64,
    pub elapsed: Duration,
    pub zerocopy: Option<ZeroCopyReport>,
    /// A file the method wrote, to verify after it ends.
    pub written_file: Option<PathBuf>,
}

#[derive(Debug)]
pub enum Outcome {
    Sent(Sent),
    /// The method cannot run here; the reason is shown to the user.
    Skipped(String),
}

/// Loopback connections a method sends to.
pub const fn sockets_needed(m: Method) -> usize {
    match m {
        Method::Tee => 2,
        Method::CopyFileRange | Method::MmapMemcpy => 0,
        _ => 1,
    }
}

/// The methods the demo knows, in teaching order.
pub const DEMO_METHODS: [Method; 13] = [
    Method::ReadWrite,
    Method::MmapWrite,
    Method::MmapMemcpy,
    Method::Sendfile,
    Method::Splice,
    Method::Vmsplice,
    Method::Tee,
    Method::ZeroCopySend,
    Method::CopyFileRange,
    Method::DirectIo,
    Method::UringReadSend,
    Method::UringSplice,
    Method::UringSendZc,
];

/// Runs `method` on the calling thread. `socks` holds
/// [`sockets_needed`] connected sockets; they are closed when it returns.
pub fn run(
    method: Method,
    t: &Transfer,
    socks: Vec<TcpStream>,
    started: impl FnOnce(u32),
) -> io::Result<Outcome> {
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    started(tid);
    let started = Instant::now();
    let mut zerocopy = None;
    let mut written_file = None;
    let socks = &socks[..];
    let sock = || {
        socks
            .first()
            .ok_or_else(|| io::Error::other("method needs a socket"))
    };
    match method {
        Method::ReadWrite => read_write(t, sock()?)?,
        Method::MmapWrite => mmap_write(t, sock()?)?,
        Method::Sendfile => send_file(t, sock()?)?,
        Method::Splice => splice_file(t, sock()?)?,
        Method::Vmsplice => vmsplice_buffer(t, sock()?)?,
        Method::Tee => match socks {
            [a, b] => tee_twice(t, a, b)?,
            _ => return Err(io::Error::other("tee needs two sockets")),
        },
        Method::ZeroCopySend => match send_zerocopy(t, sock()?)? {
            Ok(report) => zerocopy = Some(report),
            Err(reason) => return Ok(Outcome::Skipped(reason)),
        },
        Method::CopyFileRange => written_file = Some(copy_range(t)?),
        Method::MmapMemcpy => written_file = Some(mmap_memcpy(t)?),
        Method::DirectIo => {
            if let Err(reason) = direct_io(t, sock()?)? {
                return Ok(Outcome::Skipped(reason));
            }
        }
        Method::UringReadSend => {
            if let Err(reason) = super::uring::read_send(t, sock()?)? {
                return Ok(Outcome::Skipped(reason));
            }
        }
        Method::UringSplice => {
            if let Err(reason) = super::uring::splice_file(t, sock()?)? {
                return Ok(Outcome::Skipped(reason));
            }
        }
        Method::UringSendZc => match super::uring::send_zc(t, sock()?)? {
            Ok(report) => zerocopy = Some(report),
            Err(reason) => return Ok(Outcome::Skipped(reason)),
        },
        other => {
            return Err(io::Error::other(format!(
                "{} is not a demo method",
                other.name()
            )));
        }
    }
    Ok(Outcome::Sent(Sent {
        tid,
        bytes: t.len(),
        elapsed: started.elapsed(),
        zerocopy,
        written_file,
    }))
}

/// read() a chunk from the file into a user buffer, write() it to the socket.
fn read_write(t: &Transfer, mut sock: &TcpStream) -> io::Result<()> {
    let mut file = File::open(t.src)?;
    let mut buf = vec![0u8; t.chunk];
    loop {
        t.tick()?;
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sock.write_all(&buf[..n])?;
    }
}

/// mmap() the file, write() each chunk straight from the mapping.
fn mmap_write(t: &Transfer, mut sock: &TcpStream) -> io::Result<()> {
    let file = File::open(t.src)?;
    let map = Mapping::file(&file, t.payload.len())?;
    for piece in map.as_slice().chunks(t.chunk) {
        t.tick()?;
        sock.write_all(piece)?;
    }
    Ok(())
}

/// sendfile() file to socket: the kernel moves page references.
fn send_file(t: &Transfer, sock: &TcpStream) -> io::Result<()> {
    let file = File::open(t.src)?;
    let mut off = 0u64;
    while off < t.len() {
        t.tick()?;
        let want = remaining(t, off);
        if rustix::fs::sendfile(sock, &file, Some(&mut off), want)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// splice() file to pipe, then pipe to socket.
fn splice_file(t: &Transfer, sock: &TcpStream) -> io::Result<()> {
    let file = File::open(t.src)?;
    let (pr, pw) = pipe(t.chunk)?;
    let mut off = 0u64;
    while off < t.len() {
        t.tick()?;
        let want = remaining(t, off);
        let n = rustix::pipe::splice(&file, Some(&mut off), &pw, None, want, SpliceFlags::MOVE)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        pump(&pr, sock, n)?;
    }
    Ok(())
}

/// vmsplice() user memory into a pipe, then splice() the pipe to the socket.
fn vmsplice_buffer(t: &Transfer, sock: &TcpStream) -> io::Result<()> {
    let (pr, pw) = pipe(t.chunk)?;
    for piece in t.payload.chunks(t.chunk) {
        t.tick()?;
        let mut done = 0;
        while done < piece.len() {
            let iov = [IoSliceRaw::from_slice(&piece[done..])];
            // SAFETY: the pipe now references the payload's pages. The demo
            // keeps the payload alive and unmodified until every receiver
            // has drained its socket (see demo::run_method), so no page is
            // freed or changed while the kernel still refers to it.
            let n = unsafe { rustix::pipe::vmsplice(&pw, &iov, SpliceFlags::empty())? };
            pump(&pr, sock, n)?;
            done += n;
        }
    }
    Ok(())
}

/// splice() file to pipe 1, tee() pipe 1 into pipe 2 (no copy, no
/// consumption), then splice() each pipe to its own socket.
fn tee_twice(t: &Transfer, first: &TcpStream, second: &TcpStream) -> io::Result<()> {
    let file = File::open(t.src)?;
    let (p1r, p1w) = pipe(t.chunk)?;
    let (p2r, p2w) = pipe(t.chunk)?;
    let mut off = 0u64;
    let mut pending = 0usize;
    loop {
        if pending == 0 {
            if off >= t.len() {
                return Ok(());
            }
            t.tick()?;
            let want = remaining(t, off);
            pending =
                rustix::pipe::splice(&file, Some(&mut off), &p1w, None, want, SpliceFlags::MOVE)?;
            if pending == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let dup = rustix::pipe::tee(&p1r, &p2w, pending, SpliceFlags::empty())?;
        if dup == 0 {
            return Err(io::Error::other("tee duplicated nothing"));
        }
        pump(&p1r, first, dup)?;
        pump(&p2r, second, dup)?;
        pending -= dup;
    }
}

/// send() with MSG_ZEROCOPY from user memory; completions are read from the
/// socket's error queue. The inner Err is a reason to skip the method.
fn send_zerocopy(t: &Transfer, sock: &TcpStream) -> io::Result<Result<ZeroCopyReport, String>> {
    const SO_ZEROCOPY: libc::c_int = 60;
    let fd = sock.as_raw_fd();
    let one: libc::c_int = 1;
    // SAFETY: plain setsockopt on a socket we own, with a c_int value.
    // rustix has no wrapper for SO_ZEROCOPY.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ZEROCOPY,
            ptr::from_ref(&one).cast::<c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Ok(Err(format!(
            "the kernel refuses SO_ZEROCOPY on TCP sockets: {e}"
        )));
    }
    let mut report = ZeroCopyReport::default();
    for piece in t.payload.chunks(t.chunk) {
        t.tick()?;
        let mut done = 0;
        while done < piece.len() {
            let rest = &piece[done..];
            // SAFETY: `rest` is valid for reads of its length and, like the
            // vmsplice payload, stays alive and unmodified until the kernel
            // has reported every send complete (we wait for that below).
            let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_ZEROCOPY) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Too many pending notifications: collect some, retry.
                    Some(libc::ENOBUFS) => {
                        reap_completions(fd, &mut report, Duration::from_millis(100))?;
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
            done += n as usize;
            report.sends += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while report.completed < report.sends && Instant::now() < deadline {
        reap_completions(fd, &mut report, Duration::from_millis(100))?;
    }
    Ok(Ok(report))
}

/// Reads zero-copy completion notifications (waiting up to `wait` for the
/// first), adding them to `report`.
fn reap_completions(fd: i32, report: &mut ZeroCopyReport, wait: Duration) -> io::Result<()> {
    const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
    const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;
    let mut pfd = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd; POLLERR is reported even with events = 0.
    unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
    loop {
        let mut control = [0u64; 16]; // 128 bytes, aligned for cmsghdr
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = control.as_mut_ptr().cast();
        // usize on glibc, u32 on musl (the kernel matrix's static build);
        // 128 fits either.
        #[expect(clippy::useless_conversion, reason = "usize on glibc, u32 on musl")]
        let len = size_of_val(&control).try_into().unwrap_or_default();
        msg.msg_controllen = len;
        // SAFETY: msg points at our control buffer; no data iovecs.
        let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        // SAFETY: the CMSG_* macros walk the control buffer the kernel
        // filled in, bounded by msg_controllen.
        let mut cm = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cm.is_null() {
            // SAFETY: `cm` is a valid cmsghdr inside `control`; IP_RECVERR
            // and IPV6_RECVERR carry a sock_extended_err (read unaligned).
            unsafe {
                let h = &*cm;
                let recverr = (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
                    || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
                if recverr {
                    let serr: libc::sock_extended_err =
                        ptr::read_unaligned(libc::CMSG_DATA(cm).cast());
                    if serr.ee_origin == SO_EE_ORIGIN_ZEROCOPY {
                        let n = u64::from(serr.ee_data.wrapping_sub(serr.ee_info)) + 1;
                        report.completed += n;
                        if serr.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                            report.copied += n;
                        }
                    }
                }
                cm = libc::CMSG_NXTHDR(&msg, cm);
            }
        }
    }
}

/// copy_file_range() the file into a new file in the work directory.
fn copy_range(t: &Transfer) -> io::Result<PathBuf> {
    let src = File::open(t.src)?;
    let dst_path = t.workdir.join("copy-file-range.out");
    let dst = File::create(&dst_path)?;
    let (mut off_in, mut off_out) = (0u64, 0u64);
    while off_in < t.len() {
        t.tick()?;
        let want = remaining(t, off_in);
        let n =
            rustix::fs::copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), want)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(dst_path)
}

/// Both files mapped (the copy sized first with ftruncate), each chunk
/// copied by memcpy from one mapping to the other in user mode, then
/// msync() writes the dirty pages back. The only kernel entries while
/// copying are page faults.
fn mmap_memcpy(t: &Transfer) -> io::Result<PathBuf> {
    let src = File::open(t.src)?;
    let dst_path = t.workdir.join("mmap-memcpy.out");
    let dst = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&dst_path)?;
    dst.set_len(t.len())?;
    let len = t.payload.len();
    let from = Mapping::file(&src, len)?;
    let mut to = Mapping::file_writable(&dst, len)?;
    for (d, s) in to
        .as_mut_slice()
        .chunks_mut(t.chunk)
        .zip(from.as_slice().chunks(t.chunk))
    {
        t.tick()?;
        d.copy_from_slice(s);
    }
    // SAFETY: the range is exactly the live mapping.
    unsafe { rustix::mm::msync(to.ptr, to.len, rustix::mm::MsyncFlags::SYNC)? };
    Ok(dst_path)
}

/// read() with O_DIRECT into a page-aligned buffer, write() to the socket.
/// The inner Err is a reason to skip (the filesystem refuses O_DIRECT).
fn direct_io(t: &Transfer, mut sock: &TcpStream) -> io::Result<Result<(), String>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(t.src)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Ok(Err(format!(
                "the filesystem of {} refuses O_DIRECT",
                t.src.display()
            )));
        }
        Err(e) => return Err(e),
    };
    // O_DIRECT needs block-aligned buffers, offsets and lengths.
    let chunk = t.chunk.div_ceil(4096) * 4096;
    let mut buf = Mapping::anonymous(chunk)?;
    let mut total = 0u64;
    loop {
        t.tick()?;
        let n = match rustix::io::read(&file, buf.as_mut_slice()) {
            Ok(0) => return Ok(Ok(())),
            Ok(n) => n,
            Err(rustix::io::Errno::INVAL) if total == 0 => {
                return Ok(Err(format!(
                    "the filesystem of {} refuses O_DIRECT reads",
                    t.src.display()
                )));
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        total += n as u64;
        sock.write_all(&buf.as_slice()[..n])?;
    }
}

pub(super) fn remaining(t: &Transfer, off: u64) -> usize {
    (t.len().saturating_sub(off)).min(t.chunk as u64) as usize
}

/// A pipe sized to hold a chunk where the kernel allows it.
pub(super) fn pipe(chunk: usize) -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    // One page more than a chunk: a chunk of user memory that is not page
    // aligned spans one more page (pipe slot). Larger than
    // /proc/sys/fs/pipe-max-size is refused without CAP_SYS_RESOURCE; the
    // default (64 KiB) then just means more calls.
    let _ = rustix::pipe::fcntl_setpipe_size(&w, chunk + 4096);
    Ok((r, w))
}

/// Moves exactly `n` bytes from a pipe to `out` with splice().
fn pump(pipe_r: &OwnedFd, out: impl AsFd, n: usize) -> io::Result<()> {
    let mut left = n;
    while left > 0 {
        let m = rustix::pipe::splice(pipe_r, None, &out, None, left, SpliceFlags::MOVE)?;
        if m == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= m;
    }
    Ok(())
}

/// An mmap'd region, unmapped on drop.
struct Mapping {
    ptr: *mut c_void,
    len: usize,
}

impl Mapping {
    fn file(file: &File, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared read-only mapping of `len` bytes of a file
        // we opened; nothing else aliases it. (A concurrent truncate would
        // raise SIGBUS on access: the demo's file is private to it.)
        let ptr = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                file,
                0,
            )?
        };
        Ok(Self { ptr, len })
    }

    /// A shared writable mapping of a file opened read-write, at least
    /// `len` bytes long: stores reach its page cache.
    fn file_writable(file: &File, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of a file the demo created in its
        // private directory; nothing else maps or truncates it.
        let ptr = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                0,
            )?
        };
        Ok(Self { ptr, len })
    }

    fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; page aligned.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )?
        };
        Ok(Self { ptr, len })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is live, readable and `len` bytes long.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and writable (anonymous and `file_writable`
        // mappings call this).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.cast(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `mmap` returned; no slice outlives self.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}
