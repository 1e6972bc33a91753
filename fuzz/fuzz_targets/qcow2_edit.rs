//! Any bytes as a qcow2 image under the offline metadata editors: internal
//! snapshot create, apply and delete (`disk::snapshot::edit`), the backing
//! file rewrite (`disk::backing`) and `info --backing-chain` must return
//! errors, never panic, hang or touch another file. The image lives in a
//! memfd reached through `/proc/self/fd`.
#![no_main]

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use memfd::memfd;

mod memfd;

fuzz_target!(|data: &[u8]| {
    let f = memfd(data);
    let path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    let _ = disk::snapshot::edit::create(&path, "fuzz");
    let _ = disk::snapshot::edit::apply(&path, "1");
    let _ = disk::snapshot::edit::delete(&path, "1");
    let _ = disk::snapshot::edit::create(&path, "again");
    let _ = disk::backing::set_backing(&f, Some(("base.raw", "raw")));
    let _ = disk::backing::set_backing(&f, None);
    let _ = disk::info::chain(&path, Some(disk::DiskFormat::Qcow2));
});
