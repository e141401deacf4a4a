//! `zctrace top`: every process on the machine, ranked by the bytes its
//! CPU copies per second. The sampler turns each period's report rows into
//! a [`TopView`] with a [`Ranker`]; the dashboard and the JSON and text
//! reports only sort, filter and show it.

use std::{collections::HashMap, time::Instant};

use serde::Serialize;
use zctrace_common::Method;

use crate::{probe::Stats, trace::Row};

/// What one process did: totals since top started (or the last reset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub syscalls: u64,
    pub mode_switches: u64,
    pub context_switches_voluntary: u64,
    pub context_switches_involuntary: u64,
    pub user_to_kernel_bytes: u64,
    pub kernel_to_user_bytes: u64,
    pub kernel_to_kernel_bytes: u64,
    pub page_ref_bytes: u64,
    pub pinned_bytes: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub nic_bytes: u64,
    pub io_bytes: u64,
}

impl Totals {
    pub fn add_row(&mut self, r: &Row) {
        let m = &r.measured;
        let c = &m.cpu_copy_bytes;
        self.syscalls += m.syscalls;
        self.mode_switches += m.mode_switches;
        self.context_switches_voluntary += m.context_switches.voluntary;
        self.context_switches_involuntary += m.context_switches.involuntary;
        self.user_to_kernel_bytes += c.user_to_kernel.value;
        self.kernel_to_user_bytes += c.kernel_to_user.value;
        self.kernel_to_kernel_bytes += c.kernel_to_kernel.value;
        self.page_ref_bytes += m.page_ref_bytes.value;
        self.pinned_bytes += m.zerocopy_pinned_bytes;
        self.disk_read_bytes += m.dma_bytes.disk_read;
        self.disk_write_bytes += m.dma_bytes.disk_write;
        self.nic_bytes += m.dma_bytes.nic;
        self.io_bytes += m.io_bytes;
    }

    pub fn add(&mut self, o: &Totals) {
        self.syscalls += o.syscalls;
        self.mode_switches += o.mode_switches;
        self.context_switches_voluntary += o.context_switches_voluntary;
        self.context_switches_involuntary += o.context_switches_involuntary;
        self.user_to_kernel_bytes += o.user_to_kernel_bytes;
        self.kernel_to_user_bytes += o.kernel_to_user_bytes;
        self.kernel_to_kernel_bytes += o.kernel_to_kernel_bytes;
        self.page_ref_bytes += o.page_ref_bytes;
        self.pinned_bytes += o.pinned_bytes;
        self.disk_read_bytes += o.disk_read_bytes;
        self.disk_write_bytes += o.disk_write_bytes;
        self.nic_bytes += o.nic_bytes;
        self.io_bytes += o.io_bytes;
    }

    /// Bytes the CPU copied, every direction.
    pub fn cpu_copy_bytes(&self) -> u64 {
        self.user_to_kernel_bytes + self.kernel_to_user_bytes + self.kernel_to_kernel_bytes
    }

    /// Per second since `prev`, over `secs`.
    fn rates(&self, prev: &Totals, secs: f64) -> Rates {
        let r = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        Rates {
            cpu_copy_bytes: r(self.cpu_copy_bytes(), prev.cpu_copy_bytes()),
            user_to_kernel_bytes: r(self.user_to_kernel_bytes, prev.user_to_kernel_bytes),
            kernel_to_user_bytes: r(self.kernel_to_user_bytes, prev.kernel_to_user_bytes),
            kernel_to_kernel_bytes: r(self.kernel_to_kernel_bytes, prev.kernel_to_kernel_bytes),
            syscalls: r(self.syscalls, prev.syscalls),
            mode_switches: r(self.mode_switches, prev.mode_switches),
            page_ref_bytes: r(self.page_ref_bytes, prev.page_ref_bytes),
            io_bytes: r(self.io_bytes, prev.io_bytes),
        }
    }
}

/// Per second over the last period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    pub cpu_copy_bytes: f64,
    pub user_to_kernel_bytes: f64,
    pub kernel_to_user_bytes: f64,
    pub kernel_to_kernel_bytes: f64,
    pub syscalls: f64,
    pub mode_switches: f64,
    pub page_ref_bytes: f64,
    pub io_bytes: f64,
}

/// One process in the ranking.
#[derive(Clone, Debug, Serialize)]
pub struct TopProcess {
    pub pid: u32,
    pub comm: String,
    /// It exited during the last period (shown this once, then folded
    /// into [`Exited`]).
    pub exited: bool,
    /// The methods it used, the one moving the most bytes first.
    #[serde(serialize_with = "serialize_methods")]
    pub methods: Vec<Method>,
    pub per_second: Rates,
    pub total: Totals,
    /// Its report rows (method and flow), for the copy path.
    #[serde(skip)]
    pub rows: Vec<Row>,
    /// Whether it did anything during the last period.
    #[serde(skip)]
    pub active: bool,
}

fn serialize_methods<S: serde::Serializer>(m: &[Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.iter().map(|m| m.name()))
}

impl TopProcess {
    /// The row the copy path shows: the one that copied the most (moved
    /// the most, when nothing was copied).
    pub fn main_row(&self) -> Option<&Row> {
        self.rows.iter().max_by_key(|r| {
            let m = &r.measured;
            (
                m.cpu_copy_total() + m.page_ref_bytes.value,
                m.io_bytes,
                m.syscalls,
            )
        })
    }

    pub fn label(&self) -> String {
        if self.exited {
            format!("{}*", self.comm)
        } else {
            self.comm.clone()
        }
    }
}

/// Processes that exited, summed (their own lines are gone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Exited {
    pub processes: u64,
    pub total: Totals,
}

/// One period's ranking.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TopView {
    /// Seconds the rates are over.
    pub period_s: f64,
    /// Ranked by CPU copy bytes per second, then by total CPU copies.
    pub processes: Vec<TopProcess>,
    pub exited: Exited,
}

/// Turns cumulative report rows into per-process rates.
#[derive(Debug)]
pub struct Ranker {
    last: HashMap<u32, Totals>,
    at: Instant,
    exited: Exited,
}

impl Ranker {
    pub fn new(started: Instant) -> Self {
        Ranker {
            last: HashMap::new(),
            at: started,
            exited: Exited::default(),
        }
    }

    /// Forget everything (the counters shown start again from zero).
    pub fn reset(&mut self, at: Instant) {
        *self = Ranker::new(at);
    }

    /// The ranking at `taken` from the rows (cumulative), with `dead` the
    /// processes whose rows are final: they are listed this once, then
    /// summed into the exited totals.
    pub fn update(
        &mut self,
        rows: impl IntoIterator<Item = Row>,
        dead: &[u32],
        taken: Instant,
    ) -> TopView {
        let secs = taken.saturating_duration_since(self.at).as_secs_f64();
        // In the order the rows name them (the ranking below orders them);
        // a process's rows usually come together, so the index is asked
        // only when the process changes.
        let mut processes: Vec<TopProcess> = Vec::new();
        let mut at: HashMap<u32, usize> = HashMap::new();
        for r in rows {
            // The overflow row is nobody's.
            if r.pid == 0 {
                continue;
            }
            let i = match processes.last() {
                Some(p) if p.pid == r.pid => processes.len() - 1,
                _ => *at.entry(r.pid).or_insert_with(|| {
                    processes.push(TopProcess {
                        pid: r.pid,
                        comm: r.comm.clone(),
                        exited: false,
                        methods: Vec::new(),
                        per_second: Rates::default(),
                        total: Totals::default(),
                        rows: Vec::new(),
                        active: false,
                    });
                    processes.len() - 1
                }),
            };
            let p = &mut processes[i];
            p.total.add_row(&r);
            p.rows.push(r);
        }
        let mut next = HashMap::with_capacity(processes.len());
        for p in &mut processes {
            let prev = self.last.get(&p.pid).copied().unwrap_or_default();
            if secs > 0.0 {
                p.per_second = p.total.rates(&prev, secs);
            }
            p.active = p.total != prev;
            p.exited = dead.contains(&p.pid);
            let mut methods: Vec<(u64, Method)> = Vec::new();
            for r in &p.rows {
                match methods.iter_mut().find(|(_, m)| *m == r.method) {
                    Some((b, _)) => *b += r.measured.io_bytes,
                    None => methods.push((r.measured.io_bytes, r.method)),
                }
            }
            // Bookkeeping calls (`other`) only when there is nothing else.
            if methods.iter().any(|(_, m)| *m != Method::Other) {
                methods.retain(|(_, m)| *m != Method::Other);
            }
            methods.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.name().cmp(b.1.name())));
            p.methods = methods.into_iter().map(|(_, m)| m).collect();
            if p.exited {
                self.exited.processes += 1;
                self.exited.total.add(&p.total);
            } else {
                next.insert(p.pid, p.total);
            }
        }
        self.last = next;
        self.at = taken;
        rank(&mut processes, SortKey::CopyRate);
        TopView {
            period_s: secs,
            processes,
            exited: self.exited,
        }
    }
}

/// What the ranking is ordered by (the dashboard's `s` key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    CopyRate,
    UserToKernel,
    KernelToUser,
    Syscalls,
    PageRefs,
    TotalCopies,
    Pid,
    Comm,
}

impl SortKey {
    pub const ALL: [SortKey; 8] = [
        SortKey::CopyRate,
        SortKey::UserToKernel,
        SortKey::KernelToUser,
        SortKey::Syscalls,
        SortKey::PageRefs,
        SortKey::TotalCopies,
        SortKey::Pid,
        SortKey::Comm,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            SortKey::CopyRate => "CPU copies/s",
            SortKey::UserToKernel => "user>kernel/s",
            SortKey::KernelToUser => "kernel>user/s",
            SortKey::Syscalls => "syscalls/s",
            SortKey::PageRefs => "page refs/s",
            SortKey::TotalCopies => "total CPU copies",
            SortKey::Pid => "pid",
            SortKey::Comm => "command",
        }
    }

    pub fn next(self, d: i32) -> SortKey {
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0) as i32;
        SortKey::ALL[(i + d).rem_euclid(SortKey::ALL.len() as i32) as usize]
    }
}

/// Orders processes by `key`, biggest first (pid and command ascending);
/// ties go to the bigger total copier, then the lower pid.
pub fn rank(ps: &mut [TopProcess], key: SortKey) {
    let f = |p: &TopProcess| -> f64 {
        let r = &p.per_second;
        match key {
            SortKey::CopyRate => r.cpu_copy_bytes,
            SortKey::UserToKernel => r.user_to_kernel_bytes,
            SortKey::KernelToUser => r.kernel_to_user_bytes,
            SortKey::Syscalls => r.syscalls,
            SortKey::PageRefs => r.page_ref_bytes,
            SortKey::TotalCopies | SortKey::Pid | SortKey::Comm => 0.0,
        }
    };
    // The order is found on indices and then applied: a process (its name,
    // rates, totals and rows) is a few hundred bytes, which a sort would
    // move again and again.
    let mut order: Vec<usize> = (0..ps.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&ps[a], &ps[b]);
        let primary = match key {
            SortKey::Pid => a.pid.cmp(&b.pid),
            SortKey::Comm => a.comm.cmp(&b.comm),
            _ => f(b).total_cmp(&f(a)),
        };
        primary
            .then(b.total.cpu_copy_bytes().cmp(&a.total.cpu_copy_bytes()))
            .then(b.total.syscalls.cmp(&a.total.syscalls))
            .then(a.pid.cmp(&b.pid))
    });
    permute(ps, order);
}

/// Puts `order[i]`'s element at `i`, each element moved once by a swap
/// along the permutation's cycles.
fn permute<T>(v: &mut [T], mut order: Vec<usize>) {
    for i in 0..v.len() {
        // Follow the cycle through i, swapping each element into place;
        // a place done is marked by order[j] == j.
        let mut j = i;
        while order[j] != i {
            let next = order[j];
            v.swap(j, next);
            order[j] = j;
            j = next;
        }
        order[j] = j;
    }
}

/// The processes a filter keeps: command name containing `comm` (case
/// folded) and, with `method`, using it.
pub fn keep(p: &TopProcess, comm: &str, method: Option<Method>) -> bool {
    (comm.is_empty() || p.comm.to_lowercase().contains(&comm.to_lowercase()))
        && method.is_none_or(|m| p.methods.contains(&m))
}

/// A rate in bytes per second, as the table shows it ("12.0M").
pub fn human_rate(r: f64) -> String {
    crate::model::human_bytes(r.round() as u64)
}

/// The text report of one period: the `limit` first processes active in
/// it, then what the probes could not attribute.
pub fn table(view: &TopView, stats: &Stats, limit: usize, elapsed_s: f64, fin: bool) -> String {
    let active: Vec<&TopProcess> = view.processes.iter().filter(|p| p.active).collect();
    let mut s = format!(
        "\nzctrace top{}: {} of {} processes active in the last {:.2} s (after {:.1} s)\n",
        if fin { " (final)" } else { "" },
        active.len(),
        view.processes.len(),
        view.period_s,
        elapsed_s
    );
    s += &format!(
        "{:>7} {:<16} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}  {}\n",
        "PID",
        "COMM",
        "COPY/s",
        "USER>K/s",
        "K>USER/s",
        "K>K/s",
        "SYSCALL/s",
        "PAGEREF/s",
        "COPIED",
        "METHODS"
    );
    for p in active.iter().take(limit) {
        let r = &p.per_second;
        let methods: Vec<&str> = p.methods.iter().map(|m| m.name()).collect();
        s += &format!(
            "{:>7} {:<16} {:>8} {:>8} {:>8} {:>8} {:>9.0} {:>9} {:>9}  {}\n",
            p.pid,
            p.label(),
            human_rate(r.cpu_copy_bytes),
            human_rate(r.user_to_kernel_bytes),
            human_rate(r.kernel_to_user_bytes),
            human_rate(r.kernel_to_kernel_bytes),
            r.syscalls,
            human_rate(r.page_ref_bytes),
            crate::model::human_bytes(p.total.cpu_copy_bytes()),
            methods.join(",")
        );
    }
    if active.len() > limit {
        s += &format!("  ... and {} more active processes\n", active.len() - limit);
    }
    s += &format!(
        "rates per second; COPIED: CPU copies since top started; * = exited; \
         exited so far: {} processes, {} CPU-copied\n",
        view.exited.processes,
        crate::model::human_bytes(view.exited.total.cpu_copy_bytes())
    );
    s += &crate::demo::report::footer(stats);
    s
}

/// One `--json` line of top: the processes active in the period.
#[derive(Serialize)]
pub struct JsonLine<'a> {
    pub schema: u32,
    /// Seconds since the Unix epoch.
    pub ts: f64,
    pub elapsed_s: f64,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub period_s: f64,
    /// Processes active in the period (or that exited in it), ranked.
    pub processes: Vec<&'a TopProcess>,
    /// Processes seen, active or not.
    pub processes_seen: usize,
    pub exited: Exited,
    pub stats: &'a Stats,
}

impl<'a> JsonLine<'a> {
    pub fn new(view: &'a TopView, stats: &'a Stats, elapsed_s: f64, fin: bool) -> Self {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        JsonLine {
            schema: crate::trace::JSON_SCHEMA,
            ts,
            elapsed_s,
            is_final: fin,
            period_s: view.period_s,
            processes: view
                .processes
                .iter()
                .filter(|p| p.active || p.exited)
                .collect(),
            processes_seen: view.processes.len(),
            exited: view.exited,
            stats,
        }
    }
}

#[cfg(test)]
pub mod tests {
    use std::time::Duration;

    use zctrace_common::{Counters, FdKind, counter};

    use super::*;
    use crate::model::{HookSet, Measured};

    #[test]
    fn a_permutation_puts_each_element_where_the_order_says() {
        // Every permutation of 5 elements (120), against the plain answer.
        let mut order: Vec<usize> = (0..5).collect();
        let mut seen = 0;
        loop {
            let mut v: Vec<char> = "abcde".chars().collect();
            let want: Vec<char> = order.iter().map(|&i| v[i]).collect();
            permute(&mut v, order.clone());
            assert_eq!(v, want, "order {order:?}");
            seen += 1;
            // Next permutation in lexicographic order.
            let Some(i) = (0..4).rev().find(|&i| order[i] < order[i + 1]) else {
                break;
            };
            let j = (i + 1..5).rev().find(|&j| order[j] > order[i]).unwrap();
            order.swap(i, j);
            order[i + 1..].reverse();
        }
        assert_eq!(seen, 120);
    }

    pub fn row(pid: u32, comm: &str, method: Method, k2u: u64, u2k: u64) -> Row {
        let mut c = Counters::ZERO;
        c.v[counter::SYSCALLS] = 2;
        c.v[counter::K2U_DERIVED] = k2u;
        c.v[counter::U2K_DERIVED] = u2k;
        c.v[counter::IO_BYTES] = k2u.max(u2k);
        Row {
            pid,
            tid: None,
            comm: comm.into(),
            exited: false,
            method,
            source: FdKind::File,
            destination: FdKind::Pipe,
            measured: Measured::from_counters(&c, HookSet::default()),
        }
    }

    #[test]
    fn rates_rank_processes_and_the_dead_are_listed_once_then_summed() {
        let t0 = Instant::now();
        let mut r = Ranker::new(t0);
        let one = t0 + Duration::from_secs(1);
        let v = r.update(
            [
                row(10, "cat", Method::ReadWrite, 1 << 20, 1 << 20),
                row(11, "nginx", Method::Sendfile, 0, 0),
                row(12, "dd", Method::ReadWrite, 4 << 20, 4 << 20),
            ],
            &[],
            one,
        );
        let order: Vec<u32> = v.processes.iter().map(|p| p.pid).collect();
        assert_eq!(order, [12, 10, 11], "by CPU copies per second");
        assert_eq!(v.processes[0].per_second.cpu_copy_bytes, (8 << 20) as f64);
        assert_eq!(v.processes[0].methods, [Method::ReadWrite]);
        // Half a second later: cat copied 1 MiB more, dd nothing, dd died.
        let half = one + Duration::from_millis(500);
        let v = r.update(
            [
                row(10, "cat", Method::ReadWrite, 1 << 20, 2 << 20),
                row(12, "dd", Method::ReadWrite, 4 << 20, 4 << 20),
            ],
            &[12],
            half,
        );
        assert_eq!(v.processes[0].pid, 10);
        assert_eq!(v.processes[0].per_second.cpu_copy_bytes, (2 << 20) as f64);
        assert!(v.processes[0].active);
        let dd = &v.processes[1];
        assert!(dd.exited && !dd.active && dd.per_second.cpu_copy_bytes == 0.0);
        assert_eq!(dd.label(), "dd*");
        assert_eq!(v.exited.processes, 1);
        assert_eq!(v.exited.total.cpu_copy_bytes(), 8 << 20);
        // Its rows released, it is gone; the exited totals stay.
        let v = r.update(
            [row(10, "cat", Method::ReadWrite, 1 << 20, 2 << 20)],
            &[],
            half + Duration::from_secs(1),
        );
        assert_eq!(v.processes.len(), 1);
        assert!(!v.processes[0].active);
        assert_eq!(v.exited.processes, 1);
    }

    #[test]
    fn sort_keys_filters_and_the_main_row() {
        let t0 = Instant::now();
        let mut r = Ranker::new(t0);
        let mut v = r.update(
            [
                row(10, "cat", Method::ReadWrite, 1 << 20, 0),
                row(10, "cat", Method::Splice, 0, 0),
                row(11, "Nginx", Method::Sendfile, 0, 0),
                row(12, "dd", Method::ReadWrite, 0, 4 << 20),
            ],
            &[],
            t0 + Duration::from_secs(2),
        );
        rank(&mut v.processes, SortKey::KernelToUser);
        assert_eq!(v.processes[0].pid, 10);
        rank(&mut v.processes, SortKey::Comm);
        let names: Vec<&str> = v.processes.iter().map(|p| p.comm.as_str()).collect();
        assert_eq!(names, ["Nginx", "cat", "dd"]);
        assert_eq!(SortKey::CopyRate.next(-1), SortKey::Comm);
        let cat = v.processes.iter().find(|p| p.pid == 10).expect("cat");
        assert_eq!(cat.main_row().map(|r| r.method), Some(Method::ReadWrite));
        assert!(keep(cat, "CA", None) && keep(cat, "", Some(Method::Splice)));
        assert!(!keep(cat, "dd", None) && !keep(cat, "", Some(Method::Sendfile)));
    }
}
