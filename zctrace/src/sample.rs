//! The one sampler: kernel counters in, model-level samples out.
//!
//! A [`Sampler`] owns the probes. Once per period it reads the counter
//! rows and health counters and turns them into a [`Sample`]: the rows per
//! process and method (attach, run), the demo's per-method results, the
//! CPU-copy rate, the loss statistics and the new ring-buffer events. Every
//! consumer (the dashboard, the text and JSON reports) gets that same
//! sample; none reads the kernel or converts counters itself. Commands
//! ([`Command`]) come down one typed channel: the event log on or off, a
//! reset, the demo runner's progress. Releasing the rows of finished demo
//! runs is decided here, where the counters are, not by a consumer.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use zctrace_common::{CounterKey, Event, counter};

use crate::{
    demo::{
        DemoOptions,
        track::{DemoEvent, DemoTracker, DemoView},
    },
    metrics::Exporter,
    model::{HookSet, Snapshot},
    probe::{ProbeError, Probes, Stats},
    top::{Ranker, TopView},
    trace::{self, Names, Row},
};

/// How often the dashboard's sampler reads the counters.
pub const PERIOD: Duration = Duration::from_millis(250);
/// At most this many ring-buffer events per sample reach a consumer.
pub const EVENTS_PER_SAMPLE: usize = 2_000;

/// What a consumer tells the sampler.
#[derive(Debug)]
pub enum Command {
    /// Fill the event ring buffer (only while someone looks at the log).
    Events(bool),
    /// Show counts from now on (the kernel's counters are untouched).
    Reset,
    /// The demo runner's progress.
    Demo(DemoEvent),
}

/// One period's numbers, as every front end shows them.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When the counters were read.
    pub taken: Instant,
    /// The probes' health and losses (drops, full maps, unattributed).
    pub stats: Stats,
    /// Ring-buffer events since the last sample (only while enabled).
    pub events: Vec<Event>,
    /// CPU-copy bytes per second across everything traced, since the
    /// previous sample (None for the first).
    pub copy_rate: Option<u64>,
    /// Per (process, method) rows (attach and run).
    pub processes: Vec<Row>,
    /// The demo's methods (demo mode).
    pub demo: Option<DemoView>,
    /// Every process ranked (top).
    pub top: Option<TopView>,
}

/// What to sample.
#[derive(Clone, Debug, Default)]
pub struct SamplerOptions {
    /// Leave this process's rows out (zctrace itself under `run`).
    pub hide: Option<u32>,
    /// Build the per-process rows.
    pub processes: bool,
    /// Track the demo's methods.
    pub demo: Option<DemoOptions>,
    /// What becomes of the rows of processes that exit.
    pub retire: Retire,
    /// Rank every process (top).
    pub top: bool,
    /// Feed the Prometheus exporter (`--metrics`).
    pub metrics: Option<Arc<Exporter>>,
}

/// The kernel's rows of a process that has exited are released (so a
/// long trace of a busy machine never fills the row map, and a reused PID
/// starts afresh); its numbers stay in userspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Retire {
    /// Rows stay in the kernel (the demo recycles its own).
    #[default]
    Never,
    /// Kept per process, as they were (attach, run: reports list every
    /// process, `*` once exited).
    Keep,
    /// Listed once more, then summed into the exited totals (top).
    Aggregate,
}

pub struct Sampler {
    probes: Probes,
    hooks: HookSet,
    hide: Option<u32>,
    processes: bool,
    ring: Option<RingBuf<MapData>>,
    names: Names,
    events_on: bool,
    /// Events drained between samples (see `poll_events`).
    pending: Vec<Event>,
    /// Counters at the last reset.
    baseline: Snapshot,
    copy_rate: CopyRate,
    demo: Option<DemoTracker>,
    retire: Retire,
    /// Rows of exited processes, released from the kernel (Retire::Keep).
    retired: Snapshot,
    ranker: Option<Ranker>,
    metrics: Option<Arc<Exporter>>,
    /// The kernel's count of dropped events at the last sample.
    events_dropped: u64,
}

impl Sampler {
    pub fn new(mut probes: Probes, opts: SamplerOptions) -> Self {
        let ring = probes.take_events().ok();
        let hooks = probes.hook_set();
        Sampler {
            hooks,
            probes,
            hide: opts.hide,
            processes: opts.processes,
            ring,
            names: Names::new(hooks.has(crate::hooks::Hook::TaskRename)),
            events_dropped: 0,
            events_on: false,
            pending: Vec::new(),
            baseline: Snapshot::default(),
            copy_rate: CopyRate::default(),
            demo: opts.demo.map(DemoTracker::new),
            retire: opts.retire,
            retired: Snapshot::default(),
            ranker: opts.top.then(|| Ranker::new(Instant::now())),
            metrics: opts.metrics,
        }
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// Whether it feeds a metrics endpoint.
    pub fn exports(&self) -> bool {
        self.metrics.is_some()
    }

    pub fn probes_mut(&mut self) -> &mut Probes {
        &mut self.probes
    }

    pub fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Events(on) => {
                if on != self.events_on && self.probes.set_events(on).is_ok() {
                    self.events_on = on;
                }
            }
            Command::Reset => {
                if let Ok(mut snap) = self.probes.snapshot() {
                    snap.add(&self.retired);
                    self.baseline = snap;
                }
                if let Some(r) = &mut self.ranker {
                    r.reset(Instant::now());
                }
                if let Some(d) = &mut self.demo {
                    d.reset();
                }
            }
            Command::Demo(ev) => {
                if let Some(d) = &mut self.demo {
                    d.on(ev);
                }
            }
        }
    }

    /// Drains the event ring buffer, learning the names of processes that
    /// exit (their exit events carry them; /proc forgets them), and keeps
    /// the events for the next sample while the event log is on. Cheap:
    /// call it often between samples.
    pub fn poll_events(&mut self) {
        let room = if self.events_on {
            EVENTS_PER_SAMPLE.saturating_sub(self.pending.len())
        } else {
            0
        };
        if let Some(r) = self.ring.as_mut() {
            let new = self.names.drain(r, room);
            self.pending.extend(new);
        }
    }

    /// Reads the kernel once and builds the sample.
    pub fn sample(&mut self) -> Result<Sample, ProbeError> {
        // Events first: exit events carry the names of processes that are
        // gone by the time their rows are listed.
        self.poll_events();
        self.names.next_sample();
        let events = std::mem::take(&mut self.pending);
        let taken = Instant::now();
        let (mut raw, stats) = self.probes.snapshot_and_stats()?;
        if stats.events_dropped != self.events_dropped {
            // An exit, exec or rename may be among the drops (the count
            // starts again at a reset: any change is a reason to look).
            self.events_dropped = stats.events_dropped;
            self.names.lost_events();
        }
        // Processes that have exited: the rows listed now are final.
        let dead = match self.retire {
            Retire::Never => Vec::new(),
            Retire::Keep | Retire::Aggregate => self.exited(&raw),
        };
        // Processes with rows in the kernel (for the metrics' gauge).
        let mut live: Vec<u32> = raw
            .rows
            .keys()
            .map(|k| k.tgid)
            .filter(|&t| t != 0)
            .collect();
        live.dedup();
        raw.add(&self.retired);
        raw.rows.retain(|k, _| Some(k.tgid) != self.hide);
        // What the fallback rows shown hold: kept rows of exited processes
        // included, zctrace's own (hidden under `run`) not.
        let mut stats = stats;
        stats.fallback = crate::model::ledger::fallback_counts(&raw);
        if let Some(m) = &self.metrics {
            let cost = taken.elapsed().as_secs_f64();
            m.update(&raw, &mut self.names, self.hooks, &stats, cost, live.len());
        }
        // The copy-rate history is the attach and demo dashboards' (top
        // ranks by each process's own rates): a map of every row less.
        let copy_rate = if self.ranker.is_none() {
            self.copy_rate.next(&raw, taken)
        } else {
            None
        };
        raw.subtract(&self.baseline);
        let snap = raw;
        let mut processes = if self.processes {
            trace::rows(&snap, self.hooks, &mut self.names)
        } else {
            Vec::new()
        };
        let top = self
            .ranker
            .as_mut()
            // top reads its processes from the ranking alone: the rows
            // move there rather than being copied.
            .map(|r| r.update(std::mem::take(&mut processes), &dead, taken));
        let demo = self
            .demo
            .as_mut()
            .map(|d| d.sample(&snap, self.hooks, taken));
        if let Some(d) = &mut self.demo {
            let doomed = d.take_release();
            if !doomed.is_empty() {
                self.probes.remove_rows(&doomed)?;
            }
        }
        if !dead.is_empty() {
            let gone = self.probes.remove_process_rows(&dead)?;
            if self.retire == Retire::Keep {
                for (k, c) in &gone {
                    self.retired.rows.entry_or_default(*k).add(c);
                }
            } else {
                // Summed by the ranker; the baseline and the names of
                // these processes are of no more use (a reused PID is a
                // new process).
                self.baseline.rows.retain(|k, _| !dead.contains(&k.tgid));
                for pid in &dead {
                    self.names.forget(*pid);
                }
            }
        }
        Ok(Sample {
            taken,
            stats,
            events,
            copy_rate,
            processes,
            demo,
            top,
        })
    }

    /// The processes with rows in the kernel that have exited.
    fn exited(&mut self, raw: &Snapshot) -> Vec<u32> {
        let mut pids: Vec<u32> = raw.rows.keys().map(|k| k.tgid).collect();
        pids.dedup();
        pids.retain(|&p| p != 0 && self.names.has_exited(p));
        pids
    }
}

/// The CPU-copy rate between samples, row by row: a new row counts in
/// full, a row released in between simply drops out (never negative).
#[derive(Debug, Default)]
struct CopyRate {
    /// CPU-copy bytes per row at the previous sample, and when.
    last: Option<(BTreeMap<CounterKey, u64>, Instant)>,
}

impl CopyRate {
    fn next(&mut self, snap: &Snapshot, taken: Instant) -> Option<u64> {
        let now: BTreeMap<CounterKey, u64> = snap
            .rows
            .iter()
            .map(|(key, c)| {
                let copied = [
                    counter::U2K_DERIVED,
                    counter::K2U_DERIVED,
                    counter::K2K_DERIVED,
                ]
                .iter()
                .map(|&i| c.v[i])
                .sum();
                (*key, copied)
            })
            .collect();
        let rate = self.last.as_ref().and_then(|(prev, at)| {
            let secs = taken.saturating_duration_since(*at).as_secs_f64();
            (secs > 0.0).then(|| {
                let moved: u64 = now
                    .iter()
                    .map(|(k, v)| v.saturating_sub(prev.get(k).copied().unwrap_or(0)))
                    .sum();
                (moved as f64 / secs) as u64
            })
        });
        self.last = Some((now, taken));
        rate
    }
}

/// Runs the sampler on its own thread: commands as they come, a sample
/// every `period`. Ends when `deliver` refuses a sample or the stop flag is
/// set; drops (detaches) the probes as it ends.
pub fn spawn(
    mut sampler: Sampler,
    period: Duration,
    commands: Receiver<Command>,
    stop: std::sync::Arc<AtomicBool>,
    mut deliver: impl FnMut(Sample) -> bool + Send + 'static,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("zctrace-sampler".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let wait = next.saturating_duration_since(Instant::now());
                match commands.recv_timeout(wait) {
                    Ok(cmd) => {
                        sampler.command(cmd);
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    // Nobody can command it any more: sample on the clock.
                    Err(RecvTimeoutError::Disconnected) => thread::sleep(wait),
                }
                next = Instant::now() + period;
                if let Ok(s) = sampler.sample()
                    && !deliver(s)
                {
                    break;
                }
            }
            // Before the probes are dropped (detached) with the sampler.
            #[cfg(feature = "bench")]
            crate::commands::add_dashboard_cpu(crate::commands::thread_cpu_ms());
        })
}

#[cfg(test)]
mod tests {
    use zctrace_common::Counters;

    use super::*;

    fn snap(tid: u32, i: usize, bytes: u64) -> Snapshot {
        let mut s = Snapshot::default();
        let mut c = Counters::ZERO;
        c.v[i] = bytes;
        s.rows.insert(
            CounterKey {
                tgid: 1,
                tid,
                method: 1,
                call: 1,
                src: 0,
                dst: 0,
            },
            c,
        );
        s
    }

    #[test]
    fn the_copy_rate_is_bytes_per_second_and_survives_released_rows() {
        let mut r = CopyRate::default();
        let t0 = Instant::now();
        assert_eq!(r.next(&snap(1, counter::K2U_DERIVED, 0), t0), None);
        let half = t0 + Duration::from_millis(500);
        assert_eq!(
            r.next(&snap(1, counter::K2U_DERIVED, 1 << 20), half),
            Some(2 << 20),
            "1 MiB in half a second"
        );
        // Its row released (a finished run), a new thread copying: only
        // the new thread's bytes count, nothing goes negative.
        let one = t0 + Duration::from_millis(1000);
        assert_eq!(
            r.next(&snap(2, counter::U2K_DERIVED, 1 << 20), one),
            Some(2 << 20)
        );
        // No time passed: no rate rather than a division by zero.
        assert_eq!(r.next(&snap(2, counter::U2K_DERIVED, 1 << 20), one), None);
    }
}
