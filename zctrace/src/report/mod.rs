//! The workshop handout: one self-contained HTML page (inline CSS and SVG,
//! nothing fetched) from a demo's JSON, and one SVG diagram per method for
//! slides. `zctrace demo --report` builds it from the JSON it would print,
//! so the page's numbers are the JSON's by construction; `zctrace report`
//! builds it from a saved `--json`.
//!
//! The page's markup lives in askama templates (`templates/`); this module
//! reads the JSON back into typed documents and lays out the diagrams.

mod svg;

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result, bail};
use askama::Template;
use serde::{Deserialize, Serialize};
use zctrace_common::Method;

use crate::{
    hooks::Tier,
    model::{Measured, deserialize_method, human_bytes, ratio},
    netdev::NetDevice,
};

pub use svg::{DiagramSvg, TimelineSvg};

/// The machine a demo ran on (in the demo's JSON, and on the handout).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub arch: String,
}

impl Machine {
    /// Reads this machine's name, CPU and memory from uname and /proc.
    pub fn read() -> Self {
        let uts = rustix::system::uname();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                matches!(k.trim(), "model name" | "Model" | "cpu model")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(0);
        Machine {
            hostname: uts.nodename().to_string_lossy().into_owned(),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            arch: std::env::consts::ARCH.into(),
        }
    }
}

/// A demo's JSON, read back (the fields the handout shows).
#[derive(Debug, Deserialize)]
pub struct Doc {
    pub schema: u32,
    pub zctrace_version: String,
    pub kernel: String,
    pub file_size: u64,
    pub chunk: u64,
    pub cold: bool,
    #[serde(default)]
    pub machine: Option<Machine>,
    #[serde(default)]
    pub net_device: Option<NetDevice>,
    #[serde(default)]
    pub to: Option<String>,
    pub hooks: Vec<HookDoc>,
    pub methods: Vec<MethodDoc>,
    pub stats: StatsDoc,
}

#[derive(Debug, Deserialize)]
pub struct HookDoc {
    pub name: String,
    pub tier: Tier,
    pub attached: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TheoryDoc {
    pub syscalls_per_chunk: u32,
    pub mode_switches_per_chunk: u32,
    pub cpu_copies: u32,
    pub dma_copies: u32,
    pub path: String,
}

#[derive(Debug, Deserialize)]
pub struct MethodDoc {
    #[serde(deserialize_with = "deserialize_method")]
    pub method: Method,
    pub skipped: Option<String>,
    pub bytes: u64,
    pub chunks: u64,
    pub wall_ns: u64,
    pub theory: Option<TheoryDoc>,
    pub sender: Option<Measured>,
    pub receiver: Option<Measured>,
    pub notes: Vec<String>,
}

/// The health counters every report states.
#[derive(Debug, Default, Deserialize)]
pub struct StatsDoc {
    pub events_dropped: u64,
    pub thread_map_full: u64,
    #[serde(default)]
    pub unclassified_calls: u64,
    pub counter_map_full: u64,
    pub process_map_full: u64,
    pub unattributed_bytes: u64,
    pub unaccounted_bytes: i64,
    pub uring_unattributed_ops: u64,
    pub uring_map_full: u64,
    pub uring_overflow_ops: u64,
}

impl Doc {
    /// The last JSON document in `text` (`demo --json --loop` prints one
    /// per round).
    pub fn parse(text: &str) -> Result<Self> {
        let mut last = None;
        for doc in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>() {
            last = Some(doc.context("not zctrace demo --json output")?);
        }
        let Some(value) = last else {
            bail!("no JSON document in it (save the output of `zctrace demo --json`)");
        };
        if value.get("methods").is_none() {
            bail!("not zctrace demo --json output (no \"methods\")");
        }
        serde_json::from_value(value).context("not zctrace demo --json output")
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| path.display().to_string())
    }
}

/// One row of the theory-versus-measured table, formatted.
pub struct Row {
    pub method: &'static str,
    pub theory_syscalls: u32,
    pub syscalls: u64,
    pub syscalls_per_chunk: String,
    pub theory_switches: u32,
    pub switches: u64,
    pub switches_per_chunk: String,
    pub theory_cpu: u32,
    pub cpu_per_byte: String,
    pub theory_dma: u32,
    pub dma_per_byte: String,
    pub refs_per_byte: String,
    pub context_switches: u64,
    pub faults: u64,
    pub mib_s: String,
}

/// One method's section.
pub struct Section {
    pub id: String,
    pub method: &'static str,
    pub path: String,
    pub skipped: Option<String>,
    pub summary: String,
    pub diagram: String,
    pub timeline: String,
    pub steps: Vec<&'static str>,
    pub notes: Vec<String>,
    pub receiver: Option<String>,
}

#[derive(Template)]
#[template(path = "report.html", escape = "html")]
struct Page<'a> {
    doc: &'a Doc,
    machine: String,
    tiers: Vec<String>,
    missing: Vec<String>,
    interface: Option<String>,
    rows: Vec<Row>,
    sections: Vec<Section>,
    health: Vec<String>,
    lost: bool,
}

fn per(v: u64, n: u64) -> String {
    format!("{:.2}", ratio(v, n))
}

fn row(m: &MethodDoc) -> Option<Row> {
    let (th, s) = (m.theory.as_ref()?, m.sender.as_ref()?);
    Some(Row {
        method: m.method.name(),
        theory_syscalls: th.syscalls_per_chunk,
        syscalls: s.syscalls,
        syscalls_per_chunk: per(s.syscalls, m.chunks),
        theory_switches: th.mode_switches_per_chunk,
        switches: s.mode_switches,
        switches_per_chunk: per(s.mode_switches, m.chunks),
        theory_cpu: th.cpu_copies,
        cpu_per_byte: format!("{:.2}", s.cpu_copies_per_byte(m.bytes)),
        theory_dma: th.dma_copies,
        dma_per_byte: format!("{:.2}", s.dma_copies_per_byte(m.bytes)),
        refs_per_byte: per(s.page_ref_bytes.value, m.bytes),
        context_switches: s.context_switches.voluntary + s.context_switches.involuntary,
        faults: s.page_faults_user + s.page_faults_kernel,
        mib_s: if m.wall_ns == 0 {
            "-".into()
        } else {
            format!(
                "{:.0}",
                m.bytes as f64 / f64::from(1 << 20) / (m.wall_ns as f64 / 1e9)
            )
        },
    })
}

fn section(doc: &Doc, m: &MethodDoc) -> Result<Section> {
    let name = m.method.name();
    let diagram = DiagramSvg::of(m, doc.file_size).render()?;
    let timeline = TimelineSvg::of(m).render()?;
    let summary = match &m.sender {
        Some(s) => format!(
            "{} in {:.1} ms, {} chunks; {} syscalls, {} mode switches, {} CPU-copied, {} by page \
             reference, {} DMA at the devices, {} context switches, {} page faults",
            human_bytes(m.bytes),
            m.wall_ns as f64 / 1e6,
            m.chunks,
            s.syscalls,
            s.mode_switches,
            human_bytes(s.cpu_copy_total()),
            human_bytes(s.page_ref_bytes.value),
            human_bytes(s.dma_total()),
            s.context_switches.voluntary + s.context_switches.involuntary,
            s.page_faults_user + s.page_faults_kernel
        ),
        None => String::new(),
    };
    Ok(Section {
        id: name.to_owned(),
        method: name,
        path: m
            .theory
            .as_ref()
            .map_or_else(String::new, |t| t.path.clone()),
        skipped: m.skipped.clone(),
        summary,
        diagram,
        timeline,
        steps: crate::ui::narration::steps(m.method)
            .iter()
            .map(|s| s.text)
            .collect(),
        notes: m.notes.clone(),
        receiver: m.receiver.as_ref().map(|rx| {
            format!(
                "the receiver (not part of the method): {} syscalls, {} copied kernel to user",
                rx.syscalls,
                human_bytes(rx.cpu_copy_bytes.kernel_to_user.value)
            )
        }),
    })
}

fn health(s: &StatsDoc) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let lost = s.events_dropped
        + s.thread_map_full
        + s.unclassified_calls
        + s.counter_map_full
        + s.process_map_full
        + s.uring_map_full
        + s.uring_overflow_ops
        > 0
        || s.unaccounted_bytes != 0;
    let mut say = |n: u64, what: &str| {
        if n > 0 {
            out.push(format!("{n} {what}"));
        }
    };
    say(s.events_dropped, "events dropped from the event log");
    say(
        s.thread_map_full,
        "threads without state (their syscalls are not counted)",
    );
    say(
        s.unclassified_calls,
        "calls counted without their classification (method other)",
    );
    say(
        s.counter_map_full,
        "counts in fallback rows (row map full: totals exact, methods lost)",
    );
    say(
        s.process_map_full,
        "processes the traced set had no room for",
    );
    say(
        s.uring_map_full,
        "io_uring requests the in-flight map had no room for",
    );
    say(
        s.uring_overflow_ops,
        "io_uring completions that overflowed the completion queue",
    );
    say(
        s.uring_unattributed_ops,
        "io_uring requests completed unattributed",
    );
    if s.unaccounted_bytes != 0 {
        out.push(format!(
            "{} bytes seen by the hooks are in no row and no bucket",
            s.unaccounted_bytes
        ));
    }
    out.push(format!(
        "{} of payload seen by the hooks was nobody's (kernel threads: writeback, softirqs)",
        human_bytes(s.unattributed_bytes)
    ));
    (out, lost)
}

/// The handout as one HTML page.
pub fn html(doc: &Doc) -> Result<String> {
    let machine = doc.machine.as_ref().map_or_else(
        || "machine not recorded (JSON from an older zctrace)".to_owned(),
        |m| {
            format!(
                "{} ({}, {} CPUs: {}, {} memory)",
                m.hostname,
                m.arch,
                m.cpus,
                m.cpu_model,
                human_bytes(m.memory_bytes)
            )
        },
    );
    let tiers = [Tier::Tracepoint, Tier::CopySite]
        .into_iter()
        .map(|t| {
            let of: Vec<&HookDoc> = doc.hooks.iter().filter(|h| h.tier == t).collect();
            let on = of.iter().filter(|h| h.attached).count();
            let name = match t {
                Tier::Tracepoint => "tracepoint tier",
                Tier::CopySite => "copy-site tier",
            };
            format!("{name}: {on} of {} hooks attached", of.len())
        })
        .collect();
    let missing = doc
        .hooks
        .iter()
        .filter(|h| !h.attached)
        .map(|h| {
            let mut s = h.name.clone();
            if let Some(r) = &h.reason {
                let _ = write!(s, ": {r}");
            }
            s
        })
        .collect();
    let sections = doc
        .methods
        .iter()
        .map(|m| section(doc, m))
        .collect::<Result<Vec<_>>>()?;
    let (health, lost) = health(&doc.stats);
    let page = Page {
        doc,
        machine,
        tiers,
        missing,
        interface: doc.net_device.as_ref().map(NetDevice::verdict),
        rows: doc.methods.iter().filter_map(row).collect(),
        sections,
        health,
        lost,
    };
    Ok(page.render()?)
}

/// One SVG diagram per method that ran, named `METHOD.svg`, into `dir`.
pub fn write_svgs(doc: &Doc, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut out = Vec::new();
    for m in doc.methods.iter().filter(|m| m.sender.is_some()) {
        let path = dir.join(format!("{}.svg", m.method.name()));
        let mut svg = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        svg.push_str(&DiagramSvg::of(m, doc.file_size).render()?);
        svg.push('\n');
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        out.push(path);
    }
    Ok(out)
}

/// The text of the first element whose opening tag holds `marker` (as in
/// `data-k="syscalls"`): how the tests read a rendered handout's numbers
/// back, in the unit tests and against the page Chromium rendered.
#[doc(hidden)]
pub fn element_text<'a>(html: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &html[html.find(marker)? + marker.len()..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')? + start;
    Some(&rest[start..end])
}

#[cfg(test)]
mod tests;
