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
    #[error("kernel BTF: {0}.{1} is {2} bytes wide, zctrace's probes read {3}")]
    Width(String, String, usize, usize),
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

    /// Byte offset of a scalar member the probes read `bytes` wide: an
    /// error, not a wrong number, if this kernel made it wider or narrower.
    pub fn scalar(&self, name: &str, path: &[&str], bytes: usize) -> Result<u32, LayoutError> {
        let (offset, member) = self.member(name, path)?;
        let width = self.width(self.btf.resolve_chained_type(&member)?)?;
        if width != Some(bytes) {
            return Err(LayoutError::Width(
                name.into(),
                path.join("."),
                width.unwrap_or(0),
                bytes,
            ));
        }
        Ok(offset)
    }

    /// The size in bytes of a scalar type (an integer, an enum, a pointer),
    /// None for anything else.
    fn width(&self, ty: Type) -> Result<Option<usize>, LayoutError> {
        Ok(match self.strip(ty)? {
            Type::Int(i) => Some(i.size()),
            Type::Enum(e) => Some(e.size()),
            Type::Enum64(e) => Some(e.size()),
            Type::Ptr(_) => Some(std::mem::size_of::<u64>()),
            _ => None,
        })
    }

    /// Byte offset of `path` (member names, descending through named and
    /// anonymous struct/union members) inside `struct name`.
    pub fn offset(&self, name: &str, path: &[&str]) -> Result<u32, LayoutError> {
        Ok(self.member(name, path)?.0)
    }

    /// The offset of `path` inside `struct name`, and its last member.
    fn member(&self, name: &str, path: &[&str]) -> Result<(u32, Member), LayoutError> {
        let mut ty = self.find_struct(name)?;
        let mut total = 0u32;
        let mut last = None;
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
            last = Some(member);
        }
        let member = last.ok_or_else(|| LayoutError::NoMember(name.into(), String::new()))?;
        Ok((total, member))
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

    /// The number of parameters of a tracepoint's BTF prototype
    /// (`btf_trace_NAME`, whose first parameter is the tracepoint's private
    /// data pointer), None if the kernel has no such tracepoint.
    fn tracepoint_params(&self, name: &str) -> Result<Option<usize>, LayoutError> {
        let Ok(types) = self.btf.resolve_types_by_name(&format!("btf_trace_{name}")) else {
            return Ok(None);
        };
        for ty in types {
            if let Type::Typedef(t) = ty
                && let Type::Ptr(p) = self.btf.resolve_chained_type(&t)?
                && let Type::FuncProto(f) = self.btf.resolve_chained_type(&p)?
            {
                return Ok(Some(f.parameters.len().saturating_sub(1)));
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
        // io_uring's request: optional (a kernel without io_uring has no
        // io_kiocb; its hooks then do not attach).
        let kiocb = |member| match self.scalar("io_kiocb", &[member], 8) {
            Err(LayoutError::NoStruct(_)) => Ok(u32::MAX),
            r => r,
        };
        let kiocb_file = kiocb("file")?;
        // The command data of a send request is a struct io_sr_msg, whose
        // notif is the zero-copy notification's own request.
        let kiocb_notif = match (
            self.offset("io_kiocb", &["cmd"]),
            self.scalar("io_sr_msg", &["notif"], 8),
        ) {
            (Ok(cmd), Ok(notif)) => cmd + notif,
            (Err(LayoutError::NoStruct(_) | LayoutError::NoMember(..)), _)
            | (_, Err(LayoutError::NoStruct(_) | LayoutError::NoMember(..))) => u32::MAX,
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let kiocb_opcode = match self.scalar("io_kiocb", &["opcode"], 1) {
            Err(LayoutError::NoStruct(_)) => u32::MAX,
            r => r?,
        };
        // (ctx, req, cqe) since 6.3-ish; (ctx, req, user_data, res, cflags,
        // extra1, extra2) before.
        let uring_complete_cqe = u32::from(self.tracepoint_params("io_uring_complete")? == Some(3));
        Ok(KernelLayout {
            // Each width is the one the eBPF programs load.
            task_files: self.scalar("task_struct", &["files"], 8)?,
            task_pid: self.scalar("task_struct", &["pid"], 4)?,
            task_tgid: self.scalar("task_struct", &["tgid"], 4)?,
            task_flags: self.scalar("task_struct", &["flags"], 4)?,
            files_fdt: self.scalar("files_struct", &["fdt"], 8)?,
            fdt_max_fds: self.scalar("fdtable", &["max_fds"], 4)?,
            fdt_fd: self.scalar("fdtable", &["fd"], 8)?,
            file_inode: self.scalar("file", &["f_inode"], 8)?,
            file_flags: self.scalar("file", &["f_flags"], 4)?,
            inode_mode: self.scalar("inode", &["i_mode"], 2)?,
            // An embedded struct: only its offset matters.
            msghdr_iter: self.offset("msghdr", &["msg_iter"])?,
            msghdr_flags: self.scalar("msghdr", &["msg_flags"], 4)?,
            iter_type: self.scalar("iov_iter", &["iter_type"], 1)?,
            request_data_len: self.scalar("request", &["__data_len"], 4)?,
            request_cmd_flags: self.scalar("request", &["cmd_flags"], 4)?,
            netdev_flags: self.scalar("net_device", &["flags"], 4)?,
            netdev_parent: self.scalar("net_device", &["dev", "parent"], 8)?,
            user_iter_mask,
            iter_pipe: self
                .enum_value("iter_type", "ITER_PIPE")?
                .unwrap_or(u32::MAX),
            o_direct: libc::O_DIRECT as u32,
            kiocb_opcode,
            kiocb_file,
            kiocb_notif,
            uring_complete_cqe,
            file_private: self.scalar("file", &["private_data"], 8)?,
            socket_sk: self.scalar("socket", &["sk"], 8)?,
            sk_family: self.scalar("sock", &["__sk_common", "skc_family"], 2)?,
            sk_protocol: self.scalar("sock", &["sk_protocol"], 2)?,
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
        // io_kiocb starts with a union of the file and the command data
        // (where a send keeps its notification); the opcode comes after.
        // This kernel's io_uring_complete passes the CQE.
        assert_eq!(l.kiocb_file, 0);
        assert!(l.kiocb_notif > 0 && l.kiocb_notif < l.kiocb_opcode, "{l:?}");
        assert_eq!(l.uring_complete_cqe, 1);
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
        // pid_t is 4 bytes: asking for 8 is refused, naming both widths.
        let e = k
            .scalar("task_struct", &["pid"], 8)
            .expect_err("pid is 4 bytes");
        assert!(matches!(e, LayoutError::Width(_, _, 4, 8)), "{e}");
        assert_eq!(
            k.scalar("task_struct", &["pid"], 4).ok(),
            k.offset("task_struct", &["pid"]).ok()
        );
    }
}
