//! What the demo's methods measured, sample by sample.
//!
//! The sampler owns a [`DemoTracker`]: the demo runner tells it when a
//! method starts and finishes, and each sample turns the counters into one
//! [`DemoView`], the per-method results every front end shows. A finished
//! run's numbers are kept from the first sample taken after it finished
//! (its counters are complete then), and its threads' rows are handed back
//! for release, so `demo --loop` never fills the kernel's row map. Pure: no
//! probes, no terminal.

use std::time::{Duration, Instant};

use super::{DemoOptions, MethodResult, RunRecord, measure};
use crate::model::{HookSet, Snapshot};
use zctrace_common::Method;

/// What the demo runner reports.
#[derive(Clone, Debug)]
pub enum DemoEvent {
    /// Method `index` started on these threads (sender, receivers).
    Started {
        index: usize,
        sender_tid: u32,
        receiver_tids: Vec<u32>,
        at: Instant,
    },
    /// Method `index` finished (or was skipped).
    Finished { index: usize, record: RunRecord },
    /// A round of every method ended; `Err` carries a failure to show.
    RoundDone(Result<(), String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    Waiting,
    Running,
    /// Finished, and its numbers are final.
    Done,
    Skipped(String),
}

/// One method as every front end shows it.
#[derive(Clone, Debug)]
pub struct DemoMethod {
    pub method: Method,
    pub state: RunState,
    /// Final once done, live while it runs, None before it first ran.
    pub result: Option<MethodResult>,
}

/// The demo in one sample.
#[derive(Clone, Debug, Default)]
pub struct DemoView {
    pub methods: Vec<DemoMethod>,
    /// Rounds of every method completed (`--loop`).
    pub rounds: u32,
    pub error: Option<String>,
}

#[derive(Debug)]
struct Slot {
    method: Method,
    /// The newest run: started, maybe finished.
    run: Option<RunRecord>,
    started: Option<Instant>,
    finished: bool,
    /// The numbers of the last complete run, and its sender thread.
    kept: Option<(MethodResult, u32)>,
}

impl Slot {
    /// Whether the newest run's numbers are the kept ones.
    fn settled(&self) -> bool {
        match (&self.run, &self.kept) {
            (Some(run), Some((_, tid))) => self.finished && run.sender_tid == *tid,
            _ => false,
        }
    }
}

pub struct DemoTracker {
    opts: DemoOptions,
    slots: Vec<Slot>,
    rounds: u32,
    error: Option<String>,
    /// Threads whose rows can go (their numbers are kept, or their run was
    /// superseded before it was ever sampled).
    release: Vec<u32>,
}

fn threads(rec: &RunRecord) -> impl Iterator<Item = u32> + '_ {
    std::iter::once(rec.sender_tid).chain(rec.receiver_tids.iter().copied())
}

impl DemoTracker {
    pub fn new(opts: DemoOptions) -> Self {
        let slots = opts
            .methods
            .iter()
            .map(|&method| Slot {
                method,
                run: None,
                started: None,
                finished: false,
                kept: None,
            })
            .collect();
        DemoTracker {
            opts,
            slots,
            rounds: 0,
            error: None,
            release: Vec::new(),
        }
    }

    pub fn opts(&self) -> &DemoOptions {
        &self.opts
    }

    pub fn on(&mut self, ev: DemoEvent) {
        match ev {
            DemoEvent::Started {
                index,
                sender_tid,
                receiver_tids,
                at,
            } => {
                let Some(slot) = self.slots.get_mut(index) else {
                    return;
                };
                // A run whose numbers were never kept (it started and ended
                // between two samples) is superseded: release its rows now.
                if let Some(old) = &slot.run
                    && slot.kept.as_ref().is_none_or(|(_, t)| *t != old.sender_tid)
                {
                    self.release.extend(threads(old));
                }
                slot.run = Some(RunRecord {
                    method: slot.method,
                    skipped: None,
                    elapsed: Duration::ZERO,
                    sender_tid,
                    receiver_tids,
                    zerocopy: None,
                });
                slot.started = Some(at);
                slot.finished = false;
            }
            DemoEvent::Finished { index, record } => {
                if let Some(slot) = self.slots.get_mut(index) {
                    slot.run = Some(record);
                    slot.finished = true;
                }
            }
            DemoEvent::RoundDone(r) => {
                self.rounds += 1;
                if let Err(e) = r {
                    self.error = Some(e);
                }
            }
        }
    }

    /// Forgets the kept numbers (the dashboard's reset): from now on each
    /// method shows what its rows hold since the sampler's new baseline.
    pub fn reset(&mut self) {
        for s in &mut self.slots {
            s.kept = None;
        }
    }

    /// Threads whose rows the sampler may release from the kernel.
    pub fn take_release(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.release)
    }

    /// The demo at the time of `snap`, which was read after every event
    /// handed to `on` so far: finished runs are kept from it.
    pub fn sample(&mut self, snap: &Snapshot, hooks: HookSet, taken: Instant) -> DemoView {
        let opts = &self.opts;
        for slot in &mut self.slots {
            if slot.finished
                && !slot.settled()
                && let Some(run) = &slot.run
            {
                slot.kept = Some((measure(run, opts, snap, hooks), run.sender_tid));
                if run.skipped.is_none() {
                    self.release.extend(threads(run));
                }
            }
        }
        let methods = self
            .slots
            .iter()
            .map(|slot| {
                let kept = slot.kept.as_ref().map(|(r, _)| r.clone());
                let (state, result) = match &slot.run {
                    None => (RunState::Waiting, None),
                    Some(run) if slot.finished => (
                        match &run.skipped {
                            Some(why) => RunState::Skipped(why.clone()),
                            None => RunState::Done,
                        },
                        // Kept unless a reset forgot it: then live.
                        kept.or_else(|| Some(measure(run, opts, snap, hooks))),
                    ),
                    Some(run) => {
                        let mut live = run.clone();
                        live.elapsed = slot
                            .started
                            .map_or(Duration::ZERO, |t| taken.saturating_duration_since(t));
                        // Until the newest run shows up in the counters (a
                        // fast run can start between two samples), the last
                        // complete run's numbers stand.
                        let seen = snap.rows.keys().any(|k| k.tid == live.sender_tid);
                        let result = if seen || kept.is_none() {
                            Some(measure(&live, opts, snap, hooks))
                        } else {
                            kept
                        };
                        (RunState::Running, result)
                    }
                };
                DemoMethod {
                    method: slot.method,
                    state,
                    result,
                }
            })
            .collect();
        DemoView {
            methods,
            rounds: self.rounds,
            error: self.error.clone(),
        }
    }
}

#[cfg(test)]
pub mod tests {
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
            to: None,
            net: None,
        }
    }

    /// Counters of read-write's sender, tid 7: 512 syscalls, 16 MiB each way.
    pub fn snap() -> Snapshot {
        let mut c = Counters::ZERO;
        c.v[counter::SYSCALLS] = 512;
        c.v[counter::K2U_DERIVED] = 16 << 20;
        c.v[counter::U2K_DERIVED] = 16 << 20;
        let mut s = Snapshot::default();
        s.rows.insert(
            CounterKey {
                tgid: 42,
                tid: 7,
                method: Method::ReadWrite as u32,
                call: 1,
                src: 0,
                dst: 0,
            },
            c,
        );
        s
    }

    pub fn started(index: usize, tid: u32) -> DemoEvent {
        DemoEvent::Started {
            index,
            sender_tid: tid,
            receiver_tids: vec![tid + 1],
            at: Instant::now(),
        }
    }

    fn finished(index: usize, tid: u32) -> DemoEvent {
        DemoEvent::Finished {
            index,
            record: RunRecord {
                method: Method::ReadWrite,
                skipped: None,
                elapsed: Duration::from_millis(20),
                sender_tid: tid,
                receiver_tids: vec![tid + 1],
                zerocopy: None,
            },
        }
    }

    fn syscalls(v: &DemoView, i: usize) -> Option<u64> {
        v.methods[i]
            .result
            .as_ref()
            .and_then(|r| r.sender)
            .map(|s| s.syscalls)
    }

    #[test]
    fn a_running_method_is_live_and_a_finished_one_is_kept_and_released() {
        let mut t = DemoTracker::new(opts());
        let v = t.sample(&Snapshot::default(), HookSet::default(), Instant::now());
        assert_eq!(v.methods[0].state, RunState::Waiting);
        assert!(v.methods[0].result.is_none());
        t.on(started(0, 7));
        let v = t.sample(&snap(), HookSet::default(), Instant::now());
        assert_eq!(v.methods[0].state, RunState::Running);
        assert_eq!(syscalls(&v, 0), Some(512));
        assert!(t.take_release().is_empty(), "nothing final yet");
        t.on(finished(0, 7));
        let v = t.sample(&snap(), HookSet::default(), Instant::now());
        assert_eq!(v.methods[0].state, RunState::Done);
        assert_eq!(
            t.take_release(),
            vec![7, 8],
            "sender and receiver rows can go"
        );
        // The kernel's rows are gone: the numbers stay.
        let v = t.sample(&Snapshot::default(), HookSet::default(), Instant::now());
        assert_eq!(syscalls(&v, 0), Some(512));
        assert!(t.take_release().is_empty(), "released once");
        assert_eq!(v.methods[1].state, RunState::Waiting);
    }

    #[test]
    fn a_new_run_shows_the_last_complete_one_until_it_appears_in_the_counters() {
        let mut t = DemoTracker::new(opts());
        t.on(started(0, 7));
        t.on(finished(0, 7));
        t.sample(&snap(), HookSet::default(), Instant::now());
        t.take_release();
        // The next round's run, on tid 9, not yet in any row.
        t.on(started(0, 9));
        let v = t.sample(&Snapshot::default(), HookSet::default(), Instant::now());
        assert_eq!(v.methods[0].state, RunState::Running);
        assert_eq!(syscalls(&v, 0), Some(512), "the last complete run stands");
        // A run superseded before any sample kept it has its rows released.
        t.on(started(0, 11));
        assert_eq!(t.take_release(), vec![9, 10]);
    }

    #[test]
    fn reset_forgets_kept_numbers_and_round_errors_are_kept() {
        let mut t = DemoTracker::new(opts());
        t.on(started(0, 7));
        t.on(finished(0, 7));
        t.sample(&snap(), HookSet::default(), Instant::now());
        t.reset();
        let v = t.sample(&Snapshot::default(), HookSet::default(), Instant::now());
        assert_eq!(syscalls(&v, 0), Some(0), "reset shows what happened since");
        t.on(DemoEvent::RoundDone(Err("boom".into())));
        let v = t.sample(&Snapshot::default(), HookSet::default(), Instant::now());
        assert_eq!((v.rounds, v.error.as_deref()), (1, Some("boom")));
    }
}
