//! Syscall numbers per architecture: which call family a number belongs
//! to, which calls can change what an fd refers to, and which are exec.
//! The eBPF programs pick the module of the architecture they are built
//! for (`bpf_target_arch`).

/// x86_64 (`arch/x86/entry/syscalls/syscall_64.tbl`).
pub mod x86_64 {
    use crate::method::Call;

    /// The family zctrace tracks for a syscall number.
    pub const fn call(nr: u64) -> Call {
        match nr {
            0 => Call::Read,
            1 => Call::Write,
            9 => Call::Mmap,
            11 => Call::Munmap,
            17 => Call::Pread,
            18 => Call::Pwrite,
            19 | 295 | 327 => Call::Readv,  // readv, preadv, preadv2
            20 | 296 | 328 => Call::Writev, // writev, pwritev, pwritev2
            40 => Call::Sendfile,
            44 => Call::Sendto,
            45 => Call::Recvfrom,
            46 | 307 => Call::Sendmsg, // sendmsg, sendmmsg
            47 | 299 => Call::Recvmsg, // recvmsg, recvmmsg
            275 => Call::Splice,
            276 => Call::Tee,
            278 => Call::Vmsplice,
            326 => Call::CopyFileRange,
            426 => Call::IoUringEnter,
            _ => Call::Other,
        }
    }

    /// execve, execveat.
    pub const fn is_exec(nr: u64) -> bool {
        matches!(nr, 59 | 322)
    }

    /// clone, fork, vfork, clone3: their sys_exit also runs in the new
    /// thread (returning 0), which made no call of its own.
    pub const fn is_fork(nr: u64) -> bool {
        matches!(nr, 56 | 57 | 58 | 435)
    }

    /// Whether a syscall can change what an fd number refers to (or its
    /// flags): close, dup2, dup3, close_range, fcntl, execve(at).
    pub const fn changes_fds(nr: u64) -> bool {
        matches!(nr, 3 | 33 | 292 | 436 | 72) || is_exec(nr)
    }
}

/// aarch64 (the asm-generic table, `include/uapi/asm-generic/unistd.h`).
pub mod aarch64 {
    use crate::method::Call;

    /// The family zctrace tracks for a syscall number.
    pub const fn call(nr: u64) -> Call {
        match nr {
            63 => Call::Read,
            64 => Call::Write,
            222 => Call::Mmap,
            215 => Call::Munmap,
            67 => Call::Pread,
            68 => Call::Pwrite,
            65 | 69 | 286 => Call::Readv,
            66 | 70 | 287 => Call::Writev,
            71 => Call::Sendfile,
            206 => Call::Sendto,
            207 => Call::Recvfrom,
            211 | 269 => Call::Sendmsg,
            212 | 243 => Call::Recvmsg,
            76 => Call::Splice,
            77 => Call::Tee,
            75 => Call::Vmsplice,
            285 => Call::CopyFileRange,
            426 => Call::IoUringEnter,
            _ => Call::Other,
        }
    }

    /// execve, execveat.
    pub const fn is_exec(nr: u64) -> bool {
        matches!(nr, 221 | 281)
    }

    /// clone, clone3 (see the x86_64 table's).
    pub const fn is_fork(nr: u64) -> bool {
        matches!(nr, 220 | 435)
    }

    /// close, dup3, close_range, fcntl, execve(at).
    pub const fn changes_fds(nr: u64) -> bool {
        matches!(nr, 57 | 24 | 436 | 25) || is_exec(nr)
    }
}

#[cfg(test)]
mod tests {
    use super::{aarch64, x86_64};
    use crate::method::Call;

    #[test]
    fn both_tables_name_the_same_calls_and_exec_changes_fds() {
        assert_eq!(x86_64::call(0), Call::Read);
        assert_eq!(aarch64::call(63), Call::Read);
        assert_eq!(x86_64::call(40), aarch64::call(71));
        assert_eq!(x86_64::call(426), Call::IoUringEnter);
        assert_eq!(aarch64::call(426), Call::IoUringEnter);
        for nr in [59, 322, 3, 33, 292, 436, 72] {
            assert!(x86_64::changes_fds(nr), "x86_64 {nr}");
        }
        for nr in [221, 281, 57, 24, 436, 25] {
            assert!(aarch64::changes_fds(nr), "aarch64 {nr}");
        }
        assert!(x86_64::is_exec(59) && !x86_64::is_exec(221));
        assert!(aarch64::is_exec(221) && !aarch64::is_exec(59));
        assert!(!x86_64::changes_fds(0) && !aarch64::changes_fds(63));
        for nr in [56, 57, 58, 435] {
            assert!(x86_64::is_fork(nr), "x86_64 {nr}");
        }
        assert!(aarch64::is_fork(220) && aarch64::is_fork(435) && !aarch64::is_fork(57));
        assert!(!x86_64::is_fork(59) && !x86_64::is_fork(0));
    }
}
