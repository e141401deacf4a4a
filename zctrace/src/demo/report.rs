//! Plain-text and JSON reports of a demo run.

use std::fmt::Write as _;

use serde::Serialize;

use super::MethodResult;
use crate::{
    model::{Bytes, Source, human_bytes, ratio},
    probe::{HookStatus, Stats},
};

/// The JSON document `zctrace demo --json` prints (schema in README.md).
#[derive(Serialize)]
pub struct DemoReport<'a> {
    pub schema: u32,
    pub zctrace_version: &'static str,
    pub kernel: String,
    pub file_size: u64,
    pub chunk: usize,
    pub cold: bool,
    pub machine: crate::report::Machine,
    /// The interface the bytes left by, and its offloads.
    pub net_device: Option<crate::netdev::NetDevice>,
    /// The remote receiver (`--to`), if not loopback.
    pub to: Option<String>,
    pub hooks: &'a [HookStatus],
    pub methods: &'a [MethodResult],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pitfalls: Option<&'a [super::pitfalls::Pitfall]>,
    pub stats: Stats,
}

/// The pitfalls, in words.
pub fn pitfalls_text(p: &[super::pitfalls::Pitfall]) -> String {
    let mut s = String::from("\npitfalls\n");
    for x in p {
        let _ = writeln!(
            s,
            "  {}{}: {}",
            x.name,
            if x.as_expected { "" } else { " (UNEXPECTED)" },
            x.outcome
        );
    }
    s
}

fn src(b: &Bytes) -> &'static str {
    match b.source {
        Source::Observed => "obs",
        Source::Derived => "der",
    }
}

/// Kernel, tier and hooks.
pub fn header(hooks: &[HookStatus], kernel: &str) -> String {
    let mut s = String::new();
    let (tp, tp_all, _) = crate::probe::tier_summary(hooks, crate::probe::Tier::Tracepoint);
    let (cs, cs_all, cs_why) = crate::probe::tier_summary(hooks, crate::probe::Tier::CopySite);
    let _ = writeln!(
        s,
        "zctrace demo on Linux {kernel}: tracepoint tier {tp}/{tp_all} hooks, copy-site tier {cs}/{cs_all}"
    );
    for h in hooks
        .iter()
        .filter(|h| !h.attached && h.tier == crate::probe::Tier::Tracepoint)
    {
        let _ = writeln!(
            s,
            "  missing {}: {}",
            h.name(),
            h.reason.as_deref().unwrap_or("unknown reason")
        );
    }
    if cs < cs_all {
        let _ = writeln!(
            s,
            "  copy-site tier incomplete ({}), so copies are observed at socket tracepoints or \
             derived from syscall results (obs/der); `zctrace hooks` lists each reason",
            cs_why.unwrap_or("refused")
        );
    }
    s
}

/// One method: theory next to measurement, then the reasons they differ.
pub fn method_block(r: &MethodResult) -> String {
    let mut s = String::from("\n");
    if let Some(why) = &r.skipped {
        let _ = writeln!(s, "{:<16} skipped: {why}", r.method.name());
        return s;
    }
    let (Some(th), Some(m)) = (&r.theory, &r.sender) else {
        return s;
    };
    {
        let _ = writeln!(
            s,
            "{:<16} {} in {:.1} ms ({:.0} MiB/s), {} chunks of {}",
            r.method.name(),
            human_bytes(r.bytes),
            r.wall_ns as f64 / 1e6,
            r.throughput_mib_s(),
            r.chunks,
            human_bytes(r.chunk as u64)
        );
        let _ = writeln!(s, "  path: {}", th.path);
        let per = |v: u64| ratio(v, r.chunks);
        let _ = writeln!(
            s,
            "  {:<26} {:>8} {:>10} {:>14}",
            "", "theory", "measured", "total"
        );
        let _ = writeln!(
            s,
            "  {:<26} {:>8} {:>10.2} {:>14}",
            "syscalls per chunk",
            th.syscalls_per_chunk,
            per(m.syscalls),
            m.syscalls
        );
        let _ = writeln!(
            s,
            "  {:<26} {:>8} {:>10.2} {:>14}",
            "mode switches per chunk",
            th.mode_switches_per_chunk,
            per(m.mode_switches),
            m.mode_switches
        );
        let _ = writeln!(
            s,
            "  {:<26} {:>8} {:>10.2} {:>14}",
            "CPU copies per byte",
            th.cpu_copies,
            m.cpu_copies_per_byte(r.bytes),
            human_bytes(m.cpu_copy_total())
        );
        let _ = writeln!(
            s,
            "  {:<26} {:>8} {:>10.2} {:>14}",
            "DMA copies per byte",
            th.dma_copies,
            m.dma_copies_per_byte(r.bytes),
            human_bytes(m.dma_total())
        );
        let c = &m.cpu_copy_bytes;
        let _ = writeln!(
            s,
            "  CPU copy bytes: user->kernel {} ({}), kernel->user {} ({}), kernel->kernel {} ({})",
            human_bytes(c.user_to_kernel.value),
            src(&c.user_to_kernel),
            human_bytes(c.kernel_to_user.value),
            src(&c.kernel_to_user),
            human_bytes(c.kernel_to_kernel.value),
            src(&c.kernel_to_kernel)
        );
        let _ = writeln!(
            s,
            "  page references {} ({}), pinned {}, O_DIRECT {}, disk read {} / write {}, no-DMA xmit (loopback, veth) on this thread {}",
            human_bytes(m.page_ref_bytes.value),
            src(&m.page_ref_bytes),
            human_bytes(m.zerocopy_pinned_bytes),
            human_bytes(m.direct_io_bytes),
            human_bytes(m.dma_bytes.disk_read),
            human_bytes(m.dma_bytes.disk_write),
            human_bytes(m.loopback_bytes)
        );
        let _ = writeln!(
            s,
            "  context switches {} voluntary / {} involuntary; page faults {} user / {} kernel; \
             {} other syscalls on the thread",
            m.context_switches.voluntary,
            m.context_switches.involuntary,
            m.page_faults_user,
            m.page_faults_kernel,
            r.sender_other_syscalls
        );
        if m.uring.ops > 0 {
            let _ = writeln!(
                s,
                "  io_uring: {} requests completed; {} zero-copy notifications, {} reporting a copy",
                m.uring.ops, m.uring.zc_notifications, m.uring.zc_copied
            );
        }
        if let Some(rx) = &r.receiver {
            let k2u = &rx.cpu_copy_bytes.kernel_to_user;
            let _ = writeln!(
                s,
                "  receiver (not part of the method): {} syscalls, kernel->user {} ({}), {} context switches",
                rx.syscalls,
                human_bytes(k2u.value),
                src(k2u),
                rx.context_switches.voluntary + rx.context_switches.involuntary
            );
        }
        for n in &r.notes {
            let _ = writeln!(s, "  * {n}");
        }
    }
    s
}

/// Probe health, when anything was lost.
pub fn footer(stats: &Stats) -> String {
    let mut s = String::new();
    if stats.unclassified_calls > 0 {
        let _ = writeln!(
            s,
            "\nprobe health: {} calls counted without their classification (method other: \
             a hand-over between zctrace's programs failed)",
            stats.unclassified_calls
        );
    }
    if stats.events_dropped + stats.thread_map_full > 0 {
        let _ = writeln!(
            s,
            "\nprobe health: {} events dropped (the event log only), {} threads had no state \
             (the kernel refused the memory: their syscalls are not counted)",
            stats.events_dropped, stats.thread_map_full
        );
    }
    let f = &stats.fallback;
    if stats.counter_map_full > 0 || f.rows > 0 {
        let _ = writeln!(
            s,
            "row map full ({} of {} rows): {} counts went to fallback rows (method map-full: \
             {} syscalls, {} moved, {} CPU-copied); the totals are exact, their methods and \
             flows are not (a larger --max-rows keeps them apart)",
            stats.rows_used,
            stats.row_capacity,
            stats.counter_map_full,
            f.syscalls,
            human_bytes(f.io_bytes),
            human_bytes(f.copy_bytes)
        );
    }
    let seen: u64 = stats.accounts.iter().map(|a| a.seen).sum();
    if seen > 0 {
        let charged: u64 = stats.accounts.iter().map(|a| a.charged).sum();
        let mut reasons: std::collections::BTreeMap<&str, u64> = Default::default();
        for a in &stats.accounts {
            for (r, v) in &a.unattributed_by_reason {
                *reasons.entry(r).or_default() += v;
            }
        }
        let why = if reasons.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = reasons
                .iter()
                .map(|(r, v)| format!("{} {}", r.replace('_', " "), human_bytes(*v)))
                .collect();
            format!(" ({})", parts.join(", "))
        };
        let _ = writeln!(
            s,
            "ledger: the payload hooks saw {}: {} charged to processes, {} unattributed{why}",
            human_bytes(seen),
            human_bytes(charged),
            human_bytes(stats.unattributed_bytes),
        );
    }
    if stats.unaccounted_bytes != 0 {
        let _ = writeln!(
            s,
            "ledger: {} bytes seen by the hooks are in no row and no bucket ({}): traffic \
             between the two reads of a live sample, or lost",
            stats.unaccounted_bytes,
            stats
                .accounts
                .iter()
                .filter(|a| a.unaccounted != 0)
                .map(|a| format!("{} {}", a.name, a.unaccounted))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if stats.uring_worker_bytes > 0 {
        let _ = writeln!(
            s,
            "io_uring: {} of copies seen on io-wq worker threads, kept apart: the requests' \
             results count them under the requests' methods",
            human_bytes(stats.uring_worker_bytes)
        );
    }
    if stats.uring_overflow_ops > 0 {
        let _ = writeln!(
            s,
            "io_uring: {} completions ({}) overflowed a full completion queue: the kernel \
             reports them without their request, so they are counted here, unattributed",
            stats.uring_overflow_ops,
            human_bytes(stats.uring_overflow_bytes)
        );
    }
    if stats.uring_unattributed_ops + stats.uring_map_full > 0 {
        let _ = writeln!(
            s,
            "io_uring: {} requests ({}) completed unattributed (submitted before zctrace \
             attached, or not remembered: {} did not fit the in-flight map)",
            stats.uring_unattributed_ops,
            human_bytes(stats.uring_unattributed_bytes),
            stats.uring_map_full
        );
    }
    s
}
