//! Pure accounting: counter rows in, per-method numbers out. No aya, no
//! terminal: everything here is unit-tested on plain values.

pub mod ledger;
pub mod theory;

use serde::{Deserialize, Serialize};
use zctrace_common::{CounterKey, Counters, Method, counter};

pub use crate::hooks::{Hook, HookSet, Tier};

/// Counter rows summed over CPUs, as read from the kernel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub rows: Rows,
}

/// Rows by key, in key order: a vector sorted by key, each key once. A
/// sample's rows arrive in key order (see `probe::KeyCache`), so they are
/// written once, where they stay; a map of 12,000 rows of 216 bytes was
/// rebuilt each sample, and moved each row several times.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows(Vec<(CounterKey, Counters)>);

impl Rows {
    /// From rows already in strictly ascending key order.
    pub fn from_sorted(v: Vec<(CounterKey, Counters)>) -> Self {
        debug_assert!(v.windows(2).all(|w| w[0].0 < w[1].0));
        Rows(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&CounterKey, &Counters)> + Clone {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&CounterKey, &mut Counters)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &CounterKey> + Clone {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn get(&self, key: &CounterKey) -> Option<&Counters> {
        self.0
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The row of `key`, made (zero) if there is none.
    pub fn entry_or_default(&mut self, key: CounterKey) -> &mut Counters {
        let i = match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (key, Counters::ZERO));
                i
            }
        };
        &mut self.0[i].1
    }

    /// Sets the row of `key`; the old one, if any.
    pub fn insert(&mut self, key: CounterKey, v: Counters) -> Option<Counters> {
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, v)),
            Err(i) => {
                self.0.insert(i, (key, v));
                None
            }
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&CounterKey, &mut Counters) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = (&'a CounterKey, &'a Counters);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (CounterKey, Counters)>,
        fn(&'a (CounterKey, Counters)) -> (&'a CounterKey, &'a Counters),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// Rows in any order; a key given twice keeps its last row (as a map's
/// insert would).
impl FromIterator<(CounterKey, Counters)> for Rows {
    fn from_iter<I: IntoIterator<Item = (CounterKey, Counters)>>(iter: I) -> Self {
        let mut v: Vec<_> = iter.into_iter().collect();
        // Stable: of equal keys, the last given ends last.
        v.sort_by_key(|a| a.0);
        let mut out: Vec<(CounterKey, Counters)> = Vec::with_capacity(v.len());
        for (k, c) in v {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = c,
                _ => out.push((k, c)),
            }
        }
        Rows(out)
    }
}

impl std::ops::Index<&CounterKey> for Rows {
    type Output = Counters;

    fn index(&self, key: &CounterKey) -> &Counters {
        self.get(key).expect("no row with that key")
    }
}

impl Snapshot {
    /// Adds `other`'s rows into these (one merge of the two key orders).
    pub fn add(&mut self, other: &Snapshot) {
        if other.rows.is_empty() {
            return;
        }
        let mine = std::mem::take(&mut self.rows.0);
        let mut out = Vec::with_capacity(mine.len() + other.rows.len());
        let mut theirs = other.rows.0.iter().peekable();
        for (k, mut v) in mine {
            while let Some((ok, ov)) = theirs.next_if(|(ok, _)| *ok <= k) {
                if *ok == k {
                    v.add(ov);
                } else {
                    out.push((*ok, *ov));
                }
            }
            out.push((k, v));
        }
        out.extend(theirs.copied());
        self.rows = Rows(out);
    }

    /// Sum of the rows that match.
    pub fn sum(&self, mut keep: impl FnMut(&CounterKey) -> bool) -> Counters {
        let mut total = Counters::ZERO;
        for (k, v) in &self.rows {
            if keep(k) {
                total.add(v);
            }
        }
        total
    }

    /// Everything one thread did as part of a transfer method (its
    /// bookkeeping syscalls, in [`Method::Other`], are left out).
    pub fn thread_io(&self, tid: u32) -> Counters {
        self.sum(|k| k.tid == tid && k.method != Method::Other as u32)
    }

    /// Everything one thread did.
    pub fn thread_all(&self, tid: u32) -> Counters {
        self.sum(|k| k.tid == tid)
    }

    /// What happened since `base` (for "reset counters" without touching
    /// the kernel). Saturating: a counter never goes below zero.
    pub fn since(&self, base: &Snapshot) -> Snapshot {
        let mut s = self.clone();
        s.subtract(base);
        s
    }

    /// The same, in place.
    pub fn subtract(&mut self, base: &Snapshot) {
        if base.rows.is_empty() {
            return;
        }
        for (k, d) in self.rows.iter_mut() {
            if let Some(b) = base.rows.get(k) {
                for (x, y) in d.v.iter_mut().zip(b.v.iter()) {
                    *x = x.saturating_sub(*y);
                }
            }
        }
    }
}

/// How a number was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Seen by a probe where (or right next to where) the kernel does it.
    Observed,
    /// Inferred from syscall results and fd kinds.
    Derived,
}

/// A byte count with its provenance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bytes {
    pub value: u64,
    pub source: Source,
    pub tier: Tier,
    /// The hook that observed it, for observed values (not read back from
    /// a saved report: a report needs the value and its source).
    #[serde(skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub hook: Option<&'static str>,
}

impl Bytes {
    const fn derived(value: u64) -> Self {
        Bytes {
            value,
            source: Source::Derived,
            tier: Tier::Tracepoint,
            hook: None,
        }
    }

    /// The copy-site tier's count when that tier is in, else `fallback`.
    fn prefer_copy_site(copy_site: Option<u64>, fallback: Self) -> Self {
        match copy_site {
            Some(value) => Bytes {
                value,
                source: Source::Observed,
                tier: Tier::CopySite,
                hook: Some("copy site (fexit)"),
            },
            None => fallback,
        }
    }

    /// Prefers the observed count when it covers the derived one (the
    /// observing hook sees only the socket side; file-side copies exist
    /// only as derived counts).
    fn pick(observed: u64, derived: u64, hook: Hook, hooks: HookSet) -> Self {
        if hooks.has(hook) && observed > 0 && observed >= derived {
            Bytes {
                value: observed,
                source: Source::Observed,
                tier: Tier::Tracepoint,
                hook: Some(hook.target()),
            }
        } else {
            Bytes::derived(derived)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuCopies {
    pub user_to_kernel: Bytes,
    pub kernel_to_user: Bytes,
    pub kernel_to_kernel: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaBytes {
    /// Block device reads issued (device to memory).
    pub disk_read: u64,
    /// Block device writes issued (memory to device).
    pub disk_write: u64,
    /// Transmitted on a real network device.
    pub nic: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextSwitches {
    pub voluntary: u64,
    pub involuntary: u64,
}

/// The measured numbers of one row (a method's thread, a receiver, a
/// process and method in attach mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    pub syscalls: u64,
    /// 2 per syscall plus 2 per user page fault (derived from observed
    /// syscall and fault counts).
    pub mode_switches: u64,
    pub page_faults_user: u64,
    pub page_faults_kernel: u64,
    pub context_switches: ContextSwitches,
    pub cpu_copy_bytes: CpuCopies,
    /// Payload moved by handing over page references (no CPU copy).
    pub page_ref_bytes: Bytes,
    /// User pages pinned for MSG_ZEROCOPY sends.
    pub zerocopy_pinned_bytes: u64,
    /// O_DIRECT transfers (device DMA straight to or from user memory).
    pub direct_io_bytes: u64,
    pub dma_bytes: DmaBytes,
    /// Transmitted on loopback or a software device (veth, bridge, tun):
    /// no DMA happens there. (The JSON name predates software devices.)
    pub loopback_bytes: u64,
    /// Bytes returned by the I/O syscalls and io_uring completions.
    pub io_bytes: u64,
    /// io_uring requests completed, and zero-copy send notifications.
    pub uring: UringCounts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UringCounts {
    /// Requests completed (each result counted like a syscall's).
    pub ops: u64,
    /// Zero-copy send notifications (the pinned pages were let go).
    pub zc_notifications: u64,
    /// Notifications reporting that the kernel copied the data after all.
    pub zc_copied: u64,
}

impl Measured {
    pub fn from_counters(c: &Counters, hooks: HookSet) -> Self {
        let v = &c.v;
        let faults_user = v[counter::FAULTS_USER];
        // Copy-site counts replace the tracepoint tier's for the CPU copy
        // directions when that tier is in (an observed zero is a zero).
        // Not for a ring's requests: io-wq worker threads run part of a
        // ring's work, and the copy sites charge what they see there to the
        // worker, so the submitter's copy-site counts are incomplete; the
        // requests' results are complete.
        let cs = |i: usize| (hooks.copy_site() && v[counter::URING_OPS] == 0).then_some(v[i]);
        Measured {
            syscalls: v[counter::SYSCALLS],
            mode_switches: 2 * v[counter::SYSCALLS] + 2 * faults_user,
            page_faults_user: faults_user,
            page_faults_kernel: v[counter::FAULTS_KERNEL],
            context_switches: ContextSwitches {
                voluntary: v[counter::CS_VOLUNTARY],
                involuntary: v[counter::CS_INVOLUNTARY],
            },
            cpu_copy_bytes: CpuCopies {
                user_to_kernel: Bytes::prefer_copy_site(
                    cs(counter::COPY_SITE_U2K),
                    Bytes::pick(
                        v[counter::U2K_OBSERVED],
                        v[counter::U2K_DERIVED],
                        Hook::TcpSendmsgLocked,
                        hooks,
                    ),
                ),
                kernel_to_user: Bytes::prefer_copy_site(
                    cs(counter::COPY_SITE_K2U),
                    Bytes::pick(
                        v[counter::K2U_OBSERVED],
                        v[counter::K2U_DERIVED],
                        Hook::SkbCopyDatagramIovec,
                        hooks,
                    ),
                ),
                kernel_to_kernel: Bytes::prefer_copy_site(
                    cs(counter::COPY_SITE_K2K),
                    Bytes::pick(
                        v[counter::K2K_OBSERVED],
                        v[counter::K2K_DERIVED],
                        Hook::TcpSendmsgLocked,
                        hooks,
                    ),
                ),
            },
            page_ref_bytes: Bytes::pick(
                v[counter::PAGEREF_OBSERVED],
                v[counter::PAGEREF_DERIVED],
                Hook::TcpSendmsgLocked,
                hooks,
            ),
            zerocopy_pinned_bytes: v[counter::ZC_PINNED_OBSERVED],
            direct_io_bytes: v[counter::DIRECT_IO_BYTES],
            dma_bytes: DmaBytes {
                disk_read: v[counter::DISK_READ_BYTES],
                disk_write: v[counter::DISK_WRITE_BYTES],
                nic: v[counter::XMIT_DEVICE_BYTES],
            },
            loopback_bytes: v[counter::XMIT_LOOPBACK_BYTES],
            io_bytes: v[counter::IO_BYTES],
            uring: UringCounts {
                ops: v[counter::URING_OPS],
                zc_notifications: v[counter::URING_ZC_NOTIFS],
                zc_copied: v[counter::URING_ZC_COPIED],
            },
        }
    }

    pub fn cpu_copy_total(&self) -> u64 {
        let c = &self.cpu_copy_bytes;
        c.user_to_kernel.value + c.kernel_to_user.value + c.kernel_to_kernel.value
    }

    /// CPU copies of the payload: copied bytes per payload byte.
    pub fn cpu_copies_per_byte(&self, payload: u64) -> f64 {
        ratio(self.cpu_copy_total(), payload)
    }

    /// DMA bytes seen at the devices (disk requests, NIC transmits). An
    /// O_DIRECT transfer is one of the disk requests, so it is not added.
    pub fn dma_total(&self) -> u64 {
        let d = &self.dma_bytes;
        d.disk_read + d.disk_write + d.nic
    }

    /// DMA copies of the payload per payload byte.
    pub fn dma_copies_per_byte(&self, payload: u64) -> f64 {
        ratio(self.dma_total(), payload)
    }
}

/// Methods appear in JSON by their command-line name.
pub fn serialize_method<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

/// A method by its name, as `serialize_method` writes it.
pub fn deserialize_method<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
    let name = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    Method::ALL
        .into_iter()
        .find(|m| m.name() == name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown method {name:?}")))
}

pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Human-readable byte count (binary units), e.g. `16.0M`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// A small xorshift for randomized tests: the same numbers on every run;
/// each call gives one below `n`.
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows behave as the map of rows they replace: a seeded random
    /// walk of inserts, adds (merges), retains and look-ups, with a
    /// BTreeMap as the oracle.
    #[test]
    fn rows_behave_as_a_map_in_key_order() {
        use std::collections::BTreeMap;
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let key = |next: &mut dyn FnMut(u64) -> u64| CounterKey {
            tgid: next(6) as u32,
            tid: next(3) as u32,
            method: next(4) as u32,
            call: 0,
            src: next(2) as u16,
            dst: 0,
        };
        let one = |n: u64| {
            let mut c = Counters::ZERO;
            c.v[counter::SYSCALLS] = n;
            c
        };
        let mut snap = Snapshot::default();
        let mut oracle: BTreeMap<CounterKey, Counters> = BTreeMap::new();
        for round in 0..300 {
            match next(4) {
                0 => {
                    let (k, v) = (key(&mut next), one(next(100)));
                    assert_eq!(snap.rows.insert(k, v), oracle.insert(k, v));
                }
                1 => {
                    // Another snapshot, built from rows in any order with
                    // a key given twice (the last one counts), added in.
                    let mut pairs = Vec::new();
                    for _ in 0..next(8) {
                        pairs.push((key(&mut next), one(next(100))));
                    }
                    let other = Snapshot {
                        rows: pairs.iter().copied().collect(),
                    };
                    let mut theirs = BTreeMap::new();
                    for (k, v) in pairs {
                        theirs.insert(k, v);
                    }
                    assert!(other.rows.iter().map(|(k, v)| (*k, *v)).eq(theirs.clone()));
                    snap.add(&other);
                    for (k, v) in theirs {
                        oracle.entry(k).or_default().add(&v);
                    }
                }
                2 => {
                    let t = next(6) as u32;
                    snap.rows.retain(|k, _| k.tgid != t);
                    oracle.retain(|k, _| k.tgid != t);
                }
                _ => {
                    let k = key(&mut next);
                    snap.rows.entry_or_default(k).v[counter::SYSCALLS] += 1;
                    oracle.entry(k).or_default().v[counter::SYSCALLS] += 1;
                }
            }
            let k = key(&mut next);
            assert_eq!(snap.rows.get(&k), oracle.get(&k), "round {round}");
            assert_eq!(snap.rows.len(), oracle.len());
            assert!(
                snap.rows.iter().map(|(k, v)| (*k, *v)).eq(oracle.clone()),
                "round {round}"
            );
        }
    }

    fn row(pairs: &[(usize, u64)]) -> Counters {
        let mut c = Counters::ZERO;
        for (i, v) in pairs {
            c.v[*i] = *v;
        }
        c
    }

    fn key(tid: u32, method: Method) -> CounterKey {
        CounterKey {
            tgid: 1,
            tid,
            method: method as u32,
            call: 0,
            src: 0,
            dst: 0,
        }
    }

    #[test]
    fn thread_io_leaves_out_bookkeeping() {
        let mut s = Snapshot::default();
        s.rows
            .insert(key(7, Method::ReadWrite), row(&[(counter::SYSCALLS, 512)]));
        s.rows
            .insert(key(7, Method::Other), row(&[(counter::SYSCALLS, 9)]));
        s.rows
            .insert(key(8, Method::ReadWrite), row(&[(counter::SYSCALLS, 100)]));
        assert_eq!(s.thread_io(7).v[counter::SYSCALLS], 512);
        assert_eq!(s.thread_all(7).v[counter::SYSCALLS], 521);
    }

    #[test]
    fn since_subtracts_and_never_underflows() {
        let mut a = Snapshot::default();
        a.rows
            .insert(key(1, Method::Sendfile), row(&[(counter::SYSCALLS, 10)]));
        let mut b = Snapshot::default();
        b.rows
            .insert(key(1, Method::Sendfile), row(&[(counter::SYSCALLS, 25)]));
        b.rows
            .insert(key(2, Method::Sendfile), row(&[(counter::SYSCALLS, 3)]));
        let d = b.since(&a);
        assert_eq!(d.rows[&key(1, Method::Sendfile)].v[counter::SYSCALLS], 15);
        assert_eq!(d.rows[&key(2, Method::Sendfile)].v[counter::SYSCALLS], 3);
        assert_eq!(
            a.since(&b).rows[&key(1, Method::Sendfile)].v[counter::SYSCALLS],
            0
        );
    }

    #[test]
    fn mode_switches_count_syscalls_and_user_faults() {
        let m = Measured::from_counters(
            &row(&[(counter::SYSCALLS, 512), (counter::FAULTS_USER, 3)]),
            HookSet::tracepoint_tier(),
        );
        assert_eq!(m.mode_switches, 1030);
    }

    #[test]
    fn observed_wins_only_when_it_covers_the_derived_count() {
        let c = row(&[
            (counter::U2K_OBSERVED, 1000),
            (counter::U2K_DERIVED, 1000),
            (counter::K2U_DERIVED, 1000),
            (counter::K2U_OBSERVED, 10),
        ]);
        let m = Measured::from_counters(&c, HookSet::tracepoint_tier());
        assert_eq!(m.cpu_copy_bytes.user_to_kernel.source, Source::Observed);
        assert_eq!(m.cpu_copy_bytes.kernel_to_user.source, Source::Derived);
        assert_eq!(m.cpu_copies_per_byte(1000), 2.0);
        // Without the hook, never "observed".
        let m = Measured::from_counters(&c, HookSet::default());
        assert_eq!(m.cpu_copy_bytes.user_to_kernel.source, Source::Derived);
        assert_eq!(m.cpu_copy_bytes.user_to_kernel.hook, None);
    }

    #[test]
    fn the_copy_site_tier_wins_when_it_is_in() {
        let c = row(&[(counter::K2U_DERIVED, 1000), (counter::COPY_SITE_K2U, 990)]);
        let m = Measured::from_counters(&c, HookSet::tracepoint_tier());
        assert_eq!(m.cpu_copy_bytes.kernel_to_user.value, 1000);
        assert_eq!(m.cpu_copy_bytes.kernel_to_user.tier, Tier::Tracepoint);
        let m = Measured::from_counters(&c, HookSet::of(Hook::ALL));
        assert_eq!(m.cpu_copy_bytes.kernel_to_user.value, 990);
        assert_eq!(m.cpu_copy_bytes.kernel_to_user.tier, Tier::CopySite);
        assert_eq!(m.cpu_copy_bytes.user_to_kernel.value, 0, "an observed zero");
    }

    #[test]
    fn empty_counters_are_zero_not_nan() {
        let m = Measured::from_counters(&Counters::ZERO, HookSet::tracepoint_tier());
        assert_eq!(m.cpu_copies_per_byte(0), 0.0);
        assert_eq!(m.dma_copies_per_byte(0), 0.0);
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512");
        assert_eq!(human_bytes(16 << 20), "16.0M");
        assert_eq!(human_bytes(1536), "1.5K");
    }
}
