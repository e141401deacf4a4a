//! Reading whole maps in a few system calls (`BPF_MAP_LOOKUP_BATCH`, Linux
//! 5.6): the ledger's and the health counters' per-CPU words each sample,
//! and the row index when rows are recycled (the counter rows and their
//! keys are mapped instead, see `rows.rs`). aya 0.14 has no batch
//! operations, so this is the one `bpf()` call zctrace makes itself.

use std::{io, os::fd::RawFd};

/// `bpf_attr` for the batch commands (`struct { in_batch, out_batch, keys,
/// values, count, map_fd, elem_flags, flags }`).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Elements per call: large enough that 10,000 rows take three calls,
/// small enough that the buffers stay a few MiB.
pub const CHUNK: usize = 4096;

/// Every (key, value) of a map, `key_size` and `value_size` bytes each (a
/// per-CPU map's value is one 8-byte-aligned slot per possible CPU), read
/// `CHUNK` at a time, stopping after `limit` elements. Keys and values come
/// back concatenated.
pub fn lookup_all(
    fd: RawFd,
    key_size: usize,
    value_size: usize,
    limit: usize,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut keys = Vec::new();
    let mut values = Vec::new();
    // The batch token: a u32 (array index, or hash bucket) for the maps
    // zctrace reads; 8 bytes leave room.
    let mut token = [0u8; 8];
    let mut next = [0u8; 8];
    let mut first = true;
    let mut got = 0usize;
    while got < limit {
        let want = CHUNK.min(limit - got);
        let k0 = keys.len();
        let v0 = values.len();
        keys.resize(k0 + want * key_size, 0);
        values.resize(v0 + want * value_size, 0);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys[k0..].as_mut_ptr() as u64,
            values: values[v0..].as_mut_ptr() as u64,
            count: want as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attribute points at live buffers of `want` keys and
        // values and at two 8-byte tokens; the kernel writes no more than
        // `count` elements and a token, and `attr.count` back.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let done = if ret < 0 {
            let e = io::Error::last_os_error();
            // ENOENT: the end of the map; `count` says how many came first.
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
            true
        } else {
            false
        };
        let n = (attr.count as usize).min(want);
        keys.truncate(k0 + n * key_size);
        values.truncate(v0 + n * value_size);
        got += n;
        if done || n == 0 {
            break;
        }
        token = next;
        first = false;
    }
    Ok((keys, values))
}
