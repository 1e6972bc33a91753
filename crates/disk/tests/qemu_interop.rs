//! qcow2 both ways, with qemu-img (Debian's qemu-utils) as the referee:
//! images qemu-img made read back byte for byte, and images we wrote pass
//! `qemu-img check` and `qemu-img compare`.

mod common;

use common::*;
use disk::{open_path, DiskFormat};
use std::error::Error;

const MIB: usize = 1 << 20;

/// v2, v3, 4K/64K/2M clusters, lazy refcounts, compressed: each converted
/// by qemu-img from the same raw data and read back equal.
#[test]
fn reads_images_made_by_qemu_img() {
    let t = Scratch::new("read");
    let raw = t.path("src.raw");
    let data = patterned_raw(&raw, 16 * MIB, 1);
    let variants: &[(&str, &[&str])] = &[
        ("v2", &["-o", "compat=0.10"]),
        ("v3-4k", &["-o", "cluster_size=4096"]),
        ("v3-64k", &[]),
        ("v3-2m", &["-o", "cluster_size=2M"]),
        ("v3-512", &["-o", "cluster_size=512"]),
        ("lazy", &["-o", "lazy_refcounts=on"]),
        ("compressed", &["-c"]),
        ("compressed-4k", &["-c", "-o", "cluster_size=4096"]),
    ];
    for (name, extra) in variants {
        let img = t.path(&format!("{name}.qcow2"));
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(extra);
        args.extend([s(&raw), s(&img)]);
        qemu("qemu-img", &args);
        let mut d = open_path(&img, &opts(Some(DiskFormat::Qcow2), true)).unwrap();
        assert_eq!(d.size(), data.len() as u64, "{name}");
        let got = read_all(d.as_mut());
        assert_eq!(first_diff(&got, &data), None, "{name}");
        // Probing a read-only image finds qcow2 too.
        let mut d = open_path(&img, &opts(None, true)).unwrap();
        assert_eq!(read(d.as_mut(), 0, 4096), data[..4096], "{name}");
    }
}

/// raw ← qcow2 ← qcow2 ← qcow2, each layer written by qemu-io, relative
/// backing names; our read equals qemu-img's own conversion of the top.
#[test]
fn reads_a_three_deep_backing_chain() {
    let t = Scratch::new("chain");
    patterned_raw(&t.path("base.raw"), 8 * MIB, 2);
    let layers = [
        ("l1.qcow2", "base.raw", "raw"),
        ("l2.qcow2", "l1.qcow2", "qcow2"),
        ("l3.qcow2", "l2.qcow2", "qcow2"),
    ];
    for (i, (img, backing, fmt)) in layers.iter().enumerate() {
        let img = t.path(img);
        qemu(
            "qemu-img",
            &["create", "-f", "qcow2", "-b", backing, "-F", fmt, s(&img)],
        );
        let at = (i + 1) * MIB + 1000 * i;
        let cmd = format!("write -P 0x{:x} {at} 100000", 0x31 + i);
        qemu("qemu-io", &["-f", "qcow2", "-c", &cmd, s(&img)]);
    }
    let expected = t.path("expected.raw");
    qemu(
        "qemu-img",
        &["convert", "-O", "raw", s(&t.path("l3.qcow2")), s(&expected)],
    );
    let want = std::fs::read(&expected).unwrap();
    // Open through a relative path from another directory: names resolve
    // against the image's own directory.
    let mut d = open_path(&t.path("l3.qcow2"), &opts(Some(DiskFormat::Qcow2), true)).unwrap();
    let got = read_all(d.as_mut());
    assert_eq!(first_diff(&got, &want), None);
}

/// Random writes, discards and write-zeroes (across many L2 tables, with
/// partial clusters and a backing file under one image), flushed; then
/// `qemu-img check` is clean and `qemu-img compare` finds the expected
/// content.
#[test]
fn images_we_write_pass_qemu_img_check() {
    let t = Scratch::new("write");
    let base = t.path("base.raw");
    let base_data = patterned_raw(&base, 32 * MIB, 3);
    let cases: &[(&str, &[&str], bool)] = &[
        ("v3-64k", &[], false),
        ("v2", &["-o", "compat=0.10"], false),
        ("v3-4k", &["-o", "cluster_size=4096"], false),
        ("lazy", &["-o", "lazy_refcounts=on"], false),
        ("overlay", &["-b", "base.raw", "-F", "raw"], true),
    ];
    for (name, extra, backed) in cases {
        let img = t.path(&format!("{name}.qcow2"));
        let mut args = vec!["create", "-f", "qcow2"];
        args.extend_from_slice(extra);
        args.push(s(&img));
        let size = (32 * MIB).to_string();
        if !backed {
            args.push(&size);
        }
        qemu("qemu-img", &args);
        let mut want = if *backed {
            base_data.clone()
        } else {
            vec![0u8; 32 * MIB]
        };
        let mut d = open_path(&img, &opts(Some(DiskFormat::Qcow2), false)).unwrap();
        let mut rng = Rng(7);
        for i in 0..300 {
            let at = rng.below((32 * MIB / 512) as u64 - 512) * 512;
            let len = ((rng.below(256) + 1) * 512) as usize;
            let (a, l) = (at as usize, len);
            match i % 10 {
                0 => {
                    d.discard(at, len as u64).unwrap();
                    want[a..a + l].fill(0);
                }
                1 => {
                    d.write_zeroes(at, len as u64).unwrap();
                    want[a..a + l].fill(0);
                }
                _ => {
                    let mut buf = vec![0u8; len];
                    rng.fill(&mut buf);
                    write(d.as_mut(), at, &mut buf);
                    want[a..a + l].copy_from_slice(&buf);
                }
            }
            if i % 50 == 0 {
                d.flush().unwrap();
            }
        }
        d.flush().unwrap();
        // Our own reads see it before we close.
        assert_eq!(first_diff(&read_all(d.as_mut()), &want), None, "{name}");
        drop(d);
        let (code, out) = qemu_status(&["check", s(&img)]);
        assert_eq!(code, 0, "{name}: qemu-img check: {out}");
        let expected = t.path("expected.raw");
        std::fs::write(&expected, &want).unwrap();
        let (code, out) =
            qemu_status(&["compare", "-f", "raw", "-F", "qcow2", s(&expected), s(&img)]);
        assert_eq!(code, 0, "{name}: qemu-img compare: {out}");
    }
}

/// While we hold a writable image, qemu-img cannot open it (QEMU's lock
/// bytes), and a second writable open of ours is refused.
#[test]
fn locks_are_qemus() {
    let t = Scratch::new("locks");
    let img = t.path("a.qcow2");
    qemu("qemu-img", &["create", "-f", "qcow2", s(&img), "1M"]);
    let d = open_path(&img, &opts(Some(DiskFormat::Qcow2), false)).unwrap();
    let (code, out) = qemu_status(&["info", s(&img)]);
    assert_ne!(code, 0);
    assert!(out.contains("lock"), "{out}");
    let e = open_path(&img, &opts(Some(DiskFormat::Qcow2), false))
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "disk {} is in use by another process (locked for writing)",
            img.display()
        )
    );
    let e = open_path(&img, &opts(Some(DiskFormat::Qcow2), true))
        .err()
        .unwrap();
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(d);
    qemu("qemu-img", &["info", s(&img)]);
    // Two readers share; shareable=on takes no lock at all.
    let r1 = open_path(&img, &opts(Some(DiskFormat::Qcow2), true)).unwrap();
    let r2 = open_path(&img, &opts(Some(DiskFormat::Qcow2), true)).unwrap();
    let mut o = opts(Some(DiskFormat::Qcow2), false);
    assert!(open_path(&img, &o).is_err());
    o.shareable = true;
    drop(open_path(&img, &o).unwrap());
    drop((r1, r2));
    // A failed open leaves no lock behind, even while another fd of the
    // same open file lives on (as when vtd passes an fd and keeps its own).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let kept = f.try_clone().unwrap();
    let image = disk::ImageFile {
        file: f,
        name: "a.qcow2".into(),
        dir: t.0.clone(),
    };
    let e = disk::open_file(image, &opts(None, false), &mut disk::PathOpener)
        .err()
        .unwrap();
    assert!(e.to_string().contains("no format was given"), "{e}");
    drop(open_path(&img, &opts(Some(DiskFormat::Qcow2), false)).unwrap());
    drop(kept);
    // A backing file in use by an overlay is locked shared: no writer.
    let top = t.path("top.qcow2");
    qemu(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "a.qcow2",
            "-F",
            "qcow2",
            s(&top),
        ],
    );
    let d = open_path(&top, &opts(Some(DiskFormat::Qcow2), false)).unwrap();
    let e = open_path(&img, &opts(Some(DiskFormat::Qcow2), false))
        .err()
        .unwrap();
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(d);
}

/// Writing to an image with an internal snapshot leaves the snapshot
/// intact (clusters shared with it are copied, not overwritten): qemu-img
/// reads the snapshot back as it was, and `check` is clean for both tools.
#[test]
fn writes_keep_internal_snapshots() {
    let t = Scratch::new("snap");
    let img = t.path("s.qcow2");
    qemu("qemu-img", &["create", "-q", "-f", "qcow2", s(&img), "4M"]);
    qemu(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x11 0 1M", s(&img)],
    );
    qemu("qemu-img", &["snapshot", "-c", "first", s(&img)]);
    let mut d = open_path(&img, &opts(Some(DiskFormat::Qcow2), false)).unwrap();
    write(d.as_mut(), 4096, &mut vec![0x22u8; 512 << 10]);
    d.discard(768 << 10, 64 << 10).unwrap();
    d.flush().unwrap();
    drop(d);
    let (code, out) = qemu_status(&["check", s(&img)]);
    assert_eq!(code, 0, "{out}");
    let r = disk::check::check(&img, disk::check::Repair::None).unwrap();
    assert_eq!(r.exit_code(), 0, "{}", r.text());
    let snap = t.path("snap.raw");
    qemu(
        "qemu-img",
        &[
            "convert",
            "-l",
            "snapshot.name=first",
            "-O",
            "raw",
            s(&img),
            s(&snap),
        ],
    );
    let mut want = vec![0x11u8; 1 << 20];
    want.resize(4 << 20, 0);
    assert_eq!(first_diff(&std::fs::read(&snap).unwrap(), &want), None);
    let names: Vec<String> = disk::snapshot::list(&img)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["first"]);
}

/// An image a lazy-refcounts writer left dirty (qemu-io killed after a
/// write): read-only opens refuse it clearly; the first writable open
/// rebuilds its refcounts and clears the bit, as QEMU does; then both
/// tools find it clean and the data is there.
#[test]
fn writable_open_repairs_a_dirty_image() {
    let t = Scratch::new("dirty");
    let img = t.path("l.qcow2");
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "lazy_refcounts=on",
            s(&img),
            "4M",
        ],
    );
    let _ = std::process::Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0x3 0 128k",
            "-c",
            "sigraise 9",
            s(&img),
        ])
        .output()
        .unwrap();
    assert_eq!(qemu_status(&["check", s(&img)]).0, 2, "not left dirty");
    let e = open_path(&img, &opts(Some(DiskFormat::Qcow2), true))
        .err()
        .unwrap();
    assert!(e.source().unwrap().to_string().contains("is dirty"), "{e}");
    let mut d = open_path(&img, &opts(Some(DiskFormat::Qcow2), false)).unwrap();
    assert_eq!(read(d.as_mut(), 0, 128 << 10), vec![0x3u8; 128 << 10]);
    write(d.as_mut(), 1 << 20, &mut vec![0x4u8; 4096]);
    d.flush().unwrap();
    drop(d);
    let (code, out) = qemu_status(&["check", s(&img)]);
    assert_eq!(code, 0, "{out}");
    qemu(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "read -P 0x3 0 128k",
            "-c",
            "read -P 0x4 1M 4k",
            s(&img),
        ],
    );
}

/// The fds this process holds on `path`, with their open flags.
fn fd_flags(path: &std::path::Path) -> Vec<u32> {
    let want = std::fs::canonicalize(path).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if std::fs::read_link(e.path()).ok().as_ref() != Some(&want) {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(f) = info.lines().find_map(|l| l.strip_prefix("flags:")) {
            out.push(u32::from_str_radix(f.trim(), 8).unwrap());
        }
    }
    out
}

/// `cache=none` on qcow2: imago's I/O goes through an O_DIRECT handle (seen
/// in /proc/self/fdinfo), unaligned guest requests included (imago bounces
/// them), over a backing file; the image stays locked; the result passes
/// `qemu-img check` and reads back as written.
#[test]
fn cache_none_qcow2_is_o_direct() {
    let t = Scratch::new("qcow2-direct");
    let base = t.path("base.raw");
    let mut want = patterned_raw(&base, 8 << 20, 0xd1);
    let img = t.path("top.qcow2");
    qemu(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&base),
            "-F",
            "raw",
            s(&img),
        ],
    );
    let o = disk::OpenOptions {
        cache: disk::CacheMode::Direct,
        ..opts(Some(DiskFormat::Qcow2), false)
    };
    let mut d = match open_path(&img, &o) {
        Ok(d) => d,
        // A file system without O_DIRECT (tmpfs before 6.6): a clear error.
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(e.to_string().contains("top.qcow2"), "{msg}");
            eprintln!("no O_DIRECT here: {msg}");
            return;
        }
    };
    let direct = libc::O_DIRECT as u32;
    let flags = fd_flags(&img);
    assert!(
        flags.iter().any(|f| f & direct != 0),
        "no O_DIRECT fd on the image: {flags:?}"
    );
    // Another writer is refused: the lock lives on.
    assert!(open_path(&img, &opts(Some(DiskFormat::Qcow2), false)).is_err());
    let mut rng = Rng(7);
    for (at, len) in [
        (0usize, 4096usize),
        (4096 + 512, 1000 * 512),
        (3 << 20, 70_000 / 512 * 512),
    ] {
        let mut buf = vec![0u8; len];
        rng.fill(&mut buf);
        want[at..at + len].copy_from_slice(&buf);
        write(d.as_mut(), at as u64, &mut buf);
    }
    d.flush().unwrap();
    assert!(first_diff(&read_all(d.as_mut()), &want).is_none());
    drop(d);
    let (code, out) = qemu_status(&["check", s(&img)]);
    assert_eq!(code, 0, "{out}");
    let expected = t.path("expected.raw");
    std::fs::write(&expected, &want).unwrap();
    qemu(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", s(&expected), s(&img)],
    );
}
