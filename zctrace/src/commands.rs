//! The subcommands: what `zctrace demo`, `attach`, `run`, `hooks` and the
//! hidden helpers do once the command line is parsed. `main.rs` only
//! dispatches to these and maps their errors to exit statuses.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::{Context as _, Result};

use crate::{
    cgroup::Cgroup,
    cli::{AttachArgs, CgroupArgs, DemoArgs, HooksArgs, MetricsArgs, RunArgs, TopArgs, TraceArgs},
    demo::{self, DemoOptions, methods::DEMO_METHODS, report},
    preflight,
    probe::{ProbeOptions, Probes},
    sample::{self, Sampler, SamplerOptions},
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
        to: None,
        net: None,
    })
}

/// `--to HOST:PORT` as a socket address (one clear line if it is not one).
fn resolve_to(to: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    to.to_socket_addrs()
        .with_context(|| format!("--to {to}: not a HOST:PORT that resolves"))?
        .next()
        .with_context(|| format!("--to {to}: resolves to no address"))
}

/// The interface the demo's bytes leave by (loopback unless `--to`), with
/// its offloads; a warning, not a failure, if it cannot be read.
fn sending_interface(to: Option<std::net::SocketAddr>) -> Option<crate::netdev::NetDevice> {
    let dest = to.unwrap_or_else(|| (std::net::Ipv4Addr::LOCALHOST, 9).into());
    match crate::netdev::route_to(dest).and_then(|name| crate::netdev::read(&name)) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("zctrace: warning: the sending interface's offloads are unknown: {e}");
            None
        }
    }
}

/// `zctrace report RESULTS.json`: the handout from a saved `--json`.
pub fn report(args: &crate::cli::ReportArgs) -> Result<()> {
    let doc = crate::report::Doc::read(&args.results)?;
    let page = crate::report::html(&doc)?;
    match &args.output {
        Some(path) => std::fs::write(path, page)
            .with_context(|| format!("-o {}: cannot write", path.display()))?,
        None => emit(&page)?,
    }
    if let Some(dir) = &args.svg {
        crate::report::write_svgs(&doc, dir)?;
    }
    Ok(())
}

/// `zctrace receive --listen ADDR:PORT`: the demo's receiver for `--to`.
pub fn receive(args: &crate::cli::ReceiveArgs) -> Result<()> {
    use std::sync::atomic::Ordering;

    use demo::receiver::{Served, serve};
    let listener = std::net::TcpListener::bind(&args.listen)
        .with_context(|| format!("--listen {}: cannot listen", args.listen))?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let stop = stop_flag()?;
    eprintln!(
        "zctrace receive: listening on {addr}; each transfer's length and CRC-32 go back to \
         the sender (Ctrl-C to stop)"
    );
    let mut served = 0u64;
    let mut workers = Vec::new();
    while !stop.load(Ordering::Relaxed) && args.connections.is_none_or(|n| served < n) {
        let (mut conn, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(e).context("accepting a connection"),
        };
        served += 1;
        conn.set_nonblocking(false)?;
        workers.push(std::thread::spawn(move || {
            let started = std::time::Instant::now();
            match serve(&mut conn, 256 << 10) {
                Ok(Served::Checked {
                    announced,
                    bytes,
                    crc,
                }) => {
                    let secs = started.elapsed().as_secs_f64().max(1e-9);
                    eprintln!(
                        "zctrace receive: {peer}: {bytes} of {announced} bytes, crc32 {crc:08x}, \
                         {:.0} MiB/s{}",
                        bytes as f64 / f64::from(1 << 20) / secs,
                        if bytes == announced {
                            ""
                        } else {
                            " (SHORT: the sender stopped early)"
                        }
                    );
                }
                Ok(Served::Refused(why)) => {
                    eprintln!("zctrace receive: {peer}: refused, not the demo's protocol: {why}");
                }
                Err(e) => eprintln!("zctrace receive: {peer}: {e}"),
            }
        }));
        workers.retain(|w| !w.is_finished());
    }
    for w in workers {
        let _ = w.join();
    }
    if stop.load(Ordering::Relaxed) {
        anyhow::bail!(demo::Interrupted);
    }
    Ok(())
}

pub fn demo(args: &DemoArgs) -> Result<()> {
    let mut opts = demo_options(args.size, args.chunk, &args.methods)?;
    opts.cold = args.cold;
    opts.pace = args.pace;
    if let Some(dir) = &args.dir {
        opts.dir.clone_from(dir);
    }
    if let Some(to) = &args.to {
        opts.to = Some(resolve_to(to)?);
    }
    opts.net = sending_interface(opts.to);
    // Opened now, so a path that cannot be written fails before the run.
    let handout = match &args.report {
        Some(path) => Some((
            path.clone(),
            std::fs::File::create(path)
                .with_context(|| format!("--report {}: cannot write", path.display()))?,
        )),
        None => None,
    };
    let stop = stop_flag()?;
    // The demo's sender and receivers are threads of this process.
    let mut probes = load_probes(ProbeOptions {
        per_thread: true,
        ..ProbeOptions::default()
    })?;
    probes.trace_pid(std::process::id())?;
    let kernel = preflight::kernel_release();
    // The dashboard only on a terminal; a pipe or file gets the table.
    let files = handout.is_some() || args.svg.is_some();
    if !args.no_tui && !args.pitfalls && !args.json && !files && std::io::stdout().is_terminal() {
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
            if let Some(d) = &opts.net {
                emit(&format!("  sending interface {}\n", d.verdict()))?;
            }
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
        let doc = report::DemoReport {
            schema: trace::JSON_SCHEMA,
            zctrace_version: env!("CARGO_PKG_VERSION"),
            kernel: kernel.clone(),
            file_size: opts.size,
            chunk: opts.chunk,
            cold: opts.cold,
            machine: crate::report::Machine::read(),
            net_device: opts.net.clone(),
            to: opts.to.map(|a| a.to_string()),
            hooks: sampler.probes().hooks(),
            methods: &results,
            pitfalls: pitfalls.as_deref(),
            stats: stats.clone(),
        };
        let json = serde_json::to_string_pretty(&doc)?;
        if files {
            // The handout is made from the JSON itself, read back: its
            // numbers are the JSON's.
            let parsed = crate::report::Doc::parse(&json)?;
            if let Some((path, file)) = &handout {
                let mut f = file;
                f.set_len(0)?;
                std::io::Write::write_all(&mut f, crate::report::html(&parsed)?.as_bytes())
                    .with_context(|| format!("--report {}: cannot write", path.display()))?;
                eprintln!("zctrace: wrote the handout to {}", path.display());
            }
            if let Some(dir) = &args.svg {
                let written = crate::report::write_svgs(&parsed, dir)?;
                eprintln!(
                    "zctrace: wrote {} diagrams to {}",
                    written.len(),
                    dir.display()
                );
            }
        }
        if args.json {
            emit(&(json + "\n"))?;
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
        let state = match (h.attached, h.on_demand) {
            (true, true) => "on demand",
            (true, false) => "attached ",
            (false, _) => "MISSING  ",
        };
        s += &format!("{:<24} {state}  {}\n", h.name(), h.purpose);
        if let Some(r) = &h.reason {
            s += &format!("{:<24}            reason: {r}\n", "");
        }
        if let Some(name) = h.attached_as {
            s += &format!(
                "{:<24}            as {name}: this kernel's name for it\n",
                ""
            );
        }
    }
    s += &crate::probe::mechanism::Mechanism::of(probes.hooks()).describe();
    let maps = probes.map_memory();
    s += &format!(
        "maps: {} in {} maps, as the kernel charges them (task storage grows per thread)\n",
        crate::model::human_bytes(maps.iter().map(|m| m.bytes).sum()),
        maps.len()
    );
    s += &format!(
        "  {:<16} {:<13} {:>8} {:>5} {:>6} {:>10}\n",
        "map", "type", "entries", "key", "value", "memory"
    );
    for m in &maps {
        s += &format!(
            "  {:<16} {:<13} {:>8} {:>5} {:>6} {:>10}\n",
            m.name,
            m.kind,
            m.entries,
            m.key_bytes,
            m.value_bytes,
            crate::model::human_bytes(m.bytes)
        );
    }
    let t = probes.timings;
    let detach = std::time::Instant::now();
    drop(probes);
    s += &format!(
        "start-up: kernel BTF {:.0} ms, maps {:.0} ms, programs verified and attached {:.0} ms; \
         detached in {:.0} ms\n",
        t.btf_ms,
        t.maps_ms,
        t.programs_ms,
        detach.elapsed().as_secs_f64() * 1e3
    );
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

fn trace_probe_options(t: &TraceArgs, cgroup: Option<&Cgroup>) -> ProbeOptions {
    ProbeOptions {
        per_thread: t.per_thread,
        max_rows: t.max_rows,
        cgroup: cgroup.map(|c| c.target),
        ..ProbeOptions::default()
    }
}

/// `--metrics ADDR`: the address bound before anything is loaded, or one
/// line saying why it cannot be (exit status 1).
fn metrics_listener(a: &MetricsArgs) -> Result<Option<std::net::TcpListener>> {
    a.metrics
        .map(|addr| {
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("--metrics {addr}: cannot listen"))
        })
        .transpose()
}

/// The exporter, served on `listener` from its own thread (which ends with
/// zctrace).
fn metrics_exporter(
    listener: Option<std::net::TcpListener>,
    a: &MetricsArgs,
    cgroup: Option<&Cgroup>,
    probes: &Probes,
) -> Result<Option<std::sync::Arc<crate::metrics::Exporter>>> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    let ex = std::sync::Arc::new(crate::metrics::Exporter::new(
        a.metrics_pid,
        cgroup.map(|c| c.name.clone()),
        probes.hooks(),
    ));
    let bound = crate::metrics::serve(listener, std::sync::Arc::clone(&ex))
        .context("starting the metrics server")?;
    eprintln!("zctrace: metrics at http://{bound}/metrics");
    Ok(Some(ex))
}

/// A per-process sampler (attach, run) with the exporter if asked.
fn process_sampler(
    probes: Probes,
    hide: Option<u32>,
    metrics: Option<std::sync::Arc<crate::metrics::Exporter>>,
) -> Sampler {
    Sampler::new(
        probes,
        SamplerOptions {
            hide,
            processes: true,
            retire: sample::Retire::Keep,
            metrics,
            ..SamplerOptions::default()
        },
    )
}

/// The `--cgroup` directory, checked before anything is loaded.
fn cgroup_target(a: &CgroupArgs) -> Result<Option<Cgroup>> {
    Ok(match &a.cgroup {
        Some(p) => Some(crate::cgroup::resolve(p)?),
        None => None,
    })
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
    let cgroup = cgroup_target(&args.trace.cgroup)?;
    let listener = metrics_listener(&args.trace.metrics)?;
    let mut probes = load_probes(ProbeOptions {
        follow_forks: !args.no_follow,
        ..trace_probe_options(&args.trace, cgroup.as_ref())
    })?;
    let metrics = metrics_exporter(listener, &args.trace.metrics, cgroup.as_ref(), &probes)?;
    let targets = trace::start_attach(&mut probes, &args.pids)?;
    let sampler = process_sampler(probes, None, metrics);
    if !wants_dashboard(&args.trace) {
        return trace::attach(
            sampler,
            &targets,
            cgroup.as_ref(),
            &trace_options(&args.trace),
            &stop,
        );
    }
    let mut what: Vec<String> = args.pids.iter().map(u32::to_string).collect();
    if let Some(c) = &cgroup {
        what.push(format!("cgroup {}", c.name));
    }
    let app = trace_app(sampler.probes(), format!("attached to {}", what.join(",")));
    tui::run_trace(app, sampler, sample::PERIOD, stop, || {
        trace::targets_gone(&targets, cgroup.as_ref())
    })
}

pub fn run(args: &RunArgs) -> Result<u8> {
    let stop = stop_flag()?;
    let cgroup = cgroup_target(&args.trace.cgroup)?;
    let listener = metrics_listener(&args.trace.metrics)?;
    let mut probes = load_probes(ProbeOptions {
        follow_forks: true,
        ..trace_probe_options(&args.trace, cgroup.as_ref())
    })?;
    let metrics = metrics_exporter(listener, &args.trace.metrics, cgroup.as_ref(), &probes)?;
    if !wants_dashboard(&args.trace) {
        return trace::run(
            probes,
            &args.command,
            cgroup.as_ref(),
            metrics,
            &trace_options(&args.trace),
            &stop,
        );
    }
    // The dashboard owns the terminal: the command's output goes to a file.
    let log = std::env::temp_dir().join(format!("zctrace-run-{}.log", std::process::id()));
    let mut child = trace::spawn_traced(&mut probes, &args.command, Some(&log), cgroup.as_ref())?;
    let name = args
        .command
        .first()
        .map_or_else(String::new, |c| c.to_string_lossy().into_owned());
    let app = trace_app(&probes, format!("run {name} (pid {})", child.id()));
    let sampler = process_sampler(probes, Some(std::process::id()), metrics);
    let mut status = None;
    let shown = tui::run_trace(app, sampler, sample::PERIOD, stop, || {
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

/// `zctrace top`: every process (or a cgroup's), ranked.
pub fn top(args: &TopArgs) -> Result<()> {
    let stop = stop_flag()?;
    let cgroup = cgroup_target(&args.cgroup)?;
    let listener = metrics_listener(&args.metrics)?;
    let probes = load_probes(ProbeOptions {
        trace_all: cgroup.is_none(),
        cgroup: cgroup.as_ref().map(|c| c.target),
        max_rows: args.max_rows,
        ..ProbeOptions::default()
    })?;
    let target = match &cgroup {
        Some(c) => format!("top: cgroup {}", c.name),
        None => "top: every process".to_owned(),
    };
    let metrics = metrics_exporter(listener, &args.metrics, cgroup.as_ref(), &probes)?;
    let sampler = Sampler::new(
        probes,
        SamplerOptions {
            processes: true,
            retire: sample::Retire::Aggregate,
            top: true,
            metrics,
            ..SamplerOptions::default()
        },
    );
    let dashboard =
        !args.no_tui && !args.json && args.output.is_none() && std::io::stdout().is_terminal();
    if dashboard {
        let app = crate::app::App::for_top(
            sampler.probes().hooks().to_vec(),
            preflight::kernel_release(),
            target,
            args.interval,
        );
        return tui::run_trace(
            app,
            sampler,
            args.interval,
            stop,
            duration_over(args.duration),
        );
    }
    let opts = trace::TraceOptions {
        duration: args.duration,
        interval: Some(args.interval),
        json: args.json,
        output: args.output.clone(),
    };
    let mut out = trace::sink(&opts, false)?;
    let mut sampler = sampler;
    let limit = args.limit;
    trace::watch(
        &mut sampler,
        &opts,
        &stop,
        &mut *out,
        || Ok(false),
        |out, started, s, fin| {
            let Some(view) = &s.top else { return Ok(()) };
            let elapsed = started.elapsed().as_secs_f64();
            if args.json {
                let line = crate::top::JsonLine::new(view, &s.stats, elapsed, fin);
                writeln!(out, "{}", serde_json::to_string(&line)?)?;
            } else {
                out.write_all(crate::top::table(view, &s.stats, limit, elapsed, fin).as_bytes())?;
            }
            Ok(())
        },
    )
}

/// For a dashboard with `--duration`: a sentence once it is over.
fn duration_over(d: Option<std::time::Duration>) -> impl FnMut() -> Option<String> {
    let started = std::time::Instant::now();
    move || {
        d.filter(|d| started.elapsed() >= *d)
            .map(|d| format!("--duration {} s is over", d.as_secs_f64()))
    }
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
    let (report, status) = demo::selftest::run(dir)?;
    emit(&report)?;
    Ok(status)
}

/// Runs a command under the overhead floor (empty programs on every
/// tracepoint-tier hook); passes its exit status through.
#[cfg(feature = "bench")]
pub fn floor(mechanism: crate::cli::FloorMechanism, argv: &[std::ffi::OsString]) -> Result<u8> {
    preflight::check()?;
    let (probes, attached) = Probes::load_floor(mechanism)?;
    eprintln!("zctrace floor: {attached} programs attached");
    let (prog, args) = argv.split_first().context("no command")?;
    let status = std::process::Command::new(prog)
        .args(args)
        .status()
        .context("starting the command")?;
    drop(probes);
    Ok(trace::exit_code(status))
}

/// `zctrace syscalls N`: N pairs of a 4 KiB read of /dev/zero and a write
/// of it to /dev/null, timed, the time per pair printed.
#[cfg(feature = "bench")]
pub fn syscalls(pairs: u64) -> Result<()> {
    use std::io::{Read as _, Write as _};
    let mut zero = std::fs::File::open("/dev/zero").context("opening /dev/zero")?;
    let mut null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let mut buf = vec![0u8; 4096];
    let started = std::time::Instant::now();
    for _ in 0..pairs {
        let n = zero.read(&mut buf)?;
        null.write_all(&buf[..n])?;
    }
    let ns = started.elapsed().as_nanos() as f64 / pairs.max(1) as f64;
    println!("zctrace-syscalls-ns-per-pair {ns:.0}");
    Ok(())
}

/// User + system CPU time of this process (all threads, no children).
#[cfg(feature = "bench")]
pub fn own_cpu_ms() -> f64 {
    cpu_ms(libc::RUSAGE_SELF)
}

/// User + system CPU time of the calling thread.
#[cfg(feature = "bench")]
pub fn thread_cpu_ms() -> f64 {
    cpu_ms(libc::RUSAGE_THREAD)
}

#[cfg(feature = "bench")]
fn cpu_ms(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the struct we pass; `who` is RUSAGE_SELF or
    // RUSAGE_THREAD. (rustix offers no getrusage.)
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// The demo dashboard's own CPU for `cargo xtask bench`: the UI thread's
/// while the dashboard was up, and the sampler thread's, in microseconds;
/// and how long the dashboard was up.
#[cfg(feature = "bench")]
pub static DASHBOARD_CPU_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
#[cfg(feature = "bench")]
pub static DASHBOARD_WALL_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Adds a thread's share to `DASHBOARD_CPU_US`.
#[cfg(feature = "bench")]
pub fn add_dashboard_cpu(ms: f64) {
    DASHBOARD_CPU_US.fetch_add((ms * 1e3) as u64, std::sync::atomic::Ordering::Relaxed);
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
