//! How the syscalls are hooked, decided at start-up, with the reason
//! `zctrace hooks` prints.
//!
//! Two mechanisms could see the syscalls:
//! - the raw syscall tracepoint (`sys_exit`, and `sys_enter` while the
//!   event log is open): it sees every syscall of every thread, so a
//!   traced process's mode switches are all counted; while a program is on
//!   it, the kernel sends every thread of the machine, traced or not, down
//!   its slower syscall path;
//! - fexit on the I/O syscalls' own functions (`__x64_sys_read`, ...):
//!   only those calls enter a program, so an untraced process's other
//!   syscalls pay nothing, but a traced process's other syscalls are not
//!   seen at all, and each I/O call of an untraced process enters a
//!   program through a trampoline (`cargo xtask vm-bench` measures both
//!   inside Debian 6.1 and 6.12: fexit taxes an untraced I/O loop as much
//!   as the tracepoint does, or more).
//!
//! Only a mechanism that sees every syscall of a traced process can give
//! the counts MEASUREMENT.md defines, so the tracepoint is chosen wherever
//! fexit attaches too; what is reported is whether it does here, and why
//! it is not used.

use super::{HookStatus, attach::Via, attach::fexit_refusal};
use crate::hooks::Tier;

/// What this kernel said of fexit, from the copy-site hooks (fexit
/// programs loaded anyway for the copy-site tier: no extra cost).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fexit {
    /// At least one copy site attached by fexit.
    Attaches,
    /// The kernel's answer to the first copy site's fexit.
    Refused(String),
    /// No copy site tried fexit (none is hooked, or it was skipped).
    Untried,
}

/// The syscall mechanism in force and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mechanism {
    pub fexit: Fexit,
}

impl Mechanism {
    pub fn of(hooks: &[HookStatus]) -> Self {
        let copy_sites = || hooks.iter().filter(|h| h.tier == Tier::CopySite);
        let fexit = if copy_sites().any(|h| h.via == Some(Via::Fexit)) {
            Fexit::Attaches
        } else {
            copy_sites()
                .filter_map(|h| h.reason.as_deref())
                .find_map(fexit_refusal)
                .map_or(Fexit::Untried, |r| Fexit::Refused(r.to_owned()))
        };
        Mechanism { fexit }
    }

    /// What this kernel answered to fexit, in words.
    pub fn fexit_here(&self) -> String {
        match &self.fexit {
            Fexit::Attaches => "attaches on this kernel".to_owned(),
            Fexit::Refused(why) => format!("this kernel refuses it ({why})"),
            Fexit::Untried => "not tried".to_owned(),
        }
    }

    /// The lines `zctrace hooks` prints.
    pub fn describe(&self) -> String {
        let here = self.fexit_here();
        format!(
            "syscalls: on the raw syscall tracepoint (sys_exit; sys_enter while the event log is open)\n\
             \x20 fexit on the I/O syscalls' own functions: {here}\n\
             \x20 not used where it attaches either: it would see only the I/O calls, and every\n\
             \x20 syscall of a traced process is a mode switch to count; it would spare untraced\n\
             \x20 processes' other syscalls the kernel's slower path, but taxes their I/O calls\n\
             \x20 no less than the tracepoint does (`cargo xtask vm-bench`, BENCHMARKS.md)\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Hook;

    fn status(hook: Hook, via: Option<Via>, reason: Option<&str>) -> HookStatus {
        HookStatus {
            hook,
            tier: hook.spec().tier,
            attached: via.is_some(),
            via,
            reason: reason.map(str::to_owned),
            purpose: "",
            attached_as: None,
            on_demand: false,
        }
    }

    #[test]
    fn fexit_is_reported_from_the_copy_sites() {
        let exit = status(Hook::SysExit, Some(Via::TpBtf), None);
        // The reason as the copy site's attach writes it (aya's message
        // with its full stop).
        let reason = super::super::attach::copy_site_reason(
            "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1).",
            "no PMU",
        );
        let refused = status(Hook::SiteFilemapRead, None, Some(&reason));
        assert_eq!(
            Mechanism::of(&[exit.clone(), refused.clone()]).fexit,
            Fexit::Refused(
                "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)".into()
            )
        );
        // One copy site on fexit is enough to know it attaches.
        let on = status(Hook::SitePipeRead, Some(Via::Fexit), None);
        assert_eq!(
            Mechanism::of(&[exit.clone(), refused, on]).fexit,
            Fexit::Attaches
        );
        // On kprobes (fexit skipped): fexit not tried.
        let kp = status(Hook::SitePipeRead, Some(Via::Kprobe), None);
        assert_eq!(Mechanism::of(&[exit, kp]).fexit, Fexit::Untried);
    }

    #[test]
    fn the_reason_names_the_mechanism_and_the_kernel_s_answer() {
        let m = Mechanism {
            fexit: Fexit::Refused("EPERM".into()),
        };
        let text = m.describe();
        assert!(text.starts_with("syscalls: on the raw syscall tracepoint"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "  fexit on the I/O syscalls' own functions: this kernel refuses it (EPERM)"
        );
        assert_eq!(lines.len(), 6);
    }
}
