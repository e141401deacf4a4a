//! The `zctrace` binary: parses the command line, runs the subcommand from
//! the library, and maps its error to an exit status.

use std::process::ExitCode;

use clap::Parser as _;
use zctrace::{
    cli::{Cli, Command},
    commands::{self, StdoutClosed},
    demo::Interrupted,
    preflight::Fatal,
    probe::ProbeError,
    trace::TargetError,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => commands::demo(&args).map(|()| 0),
        Command::Attach(args) => commands::attach(&args).map(|()| 0),
        Command::Run(args) => commands::run(&args),
        Command::Top(args) => commands::top(&args).map(|()| 0),
        Command::Hooks(args) => commands::hooks(&args).map(|()| 0),
        Command::Report(args) => commands::report(&args).map(|()| 0),
        Command::Receive(args) => commands::receive(&args).map(|()| 0),
        Command::PitfallReader { path, lease } => {
            zctrace::demo::pitfalls::reader(&path, lease).map(|()| 0)
        }
        Command::Selftest { dir } => commands::selftest(&dir),
        #[cfg(feature = "bench")]
        Command::Workload(args) => commands::workload(&args).map(|()| 0),
        #[cfg(feature = "bench")]
        Command::Floor { mechanism, command } => commands::floor(mechanism, &command),
        #[cfg(feature = "bench")]
        Command::Syscalls { pairs } => commands::syscalls(pairs).map(|()| 0),
        #[cfg(feature = "bench")]
        Command::Memcpy { size } => commands::memcpy(size).map(|()| 0),
    };
    // For `cargo xtask bench`: zctrace's own CPU time (all its threads, not
    // the traced command's), on stderr.
    #[cfg(feature = "bench")]
    if std::env::var("ZCTRACE_REPORT_CPU").as_deref() == Ok("1") {
        eprintln!("zctrace-own-cpu-ms {:.1}", commands::own_cpu_ms());
        let wall = commands::DASHBOARD_WALL_US.load(std::sync::atomic::Ordering::Relaxed);
        if wall > 0 {
            let cpu = commands::DASHBOARD_CPU_US.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "zctrace-dashboard-cpu-ms {:.1} of {:.1} ms up",
                cpu as f64 / 1e3,
                wall as f64 / 1e3
            );
        }
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit_code(&e);
            if code != 0 {
                eprintln!("zctrace: {}", format!("{e:#}").replace('\n', " "));
            }
            ExitCode::from(code)
        }
    }
}

/// 0 when the reader of stdout went away, 1 failure, 3 missing privilege,
/// 4 kernel lacks a feature, 5 bad target process, 130 interrupted (2, bad
/// usage, comes from clap).
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<StdoutClosed>().is_some() {
        return 0;
    }
    if let Some(f) = e.downcast_ref::<Fatal>() {
        return f.exit_code();
    }
    if e.downcast_ref::<Interrupted>().is_some() {
        return 130;
    }
    if e.downcast_ref::<TargetError>().is_some() {
        return 5;
    }
    e.downcast_ref::<ProbeError>()
        .map_or(1, ProbeError::exit_code)
}
