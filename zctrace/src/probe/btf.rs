//! Reads the struct layouts and enum values the eBPF programs need from the
//! running kernel's BTF, so that no kernel version's layout is compiled in.

use std::path::Path;

use thiserror::Error;
use zctrace_common::KernelLayout;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("cannot read kernel BTF at {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("kernel BTF at {path} is malformed: {why}")]
    Malformed { path: String, why: &'static str },
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
    #[error("kernel BTF: type {0} is out of range")]
    BadType(u32),
}

// The BTF kinds zctrace reads (include/uapi/linux/btf.h).
const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

/// One type record: where its fixed part starts in the type section.
#[derive(Clone, Copy)]
struct Ty {
    name: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` for sized kinds, the referred type for the others.
    size_type: u32,
    /// Offset of the trailing data (members, enumerators, parameters).
    data: usize,
}

/// The running kernel's BTF, indexed once: every type's record found in
/// one pass over the raw bytes (about 10 ms for vmlinux, a fifteenth of
/// what a general BTF library takes to build its maps). Names are compared
/// in place; only the handful of structs zctrace needs are ever looked up.
pub struct KernelBtf {
    raw: Vec<u8>,
    types_at: usize,
    strings_at: usize,
    strings_len: usize,
    /// Index i is type id i + 1 (id 0 is void).
    types: Vec<Ty>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl KernelBtf {
    #[cfg(test)]
    pub fn open(path: &Path) -> Result<Self, LayoutError> {
        let bytes = std::fs::read(path).map_err(|source| LayoutError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(bytes, path)
    }

    /// Indexes BTF already read into memory (little-endian, as every
    /// architecture zctrace runs on).
    pub fn parse(raw: Vec<u8>, path: &Path) -> Result<Self, LayoutError> {
        let bad = |why| LayoutError::Malformed {
            path: path.display().to_string(),
            why,
        };
        let h = |at| u32_at(&raw, at).ok_or_else(|| bad("short header"));
        if raw.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(bad("not BTF (bad magic, or big-endian)"));
        }
        let hdr_len = h(4)? as usize;
        let (type_off, type_len) = (h(8)? as usize, h(12)? as usize);
        let (str_off, str_len) = (h(16)? as usize, h(20)? as usize);
        let types_at = hdr_len + type_off;
        let strings_at = hdr_len + str_off;
        if types_at + type_len > raw.len() || strings_at + str_len > raw.len() {
            return Err(bad("sections past the end"));
        }
        let mut types = Vec::with_capacity(type_len / 24);
        let mut at = types_at;
        let end = types_at + type_len;
        while at < end {
            let (name, info, size_type) = (
                u32_at(&raw, at).ok_or_else(|| bad("short type"))?,
                u32_at(&raw, at + 4).ok_or_else(|| bad("short type"))?,
                u32_at(&raw, at + 8).ok_or_else(|| bad("short type"))?,
            );
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            let data = at + 12;
            let trailing = match kind {
                INT | VAR | DECL_TAG => 4,
                ARRAY => 12,
                STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen as usize,
                ENUM | FUNC_PROTO => 8 * vlen as usize,
                0 | 20.. => return Err(bad("unknown type kind")),
                _ => 0,
            };
            types.push(Ty {
                name,
                kind,
                vlen,
                kind_flag: info >> 31 != 0,
                size_type,
                data,
            });
            at = data + trailing;
        }
        if at != end {
            return Err(bad("type section overruns"));
        }
        Ok(Self {
            raw,
            types_at,
            strings_at,
            strings_len: str_len,
            types,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let start = self.strings_at + off as usize;
        let strings = &self.raw[..self.strings_at + self.strings_len];
        let tail = strings.get(start..).unwrap_or_default();
        &tail[..tail.iter().position(|&b| b == 0).unwrap_or(tail.len())]
    }

    fn ty(&self, id: u32) -> Result<Option<Ty>, LayoutError> {
        if id == 0 {
            return Ok(None);
        }
        self.types
            .get(id as usize - 1)
            .copied()
            .map(Some)
            .ok_or(LayoutError::BadType(id))
    }

    fn word(&self, at: usize) -> u32 {
        debug_assert!(at >= self.types_at);
        u32_at(&self.raw, at).unwrap_or(0)
    }

    /// The types called `name`, by id.
    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (u32, Ty)> + 'a {
        self.types
            .iter()
            .enumerate()
            .filter(move |(_, t)| self.name(t.name) == name.as_bytes())
            .map(|(i, t)| (i as u32 + 1, *t))
    }

    /// Byte offset of a scalar member the probes read `bytes` wide: an
    /// error, not a wrong number, if this kernel made it wider or narrower.
    pub fn scalar(&self, name: &str, path: &[&str], bytes: usize) -> Result<u32, LayoutError> {
        let (offset, member_type) = self.member(name, path)?;
        let width = self.width(member_type)?;
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
    fn width(&self, id: u32) -> Result<Option<usize>, LayoutError> {
        Ok(match self.strip(id)? {
            Some(t) if matches!(t.kind, INT | ENUM | ENUM64) => Some(t.size_type as usize),
            Some(t) if t.kind == PTR => Some(std::mem::size_of::<u64>()),
            _ => None,
        })
    }

    /// Byte offset of `path` (member names, descending through named and
    /// anonymous struct/union members) inside `struct name`.
    pub fn offset(&self, name: &str, path: &[&str]) -> Result<u32, LayoutError> {
        Ok(self.member(name, path)?.0)
    }

    /// The offset of `path` inside `struct name`, and its last member's type.
    fn member(&self, name: &str, path: &[&str]) -> Result<(u32, u32), LayoutError> {
        let mut ty = self.find_struct(name)?;
        let mut total = 0u32;
        let mut last = None;
        for (i, field) in path.iter().enumerate() {
            let (bits, member_type) = self
                .find_member(ty, field)?
                .ok_or_else(|| LayoutError::NoMember(name.into(), path[..=i].join(".")))?;
            if bits % 8 != 0 {
                return Err(LayoutError::Bitfield(name.into(), path[..=i].join(".")));
            }
            total += bits / 8;
            if i + 1 < path.len() {
                ty = self
                    .strip(member_type)?
                    .ok_or_else(|| LayoutError::NoMember(name.into(), path[..=i].join(".")))?;
            }
            last = Some(member_type);
        }
        let member = last.ok_or_else(|| LayoutError::NoMember(name.into(), String::new()))?;
        Ok((total, member))
    }

    /// Value of an enumerator, e.g. `("iter_type", "ITER_UBUF")`.
    pub fn enum_value(&self, enum_name: &str, item: &str) -> Result<Option<u32>, LayoutError> {
        for (_, t) in self.named(enum_name) {
            if t.kind == ENUM {
                for i in 0..t.vlen as usize {
                    let at = t.data + 8 * i;
                    if self.name(self.word(at)) == item.as_bytes() {
                        return Ok(Some(self.word(at + 4)));
                    }
                }
                return Ok(None);
            }
        }
        Err(LayoutError::NoEnum(enum_name.into()))
    }

    fn find_struct(&self, name: &str) -> Result<Ty, LayoutError> {
        self.named(name)
            .map(|(_, t)| t)
            .find(|t| t.kind == STRUCT && t.vlen > 0)
            .ok_or_else(|| LayoutError::NoStruct(name.into()))
    }

    /// Skips typedefs and qualifiers down to the underlying type (None:
    /// void).
    fn strip(&self, mut id: u32) -> Result<Option<Ty>, LayoutError> {
        // BTF has no cycles through these kinds; the bound is a guard.
        for _ in 0..64 {
            match self.ty(id)? {
                Some(t) if matches!(t.kind, TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG) => {
                    id = t.size_type;
                }
                other => return Ok(other),
            }
        }
        Err(LayoutError::BadType(id))
    }

    /// Finds `field` in a struct or union, looking inside anonymous members.
    /// Returns its bit offset from the start of `ty` and the member's type.
    fn find_member(&self, ty: Ty, field: &str) -> Result<Option<(u32, u32)>, LayoutError> {
        if !matches!(ty.kind, STRUCT | UNION) {
            return Ok(None);
        }
        for i in 0..ty.vlen as usize {
            let at = ty.data + 12 * i;
            let (name, member_type, offset) = (self.word(at), self.word(at + 4), self.word(at + 8));
            // With kind_flag the top 8 bits are a bitfield's size.
            let bits = if ty.kind_flag {
                offset & 0x00ff_ffff
            } else {
                offset
            };
            let name = self.name(name);
            if name == field.as_bytes() {
                return Ok(Some((bits, member_type)));
            }
            if name.is_empty()
                && let Some(inner) = self.strip(member_type)?
                && let Some((more, found)) = self.find_member(inner, field)?
            {
                return Ok(Some((bits + more, found)));
            }
        }
        Ok(None)
    }

    /// The number of parameters of a tracepoint's BTF prototype
    /// (`btf_trace_NAME`, whose first parameter is the tracepoint's private
    /// data pointer), None if the kernel has no such tracepoint.
    fn tracepoint_params(&self, name: &str) -> Result<Option<usize>, LayoutError> {
        let name = format!("btf_trace_{name}");
        for (_, t) in self.named(&name) {
            if t.kind == TYPEDEF
                && let Some(p) = self.ty(t.size_type)?
                && p.kind == PTR
                && let Some(f) = self.ty(p.size_type)?
                && f.kind == FUNC_PROTO
            {
                return Ok(Some((f.vlen as usize).saturating_sub(1)));
            }
        }
        Ok(None)
    }

    /// The kernel features the probes cannot do without that this kernel
    /// lacks, each named with the release that brought it, read from the
    /// helper and map-type enums and the structs in its BTF (what the
    /// kernel has, backports included, not its version number). Atomic
    /// fetch-and-add (5.12) is not in BTF; every kernel with
    /// `bpf_task_pt_regs` (5.15) has it.
    pub fn missing_features(&self) -> Result<Vec<&'static str>, LayoutError> {
        const ENUMS: &[(&str, &str, &str)] = &[
            (
                "bpf_map_type",
                "BPF_MAP_TYPE_RINGBUF",
                "the BPF ring buffer (Linux 5.8)",
            ),
            (
                "bpf_map_type",
                "BPF_MAP_TYPE_TASK_STORAGE",
                "BPF task storage (Linux 5.11)",
            ),
            (
                "bpf_func_id",
                "BPF_FUNC_get_current_task_btf",
                "the bpf_get_current_task_btf helper (Linux 5.11)",
            ),
            (
                "bpf_func_id",
                "BPF_FUNC_task_pt_regs",
                "the bpf_task_pt_regs helper (Linux 5.15)",
            ),
        ];
        let mut missing = Vec::new();
        for &(enum_name, item, feature) in ENUMS {
            match self.enum_value(enum_name, item) {
                Ok(Some(_)) => {}
                Ok(None) | Err(LayoutError::NoEnum(_)) => missing.push(feature),
                Err(e) => return Err(e),
            }
        }
        match self.member("iov_iter", &["iter_type"]) {
            Ok(_) => {}
            Err(LayoutError::NoMember(..)) => {
                missing.push("the one-byte iov_iter.iter_type (Linux 5.14)")
            }
            Err(e) => return Err(e),
        }
        Ok(missing)
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
        // Before 6.3 the submission tracepoint is io_uring_submit_sqe:
        // (req, force_nonblock) in 6.2, (ctx, req, user_data, opcode,
        // flags, force_nonblock, sq_thread) from 5.15 to 6.1.
        let uring_submit_req_arg = match (
            self.tracepoint_params("io_uring_submit_req")?,
            self.tracepoint_params("io_uring_submit_sqe")?,
        ) {
            (None, Some(n)) if n >= 7 => 1,
            _ => 0,
        };
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
            request_start_time_ns: self.scalar("request", &["start_time_ns"], 8)?,
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
            uring_submit_req_arg,
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
    fn this_kernel_has_every_feature_and_the_check_can_fail() {
        let k = kernel();
        assert_eq!(k.missing_features().expect("features"), Vec::<&str>::new());
        // The same lookups that find these report an absent enumerator.
        assert_eq!(
            k.enum_value("bpf_func_id", "BPF_FUNC_no_such_helper")
                .expect("enum"),
            None
        );
        assert!(
            k.enum_value("bpf_func_id", "BPF_FUNC_task_pt_regs")
                .unwrap()
                .is_some()
        );
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
        assert_eq!(l.uring_submit_req_arg, 0);
    }

    #[test]
    fn malformed_btf_is_an_error_not_a_layout() {
        let p = Path::new("test.btf");
        let good = std::fs::read(VMLINUX_BTF).expect("kernel BTF");
        let mut bad_magic = good.clone();
        bad_magic[0] = 0;
        assert!(matches!(
            KernelBtf::parse(bad_magic, p),
            Err(LayoutError::Malformed { .. })
        ));
        // Cut inside the type section: the sections run past the end.
        assert!(matches!(
            KernelBtf::parse(good[..good.len() / 2].to_vec(), p),
            Err(LayoutError::Malformed { .. })
        ));
        assert!(matches!(
            KernelBtf::parse(Vec::new(), p),
            Err(LayoutError::Malformed { .. })
        ));
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
