//! Reads the struct layouts and enum values the eBPF programs need from the
//! running kernel's BTF, so that no kernel version's layout is compiled in.

use std::path::Path;

use btf_rs::{Btf, Member, Type};
use thiserror::Error;
use zctrace_common::KernelLayout;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("cannot read kernel BTF at {path}: {source}")]
    Read { path: String, source: btf_rs::Error },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("kernel BTF: {0}.{1} is a bitfield")]
    Bitfield(String, String),
    #[error("kernel BTF has no enum {0}")]
    NoEnum(String),
    #[error("kernel BTF: {0}")]
    Btf(#[from] btf_rs::Error),
}

/// Parsed kernel BTF.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    #[cfg(test)]
    pub fn open(path: &Path) -> Result<Self, LayoutError> {
        let bytes = std::fs::read(path).map_err(|e| LayoutError::Read {
            path: path.display().to_string(),
            source: btf_rs::Error::from(e),
        })?;
        Self::parse(&bytes, path)
    }

    /// Parses BTF already read into memory (`Btf::from_file` reads through
    /// a seeking BufReader: over 100,000 lseek calls for vmlinux).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, LayoutError> {
        let btf = Btf::from_bytes(bytes).map_err(|source| LayoutError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { btf })
    }

    /// Byte offset of `path` (member names, descending through named and
    /// anonymous struct/union members) inside `struct name`.
    pub fn offset(&self, name: &str, path: &[&str]) -> Result<u32, LayoutError> {
        let mut ty = self.find_struct(name)?;
        let mut total = 0u32;
        for (i, field) in path.iter().enumerate() {
            let (bits, member) = self
                .find_member(&ty, field)?
                .ok_or_else(|| LayoutError::NoMember(name.into(), path[..=i].join(".")))?;
            if bits % 8 != 0 {
                return Err(LayoutError::Bitfield(name.into(), path[..=i].join(".")));
            }
            total += bits / 8;
            if i + 1 < path.len() {
                ty = self.strip(self.btf.resolve_chained_type(&member)?)?;
            }
        }
        Ok(total)
    }

    /// Value of an enumerator, e.g. `("iter_type", "ITER_UBUF")`.
    pub fn enum_value(&self, enum_name: &str, item: &str) -> Result<Option<u32>, LayoutError> {
        for ty in self.btf.resolve_types_by_name(enum_name)? {
            if let Type::Enum(e) = ty {
                for m in &e.members {
                    if self.btf.resolve_name(m)? == item {
                        return Ok(Some(m.val()));
                    }
                }
                return Ok(None);
            }
        }
        Err(LayoutError::NoEnum(enum_name.into()))
    }

    fn find_struct(&self, name: &str) -> Result<Type, LayoutError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| LayoutError::NoStruct(name.into()))?;
        types
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
            .ok_or_else(|| LayoutError::NoStruct(name.into()))
    }

    /// Skips typedefs and qualifiers down to the underlying type.
    fn strip(&self, mut ty: Type) -> Result<Type, LayoutError> {
        loop {
            ty = match &ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(t)?,
                Type::Const(t) => self.btf.resolve_chained_type(t)?,
                Type::Volatile(t) => self.btf.resolve_chained_type(t)?,
                Type::Restrict(t) => self.btf.resolve_chained_type(t)?,
                Type::TypeTag(t) => self.btf.resolve_chained_type(t)?,
                _ => return Ok(ty),
            };
        }
    }

    /// Finds `field` in a struct or union, looking inside anonymous members.
    /// Returns its bit offset from the start of `ty` and the member.
    fn find_member(&self, ty: &Type, field: &str) -> Result<Option<(u32, Member)>, LayoutError> {
        let members = match ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return Ok(None),
        };
        for m in members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == field {
                return Ok(Some((m.bit_offset(), m.clone())));
            }
            if name.is_empty() {
                let inner = self.strip(self.btf.resolve_chained_type(m)?)?;
                if let Some((bits, found)) = self.find_member(&inner, field)? {
                    return Ok(Some((m.bit_offset() + bits, found)));
                }
            }
        }
        Ok(None)
    }

    /// Everything the eBPF programs read, for the running kernel.
    pub fn kernel_layout(&self) -> Result<KernelLayout, LayoutError> {
        let mut user_iter_mask = 0u32;
        for name in ["ITER_UBUF", "ITER_IOVEC"] {
            // ITER_UBUF only exists from 6.0 on; older kernels have IOVEC.
            if let Some(v) = self.enum_value("iter_type", name)?
                && v < 32
            {
                user_iter_mask |= 1 << v;
            }
        }
        Ok(KernelLayout {
            task_files: self.offset("task_struct", &["files"])?,
            task_pid: self.offset("task_struct", &["pid"])?,
            task_tgid: self.offset("task_struct", &["tgid"])?,
            files_fdt: self.offset("files_struct", &["fdt"])?,
            fdt_max_fds: self.offset("fdtable", &["max_fds"])?,
            fdt_fd: self.offset("fdtable", &["fd"])?,
            file_inode: self.offset("file", &["f_inode"])?,
            file_flags: self.offset("file", &["f_flags"])?,
            inode_mode: self.offset("inode", &["i_mode"])?,
            msghdr_iter: self.offset("msghdr", &["msg_iter"])?,
            msghdr_flags: self.offset("msghdr", &["msg_flags"])?,
            iter_type: self.offset("iov_iter", &["iter_type"])?,
            request_data_len: self.offset("request", &["__data_len"])?,
            request_cmd_flags: self.offset("request", &["cmd_flags"])?,
            netdev_flags: self.offset("net_device", &["flags"])?,
            user_iter_mask,
            iter_pipe: self
                .enum_value("iter_type", "ITER_PIPE")?
                .unwrap_or(u32::MAX),
            o_direct: libc::O_DIRECT as u32,
            valid: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// zctrace cannot run without kernel BTF, and neither can its tests.
    fn kernel() -> KernelBtf {
        KernelBtf::open(Path::new(VMLINUX_BTF))
            .expect("kernel BTF is required (CONFIG_DEBUG_INFO_BTF)")
    }

    #[test]
    fn reads_a_complete_layout_from_this_kernel() {
        let k = kernel();
        let l = k.kernel_layout().expect("layout");
        // task_struct is large: its files pointer is far from the start,
        // and tgid follows pid directly (both pid_t).
        assert!(l.task_files > 1000, "{l:?}");
        assert_eq!(l.task_tgid, l.task_pid + 4);
        // iter_type is the first member of iov_iter; msg_iter is embedded.
        assert_eq!(l.iter_type, 0);
        assert!(l.msghdr_iter > 0 && l.msghdr_flags > l.msghdr_iter);
        assert_ne!(l.user_iter_mask, 0);
        assert_eq!(l.valid, 1);
    }

    #[test]
    fn missing_names_are_errors_not_zeroes() {
        let k = kernel();
        assert!(matches!(
            k.offset("no_such_struct_zc", &["x"]),
            Err(LayoutError::NoStruct(_))
        ));
        assert!(matches!(
            k.offset("task_struct", &["no_such_member_zc"]),
            Err(LayoutError::NoMember(..))
        ));
    }
}
