//! Helpers for the disk tests: scratch directories, qemu-img, whole-disk
//! reads and a small deterministic generator.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use disk::{DiskBackend, DiskFormat, OpenOptions};
use vm_memory::VolatileSlice;

/// A fresh directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("vt-disk-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs qemu-img (or qemu-io) with `args`; panics on failure with its stderr.
pub fn qemu(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().expect(tool);
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// qemu-img's exit status for `args`, with its output.
pub fn qemu_status(args: &[&str]) -> (i32, String) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// xorshift64*: the same sequence every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A raw file of `size` bytes with random data in scattered 64 KiB-aligned
/// runs (the rest zero, so conversions leave holes).
pub fn patterned_raw(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut data = vec![0u8; size];
    for _ in 0..size / (256 << 10) {
        let at = rng.below((size / 4096) as u64) as usize * 4096;
        let len = (rng.below(32) as usize + 1) * 4096;
        let end = (at + len).min(size);
        rng.fill(&mut data[at..end]);
    }
    std::fs::write(path, &data).unwrap();
    data
}

pub fn opts(format: Option<DiskFormat>, readonly: bool) -> OpenOptions {
    OpenOptions {
        readonly,
        format,
        ..Default::default()
    }
}

pub fn read(d: &mut dyn DiskBackend, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    // Two buffers, to go through the vectored path.
    let (a, b) = buf.split_at_mut(len / 3);
    d.read_at(offset, &[VolatileSlice::from(a), VolatileSlice::from(b)])
        .unwrap();
    buf
}

pub fn write(d: &mut dyn DiskBackend, offset: u64, data: &mut [u8]) {
    d.write_at(offset, &[VolatileSlice::from(data)]).unwrap();
}

/// The whole disk, read 1 MiB at a time.
pub fn read_all(d: &mut dyn DiskBackend) -> Vec<u8> {
    let size = d.size() as usize;
    let mut out = Vec::with_capacity(size);
    let mut at = 0;
    while at < size {
        let n = (size - at).min(1 << 20);
        out.extend(read(d, at as u64, n));
        at += n;
    }
    out
}

/// Index of the first differing byte, for a readable assertion.
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}
