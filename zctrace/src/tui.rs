//! The dashboard's terminal handling and event loop.
//!
//! Two producer threads feed the dashboard's one bounded channel: the
//! sampler (src/sample.rs: it owns the probes and sends one converted
//! sample per period) and the key reader. Each stops when its send fails.
//! The demo runner reports to the sampler, and the dashboard's own
//! commands (event log on/off, reset) go to it down one typed channel. The
//! main thread folds events into the App and redraws when something
//! changed, at most `MAX_FPS` times a second. The terminal is restored by a Drop guard, and
//! by a panic hook if anything panics while it is in raw mode.

use std::{
    io::{self, Write as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError, SyncSender},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use ratatui::{
    DefaultTerminal,
    crossterm::{
        cursor::Show,
        event::{self, Event as TermEvent, KeyEventKind},
        execute,
    },
};

use crate::{
    app::{App, AppEvent},
    demo::{self, DemoOptions, track::DemoEvent},
    probe::Probes,
    sample::{self, Command, Sampler, SamplerOptions},
    ui::Dashboard,
};

const MAX_FPS: u32 = 10;

/// Raw mode and the alternate screen, undone on drop and on panic.
struct TerminalGuard {
    terminal: DefaultTerminal,
}

impl TerminalGuard {
    fn new() -> io::Result<Self> {
        let terminal = ratatui::try_init()?;
        // ratatui's hook (installed by try_init) restores raw mode and the
        // screen; make sure the cursor comes back too, then report.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        Ok(Self { terminal })
    }
}

fn restore() {
    ratatui::restore();
    let _ = execute!(io::stdout(), Show);
    let _ = io::stdout().flush();
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Runs the demo under the dashboard until the user quits.
pub fn run_demo(
    opts: DemoOptions,
    probes: Probes,
    stop: Arc<AtomicBool>,
    repeat: bool,
    kernel: String,
) -> Result<()> {
    let (tx, rx) = mpsc::sync_channel::<AppEvent>(256);
    let mut app = App::new(
        opts.clone(),
        probes.hooks().to_vec(),
        kernel,
        std::process::id(),
    );
    let (cmd_tx, cmd_rx) = mpsc::sync_channel::<Command>(256);
    let sampler = Sampler::new(
        probes,
        SamplerOptions {
            demo: Some(opts.clone()),
            ..SamplerOptions::default()
        },
    );
    let sampler = spawn_sampler(sampler, sample::PERIOD, cmd_rx, &tx, &stop)?;
    let runner = {
        let (cmds, stop) = (cmd_tx.clone(), Arc::clone(&stop));
        thread::Builder::new()
            .name("zctrace-demo".into())
            .spawn(move || demo_loop(&opts, &cmds, &stop, repeat))?
    };
    spawn_input(&tx)?;
    drop(tx);
    #[cfg(feature = "bench")]
    let (up, ui_cpu) = (std::time::Instant::now(), crate::commands::thread_cpu_ms());
    let result = ui_loop(&mut app, &rx, &cmd_tx, &stop, |_| {});
    #[cfg(feature = "bench")]
    {
        crate::commands::add_dashboard_cpu(crate::commands::thread_cpu_ms() - ui_cpu);
        crate::commands::DASHBOARD_WALL_US.store(
            up.elapsed().as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    // Stop the producers; the demo thread removes its work directory and the
    // sampler drops (detaches) the probes before we return.
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    let _ = runner.join();
    let _ = sampler.join();
    result
}

/// The dashboard for `attach` / `run`. `gone` is polled every frame and
/// returns a sentence once the traced programs have all exited; the
/// dashboard then stays up with the final numbers until the user quits.
pub fn run_trace(
    mut app: App,
    sampler: Sampler,
    period: Duration,
    stop: Arc<AtomicBool>,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<()> {
    let (tx, rx) = mpsc::sync_channel::<AppEvent>(256);
    let (cmd_tx, cmd_rx) = mpsc::sync_channel::<Command>(256);
    let sampler = spawn_sampler(sampler, period, cmd_rx, &tx, &stop)?;
    spawn_input(&tx)?;
    drop(tx);
    let mut reported = false;
    let result = ui_loop(&mut app, &rx, &cmd_tx, &stop, |app| {
        if !reported && let Some(why) = gone() {
            reported = true;
            app.update(AppEvent::TargetsGone(why));
        }
    });
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    let _ = sampler.join();
    result
}

/// The sampler's thread, delivering into the dashboard's channel.
fn spawn_sampler(
    sampler: Sampler,
    period: Duration,
    commands: mpsc::Receiver<Command>,
    tx: &SyncSender<AppEvent>,
    stop: &Arc<AtomicBool>,
) -> io::Result<thread::JoinHandle<()>> {
    let tx = tx.clone();
    sample::spawn(sampler, period, commands, Arc::clone(stop), move |s| {
        tx.send(AppEvent::Sample(Box::new(s))).is_ok()
    })
}

/// Folds events into the app and redraws until the user quits, a signal
/// arrives or every producer is gone. `each` runs once per frame; the
/// app's commands go to the sampler.
fn ui_loop(
    app: &mut App,
    rx: &mpsc::Receiver<AppEvent>,
    commands: &SyncSender<Command>,
    stop: &AtomicBool,
    mut each: impl FnMut(&mut App),
) -> Result<()> {
    let mut guard = TerminalGuard::new().context("setting up the terminal")?;
    let frame_gap = Duration::from_secs(1) / MAX_FPS;
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    let mut events_on = false;
    loop {
        match rx.recv_timeout(frame_gap) {
            Ok(ev) => dirty |= app.update(ev),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        while let Ok(ev) = rx.try_recv() {
            dirty |= app.update(ev);
        }
        each(app);
        let mut cmds = app.take_commands();
        if app.wants_events() != events_on {
            events_on = app.wants_events();
            cmds.push(Command::Events(events_on));
        }
        for c in cmds {
            // The sampler gone means we are stopping anyway.
            let _ = commands.try_send(c);
        }
        if stop.load(Ordering::Relaxed) || app.quit {
            return Ok(());
        }
        if dirty && last_draw.is_none_or(|t| t.elapsed() >= frame_gap) {
            guard
                .terminal
                .draw(|f| f.render_widget(Dashboard(app), f.area()))?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
    }
}

/// The key reader blocks in read(); it ends when the channel closes (at the
/// next key) or with the process.
fn spawn_input(tx: &SyncSender<AppEvent>) -> io::Result<()> {
    let tx = tx.clone();
    thread::Builder::new()
        .name("zctrace-input".into())
        .spawn(move || input_loop(&tx))
        .map(drop)
}

/// Runs the methods (once, or round after round with `--loop`), reporting
/// each start and finish to the sampler.
fn demo_loop(opts: &DemoOptions, cmds: &SyncSender<Command>, stop: &AtomicBool, repeat: bool) {
    let send = |ev| cmds.send(Command::Demo(ev)).is_ok();
    let ws = match demo::Workspace::create(opts) {
        Ok(ws) => ws,
        Err(e) => {
            send(DemoEvent::RoundDone(Err(format!("{e:#}"))));
            return;
        }
    };
    loop {
        for (index, &m) in opts.methods.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let started = cmds.clone();
            let on_start = move |sender_tid, receiver_tids| {
                let _ = started.send(Command::Demo(DemoEvent::Started {
                    index,
                    sender_tid,
                    receiver_tids,
                    at: Instant::now(),
                }));
            };
            match demo::run_method(&ws, opts, m, stop, on_start) {
                Ok(record) => {
                    if !send(DemoEvent::Finished { index, record }) {
                        return;
                    }
                }
                Err(e) => {
                    if !stop.load(Ordering::Relaxed) {
                        send(DemoEvent::RoundDone(Err(format!("{e:#}"))));
                    }
                    return;
                }
            }
        }
        if !send(DemoEvent::RoundDone(Ok(()))) || !repeat {
            return;
        }
    }
}

fn input_loop(tx: &SyncSender<AppEvent>) {
    loop {
        let ev = match event::read() {
            Ok(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => AppEvent::Key(k),
            Ok(TermEvent::Resize(..)) => AppEvent::Resize,
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}
