//! Dashboard state. `update` folds one event into it; rendering (src/ui)
//! only reads it. No I/O here.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use zctrace_common::{Call, Event, FdKind, Method, event_kind};

use crate::{
    demo::{DemoOptions, MethodResult, RunRecord, measure},
    model::{HookSet, Snapshot},
    probe::{HookStatus, Stats},
    trace::Row,
};

/// The dashboard's views, in Tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Methods,
    Diagram,
    Narration,
    Log,
}

impl View {
    pub const ALL: [View; 4] = [View::Methods, View::Diagram, View::Narration, View::Log];

    pub const fn title(self) -> &'static str {
        match self {
            View::Methods => "1 Methods",
            View::Diagram => "2 Copy path",
            View::Narration => "3 Step through",
            View::Log => "4 Events",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    Waiting,
    Running,
    Done,
    Skipped(String),
}

/// One method of the demo as the dashboard knows it.
#[derive(Clone, Debug)]
pub struct LiveMethod {
    pub method: Method,
    pub state: RunState,
    pub record: Option<RunRecord>,
    /// When it finished: its counters are complete in any sample after.
    pub finished_at: Option<Instant>,
    /// The numbers of its last complete run, kept once complete; then that
    /// run's counter rows are deleted from the kernel (see `App::prune`).
    pub frozen: Option<MethodResult>,
    /// The sender thread of the run `frozen` holds.
    pub frozen_tid: u32,
}

impl LiveMethod {
    /// Whether the numbers of its last run are final: kept from a sample
    /// taken after it finished. A run can end between two samples (an
    /// 8 MiB run takes milliseconds), and until the next one its live
    /// numbers are not all in.
    pub fn settled(&self) -> bool {
        self.frozen.is_some()
            && self
                .record
                .as_ref()
                .is_some_and(|r| r.sender_tid == self.frozen_tid)
    }
}

/// One line of the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub what: String,
    pub method: Method,
    pub ret: i64,
    pub fd: FdKind,
    pub dur_ns: u64,
}

/// Everything that can change the dashboard.
#[derive(Debug)]
pub enum AppEvent {
    Key(KeyEvent),
    Resize,
    /// A probe sample: counters, health and new ring-buffer events.
    Sample {
        snapshot: Snapshot,
        stats: Stats,
        events: Vec<Event>,
        /// When the counters were read.
        taken: Instant,
    },
    /// Attach/run mode: the per (process, method) rows of a sample.
    Rows(Vec<Row>),
    /// Attach/run mode: the traced programs are gone (the reason).
    TargetsGone(String),
    /// A demo method started on these threads (sender, receivers).
    Started {
        index: usize,
        sender_tid: u32,
        receiver_tids: Vec<u32>,
    },
    /// A demo method finished (or was skipped), at `at`.
    Finished {
        index: usize,
        record: RunRecord,
        at: Instant,
    },
    /// A demo round finished; `Err` carries a failure to show.
    RoundDone(Result<(), String>),
    /// Periodic tick (running methods' elapsed time moves on).
    Tick(Duration),
}

pub const LOG_CAPACITY: usize = 500;
/// Samples the copy-rate sparkline remembers (a minute at 4 a second).
pub const RATE_HISTORY: usize = 240;

pub struct App {
    pub view: View,
    pub selected: usize,
    pub methods: Vec<LiveMethod>,
    pub opts: DemoOptions,
    pub snapshot: Snapshot,
    /// Counters at the last reset ('r').
    pub baseline: Snapshot,
    pub hooks: Vec<HookStatus>,
    pub hookset: HookSet,
    pub kernel: String,
    pub pid: u32,
    pub stats: Stats,
    pub log: VecDeque<LogEntry>,
    /// Lines scrolled back from the newest log entry.
    pub log_scroll: usize,
    /// Kernel time of the first event seen (the log's time origin).
    pub log_t0: Option<u64>,
    /// Freeze the display (space).
    pub paused: bool,
    /// Narration step of the selected method.
    pub step: usize,
    pub help: bool,
    pub quit: bool,
    pub rounds: u32,
    pub error: Option<String>,
    pub refresh: Duration,
    /// Elapsed time of the running method, from ticks.
    pub running_for: Duration,
    /// Threads whose rows can be deleted from the kernel (their method's
    /// result is frozen); the event loop hands them to the sampler.
    pub prune: Vec<u32>,
    /// CPU-copy bytes per second across everything traced, one value per
    /// sample, newest last (the sparkline).
    pub copy_rate: VecDeque<u64>,
    /// CPU-copy bytes per counter row, and when, at the previous sample.
    last_copies: Option<(
        std::collections::BTreeMap<zctrace_common::CounterKey, u64>,
        Instant,
    )>,
    /// Attach/run mode: rows per (process, method) instead of demo methods.
    pub trace_rows: Option<Vec<Row>>,
    /// What is traced (attach/run), and what became of it.
    pub target: String,
}

impl App {
    pub fn new(
        opts: DemoOptions,
        hooks: Vec<HookStatus>,
        hookset: HookSet,
        kernel: String,
        pid: u32,
    ) -> Self {
        let methods = opts
            .methods
            .iter()
            .map(|&method| LiveMethod {
                method,
                state: RunState::Waiting,
                record: None,
                finished_at: None,
                frozen: None,
                frozen_tid: 0,
            })
            .collect();
        App {
            view: View::Methods,
            selected: 0,
            methods,
            opts,
            snapshot: Snapshot::default(),
            baseline: Snapshot::default(),
            hooks,
            hookset,
            kernel,
            pid,
            stats: Stats::default(),
            log: VecDeque::with_capacity(LOG_CAPACITY),
            log_scroll: 0,
            log_t0: None,
            paused: false,
            step: 0,
            help: false,
            quit: false,
            rounds: 0,
            error: None,
            refresh: Duration::from_millis(250),
            running_for: Duration::ZERO,
            prune: Vec::new(),
            copy_rate: VecDeque::with_capacity(RATE_HISTORY),
            last_copies: None,
            trace_rows: None,
            target: String::new(),
        }
    }

    /// The dashboard for `attach` / `run`: rows are (process, method).
    pub fn for_trace(
        hooks: Vec<HookStatus>,
        hookset: HookSet,
        kernel: String,
        target: String,
    ) -> Self {
        let opts = DemoOptions {
            size: 0,
            chunk: 1,
            methods: Vec::new(),
            cold: false,
            pace: None,
            dir: std::env::temp_dir(),
        };
        let mut app = App::new(opts, hooks, hookset, kernel, std::process::id());
        app.trace_rows = Some(Vec::new());
        app.target = target;
        app
    }

    /// Number of selectable rows in the current mode.
    pub fn row_count(&self) -> usize {
        self.trace_rows
            .as_ref()
            .map_or(self.methods.len(), Vec::len)
    }

    /// Whether the event log is on screen (the kernel only fills the ring
    /// buffer when someone looks at it).
    pub fn wants_events(&self) -> bool {
        self.view == View::Log && !self.paused
    }

    pub fn selected_method(&self) -> Option<&LiveMethod> {
        self.methods.get(self.selected)
    }

    /// The measured result of one method: final once it ran, live while it
    /// runs, None before.
    pub fn result(&self, index: usize) -> Option<MethodResult> {
        let m = self.methods.get(index)?;
        let rec = m.record.as_ref()?;
        if m.settled() {
            return m.frozen.clone();
        }
        let mut rec = rec.clone();
        if m.state == RunState::Running {
            rec.elapsed = self.running_for;
        }
        let snap = self.snapshot.since(&self.baseline);
        let seen = snap.rows.keys().any(|k| k.tid == rec.sender_tid);
        let live = measure(&rec, &self.opts, &snap, self.hookset);
        // Until the newest run shows up in the counters (a fast run can
        // start and end between two samples), the last complete run's
        // numbers stand.
        if seen || m.frozen.is_none() {
            Some(live)
        } else {
            m.frozen.clone()
        }
    }

    /// Keeps the final numbers of every method whose counters are complete
    /// in the current snapshot (taken after it finished), and marks its
    /// threads' rows for deletion.
    /// Appends the CPU-copy rate since the previous sample, row by row: a
    /// new row counts in full, a row deleted in between (a finished demo
    /// run released) simply drops out.
    fn record_copy_rate(&mut self, taken: Instant) {
        use zctrace_common::counter as k;
        let now: std::collections::BTreeMap<_, u64> = self
            .snapshot
            .rows
            .iter()
            .map(|(key, c)| {
                (
                    *key,
                    [k::U2K_DERIVED, k::K2U_DERIVED, k::K2K_DERIVED]
                        .iter()
                        .map(|&i| c.v[i])
                        .sum(),
                )
            })
            .collect();
        if let Some((prev, at)) = &self.last_copies {
            let secs = taken.saturating_duration_since(*at).as_secs_f64();
            if secs > 0.0 {
                let moved: u64 = now
                    .iter()
                    .map(|(key, v)| v.saturating_sub(prev.get(key).copied().unwrap_or(0)))
                    .sum();
                if self.copy_rate.len() == RATE_HISTORY {
                    self.copy_rate.pop_front();
                }
                self.copy_rate.push_back((moved as f64 / secs) as u64);
            }
        }
        self.last_copies = Some((now, taken));
    }

    fn freeze_finished(&mut self, taken: Instant) {
        for i in 0..self.methods.len() {
            let m = &self.methods[i];
            let done = matches!(m.state, RunState::Done | RunState::Skipped(_));
            let Some(tid) = m.record.as_ref().map(|r| r.sender_tid) else {
                continue;
            };
            if !done || m.frozen_tid == tid || m.finished_at.is_none_or(|at| at > taken) {
                continue;
            }
            // Computed before this run counts as frozen: the live numbers.
            let snap = self.snapshot.since(&self.baseline);
            let result = m
                .record
                .as_ref()
                .map(|rec| measure(rec, &self.opts, &snap, self.hookset));
            let m = &mut self.methods[i];
            if let Some(rec) = &m.record {
                self.prune.push(rec.sender_tid);
                self.prune.extend(rec.receiver_tids.iter().copied());
            }
            m.frozen = result;
            m.frozen_tid = tid;
        }
    }

    /// Applies one event; returns whether the screen needs a redraw.
    pub fn update(&mut self, ev: AppEvent) -> bool {
        match ev {
            AppEvent::Key(k) => self.key(k),
            AppEvent::Resize => true,
            AppEvent::Sample {
                snapshot,
                stats,
                events,
                taken,
            } => {
                if self.paused {
                    return false;
                }
                self.snapshot = snapshot;
                self.stats = stats;
                for e in events {
                    self.push_log(&e);
                }
                self.record_copy_rate(taken);
                self.freeze_finished(taken);
                true
            }
            AppEvent::Rows(rows) => {
                if self.paused {
                    return false;
                }
                if self.selected >= rows.len() {
                    self.selected = rows.len().saturating_sub(1);
                }
                self.trace_rows = Some(rows);
                true
            }
            AppEvent::TargetsGone(why) => {
                self.target = why;
                true
            }
            AppEvent::Started {
                index,
                sender_tid,
                receiver_tids,
            } => {
                if let Some(m) = self.methods.get_mut(index) {
                    // A new run supersedes the last one: if its numbers were
                    // never kept (it started and ended between two samples),
                    // its rows are released now, or `--loop` would fill the map.
                    if let Some(old) = &m.record
                        && old.sender_tid != m.frozen_tid
                    {
                        self.prune.push(old.sender_tid);
                        self.prune.extend(old.receiver_tids.iter().copied());
                    }
                    m.state = RunState::Running;
                    m.finished_at = None;
                    m.record = Some(RunRecord {
                        method: m.method,
                        skipped: None,
                        elapsed: Duration::ZERO,
                        sender_tid,
                        receiver_tids,
                        zerocopy: None,
                    });
                    self.running_for = Duration::ZERO;
                }
                true
            }
            AppEvent::Finished { index, record, at } => {
                if let Some(m) = self.methods.get_mut(index) {
                    m.finished_at = Some(at);
                    m.state = match &record.skipped {
                        Some(why) => RunState::Skipped(why.clone()),
                        None => RunState::Done,
                    };
                    m.record = Some(record);
                }
                true
            }
            AppEvent::RoundDone(r) => {
                self.rounds += 1;
                if let Err(e) = r {
                    self.error = Some(e);
                }
                true
            }
            AppEvent::Tick(dt) => {
                let running = self.methods.iter().any(|m| m.state == RunState::Running);
                if running {
                    self.running_for += dt;
                }
                running && !self.paused
            }
        }
    }

    fn key(&mut self, k: KeyEvent) -> bool {
        if k.kind == KeyEventKind::Release {
            return false;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return true;
        }
        if self.help {
            // Any key closes the help overlay (q still quits).
            self.help = false;
            if k.code == KeyCode::Char('q') {
                self.quit = true;
            }
            return true;
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('?') | KeyCode::Char('h') => self.help = true,
            KeyCode::Tab => self.view = next_view(self.view, 1),
            KeyCode::BackTab => self.view = next_view(self.view, -1),
            KeyCode::Char(c @ '1'..='4') => {
                self.view = View::ALL[(c as u8 - b'1') as usize];
            }
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::PageUp => self.scroll(10),
            KeyCode::PageDown => self.scroll(-10),
            KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Char('n') | KeyCode::Right => self.step += 1,
            KeyCode::Char('p') | KeyCode::Left => self.step = self.step.saturating_sub(1),
            KeyCode::Char('r') => {
                self.baseline = self.snapshot.clone();
                for m in &mut self.methods {
                    m.frozen = None;
                    m.frozen_tid = 0;
                }
            }
            _ => return false,
        }
        true
    }

    fn move_selection(&mut self, d: i32) {
        if self.view == View::Log {
            self.scroll(-d);
            return;
        }
        let n = self.row_count();
        if n == 0 {
            return;
        }
        self.selected = (self.selected as i64 + i64::from(d)).rem_euclid(n as i64) as usize;
        self.step = 0;
    }

    fn scroll(&mut self, d: i32) {
        let max = self.log.len().saturating_sub(1);
        self.log_scroll = (self.log_scroll as i64 + i64::from(d)).clamp(0, max as i64) as usize;
    }

    fn push_log(&mut self, e: &Event) {
        let what = match e.kind {
            event_kind::SYSCALL => Call::from_u32(e.call)
                .unwrap_or(Call::Other)
                .name()
                .to_owned(),
            event_kind::FORK => format!("fork -> {}", e.ret),
            event_kind::PROCESS_EXIT => "exit".into(),
            _ => return,
        };
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        if e.ts_ns != 0 && self.log_t0.is_none() {
            self.log_t0 = Some(e.ts_ns);
        }
        self.log.push_back(LogEntry {
            ts_ns: e.ts_ns,
            tgid: e.tgid,
            tid: e.tid,
            comm: e.comm_str().to_owned(),
            what,
            method: Method::from_u32(e.method).unwrap_or(Method::Other),
            ret: if e.kind == event_kind::SYSCALL {
                e.ret
            } else {
                0
            },
            fd: FdKind::from_u32(e.in_kind),
            dur_ns: e.dur_ns,
        });
    }
}

fn next_view(v: View, d: i32) -> View {
    let i = View::ALL.iter().position(|x| *x == v).unwrap_or(0) as i32;
    View::ALL[(i + d).rem_euclid(View::ALL.len() as i32) as usize]
}

#[cfg(test)]
pub mod tests {
    use ratatui::crossterm::event::KeyEventState;
    use zctrace_common::{CounterKey, Counters, counter};

    use super::*;

    pub fn opts() -> DemoOptions {
        DemoOptions {
            size: 16 << 20,
            chunk: 64 << 10,
            methods: vec![Method::ReadWrite, Method::Sendfile],
            cold: false,
            pace: None,
            dir: std::env::temp_dir(),
        }
    }

    pub fn app() -> App {
        App::new(
            opts(),
            Vec::new(),
            HookSet::default(),
            "6.18.0-test".into(),
            42,
        )
    }

    fn key(c: KeyCode) -> AppEvent {
        AppEvent::Key(KeyEvent {
            code: c,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        })
    }

    /// An app whose read-write ran on tid 7 and moved 16 MiB twice.
    pub fn app_with_read_write() -> App {
        let mut a = app();
        a.update(AppEvent::Started {
            index: 0,
            sender_tid: 7,
            receiver_tids: vec![8],
        });
        let mut c = Counters::ZERO;
        c.v[counter::SYSCALLS] = 512;
        c.v[counter::K2U_DERIVED] = 16 << 20;
        c.v[counter::U2K_DERIVED] = 16 << 20;
        let mut snapshot = Snapshot::default();
        snapshot.rows.insert(
            CounterKey {
                tgid: 42,
                tid: 7,
                method: Method::ReadWrite as u32,
                call: 1,
            },
            c,
        );
        a.update(AppEvent::Sample {
            snapshot,
            stats: Stats::default(),
            events: Vec::new(),
            taken: Instant::now(),
        });
        a
    }

    #[test]
    fn keys_switch_views_select_and_quit() {
        let mut a = app();
        assert!(a.update(key(KeyCode::Tab)));
        assert_eq!(a.view, View::Diagram);
        a.update(key(KeyCode::Char('4')));
        assert_eq!(a.view, View::Log);
        assert!(a.wants_events());
        a.update(key(KeyCode::Char('1')));
        a.update(key(KeyCode::Char('j')));
        assert_eq!(a.selected, 1);
        a.update(key(KeyCode::Char('j')));
        assert_eq!(a.selected, 0, "wraps around");
        a.update(key(KeyCode::Char('?')));
        assert!(a.help);
        a.update(key(KeyCode::Char('x')));
        assert!(!a.help && !a.quit);
        a.update(key(KeyCode::Char('q')));
        assert!(a.quit);
    }

    #[test]
    fn live_numbers_come_from_the_snapshot_and_reset_uses_a_baseline() {
        let mut a = app_with_read_write();
        let r = a.result(0).expect("running method has a live result");
        assert_eq!(r.sender.expect("sender").syscalls, 512);
        assert!(a.result(1).is_none(), "not started yet");
        a.update(key(KeyCode::Char('r')));
        let r = a.result(0).expect("result");
        assert_eq!(
            r.sender.expect("sender").syscalls,
            0,
            "reset subtracts the baseline"
        );
    }

    #[test]
    fn finished_methods_keep_their_numbers_and_release_their_rows() {
        let mut a = app_with_read_write();
        let record = a.methods[0].record.clone().expect("record");
        let before = Instant::now();
        a.update(AppEvent::Finished {
            index: 0,
            record,
            at: Instant::now(),
        });
        // A sample read before the method ended does not freeze it.
        let snap = a.snapshot.clone();
        a.update(AppEvent::Sample {
            snapshot: snap.clone(),
            stats: Stats::default(),
            events: Vec::new(),
            taken: before,
        });
        assert!(a.methods[0].frozen.is_none() && a.prune.is_empty());
        assert!(!a.methods[0].settled(), "its final sample is not in yet");
        a.update(AppEvent::Sample {
            snapshot: snap,
            stats: Stats::default(),
            events: Vec::new(),
            taken: Instant::now(),
        });
        assert!(a.methods[0].settled());
        assert_eq!(a.prune, vec![7, 8], "sender and receiver rows can go");
        // The kernel's rows are deleted: the numbers stay.
        a.update(AppEvent::Sample {
            snapshot: Snapshot::default(),
            stats: Stats::default(),
            events: Vec::new(),
            taken: Instant::now(),
        });
        let r = a.result(0).expect("result");
        assert_eq!(r.sender.expect("sender").syscalls, 512);
    }

    #[test]
    fn the_copy_rate_is_bytes_per_second_and_survives_deleted_rows() {
        let mut a = app();
        let t0 = Instant::now();
        let snap = |bytes: u64| {
            let mut s = Snapshot::default();
            let mut c = Counters::ZERO;
            c.v[counter::K2U_DERIVED] = bytes;
            s.rows.insert(
                CounterKey {
                    tgid: 1,
                    tid: 1,
                    method: 1,
                    call: 1,
                },
                c,
            );
            s
        };
        let sample = |s, t| AppEvent::Sample {
            snapshot: s,
            stats: Stats::default(),
            events: Vec::new(),
            taken: t,
        };
        a.update(sample(snap(0), t0));
        a.update(sample(snap(1 << 20), t0 + Duration::from_millis(500)));
        assert_eq!(
            a.copy_rate.back(),
            Some(&(2 << 20)),
            "1 MiB in half a second"
        );
        // Its row deleted (a finished run released), a new thread copying:
        // only the new thread's bytes count, nothing goes negative.
        let mut s2 = Snapshot::default();
        let mut c = Counters::ZERO;
        c.v[counter::U2K_DERIVED] = 1 << 20;
        s2.rows.insert(
            CounterKey {
                tgid: 1,
                tid: 2,
                method: 1,
                call: 4,
            },
            c,
        );
        a.update(sample(s2, t0 + Duration::from_millis(1000)));
        assert_eq!(a.copy_rate.back(), Some(&(2 << 20)));
    }

    #[test]
    fn pause_freezes_samples_and_the_log_is_bounded() {
        let mut a = app();
        a.update(key(KeyCode::Char(' ')));
        let changed = a.update(AppEvent::Sample {
            snapshot: Snapshot::default(),
            stats: Stats {
                events_dropped: 9,
                ..Stats::default()
            },
            events: Vec::new(),
            taken: Instant::now(),
        });
        assert!(!changed);
        assert_eq!(a.stats.events_dropped, 0);
        a.update(key(KeyCode::Char(' ')));
        let ev = Event {
            ts_ns: 1,
            dur_ns: 2,
            ret: 4096,
            tgid: 42,
            tid: 7,
            kind: event_kind::SYSCALL,
            method: Method::ReadWrite as u32,
            call: Call::Read as u32,
            in_kind: FdKind::File as u32,
            comm: *b"zctrace\0\0\0\0\0\0\0\0\0",
        };
        a.update(AppEvent::Sample {
            snapshot: Snapshot::default(),
            stats: Stats::default(),
            events: vec![ev; LOG_CAPACITY + 10],
            taken: Instant::now(),
        });
        assert_eq!(a.log.len(), LOG_CAPACITY);
        assert_eq!(a.log[0].what, "read");
        assert_eq!(a.log[0].comm, "zctrace");
    }

    #[test]
    fn trace_rows_replace_demo_methods_and_selection_stays_in_range() {
        let mut a = App::for_trace(
            Vec::new(),
            HookSet::default(),
            "k".into(),
            "attached to 1".into(),
        );
        assert_eq!(a.row_count(), 0);
        let m = crate::model::Measured::from_counters(&Counters::ZERO, HookSet::default());
        let row = |pid| Row {
            pid,
            comm: "cat".into(),
            exited: false,
            method: Method::ReadWrite,
            measured: m,
        };
        a.update(AppEvent::Rows(vec![row(1), row(2), row(3)]));
        a.selected = 2;
        a.update(AppEvent::Rows(vec![row(1)]));
        assert_eq!(a.selected, 0);
        a.update(AppEvent::TargetsGone(
            "every traced process has exited".into(),
        ));
        assert!(a.target.contains("exited"));
    }
}
