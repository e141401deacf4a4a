//! Checks that turn the usual user-caused failures into one clear line.

use std::path::Path;

use crate::probe::btf::VMLINUX_BTF;

/// A problem the user can fix, with its exit status.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// Exit status 3.
    #[error("{0}")]
    Privilege(String),
    /// Exit status 4.
    #[error("{0}")]
    Kernel(String),
}

impl Fatal {
    pub fn exit_code(&self) -> u8 {
        match self {
            Fatal::Privilege(_) => 3,
            Fatal::Kernel(_) => 4,
        }
    }
}

const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Root, or CAP_BPF + CAP_PERFMON, and kernel BTF.
pub fn check() -> Result<(), Fatal> {
    if !rustix::process::geteuid().is_root() {
        let eff = effective_caps().unwrap_or(0);
        let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
            .into_iter()
            .filter(|(bit, _)| eff & (1u64 << bit) == 0)
            .map(|(_, name)| name)
            .collect();
        if !missing.is_empty() {
            return Err(Fatal::Privilege(format!(
                "loading eBPF programs needs root or the {} capabilit{} (try: sudo zctrace ...)",
                missing.join(" and "),
                if missing.len() == 1 { "y" } else { "ies" }
            )));
        }
    }
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(Fatal::Kernel(format!(
            "this kernel exposes no BTF ({VMLINUX_BTF} is missing): zctrace needs a kernel \
             built with CONFIG_DEBUG_INFO_BTF=y"
        )));
    }
    Ok(())
}

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; raise it there.
/// Newer kernels account BPF memory by cgroup, so failure is harmless.
pub fn raise_memlock() -> Option<String> {
    let limit = rustix::process::Rlimit {
        current: None,
        maximum: None,
    };
    match rustix::process::setrlimit(rustix::process::Resource::Memlock, limit) {
        Ok(()) => None,
        Err(e) if kernel_at_least(5, 11) => {
            let _ = e;
            None
        }
        Err(e) => Some(format!(
            "could not raise RLIMIT_MEMLOCK ({e}); this kernel charges BPF maps to it, loading may fail"
        )),
    }
}

pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = kernel_release();
    let mut it = rel
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (ma, mi) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}
