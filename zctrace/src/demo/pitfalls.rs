//! `zctrace demo --pitfalls`: the classic trap of mmap (another process
//! truncates the file while it is mapped: touching the lost pages raises
//! SIGBUS) and its cure (a read lease: the truncation waits until the
//! reader has been told and has let go).
//!
//! The reader runs as a separate process (`zctrace pitfall-reader`, hidden)
//! so that its death by SIGBUS is real and observed, not simulated.

use std::{
    ffi::c_void,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    os::{fd::AsRawFd, unix::process::ExitStatusExt},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

const FILE_LEN: usize = 1 << 20;

#[derive(Clone, Debug, Serialize)]
pub struct Pitfall {
    pub name: &'static str,
    /// What happened, in words.
    pub outcome: String,
    /// Whether what happened is what the lesson says happens.
    pub as_expected: bool,
}

/// Runs both demonstrations in `dir`.
pub fn run(dir: &Path) -> Result<Vec<Pitfall>> {
    Ok(vec![sigbus(dir)?, lease(dir)?])
}

fn make_file(path: &Path) -> Result<()> {
    std::fs::write(path, vec![0x5a_u8; FILE_LEN])
        .with_context(|| format!("writing {}", path.display()))
}

/// Starts the reader and waits for it to say it has mapped the file.
fn start_reader(
    path: &Path,
    lease: bool,
) -> Result<(std::process::Child, BufReader<std::process::ChildStdout>)> {
    let exe = std::env::current_exe().context("locating zctrace")?;
    let mut cmd = Command::new(exe);
    cmd.arg("pitfall-reader")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if lease {
        cmd.arg("--lease");
    }
    let mut child = cmd.spawn().context("starting the reader process")?;
    let mut out = BufReader::new(child.stdout.take().context("reader stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "mapped" {
        let _ = child.kill();
        bail!("the reader did not map the file: {line:?}");
    }
    Ok((child, out))
}

fn sigbus(dir: &Path) -> Result<Pitfall> {
    let path = dir.join("pitfall-sigbus.bin");
    make_file(&path)?;
    let (mut child, _out) = start_reader(&path, false)?;
    // Another process (here: us) truncates the file under the mapping.
    OpenOptions::new().write(true).open(&path)?.set_len(0)?;
    child
        .stdin
        .take()
        .context("reader stdin")?
        .write_all(b"go\n")?;
    let status = child.wait()?;
    let _ = std::fs::remove_file(&path);
    let outcome = match status.signal() {
        Some(libc::SIGBUS) => "the reader had the 1 MiB file mapped; another process truncated it to 0 bytes; \
             when the reader touched a page that no longer had file behind it, the kernel killed it \
             with SIGBUS (signal 7)"
            .to_owned(),
        Some(sig) => format!("the reader died of signal {sig}, not SIGBUS"),
        None => format!("the reader survived the truncation ({status})"),
    };
    Ok(Pitfall {
        name: "mmap + concurrent truncate",
        as_expected: status.signal() == Some(libc::SIGBUS),
        outcome,
    })
}

fn lease(dir: &Path) -> Result<Pitfall> {
    let path = dir.join("pitfall-lease.bin");
    make_file(&path)?;
    let (mut child, mut out) = start_reader(&path, true)?;
    // The truncating open() now blocks until the reader gives up its lease.
    let t0 = Instant::now();
    let truncated = OpenOptions::new().write(true).truncate(true).open(&path);
    let waited = t0.elapsed();
    drop(truncated?);
    let mut report = String::new();
    out.read_to_string_lossy(&mut report);
    let status = child.wait()?;
    let _ = std::fs::remove_file(&path);
    let ok = status.success() && report.contains("released");
    let outcome = if ok {
        format!(
            "the reader held a read lease (F_SETLEASE); the truncating open() waited {:.0} ms while the \
             kernel told the reader (SIGIO), which finished with the mapping, unmapped and released the \
             lease: no SIGBUS. Reader: {}",
            waited.as_secs_f64() * 1e3,
            report.trim().replace('\n', "; ")
        )
    } else {
        format!(
            "the lease did not protect the reader ({status}): {}",
            report.trim()
        )
    };
    Ok(Pitfall {
        name: "the cure: a file lease",
        as_expected: ok,
        outcome,
    })
}

trait ReadLossy {
    fn read_to_string_lossy(&mut self, s: &mut String);
}

impl<R: std::io::Read> ReadLossy for R {
    fn read_to_string_lossy(&mut self, s: &mut String) {
        let mut b = Vec::new();
        let _ = self.read_to_end(&mut b);
        s.push_str(&String::from_utf8_lossy(&b));
    }
}

/// The reader process: maps the file, says "mapped", then either waits for
/// "go" and touches every page (no lease), or waits for the lease break,
/// reads the mapping, unmaps and releases the lease.
pub fn reader(path: &Path, use_lease: bool) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let fd = file.as_raw_fd();
    let broken = Arc::new(AtomicBool::new(false));
    if use_lease {
        signal_hook::flag::register(libc::SIGIO, Arc::clone(&broken))?;
        // SAFETY: fcntl on a file we own; F_SETLEASE takes an int. (No
        // well-kept crate wraps leases.)
        if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
            bail!("F_SETLEASE: {}", std::io::Error::last_os_error());
        }
    }
    let len = file.metadata()?.len() as usize;
    // SAFETY: a fresh shared read-only mapping of the whole file; only this
    // function reads it, and it is unmapped before returning.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            &file,
            0,
        )?
    };
    let touch = |p: *mut c_void| -> u64 {
        let mut sum = 0u64;
        for off in (0..len).step_by(4096) {
            // SAFETY: inside the mapping. If the file was truncated under
            // it, this is where the kernel raises SIGBUS: the lesson.
            sum += u64::from(unsafe { std::ptr::read_volatile(p.cast::<u8>().add(off)) });
        }
        sum
    };
    touch(ptr);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "mapped")?;
    stdout.flush()?;
    if use_lease {
        let t0 = Instant::now();
        while !broken.load(std::sync::atomic::Ordering::Relaxed)
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let sum = touch(ptr);
        writeln!(
            stdout,
            "lease break after {:.0} ms",
            t0.elapsed().as_secs_f64() * 1e3
        )?;
        writeln!(
            stdout,
            "read all {} pages intact (checksum {sum})",
            len / 4096
        )?;
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        touch(ptr);
        writeln!(stdout, "survived")?;
    }
    // SAFETY: unmaps exactly the mapping made above; no reference outlives it.
    unsafe { rustix::mm::munmap(ptr, len)? };
    if use_lease {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
        writeln!(stdout, "unmapped and released")?;
    }
    stdout.flush()?;
    Ok(())
}
