//! `cargo xtask`: set-up, tests and the demo, each in one command.
//!
//! `setup` installs what is missing (the pinned nightly with rust-src,
//! bpf-linker built against that nightly's own LLVM, Debian packages the
//! tests use) and does nothing when everything is there. `test` and `demo`
//! run `setup` first, so each works on a fresh machine.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser, Subcommand};

mod vm;

/// bpf-linker release that `setup` builds (its `llvm-<major>` features
/// name the LLVM it links; the major comes from the pinned nightly).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the test suite uses: bpftool (prove nothing stays
/// attached), tmux (drive the TUI end to end), nginx-light and curl (a
/// real web server, traced with its sendfile option on and off),
/// qemu-system-x86 and busybox-static (the kernel matrix, xtask vm-test).
const APT_PACKAGES: &[&str] = &[
    "bpftool",
    "tmux",
    "nginx-light",
    "curl",
    "qemu-system-x86",
    "busybox-static",
    // fio's io_uring engine: a real program driving io_uring.
    "fio",
    // Real programs whose flows the tests name: rsync's receiver writing
    // files, socat copying a file to TCP.
    "rsync",
    "socat",
    // `--metrics`: a real Prometheus server scrapes zctrace, and promtool
    // checks the exposition and the example scrape config.
    "prometheus",
    // Builds the many-threads workload (tests/kernel/threads.c).
    "gcc",
    // The workshop handout is rendered by a real browser (headless).
    "chromium",
    "fonts-dejavu-core",
    // Network namespaces and a veth pair for `demo --to`.
    "iproute2",
    // The arm64 half of the kernel matrix: the emulator, the cross linker
    // for the static musl zctrace, and xz for Debian's package indexes.
    "qemu-system-arm",
    "gcc-aarch64-linux-gnu",
    "xz-utils",
];
/// Set to 1 to let non-root runs skip the kernel tests (never in CI).
const SKIP_ROOT_ENV: &str = "ZCTRACE_SKIP_ROOT_TESTS";

#[derive(Parser)]
#[command(about = "zctrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (no-op when all is there).
    Setup,
    /// Run the whole test suite: fmt, clippy (userspace and eBPF), unit
    /// tests and the root-only kernel tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure zctrace's overhead on syscall-heavy workloads (interleaved
    /// bare / traced runs) and regenerate BENCHMARKS.md.
    Bench {
        /// Rounds per workload for bare, floor and zctrace (the slower
        /// tracers run at most 5 and 3).
        #[arg(long, default_value_t = 11)]
        rounds: usize,
        /// Only regenerate BENCHMARKS.md's "Tracing every process" section
        /// (its measurements take about a minute).
        #[arg(long)]
        machine_only: bool,
    },
    /// Boot Debian's 6.1 and 6.12 kernels in QEMU and run zctrace's probe
    /// self-test inside each.
    VmTest {
        /// 6.1, 6.12, arm64-6.1, arm64-6.12 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Make these optional hooks mandatory (comma-separated), to see a
        /// kernel that lacks one fail with the kernel's reason.
        #[arg(long, value_name = "HOOKS")]
        require_hook: Option<String>,
    },
    /// Boot Debian's 6.1 and 6.12 kernels in QEMU (where fexit attaches)
    /// and measure what each way of hooking the syscalls costs an
    /// untraced process; rewrites that section of BENCHMARKS.md.
    VmBench {
        /// 6.1, 6.12, arm64-6.1, arm64-6.12 (comma-separated) or all.
        /// The arm64 guests are slow to emulate, and arm64 6.1 refuses
        /// fexit (ENOTSUPP): left out unless asked for.
        #[arg(long, default_value = "6.1,6.12")]
        kernel: String,
    },
    /// Build zctrace (release) and run `zctrace demo` with these arguments.
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup => setup().map(|_| ()),
        Cmd::Test { args } => test(&args),
        Cmd::Demo { args } => demo(&args),
        Cmd::Bench {
            rounds,
            machine_only: false,
        } => bench(rounds),
        Cmd::Bench {
            rounds,
            machine_only: true,
        } => bench_machine_only(rounds),
        Cmd::VmTest {
            kernel,
            require_hook,
        } => vm::vm_test(&kernel, require_hook.as_deref()),
        Cmd::VmBench { kernel } => vm::vm_bench(&kernel)
            .and_then(|section| rewrite_section(vm::TAX_SECTION, &section, None)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The nightly pinned in zctrace-ebpf/rust-toolchain.toml.
fn pinned_nightly() -> Result<String> {
    let file = workspace_root().join("zctrace-ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("channel"))
        .and_then(|rest| rest.split('"').nth(1))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no channel = \"...\" in {}", file.display()))
}

fn home() -> Result<PathBuf> {
    env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("HOME is not set"))
}

/// PATH with cargo's bin directory in front (bpf-linker lands there).
fn path_with_cargo_bin() -> Result<OsString> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .map_or_else(|| home().map(|h| h.join(".cargo")), Ok)?;
    let bin = cargo_home.join("bin");
    let mut paths: Vec<PathBuf> = env::split_paths(&env::var_os("PATH").unwrap_or_default())
        .filter(|p| *p != bin)
        .collect();
    paths.insert(0, bin);
    Ok(env::join_paths(paths)?)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn setup() -> Result<String> {
    let started = Instant::now();
    let nightly = pinned_nightly()?;
    ensure_nightly(&nightly)?;
    ensure_bpf_linker(&nightly)?;
    ensure_apt_packages()?;
    eprintln!(
        "xtask: setup complete ({nightly}, bpf-linker, {}) in {:.1}s",
        APT_PACKAGES.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(nightly)
}

fn ensure_nightly(nightly: &str) -> Result<()> {
    const COMPONENTS: &[&str] = &["rust-src", "clippy", "rustfmt"];
    let installed = output(Command::new("rustup").args(["toolchain", "list"]))?;
    let have_toolchain = installed.lines().any(|l| l.starts_with(nightly));
    if have_toolchain {
        let comps = output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            nightly,
        ]))?;
        let missing: Vec<&str> = COMPONENTS
            .iter()
            .copied()
            .filter(|c| {
                !comps
                    .lines()
                    .any(|l| l.starts_with(&format!("{c}-")) || l == *c)
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        eprintln!("xtask: adding {} to {nightly}", missing.join(", "));
        let mut cmd = Command::new("rustup");
        cmd.args(["component", "add", "--toolchain", nightly])
            .args(&missing);
        return run(&mut cmd);
    }
    eprintln!("xtask: installing toolchain {nightly} (for the eBPF build)");
    let mut cmd = Command::new("rustup");
    cmd.args(["toolchain", "install", nightly, "--profile", "minimal"]);
    for c in COMPONENTS {
        cmd.args(["--component", c]);
    }
    run(&mut cmd)
}

fn ensure_bpf_linker(nightly: &str) -> Result<()> {
    let path = path_with_cargo_bin()?;
    let found = Command::new("bpf-linker")
        .arg("--version")
        .env("PATH", &path)
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Ok(());
    }
    // bpf-linker links the LLVM it finds under LLVM_PREFIX; use the
    // nightly's own libLLVM so the linker and rustc agree on the bitcode.
    let vv = output(Command::new("rustc").arg(format!("+{nightly}")).arg("-vV"))?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .ok_or_else(|| anyhow!("rustc +{nightly} -vV printed no LLVM version"))?;
    let major = llvm.split('.').next().unwrap_or(llvm).trim().to_owned();
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{nightly}"))
            .args(["--print", "sysroot"]),
    )?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM") && n.ends_with(".so")))
        .ok_or_else(|| anyhow!("no libLLVM in {}", lib_dir.display()))?;
    // The prefix must persist: bpf-linker's RUNPATH points into it.
    let data = env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .map_or_else(|| home().map(|h| h.join(".local/share")), Ok)?;
    let prefix = data.join("zctrace").join(format!("llvm-{major}"));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so".to_owned(), libllvm.clone()] {
        let link = prefix_lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&libllvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {nightly}'s LLVM {llvm} \
         (LLVM_PREFIX={}); this takes a few minutes once",
        prefix.display()
    );
    run(Command::new("cargo")
        .arg(format!("+{nightly}"))
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env("PATH", &path))
}

fn ensure_apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        eprintln!(
            "xtask: not a Debian-like system: install {} yourself for the full test suite",
            missing.join(", ")
        );
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn cargo(args: &[&str]) -> Result<Command> {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root())
        .args(args)
        .env("PATH", path_with_cargo_bin()?);
    Ok(cmd)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn test(extra: &[String]) -> Result<()> {
    let started = Instant::now();
    let nightly = setup()?;
    let root = is_root();
    if !root && env::var(SKIP_ROOT_ENV).as_deref() != Ok("1") {
        bail!(
            "the kernel tests load eBPF programs and need root; run as root \
             (or set {SKIP_ROOT_ENV}=1 to leave them out, counted as ignored)"
        );
    }
    run(&mut cargo(&["fmt", "--all", "--check"])?)?;
    run(&mut cargo(&[
        "clippy",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?)?;
    // The eBPF crate, on its own target and toolchain, with the cfg that
    // aya-build passes when it builds the object.
    let mut ebpf = Command::new("rustup");
    ebpf.current_dir(workspace_root())
        .env("PATH", path_with_cargo_bin()?)
        .args(["run", &nightly, "cargo"]);
    ebpf.args([
        "clippy",
        "--package",
        "zctrace-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--target-dir",
        "target/ebpf-clippy",
        "--",
        "-D",
        "warnings",
    ]);
    ebpf.env(
        "CARGO_ENCODED_RUSTFLAGS",
        format!("--cfg=bpf_target_arch=\"{}\"", env::consts::ARCH),
    );
    ebpf.env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    run(&mut ebpf)?;
    let mut test = cargo(&["test", "--workspace", "--exclude", "zctrace-ebpf"])?;
    test.args(extra);
    // Tests that load eBPF programs are #[ignore = "needs root: ..."]: as
    // root they all run; otherwise they are reported as ignored.
    if root {
        test.args(["--", "--include-ignored"]);
    }
    let Counts {
        mut passed,
        failed,
        ignored,
    } = run_counting(&mut test)?;
    // The probes inside Debian's 6.1 and 6.12 kernels (QEMU): one test per
    // kernel.
    if extra.is_empty() {
        vm::vm_test("all", None)?;
        passed += vm::SERIES.len() as u64;
    }
    eprintln!(
        "xtask: all checks passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    // The plain closing line: the sum over every test binary and kernel.
    if ignored > 0 {
        println!("tests: {passed} passed, {failed} failed, {ignored} ignored (not run)");
    } else {
        println!("tests: {passed} passed, {failed} failed");
    }
    Ok(())
}

/// Tests counted over every test binary.
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs `cargo test`, passing its output through, and sums the
/// "test result: ... N passed; M failed; K ignored" lines of every test
/// binary.
fn run_counting(cmd: &mut Command) -> Result<Counts> {
    use std::io::BufRead as _;
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {failed} tests failed");
    }
    Ok(Counts {
        passed,
        failed,
        ignored,
    })
}

/// Builds the release binary with these features; returns its path.
fn build_release(features: &[&str]) -> Result<PathBuf> {
    let mut args = vec!["build", "--release", "--package", "zctrace"];
    let joined = features.join(",");
    if !features.is_empty() {
        args.extend(["--features", &joined]);
    }
    run(&mut cargo(&args)?)?;
    Ok(workspace_root().join("target/release/zctrace"))
}

fn demo(args: &[String]) -> Result<()> {
    setup()?;
    let bin = build_release(&[])?;
    let status = Command::new(&bin)
        .arg("demo")
        .args(args)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("zctrace demo exited with {status}");
    }
    Ok(())
}

/// One workload: a command that reports its own elapsed time, so process
/// start-up and probe loading are not part of what is measured.
struct Workload {
    name: &'static str,
    what: &'static str,
    argv: Vec<String>,
    parse: fn(&str) -> Option<f64>,
}

/// dd prints "... copied, 0.52 s, 3.9 GB/s" on stderr.
fn dd_seconds(out: &str) -> Option<f64> {
    let (_, rest) = out.lines().find_map(|l| l.split_once(" copied, "))?;
    rest.split(" s").next()?.trim().parse().ok()
}

/// `zctrace workload` prints "elapsed_ns N".
fn workload_seconds(out: &str) -> Option<f64> {
    let ns: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("elapsed_ns "))?
        .trim()
        .parse()
        .ok()?;
    Some(ns / 1e9)
}

/// Size of fio's file in the io_uring workloads.
const FIO_BYTES: u64 = 256 << 20;

fn fio_argv(pin: &[String], file: &str, bs: &str) -> Vec<String> {
    pin.iter()
        .cloned()
        .chain([
            "/usr/bin/fio".to_owned(),
            "--name=bench".to_owned(),
            format!("--filename={file}"),
            "--rw=read".to_owned(),
            format!("--bs={bs}"),
            format!("--size={}", FIO_BYTES),
            "--ioengine=io_uring".to_owned(),
            "--iodepth=8".to_owned(),
        ])
        .collect()
}

/// fio's summary: "READ: bw=..., io=256MiB (268MB), run=123-123msec".
fn fio_seconds(out: &str) -> Option<f64> {
    let run = out
        .lines()
        .find_map(|l| l.split_once(" run=")?.1.split(',').next())?;
    let (min, unit) = run.split_once('-')?;
    let scale = if unit.ends_with("usec") { 1e-6 } else { 1e-3 };
    min.trim().parse::<f64>().ok().map(|v| v * scale)
}

/// What bpftrace counts in the comparison: the same events zctrace does,
/// for the same process (syscalls, bytes, switches, faults, receive copies).
const BPFTRACE_SCRIPT: &str = "tracepoint:raw_syscalls:sys_enter /pid == cpid/ { @sys[tid] = count(); } \
    tracepoint:raw_syscalls:sys_exit /pid == cpid && args->ret > 0/ { @bytes[tid] = sum(args->ret); } \
    tracepoint:sched:sched_switch /pid == cpid/ { @cs[tid] = count(); } \
    tracepoint:exceptions:page_fault_user /pid == cpid/ { @pf[tid] = count(); } \
    tracepoint:skb:skb_copy_datagram_iovec /pid == cpid/ { @rx[tid] = sum(args->len); } \
    tracepoint:io_uring:io_uring_submit_req /pid == cpid/ { @sq[tid] = count(); } \
    tracepoint:io_uring:io_uring_complete /pid == cpid && args->res > 0/ { @cq[tid] = sum(args->res); }";

/// One way of running a workload: `prefix` then the workload's argv (as
/// one string argument when `joined`, for bpftrace -c).
struct Mode {
    name: &'static str,
    /// Slow tracers get fewer rounds (a benchmark, not a soak test).
    max_rounds: usize,
    prefix: Vec<String>,
    joined: bool,
}

impl Mode {
    fn new(name: &'static str, max_rounds: usize, prefix: &[&str], joined: bool) -> Self {
        Mode {
            name,
            max_rounds,
            prefix: prefix.iter().map(|p| (*p).to_owned()).collect(),
            joined,
        }
    }

    fn argv(&self, workload: &[String]) -> Vec<String> {
        let mut v = self.prefix.clone();
        if self.joined {
            v.push(workload.join(" "));
        } else {
            v.extend(workload.iter().cloned());
        }
        v
    }
}

fn bench(rounds: usize) -> Result<()> {
    setup()?;
    ensure_bench_tools()?;
    // The benchmark's workloads and floor live behind the bench feature.
    let bin = build_release(&["bench"])?.display().to_string();
    // Every workload runs on one CPU: its sender and receiver threads and
    // the kernel work they cause share it, so each cost of tracing adds to
    // the elapsed time instead of hiding in a second core's idle time, and
    // runs repeat closely (unpinned, the loopback workloads' two threads
    // land on one core or two from run to run).
    let pin = pin_prefix();
    let w = |args: &[&str]| -> Vec<String> {
        pin.iter()
            .cloned()
            .chain(std::iter::once(bin.clone()))
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect()
    };
    // fio's file: 256 MiB, written once, cached from the first run on.
    let fio_file = std::env::temp_dir().join("zctrace-bench-fio.bin");
    if std::fs::metadata(&fio_file).map(|m| m.len()).unwrap_or(0) != FIO_BYTES {
        let block: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut f = std::fs::File::create(&fio_file)
            .with_context(|| format!("creating {}", fio_file.display()))?;
        for _ in 0..FIO_BYTES >> 20 {
            std::io::Write::write_all(&mut f, &block)?;
        }
    }
    let fio_file = fio_file.display().to_string();
    let workloads = [
        Workload {
            name: "dd bs=4k",
            what: "dd if=/dev/zero of=/dev/null bs=4k count=200000: 400,000 syscalls, the worst case",
            argv: dd_argv(&pin),
            parse: dd_seconds,
        },
        Workload {
            name: "read+write 4 KiB",
            what: "256 MiB cached file to a loopback TCP socket in 4 KiB read()/write() pairs (zctrace workload)",
            argv: w(&["workload", "read-write", "--size", "256M", "--chunk", "4K"]),
            parse: workload_seconds,
        },
        Workload {
            name: "sendfile 64 KiB",
            what: "256 MiB cached file to a loopback TCP socket in 64 KiB sendfile() calls (zctrace workload)",
            argv: w(&["workload", "sendfile", "--size", "256M", "--chunk", "64K"]),
            parse: workload_seconds,
        },
        Workload {
            name: "demo read+write",
            what: "the demo's read+write method: 256 MiB in 64 KiB chunks (zctrace workload)",
            argv: w(&["workload", "read-write", "--size", "256M", "--chunk", "64K"]),
            parse: workload_seconds,
        },
        Workload {
            name: "fio io_uring 4 KiB",
            what: "fio --ioengine=io_uring --rw=read --bs=4k --iodepth=8: a cached 256 MiB file read through a ring (65,536 requests)",
            argv: fio_argv(&pin, &fio_file, "4k"),
            parse: fio_seconds,
        },
        Workload {
            name: "fio io_uring 64 KiB",
            what: "fio --ioengine=io_uring --rw=read --bs=64k --iodepth=8: the same file in 4,096 requests",
            argv: fio_argv(&pin, &fio_file, "64k"),
            parse: fio_seconds,
        },
    ];
    let modes = [
        Mode::new("bare", usize::MAX, &[], false),
        Mode::new(
            "floor (empty programs)",
            usize::MAX,
            &[&bin, "floor", "--"],
            false,
        ),
        Mode::new(
            "zctrace run",
            usize::MAX,
            &[&bin, "run", "-o", "/dev/null", "--"],
            false,
        ),
        Mode::new(
            "bpftrace",
            5,
            &["bpftrace", "-q", "-e", BPFTRACE_SCRIPT, "-c"],
            true,
        ),
        Mode::new(
            "perf trace -s",
            3,
            &["perf", "trace", "-s", "-o", "/dev/null", "--"],
            false,
        ),
        Mode::new(
            "strace -c -f",
            3,
            &["strace", "-c", "-f", "-o", "/dev/null", "--"],
            false,
        ),
    ];
    let mut table = String::new();
    let mut own_cpu = String::new();
    // Per workload, the median of each mode (in `modes` order).
    let mut medians: Vec<Vec<f64>> = Vec::new();
    for wl in &workloads {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut cpu: Vec<f64> = Vec::new();
        // Interleaved (A B C ... A B C ...) so drift affects every mode alike.
        for round in 0..rounds {
            for (i, mode) in modes.iter().enumerate() {
                if round >= mode.max_rounds {
                    continue;
                }
                let argv = mode.argv(&wl.argv);
                let out = Command::new(&argv[0])
                    .args(&argv[1..])
                    .env("ZCTRACE_REPORT_CPU", "1")
                    .output()?;
                if !out.status.success() {
                    bail!("{argv:?} failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let secs = (wl.parse)(&text)
                    .ok_or_else(|| anyhow!("no timing in output of {argv:?}: {text}"))?;
                samples[i].push(secs);
                // zctrace's own CPU (all its threads, not the workload's).
                if mode.name == "zctrace run"
                    && let Some(ms) = text
                        .lines()
                        .find_map(|l| l.strip_prefix("zctrace-own-cpu-ms "))
                {
                    cpu.push(ms.trim().parse().unwrap_or(0.0));
                }
            }
        }
        let bare = median(&samples[0]);
        let floor = median(&samples[1]);
        medians.push(samples.iter().map(|s| median(s)).collect::<Vec<f64>>());
        own_cpu += &format!(
            "| {} | {:.0} | {:.0} |\n",
            wl.name,
            median(&cpu),
            median(&samples[2]) * 1e3
        );
        for (mode, s) in modes.iter().zip(&samples) {
            let (lo, hi) = s
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            let line = format!(
                "| {} | {} | {} | {:.1} | {:.1} - {:.1} | {:.2}x | {:.2}x |\n",
                wl.name,
                mode.name,
                s.len(),
                median(s) * 1e3,
                lo * 1e3,
                hi * 1e3,
                median(s) / bare,
                median(s) / floor
            );
            eprint!("{line}");
            table.push_str(&line);
        }
    }
    let uname = output(Command::new("uname").arg("-r"))?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut doc = String::from("# Benchmarks\n\n");
    doc += "Generated by `cargo xtask bench`; do not edit by hand.\n\n";
    doc += &format!(
        "Machine: {cpu}, {cores} cores; kernel {}; up to {rounds} interleaved rounds per mode.\n\n",
        uname.trim()
    );
    doc += "Each workload times itself (dd's own report, `zctrace workload`'s elapsed time), so\n";
    doc +=
        "process start-up, probe loading and tracer teardown are not counted. Each runs pinned\n";
    doc += &format!(
        "to one CPU (`{}`): the loopback workloads' sender, receiver and the kernel's network\n",
        pin.join(" ")
    );
    doc += "work then share that CPU, so every cost of tracing lands on the elapsed time (none hides\n";
    doc +=
        "in a second core's idle time) and runs repeat closely. The tracers themselves are not\n";
    doc += "pinned. Modes:\n\n";
    doc += "- bare: no tracing.\n";
    doc += "- floor: `zctrace floor`, empty programs on the same tracepoints zctrace's tracepoint tier uses\n";
    doc +=
        "  (what merely enabling those hooks costs; no tracer that hooks them can be cheaper).\n";
    doc += "- zctrace run: the workload traced from its first instruction with every hook that attaches here.\n";
    doc += "- bpftrace: counting the equivalent events for the same process (syscalls, bytes, context\n";
    doc += "  switches, user page faults, receive copies), filtered on its pid in the kernel.\n";
    doc += "- perf trace -s and strace -c -f: per-syscall summaries, for contrast.\n\n";
    doc += "| workload | mode | runs | median ms | min - max ms | vs bare | vs floor |\n|---|---|---|---|---|---|---|\n";
    doc += &table;
    doc += &targets_section(&medians);
    doc += "\nWorkloads:\n\n";
    for wl in &workloads {
        doc += &format!("- {}: {}\n", wl.name, wl.what);
    }
    // zctrace's own CPU: its threads only; the traced program's time is the
    // overhead above. Most of it is start-up (parsing the kernel's BTF,
    // loading and attaching), measured alone with `zctrace hooks`.
    let mut load = Vec::new();
    for _ in 0..rounds {
        let out = Command::new(&bin)
            .arg("hooks")
            .env("ZCTRACE_REPORT_CPU", "1")
            .output()?;
        let text = String::from_utf8_lossy(&out.stderr);
        if let Some(ms) = text
            .lines()
            .find_map(|l| l.strip_prefix("zctrace-own-cpu-ms "))
        {
            load.push(ms.trim().parse().unwrap_or(0.0));
        }
    }
    doc += &format!(
        "\n## zctrace's own CPU time\n\nUser + system time of the zctrace process (all its threads, not the \
         traced program), median per run. Loading and detaching alone (`zctrace hooks`) takes {:.0} ms; \
         the rest is sampling the counters every 250 ms while the workload runs.\n\n\
         | workload | zctrace CPU ms | workload ms (traced) |\n|---|---|---|\n{own_cpu}",
        median(&load)
    );
    doc += &hook_costs(&bin, &workloads)?;
    doc += &machine_wide(&bin, rounds.min(7))?;
    doc += &throughput_table(&bin, rounds.min(3))?;
    let path = workspace_root().join("BENCHMARKS.md");
    // The section `vm-bench` writes (QEMU guests, minutes of emulation)
    // is not measured here: kept as the last vm-bench left it.
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some(start) = old.find(&format!("\n{}", vm::TAX_SECTION)) {
        let rest = &old[start + 1..];
        let end = rest[vm::TAX_SECTION.len()..]
            .find("\n## ")
            .map_or(rest.len(), |e| vm::TAX_SECTION.len() + e);
        doc += "\n";
        doc += &rest[..end];
    }
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// The worst case: `dd bs=4k` /dev/zero to /dev/null, 400,000 syscalls,
/// behind the CPU pinning prefix.
fn dd_argv(pin: &[String]) -> Vec<String> {
    pin.iter()
        .cloned()
        .chain(
            [
                "/usr/bin/dd",
                "if=/dev/zero",
                "of=/dev/null",
                "bs=4k",
                "count=200000",
            ]
            .map(String::from),
        )
        .collect()
}

/// The title of BENCHMARKS.md's section written by `machine_wide`.
const MACHINE_SECTION: &str = "## Tracing every process";

/// `bench --machine-only`: measures `machine_wide` alone and replaces that
/// section of BENCHMARKS.md (the rest, from the last full run, stays).
fn bench_machine_only(rounds: usize) -> Result<()> {
    setup()?;
    let bin = build_release(&["bench"])?.display().to_string();
    let section = machine_wide(&bin, rounds.min(7))?;
    // Before the throughput table, where a full run puts it.
    rewrite_section(
        MACHINE_SECTION,
        &section,
        Some("\n## Throughput of the demo methods"),
    )
}

/// Replaces BENCHMARKS.md's section `title` (up to the next `## `) with
/// `section`; a section not there yet goes before `before` if given and
/// found, else at the end. The rest of the document stays.
fn rewrite_section(title: &str, section: &str, before: Option<&str>) -> Result<()> {
    let path = workspace_root().join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let doc = match doc.find(&format!("\n{title}")) {
        Some(start) => {
            let rest = &doc[start + 1..];
            let end = rest[title.len()..]
                .find("\n## ")
                .map_or(doc.len(), |e| start + 1 + title.len() + e);
            format!("{}{section}{}", &doc[..start], &doc[end..])
        }
        None => match before.and_then(|b| doc.find(b)) {
            Some(at) => format!("{}{section}{}", &doc[..at], &doc[at..]),
            None => doc + section,
        },
    };
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "xtask: rewrote the \"{title}\" section of {}",
        path.display()
    );
    Ok(())
}

/// What zctrace costs the whole machine: an untraced `dd bs=4k` pinned to
/// one CPU, bare, while `zctrace attach` traces one idle process (every
/// process pays the probes' early exit), and while `zctrace top` traces
/// every process (dd pays the full path); and top's own CPU.
fn machine_wide(bin: &str, rounds: usize) -> Result<String> {
    let pin = pin_prefix();
    let dd = dd_argv(&pin);
    let mut idle = Command::new("sleep").arg("100000").spawn()?;
    let idle_pid = idle.id().to_string();
    let modes: [(&str, Vec<&str>); 3] = [
        ("bare", vec![]),
        (
            "zctrace attach (one idle process traced; dd untraced)",
            vec!["attach", &idle_pid, "--no-tui", "-o", "/dev/null"],
        ),
        (
            "zctrace top (every process traced, dd too)",
            vec!["top", "--no-tui", "-o", "/dev/null", "--interval", "1s"],
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut top_cpu: Vec<(f64, f64)> = Vec::new();
    let result = (|| -> Result<()> {
        for _ in 0..rounds {
            for (i, (_, args)) in modes.iter().enumerate() {
                let tracer = if args.is_empty() {
                    None
                } else {
                    let child = Command::new(bin)
                        .args(args)
                        .env("ZCTRACE_REPORT_CPU", "1")
                        .stderr(Stdio::piped())
                        .spawn()?;
                    // Loaded and attached (about 0.3 s here), and a first
                    // sample taken.
                    std::thread::sleep(Duration::from_millis(1500));
                    Some((child, Instant::now()))
                };
                let out = Command::new(&dd[0]).args(&dd[1..]).output()?;
                let text = String::from_utf8_lossy(&out.stderr);
                let secs = dd_seconds(&text).ok_or_else(|| anyhow!("no timing from dd: {text}"))?;
                samples[i].push(secs);
                if let Some((child, _)) = tracer {
                    let pid = child.id().to_string();
                    run(Command::new("kill").args(["-TERM", &pid]))?;
                    child.wait_with_output()?;
                }
            }
        }
        // top's own CPU on this otherwise idle machine: a 21 s run less a
        // 1 s run, interleaved, so that loading and detaching (some 200 ms,
        // varying by tens from run to run) cancel out instead of being
        // subtracted as a separate, differently noisy measurement.
        for _ in 0..3 {
            let long = own_cpu_ms(
                bin,
                &["top", "--no-tui", "-o", "/dev/null", "--duration", "21s"],
            )?;
            let short = own_cpu_ms(
                bin,
                &["top", "--no-tui", "-o", "/dev/null", "--duration", "1s"],
            )?;
            top_cpu.push((long, short));
        }
        Ok(())
    })();
    let _ = idle.kill();
    let _ = idle.wait();
    result?;
    let bare = median(&samples[0]);
    let mut doc = format!(
        "\n{MACHINE_SECTION}\n\n`dd if=/dev/zero of=/dev/null bs=4k count=200000` (400,000 syscalls), \
         pinned to one CPU (`{}`), median of {rounds} interleaved rounds; the tracer is started before each \
         run and stopped after it. While `zctrace attach` traces one idle process, dd is not traced but \
         still enters the probes on each syscall, which turn it away early: the tax every untraced \
         process on the host pays. `zctrace top` traces every process: dd takes the full path, and so \
         does everything else the machine runs.\n\n\
         | mode | runs | median ms | min - max ms | vs bare |\n|---|---|---|---|---|\n",
        pin.join(" ")
    );
    for ((name, _), s) in modes.iter().zip(&samples) {
        let (lo, hi) = s
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        doc += &format!(
            "| {name} | {} | {:.1} | {:.1} - {:.1} | {:.2}x |\n",
            s.len(),
            median(s) * 1e3,
            lo * 1e3,
            hi * 1e3,
            median(s) / bare
        );
    }
    let long_ms = median(&top_cpu.iter().map(|c| c.0).collect::<Vec<_>>());
    let short_ms = median(&top_cpu.iter().map(|c| c.1).collect::<Vec<_>>());
    let steady = (long_ms - short_ms) / 20.0;
    doc += &format!(
        "\n`zctrace top`'s own CPU (user + system, all its threads) on this otherwise idle machine, \
         median of 3 interleaved pairs: `zctrace top --no-tui --duration 21s` {long_ms:.0} ms, the same \
         for 1 s {short_ms:.0} ms (loading, attaching and detaching are most of that); the 20 s between, \
         sampling every process's rows once a second, cost {steady:.1} ms per second ({:.2}% of one \
         core{}).\n",
        steady / 10.0,
        if steady <= 0.0 {
            ": within the runs' own variation"
        } else {
            ""
        }
    );
    doc += &hot_path(bin)?;
    doc += &startup(bin)?;
    doc += &map_memory(bin)?;
    doc += &sampling_curve(bin)?;
    doc += &thread_curve(bin)?;
    doc += &untraced_disk(bin)?;
    doc += &dashboard_cost(bin)?;
    Ok(doc)
}

/// The hot path against its floor, by the kernel's own accounting in
/// interleaved runs: the time zctrace's syscall programs take per call
/// (sys_exit, with the classifier it hands calls to, and sys_enter, which
/// is attached only while the event log is open), against the empty
/// programs of a tracer that hooks both syscall tracepoints, on dd and on
/// the 4 KiB read+write loop.
fn hot_path(bin: &str) -> Result<String> {
    const ROUNDS: usize = 5;
    const TARGET: f64 = 1.25;
    let pin = pin_prefix();
    let workload = |args: &[&str]| -> Vec<String> {
        pin.iter()
            .cloned()
            .chain(std::iter::once(bin.to_owned()))
            .chain(args.iter().map(|a| (*a).to_owned()))
            .collect()
    };
    let loads = [
        ("dd bs=4k", dd_argv(&pin)),
        (
            "read+write 4 KiB",
            workload(&["workload", "read-write", "--size", "256M", "--chunk", "4K"]),
        ),
    ];
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(STATS)?.trim().to_owned();
    let mut table = String::new();
    let result = (|| -> Result<()> {
        std::fs::write(STATS, "1")?;
        for (name, argv) in &loads {
            let (mut ours, mut floor) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let rows = program_costs(bin, "run", argv)?;
                ours.push(
                    per_syscall(&rows, &["sys_enter", "sys_exit"], "sys_exit")
                        .ok_or_else(|| anyhow!("{name}: sys_exit did not run"))?,
                );
                let rows = program_costs(bin, "floor", argv)?;
                floor.push(
                    per_syscall(
                        &rows,
                        &["floor_sys_enter", "floor_sys_exit"],
                        "floor_sys_exit",
                    )
                    .ok_or_else(|| anyhow!("{name}: the floor did not run"))?,
                );
            }
            let (o, f) = (median(&ours), median(&floor));
            let ratio = o / f;
            table += &format!(
                "| {name} | {o:.0} | {f:.0} | {ratio:.2}x | {} |\n",
                if ratio <= TARGET { "met" } else { "not met" }
            );
        }
        Ok(())
    })();
    let _ = std::fs::write(STATS, &before);
    result?;
    Ok(format!(
        "\n### Hot path\n\nns per syscall of the traced workload (`zctrace run`), by the kernel's own \
         accounting (`kernel.bpf_stats_enabled`), median of {ROUNDS} interleaved runs: zctrace's \
         syscall programs (sys_exit, including the classifier it hands a call to by tail call when \
         its memo does not know it; sys_enter is attached only while the event log is open, and the \
         start-up check's single run is included) against the empty programs of a tracer on both \
         syscall tracepoints (`zctrace floor`). Target: at most {TARGET}x. zctrace classifies each \
         call at sys_exit from the arguments still in the saved registers, so it pays for one \
         program per syscall where the floor pays for two.\n\n\
         | workload | zctrace ns per syscall | empty sys_enter + sys_exit ns | ratio | target |\n\
         |---|---|---|---|---|\n{table}"
    ))
}

/// ns per syscall: the named programs' total time over the runs of `per`
/// (the program that runs once per syscall).
fn per_syscall(rows: &[ProgramCost], names: &[&str], per: &str) -> Option<f64> {
    let runs = rows.iter().find(|r| r.0 == per)?.1 as f64;
    let total: f64 = rows
        .iter()
        .filter(|r| names.contains(&r.0.as_str()))
        .map(|r| r.1 as f64 * r.2)
        .sum();
    Some(total / runs)
}

/// What an untraced process's disk requests pay: fio (direct 4 KiB random
/// reads, libaio, queue depth 32, not traced) bare and while `zctrace
/// attach` traces one idle process, interleaved: its IOPS, and the
/// kernel's accounting of the block programs per run (every request is
/// remembered at insert, whoever queued it, so that the thread that queued
/// it is charged at issue and another process's request is left out).
fn untraced_disk(bin: &str) -> Result<String> {
    const ROUNDS: usize = 3;
    const SECS: u32 = 5;
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let dir = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("fio-disk.bin");
    let iops = || -> Result<f64> {
        let out = Command::new("fio")
            .args([
                "--name=disk",
                &format!("--filename={}", file.display()),
                "--size=256M",
                "--rw=randread",
                "--bs=4k",
                "--direct=1",
                "--ioengine=libaio",
                "--iodepth=32",
                "--time_based",
                &format!("--runtime={SECS}"),
                "--thread",
                "--output-format=json",
            ])
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("fio: {}", String::from_utf8_lossy(&out.stderr)))?;
        v["jobs"][0]["read"]["iops"]
            .as_f64()
            .ok_or_else(|| anyhow!("fio printed no IOPS"))
    };
    // Lays the file out.
    iops()?;
    let before = std::fs::read_to_string(STATS).unwrap_or_else(|_| "0".into());
    let mut idle = Command::new("sleep").arg("100000").spawn()?;
    let idle_pid = idle.id().to_string();
    let (mut bare, mut traced) = (Vec::new(), Vec::new());
    let mut costs: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let result = (|| -> Result<()> {
        std::fs::write(STATS, "1")?;
        for _ in 0..ROUNDS {
            bare.push(iops()?);
            let child = Command::new(bin)
                .args(["attach", &idle_pid, "--no-tui", "-o", "/dev/null"])
                .spawn()?;
            std::thread::sleep(Duration::from_millis(1500));
            let measured = iops();
            let progs = Command::new("bpftool")
                .args(["prog", "show", "-j"])
                .output();
            run(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
            child.wait_with_output()?;
            traced.push(measured?);
            let progs: Vec<serde_json::Value> = serde_json::from_slice(&progs?.stdout)?;
            for p in progs {
                if let (Some(name), Some(runs), Some(ns)) = (
                    p["name"].as_str(),
                    p["run_cnt"].as_u64(),
                    p["run_time_ns"].as_u64(),
                ) && name.starts_with("block_rq_")
                    && runs > 0
                {
                    costs
                        .entry(name.to_owned())
                        .or_default()
                        .push(ns as f64 / runs as f64);
                }
            }
        }
        Ok(())
    })();
    let _ = std::fs::write(STATS, &before);
    let _ = idle.kill();
    let _ = idle.wait();
    result?;
    let (b, t) = (median(&bare), median(&traced));
    let mut doc = format!(
        "\n### Disk requests of an untraced process\n\nfio, not traced: direct 4 KiB random reads \
         (libaio, queue depth 32) for {SECS} s, bare and while `zctrace attach` traces one idle \
         process, {ROUNDS} interleaved rounds, medians. Every disk request on the machine passes the \
         block programs: the request is remembered when it is queued, whoever queues it, so that at \
         issue the thread that queued it is charged (a kernel worker or another process often issues \
         it) and another process's request is left out. The IOPS include the syscall tracepoints' tax \
         on fio's own io_submit and io_getevents calls; the programs' table is the block hooks' own \
         share.\n\n| mode | IOPS | vs bare |\n|---|---|---|\n\
         | bare | {b:.0} | 1.00x |\n| zctrace attach (fio untraced) | {t:.0} | {:.2}x |\n\n\
         | program | ns per run |\n|---|---|\n",
        t / b
    );
    for (name, v) in &costs {
        doc += &format!("| {name} | {:.0} |\n", median(v));
    }
    Ok(doc)
}

/// The demo dashboard's own CPU: `zctrace demo` in a tmux terminal for
/// 20 s, once through the methods and with `--loop` (the methods run the
/// whole time, as in a lecture), then `q`. zctrace reports the UI thread's
/// CPU while the dashboard was up and the sampler thread's
/// (`ZCTRACE_REPORT_CPU`): not the transfers', which are the demo itself.
fn dashboard_cost(bin: &str) -> Result<String> {
    const UP: u64 = 20;
    let err = std::env::temp_dir().join(format!("zctrace-bench-dash-{}", std::process::id()));
    let session = format!("zctrace-bench-{}", std::process::id());
    let mut doc = format!(
        "\n### The demo dashboard's own CPU\n\n`zctrace demo --size 64M` in a 160x50 tmux \
         terminal, quit with `q` after {UP} s: the UI thread's CPU (user + system) while the \
         dashboard was up, plus the sampler thread's, per second up; the transfers' own CPU is \
         not in it (they are the demo). Median of 3. Target: at most 3% of one core.\n\n\
         | run | CPU ms per s up | % of one core |\n|---|---|---|\n"
    );
    for (what, extra) in [
        ("the methods once, then the dashboard idle", ""),
        ("`--loop`: the methods the whole time", " --loop"),
    ] {
        let mut per_s = Vec::new();
        for _ in 0..3 {
            let cmd = format!(
                "ZCTRACE_REPORT_CPU=1 {bin} demo --size 64M{extra} 2>{}",
                err.display()
            );
            run(Command::new("tmux").args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "160",
                "-y",
                "50",
                &cmd,
            ]))?;
            std::thread::sleep(Duration::from_secs(UP));
            run(Command::new("tmux").args(["send-keys", "-t", &session, "q"]))?;
            // The session ends with zctrace.
            let quit = std::time::Instant::now();
            while Command::new("tmux")
                .args(["has-session", "-t", &session])
                .stderr(std::process::Stdio::null())
                .status()?
                .success()
            {
                if quit.elapsed() > Duration::from_secs(20) {
                    let _ = Command::new("tmux")
                        .args(["kill-session", "-t", &session])
                        .status();
                    bail!("zctrace demo did not quit on q");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let text = std::fs::read_to_string(&err)?;
            let (cpu, up) = text
                .lines()
                .find_map(|l| {
                    let rest = l.strip_prefix("zctrace-dashboard-cpu-ms ")?;
                    let (cpu, up) = rest.split_once(" of ")?;
                    Some((
                        cpu.parse::<f64>().ok()?,
                        up.trim_end_matches(" ms up").parse::<f64>().ok()?,
                    ))
                })
                .ok_or_else(|| anyhow!("no dashboard CPU report: {text}"))?;
            per_s.push(cpu / (up / 1e3));
        }
        let _ = std::fs::remove_file(&err);
        let m = median(&per_s);
        doc += &format!("| {what} | {m:.1} | {:.2}% |\n", m / 10.0);
    }
    Ok(doc)
}

/// zctrace's own CPU time (user + system, all its threads) for one run
/// with these arguments, as it reports it (`ZCTRACE_REPORT_CPU`).
fn own_cpu_ms(bin: &str, args: &[&str]) -> Result<f64> {
    let out = Command::new(bin)
        .args(args)
        .env("ZCTRACE_REPORT_CPU", "1")
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.strip_prefix("zctrace-own-cpu-ms "))
        .and_then(|ms| ms.trim().parse().ok())
        .ok_or_else(|| anyhow!("no CPU report from zctrace {args:?}: {text}"))
}

/// The memory of every map, as the kernel charges it (`zctrace hooks`
/// reads each map's fdinfo), at the default sizes on this machine.
fn map_memory(bin: &str) -> Result<String> {
    let out = Command::new(bin).arg("hooks").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().skip_while(|l| !l.starts_with("maps: "));
    let head = lines
        .next()
        .ok_or_else(|| anyhow!("zctrace hooks printed no maps line: {text}"))?;
    let mut doc = format!(
        "
### Memory of every map

`zctrace hooks` at the default sizes on this machine ({} CPUs): {}

| map | type | entries | key bytes | value bytes | memory |
|---|---|---|---|---|---|
",
        std::thread::available_parallelism().map_or(0, usize::from),
        head.trim_start_matches("maps: ")
    );
    for l in lines.skip(1).take_while(|l| l.starts_with("  ")) {
        let cells: Vec<&str> = l.split_whitespace().collect();
        if cells.len() == 6 {
            doc += &format!("| {} |\n", cells.join(" | "));
        }
    }
    Ok(doc)
}

/// The sampler's own CPU against live counter rows: `zctrace top` at 4 Hz
/// (`--interval 250ms`) while N processes keep a few rows each live
/// (xtask/bench/procs.c), once writing a ranked table of the top 10 and
/// once a JSON line of every active process; each a 13 s run less a 1 s
/// run with the same processes, so loading and the first sample (which
/// reads every process's name) cancel out.
fn sampling_curve(bin: &str) -> Result<String> {
    const LONG: u64 = 13;
    let dir = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let procs = dir.join("procs");
    run(Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&procs)
        .arg(workspace_root().join("xtask/bench/procs.c")))?;
    let mut doc = format!(
        "\n### Sampling cost against live rows\n\n`zctrace top --interval 250ms` while N processes \
         each keep a read row and a write row live (a byte each, twice a second): zctrace's own CPU \
         (user + system, all its threads) for a {LONG} s run less a 1 s run, per second of sampling \
         at 4 Hz; `--no-tui --limit 10` prints a ranked table of ten processes, `--json` writes every \
         process active in the period (about half of them at 4 Hz). Target: at most 1% of one core \
         at 10,000 live rows.\n\n| processes | live rows | table: CPU ms per s | % of one core | \
         JSON: CPU ms per s | % of one core | JSON bytes per sample |\n|---|---|---|---|---|---|---|\n"
    );
    let json = dir.join("top.json");
    for n in [100, 1000, 4000] {
        let mut children = Command::new(&procs)
            .args([n.to_string(), (4 * LONG + 20).to_string()])
            .spawn()?;
        // Forked, and each has made its first calls.
        std::thread::sleep(Duration::from_secs(3));
        let measure = |out: &[&str]| -> Result<f64> {
            let cpu = |secs: u64| {
                let mut args = vec!["top", "--interval", "250ms"];
                args.extend_from_slice(out);
                let d = format!("{secs}s");
                args.extend_from_slice(&["--duration", &d]);
                own_cpu_ms(bin, &args)
            };
            let long = cpu(LONG)?;
            let short = cpu(1)?;
            Ok((long - short) / (LONG - 1) as f64)
        };
        let path = json.display().to_string();
        let result = (|| -> Result<(f64, f64)> {
            Ok((
                measure(&["--no-tui", "--limit", "10", "-o", "/dev/null"])?,
                measure(&["--json", "-o", &path])?,
            ))
        })();
        let _ = children.kill();
        let _ = Command::new("pkill")
            .args(["-f", &procs.display().to_string()])
            .status();
        let _ = children.wait();
        let (table, json_ms) = result?;
        let text = std::fs::read_to_string(&json)?;
        let last = text
            .lines()
            .last()
            .ok_or_else(|| anyhow!("top wrote no JSON"))?;
        let line: serde_json::Value = serde_json::from_str(last)?;
        let rows = line["stats"]["rows_used"].as_u64().unwrap_or(0);
        let bytes = text.len() / text.lines().count().max(1);
        // A difference of two noisy runs can come out below zero: said so,
        // not printed as a cost.
        let cells = |ms: f64| {
            if ms > 0.0 {
                (format!("{ms:.1}"), format!("{:.2}%", ms / 10.0))
            } else {
                (
                    format!("{ms:.1} (within the runs' spread)"),
                    "~0%".to_owned(),
                )
            }
        };
        let ((t_ms, t_pct), (j_ms, j_pct)) = (cells(table), cells(json_ms));
        doc += &format!(
            "| {n} | {rows} | {t_ms} | {t_pct} | {j_ms} | {j_pct} | {} |\n",
            human_size(bytes as u64)
        );
    }
    Ok(doc)
}

/// Start-up: `zctrace hooks` (read the kernel's BTF, create the maps,
/// verify and attach every program, detach), wall time per run and the
/// phases it reports, median of 11 runs.
fn startup(bin: &str) -> Result<String> {
    const RUNS: usize = 11;
    const TARGET_MS: f64 = 150.0;
    let mut wall = Vec::new();
    let mut phases: [Vec<f64>; 4] = Default::default();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new(bin).arg("hooks").output()?;
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("start-up:"))
            .ok_or_else(|| anyhow!("zctrace hooks printed no start-up line: {text}"))?;
        // "start-up: kernel BTF 23 ms, maps 56 ms, programs ... 144 ms; detached in 1 ms"
        let numbers: Vec<f64> = line
            .split(" ms")
            .filter_map(|part| part.rsplit(' ').next()?.parse().ok())
            .collect();
        if numbers.len() != 4 {
            bail!("cannot read the start-up line: {line}");
        }
        for (p, v) in phases.iter_mut().zip(numbers) {
            p.push(v);
        }
    }
    let total = median(&wall);
    Ok(format!(
        "
### Start-up

`zctrace hooks`, {RUNS} runs, median: {total:.0} ms of wall time from exec to exit \
         (target: at most {TARGET_MS:.0} ms: {}). zctrace's own phases: kernel BTF read and indexed \
         {:.0} ms (aya parses it too, to load the BTF tracepoints, and aya's loader once more for \
         itself, on a thread of its own meanwhile), maps created {:.0} ms, every program verified \
         (loaded on one thread per CPU, the kernel verifying them side by side) and attached in \
         hook order {:.0} ms, detached {:.0} ms.\n",
        if total <= TARGET_MS {
            "met".to_owned()
        } else {
            format!(
                "not met, {:.0} ms over: most of it is the kernel verifying the programs",
                total - TARGET_MS
            )
        },
        median(&phases[0]),
        median(&phases[1]),
        median(&phases[2]),
        median(&phases[3]),
    ))
}

/// What each of zctrace's programs costs per run, as the kernel itself
/// measures it (`kernel.bpf_stats_enabled`: run count and total run time
/// per program), for each workload traced with `zctrace run`, and the
/// floor's empty programs on the first workload for comparison.
fn hook_costs(bin: &str, workloads: &[Workload]) -> Result<String> {
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(STATS)
        .with_context(|| format!("reading {STATS}"))?
        .trim()
        .to_owned();
    let mut doc = String::from(
        "\n## Cost per hook\n\nAverage time per run of each program, from the kernel's own \
         accounting (`kernel.bpf_stats_enabled`), with the workload traced by `zctrace run`; \
         programs that did not run are left out. The accounting itself reads the clock twice \
         per run: the floor's empty programs show what that and the call cost.\n\n\
         | workload | program | runs | ns per run |\n|---|---|---|---|\n",
    );
    let result = (|| -> Result<()> {
        std::fs::write(STATS, "1")?;
        for (i, wl) in workloads.iter().enumerate() {
            let mut rows = program_costs(bin, "run", &wl.argv)?;
            if i == 0 {
                rows.extend(
                    program_costs(bin, "floor", &wl.argv)?
                        .into_iter()
                        .filter(|(name, ..)| name.starts_with("floor_")),
                );
            }
            for (name, runs, ns) in rows {
                doc += &format!("| {} | {name} | {runs} | {ns:.0} |\n", wl.name);
            }
        }
        Ok(())
    })();
    let _ = std::fs::write(STATS, &before);
    result?;
    Ok(doc)
}

/// Runs `argv` under `zctrace <how>` and lists, from bpftool while the
/// programs are still loaded, the (name, runs, ns per run) of those that
/// ran: zctrace's own (the ones using its thread table) and the floor's.
/// A program's name, its runs, and its ns per run.
type ProgramCost = (String, u64, f64);

fn program_costs(bin: &str, how: &str, argv: &[String]) -> Result<Vec<ProgramCost>> {
    Ok(program_costs_and_output(bin, how, argv)?.0)
}

/// The same, and what the workload printed on its standard output.
fn program_costs_and_output(
    bin: &str,
    how: &str,
    argv: &[String],
) -> Result<(Vec<ProgramCost>, String)> {
    let dump = std::env::temp_dir().join(format!("zctrace-bench-{}", std::process::id()));
    let quoted: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "{} >{d}.o 2>/dev/null; bpftool prog show -j > {d}.p; bpftool map show -j > {d}.m",
        quoted.join(" "),
        d = dump.display()
    );
    let mut cmd = Command::new(bin);
    if how == "run" {
        cmd.args(["run", "-o", "/dev/null"]);
    } else {
        cmd.arg(how);
    }
    run(cmd.args(["--", "sh", "-c", &script]))?;
    let read = |ext: &str| -> Result<Vec<serde_json::Value>> {
        let f = format!("{}.{ext}", dump.display());
        let v = serde_json::from_str(&std::fs::read_to_string(&f)?)?;
        let _ = std::fs::remove_file(&f);
        Ok(v)
    };
    let (progs, maps) = (read("p")?, read("m")?);
    let out_file = format!("{}.o", dump.display());
    let printed = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    let table: Vec<u64> = maps
        .iter()
        .filter(|m| m["name"].as_str() == Some("THREAD_TABLE"))
        .filter_map(|m| m["id"].as_u64())
        .collect();
    let ours = |p: &serde_json::Value| {
        p["name"].as_str().is_some_and(|n| n.starts_with("floor_"))
            || p["map_ids"].as_array().is_some_and(|ids| {
                ids.iter()
                    .any(|i| i.as_u64().is_some_and(|i| table.contains(&i)))
            })
    };
    let mut rows: Vec<(String, u64, f64)> = progs
        .iter()
        .filter(|p| ours(p))
        .filter_map(|p| {
            let runs = p["run_cnt"].as_u64()?;
            let ns = p["run_time_ns"].as_u64()?;
            let name = p["name"].as_str()?.to_owned();
            (runs > 0).then(|| (name, runs, ns as f64 / runs as f64))
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    Ok((rows, printed))
}

/// Per-syscall cost against the number of traced threads: one process
/// (xtask/bench/threads.c) with N threads, N - 1 of them waiting after a
/// first syscall, the main one doing 4 KiB read+write pairs; the kernel's
/// own accounting of sys_enter and sys_exit per run, and the loop's time
/// per pair traced (`zctrace run`) and bare.
fn thread_curve(bin: &str) -> Result<String> {
    const PAIRS: &str = "200000";
    let dir = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let threads = dir.join("threads");
    run(Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&threads)
        .arg(workspace_root().join("xtask/bench/threads.c")))?;
    let pin = pin_prefix();
    let loop_ns = |text: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix("loop_ns "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("threads printed no loop_ns: {text}"))
    };
    let mut doc = format!(
        "\n### Per-syscall cost against traced threads\n\nOne process (`xtask/bench/threads.c`) \
         with N threads: N - 1 make one syscall (so each gets its thread state) and wait; the main \
         one makes {PAIRS} pairs of 4 KiB read + write, pinned (`{}`). Kernel accounting per run \
         (`kernel.bpf_stats_enabled`) while `zctrace run` traces it, and the loop's own time per \
         pair, traced and bare (median of 3). The thread table has {} slots hashed by thread; a \
         thread whose slot another holds keeps its state in task storage instead (same counts, \
         more per syscall).\n\n| threads | syscall programs ns per syscall | ns per pair \
         traced | ns per pair bare | traced vs bare |\n|---|---|---|---|---|\n",
        pin.join(" "),
        1u32 << 14
    );
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(STATS).unwrap_or_else(|_| "0".into());
    let result = (|| -> Result<()> {
        std::fs::write(STATS, "1")?;
        for n in [1u32, 100, 1000, 10_000] {
            let mut argv: Vec<String> = pin.clone();
            argv.push(threads.display().to_string());
            argv.push(n.to_string());
            argv.push(PAIRS.to_owned());
            let mut traced = Vec::new();
            let mut bare = Vec::new();
            let mut per_call = Vec::new();
            for _ in 0..3 {
                let out = Command::new(&argv[0]).args(&argv[1..]).output()?;
                bare.push(loop_ns(&String::from_utf8_lossy(&out.stdout))?);
                let (rows, printed) = program_costs_and_output(bin, "run", &argv)?;
                traced.push(loop_ns(&printed)?);
                per_call.push(
                    per_syscall(&rows, &["sys_enter", "sys_exit"], "sys_exit")
                        .ok_or_else(|| anyhow!("{n} threads: sys_exit did not run"))?,
                );
            }
            let (t, b) = (median(&traced), median(&bare));
            doc += &format!(
                "| {n} | {:.0} | {t:.0} | {b:.0} | {:.2}x |\n",
                median(&per_call),
                t / b
            );
        }
        Ok(())
    })();
    let _ = std::fs::write(STATS, &before);
    result?;
    Ok(doc)
}

/// Bare throughput of every demo method (256 MiB, 64 KiB chunks) next to
/// this machine's memory-copy bandwidth, measured the same way.
fn throughput_table(bin: &str, rounds: usize) -> Result<String> {
    const METHODS: [&str; 9] = [
        "read-write",
        "mmap-write",
        "sendfile",
        "splice",
        "vmsplice",
        "tee",
        "msg-zerocopy",
        "copy-file-range",
        "o-direct",
    ];
    let pin = pin_prefix();
    let time = |pinned: bool, args: &[&str]| -> Result<Option<f64>> {
        let mut v = Vec::new();
        for _ in 0..rounds {
            let mut cmd = if pinned {
                let mut c = Command::new(&pin[0]);
                c.args(&pin[1..]).arg(bin);
                c
            } else {
                Command::new(bin)
            };
            let out = cmd.args(args).output()?;
            if !out.status.success() {
                return Ok(None);
            }
            // A skipped method (its filesystem refuses it) reports 0 ns.
            match workload_seconds(&String::from_utf8_lossy(&out.stdout)) {
                Some(t) if t > 0.0 => v.push(t),
                _ => return Ok(None),
            }
        }
        Ok(Some(median(&v)))
    };
    let mib = 256.0;
    // (method, MiB/s on all CPUs, MiB/s on one)
    let mut rows = Vec::new();
    for m in METHODS {
        let args = ["workload", m, "--size", "256M", "--chunk", "64K"];
        let free = time(false, &args)?.map(|t| mib / t);
        let one = time(true, &args)?.map(|t| mib / t);
        rows.push((m, free, one));
    }
    let (rw_free, rw_one) = rows.first().map_or((None, None), |&(_, f, o)| (f, o));
    let copy = time(false, &["memcpy", "--size", "256M"])?.map(|t| mib / t);
    let mut out = format!(
        "\n## Throughput of the demo methods\n\nUntraced, 256 MiB from a cached file to a loopback socket \
         (copy-file-range: to a file) in 64 KiB chunks, median of {rounds}: free to use every CPU (the \
         sender and the receiver usually on different ones), and pinned to one CPU like the workloads \
         above, where the sender's, the receiver's and the kernel's work add up (CPU work per byte). \
         The physical limit for comparison: copying 256 MiB in memory (memcpy) runs at {} MiB/s here; \
         every method's payload also crosses loopback, whose receiver copies it once more.\n\n\
         | method | MiB/s, all CPUs | vs read+write | MiB/s, one CPU | vs read+write |\n|---|---|---|---|---|\n",
        copy.map_or("?".into(), |c| format!("{c:.0}"))
    );
    let cell = |v: Option<f64>, base: Option<f64>| match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{v:.0} | {:.2}x", v / b),
        (Some(v), _) => format!("{v:.0} | -"),
        (None, _) => "skipped here | -".to_owned(),
    };
    for (m, free, one) in rows {
        out += &format!(
            "| {m} | {} | {} |\n",
            cell(free, rw_free),
            cell(one, rw_one)
        );
    }
    Ok(out)
}

/// The tracers the benchmark compares against, and tracefs for them.
fn ensure_bench_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("bpftrace", "bpftrace"),
        ("strace", "strace"),
        ("perf", "linux-perf"),
    ]
    .into_iter()
    .filter(|(bin, _)| {
        Command::new("which")
            .arg(bin)
            .output()
            .map_or(true, |o| !o.status.success())
    })
    .map(|(_, pkg)| pkg)
    .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing {} for the comparison", missing.join(" "));
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !Path::new("/sys/kernel/tracing/events").exists() {
        // perf trace and bpftrace's tracepoints need tracefs.
        run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))?;
    }
    Ok(())
}

/// `taskset -c N`, N the machine's last CPU: the benchmark's workloads run
/// there.
fn pin_prefix() -> Vec<String> {
    let last = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    // An absolute path: bpftrace -c refuses a name that PATH resolves twice
    // (/bin and /usr/bin on a merged-/usr system).
    let taskset = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("taskset"))
                .find(|f| f.is_file())
        })
        .map_or_else(|| "/usr/bin/taskset".into(), |f| f.display().to_string());
    vec![taskset, "-c".into(), last.to_string()]
}

/// The targets issue #8 set, checked against this run's medians (modes in
/// `bench`'s order: bare, floor, zctrace, bpftrace, ...; workloads dd, 4 KiB
/// read+write, sendfile, demo read+write).
fn targets_section(m: &[Vec<f64>]) -> String {
    let ratio = |w: usize, a: usize, b: usize| m[w][a] / m[w][b];
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    let mut out = String::from(
        "\n## Targets\n\nThe overhead targets this benchmark was built to check, against this run's medians.\n\n\
         | target | this run | verdict |\n|---|---|---|\n",
    );
    let rows = [
        (
            "dd bs=4k: zctrace within 1.1x of the floor",
            ratio(0, 2, 1),
            1.1,
            "x the floor",
        ),
        (
            "read+write 4 KiB: zctrace at most 1.25x bare",
            ratio(1, 2, 0),
            1.25,
            "x bare",
        ),
        (
            "sendfile 64 KiB: zctrace at most 1.03x bare",
            ratio(2, 2, 0),
            1.03,
            "x bare",
        ),
    ];
    for (what, r, limit, unit) in rows {
        out += &format!("| {what} | {r:.3}{unit} | {} |\n", verdict(r <= limit));
    }
    for (w, name) in [
        "dd bs=4k",
        "read+write 4 KiB",
        "sendfile 64 KiB",
        "demo read+write",
    ]
    .iter()
    .enumerate()
    {
        let (z, b) = (m[w][2], m[w][3]);
        out += &format!(
            "| {name}: zctrace below bpftrace | {:.1} vs {:.1} ms | {} |\n",
            z * 1e3,
            b * 1e3,
            verdict(z < b)
        );
    }
    let floor_c = ratio(2, 1, 0);
    out += &format!(
        "\nFor the sendfile target, the floor alone (empty programs on the same hooks) ran at \
         {floor_c:.3}x bare in this run: a tracer of these events can come no closer to bare than that.\n"
    );
    out
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// A byte count as "1.2 MiB", "340 KiB" or "900 B".
fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.0} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
