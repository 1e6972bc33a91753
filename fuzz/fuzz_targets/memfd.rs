//! A memfd holding the fuzzer's bytes (shared by the qcow2 targets).

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;

/// A new memfd with `data` in it.
pub fn memfd(data: &[u8]) -> File {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is new and ours.
    let fd = unsafe { libc::memfd_create(c"qcow2".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(data).unwrap();
    f
}
