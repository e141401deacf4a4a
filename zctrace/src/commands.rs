//! The subcommands: what `zctrace demo`, `attach`, `run`, `hooks` and the
//! hidden helpers do once the command line is parsed. `main.rs` only
//! dispatches to these and maps their errors to exit statuses.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::{Context as _, Result};

use crate::{
    cli::{AttachArgs, DemoArgs, HooksArgs, RunArgs, TraceArgs},
    demo::{self, DemoOptions, methods::DEMO_METHODS, report},
    preflight,
    probe::{ProbeOptions, Probes},
    sample::{Sampler, SamplerOptions},
    trace, tui,
};

/// The reader of our output went away (`zctrace demo | head`): stop
/// quietly, cleaning up on the way out, instead of panicking in print!.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// Writes to stdout and flushes (so progress shows as it happens).
fn emit(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        r => Ok(r?),
    }
}

/// Privilege and kernel checks, then the probes.
fn load_probes(opts: ProbeOptions) -> Result<Probes> {
    preflight::check()?;
    if let Some(warning) = preflight::raise_memlock() {
        eprintln!("zctrace: warning: {warning}");
    }
    Ok(Probes::load(opts)?)
}

/// Ctrl-C and SIGTERM set the flag; work in progress notices it, unwinds
/// (removing temporary files, detaching probes) and exits 130.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

fn demo_options(size: u64, chunk: u64, methods: &[zctrace_common::Method]) -> Result<DemoOptions> {
    Ok(DemoOptions {
        size,
        chunk: usize::try_from(chunk.min(size)).context("--chunk is too large")?,
        methods: if methods.is_empty() {
            DEMO_METHODS.to_vec()
        } else {
            methods.to_vec()
        },
        cold: false,
        pace: None,
        dir: std::env::temp_dir(),
    })
}

pub fn demo(args: &DemoArgs) -> Result<()> {
    let mut opts = demo_options(args.size, args.chunk, &args.methods)?;
    opts.cold = args.cold;
    opts.pace = args.pace;
    if let Some(dir) = &args.dir {
        opts.dir.clone_from(dir);
    }
    let stop = stop_flag()?;
    // The demo's sender and receivers are threads of this process.
    let mut probes = load_probes(ProbeOptions {
        per_thread: true,
        ..ProbeOptions::default()
    })?;
    probes.trace_pid(std::process::id())?;
    let kernel = preflight::kernel_release();
    // The dashboard only on a terminal; a pipe or file gets the table.
    if !args.no_tui && !args.pitfalls && !args.json && std::io::stdout().is_terminal() {
        return tui::run_demo(opts, probes, stop, args.repeat, kernel);
    }
    let mut sampler = Sampler::new(
        probes,
        SamplerOptions {
            demo: Some(opts.clone()),
            ..SamplerOptions::default()
        },
    );
    loop {
        if !args.json {
            emit(&report::header(sampler.probes().hooks(), &kernel))?;
        }
        let results = demo::run_all(&opts, &mut sampler, &stop, |r| {
            if args.json {
                Ok(())
            } else {
                emit(&report::method_block(r))
            }
        })?;
        let stats = sampler.sample()?.stats;
        let pitfalls = if args.pitfalls {
            let dir = tempfile::Builder::new()
                .prefix("zctrace-pitfalls-")
                .tempdir_in(&opts.dir)?;
            Some(demo::pitfalls::run(dir.path())?)
        } else {
            None
        };
        if args.json {
            let doc = report::DemoReport {
                schema: trace::JSON_SCHEMA,
                zctrace_version: env!("CARGO_PKG_VERSION"),
                kernel: kernel.clone(),
                file_size: opts.size,
                chunk: opts.chunk,
                cold: opts.cold,
                hooks: sampler.probes().hooks(),
                methods: &results,
                pitfalls: pitfalls.as_deref(),
                stats,
            };
            emit(&(serde_json::to_string_pretty(&doc)? + "\n"))?;
        } else {
            if let Some(p) = &pitfalls {
                emit(&report::pitfalls_text(p))?;
            }
            emit(&report::footer(&stats))?;
        }
        if !args.repeat {
            return Ok(());
        }
    }
}

pub fn hooks(args: &HooksArgs) -> Result<()> {
    let probes = load_probes(ProbeOptions::default())?;
    if args.json {
        return emit(&(serde_json::to_string_pretty(probes.hooks())? + "\n"));
    }
    let mut s = String::new();
    for h in probes.hooks() {
        let state = if h.attached { "attached" } else { "MISSING " };
        s += &format!("{:<24} {state}  {}\n", h.name(), h.purpose);
        if let Some(r) = &h.reason {
            s += &format!("{:<24}           reason: {r}\n", "");
        }
    }
    emit(&s)
}

fn trace_options(t: &TraceArgs) -> trace::TraceOptions {
    trace::TraceOptions {
        duration: t.duration,
        interval: t
            .interval
            .or(t.json.then_some(std::time::Duration::from_secs(1))),
        json: t.json,
        output: t.output.clone(),
    }
}

/// The dashboard for attach/run: on a terminal, unless tables, JSON or a
/// report file were asked for.
fn wants_dashboard(t: &TraceArgs) -> bool {
    !t.no_tui && !t.json && t.output.is_none() && std::io::stdout().is_terminal()
}

fn trace_probe_options(t: &TraceArgs) -> ProbeOptions {
    ProbeOptions {
        per_thread: t.per_thread,
        max_rows: t.max_rows,
        ..ProbeOptions::default()
    }
}

fn trace_app(probes: &Probes, target: String) -> crate::app::App {
    crate::app::App::for_trace(probes.hooks().to_vec(), preflight::kernel_release(), target)
}

pub fn attach(args: &AttachArgs) -> Result<()> {
    let stop = stop_flag()?;
    // Check the targets before loading anything.
    for &pid in &args.pids {
        trace::resolve_target(pid)?;
    }
    let mut probes = load_probes(ProbeOptions {
        follow_forks: !args.no_follow,
        ..trace_probe_options(&args.trace)
    })?;
    if !wants_dashboard(&args.trace) {
        return trace::attach(probes, &args.pids, &trace_options(&args.trace), &stop);
    }
    let targets = trace::start_attach(&mut probes, &args.pids)?;
    let pids: Vec<String> = args.pids.iter().map(u32::to_string).collect();
    let app = trace_app(&probes, format!("attached to {}", pids.join(",")));
    tui::run_trace(app, probes, stop, None, || {
        trace::all_exited(&targets).then(|| "every traced process has exited".to_owned())
    })
}

pub fn run(args: &RunArgs) -> Result<u8> {
    let stop = stop_flag()?;
    let mut probes = load_probes(ProbeOptions {
        follow_forks: true,
        ..trace_probe_options(&args.trace)
    })?;
    if !wants_dashboard(&args.trace) {
        return trace::run(probes, &args.command, &trace_options(&args.trace), &stop);
    }
    // The dashboard owns the terminal: the command's output goes to a file.
    let log = std::env::temp_dir().join(format!("zctrace-run-{}.log", std::process::id()));
    let mut child = trace::spawn_traced(&mut probes, &args.command, Some(&log))?;
    let name = args
        .command
        .first()
        .map_or_else(String::new, |c| c.to_string_lossy().into_owned());
    let app = trace_app(&probes, format!("run {name} (pid {})", child.id()));
    let mut status = None;
    let shown = tui::run_trace(app, probes, stop, Some(std::process::id()), || {
        if status.is_none() {
            status = child.try_wait().ok().flatten();
        }
        status.map(|s| format!("{name} exited ({s})"))
    });
    let code = trace::finish(&mut child)?;
    eprintln!("zctrace: the command's output is in {}", log.display());
    shown?;
    Ok(code)
}

/// Runs a method with no probes loaded; prints `elapsed_ns N` per repeat.
#[cfg(feature = "bench")]
pub fn workload(args: &crate::cli::WorkloadArgs) -> Result<()> {
    let stop = stop_flag()?;
    let opts = demo_options(args.size, args.chunk, &[args.method])?;
    let ws = demo::Workspace::create(&opts)?;
    for _ in 0..args.repeat {
        let rec = demo::run_method(&ws, &opts, args.method, &stop, |_, _| {})?;
        emit(&format!("elapsed_ns {}\n", rec.elapsed.as_nanos()))?;
    }
    Ok(())
}

pub fn selftest(dir: &std::path::Path) -> Result<u8> {
    preflight::check()?;
    let _ = preflight::raise_memlock();
    let (report, pass) = demo::selftest::run(dir)?;
    emit(&report)?;
    Ok(if pass { 0 } else { 1 })
}

/// Runs a command under the overhead floor (empty programs on every
/// tracepoint-tier hook); passes its exit status through.
#[cfg(feature = "bench")]
pub fn floor(argv: &[std::ffi::OsString]) -> Result<u8> {
    preflight::check()?;
    let (probes, attached) = Probes::load_floor()?;
    eprintln!("zctrace floor: {attached} empty programs attached");
    let (prog, args) = argv.split_first().context("no command")?;
    let status = std::process::Command::new(prog)
        .args(args)
        .status()
        .context("starting the command")?;
    drop(probes);
    Ok(trace::exit_code(status))
}

/// User + system CPU time of this process (all threads, no children).
#[cfg(feature = "bench")]
pub fn own_cpu_ms() -> f64 {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is valid.
    // (rustix offers no getrusage.)
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// Copies `size` bytes in memory five times; prints the best time.
#[cfg(feature = "bench")]
pub fn memcpy(size: u64) -> Result<()> {
    let n = usize::try_from(size).context("--size does not fit in memory")?;
    let src: Vec<u8> = (0..n).map(|i| i as u8).collect();
    let mut dst = vec![0u8; n];
    let mut best = std::time::Duration::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        dst.copy_from_slice(&src);
        best = best.min(t.elapsed());
        std::hint::black_box(&dst);
    }
    emit(&format!("elapsed_ns {}\n", best.as_nanos()))
}
