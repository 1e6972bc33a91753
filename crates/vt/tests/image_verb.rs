//! `vt image` against qemu-img (Debian's qemu-utils) as the referee: the
//! same JSON from `info`, images from `create`/`convert`/`resize` that
//! `qemu-img check` finds clean and `qemu-img compare` finds equal, and
//! `check`'s findings, repairs and exit codes matching qemu-img's.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

const FIELDS: &[&str] = &[
    "/virtual-size",
    "/filename",
    "/format",
    "/actual-size",
    "/cluster-size",
    "/backing-filename",
    "/full-backing-filename",
    "/backing-filename-format",
    "/dirty-flag",
    "/format-specific/type",
    "/format-specific/data/compat",
    "/format-specific/data/lazy-refcounts",
    "/format-specific/data/corrupt",
    "/format-specific/data/refcount-bits",
    "/format-specific/data/compression-type",
    "/format-specific/data/extended-l2",
];

fn same_info(dir: &Path, file: &str) {
    let ours = json(dir, "vt", file);
    let theirs = json(dir, "qemu-img", file);
    for f in FIELDS {
        assert_eq!(
            ours.pointer(f),
            theirs.pointer(f),
            "{file} {f}: {ours} vs {theirs}"
        );
    }
}

/// `vt image info --output=json` equals qemu-img's, field for field, on
/// images qemu-img made and on images we made.
#[test]
fn info_json_equals_qemu_img() {
    let t = scratch("info");
    let d = t.0.as_path();
    std::fs::create_dir(d.join("sub")).unwrap();
    ok(d, "qemu-img", &["create", "-f", "raw", "base.raw", "3M"]);
    ok(
        d,
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "v2.qcow2",
            "5M",
        ],
    );
    ok(
        d,
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4096,lazy_refcounts=on",
            "v3.qcow2",
            "1G",
        ],
    );
    ok(
        d,
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "../base.raw",
            "-F",
            "raw",
            "sub/over.qcow2",
        ],
    );
    vt_image(
        d,
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=2M",
            "ours.qcow2",
            "10G",
        ],
    );
    vt_image(
        d,
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "ours.qcow2",
            "-F",
            "qcow2",
            "-o",
            "lazy_refcounts=on",
            "ours-over.qcow2",
        ],
    );
    vt_image(d, &["create", "ours.raw", "1M"]);
    for f in [
        "base.raw",
        "v2.qcow2",
        "v3.qcow2",
        "sub/over.qcow2",
        "ours.qcow2",
        "ours-over.qcow2",
        "ours.raw",
    ] {
        same_info(d, f);
    }
    // The human text names the same things.
    let text = vt_image(d, &["info", "sub/over.qcow2"]);
    assert!(
        text.contains("backing file: ../base.raw (actual path: sub/../base.raw)"),
        "{text}"
    );
}

/// Images `vt image create` makes (sizes, clusters, preallocation, lazy
/// refcounts, backing) pass `qemu-img check`, and qemu-img reads back what
/// the options asked for.
#[test]
fn created_images_pass_qemu_img_check() {
    let t = scratch("create");
    let d = t.0.as_path();
    let cases: &[(&str, &[&str])] = &[
        ("a.qcow2", &["-f", "qcow2"]),
        ("b.qcow2", &["-f", "qcow2", "-o", "cluster_size=512"]),
        (
            "c.qcow2",
            &[
                "-f",
                "qcow2",
                "-o",
                "cluster_size=2M,preallocation=metadata",
            ],
        ),
        (
            "d.qcow2",
            &["-f", "qcow2", "-o", "preallocation=full,lazy_refcounts=on"],
        ),
        // Version 2 (compat=0.10), plain, preallocated and over a backing file.
        ("v2a.qcow2", &["-f", "qcow2", "-o", "compat=0.10"]),
        (
            "v2b.qcow2",
            &[
                "-f",
                "qcow2",
                "-o",
                "compat=0.10,cluster_size=4K,preallocation=metadata",
            ],
        ),
        (
            "v2c.qcow2",
            &[
                "-f",
                "qcow2",
                "-o",
                "compat=0.10",
                "-b",
                "a.qcow2",
                "-F",
                "qcow2",
            ],
        ),
    ];
    for (name, args) in cases {
        let mut a = vec!["create"];
        a.extend_from_slice(args);
        a.extend([*name, "8M"]);
        vt_image(d, &a);
        ok(d, "qemu-img", &["check", name]);
        let j = json(d, "qemu-img", name);
        assert_eq!(j["virtual-size"], 8 << 20, "{name}");
    }
    assert_eq!(json(d, "qemu-img", "b.qcow2")["cluster-size"], 512);
    // The v2 images are what qemu-img makes: same info, same content,
    // and qemu-io writes into them leave them clean.
    ok(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "q2.qcow2",
            "8M",
        ],
    );
    for name in ["v2a.qcow2", "v2b.qcow2", "v2c.qcow2"] {
        let (ours, theirs) = (json(d, "qemu-img", name), json(d, "qemu-img", "q2.qcow2"));
        for f in [
            "/format-specific/data/compat",
            "/format-specific/data/refcount-bits",
        ] {
            assert_eq!(ours.pointer(f), theirs.pointer(f), "{name} {f}");
        }
        same_info(d, name);
        ok(d, "qemu-io", &["-c", "write -P 0x5a 1M 1M", name]);
        ok(d, "qemu-img", &["check", name]);
    }
    assert_eq!(
        json(d, "qemu-img", "v2c.qcow2")["backing-filename-format"],
        "qcow2"
    );
    ok(d, "qemu-img", &["compare", "v2a.qcow2", "v2b.qcow2"]);
    assert_eq!(
        json(d, "qemu-img", "d.qcow2")["format-specific"]["data"]["lazy-refcounts"],
        true
    );
    // Bad options change nothing on disk.
    let before = std::fs::read(d.join("a.qcow2")).unwrap();
    assert_eq!(
        vt_code(
            d,
            &[
                "create",
                "-f",
                "raw",
                "-o",
                "cluster_size=4096",
                "a.qcow2",
                "1M"
            ]
        ),
        1
    );
    assert_eq!(std::fs::read(d.join("a.qcow2")).unwrap(), before);
    // Lazy refcounts need v3, as qemu-img says.
    assert_eq!(
        vt_code(
            d,
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "compat=0.10,lazy_refcounts=on",
                "e.qcow2",
                "1M"
            ]
        ),
        1
    );
    // A size with no backing file is refused; -b without -F too.
    assert_eq!(vt_code(d, &["create", "-f", "qcow2", "e.qcow2"]), 1);
    assert_eq!(
        vt_code(d, &["create", "-f", "qcow2", "-b", "a.qcow2", "e.qcow2"]),
        1
    );
}

/// convert raw ↔ qcow2 and a chain into one image: equal content by
/// `qemu-img compare`, clean by `qemu-img check`, and sparse.
#[test]
fn convert_round_trips() {
    let t = scratch("convert");
    let d = t.0.as_path();
    ok(d, "qemu-img", &["create", "-f", "raw", "src.raw", "64M"]);
    for (i, at) in [0u64, 5 << 20, 33 << 20, (64 << 20) - 4096]
        .iter()
        .enumerate()
    {
        let cmd = format!("write -P 0x{:x} {at} 4096", 0x40 + i);
        ok(d, "qemu-io", &["-f", "raw", "-c", &cmd, "src.raw"]);
    }
    vt_image(
        d,
        &["convert", "-f", "raw", "-O", "qcow2", "src.raw", "a.qcow2"],
    );
    ok(d, "qemu-img", &["check", "a.qcow2"]);
    ok(
        d,
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", "src.raw", "a.qcow2"],
    );
    // Sparse: four 4 KiB writes need four clusters plus metadata.
    let size = json(d, "qemu-img", "a.qcow2")["actual-size"]
        .as_u64()
        .unwrap();
    assert!(size < 2 << 20, "{size}");
    vt_image(d, &["convert", "-O", "raw", "a.qcow2", "back.raw"]);
    ok(
        d,
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", "src.raw", "back.raw"],
    );
    let raw_size = json(d, "qemu-img", "back.raw")["actual-size"]
        .as_u64()
        .unwrap();
    assert!(raw_size < 2 << 20, "{raw_size}");
    // An overlay with its backing file, flattened.
    ok(
        d,
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "a.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    ok(
        d,
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x77 1M 100k", "top.qcow2"],
    );
    vt_image(
        d,
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            "top.qcow2",
            "flat.qcow2",
        ],
    );
    ok(d, "qemu-img", &["check", "flat.qcow2"]);
    ok(d, "qemu-img", &["compare", "top.qcow2", "flat.qcow2"]);
    // Compressed sources read.
    ok(
        d,
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", "src.raw", "z.qcow2"],
    );
    vt_image(d, &["convert", "-O", "raw", "z.qcow2", "z.raw"]);
    ok(
        d,
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", "src.raw", "z.raw"],
    );
}

/// resize grows, refuses to shrink without --shrink, and leaves a clean image.
#[test]
fn resize_grows_and_shrinks_on_request() {
    let t = scratch("resize");
    let d = t.0.as_path();
    ok(d, "qemu-img", &["create", "-f", "qcow2", "r.qcow2", "10M"]);
    ok(
        d,
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x5 0 1M", "r.qcow2"],
    );
    vt_image(d, &["resize", "r.qcow2", "+1G"]);
    assert_eq!(
        json(d, "qemu-img", "r.qcow2")["virtual-size"],
        (10u64 << 20) + (1 << 30)
    );
    ok(d, "qemu-img", &["check", "r.qcow2"]);
    assert_eq!(vt_code(d, &["resize", "r.qcow2", "5M"]), 1);
    vt_image(d, &["resize", "--shrink", "r.qcow2", "5M"]);
    assert_eq!(json(d, "qemu-img", "r.qcow2")["virtual-size"], 5 << 20);
    ok(d, "qemu-img", &["check", "r.qcow2"]);
    ok(
        d,
        "qemu-io",
        &["-f", "qcow2", "-c", "read -P 0x5 0 1M", "r.qcow2"],
    );
    ok(d, "qemu-img", &["create", "-f", "raw", "r.raw", "1M"]);
    vt_image(d, &["resize", "-f", "raw", "r.raw", "3M"]);
    assert_eq!(std::fs::metadata(d.join("r.raw")).unwrap().len(), 3 << 20);
}

/// Sets the 16-bit refcount of host cluster `cluster` (first refcount block).
fn set_refcount(path: &Path, cluster: u64, value: u16) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 48).unwrap();
    let table = u64::from_be_bytes(b);
    f.read_exact_at(&mut b, table).unwrap();
    let block = u64::from_be_bytes(b);
    f.write_all_at(&value.to_be_bytes(), block + 2 * cluster)
        .unwrap();
}

/// Leaks and corruptions: found by both tools with the same exit codes
/// (3 and 2), repaired by `-r leaks` / `-r all` so that qemu-img finds
/// the image clean.
#[test]
fn check_finds_and_repairs_like_qemu_img() {
    let t = scratch("check");
    let d = t.0.as_path();
    let clean = || {
        ok(
            d,
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "i.qcow2", "4M"],
        );
        ok(
            d,
            "qemu-io",
            &["-f", "qcow2", "-c", "write -P 0x9 0 64k", "i.qcow2"],
        );
    };
    clean();
    assert_eq!(vt_code(d, &["check", "i.qcow2"]), 0);
    // A leak: one more cluster in the file, counted but unused.
    let p = d.join("i.qcow2");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len + 65536)
        .unwrap();
    set_refcount(&p, len / 65536, 1);
    assert_eq!(code(d, "qemu-img", &["check", "i.qcow2"]), 3);
    assert_eq!(vt_code(d, &["check", "i.qcow2"]), 3);
    assert_eq!(vt_code(d, &["check", "-r", "leaks", "i.qcow2"]), 0);
    assert_eq!(code(d, "qemu-img", &["check", "i.qcow2"]), 0);
    // A corruption: the data cluster's refcount dropped to 0.
    let data_cluster = len / 65536 - 1;
    set_refcount(&p, data_cluster, 0);
    assert_eq!(code(d, "qemu-img", &["check", "i.qcow2"]), 2);
    assert_eq!(vt_code(d, &["check", "i.qcow2"]), 2);
    assert_eq!(vt_code(d, &["check", "-r", "leaks", "i.qcow2"]), 2);
    assert_eq!(vt_code(d, &["check", "-r", "all", "i.qcow2"]), 0);
    assert_eq!(code(d, "qemu-img", &["check", "i.qcow2"]), 0);
    ok(
        d,
        "qemu-io",
        &["-f", "qcow2", "-c", "read -P 0x9 0 64k", "i.qcow2"],
    );
    // Raw images have no checks (qemu-img's 63).
    ok(d, "qemu-img", &["create", "-f", "raw", "r.raw", "1M"]);
    assert_eq!(vt_code(d, &["check", "r.raw"]), 63);
    assert_eq!(code(d, "qemu-img", &["check", "-f", "raw", "r.raw"]), 63);
}

/// An image left dirty by a writer killed with lazy refcounts on: both
/// tools see corruptions (exit 2), `vt image check -r all` rebuilds the
/// refcounts and clears the dirty bit, and the data is intact.
#[test]
fn check_repairs_an_image_left_dirty() {
    let t = scratch("dirty");
    let d = t.0.as_path();
    ok(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "lazy_refcounts=on",
            "l.qcow2",
            "4M",
        ],
    );
    // qemu-io kills itself after the write: the dirty bit stays set.
    let _ = run(
        d,
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x3 0 128k",
            "-c",
            "sigraise 9",
            "l.qcow2",
        ],
    );
    assert_eq!(code(d, "qemu-img", &["check", "l.qcow2"]), 2);
    assert_eq!(vt_code(d, &["check", "l.qcow2"]), 2);
    let e = run(
        d,
        "vt",
        &["image", "convert", "-O", "raw", "l.qcow2", "x.raw"],
    );
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("is dirty"),
        "{e:?}"
    );
    assert_eq!(vt_code(d, &["check", "-r", "all", "l.qcow2"]), 0);
    assert_eq!(code(d, "qemu-img", &["check", "l.qcow2"]), 0);
    assert_eq!(json(d, "vt", "l.qcow2")["dirty-flag"], false);
    ok(
        d,
        "qemu-io",
        &["-f", "qcow2", "-c", "read -P 0x3 0 128k", "l.qcow2"],
    );
}

/// `vt image map` prints what `qemu-img map` prints, JSON and table, byte
/// for byte: data, zero and unallocated clusters, several L2 tables, a
/// compressed image and a qcow2 ← qcow2 ← sparse raw chain.
#[test]
fn map_equals_qemu_img() {
    let t = scratch("map");
    let d = t.0.as_path();
    ok(
        d,
        "qemu-img",
        &["create", "-q", "-f", "raw", "base.raw", "8M"],
    );
    ok(
        d,
        "qemu-io",
        &["-f", "raw", "-c", "write -P 5 512k 64k", "base.raw"],
    );
    ok(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "mid.qcow2",
        ],
    );
    ok(
        d,
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 6 2M 128k",
            "-c",
            "write -z 4M 64k",
            "mid.qcow2",
        ],
    );
    ok(
        d,
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    ok(
        d,
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 7 0 64k",
            "-c",
            "write -P 8 2M 4k",
            "top.qcow2",
        ],
    );
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
            "small.qcow2",
            "8M",
        ],
    );
    ok(
        d,
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 1 0 8k",
            "-c",
            "write -P 2 3M 12k",
            "-c",
            "write -z 6M 4k",
            "small.qcow2",
        ],
    );
    ok(
        d,
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", "top.qcow2", "packed.qcow2"],
    );
    // Compressed clusters have no plain offset: the table refuses them.
    assert_eq!(vt_code(d, &["map", "packed.qcow2"]), 1);
    assert_eq!(code(d, "qemu-img", &["map", "packed.qcow2"]), 1);
    assert_eq!(
        ok(d, "vt", &["image", "map", "--output=json", "packed.qcow2"]),
        ok(d, "qemu-img", &["map", "--output=json", "packed.qcow2"])
    );
    // A sparse raw file: holes and data as the file system reports them;
    // and a qcow2 file mapped as raw bytes with -f raw.
    ok(
        d,
        "qemu-img",
        &["create", "-q", "-f", "raw", "sparse.raw", "16M"],
    );
    ok(
        d,
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 3 1M 2M",
            "-c",
            "write -P 4 15M 64k",
            "sparse.raw",
        ],
    );
    for f in ["top.qcow2", "mid.qcow2", "small.qcow2", "sparse.raw"] {
        for args in [&["map", f][..], &["map", "--output=json", f][..]] {
            let mut ours = vec!["image"];
            ours.extend_from_slice(args);
            assert_eq!(ok(d, "vt", &ours), ok(d, "qemu-img", args), "{args:?}");
        }
    }
    let args = ["map", "-f", "raw", "--output=json", "small.qcow2"];
    assert_eq!(
        ok(
            d,
            "vt",
            &["image", "map", "-f", "raw", "--output=json", "small.qcow2"]
        ),
        ok(d, "qemu-img", &args)
    );
}

/// `snapshot -l` prints qemu-img's table; `info --output=json` has the
/// same `snapshots` list.
#[test]
fn snapshot_list_equals_qemu_img() {
    let t = scratch("snap");
    let d = t.0.as_path();
    ok(
        d,
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "s.qcow2", "1M"],
    );
    ok(d, "qemu-img", &["snapshot", "-c", "first", "s.qcow2"]);
    ok(
        d,
        "qemu-img",
        &["snapshot", "-c", "a-name-longer-than-17", "s.qcow2"],
    );
    assert_eq!(
        ok(d, "vt", &["image", "snapshot", "-l", "s.qcow2"]),
        ok(d, "qemu-img", &["snapshot", "-l", "s.qcow2"])
    );
    assert_eq!(
        json(d, "vt", "s.qcow2")["snapshots"],
        json(d, "qemu-img", "s.qcow2")["snapshots"]
    );
}

/// `info --backing-chain`: qemu-img's text and, image by image, its JSON
/// over a qcow2 ← qcow2 ← raw chain; loops and devices are errors.
#[test]
fn info_backing_chain_equals_qemu_img() {
    let t = scratch("info-chain");
    let d = t.0.as_path();
    ok(
        d,
        "qemu-img",
        &["create", "-q", "-f", "raw", "b0.raw", "1M"],
    );
    ok(
        d,
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", "b0.raw", "-F", "raw", "b1.qcow2",
        ],
    );
    ok(
        d,
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", "b1.qcow2", "-F", "qcow2", "b2.qcow2",
        ],
    );
    let args = ["info", "--backing-chain", "b2.qcow2"];
    assert_eq!(vt_image(d, &args), ok(d, "qemu-img", &args));
    let json_args = ["info", "--backing-chain", "--output=json", "b2.qcow2"];
    let ours: serde_json::Value = serde_json::from_str(&vt_image(d, &json_args)).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(&ok(d, "qemu-img", &json_args)).unwrap();
    let (ours, theirs) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
    assert_eq!(ours.len(), 3);
    assert_eq!(ours.len(), theirs.len());
    for (o, q) in ours.iter().zip(theirs) {
        for f in FIELDS {
            assert_eq!(o.pointer(f), q.pointer(f), "{f}: {o} vs {q}");
        }
    }
    // A loop, and a device as backing file: errors, not followed.
    ok(
        d,
        "qemu-img",
        &["rebase", "-u", "-b", "b2.qcow2", "-F", "qcow2", "b1.qcow2"],
    );
    assert_eq!(vt_code(d, &args), 1);
    ok(
        d,
        "qemu-img",
        &["rebase", "-u", "-b", "/dev/zero", "-F", "raw", "b1.qcow2"],
    );
    assert_eq!(vt_code(d, &args), 1);
}
