//! `vt image info` output: qemu-img's human text and its JSON (the same
//! field names as `qemu-img info --output=json`).

use disk::info::ImageInfo;
use serde_json::{json, Map, Value};

/// `qemu-img info --output=json`'s object.
pub fn json(i: &ImageInfo) -> Value {
    let mut m = Map::new();
    m.insert("virtual-size".into(), json!(i.virtual_size));
    m.insert("filename".into(), json!(i.filename));
    m.insert("format".into(), json!(i.format.name()));
    m.insert("actual-size".into(), json!(i.actual_size));
    m.insert("dirty-flag".into(), json!(i.dirty));
    if !i.snapshots.is_empty() {
        let list: Vec<Value> = i
            .snapshots
            .iter()
            .map(|s| {
                let mut o = json!({
                    "vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000,
                    "name": s.name,
                    "date-sec": s.date_sec,
                    "date-nsec": s.date_nsec,
                    "vm-clock-sec": s.vm_clock_nsec / 1_000_000_000,
                    "id": s.id,
                    "vm-state-size": s.vm_state_size,
                });
                if let Some(ic) = s.icount {
                    o["icount"] = json!(ic);
                }
                o
            })
            .collect();
        m.insert("snapshots".into(), Value::Array(list));
    }
    if let Some(q) = &i.qcow2 {
        m.insert("cluster-size".into(), json!(q.cluster_size));
        if let Some(b) = &q.backing_filename {
            m.insert("backing-filename".into(), json!(b));
        }
        if let Some(b) = &q.full_backing_filename {
            m.insert("full-backing-filename".into(), json!(b));
        }
        if let Some(b) = &q.backing_format {
            m.insert("backing-filename-format".into(), json!(b));
        }
        let mut data = json!({
            "compat": q.compat,
            "compression-type": q.compression_type,
            "lazy-refcounts": q.lazy_refcounts,
            "refcount-bits": q.refcount_bits,
            "corrupt": q.corrupt,
            "extended-l2": q.extended_l2,
        });
        if q.compat == "0.10" {
            // qemu-img shows only these for v2 images.
            data = json!({ "compat": q.compat, "compression-type": q.compression_type, "refcount-bits": q.refcount_bits });
        }
        m.insert(
            "format-specific".into(),
            json!({ "type": "qcow2", "data": data }),
        );
    }
    Value::Object(m)
}

/// Sizes as qemu-img prints them: `1 MiB`, `196 KiB`, `1.5 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s} {}", UNITS[u])
    }
}

/// `qemu-img info`'s text.
pub fn human(i: &ImageInfo) -> String {
    let mut s = format!(
        "image: {}\nfile format: {}\nvirtual size: {} ({} bytes)\ndisk size: {}\n",
        i.filename,
        i.format.name(),
        human_size(i.virtual_size),
        i.virtual_size,
        human_size(i.actual_size)
    );
    if let Some(q) = &i.qcow2 {
        s += &format!("cluster_size: {}\n", q.cluster_size);
        if let Some(b) = &q.backing_filename {
            s += &format!("backing file: {b}");
            if q.full_backing_filename.as_ref() != Some(b) {
                if let Some(f) = &q.full_backing_filename {
                    s += &format!(" (actual path: {f})");
                }
            }
            s.push('\n');
        }
        if let Some(f) = &q.backing_format {
            s += &format!("backing file format: {f}\n");
        }
        if q.snapshots > 0 {
            s += &format!("snapshots: {}\n", q.snapshots);
        }
        s += &format!(
            "Format specific information:\n    compat: {}\n    compression type: {}\n",
            q.compat, q.compression_type
        );
        if q.compat != "0.10" {
            s += &format!(
                "    lazy refcounts: {}\n    refcount bits: {}\n    corrupt: {}\n    extended l2: {}\n",
                q.lazy_refcounts, q.refcount_bits, q.corrupt, q.extended_l2
            );
        } else {
            s += &format!("    refcount bits: {}\n", q.refcount_bits);
        }
    }
    if i.dirty {
        s += "dirty flag: true\n";
    }
    s
}

/// `date_sec` as local time, `%Y-%m-%d %H:%M:%S` (as QEMU prints it).
fn local_time(secs: u32) -> String {
    let t = libc::time_t::from(secs);
    // SAFETY: tm is plain data; localtime_r writes into it and keeps no pointer.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals for the duration of the call.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return String::new();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// `qemu-img snapshot -l`'s table (QEMU's `bdrv_snapshot_dump` layout);
/// nothing at all when there are no snapshots, as qemu-img.
pub fn snapshot_table(snaps: &[disk::snapshot::Snapshot]) -> String {
    if snaps.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "Snapshot list:\n{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}\n",
        "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT"
    );
    for sn in snaps {
        let ms = sn.vm_clock_nsec / 1_000_000;
        let clock = format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        );
        let icount = sn.icount.map_or(String::new(), |i| i.to_string());
        s += &format!(
            "{:<9} {:<16} {:>8}{:>20}{:>13}{:>11}\n",
            sn.id,
            sn.name,
            human_size(sn.vm_state_size),
            local_time(sn.date_sec),
            clock,
            icount
        );
    }
    s
}

/// `qemu-img map --output=json`'s text, byte for byte.
pub fn map_json(extents: &[disk::map::Extent]) -> String {
    let lines: Vec<String> = extents
        .iter()
        .map(|e| {
            let offset = e.offset.map_or(String::new(), |o| format!(", \"offset\": {o}"));
            format!(
                "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}{offset}}}",
                e.start, e.length, e.depth, e.present, e.zero, e.data
            )
        })
        .collect();
    format!("[{}]\n", lines.join(",\n"))
}

/// `qemu-img map`'s table: the ranges stored as data in some file.
pub fn map_human(extents: &[disk::map::Extent]) -> String {
    // C's "%#-16x": no 0x for zero.
    let hex = |v: u64| {
        if v == 0 {
            "0".to_string()
        } else {
            format!("{v:#x}")
        }
    };
    let mut s = format!(
        "{:<16}{:<16}{:<16}{}\n",
        "Offset", "Length", "Mapped to", "File"
    );
    for e in extents.iter().filter(|e| e.data) {
        if let Some(o) = e.offset {
            s += &format!(
                "{:<16}{:<16}{:<16}{}\n",
                hex(e.start),
                hex(e.length),
                hex(o),
                e.file
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_qemu_img() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1 << 20), "1 MiB");
        assert_eq!(human_size(200704), "196 KiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
    }
}
