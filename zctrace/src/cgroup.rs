//! `--cgroup PATH`: trace the processes of a cgroup v2 and its descendants.
//!
//! The probes compare the current thread's ancestor at the target's depth
//! with the target's id (`bpf_get_current_ancestor_cgroup_id`), which works
//! on the cgroup v2 hierarchy only; on a hybrid host (v1 controllers, v2
//! mounted at /sys/fs/cgroup/unified) systemd still places every unit in
//! the v2 hierarchy, so a unit is named by its path there.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use crate::trace::TargetError;

/// statfs(2)'s f_type of cgroup v2 and v1 file systems.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;

/// A cgroup to trace, as the probes need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupId {
    /// The cgroup's id: the inode number of its directory.
    pub id: u64,
    /// Its depth in the hierarchy (the root is 0).
    pub level: u32,
}

/// A resolved `--cgroup` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The directory.
    pub dir: PathBuf,
    /// Its path in the hierarchy ("/system.slice/nginx.service"): the
    /// `cgroup` label of the metrics.
    pub name: String,
    pub target: CgroupId,
}

/// A cgroup v2 mount: where it is, and which of the hierarchy's
/// directories is its root (not "/" inside a cgroup namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    root: PathBuf,
}

/// The cgroup v2 mounts in a /proc/self/mountinfo text.
fn cgroup2_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let f: Vec<&str> = left.split_whitespace().collect();
            Some(Mount {
                root: PathBuf::from(unescape(f.get(3)?)),
                point: PathBuf::from(unescape(f.get(4)?)),
            })
        })
        .collect()
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as \ooo.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Name and depth of `dir` in the hierarchy mounted by `m` (`dir` is
/// under `m.point`).
fn place(dir: &Path, m: &Mount) -> Option<(String, u32)> {
    let rel = dir.strip_prefix(&m.point).ok()?;
    let full = m.root.join(rel);
    let parts: Vec<String> = full
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    Some((format!("/{}", parts.join("/")), parts.len() as u32))
}

/// Where the v2 hierarchy is mounted here, for error messages.
fn v2_hint(mounts: &[Mount]) -> String {
    match mounts.first() {
        Some(m) => format!(
            "the cgroup v2 hierarchy is mounted at {}",
            m.point.display()
        ),
        None => "this host has no cgroup v2 hierarchy mounted".to_owned(),
    }
}

/// Checks a `--cgroup` directory and finds its id and depth.
pub fn resolve(path: &Path) -> Result<Cgroup, TargetError> {
    let dir = std::fs::canonicalize(path)
        .map_err(|e| TargetError(format!("--cgroup {}: {e}", path.display())))?;
    let meta = std::fs::metadata(&dir)
        .map_err(|e| TargetError(format!("--cgroup {}: {e}", path.display())))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = cgroup2_mounts(&mountinfo);
    let fs = rustix::fs::statfs(&dir)
        .map_err(|e| TargetError(format!("--cgroup {}: {e}", path.display())))?;
    let kind = fs.f_type as i64;
    if kind == CGROUP_SUPER_MAGIC {
        return Err(TargetError(format!(
            "--cgroup {}: a cgroup v1 directory; zctrace follows cgroup v2 cgroups ({}, \
             where systemd places every unit on a hybrid host too)",
            path.display(),
            v2_hint(&mounts)
        )));
    }
    if kind != CGROUP2_SUPER_MAGIC || !meta.is_dir() {
        return Err(TargetError(format!(
            "--cgroup {}: not a cgroup v2 directory ({})",
            path.display(),
            v2_hint(&mounts)
        )));
    }
    // The innermost mount holding the directory.
    let mount = mounts
        .iter()
        .filter(|m| dir.starts_with(&m.point))
        .max_by_key(|m| m.point.as_os_str().len())
        .ok_or_else(|| {
            TargetError(format!(
                "--cgroup {}: no cgroup v2 mount holds it in /proc/self/mountinfo",
                path.display()
            ))
        })?;
    let (name, level) = place(&dir, mount)
        .ok_or_else(|| TargetError(format!("--cgroup {}: outside its mount", path.display())))?;
    Ok(Cgroup {
        dir,
        name,
        target: CgroupId {
            id: meta.ino(),
            level,
        },
    })
}

/// The cgroup.procs file of a cgroup, as a C string made before fork (the
/// child moves itself in between fork and exec, where it must not
/// allocate).
pub fn procs_file(c: &Cgroup) -> Result<CString, TargetError> {
    CString::new(c.dir.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| TargetError(format!("--cgroup {}: a NUL in the path", c.dir.display())))
}

/// Moves the calling process into the cgroup whose cgroup.procs is
/// `procs` (writing "0" names the writer). Async-signal-safe: for
/// `pre_exec`.
pub fn join_self(procs: &CString) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags, open};
    let fd = open(
        procs.as_c_str(),
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::io::write(&fd, b"0")?;
    Ok(())
}

/// Whether the cgroup still exists (an attach to a cgroup ends when it is
/// removed).
pub fn exists(c: &Cgroup) -> bool {
    std::fs::metadata(&c.dir).is_ok_and(|m| m.ino() == c.target.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn hybrid_hosts_have_one_v2_mount_and_depth_counts_from_its_root() {
        let m = cgroup2_mounts(HYBRID);
        assert_eq!(
            m,
            [Mount {
                point: "/sys/fs/cgroup/unified".into(),
                root: "/".into()
            }]
        );
        assert_eq!(
            place(
                Path::new("/sys/fs/cgroup/unified/system.slice/nginx.service"),
                &m[0]
            ),
            Some(("/system.slice/nginx.service".to_owned(), 2))
        );
        assert_eq!(
            place(Path::new("/sys/fs/cgroup/unified"), &m[0]),
            Some(("/".to_owned(), 0))
        );
        assert_eq!(place(Path::new("/tmp"), &m[0]), None);
        assert!(v2_hint(&m).contains("/sys/fs/cgroup/unified"));
        assert!(v2_hint(&[]).contains("no cgroup v2"));
    }

    #[test]
    fn a_namespaced_mount_adds_its_root_and_escapes_are_read() {
        let info = "40 1 0:27 /kubepods/pod\\0401 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let m = cgroup2_mounts(info);
        assert_eq!(m[0].root, PathBuf::from("/kubepods/pod 1"));
        assert_eq!(
            place(Path::new("/sys/fs/cgroup/app"), &m[0]),
            Some(("/kubepods/pod 1/app".to_owned(), 3))
        );
    }

    #[test]
    fn paths_that_are_not_v2_cgroups_are_one_line_errors() {
        let e = resolve(Path::new("/nonexistent-cgroup")).expect_err("missing");
        assert!(e.0.contains("--cgroup /nonexistent-cgroup"), "{}", e.0);
        let e = resolve(Path::new("/tmp")).expect_err("tmpfs");
        assert!(e.0.contains("not a cgroup v2 directory"), "{}", e.0);
        assert!(!e.0.contains('\n'));
    }
}
