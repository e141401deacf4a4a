//! Command-line interface (clap derive). Usage errors exit with status 2.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use zctrace_common::Method;

use crate::demo::methods::DEMO_METHODS;

/// Counts the data copies, mode switches and context switches of file and
/// socket I/O, per transfer method, live from the running kernel (eBPF).
#[derive(Debug, Parser)]
#[command(name = "zctrace", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every transfer method (read+write, mmap, sendfile, splice, ...)
    /// against a loopback receiver and show theory next to measurement.
    Demo(DemoArgs),
    /// Trace running processes (all their threads, and the children they
    /// fork from now on) and report their I/O per method.
    Attach(AttachArgs),
    /// Start a command, trace it from its first instruction, report its I/O
    /// per method when it ends (on stderr), and exit with its status.
    Run(RunArgs),
    /// Every process on the machine (or in a cgroup), ranked by the bytes
    /// its CPU copies per second, with its syscalls, copies by direction,
    /// page references and methods.
    Top(TopArgs),
    /// Load the probes, report which kernel hooks attach here and why any
    /// do not, then detach.
    Hooks(HooksArgs),
    /// Turn a saved `demo --json` into the workshop handout (one HTML page,
    /// and SVG diagrams for slides).
    Report(ReportArgs),
    /// The demo's checksumming receiver, for `demo --to` from another
    /// machine: checks each transfer's length and CRC-32 and answers the
    /// sender. Needs no privilege and loads no probes.
    Receive(ReceiveArgs),
    /// Run one demo method without any probes and print its elapsed time
    /// (the workload of `cargo xtask bench`).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Workload(WorkloadArgs),
    /// Copy a buffer in memory and print the best elapsed time: this
    /// machine's memory-copy bandwidth, the benchmark's physical limit.
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Memcpy {
        #[arg(long, default_value = "256M", value_parser = parse_size)]
        size: u64,
    },
    /// Load the probes, run real transfers, check the counters; the init
    /// program of `cargo xtask vm-test`. Exit 0 only if every check passed.
    #[command(hide = true)]
    Selftest {
        /// Where to put the work files.
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
    },
    /// Run a command with empty programs on zctrace's tracepoints: the
    /// overhead floor of `cargo xtask bench`. Exits with its status.
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Floor {
        /// Which empty programs.
        #[arg(long, value_enum, default_value_t = FloorMechanism::Hooks)]
        mechanism: FloorMechanism,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// N pairs of a 4 KiB read of /dev/zero and a write of it to /dev/null,
    /// timed: the untraced-tax workload of `cargo xtask vm-bench`, which
    /// runs where the guest has no dd worth timing. Prints
    /// "zctrace-syscalls-ns-per-pair X".
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    Syscalls {
        #[arg(default_value_t = 100_000)]
        pairs: u64,
    },
    /// The reader process of `demo --pitfalls`.
    #[command(hide = true)]
    PitfallReader {
        path: PathBuf,
        #[arg(long)]
        lease: bool,
    },
}

/// The empty programs of `zctrace floor`.
#[cfg(feature = "bench")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FloorMechanism {
    /// One on every hook of the tracepoint tier (the benchmark's floor).
    Hooks,
    /// On the two raw syscall tracepoints only (sys_enter, sys_exit).
    SyscallTracepoints,
    /// fexit on the read and write system calls' own functions.
    Fexit,
    /// zctrace's own probes, tracing no process: what they cost every
    /// process they do not trace.
    Zctrace,
}

#[cfg(feature = "bench")]
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    #[arg(value_parser = parse_method)]
    pub method: Method,
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub size: u64,
    #[arg(long, default_value = "4K", value_parser = parse_size)]
    pub chunk: u64,
    /// Repeat the transfer this many times (one work file).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Stop after this long (e.g. 10s); default: until the targets exit or Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also report every interval (e.g. 1s), not only at the end.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// One JSON object per report, one per line, with a timestamp.
    #[arg(long)]
    pub json: bool,
    /// Print tables instead of the dashboard.
    #[arg(long)]
    pub no_tui: bool,
    /// Write reports to FILE instead of stdout (attach) or stderr (run).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Count per thread too (a TID column); by default rows are per
    /// process, which keeps memory bounded at any thread count.
    #[arg(long)]
    pub per_thread: bool,
    /// Size of the kernel's counter-row map (default 32768, fewer on
    /// machines with many CPUs). When it fills, counts go to fallback rows
    /// (method map-full) and every report says how much.
    #[arg(long, value_name = "N")]
    pub max_rows: Option<u32>,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct CgroupArgs {
    /// Trace every process in this cgroup v2 directory and its descendants
    /// (a systemd unit's, a container's), including processes that join
    /// it later. `run` starts the command inside it.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct MetricsArgs {
    /// Serve the counters for Prometheus at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9435). Nothing listens unless asked; bind to 127.0.0.1
    /// (or a private address) unless every host that can reach it may
    /// read which commands run here.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Label the metrics with the process id too (a series per process;
    /// an exited process's series are summed into pid="exited").
    #[arg(long, requires = "metrics")]
    pub metrics_pid: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Rates over, and refresh (or report) every, this long.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Stop after this long (e.g. 30s); default: until q or Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// One JSON object per interval, one per line: the processes active in
    /// it, ranked.
    #[arg(long)]
    pub json: bool,
    /// Print a ranked table every interval instead of the dashboard.
    #[arg(long)]
    pub no_tui: bool,
    /// Write reports to FILE instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// List at most this many processes per text report.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
    /// Size of the kernel's counter-row map (see attach).
    #[arg(long, value_name = "N")]
    pub max_rows: Option<u32>,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Process ids (a thread id selects its process); none with --cgroup.
    #[arg(required_unless_present = "cgroup", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Do not trace children forked after attaching.
    #[arg(long)]
    pub no_follow: bool,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// The command and its arguments (put them after --).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the generated file (K, M, G suffixes are powers of 1024).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub size: u64,
    /// Bytes per read/write/sendfile call (clamped to the file size).
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    pub chunk: u64,
    /// Methods to run, comma-separated, in this order (default: all).
    #[arg(long, value_delimiter = ',', value_parser = parse_method)]
    pub methods: Vec<Method>,
    /// Evict the file from the page cache before each method, so the disk
    /// DMA of the textbook appears.
    #[arg(long)]
    pub cold: bool,
    /// Repeat the methods until interrupted (for a live lecture).
    #[arg(long = "loop")]
    pub repeat: bool,
    /// Pause between chunks so a room can watch counters climb (e.g. 5ms).
    #[arg(long, value_parser = parse_duration)]
    pub pace: Option<Duration>,
    /// Also show the pitfall of mmap (a concurrent truncate raises SIGBUS)
    /// and its cure (a file lease). Implies --no-tui.
    #[arg(long)]
    pub pitfalls: bool,
    /// Print a theory-vs-measured table instead of the dashboard.
    #[arg(long)]
    pub no_tui: bool,
    /// Print the results as JSON (schema in README.md).
    #[arg(long, conflicts_with = "no_tui")]
    pub json: bool,
    /// Directory for the private work directory (default: $TMPDIR or /tmp).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Send to a `zctrace receive --listen` on another machine instead of
    /// receivers on loopback (the bytes are still checked end to end).
    #[arg(long, value_name = "HOST:PORT")]
    pub to: Option<String>,
    /// Also write the workshop handout: one self-contained HTML page with
    /// the table, a diagram per method and the notes. Implies --no-tui.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Also write one SVG diagram per method into DIR (for slides).
    /// Implies --no-tui.
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A saved `zctrace demo --json` (the last document in it is used).
    pub results: PathBuf,
    /// Write the HTML page here (default: stdout).
    #[arg(short, long, value_name = "FILE.html")]
    pub output: Option<PathBuf>,
    /// Also write one SVG diagram per method into DIR.
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Address and port to listen on, e.g. 0.0.0.0:7007 or [::]:7007.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: String,
    /// Exit after this many connections (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    pub connections: Option<u64>,
}

#[derive(Debug, Args)]
pub struct HooksArgs {
    /// Print the hook list as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses `4096`, `64K`, `16M`, `1G`, `64KiB`, `16MB` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 4096, 64K, 16M, 1G)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("'{s}' has an unknown unit (use K, M or G)")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if v == 0 {
        return Err("must be greater than 0".into());
    }
    Ok(v)
}

/// Parses `250ms`, `2s`, `1m`, `500us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 5ms, 2s)"))?;
    Ok(match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("'{s}' has an unknown unit (use us, ms, s or m)")),
    })
}

pub fn parse_method(s: &str) -> Result<Method, String> {
    DEMO_METHODS
        .iter()
        .copied()
        .find(|m| m.name() == s)
        .ok_or_else(|| {
            let known: Vec<&str> = DEMO_METHODS.iter().map(|m| m.name()).collect();
            format!("unknown method '{s}' (known: {})", known.join(", "))
        })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1x").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn durations_and_methods() {
        assert_eq!(parse_duration("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("2h").is_err());
        assert_eq!(parse_method("sendfile"), Ok(Method::Sendfile));
        let e = parse_method("carrier-pigeon").expect_err("unknown");
        assert!(e.contains("read-write"), "{e}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
