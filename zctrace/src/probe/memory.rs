//! What zctrace's maps cost the kernel in memory, as the kernel itself
//! accounts it: the `memlock` line of each map descriptor's
//! `/proc/self/fdinfo` entry (what `bpftool map show` prints too), read
//! from zctrace's own descriptors, so no other program's maps are counted.

use std::{collections::BTreeSet, path::Path};

/// One map.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MapMemory {
    /// The map's name as the kernel keeps it (at most 15 characters).
    pub name: String,
    /// The kernel's map type (`percpu_array`, `hash`, ...).
    pub kind: &'static str,
    pub entries: u32,
    pub key_bytes: u32,
    pub value_bytes: u32,
    /// Bytes the kernel charges for it. Task storage is charged per
    /// thread as threads get it, not here: its line shows the map alone.
    pub bytes: u64,
}

/// The kernel's name of a map type (the ones zctrace creates, and a
/// number for any other).
fn kind_name(t: u32) -> &'static str {
    match t {
        1 => "hash",
        2 => "array",
        5 => "percpu_hash",
        6 => "percpu_array",
        9 => "lru_hash",
        22 => "queue",
        27 => "ringbuf",
        29 => "task_storage",
        _ => "other",
    }
}

/// The fields of one fdinfo entry that describe a map (None: not a map).
pub fn parse_fdinfo(text: &str) -> Option<(u32, MapMemory)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let id = u32::try_from(field("map_id")?).ok()?;
    Some((
        id,
        MapMemory {
            name: String::new(),
            kind: kind_name(u32::try_from(field("map_type")?).ok()?),
            entries: u32::try_from(field("max_entries")?).ok()?,
            key_bytes: u32::try_from(field("key_size")?).ok()?,
            value_bytes: u32::try_from(field("value_size")?).ok()?,
            bytes: field("memlock")?,
        },
    ))
}

/// The maps of this process whose names are in `names` (compared as the
/// kernel truncates them), each once however many descriptors it has,
/// largest first.
pub fn of_this_process<'a>(names: impl Iterator<Item = &'a str>) -> Vec<MapMemory> {
    let wanted: BTreeSet<String> = names.map(|n| n.chars().take(15).collect()).collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(Path::new("/proc/self/fdinfo")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Some((id, mut m)) = parse_fdinfo(&text) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let Some(name) = aya::maps::MapInfo::from_id(id)
            .ok()
            .and_then(|i| i.name_as_str().map(str::to_owned))
        else {
            continue;
        };
        if wanted.contains(&name) {
            m.name = name;
            out.push(m);
        }
    }
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_map_entry_and_ignores_other_descriptors() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1055\nmap_type:\t6\n\
                   key_size:\t4\nvalue_size:\t328\nmax_entries:\t32768\nmap_flags:\t0x0\n\
                   map_extra:\t0x0\nmemlock:\t21233664\nmap_id:\t812\nfrozen:\t0\n";
        assert_eq!(
            parse_fdinfo(map),
            Some((
                812,
                MapMemory {
                    name: String::new(),
                    kind: "percpu_array",
                    entries: 32768,
                    key_bytes: 4,
                    value_bytes: 328,
                    bytes: 21_233_664,
                }
            ))
        );
        assert_eq!(
            parse_fdinfo("pos:\t0\nflags:\t0100000\nmnt_id:\t24\n"),
            None
        );
    }
}
