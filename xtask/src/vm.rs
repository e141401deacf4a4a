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

/// The architectures the matrix boots.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    const fn musl(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    const fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The machine, and the serial console the kernel writes to.
    const fn machine(self) -> (&'static [&'static str], &'static str) {
        match self {
            Arch::X86_64 => (&["-cpu", "max"], "ttyS0"),
            Arch::Aarch64 => (&["-M", "virt", "-cpu", "max"], "ttyAMA0"),
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "arm64",
        }
    }
}

/// Where a series' newest kernel image comes from.
pub enum Source {
    /// apt on this (amd64) machine: the package-name pattern.
    Apt(&'static str),
    /// Debian's pool for another architecture, read from the suite's
    /// package index (no foreign architecture is added to dpkg): the
    /// index's address, and which package names are the series'.
    Pool {
        index: &'static str,
        prefix: &'static str,
        suffix: &'static str,
    },
}

/// What the self-test must say on a kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `ZCTRACE-SELFTEST: PASS`, exit status 0.
    Pass,
    /// `ZCTRACE-SELFTEST: UNSUPPORTED` naming the missing features, exit
    /// status 4: a kernel older than zctrace supports.
    Unsupported,
}

/// One kernel the matrix boots.
pub struct Series {
    pub name: &'static str,
    pub arch: Arch,
    pub source: Source,
    pub expect: Expect,
}

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";

/// The kernel series the matrix boots: bookworm's 6.1 and its 6.12 updates,
/// for x86_64 and for arm64, and bullseye's 5.10 (x86_64), older than
/// zctrace supports, which it must refuse in one line with status 4.
pub const SERIES: &[Series] = &[
    Series {
        name: "6.1",
        arch: Arch::X86_64,
        source: Source::Apt(r"^linux-image-6\.1\.0-[0-9]+-amd64$"),
        expect: Expect::Pass,
    },
    Series {
        name: "6.12",
        arch: Arch::X86_64,
        source: Source::Apt(r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$"),
        expect: Expect::Pass,
    },
    Series {
        name: "5.10",
        arch: Arch::X86_64,
        source: Source::Pool {
            index: "http://deb.debian.org/debian/dists/bullseye/main/binary-amd64/Packages.xz",
            prefix: "linux-image-5.10.0-",
            suffix: "-amd64",
        },
        expect: Expect::Unsupported,
    },
    Series {
        name: "arm64-6.1",
        arch: Arch::Aarch64,
        source: Source::Pool {
            index: "http://deb.debian.org/debian/dists/bookworm/main/binary-arm64/Packages.xz",
            prefix: "linux-image-6.1.0-",
            suffix: "-arm64",
        },
        expect: Expect::Pass,
    },
    Series {
        name: "arm64-6.12",
        arch: Arch::Aarch64,
        source: Source::Pool {
            index: "http://deb.debian.org/debian-security/dists/bookworm-security/main/binary-arm64/Packages.xz",
            prefix: "linux-image-6.12.",
            suffix: "+deb12-arm64",
        },
        expect: Expect::Pass,
    },
];

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

/// /init of `vm-bench`: the untraced-tax workload (`zctrace syscalls`),
/// bare and under each mechanism's programs, in interleaved rounds.
const BENCH_INIT: &str = r#"#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t sysfs sys /sys
busybox mount -t tmpfs tmp /tmp
busybox mknod /dev/zero c 1 5
busybox mknod /dev/null c 1 3
echo "ZCTRACE-VM: booted $(busybox uname -r)"
N=${ZCTRACE_TAX_PAIRS:-20000}
for round in 1 2 3 4 5; do
  for m in bare syscall-tracepoints fexit zctrace; do
    if [ $m = bare ]; then
      out=$(/bin/zctrace syscalls $N 2>&1)
    else
      out=$(/bin/zctrace floor --mechanism $m -- /bin/zctrace syscalls $N 2>&1)
    fi
    echo "ZCTRACE-TAX: $m $(echo $out | busybox tr '
' ' ')"
  done
done
echo "ZCTRACE-TAX-DONE"
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

/// A suite's package index for another architecture: (package, pool
/// path) pairs, fetched once a day into the cache.
fn pool_index(index: &str) -> Result<Vec<(String, String)>> {
    let dir = cache_dir()?;
    let file = dir.join(format!(
        "{}.Packages",
        index.trim_start_matches("http://").replace(['/', '.'], "_")
    ));
    let fresh = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(86_400));
    if !fresh {
        eprintln!("xtask: downloading the package index {index}");
        let packed = file.with_extension("Packages.xz");
        super::run(
            Command::new("curl")
                .args(["-fsS", "--retry", "3", "-o"])
                .arg(&packed)
                .arg(index),
        )?;
        let out = Command::new("xz")
            .arg("-dc")
            .arg(&packed)
            .output()
            .context("xz")?;
        std::fs::remove_file(&packed)?;
        if !out.status.success() {
            bail!("cannot unpack {index}");
        }
        std::fs::write(&file, &out.stdout)?;
    }
    let text = std::fs::read_to_string(&file)?;
    let mut packages = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("Package: ") {
            name = Some(n.to_owned());
        } else if let Some(f) = line.strip_prefix("Filename: ")
            && let Some(n) = name.take()
        {
            packages.push((n, f.to_owned()));
        }
    }
    Ok(packages)
}

/// The newest package of a pool series: PREFIX, then digits (and dots),
/// then SUFFIX; and the address of its .deb.
fn newest_pool_package(index: &str, prefix: &str, suffix: &str) -> Result<(String, String)> {
    let base = if index.contains("debian-security") {
        SECURITY
    } else {
        MIRROR
    };
    let mut found: Vec<(String, String)> = pool_index(index)?
        .into_iter()
        .filter(|(n, _)| {
            n.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .is_some_and(|mid| {
                    !mid.is_empty() && mid.chars().all(|c| c.is_ascii_digit() || c == '.')
                })
        })
        .collect();
    found.sort_by_key(|(n, _)| {
        n.split(|c: char| !c.is_ascii_digit())
            .filter_map(|d| d.parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    let (name, path) = found
        .pop()
        .ok_or_else(|| anyhow!("{index} has no package {prefix}N{suffix}"))?;
    Ok((name, format!("{base}/{path}")))
}

/// One file out of a .deb (a kernel image, busybox), cached.
fn from_deb(url: &str, member: &str, cached: &Path) -> Result<()> {
    if cached.exists() {
        return Ok(());
    }
    let dir = cache_dir()?;
    let deb = dir.join("download.deb");
    eprintln!("xtask: downloading {url} (cached in {})", dir.display());
    super::run(
        Command::new("curl")
            .args(["-fsS", "--retry", "3", "-o"])
            .arg(&deb)
            .arg(url),
    )?;
    let tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()?;
    let out = Command::new("tar")
        .args(["-x", "-O", "--wildcards", member])
        .stdin(tar.stdout.ok_or_else(|| anyhow!("dpkg-deb stdout"))?)
        .output()?;
    std::fs::remove_file(&deb)?;
    if !out.status.success() || out.stdout.len() < 100_000 {
        bail!(
            "no {member} in {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(cached, &out.stdout)?;
    Ok(())
}

/// The kernel image of `package` (a package apt knows), downloaded from
/// the address apt gives and extracted once.
fn kernel_image(package: &str) -> Result<PathBuf> {
    let image = cache_dir()?.join(format!("{package}.vmlinuz"));
    if image.exists() {
        return Ok(image);
    }
    let out = Command::new("apt-get")
        .args(["download", "--print-uris", "-qq", package])
        .output()
        .context("apt-get download --print-uris")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let url = text
        .split('\'')
        .nth(1)
        .filter(|u| u.ends_with(".deb"))
        .ok_or_else(|| anyhow!("apt gives no address for {package}: {text}"))?;
    from_deb(url, "./boot/vmlinuz-*", &image)?;
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

fn initramfs(zctrace: &Path, busybox: &Path, init: &str) -> Result<Vec<u8>> {
    let mut c = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp"] {
        c.entry(d, 0o040_755, (0, 0), &[]);
    }
    // Without /dev/console, init would run with no stdout.
    c.entry("dev/console", 0o020_600, (5, 1), &[]);
    c.entry("init", 0o100_755, (0, 0), init.as_bytes());
    c.entry("bin/busybox", 0o100_755, (0, 0), &std::fs::read(busybox)?);
    c.entry("bin/sh", 0o120_777, (0, 0), b"busybox");
    c.entry("bin/zctrace", 0o100_755, (0, 0), &std::fs::read(zctrace)?);
    Ok(c.finish())
}

/// zctrace built as a static musl binary for `arch` (a cross build for
/// arm64, linked by Debian's aarch64 gcc), with that architecture's static
/// busybox, packed into an initramfs; returns its path.
fn initramfs_for(arch: Arch, kind: Initramfs) -> Result<PathBuf> {
    let musl = arch.musl();
    let targets = super::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !targets.lines().any(|t| t.trim() == musl) {
        super::run(Command::new("rustup").args(["target", "add", musl]))?;
    }
    let mut args = vec![
        "build",
        "--release",
        "--package",
        "zctrace",
        "--target",
        musl,
    ];
    if kind == Initramfs::Bench {
        args.extend(["--features", "bench"]);
    }
    let mut build = super::cargo(&args)?;
    if arch == Arch::Aarch64 {
        build.env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
            "aarch64-linux-gnu-gcc",
        );
    }
    super::run(&mut build)?;
    let zctrace = super::workspace_root()
        .join("target")
        .join(musl)
        .join("release/zctrace");
    let busybox = match arch {
        Arch::X86_64 => PathBuf::from("/bin/busybox"),
        Arch::Aarch64 => {
            let cached = cache_dir()?.join("busybox-arm64");
            if !cached.exists() {
                let index =
                    "http://deb.debian.org/debian/dists/bookworm/main/binary-arm64/Packages.xz";
                let (_, path) = pool_index(index)?
                    .into_iter()
                    .find(|(n, _)| n == "busybox-static")
                    .ok_or_else(|| anyhow!("{index} has no busybox-static"))?;
                from_deb(&format!("{MIRROR}/{path}"), "./bin/busybox", &cached)?;
            }
            cached
        }
    };
    let (name, init) = match kind {
        Initramfs::Selftest => ("", INIT),
        Initramfs::Bench => ("-bench", BENCH_INIT),
    };
    let initrd = cache_dir()?.join(format!("initramfs-{}{name}.cpio", arch.name()));
    std::fs::write(&initrd, initramfs(&zctrace, &busybox, init)?)?;
    Ok(initrd)
}

/// What a guest runs: the self-test, or the untraced-tax benchmark.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Initramfs {
    Selftest,
    Bench,
}

/// Boots `kernel` with the initramfs; returns the console lines.
fn boot(
    arch: Arch,
    kernel: &Path,
    initrd: &Path,
    require: Option<&str>,
) -> Result<(Vec<String>, bool)> {
    let extra = require.map(|hooks| format!("ZCTRACE_SELFTEST_REQUIRE={hooks}"));
    boot_with(arch, kernel, initrd, extra.as_deref())
}

/// Boots `kernel` with the initramfs, `extra` added to the kernel command
/// line; returns the console lines, and whether the boot timed out.
fn boot_with(
    arch: Arch,
    kernel: &Path,
    initrd: &Path,
    extra: Option<&str>,
) -> Result<(Vec<String>, bool)> {
    let mut cmd = Command::new(arch.qemu());
    let (machine, console) = arch.machine();
    // Software emulation: KVM on these machines cannot run stock guests.
    // ZCTRACE_VM_ACCEL=kvm opts in where it works.
    let accel = std::env::var("ZCTRACE_VM_ACCEL").unwrap_or_else(|_| "tcg".into());
    cmd.args(["-accel", &accel, "-m", "1024", "-smp", "2"])
        .args(machine)
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
        .arg(match extra {
            Some(words) => format!("console={console} panic=-1 quiet {words}"),
            None => format!("console={console} panic=-1 quiet"),
        })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", arch.qemu()))?;
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
    let series: Vec<&Series> = SERIES
        .iter()
        .filter(|s| which == "all" || which == s.name)
        .collect();
    if series.is_empty() {
        bail!(
            "unknown kernel '{which}' (known: {}, all)",
            SERIES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
    }
    // One static zctrace and one initramfs per architecture.
    let mut initrds = Vec::new();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        if series.iter().any(|s| s.arch == arch) {
            initrds.push((arch, initramfs_for(arch, Initramfs::Selftest)?));
        }
    }
    let mut failures = Vec::new();
    for Series {
        name,
        arch,
        source,
        expect,
    } in series
    {
        let (package, kernel) = match source {
            Source::Apt(pattern) => {
                let package = newest_package(pattern)?;
                let kernel = kernel_image(&package)?;
                (package, kernel)
            }
            Source::Pool {
                index,
                prefix,
                suffix,
            } => {
                let (package, url) = newest_pool_package(index, prefix, suffix)?;
                let kernel = cache_dir()?.join(format!("{package}.vmlinuz"));
                from_deb(&url, "./boot/vmlinuz-*", &kernel)?;
                (package, kernel)
            }
        };
        let initrd = initrds
            .iter()
            .find(|(a, _)| a == arch)
            .map(|(_, i)| i.clone())
            .ok_or_else(|| anyhow!("no initramfs for {}", arch.name()))?;
        let t0 = Instant::now();
        let (lines, timed_out) = boot(*arch, &kernel, &initrd, require)?;
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
        let statuses: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("ZCTRACE-VM-EXIT: "))
            .map(str::trim)
            .collect();
        for (i, r) in results.iter().enumerate() {
            eprintln!("   {r}");
            let status = statuses.get(i).copied().unwrap_or("none");
            let ok = match expect {
                Expect::Pass => r.contains(": PASS ") && status == "0",
                Expect::Unsupported => {
                    r.starts_with("ZCTRACE-SELFTEST: UNSUPPORTED ") && status == "4"
                }
            };
            if !ok {
                failures.push(format!("{name}: {r} (exit status {status})"));
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

/// The mechanisms `vm-bench` compares, as `zctrace floor --mechanism`
/// names them (and "bare"), with what each line of the table says.
const TAX_MODES: [(&str, &str); 4] = [
    ("bare", "bare: no program"),
    (
        "syscall-tracepoints",
        "empty programs on the raw syscall tracepoints (sys_enter + sys_exit)",
    ),
    (
        "fexit",
        "empty fexit programs on the read and write syscalls' own functions",
    ),
    (
        "zctrace",
        "zctrace's probes, tracing nothing (the process is untraced)",
    ),
];

/// Median ns per pair of each mode from a guest's console, or the first
/// refusal it printed.
fn tax_results(lines: &[String]) -> Vec<(&'static str, Result<f64, String>)> {
    TAX_MODES
        .iter()
        .map(|&(mode, _)| {
            let mut ns = Vec::new();
            let mut why = None;
            for rest in lines
                .iter()
                .filter_map(|l| l.strip_prefix("ZCTRACE-TAX: "))
                .filter_map(|l| l.strip_prefix(mode)?.strip_prefix(' '))
            {
                match rest
                    .split("zctrace-syscalls-ns-per-pair ")
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                {
                    Some(v) => ns.push(v),
                    None => why = why.or_else(|| Some(rest.trim().to_owned())),
                }
            }
            let result = if ns.is_empty() {
                Err(why.unwrap_or_else(|| "no result".to_owned()))
            } else {
                ns.sort_by(f64::total_cmp);
                Ok(ns[ns.len() / 2])
            };
            (mode, result)
        })
        .collect()
}

/// The title of BENCHMARKS.md's section `vm-bench` writes.
pub const TAX_SECTION: &str = "## Untraced tax by mechanism (Debian kernels in QEMU)";

/// `cargo xtask vm-bench`: the tax on an untraced process of each way of
/// hooking the syscalls, inside the kernels where fexit attaches (this
/// host refuses it), by ratio to bare (software emulation: ratios only);
/// rewrites that section of BENCHMARKS.md.
pub fn vm_bench(which: &str) -> Result<String> {
    super::setup()?;
    let series: Vec<&Series> = SERIES
        .iter()
        .filter(|s| {
            s.expect == Expect::Pass && (which == "all" || which.split(',').any(|w| w == s.name))
        })
        .collect();
    if series.is_empty() {
        bail!("unknown or unsupported kernel '{which}'");
    }
    let mut doc = format!(
        "\n{TAX_SECTION}\n\nAn untraced process making 4 KiB read + write pairs \
         (`zctrace syscalls`: /dev/zero to /dev/null) inside each kernel, booted in QEMU with software \
         emulation (`cargo xtask vm-bench`): ns per pair, median of 5 interleaved rounds of 20,000 pairs, and the \
         ratio to bare. Emulation makes every absolute figure meaningless; the ratios compare the \
         mechanisms on one kernel. The host (6.18) refuses fexit, so it is measured only here.\n\n\
         | kernel | mechanism | ns per pair | vs bare |\n|---|---|---|---|\n"
    );
    for s in series {
        let package = match s.source {
            Source::Apt(pattern) => newest_package(pattern)?,
            Source::Pool {
                index,
                prefix,
                suffix,
            } => newest_pool_package(index, prefix, suffix)?.0,
        };
        let kernel = match s.source {
            Source::Apt(_) => kernel_image(&package)?,
            Source::Pool { .. } => cache_dir()?.join(format!("{package}.vmlinuz")),
        };
        if !kernel.exists() {
            bail!(
                "{} is not cached: run `cargo xtask vm-test --kernel {}` first",
                kernel.display(),
                s.name
            );
        }
        let initrd = initramfs_for(s.arch, Initramfs::Bench)?;
        let t0 = Instant::now();
        let (lines, timed_out) = boot_with(s.arch, &kernel, &initrd, None)?;
        eprintln!(
            "xtask: {} booted and measured in {:.0} s",
            s.name,
            t0.elapsed().as_secs_f64()
        );
        if timed_out || !lines.iter().any(|l| l.starts_with("ZCTRACE-TAX-DONE")) {
            for l in lines
                .iter()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("   | {l}");
            }
            bail!("{}: the guest did not finish the benchmark", s.name);
        }
        for l in lines.iter().filter(|l| l.starts_with("ZCTRACE-TAX")) {
            eprintln!("   {l}");
        }
        let results = tax_results(&lines);
        let bare = results
            .iter()
            .find_map(|(m, r)| (*m == "bare").then_some(r.clone()));
        let Some(Ok(bare)) = bare else {
            bail!("{}: no bare result", s.name);
        };
        for ((_, r), (_, what)) in results.iter().zip(TAX_MODES) {
            let (ns, ratio) = match r {
                Ok(v) => (format!("{v:.0}"), format!("{:.2}x", v / bare)),
                Err(why) => ("refused".to_owned(), why.replace('|', "/")),
            };
            doc += &format!("| {} | {what} | {ns} | {ratio} |\n", s.name);
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tax_lines_give_each_mode_its_median_or_its_refusal() {
        let lines: Vec<String> = [
            "ZCTRACE-TAX: bare zctrace-syscalls-ns-per-pair 100",
            "ZCTRACE-TAX: bare zctrace-syscalls-ns-per-pair 300",
            "ZCTRACE-TAX: bare zctrace-syscalls-ns-per-pair 200",
            "ZCTRACE-TAX: syscall-tracepoints zctrace floor: 2 empty programs attached zctrace-syscalls-ns-per-pair 250",
            "ZCTRACE-TAX: fexit zctrace: fexit on __x64_sys_read: Operation not permitted",
            "noise",
        ]
        .map(String::from)
        .to_vec();
        let r = tax_results(&lines);
        assert_eq!(r[0], ("bare", Ok(200.0)));
        assert_eq!(r[1], ("syscall-tracepoints", Ok(250.0)));
        assert_eq!(
            r[2],
            (
                "fexit",
                Err("zctrace: fexit on __x64_sys_read: Operation not permitted".to_owned())
            )
        );
        assert_eq!(r[3], ("zctrace", Err("no result".to_owned())));
    }

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
