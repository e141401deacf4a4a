//! Reading and writing the probes' maps: the traced set, the event switch
//! and ring buffer, the counter rows, the health counters.

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, Queue, RingBuf};
use zctrace_common::{CounterKey, Counters, OVERFLOW_ROW, config, ledger, stat};

use super::{ProbeError, Probes, Stats, batch};

/// The kernel's internal "not supported" (not in libc): what a map type
/// without batch operations answers.
const ENOTSUPP: i32 = 524;

/// Makes row 0 the overflow row and hands out new rows from 1: before any
/// program is attached, or the first would take row 0 for itself.
pub(super) fn reserve_overflow_row(ebpf: &mut aya::Ebpf) -> Result<(), ProbeError> {
    fn map<'a>(
        ebpf: &'a mut aya::Ebpf,
        name: &'static str,
    ) -> Result<&'a mut aya::maps::Map, ProbeError> {
        ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))
    }
    let mut index: HashMap<_, CounterKey, u32> = HashMap::try_from(map(ebpf, "ROW_INDEX")?)?;
    index.insert(CounterKey::OVERFLOW, OVERFLOW_ROW, 0)?;
    let mut alloc: Array<_, u64> = Array::try_from(map(ebpf, "ROW_ALLOC")?)?;
    alloc.set(0, u64::from(OVERFLOW_ROW) + 1, 0)?;
    Ok(())
}
use crate::model::{Snapshot, ledger as balance};

impl Probes {
    /// Adds a process (all its threads) to the traced set.
    pub fn trace_pid(&mut self, tgid: u32) -> Result<(), ProbeError> {
        let mut traced: HashMap<_, u32, u32> = HashMap::try_from(self.map_mut("TRACED")?)?;
        traced.insert(tgid, 1, 0)?;
        // Its threads may sit in the thread table as untraced.
        self.bump_generation()
    }

    /// Removes a process from the traced set. Its threads keep their
    /// kernel-side state until their next probe sees the new generation,
    /// checks the set, and drops it.
    pub fn untrace_pid(&mut self, tgid: u32) -> Result<(), ProbeError> {
        let mut traced: HashMap<_, u32, u32> = HashMap::try_from(self.map_mut("TRACED")?)?;
        traced.remove(&tgid)?;
        self.bump_generation()
    }

    /// Turns the per-syscall event stream on or off.
    pub fn set_events(&mut self, on: bool) -> Result<(), ProbeError> {
        let mut cfg: Array<_, u32> = Array::try_from(self.map_mut("CONFIG")?)?;
        cfg.set(config::EVENTS_ENABLED, u32::from(on), 0)?;
        Ok(())
    }

    /// Takes the event ring buffer out (for a reader thread). Only once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(ProbeError::MissingMap("EVENTS"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Reads every counter row, summing the per-CPU values: the index and
    /// the rows each in a few batched system calls (see `batch.rs`), or,
    /// where the kernel refuses batches, row by row.
    pub fn snapshot(&self) -> Result<Snapshot, ProbeError> {
        match self.snapshot_batched() {
            Err(ProbeError::Batch(e))
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | ENOTSUPP)
                ) =>
            {
                self.snapshot_per_row()
            }
            r => r,
        }
    }

    fn snapshot_batched(&self) -> Result<Snapshot, ProbeError> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let fd = |name: &'static str| -> Result<i32, ProbeError> {
            match self.map(name)? {
                aya::maps::Map::HashMap(d) | aya::maps::Map::PerCpuArray(d) => {
                    Ok(d.fd().as_fd().as_raw_fd())
                }
                _ => Err(ProbeError::MissingMap(name)),
            }
        };
        let key_size = std::mem::size_of::<CounterKey>();
        // The index is read again only when the kernel added entries since
        // the last read (its count, read first: an entry added meanwhile
        // is seen now or next time), or userspace removed some (which
        // clears the cache): in a steady state, one lookup instead of a
        // walk of every bucket.
        let added = Array::<_, u64>::try_from(self.map("ROW_ALLOC")?)?.get(&1, 0)?;
        let mut cache = self.index_cache.borrow_mut();
        if cache.as_ref().is_none_or(|(seen, _)| *seen != added) {
            let (keys, idx) = batch::lookup_all(
                fd("ROW_INDEX")?,
                key_size,
                std::mem::size_of::<u32>(),
                self.capacity as usize,
            )
            .map_err(ProbeError::Batch)?;
            let index: Vec<(CounterKey, u32)> = keys
                .chunks_exact(key_size)
                .zip(idx.chunks_exact(4))
                .map(|(k, i)| {
                    // SAFETY: CounterKey is plain data (repr(C), no padding,
                    // every bit pattern valid), and `k` is exactly its size.
                    let key = unsafe { std::ptr::read_unaligned(k.as_ptr().cast::<CounterKey>()) };
                    (key, u32::from_ne_bytes([i[0], i[1], i[2], i[3]]))
                })
                .collect();
            *cache = Some((added, index));
        }
        let index = cache.as_ref().map_or(&[][..], |(_, i)| &i[..]);
        // Rows are handed out from the bottom of the array: reading up to
        // the highest in use covers them all.
        let top = index
            .iter()
            .map(|(_, i)| *i as usize + 1)
            .max()
            .unwrap_or(0);
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Cpus(e))?;
        let row = std::mem::size_of::<Counters>();
        let per_row = row.next_multiple_of(8) * cpus;
        let (_, values) =
            batch::lookup_all(fd("ROWS")?, 4, per_row, top.min(self.capacity as usize))
                .map_err(ProbeError::Batch)?;
        let mut rows = BTreeMap::new();
        for &(key, i) in index {
            let Some(slot) = values.get(i as usize * per_row..(i as usize + 1) * per_row) else {
                // Handed out after the index was read: next sample.
                continue;
            };
            let mut sum = Counters::ZERO;
            for cpu in slot.chunks_exact(row.next_multiple_of(8)) {
                // SAFETY: Counters is plain u64s, and `cpu` holds one.
                let c = unsafe { std::ptr::read_unaligned(cpu.as_ptr().cast::<Counters>()) };
                sum.add(&c);
            }
            rows.insert(key, sum);
        }
        Ok(Snapshot { rows })
    }

    /// The same, one row at a time (two system calls per row): where the
    /// kernel has no batches, and for the tests that hold both to the same
    /// rows.
    #[doc(hidden)]
    pub fn snapshot_per_row(&self) -> Result<Snapshot, ProbeError> {
        let index: HashMap<_, CounterKey, u32> = HashMap::try_from(self.map("ROW_INDEX")?)?;
        let values: PerCpuArray<_, Counters> = PerCpuArray::try_from(self.map("ROWS")?)?;
        let mut rows = BTreeMap::new();
        for item in index.iter() {
            // A row recycled between listing and reading is simply skipped.
            let Ok((key, idx)) = item else { continue };
            let Ok(per_cpu) = values.get(&idx, 0) else {
                continue;
            };
            let mut sum = Counters::ZERO;
            for c in per_cpu.iter() {
                sum.add(c);
            }
            rows.insert(key, sum);
        }
        Ok(Snapshot { rows })
    }

    /// Recycles the counter rows of these threads (finished demo runs whose
    /// numbers the dashboard has kept), so `demo --loop` never runs out of
    /// rows. See `release_rows`.
    pub fn remove_rows(&mut self, tids: &[u32]) -> Result<usize, ProbeError> {
        Ok(self
            .release_rows(|k| k.tid != 0 && tids.contains(&k.tid))?
            .len())
    }

    /// Recycles the counter rows of processes that have exited (their
    /// numbers now live in userspace): each loses its index entry, is
    /// zeroed, and goes back on the free list. Returns what they held, read
    /// after the index entries were removed (so no later count can be
    /// missed); the ledger remembers it as released.
    pub fn remove_process_rows(
        &mut self,
        tgids: &[u32],
    ) -> Result<Vec<(CounterKey, Counters)>, ProbeError> {
        self.release_rows(|k| k.tgid != 0 && tgids.contains(&k.tgid))
    }

    fn release_rows(
        &mut self,
        doomed: impl Fn(&CounterKey) -> bool,
    ) -> Result<Vec<(CounterKey, Counters)>, ProbeError> {
        // The cached index would still list the rows released.
        *self.index_cache.get_mut() = None;
        let mut index: HashMap<_, CounterKey, u32> = HashMap::try_from(self.map_mut("ROW_INDEX")?)?;
        let doomed: Vec<(CounterKey, u32)> = index
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| doomed(k))
            .collect();
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let mut freed = Vec::with_capacity(doomed.len());
        for (k, idx) in &doomed {
            // A row already gone is fine.
            if index.remove(k).is_ok() {
                freed.push(*idx);
            }
        }
        let mut values: PerCpuArray<_, Counters> = PerCpuArray::try_from(self.map_mut("ROWS")?)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Cpus(e))?;
        let mut gone = Vec::with_capacity(freed.len());
        for (k, idx) in &doomed {
            if freed.contains(idx)
                && let Ok(per_cpu) = values.get(idx, 0)
            {
                let mut sum = Counters::ZERO;
                for c in per_cpu.iter() {
                    sum.add(c);
                }
                gone.push((*k, sum));
            }
        }
        for idx in &freed {
            let zeros =
                PerCpuValues::try_from(vec![Counters::ZERO; cpus]).map_err(ProbeError::Cpus)?;
            values.set(*idx, zeros, 0)?;
        }
        let mut free: Queue<_, u32> = Queue::try_from(self.map_mut("FREE_ROWS")?)?;
        for idx in &freed {
            free.push(idx, 0)?;
        }
        balance::release(&mut self.released, &gone);
        // Threads that cached a recycled row forget their caches.
        self.bump_generation()?;
        Ok(gone)
    }

    /// Makes every thread re-check its state against the traced set and
    /// forget its cached counter rows (see `config::GENERATION`).
    fn bump_generation(&mut self) -> Result<(), ProbeError> {
        let mut cfg: Array<_, u32> = Array::try_from(self.map_mut("CONFIG")?)?;
        let generation = cfg.get(&config::GENERATION, 0)?;
        cfg.set(config::GENERATION, generation.wrapping_add(1), 0)?;
        Ok(())
    }

    /// The health counters and the ledger's balance against `rows` (the
    /// raw snapshot: every row, none hidden).
    pub fn stats(&self, rows: &Snapshot) -> Result<Stats, ProbeError> {
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map("STATS")?)?;
        let mut v = [0u64; stat::COUNT];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = arr.get(&(i as u32), 0)?.iter().sum();
        }
        let words = self.ledger()?;
        let accounts = balance::accounts(&words, rows, &self.released);
        let disk_unattributed_bytes = accounts
            .iter()
            .filter(|a| a.name.starts_with("disk_"))
            .map(|a| a.unattributed)
            .sum();
        Ok(Stats {
            events_dropped: v[stat::EVENTS_DROPPED],
            events_sent: v[stat::EVENTS_SENT],
            thread_map_full: v[stat::THREAD_MAP_FULL],
            counter_map_full: v[stat::ROW_FALLBACKS],
            row_capacity: self.capacity,
            rows_used: rows.rows.len() as u64,
            fallback: balance::fallback_counts(rows),
            disk_unattributed_bytes,
            process_map_full: v[stat::PROCESS_MAP_FULL],
            uring_unattributed_ops: v[stat::URING_UNATTRIBUTED_OPS],
            uring_unattributed_bytes: v[stat::URING_UNATTRIBUTED_BYTES],
            uring_map_full: v[stat::URING_MAP_FULL],
            uring_overflow_ops: v[stat::URING_OVERFLOW_OPS],
            uring_overflow_bytes: v[stat::URING_OVERFLOW_BYTES],
            uring_worker_bytes: v[stat::URING_WORKER_BYTES],
            unattributed_bytes: accounts.iter().map(|a| a.unattributed).sum(),
            unaccounted_bytes: accounts.iter().map(|a| a.unaccounted).sum(),
            accounts,
        })
    }

    /// The ledger's words, summed over CPUs.
    fn ledger(&self) -> Result<Vec<u64>, ProbeError> {
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map("LEDGER")?)?;
        (0..ledger::SLOTS as u32)
            .map(|i| Ok(arr.get(&i, 0)?.iter().sum()))
            .collect()
    }

    /// The kernel memory of every map of the probes, largest first.
    pub fn map_memory(&self) -> Vec<super::memory::MapMemory> {
        super::memory::of_this_process(self.ebpf.maps().map(|(name, _)| name))
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, ProbeError> {
        self.ebpf.map(name).ok_or(ProbeError::MissingMap(name))
    }

    pub(super) fn map_mut(
        &mut self,
        name: &'static str,
    ) -> Result<&mut aya::maps::Map, ProbeError> {
        self.ebpf.map_mut(name).ok_or(ProbeError::MissingMap(name))
    }
}
