//! Attaching one hook, tier by tier, with the kernel's reason when it
//! refuses.

use std::{collections::HashMap, sync::Mutex};

use aya::{
    Ebpf,
    programs::{BtfTracePoint, FExit, KProbe, Program, ProgramError, RawTracePoint},
};

use crate::hooks::{Hook, Kind};

/// How a hook is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    RawTracepoint,
    TpBtf,
    Fexit,
    Kprobe,
}

impl Via {
    pub const fn name(self) -> &'static str {
        match self {
            Via::RawTracepoint => "raw_tracepoint",
            Via::TpBtf => "tp_btf",
            Via::Fexit => "fexit",
            Via::Kprobe => "kprobe",
        }
    }
}

/// A hook attached: how, and to what (the hook's target, or its alias on
/// a kernel that names it so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attached {
    pub via: Via,
    pub target: &'static str,
}

/// Why a hook did not attach: the kernel's reason on one line, and the
/// errno it gave, if any, for callers to match on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AttachError {
    pub message: String,
    pub errno: Option<i32>,
}

impl AttachError {
    fn new(message: impl Into<String>) -> Self {
        AttachError {
            message: message.into(),
            errno: None,
        }
    }
}

impl From<ProgramError> for AttachError {
    fn from(e: ProgramError) -> Self {
        AttachError {
            message: error_chain(&e),
            errno: errno(&e),
        }
    }
}

/// The first OS error in an error's chain (aya wraps the `bpf()` and
/// `perf_event_open()` syscalls' `io::Error`s).
pub fn errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut src = Some(e);
    while let Some(e) = src {
        if let Some(n) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(n);
        }
        src = e.source();
    }
    None
}

/// Formats an error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    let s = s.replace('\n', " ");
    // aya appends the verifier log; an empty one is noise.
    s.trim()
        .trim_end_matches("Verifier output:")
        .trim()
        .to_owned()
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Program, AttachError> {
    ebpf.program_mut(name)
        .ok_or_else(|| AttachError::new(format!("program {name} not in the object")))
}

fn no_btf() -> AttachError {
    AttachError::new("the kernel's BTF could not be read")
}

/// Where the kernel publishes the kprobe PMU's type (absent: no kprobes).
/// The running kernel's release (`uname -r`), read once.
fn kernel_release() -> String {
    static RELEASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RELEASE
        .get_or_init(crate::preflight::kernel_release)
        .clone()
}

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

/// Programs loaded ahead of their attach by [`preload`], by name, with how
/// the load went.
pub type Preloaded = HashMap<&'static str, Result<(), AttachError>>;

/// Whether the copy sites skip fexit (`ZCTRACE_COPY_SITE=kprobe`, to test
/// the kprobe fallback).
/// Why a copy site attached by neither fexit nor kprobe (see
/// [`fexit_refusal`], which reads the fexit part back).
pub(crate) fn copy_site_reason(fexit: &str, kprobe: &str) -> String {
    // (aya's messages may end in a full stop.)
    format!("fexit: {}; kprobe: {kprobe}", fexit.trim_end_matches('.'))
}

/// The kernel's answer to fexit in a copy site's reason for not attaching.
pub fn fexit_refusal(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("fexit: ")?;
    Some(rest.split_once("; kprobe: ").map_or(rest, |(f, _)| f))
}

fn fexit_skipped() -> bool {
    std::env::var("ZCTRACE_COPY_SITE").as_deref() == Ok("kprobe")
}

/// Loads the first program of every hook (a tracepoint's, a copy site's
/// fexit) before any is attached, on as many threads as the machine has
/// CPUs: the kernel verifies a privileged program without a global lock,
/// and verifying them is most of zctrace's start-up. Nothing is attached
/// here, so the order of attaching, and what each attach sees, is as it
/// was; only the waiting is shared.
pub fn preload(ebpf: &mut Ebpf, hooks: &[Hook], btf: Option<&aya::Btf>) -> Preloaded {
    let skip_fexit = fexit_skipped();
    // Each program with the hook whose kind and target it loads for (a
    // classifier loads as its hook does).
    let wanted: HashMap<&'static str, Hook> = hooks
        .iter()
        .filter(|h| !(skip_fexit && matches!(h.spec().kind, Kind::CopySite { .. })))
        .flat_map(|&h| {
            let spec = h.spec();
            let first = spec.chain.map(|c| (c.order(&kernel_release())[0], h));
            std::iter::once((spec.program, h)).chain(first)
        })
        .collect();
    let jobs: Vec<(&'static str, Hook, &mut Program)> = ebpf
        .programs_mut()
        .filter_map(|(name, p)| wanted.get_key_value(name).map(|(&n, &h)| (n, h, p)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(jobs.len().max(1));
    let mut jobs = jobs;
    // The largest first, so that no thread is left verifying a big one
    // while the others are done: the classifiers, then the syscall
    // programs, then the rest.
    jobs.sort_by_key(|(name, h, _)| {
        let classifier = h
            .spec()
            .chain
            .is_some_and(|c| [c.program, c.split].contains(name));
        match (classifier, h) {
            (true, _) => 0,
            (false, Hook::SysEnter | Hook::SysExit) => 1,
            _ => 2,
        }
    });
    let queue = Mutex::new(jobs.into_iter());
    let load = |hook: Hook, p: &mut Program| -> Result<(), AttachError> {
        let spec = hook.spec();
        match spec.kind {
            Kind::RawTracepoint => <&mut RawTracePoint>::try_from(p)?.load()?,
            Kind::BtfTracepoint => {
                <&mut BtfTracePoint>::try_from(p)?.load(spec.target, btf.ok_or_else(no_btf)?)?;
            }
            Kind::CopySite { .. } => {
                <&mut FExit>::try_from(p)?.load(spec.target, btf.ok_or_else(no_btf)?)?;
            }
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let next = queue.lock().map(|mut q| q.next());
                        let Ok(Some((name, hook, p))) = next else {
                            break;
                        };
                        done.push((name, load(hook, p)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// Checks an on-demand hook (see `Spec::on_demand`, BTF tracepoints
/// only): loaded, attached and detached again, so that the kernel's answer
/// is known at start and attaching it later cannot fail for a reason
/// nobody was told.
pub fn check_on_demand(
    ebpf: &mut Ebpf,
    hook: Hook,
    btf: Option<&aya::Btf>,
    preloaded: &mut Preloaded,
) -> Result<Attached, AttachError> {
    let spec = hook.spec();
    let p = loaded_btf(ebpf, hook, btf.ok_or_else(no_btf)?, preloaded)?;
    let link = p.attach()?;
    p.detach(link)?;
    Ok(Attached {
        via: Via::TpBtf,
        target: spec.target,
    })
}

/// A BTF tracepoint hook's program, loaded (unless [`preload`] did).
fn loaded_btf<'a>(
    ebpf: &'a mut Ebpf,
    hook: Hook,
    btf: &aya::Btf,
    preloaded: &mut Preloaded,
) -> Result<&'a mut BtfTracePoint, AttachError> {
    let spec = hook.spec();
    let p: &mut BtfTracePoint = program(ebpf, spec.program)?.try_into()?;
    match preloaded.remove(spec.program) {
        Some(loaded) => loaded?,
        None => p.load(spec.target, btf)?,
    }
    Ok(p)
}

/// Attaches a checked on-demand hook's program (see `check_on_demand`).
pub fn attach_loaded(
    ebpf: &mut Ebpf,
    hook: Hook,
) -> Result<aya::programs::tp_btf::BtfTracePointLinkId, AttachError> {
    let p: &mut BtfTracePoint = program(ebpf, hook.spec().program)?.try_into()?;
    Ok(p.attach()?)
}

/// Detaches what `attach_loaded` attached.
pub fn detach_loaded(
    ebpf: &mut Ebpf,
    hook: Hook,
    link: aya::programs::tp_btf::BtfTracePointLinkId,
) -> Result<(), AttachError> {
    let p: &mut BtfTracePoint = program(ebpf, hook.spec().program)?.try_into()?;
    Ok(p.detach(link)?)
}

/// Puts a hook's classifier and its own program (both loaded) in their
/// chain map (see `Spec::chain`), before the hook attaches: a hook whose
/// classifier the kernel refuses is refused with that reason.
fn link_chain(
    ebpf: &mut Ebpf,
    hook: Hook,
    btf: Option<&aya::Btf>,
    preloaded: &mut Preloaded,
) -> Result<(), AttachError> {
    let spec = hook.spec();
    let Some(chain) = spec.chain else {
        return Ok(());
    };
    let why = |e: AttachError| AttachError {
        message: format!("its classifier {}: {}", chain.program, e.message),
        errno: e.errno,
    };
    // The form for this kernel's verifier, else the other one.
    let [first, second] = chain.order(&kernel_release());
    let mut load = |name: &'static str| -> Result<(), AttachError> {
        if let Some(r) = preloaded.remove(name) {
            return r;
        }
        let classifier = program(ebpf, name)?;
        match spec.kind {
            Kind::RawTracepoint => <&mut RawTracePoint>::try_from(classifier)?.load()?,
            _ => <&mut BtfTracePoint>::try_from(classifier)?
                .load(spec.target, btf.ok_or_else(no_btf)?)?,
        }
        Ok(())
    };
    let used = match load(first) {
        Ok(()) => first,
        Err(e) => match load(second) {
            Ok(()) => second,
            Err(e2) => {
                return Err(why(AttachError {
                    message: format!("{}; {second}: {}", e.message, e2.message),
                    errno: e.errno,
                }));
            }
        },
    };
    let fd = |ebpf: &Ebpf, name: &str| -> Result<aya::programs::ProgramFd, AttachError> {
        let p = ebpf
            .program(name)
            .ok_or_else(|| AttachError::new(format!("program {name} not in the object")))?;
        let fd = p.fd().map_err(AttachError::from)?;
        fd.try_clone()
            .map_err(|e| AttachError::new(format!("duplicating {name}'s fd: {e}")))
    };
    let (classify, back) = (fd(ebpf, used)?, fd(ebpf, spec.program)?);
    let map = ebpf
        .map_mut(chain.map)
        .ok_or_else(|| AttachError::new(format!("map {} not in the object", chain.map)))?;
    let mut array = aya::maps::ProgramArray::try_from(map)
        .map_err(|e| AttachError::new(format!("{}: {e}", chain.map)))?;
    for (slot, fd) in [
        (zctrace_common::chain::CLASSIFY, &classify),
        (zctrace_common::chain::BACK, &back),
    ] {
        array
            .set(slot, fd, 0)
            .map_err(|e| AttachError::new(format!("{} slot {slot}: {e}", chain.map)))?;
    }
    Ok(())
}

/// Attaches one hook (loading its program unless [`preload`] did); returns
/// how, or why not.
pub fn attach(
    ebpf: &mut Ebpf,
    hook: Hook,
    btf: Option<&aya::Btf>,
    preloaded: &mut Preloaded,
) -> Result<Attached, AttachError> {
    let spec = hook.spec();
    let on = |via| Attached {
        via,
        target: spec.target,
    };
    match spec.kind {
        Kind::RawTracepoint => {
            let p: &mut RawTracePoint = program(ebpf, spec.program)?.try_into()?;
            match preloaded.remove(spec.program) {
                Some(loaded) => loaded?,
                None => p.load()?,
            }
            link_chain(ebpf, hook, btf, preloaded)?;
            let p: &mut RawTracePoint = program(ebpf, spec.program)?.try_into()?;
            match (p.attach(spec.target), spec.alias) {
                (Ok(_), _) => Ok(on(Via::RawTracepoint)),
                (Err(first), Some(alias)) => match p.attach(alias) {
                    Ok(_) => Ok(Attached {
                        via: Via::RawTracepoint,
                        target: alias,
                    }),
                    Err(second) => {
                        let (first, second) = (AttachError::from(first), AttachError::from(second));
                        Err(AttachError {
                            message: format!(
                                "{}; as {alias}: {}",
                                first.message.trim_end_matches('.'),
                                second.message
                            ),
                            errno: first.errno,
                        })
                    }
                },
                (Err(e), None) => Err(e.into()),
            }
        }
        Kind::BtfTracepoint => {
            let btf = btf.ok_or_else(no_btf)?;
            loaded_btf(ebpf, hook, btf, preloaded)?;
            link_chain(ebpf, hook, Some(btf), preloaded)?;
            let p: &mut BtfTracePoint = program(ebpf, spec.program)?.try_into()?;
            p.attach()?;
            Ok(on(Via::TpBtf))
        }
        Kind::CopySite { entry, exit } => {
            // ZCTRACE_COPY_SITE=kprobe skips fexit (to test the fallback).
            let fexit_err = if fexit_skipped() {
                AttachError::new("skipped (ZCTRACE_COPY_SITE=kprobe)")
            } else {
                let r = (|| -> Result<(), AttachError> {
                    let btf = btf.ok_or_else(no_btf)?;
                    let p: &mut FExit = program(ebpf, spec.program)?.try_into()?;
                    match preloaded.remove(spec.program) {
                        Some(loaded) => loaded?,
                        None => p.load(spec.target, btf)?,
                    }
                    p.attach()?;
                    Ok(())
                })();
                match r {
                    Ok(()) => return Ok(on(Via::Fexit)),
                    Err(e) => e,
                }
            };
            let pair = |ebpf: &mut Ebpf| -> Result<(), AttachError> {
                // Without the kprobe PMU no kprobe can attach: say so
                // without first verifying two programs for nothing (aya
                // reads the same file when attaching).
                if let Err(e) = std::fs::metadata(KPROBE_PMU) {
                    return Err(AttachError {
                        message: format!("`{KPROBE_PMU}`: {e}"),
                        errno: e.raw_os_error(),
                    });
                }
                for name in [entry, exit] {
                    let p: &mut KProbe = program(ebpf, name)?.try_into()?;
                    p.load()?;
                    p.attach(spec.target, 0)?;
                }
                Ok(())
            };
            match pair(ebpf) {
                Ok(()) => Ok(on(Via::Kprobe)),
                Err(e) => {
                    // Never leave half a pair behind: unload whichever loaded.
                    for name in [entry, exit] {
                        if let Ok(p) = program(ebpf, name)
                            && let Ok(p) = <&mut KProbe>::try_from(p)
                        {
                            let _ = p.unload();
                        }
                    }
                    Err(AttachError {
                        message: copy_site_reason(&fexit_err.message, &e.message),
                        errno: fexit_err.errno.or(e.errno),
                    })
                }
            }
        }
    }
}
