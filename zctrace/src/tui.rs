//! The dashboard's terminal handling and event loop.
//!
//! Three producer threads feed one bounded channel: the probe sampler (it
//! owns the probes; counters and events every refresh), the demo runner and
//! the key reader. Each stops when its send fails. The main thread folds
//! events into the App and redraws when something changed, at most
//! `MAX_FPS` times a second. The terminal is restored by a Drop guard, and
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
    demo::{self, DemoOptions},
    probe::Probes,
    ui::Dashboard,
};

const MAX_FPS: u32 = 10;
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// At most this many ring-buffer events per sample reach the UI.
const EVENTS_PER_SAMPLE: usize = 2_000;

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
        probes.hook_set(),
        kernel,
        std::process::id(),
    );
    app.refresh = SAMPLE_EVERY;
    let want_events = Arc::new(AtomicBool::new(false));
    // Finished methods' rows are deleted once their numbers are kept, so
    // `--loop` can run for a whole lecture without filling the map.
    let (prune_tx, prune_rx) = mpsc::channel::<Vec<u32>>();
    let sampler = spawn_sampler(
        probes,
        &tx,
        &stop,
        &want_events,
        None,
        false,
        Some(prune_rx),
    )?;
    let runner = {
        let (tx, stop, opts) = (tx.clone(), Arc::clone(&stop), opts.clone());
        thread::Builder::new()
            .name("zctrace-demo".into())
            .spawn(move || demo_loop(&opts, &tx, &stop, repeat))?
    };
    spawn_input(&tx)?;
    drop(tx);
    let result = ui_loop(&mut app, &rx, &stop, &want_events, |app| {
        if !app.prune.is_empty() {
            let _ = prune_tx.send(std::mem::take(&mut app.prune));
        }
    });
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
    probes: Probes,
    stop: Arc<AtomicBool>,
    hide: Option<u32>,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<()> {
    let (tx, rx) = mpsc::sync_channel::<AppEvent>(256);
    app.refresh = SAMPLE_EVERY;
    let want_events = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(probes, &tx, &stop, &want_events, hide, true, None)?;
    spawn_input(&tx)?;
    drop(tx);
    let mut reported = false;
    let result = ui_loop(&mut app, &rx, &stop, &want_events, |app| {
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

/// Folds events into the app and redraws until the user quits, a signal
/// arrives or every producer is gone. `each` runs once per frame.
fn ui_loop(
    app: &mut App,
    rx: &mpsc::Receiver<AppEvent>,
    stop: &AtomicBool,
    want_events: &AtomicBool,
    mut each: impl FnMut(&mut App),
) -> Result<()> {
    let mut guard = TerminalGuard::new().context("setting up the terminal")?;
    let frame_gap = Duration::from_secs(1) / MAX_FPS;
    let mut last_tick = Instant::now();
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    loop {
        match rx.recv_timeout(frame_gap) {
            Ok(ev) => dirty |= app.update(ev),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        while let Ok(ev) = rx.try_recv() {
            dirty |= app.update(ev);
        }
        let now = Instant::now();
        dirty |= app.update(AppEvent::Tick(now - last_tick));
        last_tick = now;
        each(app);
        want_events.store(app.wants_events(), Ordering::Relaxed);
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

/// Starts the probe sampler: it owns the probes (dropping them, which
/// detaches everything, when it ends) and sends a sample every period; in
/// attach/run mode (`rows`) also the rows per process and method, with
/// `hide` (zctrace's own pid) left out.
fn spawn_sampler(
    probes: Probes,
    tx: &SyncSender<AppEvent>,
    stop: &Arc<AtomicBool>,
    want: &Arc<AtomicBool>,
    hide: Option<u32>,
    rows: bool,
    prune: Option<mpsc::Receiver<Vec<u32>>>,
) -> io::Result<thread::JoinHandle<()>> {
    let (tx, stop, want) = (tx.clone(), Arc::clone(stop), Arc::clone(want));
    thread::Builder::new()
        .name("zctrace-sampler".into())
        .spawn(move || sample_loop(probes, &tx, &stop, &want, hide, rows, prune.as_ref()))
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

fn sample_loop(
    mut probes: Probes,
    tx: &SyncSender<AppEvent>,
    stop: &AtomicBool,
    want: &AtomicBool,
    hide: Option<u32>,
    with_rows: bool,
    prune: Option<&mpsc::Receiver<Vec<u32>>>,
) {
    let mut ring = probes.take_events().ok();
    let mut names = crate::trace::Names::default();
    let hooks = probes.hook_set();
    let mut events_on = false;
    while !stop.load(Ordering::Relaxed) {
        let wanted = want.load(Ordering::Relaxed);
        if wanted != events_on && probes.set_events(wanted).is_ok() {
            events_on = wanted;
        }
        let events = ring
            .as_mut()
            .map(|r| names.drain(r, EVENTS_PER_SAMPLE))
            .unwrap_or_default();
        if let Some(rx) = prune {
            let doomed: Vec<u32> = rx.try_iter().flatten().collect();
            if !doomed.is_empty() {
                let _ = probes.remove_rows(&doomed);
            }
        }
        let taken = Instant::now();
        if let (Ok(mut snapshot), Ok(stats)) = (probes.snapshot(), probes.stats()) {
            snapshot.rows.retain(|k, _| Some(k.tgid) != hide);
            let rows = with_rows.then(|| crate::trace::rows(&snapshot, hooks, &mut names));
            if tx
                .send(AppEvent::Sample {
                    snapshot,
                    stats,
                    events,
                    taken,
                })
                .is_err()
                || rows.is_some_and(|r| tx.send(AppEvent::Rows(r)).is_err())
            {
                break;
            }
        }
        // The sampling period, not a way to coordinate shutdown: the stop
        // flag is checked every round.
        thread::sleep(SAMPLE_EVERY);
    }
}

fn demo_loop(opts: &DemoOptions, tx: &SyncSender<AppEvent>, stop: &AtomicBool, repeat: bool) {
    let ws = match demo::Workspace::create(opts) {
        Ok(ws) => ws,
        Err(e) => {
            let _ = tx.send(AppEvent::RoundDone(Err(format!("{e:#}"))));
            return;
        }
    };
    loop {
        for (index, &m) in opts.methods.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let started = tx.clone();
            let on_start = move |sender_tid, receiver_tids| {
                let _ = started.send(AppEvent::Started {
                    index,
                    sender_tid,
                    receiver_tids,
                });
            };
            match demo::run_method(&ws, opts, m, stop, on_start) {
                Ok(record) => {
                    let at = Instant::now();
                    if tx.send(AppEvent::Finished { index, record, at }).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if !stop.load(Ordering::Relaxed) {
                        let _ = tx.send(AppEvent::RoundDone(Err(format!("{e:#}"))));
                    }
                    return;
                }
            }
        }
        if tx.send(AppEvent::RoundDone(Ok(()))).is_err() || !repeat {
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
