//! Crash consistency of the qcow2 backend: a process writing and flushing
//! in a loop through the same code the VMM's virtio-blk uses is killed
//! with SIGKILL at 20 random points, on one image; after each kill
//! `qemu-img check` finds no corruption (leaks are allowed), every
//! flushed write is there, the image opens writable again for the next
//! round, and at the end `vt image check -r leaks`' code repairs the
//! leaks to a clean `qemu-img check`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use disk::{open_path, DiskFormat};

const SIZE: u64 = 64 << 20;
const BLOCK: usize = 4096;

/// 4 KiB naming its write: the sequence number, repeated.
fn block(seq: u64) -> Vec<u8> {
    seq.to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(BLOCK)
        .collect()
}

/// Not a test by itself: run by the next test as a child process (with
/// `VT_CRASH_CHILD=image`, `VT_CRASH_SEED`, `VT_CRASH_SEQ`), it writes 4 KiB
/// blocks at random offsets, flushing every few, and reports each on
/// stdout (`W offset seq` before the write, `F seq` once a flush covering
/// it returned) until it is killed.
#[test]
fn crash_child() {
    let Some(img) = std::env::var_os("VT_CRASH_CHILD") else {
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap().parse::<u64>().unwrap();
    let mut rng = Rng(env("VT_CRASH_SEED") | 1);
    let mut seq = env("VT_CRASH_SEQ");
    let mut d = open_path(img.as_ref(), &opts(Some(DiskFormat::Qcow2), false)).unwrap();
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for _ in 0..100_000 {
        for _ in 0..=rng.below(3) {
            seq += 1;
            let off = rng.below(SIZE / BLOCK as u64) * BLOCK as u64;
            writeln!(out, "W {off} {seq}").unwrap();
            out.flush().unwrap();
            write(d.as_mut(), off, &mut block(seq));
        }
        d.flush().unwrap();
        writeln!(out, "F {seq}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_while_writing_never_corrupts_and_keeps_flushed_writes() {
    let t = Scratch::new("crash");
    let img = t.path("c.qcow2");
    qemu(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", s(&img), &SIZE.to_string()],
    );
    // offset → the sequence numbers written there, in order; and every
    // sequence number a flush covered (a flush covers the writes of its
    // own round before it).
    let mut writes: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut durable = 0u64;
    let mut durable_seqs = std::collections::HashSet::<u64>::new();
    let mut rng = Rng(0x5eed);
    for round in 0..20u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env("VT_CRASH_CHILD", &img)
            .env("VT_CRASH_SEED", (round + 1).to_string())
            .env("VT_CRASH_SEQ", ((round + 1) * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let flushes_before_kill = 1 + rng.below(40);
        let mut seen = 0;
        let mut round_writes = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while seen < flushes_before_kill {
            let Some(Ok(l)) = lines.next() else { break };
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("W"), Some(off), Some(seq)) => {
                    let seq: u64 = seq.parse().unwrap();
                    writes.entry(off.parse().unwrap()).or_default().push(seq);
                    round_writes.push(seq);
                }
                (Some("F"), Some(seq), None) => {
                    durable = seq.parse().unwrap();
                    durable_seqs.extend(round_writes.iter().filter(|s| **s <= durable));
                    seen += 1;
                }
                _ => {}
            }
        }
        assert_eq!(
            seen, flushes_before_kill,
            "round {round}: the writer died by itself"
        );
        child.kill().unwrap(); // SIGKILL, mid-loop
        child.wait().unwrap();
        // Writes it announced after the last line we read may have happened too.
        for l in lines.map_while(Result::ok) {
            let mut w = l.split_whitespace();
            if let (Some("W"), Some(off), Some(seq)) = (w.next(), w.next(), w.next()) {
                writes
                    .entry(off.parse().unwrap())
                    .or_default()
                    .push(seq.parse().unwrap());
            }
        }
        let (code, out) = qemu_status(&["check", s(&img)]);
        assert!(
            code == 0 || code == 3,
            "round {round}: qemu-img check {code}:\n{out}"
        );
        eprintln!("round {round}: killed after {seen} flushes; qemu-img check exit {code}");
        let mut d = open_path(&img, &opts(Some(DiskFormat::Qcow2), true)).unwrap();
        for (off, seqs) in &writes {
            let got = read(d.as_mut(), *off, BLOCK);
            // The last flushed write must be there, or one written after it.
            let last_flushed = seqs.iter().rev().find(|s| durable_seqs.contains(*s));
            let ok = seqs
                .iter()
                .filter(|s| last_flushed.is_none_or(|f| *s >= f))
                .any(|s| got == block(*s))
                || (last_flushed.is_none() && got.iter().all(|b| *b == 0));
            assert!(
                ok,
                "round {round}: block at {off} lost a flushed write ({seqs:?}, last flush {durable})"
            );
        }
    }
    // The leaks a kill leaves are repaired to a clean image.
    disk::check::check(&img, disk::check::Repair::Leaks).unwrap();
    let (code, out) = qemu_status(&["check", s(&img)]);
    assert_eq!(code, 0, "{out}");
}
