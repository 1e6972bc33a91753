//! `vt image rebase` and `vt image commit` against qemu-img as the
//! referee, on a raw ← qcow2 ← qcow2 chain with data, zero clusters and
//! holes in every layer: the content stays what `qemu-img compare`
//! expects, the images pass `qemu-img check`, and the headers say what
//! qemu-img's would (`qemu-img info --output=json`).

mod common;

use std::path::Path;

use common::*;

/// base.raw ← mid.qcow2 ← top.qcow2, and top's content as raw.
fn chain(d: &Path) {
    ok(
        d,
        "qemu-img",
        &["create", "-q", "-f", "raw", "base.raw", "64M"],
    );
    qemu_io(
        d,
        "raw",
        "base.raw",
        &["write -P 0x11 0 8M", "write -P 0x12 40M 1M"],
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
    qemu_io(
        d,
        "qcow2",
        "mid.qcow2",
        &["write -P 0x22 4M 2M", "write -z 40M 512K"],
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
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    qemu_io(
        d,
        "qcow2",
        "top.qcow2",
        &[
            "write -P 0x33 5M 2M",
            "write -z 0 1M",
            "write -P 0x34 63M 1M",
        ],
    );
    ok(
        d,
        "qemu-img",
        &["convert", "-O", "raw", "top.qcow2", "top.raw"],
    );
}

fn backing(d: &Path, img: &str) -> (Option<String>, Option<String>) {
    let v: serde_json::Value =
        serde_json::from_str(&ok(d, "qemu-img", &["info", "--output=json", img])).unwrap();
    let s = |k: &str| v[k].as_str().map(str::to_string);
    (s("backing-filename"), s("backing-filename-format"))
}

#[test]
fn rebase_keeps_content_and_names_the_new_backing() {
    let t = scratch("rebase");
    let d = t.0.as_path();
    chain(d);
    // Safe mode onto the bottom layer, onto nothing, onto a copy with
    // different content; each time the content is top's.
    ok(d, "cp", &["top.qcow2", "a.qcow2"]);
    // -p on a pipe: no bar, no output.
    let out = run(
        d,
        "vt",
        &[
            "image", "rebase", "-p", "-b", "base.raw", "-F", "raw", "a.qcow2",
        ],
    );
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty());
    clean(d, "a.qcow2");
    same(d, "top.raw", "a.qcow2");
    assert_eq!(
        backing(d, "a.qcow2"),
        (Some("base.raw".into()), Some("raw".into()))
    );
    ok(d, "cp", &["top.qcow2", "b.qcow2"]);
    vt_image(d, &["rebase", "-b", "", "b.qcow2"]);
    clean(d, "b.qcow2");
    same(d, "top.raw", "b.qcow2");
    assert_eq!(backing(d, "b.qcow2"), (None, None));
    ok(
        d,
        "qemu-img",
        &["create", "-q", "-f", "raw", "other.raw", "32M"],
    );
    qemu_io(d, "raw", "other.raw", &["write -P 0x44 0 16M"]);
    ok(d, "cp", &["top.qcow2", "c.qcow2"]);
    vt_image(d, &["rebase", "-b", "other.raw", "-F", "raw", "c.qcow2"]);
    clean(d, "c.qcow2");
    same(d, "top.raw", "c.qcow2");
    // The same as qemu-img's own rebase, byte for byte in content.
    ok(d, "cp", &["top.qcow2", "q.qcow2"]);
    ok(
        d,
        "qemu-img",
        &["rebase", "-b", "other.raw", "-F", "raw", "q.qcow2"],
    );
    ok(d, "qemu-img", &["compare", "c.qcow2", "q.qcow2"]);
    // Unsafe mode only changes the header (the content changes with it).
    ok(d, "cp", &["top.qcow2", "u.qcow2"]);
    vt_image(
        d,
        &["rebase", "-u", "-b", "other.raw", "-F", "raw", "u.qcow2"],
    );
    clean(d, "u.qcow2");
    assert_eq!(
        backing(d, "u.qcow2"),
        (Some("other.raw".into()), Some("raw".into()))
    );
    ok(d, "cp", &["top.qcow2", "uq.qcow2"]);
    ok(
        d,
        "qemu-img",
        &["rebase", "-u", "-b", "other.raw", "-F", "raw", "uq.qcow2"],
    );
    ok(d, "qemu-img", &["compare", "u.qcow2", "uq.qcow2"]);
    // A v2 image and a long name: the header still holds it.
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
            "v2.qcow2",
            "64M",
        ],
    );
    let long = format!("{}.raw", "n".repeat(200));
    ok(d, "cp", &["base.raw", &long]);
    ok(d, "cp", &["v2.qcow2", "v2-safe.qcow2"]);
    vt_image(d, &["rebase", "-u", "-b", &long, "-F", "raw", "v2.qcow2"]);
    clean(d, "v2.qcow2");
    same(d, "base.raw", "v2.qcow2");
    // Safe mode keeps its zeros over the new backing's data.
    vt_image(d, &["rebase", "-b", &long, "-F", "raw", "v2-safe.qcow2"]);
    clean(d, "v2-safe.qcow2");
    ok(
        d,
        "qemu-img",
        &["create", "-q", "-f", "raw", "zero.raw", "64M"],
    );
    same(d, "zero.raw", "v2-safe.qcow2");
    assert_eq!(backing(d, "v2.qcow2"), (Some(long), Some("raw".into())));

    // Errors: no -F, a missing file, a raw image.
    for args in [
        &["rebase", "-b", "base.raw", "a.qcow2"][..],
        &["rebase", "-b", "missing.raw", "-F", "raw", "a.qcow2"],
        &["rebase", "-b", "", "base.raw"],
    ] {
        let mut a = vec!["image"];
        a.extend_from_slice(args);
        assert_eq!(run(d, "vt", &a).status.code(), Some(1), "{args:?}");
    }
    same(d, "top.raw", "a.qcow2");
}

#[test]
fn commit_writes_into_the_base_and_empties_the_image() {
    let t = scratch("commit");
    let d = t.0.as_path();
    chain(d);
    ok(
        d,
        "qemu-img",
        &["convert", "-O", "raw", "mid.qcow2", "mid.raw"],
    );
    // Into the backing file: mid now reads as top did, top is empty.
    assert_eq!(vt_image(d, &["commit", "top.qcow2"]), "Image committed.\n");
    clean(d, "top.qcow2");
    clean(d, "mid.qcow2");
    same(d, "top.raw", "mid.qcow2");
    same(d, "top.raw", "top.qcow2");
    let map = ok(d, "qemu-img", &["map", "--output=json", "top.qcow2"]);
    let map: serde_json::Value = serde_json::from_str(&map).unwrap();
    assert!(
        map.as_array().unwrap().iter().all(|e| e["depth"] != 0),
        "top still holds data: {map}"
    );

    // -d keeps the image; -b commits down to the raw base.
    let t = scratch("commit-b");
    let d = t.0.as_path();
    chain(d);
    ok(d, "cp", &["mid.qcow2", "mid.before"]);
    vt_image(d, &["commit", "-d", "-b", "base.raw", "top.qcow2"]);
    clean(d, "top.qcow2");
    same(d, "top.raw", "base.raw");
    same(d, "top.raw", "top.qcow2");
    // The middle layer's file was not touched.
    ok(d, "cmp", &["mid.before", "mid.qcow2"]);
    // Errors: no backing file, a base outside the chain.
    ok(
        d,
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "lone.qcow2", "1M"],
    );
    for args in [
        &["commit", "lone.qcow2"][..],
        &["commit", "-b", "lone.qcow2", "top.qcow2"],
    ] {
        let mut a = vec!["image"];
        a.extend_from_slice(args);
        let out = run(d, "vt", &a);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
}
