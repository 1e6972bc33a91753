//! `vt image convert -c` (compressed qcow2 output) with qemu-img as the
//! referee: at every cluster size and both versions, the result passes
//! `qemu-img check`, holds compressed clusters where qemu-img's own
//! `convert -c` has them, equals the source by `qemu-img compare`, and
//! reads back through our own backend; bad combinations are errors.

mod common;

use std::path::Path;

use common::*;

fn check_json(d: &Path, img: &str) -> serde_json::Value {
    let out = run(d, "qemu-img", &["check", "--output=json", img]);
    assert_eq!(out.status.code(), Some(0), "qemu-img check {img}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn compressed_output_is_qemu_img_s() {
    let t = scratch("compress");
    let d = t.0.as_path();
    // Patterned data, incompressible data, zeros, and a last cluster that
    // is only partly inside the disk (33 MiB + 512 B).
    ok(
        d,
        "qemu-img",
        &["create", "-q", "-f", "raw", "src.raw", "34603520"],
    );
    qemu_io(
        d,
        "raw",
        "src.raw",
        &[
            "write -P 0x11 0 3M",
            "write -P 0x12 20M 1M",
            "write -P 0x13 34602496 1024",
        ],
    );
    let noise: Vec<u8> = (0..3u64 << 20)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29) as u8)
        .collect();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("src.raw"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &noise, 8 << 20).unwrap();
    for opts in [
        "cluster_size=65536",
        "cluster_size=512",
        "cluster_size=4096,compat=0.10",
        "cluster_size=2M",
    ] {
        vt_image(
            d,
            &[
                "convert", "-c", "-O", "qcow2", "-o", opts, "src.raw", "c.qcow2",
            ],
        );
        ok(
            d,
            "qemu-img",
            &[
                "convert", "-c", "-O", "qcow2", "-o", opts, "src.raw", "q.qcow2",
            ],
        );
        let (ours, theirs) = (check_json(d, "c.qcow2"), check_json(d, "q.qcow2"));
        for k in ["compressed-clusters", "allocated-clusters"] {
            assert_eq!(ours[k], theirs[k], "{opts} {k}: {ours} vs {theirs}");
        }
        assert!(ours["compressed-clusters"].as_u64().unwrap() > 0, "{opts}");
        ok(
            d,
            "qemu-img",
            &["compare", "-f", "raw", "src.raw", "c.qcow2"],
        );
        // Our own reader agrees, and our check finds it clean.
        vt_image(d, &["check", "c.qcow2"]);
        vt_image(d, &["convert", "-O", "raw", "c.qcow2", "back.raw"]);
        ok(d, "cmp", &["src.raw", "back.raw"]);
        // No bigger than qemu-img's by more than a few clusters' worth.
        let size = |f: &str| std::fs::metadata(d.join(f)).unwrap().len();
        assert!(
            size("c.qcow2") <= size("q.qcow2") * 11 / 10 + (4 << 20),
            "{opts}: {} vs {}",
            size("c.qcow2"),
            size("q.qcow2")
        );
    }
    // A qcow2 source with a backing file: flattened.
    ok(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "src.raw",
            "-F",
            "raw",
            "top.qcow2",
        ],
    );
    qemu_io(d, "qcow2", "top.qcow2", &["write -P 0x21 1M 1M"]);
    vt_image(
        d,
        &["convert", "-c", "-O", "qcow2", "top.qcow2", "flat.qcow2"],
    );
    check_json(d, "flat.qcow2");
    ok(d, "qemu-img", &["compare", "top.qcow2", "flat.qcow2"]);

    // Bad combinations.
    for args in [
        &["convert", "-c", "-O", "raw", "src.raw", "x.raw"][..],
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "preallocation=full",
            "src.raw",
            "x.qcow2",
        ],
    ] {
        assert_eq!(vt_code(d, args), 1, "{args:?}");
    }
}
