//! The counter rows, mapped into zctrace's memory.
//!
//! ROWS is a plain array the kernel lets userspace map (`BPF_F_MMAPABLE`),
//! laid out CPU-major: CPU c's copy of row i is element `c * capacity + i`
//! (each CPU writes only its own copies, so a row has one writer per CPU,
//! as in a per-CPU map). The sampler reads the rows in use straight from
//! that memory: no system call, no copy through the kernel, however many
//! rows are live.

use std::{io, os::fd::RawFd, ptr::NonNull};

use zctrace_common::{Counters, RowKey, counter};

/// A BPF array mapped into zctrace's memory (shared, read and write).
/// Unmapped when dropped.
struct Mapping {
    base: NonNull<u64>,
    /// Bytes mapped (whole pages).
    len: usize,
    /// u64 words of the array itself.
    words: usize,
}

// SAFETY: the mapping is plain shared memory, valid until dropped; every
// access goes through volatile reads and writes of aligned u64s.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `bytes` of the array map behind `fd`.
    fn new(fd: RawFd, bytes: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = bytes.next_multiple_of(page.max(1));
        // SAFETY: a new shared mapping of the map's memory; the kernel
        // checks the length against the map's size.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u64>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping {
            base,
            len,
            words: bytes / 8,
        })
    }

    /// Word `at` (0 past the end). The kernel writes these words
    /// meanwhile: a volatile read of an aligned u64 sees one whole value.
    #[inline]
    fn word(&self, at: usize) -> u64 {
        if at >= self.words {
            return 0;
        }
        // SAFETY: `at` is inside the mapping and the mapping is page
        // aligned, so the word is aligned.
        unsafe { self.base.as_ptr().add(at).read_volatile() }
    }

    fn set_word(&self, at: usize, v: u64) {
        if at < self.words {
            // SAFETY: as in `word`; the mapping is writable.
            unsafe { self.base.as_ptr().add(at).write_volatile(v) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// u64 words in one row.
const WORDS: usize = counter::COUNT;
const _: () = assert!(std::mem::size_of::<Counters>() == WORDS * 8);

/// ROWS, mapped.
pub(crate) struct MappedRows {
    map: Mapping,
    /// Rows per CPU.
    capacity: usize,
    /// CPU copies (the highest possible CPU number plus one).
    cpus: usize,
}

impl MappedRows {
    /// Maps the ROWS map behind `fd`: `capacity` rows for each of `cpus`
    /// CPUs.
    pub(crate) fn map(fd: RawFd, capacity: usize, cpus: usize) -> io::Result<Self> {
        let bytes = capacity
            .checked_mul(cpus)
            .and_then(|n| n.checked_mul(std::mem::size_of::<Counters>()))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(MappedRows {
            map: Mapping::new(fd, bytes)?,
            capacity,
            cpus,
        })
    }

    /// CPU copies per row.
    pub(crate) fn cpus(&self) -> usize {
        self.cpus
    }

    /// Row `idx` summed over the CPUs (zeros past the capacity).
    pub(crate) fn sum(&self, idx: usize) -> Counters {
        let mut sum = Counters::ZERO;
        if idx >= self.capacity {
            return sum;
        }
        for cpu in 0..self.cpus {
            let at = (cpu * self.capacity + idx) * WORDS;
            for (w, total) in sum.v.iter_mut().enumerate() {
                *total += self.map.word(at + w);
            }
        }
        sum
    }

    /// Sets every CPU's copy of row `idx` to zero.
    pub(crate) fn zero(&self, idx: usize) {
        if idx >= self.capacity {
            return;
        }
        for cpu in 0..self.cpus {
            let at = (cpu * self.capacity + idx) * WORDS;
            for w in 0..WORDS {
                self.map.set_word(at + w, 0);
            }
        }
    }
}

/// ROW_KEYS, mapped (read only: the kernel writes it).
pub(crate) struct MappedKeys {
    map: Mapping,
}

const KEY_WORDS: usize = std::mem::size_of::<RowKey>() / 8;
const _: () = assert!(std::mem::size_of::<RowKey>() == KEY_WORDS * 8);

impl MappedKeys {
    pub(crate) fn map(fd: RawFd, capacity: usize) -> io::Result<Self> {
        let bytes = capacity
            .checked_mul(std::mem::size_of::<RowKey>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(MappedKeys {
            map: Mapping::new(fd, bytes)?,
        })
    }

    /// Row `idx`'s key as the kernel last wrote it. A read can be torn by
    /// the kernel writing the key meanwhile: the caller checks a new key
    /// against the index.
    pub(crate) fn get(&self, idx: usize) -> RowKey {
        let mut words = [0u64; KEY_WORDS];
        for (w, v) in words.iter_mut().enumerate() {
            *v = self.map.word(idx * KEY_WORDS + w);
        }
        // SAFETY: RowKey is plain data (repr(C), explicit padding, every
        // bit pattern valid), exactly KEY_WORDS words.
        unsafe { std::ptr::read_unaligned(words.as_ptr().cast::<RowKey>()) }
    }
}

/// How many CPU copies a row has: the highest possible CPU number plus
/// one (`bpf_get_smp_processor_id` never returns more).
pub(crate) fn row_cpus() -> io::Result<usize> {
    highest_cpu(&std::fs::read_to_string(
        "/sys/devices/system/cpu/possible",
    )?)
    .map(|c| c + 1)
    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no possible CPU listed"))
}

/// The highest CPU number in a kernel CPU list ("0-3,8-11").
fn highest_cpu(list: &str) -> Option<usize> {
    list.trim()
        .split([',', '-'])
        .map(|n| n.trim().parse::<usize>().ok())
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

#[cfg(test)]
mod tests {
    use super::highest_cpu;

    #[test]
    fn the_highest_cpu_of_a_list_with_holes_is_its_last() {
        assert_eq!(highest_cpu("0-1\n"), Some(1));
        assert_eq!(highest_cpu("0"), Some(0));
        assert_eq!(highest_cpu("0-3,8-11"), Some(11));
        assert_eq!(highest_cpu("0,2,5"), Some(5));
        assert_eq!(highest_cpu(""), None);
        assert_eq!(highest_cpu("0-x"), None);
    }
}
