//! `vt image snapshot -c|-a|-d` against qemu-img as the referee: snapshots
//! we make are listed, read (`convert -l`) and applied by qemu-img, and the
//! image passes `qemu-img check`; snapshots qemu-img makes are applied and
//! deleted by us with the content `qemu-img compare` expects; bad requests
//! and hostile snapshot tables are clear errors (exit 1, never a panic).

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

fn raw_of(d: &Path, img: &str, raw: &str) {
    ok(d, "qemu-img", &["convert", "-O", "raw", img, raw]);
}

fn names(d: &Path, img: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&ok(d, "qemu-img", &["info", "--output=json", img])).unwrap();
    v["snapshots"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// On v3 and v2 images, 64 KiB and 4 KiB clusters, with compressed
/// clusters among the data: our snapshot is qemu-img's too.
#[test]
fn snapshots_we_make_are_read_and_applied_by_qemu_img() {
    let t = scratch("snap-ours");
    let d = t.0.as_path();
    for (i, opts) in [
        "cluster_size=65536",
        "cluster_size=4096,compat=0.10",
        "cluster_size=4096,lazy_refcounts=on",
    ]
    .iter()
    .enumerate()
    {
        let img = format!("o{i}.qcow2");
        // Compressed clusters first (convert -c), then plain writes.
        ok(
            d,
            "qemu-img",
            &["create", "-q", "-f", "raw", "seed.raw", "8M"],
        );
        qemu_io(d, "raw", "seed.raw", &["write -P 0x5a 0 2M"]);
        ok(
            d,
            "qemu-img",
            &["convert", "-c", "-O", "qcow2", "-o", opts, "seed.raw", &img],
        );
        ok(d, "qemu-img", &["resize", "-q", &img, "64M"]);
        qemu_io(
            d,
            "qcow2",
            &img,
            &["write -P 0x11 1M 3M", "write -P 0x22 10M 1M"],
        );
        raw_of(d, &img, "before.raw");
        vt_image(d, &["snapshot", "-c", "s1", &img]);
        clean(d, &img);
        assert_eq!(names(d, &img), ["s1"]);
        // Writes after the snapshot copy instead of overwriting it.
        qemu_io(
            d,
            "qcow2",
            &img,
            &[
                "write -P 0x33 0 5M",
                "write -P 0x44 40M 2M",
                "discard 10M 1M",
            ],
        );
        clean(d, &img);
        ok(
            d,
            "qemu-img",
            &["convert", "-l", "s1", "-O", "raw", &img, "s1.raw"],
        );
        ok(d, "cmp", &["before.raw", "s1.raw"]);
        raw_of(d, &img, "after.raw");
        vt_image(d, &["snapshot", "-c", "s2", &img]);
        assert_eq!(names(d, &img), ["s1", "s2"]);
        ok(d, "qemu-img", &["snapshot", "-a", "s1", &img]);
        clean(d, &img);
        same(d, "before.raw", &img);
        ok(d, "qemu-img", &["snapshot", "-a", "s2", &img]);
        same(d, "after.raw", &img);
        ok(d, "qemu-img", &["snapshot", "-d", "s1", &img]);
        clean(d, &img);
        same(d, "after.raw", &img);
    }
}

/// Snapshots qemu-img made: applied and deleted by us, with qemu-img's
/// content and a clean check (no corruption, no leaked cluster) after
/// each step.
#[test]
fn snapshots_qemu_img_makes_are_applied_and_deleted_by_us() {
    let t = scratch("snap-theirs");
    let d = t.0.as_path();
    let img = "q.qcow2";
    ok(d, "qemu-img", &["create", "-q", "-f", "qcow2", img, "64M"]);
    qemu_io(
        d,
        "qcow2",
        img,
        &["write -P 0x01 0 4M", "write -P 0x02 30M 1M"],
    );
    raw_of(d, img, "a.raw");
    ok(d, "qemu-img", &["snapshot", "-c", "A", img]);
    qemu_io(
        d,
        "qcow2",
        img,
        &["write -P 0x03 2M 4M", "write -z 30M 512K"],
    );
    raw_of(d, img, "b.raw");
    ok(d, "qemu-img", &["snapshot", "-c", "B", img]);
    qemu_io(
        d,
        "qcow2",
        img,
        &["write -P 0x04 0 8M", "write -P 0x05 60M 1M"],
    );
    raw_of(d, img, "c.raw");

    vt_image(d, &["snapshot", "-a", "A", img]);
    clean(d, img);
    same(d, "a.raw", img);
    // By ID as well as by name, as qemu-img.
    vt_image(d, &["snapshot", "-a", "2", img]);
    clean(d, img);
    same(d, "b.raw", img);
    qemu_io(d, "qcow2", img, &["write -P 0x06 1M 1M"]);
    clean(d, img);
    vt_image(d, &["snapshot", "-d", "B", img]);
    clean(d, img);
    assert_eq!(names(d, img), ["A"]);
    ok(
        d,
        "qemu-img",
        &["convert", "-l", "A", "-O", "raw", img, "a2.raw"],
    );
    ok(d, "cmp", &["a.raw", "a2.raw"]);
    vt_image(d, &["snapshot", "-d", "1", img]);
    clean(d, img);
    assert!(names(d, img).is_empty());
    // The listing agrees (empty); the clean checks above mean no leaks.
    assert_eq!(
        vt_image(d, &["snapshot", "-l", img]),
        ok(d, "qemu-img", &["snapshot", "-l", img])
    );
}

/// Snapshot tables and L1 copies allocated past the clusters the last
/// refcount block covers (4 KiB clusters: 2048 per block): a new block
/// is made, and qemu-img finds every count right.
#[test]
fn allocation_makes_new_refcount_blocks() {
    let t = scratch("snap-grow");
    let d = t.0.as_path();
    let img = "g.qcow2";
    ok(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4096",
            img,
            "64M",
        ],
    );
    // About 2035 clusters in use: the file ends just before 8 MiB.
    qemu_io(d, "qcow2", img, &["write -P 0x09 0 8100K"]);
    raw_of(d, img, "g.raw");
    let len = || std::fs::metadata(d.join(img)).unwrap().len();
    assert!(len() < 8 << 20);
    for i in 0..40 {
        vt_image(d, &["snapshot", "-c", &format!("s{i}"), img]);
    }
    assert!(len() > 8 << 20, "the test did not cross a refcount block");
    clean(d, img);
    qemu_io(d, "qcow2", img, &["write -P 0x0a 0 1M"]);
    vt_image(d, &["snapshot", "-a", "s39", img]);
    clean(d, img);
    same(d, "g.raw", img);
    for i in 0..40 {
        vt_image(d, &["snapshot", "-d", &format!("s{i}"), img]);
    }
    clean(d, img);
    same(d, "g.raw", img);
}

fn err(d: &Path, args: &[&str]) -> String {
    let mut a = vec!["image"];
    a.extend_from_slice(args);
    let out = run(d, "vt", &a);
    assert_eq!(out.status.code(), Some(1), "{args:?} must fail cleanly");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_requests_and_hostile_tables_are_clear_errors() {
    let t = scratch("snap-bad");
    let d = t.0.as_path();
    ok(
        d,
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "x.qcow2", "16M"],
    );
    qemu_io(d, "qcow2", "x.qcow2", &["write -P 0x07 0 1M"]);
    ok(d, "qemu-img", &["snapshot", "-c", "one", "x.qcow2"]);
    assert!(err(d, &["snapshot", "-a", "nope", "x.qcow2"])
        .contains("no snapshot with ID or name 'nope'"));
    assert!(err(d, &["snapshot", "-c", "one", "x.qcow2"]).contains("exists already"));
    assert!(err(d, &["snapshot", "-c", "a", "-d", "one", "x.qcow2"]).contains("exactly one"));
    ok(d, "qemu-img", &["create", "-q", "-f", "raw", "r.img", "1M"]);
    err(d, &["snapshot", "-c", "a", "r.img"]);

    // A corrupt image (a refcount too low) is refused before any change.
    let path = d.join("x.qcow2");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut hdr = [0u8; 72];
    f.read_exact_at(&mut hdr, 0).unwrap();
    let rt = u64::from_be_bytes(hdr[48..56].try_into().unwrap());
    let mut e = [0u8; 8];
    f.read_exact_at(&mut e, rt).unwrap();
    let block = u64::from_be_bytes(e);
    let original = std::fs::read(&path).unwrap();
    // Cluster 3 onwards are L1/L2/data of a fresh image: zero one count.
    f.write_all_at(&[0, 0], block + 2 * 5).unwrap();
    let msg = err(d, &["snapshot", "-c", "two", "x.qcow2"]);
    assert!(msg.contains("corruptions"), "{msg}");

    // Hostile snapshot tables: absurd counts, a table outside the file,
    // an L1 copy outside the file, an absurd extra-data size.
    for (at, bytes) in [
        (60u64, u32::MAX.to_be_bytes().to_vec()),
        (64, (1u64 << 50).to_be_bytes().to_vec()),
    ] {
        std::fs::write(&path, &original).unwrap();
        f.write_all_at(&bytes, at).unwrap();
        for args in [["-a", "one"], ["-d", "one"], ["-c", "new"]] {
            let mut a = vec!["snapshot"];
            a.extend(args);
            a.push("x.qcow2");
            err(d, &a);
        }
    }
    std::fs::write(&path, &original).unwrap();
    let table = u64::from_be_bytes(hdr[64..72].try_into().unwrap());
    for (rel, bytes) in [
        (0u64, (1u64 << 45).to_be_bytes().to_vec()),
        (8, u32::MAX.to_be_bytes().to_vec()),
        (36, u32::MAX.to_be_bytes().to_vec()),
    ] {
        std::fs::write(&path, &original).unwrap();
        f.write_all_at(&bytes, table + rel).unwrap();
        err(d, &["snapshot", "-a", "one", "x.qcow2"]);
        err(d, &["snapshot", "-d", "one", "x.qcow2"]);
    }
    // A snapshot L1 of 64 Mi entries (512 MiB) inside a sparse file that
    // big: refused by size (QEMU's 32 MiB limit), nothing allocated for it
    // (the check before every edit says so first).
    std::fs::write(&path, &original).unwrap();
    f.set_len(1 << 30).unwrap();
    f.write_all_at(&(64u32 << 20).to_be_bytes(), table + 8)
        .unwrap();
    for args in [["-a", "one"], ["-d", "one"]] {
        let mut a = vec!["snapshot"];
        a.extend(args);
        a.push("x.qcow2");
        let msg = err(d, &a);
        assert!(msg.contains("corruptions"), "{msg}");
    }
    let out = run(d, "vt", &["image", "check", "x.qcow2"]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("more than QEMU's limit"), "{text}");
}
