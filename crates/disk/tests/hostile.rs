//! Hostile and unsupported images: each a clear error, never a panic, and
//! never a read outside the image's own chain.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use disk::{open_path, DiskFormat, OpenError};

fn qcow2(t: &Scratch, name: &str, extra: &[&str], size: &str) -> std::path::PathBuf {
    let img = t.path(name);
    let mut args = vec!["create", "-f", "qcow2", "-u"];
    args.extend_from_slice(extra);
    args.push(s(&img));
    if !size.is_empty() {
        args.push(size);
    }
    qemu("qemu-img", &args);
    img
}

fn poke(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn err(path: &Path, readonly: bool) -> String {
    match open_path(path, &opts(Some(DiskFormat::Qcow2), readonly)) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => chain(&e),
    }
}

fn chain(e: &OpenError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// Removes the backing format extension (its type becomes an unknown one,
/// which readers skip), leaving a backing name with no format.
fn strip_backing_format(path: &Path) {
    let data = std::fs::read(path).unwrap();
    let at = data
        .windows(4)
        .take(65536)
        .position(|w| w == 0xe279_2acau32.to_be_bytes())
        .unwrap();
    poke(path, at as u64, &0x1234_5678u32.to_be_bytes());
}

/// The silent overwrite of the issue: a writable qcow2 given without a
/// format is refused, with a message saying what to pass.
#[test]
fn writable_image_without_format_is_refused() {
    let t = Scratch::new("probe");
    let img = qcow2(&t, "x.qcow2", &[], "1M");
    let e = open_path(&img, &opts(None, false)).err().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "disk {} looks like a qcow2 image but no format was given; pass format=qcow2 to use it as qcow2, or format=raw to give the guest its bytes (header included)",
            img.display()
        )
    );
    // Explicit raw is the user's choice; explicit qcow2 works.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(1 << 20).unwrap();
    open_path(&img, &opts(Some(DiskFormat::Raw), false)).unwrap();
    open_path(&img, &opts(Some(DiskFormat::Qcow2), false)).unwrap();
    // Other formats are named.
    let vmdk = t.path("x.vmdk");
    let mut b = vec![0u8; 4096];
    b[..4].copy_from_slice(b"KDMV");
    std::fs::write(&vmdk, &b).unwrap();
    let e = open_path(&vmdk, &opts(None, false)).err().unwrap();
    assert!(e.to_string().contains("looks like a vmdk image"), "{e}");
    // format=qcow2 on a raw file.
    let raw = t.path("r.img");
    std::fs::write(&raw, vec![0u8; 4096]).unwrap();
    assert!(err(&raw, false).contains("is not a qcow2 image"));
}

#[test]
fn backing_without_format_is_never_probed() {
    let t = Scratch::new("nofmt");
    let top = qcow2(&t, "top.qcow2", &["-b", "/etc/shadow", "-F", "raw"], "1M");
    strip_backing_format(&top);
    let e = err(&top, true);
    assert!(
        e.contains("backing file '/etc/shadow' has no format"),
        "{e}"
    );
}

#[test]
fn backing_devices_and_missing_files_are_refused() {
    let t = Scratch::new("dev");
    let top = qcow2(&t, "top.qcow2", &["-b", "/dev/zero", "-F", "raw"], "1M");
    let e = err(&top, true);
    assert!(
        e.contains("cannot open backing file '/dev/zero': not a regular file"),
        "{e}"
    );
    let top = qcow2(&t, "t2.qcow2", &["-b", "nope.raw", "-F", "raw"], "1M");
    let e = err(&top, true);
    assert!(e.contains("cannot open backing file 'nope.raw'"), "{e}");
    let top = qcow2(&t, "t3.qcow2", &["-b", "x.vmdk", "-F", "vmdk"], "1M");
    let e = err(&top, true);
    assert!(e.contains("backing format 'vmdk'"), "{e}");
}

#[test]
fn backing_loops_and_deep_chains_are_refused() {
    let t = Scratch::new("loop");
    qcow2(&t, "a.qcow2", &["-b", "b.qcow2", "-F", "qcow2"], "1M");
    let b = qcow2(&t, "b.qcow2", &["-b", "a.qcow2", "-F", "qcow2"], "1M");
    let e = err(&b, true);
    assert!(e.contains("backing chain loops"), "{e}");
    let selfish = qcow2(&t, "s.qcow2", &["-b", "s.qcow2", "-F", "qcow2"], "1M");
    assert!(err(&selfish, true).contains("loops"));
    // 40 layers: over the limit.
    let mut prev = "base.raw".to_string();
    std::fs::write(t.path(&prev), vec![0u8; 1 << 20]).unwrap();
    let mut fmt = "raw";
    for i in 0..40 {
        let name = format!("d{i}.qcow2");
        qcow2(&t, &name, &["-b", &prev, "-F", fmt], "1M");
        prev = name;
        fmt = "qcow2";
    }
    let e = err(&t.path(&prev), true);
    assert!(e.contains("backing chain deeper than 32"), "{e}");
}

#[test]
fn unsupported_features_are_refused_clearly() {
    let t = Scratch::new("feat");
    let cases: &[(u64, &[u8], &str)] = &[
        (
            32,
            &1u32.to_be_bytes(),
            "encrypted qcow2 images are not supported",
        ),
        (72, &2u64.to_be_bytes(), "marked corrupt"),
        (72, &1u64.to_be_bytes(), "is dirty"),
        (72, &4u64.to_be_bytes(), "external data file"),
        (72, &8u64.to_be_bytes(), "zstd"),
        (72, &16u64.to_be_bytes(), "extended L2"),
        (
            72,
            &(1u64 << 40).to_be_bytes(),
            "unknown incompatible features",
        ),
        (4, &1u32.to_be_bytes(), "is not a qcow2 image"),
        (4, &9u32.to_be_bytes(), "is not a qcow2 image"),
        (20, &8u32.to_be_bytes(), "cluster size 2^8"),
        (20, &40u32.to_be_bytes(), "cluster size 2^40"),
    ];
    for (i, (at, bytes, want)) in cases.iter().enumerate() {
        let img = qcow2(&t, &format!("f{i}.qcow2"), &[], "1M");
        poke(&img, *at, bytes);
        // A dirty image is refused read-only (a writable open repairs it:
        // see qemu_interop.rs); the others either way.
        let e = err(&img, *want == "is dirty");
        assert!(e.contains(want), "case {i}: {e}");
    }
}

/// Tables pointing outside the file, absurd sizes, a cluster referenced
/// twice: an error at open or on the read, never a panic, and the process
/// stays sound (the next image opens fine).
#[test]
fn corrupt_tables_are_errors_not_panics() {
    let t = Scratch::new("tables");
    let src = t.path("src.raw");
    patterned_raw(&src, 4 << 20, 9);
    let mk = |name: &str| {
        let img = t.path(name);
        qemu("qemu-img", &["convert", "-O", "qcow2", s(&src), s(&img)]);
        img
    };
    // Header offsets are at: l1_table_offset 40, refcount_table_offset 48,
    // size 24, l1_size 36.
    let cases: &[(u64, Vec<u8>)] = &[
        (40, (1u64 << 50).to_be_bytes().to_vec()),
        (40, 0x200u64.to_be_bytes().to_vec()),
        (48, (1u64 << 50).to_be_bytes().to_vec()),
        (24, u64::MAX.to_be_bytes().to_vec()),
        (24, (1u64 << 62).to_be_bytes().to_vec()),
        (36, u32::MAX.to_be_bytes().to_vec()),
        (36, 0u32.to_be_bytes().to_vec()),
    ];
    for (i, (at, bytes)) in cases.iter().enumerate() {
        let img = mk(&format!("c{i}.qcow2"));
        poke(&img, *at, bytes);
        if let Ok(mut d) = open_path(&img, &opts(Some(DiskFormat::Qcow2), true)) {
            let size = d.size();
            for off in [0u64, 1 << 20, size.saturating_sub(4096)] {
                let mut buf = vec![0u8; 4096];
                let _ = d.read_at(off, &[vm_memory::VolatileSlice::from(&mut buf[..])]);
            }
        }
    }
    // L1 and L2 entries pointing past the end of the file, and two L2
    // entries naming one cluster.
    let img = mk("l2.qcow2");
    let data = std::fs::read(&img).unwrap();
    let l1 = u64::from_be_bytes(data[40..48].try_into().unwrap());
    let l2 = u64::from_be_bytes(data[l1 as usize..l1 as usize + 8].try_into().unwrap())
        & 0x00ff_ffff_ffff_fe00;
    let entry = |i: u64| data[(l2 + 8 * i) as usize..(l2 + 8 * i + 8) as usize].to_vec();
    let used = (0..8192).find(|i| entry(*i) != [0u8; 8]).unwrap();
    poke(&img, l2 + 8 * (used + 1), &entry(used)); // a cluster referenced twice
                                                   // Writable opens need consistent metadata (allocation trusts it).
    let e = err(&img, false);
    assert!(e.contains("metadata errors, refusing to write"), "{e}");
    poke(
        &img,
        l2 + 8 * (used + 2),
        &(0x8000_0000_0000_0000u64 | (1 << 50)).to_be_bytes(),
    );
    let mut d = open_path(&img, &opts(Some(DiskFormat::Qcow2), true)).unwrap();
    let mut buf = vec![0u8; 3 * 65536];
    let at = used * 65536;
    // Past the end of the file reads as zeros (as in QEMU) or fails;
    // either way nothing outside the file is touched.
    if d.read_at(at, &[vm_memory::VolatileSlice::from(&mut buf[..])])
        .is_ok()
    {
        assert_eq!(buf[..65536], buf[65536..2 * 65536]);
        assert!(buf[2 * 65536..].iter().all(|b| *b == 0));
    }
    drop(d);
    let img = mk("l1.qcow2");
    poke(
        &img,
        l1,
        &(0x8000_0000_0000_0000u64 | (1 << 50)).to_be_bytes(),
    );
    let mut d = open_path(&img, &opts(Some(DiskFormat::Qcow2), true)).unwrap();
    let mut buf = vec![0xffu8; 4096];
    if d.read_at(0, &[vm_memory::VolatileSlice::from(&mut buf[..])])
        .is_ok()
    {
        assert!(buf.iter().all(|b| *b == 0));
    }
    // Still sound.
    let ok = mk("ok.qcow2");
    open_path(&ok, &opts(Some(DiskFormat::Qcow2), true)).unwrap();
}
