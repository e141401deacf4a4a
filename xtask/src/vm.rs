//! `cargo xtask vm-test`: zctrace's probes inside real Debian kernels.
//!
//! Downloads Debian's kernel images (`apt-get download`, cached under
//! ~/.cache/zctrace/vm), builds zctrace as a static musl binary, packs it
//! with a static busybox into a newc initramfs whose /init runs
//! `zctrace selftest`, boots each kernel under QEMU and parses the one
//! `ZCTRACE-SELFTEST: PASS|FAIL` line from the serial console. Every boot is
//! bounded by a timeout; a hung guest fails the run with the console tail.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

/// The kernel series the matrix boots, with the package-name pattern of
/// their newest image in bookworm (6.1) and bookworm's 6.12 updates.
pub const SERIES: &[(&str, &str)] = &[
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-amd64$"),
    ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$"),
];

const MUSL: &str = "x86_64-unknown-linux-musl";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

const INIT: &str = r#"#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sys /sys
busybox mount -t tmpfs tmp /tmp
busybox ip link set lo up || busybox ifconfig lo 127.0.0.1 up
echo "ZCTRACE-VM: booted $(busybox uname -r)"
/bin/zctrace selftest --dir /tmp
echo "ZCTRACE-VM-EXIT: $?"
echo "ZCTRACE-VM: again with the copy-site tier on kprobes"
ZCTRACE_COPY_SITE=kprobe /bin/zctrace selftest --dir /tmp
echo "ZCTRACE-VM-EXIT: $?"
busybox poweroff -f
"#;

fn cache_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| anyhow!("neither XDG_CACHE_HOME nor HOME is set"))?;
    let dir = base.join("zctrace").join("vm");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The newest image package of a series that apt knows.
fn newest_package(pattern: &str) -> Result<String> {
    let search = || -> Result<Vec<String>> {
        let out = Command::new("apt-cache")
            .args(["search", "--names-only", pattern])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(str::to_owned)
            .collect())
    };
    let mut names = search()?;
    if names.is_empty() {
        super::run(Command::new("apt-get").args(["update", "-qq"]))?;
        names = search()?;
    }
    // Natural order: compare the digit runs as numbers.
    names.sort_by_key(|n| {
        n.split(|c: char| !c.is_ascii_digit())
            .filter_map(|d| d.parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    names
        .pop()
        .ok_or_else(|| anyhow!("apt knows no package matching {pattern}"))
}

/// The kernel image of `package`, downloaded and extracted once.
fn kernel_image(package: &str) -> Result<PathBuf> {
    let dir = cache_dir()?;
    let image = dir.join(format!("{package}.vmlinuz"));
    if image.exists() {
        return Ok(image);
    }
    eprintln!("xtask: downloading {package} (cached in {})", dir.display());
    // Run as root into a root-owned cache: no _apt sandbox user.
    super::run(
        Command::new("apt-get")
            .args(["download", "-qq", "-o", "APT::Sandbox::User=root", package])
            .current_dir(&dir),
    )?;
    let deb = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
                && p.extension().is_some_and(|e| e == "deb")
        })
        .ok_or_else(|| anyhow!("apt-get download left no .deb for {package}"))?;
    let tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()?;
    let out = Command::new("tar")
        .args(["-x", "-O", "--wildcards", "./boot/vmlinuz-*"])
        .stdin(tar.stdout.ok_or_else(|| anyhow!("dpkg-deb stdout"))?)
        .output()?;
    if !out.status.success() || out.stdout.len() < 1 << 20 {
        bail!(
            "no kernel image in {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(&image, &out.stdout)?;
    std::fs::remove_file(&deb)?;
    Ok(image)
}

/// A newc ("070701") cpio archive, which the kernel unpacks as its
/// initramfs (uncompressed is fine).
#[derive(Default)]
pub struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    pub fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(body.len()).unwrap_or(u32::MAX),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0,
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

fn initramfs(zctrace: &Path, busybox: &Path) -> Result<Vec<u8>> {
    let mut c = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp"] {
        c.entry(d, 0o040_755, (0, 0), &[]);
    }
    // Without /dev/console, init would run with no stdout.
    c.entry("dev/console", 0o020_600, (5, 1), &[]);
    c.entry("init", 0o100_755, (0, 0), INIT.as_bytes());
    c.entry("bin/busybox", 0o100_755, (0, 0), &std::fs::read(busybox)?);
    c.entry("bin/sh", 0o120_777, (0, 0), b"busybox");
    c.entry("bin/zctrace", 0o100_755, (0, 0), &std::fs::read(zctrace)?);
    Ok(c.finish())
}

/// Boots `kernel` with the initramfs; returns the console lines.
fn boot(kernel: &Path, initrd: &Path, require: Option<&str>) -> Result<(Vec<String>, bool)> {
    let mut cmd = Command::new("qemu-system-x86_64");
    // Software emulation: KVM on these machines cannot run stock guests.
    // ZCTRACE_VM_ACCEL=kvm opts in where it works.
    let accel = std::env::var("ZCTRACE_VM_ACCEL").unwrap_or_else(|_| "tcg".into());
    cmd.args(["-accel", &accel, "-cpu", "max", "-m", "1024", "-smp", "2"])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        // Unknown NAME=value words on the kernel command line become
        // environment variables of /init (and so of zctrace selftest).
        .arg("-append")
        .arg(match require {
            Some(hooks) => format!("console=ttyS0 panic=-1 quiet ZCTRACE_SELFTEST_REQUIRE={hooks}"),
            None => "console=ttyS0 panic=-1 quiet".to_owned(),
        })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("qemu stdout"))?;
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => lines.push(l.trim_end_matches('\r').to_owned()),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if started.elapsed() > BOOT_TIMEOUT {
            timed_out = true;
            let _ = child.kill();
        }
    }
    let _ = child.wait();
    let _ = reader.join();
    Ok((lines, timed_out))
}

pub fn vm_test(which: &str, require: Option<&str>) -> Result<()> {
    let started = Instant::now();
    super::setup()?;
    let targets = super::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !targets.lines().any(|t| t.trim() == MUSL) {
        super::run(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    super::run(&mut super::cargo(&[
        "build",
        "--release",
        "--package",
        "zctrace",
        "--target",
        MUSL,
    ])?)?;
    let zctrace = super::workspace_root()
        .join("target")
        .join(MUSL)
        .join("release/zctrace");
    let busybox = Path::new("/bin/busybox");
    let initrd = cache_dir()?.join("initramfs.cpio");
    std::fs::write(&initrd, initramfs(&zctrace, busybox)?)?;
    let series: Vec<&(&str, &str)> = SERIES
        .iter()
        .filter(|(s, _)| which == "all" || which == *s)
        .collect();
    if series.is_empty() {
        bail!(
            "unknown kernel '{which}' (known: {}, all)",
            SERIES.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        );
    }
    let mut failures = Vec::new();
    for (name, pattern) in series {
        let package = newest_package(pattern)?;
        let kernel = kernel_image(&package)?;
        let t0 = Instant::now();
        let (lines, timed_out) = boot(&kernel, &initrd, require)?;
        // Two runs per boot: copy-site tier on fexit, then on kprobes.
        let results: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("ZCTRACE-SELFTEST: "))
            .collect();
        eprintln!(
            "\n== Linux {name} ({package}), booted in QEMU, {:.0} s",
            t0.elapsed().as_secs_f64()
        );
        for l in lines.iter().filter(|l| {
            l.starts_with("hook ")
                || l.starts_with("check ")
                || l.starts_with("note ")
                || l.starts_with("ZCTRACE-VM: again")
        }) {
            eprintln!("   {l}");
        }
        for r in &results {
            eprintln!("   {r}");
            if !r.contains(": PASS ") {
                failures.push(format!("{name}: {r}"));
            }
        }
        if results.len() < 2 {
            let tail: Vec<&String> = lines
                .iter()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!(
                "   {} of 2 result lines{}; console tail:",
                results.len(),
                if timed_out { " (timed out)" } else { "" }
            );
            for l in tail {
                eprintln!("   | {l}");
            }
            let why = if timed_out { " (timed out)" } else { "" };
            failures.push(format!("{name}: {} of 2 results{why}", results.len()));
        }
    }
    eprintln!(
        "\nxtask: vm-test took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("vm-test failed: {}", failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut c = Cpio::default();
        c.entry("init", 0o100_755, (0, 0), b"#!/bin/sh\n");
        let data = c.finish();
        assert!(data.starts_with(b"070701"));
        assert_eq!(data.len() % 4, 0);
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("init\0") && text.contains("TRAILER!!!\0"));
        // namesize field (12th) of the first entry: "init" + NUL = 5.
        assert_eq!(&data[6 + 11 * 8..6 + 12 * 8], b"00000005");
    }
}
