//! `zctrace demo`: runs each transfer method for real against a loopback
//! receiver and measures it with the probes.

pub mod methods;
pub mod pitfalls;
pub mod receiver;
pub mod report;
pub mod selftest;
pub mod track;
pub mod uring;

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;
use zctrace_common::Method;

use self::track::DemoEvent;
use self::{
    methods::{Outcome, Transfer, ZeroCopyReport},
    receiver::Receiver,
};
use crate::{
    model::{
        HookSet, Measured, Snapshot,
        theory::{self, Theory},
    },
    sample::{Command, Sampler},
};

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub size: u64,
    pub chunk: usize,
    pub methods: Vec<Method>,
    /// Evict the file from the page cache before each method.
    pub cold: bool,
    pub pace: Option<Duration>,
    /// Where the private work directory is created.
    pub dir: PathBuf,
    /// Send to a `zctrace receive` there instead of loopback receivers.
    pub to: Option<std::net::SocketAddr>,
    /// The interface the bytes leave by, and its offloads (said next to
    /// sendfile).
    pub net: Option<crate::netdev::NetDevice>,
}

/// The prepared source: a private directory with the payload file in it,
/// removed when dropped (also on error and Ctrl-C, which unwind to here).
pub struct Workspace {
    dir: tempfile::TempDir,
    file: PathBuf,
    payload: Vec<u8>,
    crc: u32,
}

impl Workspace {
    pub fn create(opts: &DemoOptions) -> Result<Self> {
        let size = usize::try_from(opts.size).context("--size does not fit in memory")?;
        let copies = 1
            + u64::from(opts.methods.contains(&Method::CopyFileRange))
            + u64::from(opts.methods.contains(&Method::MmapMemcpy));
        let need = opts.size * copies + (1 << 20);
        let st = rustix::fs::statvfs(&opts.dir)
            .with_context(|| format!("cannot use {}", opts.dir.display()))?;
        let have = st.f_bavail.saturating_mul(st.f_frsize);
        if have < need {
            bail!(
                "not enough disk space in {}: the demo needs {} bytes, {} are free",
                opts.dir.display(),
                need,
                have
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("zctrace-demo-")
            .tempdir_in(&opts.dir)
            .with_context(|| format!("creating a work directory in {}", opts.dir.display()))?;
        let payload = pattern(size);
        let file = dir.path().join("payload.bin");
        let mut f = File::create(&file).with_context(|| format!("creating {}", file.display()))?;
        f.write_all(&payload)?;
        // On disk, so --cold can evict it and O_DIRECT reads what is there.
        f.sync_all()?;
        let crc = crc32fast::hash(&payload);
        Ok(Self {
            dir,
            file,
            payload,
            crc,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Deterministic, incompressible bytes (xorshift64*).
fn pattern(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One method's result.
#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    #[serde(serialize_with = "crate::model::serialize_method")]
    pub method: Method,
    /// Why it did not run, if it did not.
    pub skipped: Option<String>,
    pub bytes: u64,
    pub chunk: usize,
    pub chunks: u64,
    pub wall_ns: u64,
    pub sender_tid: u32,
    pub receiver_tids: Vec<u32>,
    pub theory: Option<Theory>,
    pub sender: Option<Measured>,
    /// Syscalls on the sender thread that are not part of the method
    /// (opening files, creating pipes, thread start-up).
    pub sender_other_syscalls: u64,
    pub receiver: Option<Measured>,
    pub zerocopy: Option<ZeroCopyReport>,
    pub notes: Vec<String>,
}

impl MethodResult {
    pub fn throughput_mib_s(&self) -> f64 {
        if self.wall_ns == 0 {
            0.0
        } else {
            self.bytes as f64 / (1 << 20) as f64 / (self.wall_ns as f64 / 1e9)
        }
    }
}

/// What one method's run left behind (or, while it runs, what is known
/// so far), before the counters are read.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub method: Method,
    pub skipped: Option<String>,
    pub elapsed: Duration,
    pub sender_tid: u32,
    pub receiver_tids: Vec<u32>,
    pub zerocopy: Option<ZeroCopyReport>,
}

/// Runs one method on a fresh thread against fresh receivers, checks the
/// delivered bytes, and returns the thread ids the probes charged.
pub fn run_method(
    ws: &Workspace,
    opts: &DemoOptions,
    method: Method,
    stop: &AtomicBool,
    started: impl FnOnce(u32, Vec<u32>) + Send,
) -> Result<RunRecord> {
    if opts.cold {
        evict(&ws.file)?;
    }
    let mut socks = Vec::new();
    let mut receivers: Vec<Receiver> = Vec::new();
    for _ in 0..methods::sockets_needed(method) {
        let (sock, rx) = match opts.to {
            Some(to) => Receiver::remote(to, opts.size)
                .with_context(|| format!("--to {to}: cannot reach the receiver"))?,
            None => Receiver::spawn(opts.chunk).context("starting the loopback receiver")?,
        };
        socks.push(sock);
        receivers.push(rx);
    }
    let transfer = Transfer {
        src: &ws.file,
        payload: &ws.payload,
        chunk: opts.chunk,
        pace: opts.pace,
        stop,
        workdir: ws.path(),
    };
    // The payload (borrowed by vmsplice and MSG_ZEROCOPY pages) outlives
    // this scope, and the receivers are joined before it ends.
    let outcome = thread::scope(|s| {
        thread::Builder::new()
            .name(format!("zctrace-{}", method.name()))
            .spawn_scoped(s, || {
                let rx_tids = receivers
                    .iter()
                    .map(|r| r.tid)
                    .filter(|&t| t != 0)
                    .collect();
                methods::run(method, &transfer, socks, |tid| started(tid, rx_tids))
            })
            .map_err(anyhow::Error::from)?
            .join()
            .map_err(|_| anyhow!("{} sender thread panicked", method.name()))?
            .map_err(anyhow::Error::from)
    });
    let mut received = Vec::new();
    for rx in receivers {
        received.push(rx.join().context(if opts.to.is_some() {
            "the remote receiver failed"
        } else {
            "loopback receiver failed"
        })?);
    }
    let outcome = outcome.with_context(|| format!("method {} failed", method.name()))?;
    let sent = match outcome {
        Outcome::Skipped(reason) => {
            return Ok(RunRecord {
                method,
                skipped: Some(reason),
                elapsed: Duration::ZERO,
                sender_tid: 0,
                receiver_tids: Vec::new(),
                zerocopy: None,
            });
        }
        Outcome::Sent(sent) => sent,
    };
    for r in &received {
        if r.bytes != sent.bytes || r.crc != ws.crc {
            bail!(
                "{} delivered wrong bytes: {} bytes with crc32 {:08x}, expected {} with {:08x}",
                method.name(),
                r.bytes,
                r.crc,
                sent.bytes,
                ws.crc
            );
        }
    }
    if let Some(path) = &sent.written_file {
        let data =
            std::fs::read(path).with_context(|| format!("reading back {}", path.display()))?;
        if data.len() as u64 != sent.bytes || crc32fast::hash(&data) != ws.crc {
            bail!(
                "{} wrote a file that differs from the source",
                method.name()
            );
        }
        std::fs::remove_file(path)?;
    }
    Ok(RunRecord {
        method,
        skipped: None,
        elapsed: sent.elapsed,
        sender_tid: sent.tid,
        receiver_tids: received.iter().map(|r| r.tid).filter(|&t| t != 0).collect(),
        zerocopy: sent.zerocopy,
    })
}

/// Turns a run and the counters the probes collected into a result.
pub fn measure(
    rec: &RunRecord,
    opts: &DemoOptions,
    snap: &Snapshot,
    hooks: HookSet,
) -> MethodResult {
    let chunks = opts.size.div_ceil(opts.chunk as u64);
    let mut r = MethodResult {
        method: rec.method,
        skipped: rec.skipped.clone(),
        bytes: if rec.skipped.is_some() { 0 } else { opts.size },
        chunk: opts.chunk,
        chunks,
        wall_ns: u64::try_from(rec.elapsed.as_nanos()).unwrap_or(u64::MAX),
        sender_tid: rec.sender_tid,
        receiver_tids: rec.receiver_tids.clone(),
        theory: theory::theory(rec.method),
        sender: None,
        sender_other_syscalls: 0,
        receiver: None,
        zerocopy: rec.zerocopy,
        notes: Vec::new(),
    };
    if rec.skipped.is_some() {
        return r;
    }
    // A mapping copy's every syscall (open, ftruncate, mmap, msync) is the
    // method: the kernel classifies none of them as a transfer.
    let sender_rows = if rec.method == Method::MmapMemcpy {
        snap.thread_all(rec.sender_tid)
    } else {
        snap.thread_io(rec.sender_tid)
    };
    let sender = Measured::from_counters(&sender_rows, hooks);
    r.sender_other_syscalls = snap.thread_all(rec.sender_tid).v[zctrace_common::counter::SYSCALLS]
        .saturating_sub(sender.syscalls);
    if !rec.receiver_tids.is_empty() {
        let mut rx = zctrace_common::Counters::ZERO;
        for tid in &rec.receiver_tids {
            rx.add(&snap.thread_io(*tid));
        }
        r.receiver = Some(Measured::from_counters(&rx, hooks));
    }
    let ctx = theory::Context {
        payload: opts.size,
        chunks,
        loopback: !rec.receiver_tids.is_empty(),
    };
    r.notes = theory::explain(rec.method, &sender, &ctx);
    if rec.method == Method::Sendfile
        && let Some(dev) = &opts.net
    {
        r.notes.push(format!("sending interface {}", dev.verdict()));
    }
    if let Some(to) = opts.to
        && methods::sockets_needed(rec.method) > 0
    {
        r.notes.push(format!(
            "sent to zctrace receive at {to}, which checked length and CRC-32"
        ));
    }
    if let Some(zc) = rec.zerocopy {
        let (what, done) = if rec.method == Method::UringSendZc {
            ("IORING_OP_SEND_ZC", "notified")
        } else {
            ("MSG_ZEROCOPY", "completed")
        };
        r.notes.push(format!(
            "{what}: {} of {} sends {done}{}",
            zc.completed,
            zc.sends,
            if zc.copied > 0 {
                format!(
                    ", {} flagged COPIED: delivery to a local socket made the kernel copy the \
                     pinned pages, a copy the tracepoint tier cannot see",
                    zc.copied
                )
            } else {
                String::new()
            }
        ));
    }
    if opts.cold && theory::reads_file(rec.method) && sender.dma_bytes.disk_read < opts.size {
        r.notes.push(if sender.dma_bytes.disk_read == 0 {
            "--cold: the device showed no block reads for this method".into()
        } else {
            format!(
                "--cold: only {} of the file came from the device (the rest was still cached)",
                crate::model::human_bytes(sender.dma_bytes.disk_read)
            )
        });
    }
    r.sender = Some(sender);
    r
}

/// Drops the file's pages from the page cache (it was synced at creation),
/// and checks that they are gone: a page the kernel could not drop at once
/// (held for a moment by another CPU's batch) is retried, for up to a
/// second. What stays is shown by the method's disk reads (see `result`).
fn evict(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    for _ in 0..20 {
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
        if resident_pages(&f)? == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// How many of the file's pages are in the page cache (mincore).
fn resident_pages(f: &File) -> io::Result<usize> {
    let len = usize::try_from(f.metadata()?.len()).map_err(io::Error::other)?;
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: a fresh read-only shared mapping of the whole file, never
    // read through, unmapped below.
    let addr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            f,
            0,
        )
    }?;
    // SAFETY: sysconf reads a constant of the system.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `addr` is the mapping of `len` bytes made above, and `vec`
    // has a byte per page of it.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: the mapping made above, not used after this.
    unsafe { rustix::mm::munmap(addr, len) }?;
    if rc != 0 {
        return Err(err);
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count())
}

/// Runs every selected method once, in order.
pub fn run_all(
    opts: &DemoOptions,
    sampler: &mut Sampler,
    stop: &AtomicBool,
    mut on_done: impl FnMut(&MethodResult) -> Result<()>,
) -> Result<Vec<MethodResult>> {
    let ws = Workspace::create(opts)?;
    let mut results = Vec::new();
    for (index, &m) in opts.methods.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            bail!(Interrupted);
        }
        let started = std::time::Instant::now();
        let record = run_method(&ws, opts, m, stop, |_, _| {}).map_err(|e| {
            if stop.load(Ordering::Relaxed) {
                anyhow!(Interrupted)
            } else {
                e
            }
        })?;
        sampler.command(Command::Demo(DemoEvent::Started {
            index,
            sender_tid: record.sender_tid,
            receiver_tids: record.receiver_tids.clone(),
            at: started,
        }));
        sampler.command(Command::Demo(DemoEvent::Finished { index, record }));
        let sample = sampler.sample()?;
        let result = sample
            .demo
            .and_then(|d| d.methods.into_iter().nth(index))
            .and_then(|m| m.result)
            .ok_or_else(|| anyhow!("the sampler kept no result for {}", m.name()))?;
        on_done(&result)?;
        results.push(result);
    }
    Ok(results)
}

/// The user asked to stop (Ctrl-C, SIGTERM).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_not_trivial() {
        let a = pattern(4097);
        assert_eq!(a.len(), 4097);
        assert_eq!(a, pattern(4097));
        let zeros = a.iter().filter(|b| **b == 0).count();
        assert!(zeros < 64, "{zeros} zero bytes");
    }
}
