//! Dashboard state. `update` folds one event into it; rendering (src/ui)
//! only reads it. No I/O here, and no counting: the numbers arrive as
//! samples, already converted (src/sample.rs).

use std::{collections::VecDeque, time::Duration};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use zctrace_common::{Call, Event, FdKind, Method, event_kind};

pub use crate::demo::track::RunState;
use crate::{
    demo::{
        DemoOptions, MethodResult,
        track::{DemoMethod, DemoView},
    },
    probe::{HookStatus, Stats},
    sample::{Command, Sample},
    top::{SortKey, TopProcess, TopView},
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

/// One line of the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub what: String,
    pub method: Method,
    /// The call's raw result (0 for forks and exits).
    pub ret: i64,
    /// Whether a non-negative `ret` is a byte count (a read's, a send's),
    /// not an address (mmap) or a count of something else.
    pub counts_bytes: bool,
    pub fd: FdKind,
    pub dur_ns: u64,
}

/// Everything that can change the dashboard.
#[derive(Debug)]
pub enum AppEvent {
    Key(KeyEvent),
    Resize,
    /// The sampler's numbers for one period.
    Sample(Box<Sample>),
    /// Attach/run mode: the traced programs are gone (the reason).
    TargetsGone(String),
}

pub const LOG_CAPACITY: usize = 500;
/// Samples the copy-rate sparkline remembers (a minute at 4 a second).
pub const RATE_HISTORY: usize = 240;

/// The demo's methods, as the sampler last reported them.
#[derive(Debug)]
pub struct DemoMode {
    pub opts: DemoOptions,
    pub view: DemoView,
}

/// Attach/run: rows per (process, method).
#[derive(Debug)]
pub struct TraceMode {
    /// What is traced, and what became of it.
    pub target: String,
    pub rows: Vec<Row>,
}

/// top: every process, ranked, sorted and filtered as the user asks.
#[derive(Debug)]
pub struct TopMode {
    pub target: String,
    pub view: TopView,
    pub sort: SortKey,
    /// Command-name filter (`/`), and whether it is being typed.
    pub filter: String,
    pub editing: bool,
    /// Only processes using this method (`m`).
    pub method: Option<Method>,
    /// The process the user selected, kept across re-rankings (until then
    /// the selection stays on the top row).
    pub pid: Option<u32>,
}

impl TopMode {
    /// The processes shown, in order.
    pub fn list(&self) -> Vec<&TopProcess> {
        self.view
            .processes
            .iter()
            .filter(|p| crate::top::keep(p, &self.filter, self.method))
            .collect()
    }

    /// The methods the processes use, for the `m` filter's cycle.
    fn methods(&self) -> Vec<Method> {
        let mut v: Vec<Method> = Vec::new();
        for p in &self.view.processes {
            for m in &p.methods {
                if !v.contains(m) {
                    v.push(*m);
                }
            }
        }
        v.sort_by_key(|m| m.name());
        v
    }
}

#[derive(Debug)]
pub enum Mode {
    Demo(DemoMode),
    Trace(TraceMode),
    Top(TopMode),
}

pub struct App {
    pub mode: Mode,
    pub view: View,
    pub selected: usize,
    pub hooks: Vec<HookStatus>,
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
    pub refresh: Duration,
    /// CPU-copy bytes per second across everything traced, one value per
    /// sample, newest last (the sparkline).
    pub copy_rate: VecDeque<u64>,
    /// Commands for the sampler, taken by the event loop after each update.
    outbox: Vec<Command>,
}

impl App {
    fn with_mode(mode: Mode, hooks: Vec<HookStatus>, kernel: String, pid: u32) -> Self {
        App {
            mode,
            view: View::Methods,
            selected: 0,
            hooks,
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
            refresh: crate::sample::PERIOD,
            copy_rate: VecDeque::with_capacity(RATE_HISTORY),
            outbox: Vec::new(),
        }
    }

    /// The demo's dashboard: its methods wait until the sampler reports.
    pub fn new(opts: DemoOptions, hooks: Vec<HookStatus>, kernel: String, pid: u32) -> Self {
        let view = DemoView {
            methods: opts
                .methods
                .iter()
                .map(|&method| DemoMethod {
                    method,
                    state: RunState::Waiting,
                    result: None,
                })
                .collect(),
            ..DemoView::default()
        };
        Self::with_mode(Mode::Demo(DemoMode { opts, view }), hooks, kernel, pid)
    }

    /// The dashboard for `attach` / `run`: rows are (process, method).
    pub fn for_trace(hooks: Vec<HookStatus>, kernel: String, target: String) -> Self {
        let mode = Mode::Trace(TraceMode {
            target,
            rows: Vec::new(),
        });
        Self::with_mode(mode, hooks, kernel, std::process::id())
    }

    /// `zctrace top`'s dashboard: every process, ranked; rates over
    /// `refresh`.
    pub fn for_top(
        hooks: Vec<HookStatus>,
        kernel: String,
        target: String,
        refresh: Duration,
    ) -> Self {
        let mode = Mode::Top(TopMode {
            target,
            view: TopView::default(),
            sort: SortKey::default(),
            filter: String::new(),
            editing: false,
            method: None,
            pid: None,
        });
        let mut app = Self::with_mode(mode, hooks, kernel, std::process::id());
        app.refresh = refresh;
        app
    }

    /// The demo's methods (none in attach/run mode).
    pub fn methods(&self) -> &[DemoMethod] {
        match &self.mode {
            Mode::Demo(d) => &d.view.methods,
            Mode::Trace(_) | Mode::Top(_) => &[],
        }
    }

    pub fn demo_opts(&self) -> Option<&DemoOptions> {
        match &self.mode {
            Mode::Demo(d) => Some(&d.opts),
            Mode::Trace(_) | Mode::Top(_) => None,
        }
    }

    /// Attach/run mode's rows.
    pub fn trace_rows(&self) -> Option<&[Row]> {
        match &self.mode {
            Mode::Trace(t) => Some(&t.rows),
            Mode::Demo(_) | Mode::Top(_) => None,
        }
    }

    /// top's state.
    pub fn top(&self) -> Option<&TopMode> {
        match &self.mode {
            Mode::Top(t) => Some(t),
            Mode::Demo(_) | Mode::Trace(_) => None,
        }
    }

    /// The report row whose copy path is drawn for selectable row
    /// `index`: attach/run's row, top's process's main row (None in the
    /// demo, which draws its methods).
    pub fn path_row(&self, index: usize) -> Option<&Row> {
        match &self.mode {
            Mode::Trace(t) => t.rows.get(index),
            Mode::Top(t) => t.list().get(index).and_then(|p| p.main_row()),
            Mode::Demo(_) => None,
        }
    }

    /// What is traced (attach/run, top), empty in the demo.
    pub fn target(&self) -> &str {
        match &self.mode {
            Mode::Trace(t) => &t.target,
            Mode::Top(t) => &t.target,
            Mode::Demo(_) => "",
        }
    }

    /// A demo failure to show.
    pub fn error(&self) -> Option<&str> {
        match &self.mode {
            Mode::Demo(d) => d.view.error.as_deref(),
            Mode::Trace(_) | Mode::Top(_) => None,
        }
    }

    /// Number of selectable rows in the current mode.
    pub fn row_count(&self) -> usize {
        match &self.mode {
            Mode::Demo(d) => d.view.methods.len(),
            Mode::Trace(t) => t.rows.len(),
            Mode::Top(t) => t.list().len(),
        }
    }

    /// Selects top's process `pid` where the list now has it (else the
    /// row in range nearest the old one).
    fn follow_selected_pid(&mut self) {
        if let Mode::Top(t) = &self.mode
            && let Some(pid) = t.pid
        {
            // A process gone (or filtered out) leaves the selection where
            // it was.
            if let Some(i) = t.list().iter().position(|p| p.pid == pid) {
                self.selected = i;
            }
        }
        let n = self.row_count();
        if self.selected >= n {
            self.selected = n.saturating_sub(1);
        }
    }

    fn remember_selected_pid(&mut self) {
        let selected = self.selected;
        if let Mode::Top(t) = &mut self.mode {
            t.pid = t.list().get(selected).map(|p| p.pid);
        }
    }

    /// Whether the event log is on screen (the kernel only fills the ring
    /// buffer when someone looks at it).
    pub fn wants_events(&self) -> bool {
        self.view == View::Log && !self.paused
    }

    pub fn selected_method(&self) -> Option<&DemoMethod> {
        self.methods().get(self.selected)
    }

    /// The measured result of one demo method: final once it ran, live
    /// while it runs, None before.
    pub fn result(&self, index: usize) -> Option<&MethodResult> {
        self.methods().get(index)?.result.as_ref()
    }

    /// Commands for the sampler that the last updates produced.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.outbox)
    }

    /// Applies one event; returns whether the screen needs a redraw.
    pub fn update(&mut self, ev: AppEvent) -> bool {
        match ev {
            AppEvent::Key(k) => self.key(k),
            AppEvent::Resize => true,
            AppEvent::Sample(s) => {
                if self.paused {
                    return false;
                }
                let s = *s;
                self.stats = s.stats;
                for e in &s.events {
                    self.push_log(e);
                }
                if let Some(rate) = s.copy_rate {
                    if self.copy_rate.len() == RATE_HISTORY {
                        self.copy_rate.pop_front();
                    }
                    self.copy_rate.push_back(rate);
                }
                match &mut self.mode {
                    Mode::Demo(d) => {
                        if let Some(view) = s.demo {
                            d.view = view;
                        }
                    }
                    Mode::Trace(t) => t.rows = s.processes,
                    Mode::Top(t) => {
                        if let Some(view) = s.top {
                            t.view = view;
                            crate::top::rank(&mut t.view.processes, t.sort);
                        }
                    }
                }
                self.follow_selected_pid();
                true
            }
            AppEvent::TargetsGone(why) => {
                match &mut self.mode {
                    Mode::Trace(t) => t.target = why,
                    // top ends only with --duration: then it closes.
                    Mode::Top(_) => self.quit = true,
                    Mode::Demo(_) => {}
                }
                true
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
        if let Mode::Top(t) = &mut self.mode {
            if t.editing {
                match k.code {
                    KeyCode::Enter => t.editing = false,
                    KeyCode::Esc => {
                        t.editing = false;
                        t.filter.clear();
                    }
                    KeyCode::Backspace => {
                        t.filter.pop();
                    }
                    KeyCode::Char(c) if !c.is_control() && t.filter.len() < 32 => t.filter.push(c),
                    _ => return false,
                }
                self.follow_selected_pid();
                return true;
            }
            let handled = match k.code {
                KeyCode::Char('s') | KeyCode::Char('S') => {
                    t.sort = t
                        .sort
                        .next(if k.code == KeyCode::Char('s') { 1 } else { -1 });
                    crate::top::rank(&mut t.view.processes, t.sort);
                    true
                }
                KeyCode::Char('/') => {
                    t.editing = true;
                    true
                }
                KeyCode::Char('m') => {
                    let all = t.methods();
                    t.method = match t.method.and_then(|m| all.iter().position(|x| *x == m)) {
                        None => all.first().copied(),
                        Some(i) => all.get(i + 1).copied(),
                    };
                    true
                }
                // Esc clears a filter before it quits.
                KeyCode::Esc if !t.filter.is_empty() || t.method.is_some() => {
                    t.filter.clear();
                    t.method = None;
                    true
                }
                _ => false,
            };
            if handled {
                self.follow_selected_pid();
                return true;
            }
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
            KeyCode::Char('r') => self.outbox.push(Command::Reset),
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
        self.remember_selected_pid();
    }

    fn scroll(&mut self, d: i32) {
        let max = self.log.len().saturating_sub(1);
        self.log_scroll = (self.log_scroll as i64 + i64::from(d)).clamp(0, max as i64) as usize;
    }

    fn push_log(&mut self, e: &Event) {
        let call = Call::from_u32(e.call).unwrap_or(Call::Other);
        let what = match e.kind {
            event_kind::SYSCALL => call.name().to_owned(),
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
            counts_bytes: e.kind == event_kind::SYSCALL && call.returns_bytes(),
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
    use std::time::Instant;

    use ratatui::crossterm::event::KeyEventState;
    use zctrace_common::Counters;

    use super::*;
    use crate::{
        demo::track::{DemoTracker, tests as track_tests},
        model::HookSet,
    };

    pub use crate::demo::track::tests::opts;

    pub fn app() -> App {
        App::new(opts(), Vec::new(), "6.18.0-test".into(), 42)
    }

    /// A key press, as the input thread delivers it.
    pub fn key(c: KeyCode) -> AppEvent {
        AppEvent::Key(KeyEvent {
            code: c,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        })
    }

    /// A sample with these parts and nothing else.
    pub fn sample(demo: Option<DemoView>, processes: Vec<Row>, events: Vec<Event>) -> AppEvent {
        AppEvent::Sample(Box::new(Sample {
            taken: Instant::now(),
            stats: Stats::default(),
            events,
            copy_rate: None,
            processes,
            demo,
            top: None,
        }))
    }

    /// An app whose read-write runs on tid 7 and moved 16 MiB twice, as
    /// the sampler's tracker reports it.
    pub fn app_with_read_write() -> App {
        let mut a = app();
        let mut t = DemoTracker::new(opts());
        t.on(track_tests::started(0, 7));
        let view = t.sample(&track_tests::snap(), HookSet::default(), Instant::now());
        a.update(sample(Some(view), Vec::new(), Vec::new()));
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
    fn samples_carry_the_numbers_and_reset_is_a_command_for_the_sampler() {
        let mut a = app_with_read_write();
        let r = a.result(0).expect("running method has a live result");
        assert_eq!(r.sender.expect("sender").syscalls, 512);
        assert_eq!(a.methods()[0].state, RunState::Running);
        assert!(a.result(1).is_none(), "not started yet");
        assert!(a.take_commands().is_empty());
        a.update(key(KeyCode::Char('r')));
        assert!(matches!(a.take_commands()[..], [Command::Reset]));
        assert!(a.take_commands().is_empty(), "taken once");
    }

    #[test]
    fn pause_freezes_samples_and_the_log_is_bounded() {
        let mut a = app();
        a.update(key(KeyCode::Char(' ')));
        let changed = a.update(AppEvent::Sample(Box::new(Sample {
            taken: Instant::now(),
            stats: Stats {
                events_dropped: 9,
                ..Stats::default()
            },
            events: Vec::new(),
            copy_rate: Some(5),
            processes: Vec::new(),
            demo: None,
            top: None,
        })));
        assert!(!changed);
        assert_eq!(a.stats.events_dropped, 0);
        assert!(a.copy_rate.is_empty());
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
        a.update(sample(None, Vec::new(), vec![ev; LOG_CAPACITY + 10]));
        assert_eq!(a.log.len(), LOG_CAPACITY);
        assert_eq!(a.log[0].what, "read");
        assert_eq!(a.log[0].comm, "zctrace");
    }

    #[test]
    fn trace_rows_replace_demo_methods_and_selection_stays_in_range() {
        let mut a = App::for_trace(Vec::new(), "k".into(), "attached to 1".into());
        assert_eq!(a.row_count(), 0);
        assert!(a.methods().is_empty());
        let m = crate::model::Measured::from_counters(&Counters::ZERO, HookSet::default());
        let row = |pid| Row {
            pid,
            tid: None,
            comm: "cat".into(),
            exited: false,
            method: Method::ReadWrite,
            source: zctrace_common::FdKind::File,
            destination: zctrace_common::FdKind::Tcp,
            measured: m,
        };
        a.update(sample(None, vec![row(1), row(2), row(3)], Vec::new()));
        a.selected = 2;
        a.update(sample(None, vec![row(1)], Vec::new()));
        assert_eq!(a.selected, 0);
        a.update(AppEvent::TargetsGone(
            "every traced process has exited".into(),
        ));
        assert!(a.target().contains("exited"));
    }
}
