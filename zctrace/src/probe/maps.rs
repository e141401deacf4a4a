//! Reading and writing the probes' maps: the traced set, the event switch
//! and ring buffer, the counter rows, the health counters.

use aya::maps::{Array, HashMap, MapData, PerCpuArray, Queue, RingBuf};
use zctrace_common::{CounterKey, Counters, OVERFLOW_ROW, RowKey, config, ledger, stat};

use super::{ProbeError, Probes, Stats, attach, batch};
use crate::hooks::Hook;

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
    let mut keys: Array<_, RowKey> = Array::try_from(map(ebpf, "ROW_KEYS")?)?;
    let overflow = RowKey {
        seq: 1,
        key: CounterKey::OVERFLOW,
        _pad: 0,
    };
    keys.set(OVERFLOW_ROW, overflow, 0)?;
    let mut alloc: Array<_, u64> = Array::try_from(map(ebpf, "ROW_ALLOC")?)?;
    alloc.set(0, u64::from(OVERFLOW_ROW) + 1, 0)?;
    alloc.set(1, 1, 0)?;
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

    /// Turns the per-syscall event stream on or off. On, sys_enter is
    /// attached too, to time the calls; each time the stream is turned on
    /// it is a new session, so a start time from before is never taken
    /// for a call's (a call already in flight is shown untimed).
    pub fn set_events(&mut self, on: bool) -> Result<(), ProbeError> {
        let session = if on {
            self.event_sessions = self.event_sessions.wrapping_add(1).max(1);
            self.event_sessions
        } else {
            0
        };
        if !on && let Some(link) = self.enter_link.take() {
            attach::detach_loaded(&mut self.ebpf, Hook::SysEnter, link).map_err(|reason| {
                ProbeError::Attach {
                    hook: Hook::SysEnter,
                    reason,
                }
            })?;
        }
        let mut cfg: Array<_, u32> = Array::try_from(self.map_mut("CONFIG")?)?;
        cfg.set(config::EVENTS_ENABLED, session, 0)?;
        if on && self.enter_link.is_none() && self.hook_set().has(Hook::SysEnter) {
            let link = attach::attach_loaded(&mut self.ebpf, Hook::SysEnter).map_err(|reason| {
                ProbeError::Attach {
                    hook: Hook::SysEnter,
                    reason,
                }
            })?;
            self.enter_link = Some(link);
        }
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

    /// Reads every counter row, summing the CPUs' copies, from the mapped
    /// row map, with the keys it learns from the mapped key array (see
    /// `row_keys`): no system call but one lookup per new row.
    pub fn snapshot(&self) -> Result<Snapshot, ProbeError> {
        let mapped = self.rows.as_ref().ok_or(ProbeError::MissingMap("ROWS"))?;
        let cache = self.row_keys()?;
        // In key order already: each row is written once, where it stays.
        let mut rows = Vec::with_capacity(cache.sorted.len());
        rows.extend(
            cache
                .sorted
                .iter()
                .map(|&(key, i)| (key, mapped.sum(i as usize))),
        );
        Ok(Snapshot {
            rows: crate::model::Rows::from_sorted(rows),
        })
    }

    /// Which row holds which key, brought up to date: the keys are read
    /// (up to the last row handed out) only when the kernel has given rows
    /// keys since the last read, and a key not seen before is believed
    /// only when the index agrees (one lookup per new row). A read that
    /// found a key it could not confirm (torn by the kernel writing it
    /// meanwhile) is made again next sample, whatever the count.
    fn row_keys(&self) -> Result<std::cell::RefMut<'_, super::KeyCache>, ProbeError> {
        let alloc = Array::<_, u64>::try_from(self.map("ROW_ALLOC")?)?;
        // The count first: keys written before it moved are in the read.
        let added = alloc.get(&1, 0)?;
        let mut cache = self.key_cache.borrow_mut();
        if cache.added == Some(added) {
            return Ok(cache);
        }
        let keys = self
            .keys
            .as_ref()
            .ok_or(ProbeError::MissingMap("ROW_KEYS"))?;
        let handed_out = alloc.get(&0, 0)?.min(u64::from(self.capacity)) as usize;
        let index: HashMap<_, CounterKey, u32> = HashMap::try_from(self.map("ROW_INDEX")?)?;
        let c = &mut *cache;
        if c.rows.len() < handed_out {
            c.rows.resize(handed_out, (0, None));
        }
        let mut settled = true;
        let mut changed = false;
        for i in 0..handed_out {
            let rk = keys.get(i);
            if rk.seq == c.rows[i].0 {
                continue;
            }
            if index.get(&rk.key, 0).ok() == Some(i as u32) {
                c.set(i, rk.seq, Some(rk.key));
                changed = true;
            } else {
                settled = false;
            }
        }
        if changed {
            c.sort();
        }
        c.added = settled.then_some(added);
        Ok(cache)
    }

    /// The same through the kernel, one row at a time (a system call per
    /// row and CPU, and the index walked): for the tests that hold both
    /// to the same rows.
    #[doc(hidden)]
    pub fn snapshot_per_row(&self) -> Result<Snapshot, ProbeError> {
        let index: HashMap<_, CounterKey, u32> = HashMap::try_from(self.map("ROW_INDEX")?)?;
        let values: Array<_, Counters> = Array::try_from(self.map("ROWS")?)?;
        let cpus = self.rows.as_ref().map_or(0, |r| r.cpus()) as u32;
        let mut rows = Vec::new();
        'rows: for item in index.iter() {
            // A row recycled between listing and reading is simply skipped.
            let Ok((key, idx)) = item else { continue };
            let mut sum = Counters::ZERO;
            for cpu in 0..cpus {
                let Ok(c) = values.get(&(cpu * self.capacity + idx), 0) else {
                    continue 'rows;
                };
                sum.add(&c);
            }
            rows.push((key, sum));
        }
        Ok(Snapshot {
            rows: rows.into_iter().collect(),
        })
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
        let doomed: Vec<(CounterKey, u32)> = self
            .index_entries()?
            .into_iter()
            .filter(|(k, _)| doomed(k))
            .collect();
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let mut index: HashMap<_, CounterKey, u32> = HashMap::try_from(self.map_mut("ROW_INDEX")?)?;
        let mut freed = Vec::with_capacity(doomed.len());
        for (k, idx) in &doomed {
            // A row already gone is fine.
            if index.remove(k).is_ok() {
                freed.push(*idx);
            }
        }
        let mapped = self.rows.as_ref().ok_or(ProbeError::MissingMap("ROWS"))?;
        let gone: Vec<(CounterKey, Counters)> = doomed
            .iter()
            .filter(|(_, idx)| freed.contains(idx))
            .map(|(k, idx)| (*k, mapped.sum(*idx as usize)))
            .collect();
        for idx in &freed {
            mapped.zero(*idx as usize);
        }
        // The sampler's cache learns the rows are free, at the key each
        // holds now (a new key, given when the kernel reuses the row, is a
        // new row), before the kernel can reuse them.
        let keys = self
            .keys
            .as_ref()
            .ok_or(ProbeError::MissingMap("ROW_KEYS"))?;
        let seqs: Vec<(u32, u64)> = freed
            .iter()
            .map(|&idx| (idx, keys.get(idx as usize).seq))
            .collect();
        let cache = self.key_cache.get_mut();
        for (idx, seq) in seqs {
            cache.set(idx as usize, seq, None);
        }
        cache.sort();
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
    /// raw snapshot: every row, none hidden), read after them: for a quiet
    /// machine. A sampler uses [`Probes::snapshot_and_stats`].
    pub fn stats(&self, rows: &Snapshot) -> Result<Stats, ProbeError> {
        self.stats_since(None, rows)
    }

    /// The rows and the stats, the ledger read before the rows and after
    /// them, so that bytes charged while the rows were read are not taken
    /// for lost (see `Account::unaccounted`).
    pub fn snapshot_and_stats(&self) -> Result<(Snapshot, Stats), ProbeError> {
        let before = self.percpu_sums("LEDGER", ledger::SLOTS)?;
        let rows = self.snapshot()?;
        let stats = self.stats_since(Some(&before), &rows)?;
        Ok((rows, stats))
    }

    fn stats_since(&self, before: Option<&[u64]>, rows: &Snapshot) -> Result<Stats, ProbeError> {
        let mut v = [0u64; stat::COUNT];
        for (slot, sum) in v.iter_mut().zip(self.percpu_sums("STATS", stat::COUNT)?) {
            *slot = sum;
        }
        let words = self.percpu_sums("LEDGER", ledger::SLOTS)?;
        let accounts = balance::accounts(before, &words, rows, &self.released);
        let disk_unattributed_bytes = accounts
            .iter()
            .filter(|a| a.name.starts_with("disk_"))
            .map(|a| a.unattributed)
            .sum();
        Ok(Stats {
            events_dropped: v[stat::EVENTS_DROPPED],
            events_sent: v[stat::EVENTS_SENT],
            thread_map_full: v[stat::THREAD_MAP_FULL],
            unclassified_calls: v[stat::CHAIN_FAILED],
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

    /// The first `n` slots of a per-CPU array of u64s, each summed over
    /// the CPUs: in one batch (the ledger has some two hundred slots, a
    /// system call each otherwise), slot by slot where the kernel has no
    /// batches.
    fn percpu_sums(&self, name: &'static str, n: usize) -> Result<Vec<u64>, ProbeError> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let map = self.map(name)?;
        if let aya::maps::Map::PerCpuArray(d) = map {
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| ProbeError::Cpus(e))?;
            if let Ok((_, values)) = batch::lookup_all(d.fd().as_fd().as_raw_fd(), 4, 8 * cpus, n)
                && values.len() == n * 8 * cpus
            {
                return Ok(values
                    .chunks_exact(8 * cpus)
                    .map(|slot| {
                        slot.chunks_exact(8)
                            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
                            .sum()
                    })
                    .collect());
            }
        }
        let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        (0..n as u32)
            .map(|i| Ok(arr.get(&i, 0)?.iter().sum()))
            .collect()
    }

    /// Every (key, row) of the row index, in batches (row by row where the
    /// kernel has no batches).
    fn index_entries(&self) -> Result<Vec<(CounterKey, u32)>, ProbeError> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let Some(aya::maps::Map::HashMap(d)) = self.ebpf.map("ROW_INDEX") else {
            return Err(ProbeError::MissingMap("ROW_INDEX"));
        };
        let key_size = std::mem::size_of::<CounterKey>();
        match batch::lookup_all(
            d.fd().as_fd().as_raw_fd(),
            key_size,
            4,
            self.capacity as usize,
        ) {
            Ok((keys, idx)) => Ok(keys
                .chunks_exact(key_size)
                .zip(idx.chunks_exact(4))
                .map(|(k, i)| {
                    // SAFETY: CounterKey is plain data (repr(C), no
                    // padding, every bit pattern valid), `k` its size.
                    let key = unsafe { std::ptr::read_unaligned(k.as_ptr().cast::<CounterKey>()) };
                    (key, u32::from_ne_bytes([i[0], i[1], i[2], i[3]]))
                })
                .collect()),
            Err(_) => {
                let index: HashMap<_, CounterKey, u32> = HashMap::try_from(self.map("ROW_INDEX")?)?;
                Ok(index.iter().filter_map(Result::ok).collect())
            }
        }
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
