//! The ledger check: every byte a payload hook saw is in a counter row, in
//! a row recycled since, or in an unattributed bucket with its reason. The
//! kernel keeps what the hooks saw (`zctrace_common::ledger`); this module
//! sets it against the rows and says what does not add up.

use std::collections::BTreeMap;

use serde::Serialize;
use zctrace_common::{Call, CounterKey, Counters, Method, counter, ledger};

use super::Snapshot;

/// The ledger's name for a counter: the hook (or hook family) that sees it.
pub const fn account_name(idx: usize) -> &'static str {
    match idx {
        counter::K2U_OBSERVED => "socket_recv_copy",
        counter::U2K_OBSERVED => "tcp_send_copy",
        counter::PAGEREF_OBSERVED => "tcp_send_page_refs",
        counter::ZC_PINNED_OBSERVED => "tcp_send_pinned",
        counter::K2K_OBSERVED => "tcp_send_kernel_copy",
        counter::COPY_SITE_U2K => "copy_site_user_to_kernel",
        counter::COPY_SITE_K2U => "copy_site_kernel_to_user",
        counter::COPY_SITE_K2K => "copy_site_kernel_to_kernel",
        counter::COPY_SITE_REFS => "copy_site_page_refs",
        counter::DISK_READ_BYTES => "disk_read",
        counter::DISK_WRITE_BYTES => "disk_write",
        counter::XMIT_LOOPBACK_BYTES => "transmit_loopback",
        counter::XMIT_DEVICE_BYTES => "transmit_device",
        ledger::URING_BYTES => "io_uring_completions",
        _ => "?",
    }
}

/// The counters the ledger keeps, in report order.
pub fn ledgered() -> impl Iterator<Item = usize> {
    (0..counter::COUNT).filter(|&c| counter::is_ledgered(c) || c == ledger::URING_BYTES)
}

/// What a row holds of ledger counter `c`. The io_uring slot is the bytes
/// of completions, which rows count in IO_BYTES of their io_uring_enter
/// rows (a syscall's IO_BYTES are its own results, not a hook's).
pub fn row_value(key: &CounterKey, row: &Counters, c: usize) -> u64 {
    if c == ledger::URING_BYTES {
        if key.call == Call::IoUringEnter as u32 {
            row.v[counter::IO_BYTES]
        } else {
            0
        }
    } else {
        row.v[c]
    }
}

/// One counter's balance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Account {
    pub name: &'static str,
    /// Bytes the hook saw in scope (traced processes; kernel threads):
    /// charged + unattributed.
    pub seen: u64,
    /// Bytes the hook charged to processes (the kernel's tally, kept apart
    /// from the rows).
    pub charged: u64,
    /// In counter rows now.
    pub in_rows: u64,
    /// In rows recycled since (finished demo runs kept by the dashboard).
    pub released: u64,
    /// Not charged to any process, by reason.
    pub unattributed: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unattributed_by_reason: BTreeMap<&'static str, u64>,
    /// charged - in_rows - released. Zero when nothing was lost. A sample
    /// taken while bytes move reads the ledger before and after the rows:
    /// rows that hold at least what the first read charged and at most
    /// what the second did lost nothing, and `charged` is then what they
    /// hold (the tally as of the rows' read, bounded by the two reads).
    pub unaccounted: i64,
}

/// Balances every ledgered counter the hooks saw anything of. `words` is
/// the ledger read after `rows`; `before`, if given, the ledger read just
/// before them.
pub fn accounts(
    before: Option<&[u64]>,
    words: &[u64],
    rows: &Snapshot,
    released: &[u64; counter::COUNT],
) -> Vec<Account> {
    let word = |i: usize| words.get(i).copied().unwrap_or(0);
    // Every ledgered counter's sum over the rows, in one pass over them.
    let list: Vec<usize> = ledgered().collect();
    let mut sums = [0u64; counter::COUNT];
    for (k, v) in &rows.rows {
        for &c in &list {
            sums[c] = sums[c].wrapping_add(row_value(k, v, c));
        }
    }
    ledgered()
        .filter_map(|c| {
            let after = word(ledger::charged(c));
            let in_rows = sums[c];
            let have = in_rows.saturating_add(released[c]);
            let charged = match before.and_then(|b| b.get(ledger::charged(c))) {
                Some(&lo) if (lo..=after).contains(&have) => have,
                _ => after,
            };
            let by_reason: BTreeMap<&'static str, u64> = (0..ledger::REASONS)
                .map(|r| (ledger::REASON_NAMES[r], word(ledger::unattributed(c, r))))
                .filter(|&(_, v)| v > 0)
                .collect();
            let unattributed: u64 = by_reason.values().sum();
            if charged == 0 && in_rows == 0 && unattributed == 0 {
                return None;
            }
            let unaccounted = charged as i128 - in_rows as i128 - released[c] as i128;
            Some(Account {
                name: account_name(c),
                seen: charged.saturating_add(unattributed),
                charged,
                in_rows,
                released: released[c],
                unattributed,
                unattributed_by_reason: by_reason,
                unaccounted: unaccounted.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            })
        })
        .collect()
}

/// What the fallback rows (method `map-full`) hold: counts whose own row
/// did not fit the map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FallbackCounts {
    /// Processes with a fallback row (the overflow row counts as one).
    pub rows: u64,
    pub syscalls: u64,
    pub io_bytes: u64,
    /// CPU copy bytes (derived, any direction) in them.
    pub copy_bytes: u64,
}

pub fn fallback_counts(rows: &Snapshot) -> FallbackCounts {
    let mut f = FallbackCounts::default();
    for (k, v) in &rows.rows {
        if k.method != Method::Fallback as u32 || *v == Counters::ZERO {
            continue;
        }
        f.rows += 1;
        f.syscalls += v.v[counter::SYSCALLS];
        f.io_bytes += v.v[counter::IO_BYTES];
        f.copy_bytes +=
            v.v[counter::U2K_DERIVED] + v.v[counter::K2U_DERIVED] + v.v[counter::K2K_DERIVED];
    }
    f
}

/// Adds what recycled rows held to the running `released` totals.
pub fn release(released: &mut [u64; counter::COUNT], rows: &[(CounterKey, Counters)]) {
    for (k, v) in rows {
        for c in ledgered() {
            released[c] = released[c].saturating_add(row_value(k, v, c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: Method, call: Call) -> CounterKey {
        CounterKey {
            tgid: 5,
            tid: 0,
            method: method as u32,
            call: call as u32,
            src: 0,
            dst: 0,
        }
    }

    #[test]
    fn a_balanced_ledger_has_nothing_unaccounted_and_a_lost_byte_shows() {
        let mut words = vec![0u64; ledger::SLOTS];
        let c = counter::K2U_OBSERVED;
        words[ledger::charged(c)] = 900;
        words[ledger::unattributed(c, ledger::KERNEL_THREAD)] = 100;
        let mut snap = Snapshot::default();
        let mut row = Counters::ZERO;
        row.v[c] = 600;
        snap.rows
            .insert(key(Method::SocketRecv, Call::Recvfrom), row);
        let mut released = [0u64; counter::COUNT];
        released[c] = 300;
        let a = accounts(None, &words, &snap, &released);
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0],
            Account {
                name: "socket_recv_copy",
                seen: 1000,
                charged: 900,
                in_rows: 600,
                released: 300,
                unattributed: 100,
                unattributed_by_reason: [("kernel_thread", 100)].into_iter().collect(),
                unaccounted: 0,
            }
        );
        // A byte the kernel charged and put in no row is reported.
        words[ledger::charged(c)] = 901;
        assert_eq!(accounts(None, &words, &snap, &released)[0].unaccounted, 1);
        // Read while bytes moved: rows between the ledger read before them
        // (880) and the one after (901) lost nothing, and are the charge;
        // rows short of what was charged before them lost the difference
        // to the later read; rows above the later read counted some twice.
        let mut before = words.clone();
        before[ledger::charged(c)] = 880;
        let a = &accounts(Some(&before), &words, &snap, &released)[0];
        assert_eq!((a.charged, a.unaccounted, a.seen), (900, 0, 1000));
        before[ledger::charged(c)] = 901;
        assert_eq!(
            accounts(Some(&before), &words, &snap, &released)[0].unaccounted,
            1
        );
        before[ledger::charged(c)] = 850;
        words[ledger::charged(c)] = 899;
        assert_eq!(
            accounts(Some(&before), &words, &snap, &released)[0].unaccounted,
            -1
        );
    }

    #[test]
    fn io_uring_bytes_are_the_io_bytes_of_io_uring_enter_rows_only() {
        let mut words = vec![0u64; ledger::SLOTS];
        words[ledger::charged(ledger::URING_BYTES)] = 4096;
        let mut snap = Snapshot::default();
        let mut row = Counters::ZERO;
        row.v[counter::IO_BYTES] = 4096;
        snap.rows
            .insert(key(Method::UringRead, Call::IoUringEnter), row);
        // A plain read's result bytes are not a hook's.
        snap.rows.insert(key(Method::ReadWrite, Call::Read), row);
        let a = accounts(None, &words, &snap, &[0; counter::COUNT]);
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].name, a[0].in_rows, a[0].unaccounted),
            ("io_uring_completions", 4096, 0)
        );
    }

    #[test]
    fn fallback_rows_are_summed() {
        let mut snap = Snapshot::default();
        let mut row = Counters::ZERO;
        row.v[counter::SYSCALLS] = 3;
        row.v[counter::IO_BYTES] = 12288;
        row.v[counter::K2U_DERIVED] = 12288;
        snap.rows.insert(CounterKey::fallback(5), row);
        snap.rows.insert(CounterKey::OVERFLOW, row);
        snap.rows.insert(key(Method::ReadWrite, Call::Read), row);
        assert_eq!(
            fallback_counts(&snap),
            FallbackCounts {
                rows: 2,
                syscalls: 6,
                io_bytes: 24576,
                copy_bytes: 24576
            }
        );
    }
}
