//! `--metrics ADDR`: the counters for Prometheus, in the OpenMetrics text
//! format (prometheus-client), at `GET /metrics`.
//!
//! The sampler feeds the [`Exporter`] the kernel's rows every period,
//! cumulative and before any dashboard reset. Each row's growth since the
//! last period is added to the series of its labels (`method`, `comm`,
//! and `cgroup` / `pid` when asked), so a series only ever grows: a process
//! that exits leaves its counts in its command's series, one whose name
//! changes at exec counts under each name what it did under it, and a row
//! released from the kernel takes nothing away. With `pid` labels, an
//! exited process's series are folded into `pid="exited"` of its command,
//! so series do not pile up. Methods are the kernel's per call: a
//! download's receives are `socket-recv` here (the reports join them to
//! the download's read-write row).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};
use zctrace_common::{CounterKey, Method};

use crate::{
    model::{HookSet, Measured, Snapshot},
    probe::{HookStatus, Stats, Tier},
    trace::Names,
};

/// How often the counters are read for the endpoint when no dashboard or
/// report reads them more often.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One series' numbers, indexed by the constants below.
type Values = [u64; N];
const SYSCALLS: usize = 0;
const MODE_SWITCHES: usize = 1;
const CS_VOLUNTARY: usize = 2;
const CS_INVOLUNTARY: usize = 3;
const U2K: usize = 4;
const K2U: usize = 5;
const K2K: usize = 6;
const PAGE_REF: usize = 7;
const PINNED: usize = 8;
const DISK_READ: usize = 9;
const DISK_WRITE: usize = 10;
const NIC: usize = 11;
const IO: usize = 12;
const URING_OPS: usize = 13;
const N: usize = 14;

fn values(m: &Measured) -> Values {
    let c = &m.cpu_copy_bytes;
    let mut v = [0; N];
    v[SYSCALLS] = m.syscalls;
    v[MODE_SWITCHES] = m.mode_switches;
    v[CS_VOLUNTARY] = m.context_switches.voluntary;
    v[CS_INVOLUNTARY] = m.context_switches.involuntary;
    v[U2K] = c.user_to_kernel.value;
    v[K2U] = c.kernel_to_user.value;
    v[K2K] = c.kernel_to_kernel.value;
    v[PAGE_REF] = m.page_ref_bytes.value;
    v[PINNED] = m.zerocopy_pinned_bytes;
    v[DISK_READ] = m.dma_bytes.disk_read;
    v[DISK_WRITE] = m.dma_bytes.disk_write;
    v[NIC] = m.dma_bytes.nic;
    v[IO] = m.io_bytes;
    v[URING_OPS] = m.uring.ops;
    v
}

/// A family of per-process counters: its name (without `_total` and the
/// unit), help, unit, and the series' values it shows, each with an
/// extra label when it splits one family (`direction`, `kind`).
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    split: &'static [(Option<(&'static str, &'static str)>, usize)],
}

const FAMILIES: &[Family] = &[
    Family {
        name: "zctrace_syscalls",
        help: "System calls made (I/O calls by their method; bookkeeping calls as method other)",
        unit: None,
        split: &[(None, SYSCALLS)],
    },
    Family {
        name: "zctrace_mode_switches",
        help: "User/kernel mode switches: two per system call and two per user page fault",
        unit: None,
        split: &[(None, MODE_SWITCHES)],
    },
    Family {
        name: "zctrace_context_switches",
        help: "Times a traced thread was switched out: it blocked (voluntary) or was preempted",
        unit: None,
        split: &[
            (Some(("kind", "voluntary")), CS_VOLUNTARY),
            (Some(("kind", "involuntary")), CS_INVOLUNTARY),
        ],
    },
    Family {
        name: "zctrace_cpu_copy",
        help: "Bytes the CPU copied for the I/O, by direction",
        unit: Some(Unit::Bytes),
        split: &[
            (Some(("direction", "user_to_kernel")), U2K),
            (Some(("direction", "kernel_to_user")), K2U),
            (Some(("direction", "kernel_to_kernel")), K2K),
        ],
    },
    Family {
        name: "zctrace_page_reference",
        help: "Bytes moved by handing over page references (no CPU copy)",
        unit: Some(Unit::Bytes),
        split: &[(None, PAGE_REF)],
    },
    Family {
        name: "zctrace_pinned",
        help: "User pages pinned for zero-copy sends (MSG_ZEROCOPY, io_uring send-zc)",
        unit: Some(Unit::Bytes),
        split: &[(None, PINNED)],
    },
    Family {
        name: "zctrace_dma",
        help: "Bytes moved by device DMA: disk requests issued, transmits on a real network device",
        unit: Some(Unit::Bytes),
        split: &[
            (Some(("kind", "disk_read")), DISK_READ),
            (Some(("kind", "disk_write")), DISK_WRITE),
            (Some(("kind", "nic_transmit")), NIC),
        ],
    },
    Family {
        name: "zctrace_io",
        help: "Payload bytes the I/O calls and io_uring completions returned",
        unit: Some(Unit::Bytes),
        split: &[(None, IO)],
    },
    Family {
        name: "zctrace_uring_ops",
        help: "io_uring requests completed",
        unit: None,
        split: &[(None, URING_OPS)],
    },
];

/// A series' labels: method, comm, and pid (with `--metrics-pid`; the
/// command's exited processes share pid "exited").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Series {
    method: &'static str,
    comm: String,
    pid: Option<String>,
}

/// What the probes cost and lost, for the health metrics.
#[derive(Clone, Debug, Default)]
struct Health {
    stats: Stats,
    hooks: Vec<(Tier, bool)>,
    samples: u64,
    sample_seconds: f64,
    processes: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Each kernel row's numbers at the last update.
    last: BTreeMap<CounterKey, Values>,
    series: BTreeMap<Series, Values>,
    /// Live processes' series (with pid labels), to fold at exit.
    by_pid: BTreeMap<u32, BTreeSet<Series>>,
    /// Rows whose counts wait a period for their process's name.
    held: BTreeSet<CounterKey>,
    health: Health,
}

/// The metrics, shared by the sampler (writer) and the HTTP server.
#[derive(Debug)]
pub struct Exporter {
    state: Mutex<State>,
    with_pid: bool,
    /// The `cgroup` label of every series when targeting one.
    cgroup: Option<String>,
}

impl Exporter {
    pub fn new(with_pid: bool, cgroup: Option<String>, hooks: &[HookStatus]) -> Self {
        let state = State {
            health: Health {
                hooks: hooks.iter().map(|h| (h.tier, h.attached)).collect(),
                ..Health::default()
            },
            ..State::default()
        };
        Exporter {
            state: Mutex::new(state),
            with_pid,
            cgroup,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere leaves numbers that are still numbers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds what every row did since the last update. `raw`: every row,
    /// cumulative (released rows included or gone: both are fine).
    pub fn update(
        &self,
        raw: &Snapshot,
        names: &mut Names,
        hooks: HookSet,
        stats: &Stats,
        sample_seconds: f64,
        processes: usize,
    ) {
        let mut st = self.lock();
        let st = &mut *st;
        let mut now = BTreeMap::new();
        let mut pids = BTreeSet::new();
        for (k, c) in &raw.rows {
            let v = values(&Measured::from_counters(c, hooks));
            let prev = st.last.get(k).copied().unwrap_or([0; N]);
            // A row that shrank was released and made anew: all new.
            let shrank = v.iter().zip(prev.iter()).any(|(a, b)| a < b);
            let delta: Values = std::array::from_fn(|i| if shrank { v[i] } else { v[i] - prev[i] });
            now.insert(*k, v);
            if k.tgid != 0 {
                pids.insert(k.tgid);
            }
            if delta.iter().all(|d| *d == 0) {
                continue;
            }
            let (comm, exited) = if k.tgid == 0 {
                ("(overflow)".to_owned(), false)
            } else {
                names.get(k.tgid)
            };
            // A process gone before its name was read: its exit event,
            // which carries the name, may come with the next sample. Its
            // counts wait one period for it.
            if comm == "?" && st.held.insert(*k) {
                now.insert(*k, prev);
                continue;
            }
            st.held.remove(k);
            let pid = self.with_pid.then(|| {
                if exited {
                    "exited".to_owned()
                } else {
                    k.tgid.to_string()
                }
            });
            let series = Series {
                method: Method::from_u32(k.method).unwrap_or(Method::Other).name(),
                comm,
                pid,
            };
            if self.with_pid && !exited {
                st.by_pid.entry(k.tgid).or_default().insert(series.clone());
            }
            let s = st.series.entry(series).or_insert([0; N]);
            for (x, d) in s.iter_mut().zip(delta) {
                *x += d;
            }
        }
        st.last = now;
        // Processes that exited: their series join pid="exited".
        let gone: Vec<u32> = st
            .by_pid
            .keys()
            .copied()
            .filter(|p| !pids.contains(p) || names.get(*p).1)
            .collect();
        for pid in gone {
            for s in st.by_pid.remove(&pid).unwrap_or_default() {
                let Some(v) = st.series.remove(&s) else {
                    continue;
                };
                let into = Series {
                    pid: Some("exited".to_owned()),
                    ..s
                };
                let e = st.series.entry(into).or_insert([0; N]);
                for (x, d) in e.iter_mut().zip(v) {
                    *x += d;
                }
            }
        }
        let h = &mut st.health;
        h.stats = stats.clone();
        h.samples += 1;
        h.sample_seconds += sample_seconds;
        h.processes = processes as u64;
    }

    /// The exposition, as `GET /metrics` serves it.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::clone(self)));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

type EncodeResult = Result<(), std::fmt::Error>;

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(Vec<(&'static str, String)>, u64)],
) -> EncodeResult {
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: &[(Vec<(&'static str, String)>, i64)],
) -> EncodeResult {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A counter with no labels.
fn single(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> EncodeResult {
    counter(e, name, help, None, &[(Vec::new(), v)])
}

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> EncodeResult {
        let st = self.lock();
        let base = |s: &Series| {
            let mut l = vec![("method", s.method.to_owned()), ("comm", s.comm.clone())];
            if let Some(c) = &self.cgroup {
                l.push(("cgroup", c.clone()));
            }
            if let Some(p) = &s.pid {
                l.push(("pid", p.clone()));
            }
            l
        };
        for f in FAMILIES {
            let mut series = Vec::new();
            for (s, v) in &st.series {
                for (extra, i) in f.split {
                    let mut l = base(s);
                    if let Some((k, val)) = extra {
                        l.push((k, (*val).to_owned()));
                    }
                    series.push((l, v[*i]));
                }
            }
            counter(&mut e, f.name, f.help, f.unit.as_ref(), &series)?;
        }
        let h = &st.health;
        let s = &h.stats;
        let unattributed: Vec<_> = s
            .accounts
            .iter()
            .flat_map(|a| {
                a.unattributed_by_reason.iter().map(|(r, v)| {
                    (
                        vec![("counter", a.name.to_owned()), ("reason", (*r).to_owned())],
                        *v,
                    )
                })
            })
            .collect();
        counter(
            &mut e,
            "zctrace_unattributed",
            "Bytes the hooks saw that no traced process could be charged with, by counter and reason",
            Some(&Unit::Bytes),
            &unattributed,
        )?;
        gauge(
            &mut e,
            "zctrace_unaccounted_bytes",
            "Charged bytes found in no row (0 unless something was lost; a busy sample can catch bytes in flight)",
            &[(Vec::new(), s.unaccounted_bytes)],
        )?;
        for (name, help, v) in [
            (
                "zctrace_events_dropped",
                "Event-log records the ring buffer had no room for",
                s.events_dropped,
            ),
            (
                "zctrace_row_fallbacks",
                "Counts that found the row map full and went to a process's map-full row",
                s.counter_map_full,
            ),
            (
                "zctrace_thread_state_failures",
                "Threads left uncounted: the kernel refused memory for their state",
                s.thread_map_full,
            ),
            (
                "zctrace_unclassified_calls",
                "Syscalls and disk requests counted without their classification (method other)",
                s.unclassified_calls,
            ),
            (
                "zctrace_process_map_full",
                "Forked children the traced-process map had no room for",
                s.process_map_full,
            ),
            (
                "zctrace_uring_unattributed_ops",
                "io_uring completions not seen submitted",
                s.uring_unattributed_ops,
            ),
            (
                "zctrace_uring_overflow_ops",
                "io_uring completions that overflowed the completion queue",
                s.uring_overflow_ops,
            ),
            (
                "zctrace_samples",
                "Times zctrace read the kernel's counters",
                h.samples,
            ),
        ] {
            single(&mut e, name, help, v)?;
        }
        let mut m = e.encode_descriptor(
            "zctrace_sample",
            "Time zctrace spent reading and converting the kernel's counters",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(h.sample_seconds)
            .encode(m.encode_family(&Vec::<(String, String)>::new())?)?;
        let tier = |t: Tier| match t {
            Tier::Tracepoint => "tracepoint",
            Tier::CopySite => "copy_site",
        };
        let mut hooks = Vec::new();
        for t in [Tier::Tracepoint, Tier::CopySite] {
            let of: Vec<bool> = h
                .hooks
                .iter()
                .filter(|(x, _)| *x == t)
                .map(|x| x.1)
                .collect();
            let attached = of.iter().filter(|a| **a).count() as i64;
            hooks.push((
                vec![
                    ("tier", tier(t).to_owned()),
                    ("state", "attached".to_owned()),
                ],
                attached,
            ));
            hooks.push((
                vec![
                    ("tier", tier(t).to_owned()),
                    ("state", "missing".to_owned()),
                ],
                of.len() as i64 - attached,
            ));
        }
        gauge(
            &mut e,
            "zctrace_hooks",
            "Kernel hooks by tier, attached or missing",
            &hooks,
        )?;
        gauge(
            &mut e,
            "zctrace_rows",
            "Counter rows of the kernel's row map: in use, and its capacity",
            &[
                (vec![("state", "used".to_owned())], s.rows_used as i64),
                (
                    vec![("state", "capacity".to_owned())],
                    i64::from(s.row_capacity),
                ),
            ],
        )?;
        gauge(
            &mut e,
            "zctrace_processes",
            "Traced processes with counter rows in the kernel",
            &[(Vec::new(), h.processes as i64)],
        )?;
        Ok(())
    }
}

/// Serves `GET /metrics` (and a pointer to it at `/`) on its own thread.
/// One request at a time, each with a short deadline: a scraper is the
/// only expected client.
pub fn serve(listener: TcpListener, exporter: Arc<Exporter>) -> std::io::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("zctrace-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = answer(conn, &exporter);
            }
        })?;
    Ok(bound)
}

/// The OpenMetrics exposition in the classic Prometheus text format
/// (0.0.4): a counter family's HELP and TYPE name its samples (`_total`),
/// and there are no UNIT and EOF lines.
pub fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Whether the family being written is a counter: its TYPE line
    // follows its HELP line.
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut counter = false;
    for (i, l) in lines.iter().enumerate() {
        let mut parts = l.splitn(4, ' ');
        let (hash, kind, name) = (parts.next(), parts.next(), parts.next());
        let rest = parts.next().unwrap_or("");
        match (hash, kind, name) {
            (Some("#"), Some(k @ ("HELP" | "TYPE")), Some(n)) => {
                if k == "HELP" {
                    counter = lines
                        .get(i + 1)
                        .is_some_and(|t| *t == format!("# TYPE {n} counter"));
                }
                let n = if counter {
                    format!("{n}_total")
                } else {
                    n.to_owned()
                };
                out += &format!("# {k} {n} {rest}\n");
            }
            // UNIT, EOF: OpenMetrics only.
            (Some("#"), _, _) => {}
            _ => {
                out += l;
                out.push('\n');
            }
        }
    }
    out
}

fn answer(mut conn: TcpStream, exporter: &Arc<Exporter>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers, up to the blank line (bounded): only Accept matters.
    let mut line = String::new();
    let mut openmetrics = false;
    for _ in 0..100 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("accept")
        {
            openmetrics |= value.contains("application/openmetrics-text");
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        // Prometheus asks for OpenMetrics; other clients (curl, promtool)
        // get the classic text format.
        ("GET", "/metrics") if openmetrics => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            exporter.render(),
        ),
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            classic_text(&exporter.render()),
        ),
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "zctrace: metrics at /metrics\n".to_owned(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: try /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use zctrace_common::{Counters, FdKind, counter};

    use super::*;

    fn key(tgid: u32, method: Method) -> CounterKey {
        CounterKey {
            tgid,
            tid: 0,
            method: method as u32,
            call: 1,
            src: FdKind::File as u16,
            dst: FdKind::Tcp as u16,
        }
    }

    fn snap(rows: &[(CounterKey, u64)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (k, bytes) in rows {
            let mut c = Counters::ZERO;
            c.v[counter::SYSCALLS] = bytes / 4096;
            c.v[counter::U2K_DERIVED] = *bytes;
            c.v[counter::IO_BYTES] = *bytes;
            s.rows.insert(*k, c);
        }
        s
    }

    fn line<'a>(text: &'a str, start: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(start))
    }

    /// One update with no hooks and empty stats.
    fn up(ex: &Exporter, s: &Snapshot, names: &mut Names) {
        ex.update(s, names, HookSet::default(), &Stats::default(), 0.01, 1);
    }

    #[test]
    fn series_only_grow_and_exited_processes_are_summed() {
        let ex = Arc::new(Exporter::new(false, None, &[]));
        let mut names = Names::default();
        // PID 4000000000 does not exist: its name is "?" and it has exited.
        let gone = key(4_000_000_000, Method::ReadWrite);
        // Its name unknown, its counts wait one period for it.
        up(&ex, &snap(&[(gone, 8192)]), &mut names);
        assert!(!ex.render().contains("8192"));
        up(&ex, &snap(&[(gone, 8192)]), &mut names);
        let t = ex.render();
        assert!(
            t.contains(
                "zctrace_cpu_copy_bytes_total{method=\"read-write\",comm=\"?\",direction=\"user_to_kernel\"} 8192"
            ),
            "{t}"
        );
        assert!(t.contains("# TYPE zctrace_cpu_copy_bytes counter"), "{t}");
        assert!(t.contains("# UNIT zctrace_cpu_copy_bytes bytes"), "{t}");
        assert!(t.ends_with("# EOF\n"), "{t}");
        // Its row released from the kernel: nothing taken away.
        up(&ex, &Snapshot::default(), &mut names);
        assert!(ex.render().contains("direction=\"user_to_kernel\"} 8192"));
        // A new row under the same key (a reused PID) adds all it has.
        up(&ex, &snap(&[(gone, 4096)]), &mut names);
        up(&ex, &snap(&[(gone, 4096)]), &mut names);
        let t = ex.render();
        assert!(t.contains("direction=\"user_to_kernel\"} 12288"), "{t}");
        assert!(
            line(&t, "zctrace_syscalls_total{method=\"read-write\"")
                .is_some_and(|l| l.ends_with(" 3")),
            "{t}"
        );
        assert!(
            line(&t, "zctrace_samples_total").is_some_and(|l| l.ends_with(" 5")),
            "{t}"
        );
    }

    #[test]
    fn pid_labels_fold_into_exited_and_the_cgroup_is_labelled() {
        let ex = Arc::new(Exporter::new(true, Some("/svc".into()), &[]));
        let mut names = Names::default();
        let me = key(std::process::id(), Method::Sendfile);
        let gone = key(4_000_000_001, Method::Sendfile);
        let s = snap(&[(me, 4096), (gone, 4096)]);
        up(&ex, &s, &mut names);
        up(&ex, &s, &mut names);
        let t = ex.render();
        let mine = format!("cgroup=\"/svc\",pid=\"{}\"", std::process::id());
        assert!(t.contains(&mine), "{t}");
        assert!(
            t.contains("comm=\"?\",cgroup=\"/svc\",pid=\"exited\"} 1"),
            "{t}"
        );
        assert!(!t.contains("pid=\"4000000001\""), "{t}");
    }

    #[test]
    fn health_reports_hooks_rows_and_losses() {
        let ex = Arc::new(Exporter::new(false, None, &[]));
        let stats = Stats {
            events_dropped: 5,
            row_capacity: 64,
            rows_used: 9,
            ..Stats::default()
        };
        ex.update(
            &Snapshot::default(),
            &mut Names::default(),
            HookSet::default(),
            &stats,
            0.5,
            0,
        );
        let t = ex.render();
        assert!(
            line(&t, "zctrace_events_dropped_total").is_some_and(|l| l.ends_with(" 5")),
            "{t}"
        );
        assert!(t.contains("zctrace_rows{state=\"capacity\"} 64"), "{t}");
        assert!(t.contains("zctrace_sample_seconds_total 0.5"), "{t}");
        assert!(
            t.contains("zctrace_hooks{tier=\"tracepoint\",state=\"attached\"} 0"),
            "{t}"
        );
    }

    #[test]
    fn the_http_server_answers_metrics_and_refuses_the_rest() {
        use std::io::Read as _;
        let ex = Arc::new(Exporter::new(false, None, &[]));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = serve(listener, ex).expect("serve");
        let get = |req: &str| {
            let mut c = TcpStream::connect(addr).expect("connect");
            c.write_all(req.as_bytes()).expect("send");
            let mut s = String::new();
            c.read_to_string(&mut s).expect("read");
            s
        };
        let ok = get(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("application/openmetrics-text"), "{ok}");
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        let classic = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(classic.contains("text/plain; version=0.0.4"), "{classic}");
        assert!(
            classic.contains("# TYPE zctrace_samples_total counter\n"),
            "{classic}"
        );
        assert!(
            !classic.contains("# EOF") && !classic.contains("# UNIT"),
            "{classic}"
        );
        assert!(get("GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    }
}
