//! The kernel hooks zctrace uses, each named once.
//!
//! A [`Hook`] says which eBPF program(s) serve it, which kernel tracepoint
//! or function it attaches to, its tier and what it is for. Everything else
//! (the loader, the model's provenance labels, the self-test, the
//! benchmark's floor) names hooks through this enum, so a misspelt hook
//! does not compile, and a test checks that every program named here is in
//! the embedded object. No aya in here: the model uses it too.

use serde::Serialize;

/// Which family of probes produced a number (see docs/MEASUREMENT.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Tracepoints, raw tracepoints and BTF tracepoints.
    Tracepoint,
    /// fexit (or kprobe) programs on the functions that perform the copies.
    CopySite,
}

/// How a hook's program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    RawTracepoint,
    BtfTracepoint,
    /// fexit on the target, else a kprobe (`entry`) / kretprobe (`exit`)
    /// pair.
    CopySite {
        entry: &'static str,
        exit: &'static str,
    },
}

/// Everything the loader needs to know about one hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The eBPF program (the fexit program for copy sites).
    pub program: &'static str,
    /// The tracepoint or kernel function.
    pub target: &'static str,
    pub kind: Kind,
    pub tier: Tier,
    /// Without it zctrace cannot count anything.
    pub required: bool,
    pub purpose: &'static str,
    /// The empty program of the benchmark's floor on the same target.
    pub floor: Option<&'static str>,
    /// An older kernel's name for the same tracepoint, tried when the
    /// kernel has no `target` (the program reads its arguments where
    /// that kernel passes them: see `KernelLayout`).
    pub alias: Option<&'static str>,
    /// Checked at start (loaded, attached and detached again), then
    /// attached only while something needs it: a program on the raw
    /// syscall tracepoints costs every process on the host.
    pub on_demand: bool,
    /// The hook's classifier and the program array they hand calls over
    /// in (see `zctrace_common::chain`): loaded, never attached, and put
    /// in the array with the hook's own program before the hook attaches.
    pub chain: Option<Chain>,
}

/// A hook's classifier program and its chain map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    pub program: &'static str,
    /// The same classifier in the form older verifiers (6.1's) check
    /// within their budget, slower to check on newer ones.
    pub split: &'static str,
    pub map: &'static str,
}

impl Chain {
    /// The classifier to load first, then the other if the kernel refuses
    /// it: the split form before Linux 6.12.
    pub fn order(self, release: &str) -> [&'static str; 2] {
        let mut v = release
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u32>().ok());
        let version = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        if version < (6, 12) {
            [self.split, self.program]
        } else {
            [self.program, self.split]
        }
    }
}

/// Every hook, in the order they are attached and listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    SysEnter,
    SysExit,
    SchedSwitch,
    SchedProcessFork,
    SchedProcessExit,
    PageFaultUser,
    PageFaultKernel,
    SkbCopyDatagramIovec,
    TcpSendmsgLocked,
    NetDevXmit,
    BlockRqInsert,
    BlockRqRequeue,
    BlockRqIssue,
    UringSubmitReq,
    UringComplete,
    UringCqeOverflow,
    CgroupAttachTask,
    TaskRename,
    SiteFilemapRead,
    SiteShmemRead,
    SitePerformWrite,
    SitePipeRead,
    SitePipeWrite,
    SiteSkbCopy,
    SiteTcpSendmsg,
    SiteSendpages,
}

/// The floor's one empty raw-tracepoint program serves every raw hook.
pub const FLOOR_RAW: &str = "floor_raw";

const fn tracepoint(
    program: &'static str,
    kind: Kind,
    required: bool,
    purpose: &'static str,
    floor: Option<&'static str>,
) -> Spec {
    Spec {
        program,
        target: program,
        kind,
        tier: Tier::Tracepoint,
        required,
        purpose,
        floor,
        alias: None,
        on_demand: false,
        chain: None,
    }
}

const fn site(
    program: &'static str,
    target: &'static str,
    entry: &'static str,
    exit: &'static str,
    purpose: &'static str,
) -> Spec {
    Spec {
        program,
        target,
        kind: Kind::CopySite { entry, exit },
        tier: Tier::CopySite,
        required: false,
        purpose,
        floor: None,
        alias: None,
        on_demand: false,
        chain: None,
    }
}

impl Hook {
    pub const ALL: [Hook; 26] = [
        Hook::SysEnter,
        Hook::SysExit,
        Hook::SchedSwitch,
        Hook::SchedProcessFork,
        Hook::SchedProcessExit,
        Hook::PageFaultUser,
        Hook::PageFaultKernel,
        Hook::SkbCopyDatagramIovec,
        Hook::TcpSendmsgLocked,
        Hook::NetDevXmit,
        Hook::BlockRqInsert,
        Hook::BlockRqRequeue,
        Hook::BlockRqIssue,
        Hook::UringSubmitReq,
        Hook::UringComplete,
        Hook::UringCqeOverflow,
        Hook::CgroupAttachTask,
        Hook::TaskRename,
        Hook::SiteFilemapRead,
        Hook::SiteShmemRead,
        Hook::SitePerformWrite,
        Hook::SitePipeRead,
        Hook::SitePipeWrite,
        Hook::SiteSkbCopy,
        Hook::SiteTcpSendmsg,
        Hook::SiteSendpages,
    ];

    /// The copy-site hooks without which that tier would miss copies of the
    /// demo's methods (pipes and the pre-6.5 sendpage path are extras).
    pub const COPY_SITE_CORE: [Hook; 5] = [
        Hook::SiteFilemapRead,
        Hook::SiteShmemRead,
        Hook::SitePerformWrite,
        Hook::SiteSkbCopy,
        Hook::SiteTcpSendmsg,
    ];

    pub const fn spec(self) -> Spec {
        use Kind::{BtfTracepoint as Btf, RawTracepoint as Raw};
        match self {
            Hook::SysEnter => Spec {
                on_demand: true,
                ..tracepoint(
                    "sys_enter",
                    Btf,
                    false,
                    "syscall start, for the event log's durations (attached while the log is open)",
                    Some("floor_sys_enter"),
                )
            },
            Hook::SysExit => Spec {
                chain: Some(Chain {
                    program: "sys_exit_classify",
                    split: "sys_exit_classify_split",
                    map: "EXIT_CHAIN",
                }),
                ..tracepoint(
                    "sys_exit",
                    Btf,
                    true,
                    "each syscall: its call, fds and method (from the saved registers), bytes moved",
                    Some("floor_sys_exit"),
                )
            },
            Hook::SchedSwitch => tracepoint(
                "sched_switch",
                Btf,
                false,
                "context switches",
                Some("floor_sched_switch"),
            ),
            Hook::SchedProcessFork => tracepoint(
                "sched_process_fork",
                Raw,
                false,
                "follow forked children",
                Some(FLOOR_RAW),
            ),
            Hook::SchedProcessExit => tracepoint(
                "sched_process_exit",
                Raw,
                false,
                "notice exits, free thread state",
                Some(FLOOR_RAW),
            ),
            Hook::PageFaultUser => tracepoint(
                "page_fault_user",
                Raw,
                false,
                "user page faults (mode switches)",
                Some(FLOOR_RAW),
            ),
            Hook::PageFaultKernel => tracepoint(
                "page_fault_kernel",
                Raw,
                false,
                "kernel-mode faults on user memory",
                Some(FLOOR_RAW),
            ),
            Hook::SkbCopyDatagramIovec => tracepoint(
                "skb_copy_datagram_iovec",
                Raw,
                false,
                "socket receive copies to user memory",
                Some(FLOOR_RAW),
            ),
            Hook::TcpSendmsgLocked => tracepoint(
                "tcp_sendmsg_locked",
                Btf,
                false,
                "TCP send: user copy, pinned pages or page references",
                Some("floor_tcp_sendmsg_locked"),
            ),
            Hook::NetDevXmit => tracepoint(
                "net_dev_xmit",
                Btf,
                false,
                "transmitted bytes: loopback vs device DMA",
                Some("floor_net_dev_xmit"),
            ),
            Hook::BlockRqInsert => tracepoint(
                "block_rq_insert",
                Raw,
                false,
                "who queued each disk request (a scheduler issues it later, often from a worker)",
                Some(FLOOR_RAW),
            ),
            Hook::BlockRqRequeue => tracepoint(
                "block_rq_requeue",
                Raw,
                false,
                "disk requests the driver sent back: their next issue is not counted again",
                Some(FLOOR_RAW),
            ),
            Hook::BlockRqIssue => tracepoint(
                "block_rq_issue",
                Raw,
                false,
                "disk DMA bytes at request issue",
                Some(FLOOR_RAW),
            ),
            Hook::UringSubmitReq => Spec {
                // Named io_uring_submit_sqe before 6.3.
                alias: Some("io_uring_submit_sqe"),
                ..tracepoint(
                    "io_uring_submit_req",
                    Raw,
                    false,
                    "io_uring requests: who submitted which operation",
                    Some(FLOOR_RAW),
                )
            },
            Hook::UringComplete => tracepoint(
                "io_uring_complete",
                Raw,
                false,
                "io_uring results: bytes per operation, zero-copy notifications",
                Some(FLOOR_RAW),
            ),
            Hook::UringCqeOverflow => tracepoint(
                "io_uring_cqe_overflow",
                Raw,
                false,
                "io_uring completions that overflowed the queue (counted, unattributed)",
                Some(FLOOR_RAW),
            ),
            Hook::CgroupAttachTask => tracepoint(
                "cgroup_attach_task",
                Raw,
                false,
                "--cgroup: processes moved into the cgroup are traced from then on",
                Some(FLOOR_RAW),
            ),
            Hook::TaskRename => tracepoint(
                "task_rename",
                Raw,
                false,
                "process names as they change (else /proc is read again every 10 s)",
                Some(FLOOR_RAW),
            ),
            Hook::SiteFilemapRead => site(
                "fx_filemap_read",
                "filemap_read",
                "kp_filemap_read",
                "kr_filemap_read",
                "page cache to user memory (read of a cached file)",
            ),
            Hook::SiteShmemRead => site(
                "fx_shmem_read",
                "shmem_file_read_iter",
                "kp_shmem_read",
                "kr_shmem_read",
                "tmpfs pages to user memory (tmpfs bypasses filemap_read)",
            ),
            Hook::SitePerformWrite => site(
                "fx_perform_write",
                "generic_perform_write",
                "kp_perform_write",
                "kr_perform_write",
                "user or kernel memory into the page cache",
            ),
            Hook::SitePipeRead => site(
                "fx_pipe_read",
                "pipe_read",
                "kp_pipe_read",
                "kr_pipe_read",
                "pipe buffers to user memory",
            ),
            Hook::SitePipeWrite => site(
                "fx_pipe_write",
                "pipe_write",
                "kp_pipe_write",
                "kr_pipe_write",
                "user memory into pipe buffers",
            ),
            Hook::SiteSkbCopy => site(
                "fx_skb_copy",
                "skb_copy_datagram_iter",
                "kp_skb_copy",
                "kr_skb_copy",
                "socket data to the receiver's memory",
            ),
            Hook::SiteTcpSendmsg => site(
                "fx_tcp_sendmsg",
                "tcp_sendmsg_locked",
                "kp_tcp_sendmsg",
                "kr_tcp_sendmsg",
                "TCP send: copy, pin or page references, with the byte count",
            ),
            Hook::SiteSendpages => site(
                "fx_sendpages",
                "do_tcp_sendpages",
                "kp_sendpages",
                "kr_sendpages",
                "pages handed to TCP by reference (kernels before 6.5)",
            ),
        }
    }

    /// The tracepoint or kernel function: the name users see (a name can
    /// exist in both tiers: `tcp_sendmsg_locked`).
    pub const fn target(self) -> &'static str {
        self.spec().target
    }

    pub const fn tier(self) -> Tier {
        self.spec().tier
    }

    /// Every eBPF program this hook may load (both of a copy site's
    /// mechanisms, its classifier, and its floor program).
    pub fn programs(self) -> impl Iterator<Item = &'static str> {
        let s = self.spec();
        let pair = match s.kind {
            Kind::CopySite { entry, exit } => [Some(entry), Some(exit)],
            _ => [None, None],
        };
        std::iter::once(s.program)
            .chain(pair.into_iter().flatten())
            .chain(s.chain.into_iter().flat_map(|c| [c.program, c.split]))
            .chain(s.floor)
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// The hook a user names (`--require-hook NAME`): the tracepoint tier's
/// hook of that target first, as its name is the one users know.
pub fn by_target(name: &str) -> Option<Hook> {
    Hook::ALL.into_iter().find(|h| h.target() == name)
}

/// Which hooks attached: the model's choice between observed and derived
/// numbers depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookSet(u32);

impl HookSet {
    pub fn of(attached: impl IntoIterator<Item = Hook>) -> Self {
        HookSet(attached.into_iter().fold(0, |set, h| set | h.bit()))
    }

    /// Every tracepoint-tier hook (what this project's host attaches).
    pub fn tracepoint_tier() -> Self {
        HookSet::of(
            Hook::ALL
                .into_iter()
                .filter(|h| h.tier() == Tier::Tracepoint),
        )
    }

    pub const fn has(self, hook: Hook) -> bool {
        self.0 & hook.bit() != 0
    }

    /// The CPU-copy directions come from the copy-site tier only when all
    /// of its main sites are in: a partial tier would miss copies.
    pub fn copy_site(self) -> bool {
        Hook::COPY_SITE_CORE.iter().all(|&h| self.has(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_is_listed_once_and_fits_the_set() {
        assert!(Hook::ALL.len() <= 32);
        for (i, h) in Hook::ALL.iter().enumerate() {
            assert_eq!(*h as usize, i, "ALL is in declaration order");
        }
        let set = HookSet::of(Hook::COPY_SITE_CORE);
        assert!(set.copy_site());
        assert!(!set.has(Hook::SysEnter));
        assert!(!HookSet::of([Hook::SiteFilemapRead]).copy_site());
    }

    #[test]
    fn users_name_hooks_by_target_and_the_tracepoint_tier_wins() {
        assert_eq!(
            by_target("tcp_sendmsg_locked"),
            Some(Hook::TcpSendmsgLocked)
        );
        assert_eq!(by_target("filemap_read"), Some(Hook::SiteFilemapRead));
        assert_eq!(by_target("nope"), None);
    }
}

#[cfg(test)]
mod chain_tests {
    use super::Hook;

    #[test]
    fn the_split_classifier_comes_first_before_6_12() {
        let c = Hook::SysExit
            .spec()
            .chain
            .expect("sys_exit has a classifier");
        assert_eq!(c.order("6.1.0-57-amd64"), [c.split, c.program]);
        assert_eq!(c.order("5.15.0"), [c.split, c.program]);
        assert_eq!(c.order("6.12.118+deb12-amd64"), [c.program, c.split]);
        assert_eq!(c.order("6.18.44"), [c.program, c.split]);
        assert_eq!(c.order("7.0"), [c.program, c.split]);
        assert_ne!(c.program, c.split);
    }
}
