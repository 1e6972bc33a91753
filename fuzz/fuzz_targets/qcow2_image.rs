//! Any bytes as a qcow2 image: opening (header, L1, refcount table) and
//! reading, writing, discarding and flushing it must not panic. The image
//! lives in a memfd; backing files are never opened (the opener refuses),
//! so a hostile header cannot reach the host's files.
#![no_main]

use std::path::Path;

use disk::{BackingOpener, DiskFormat, ImageFile, OpenOptions};
use libfuzzer_sys::fuzz_target;
use memfd::memfd;
use vm_memory::VolatileSlice;

mod memfd;

struct Refuse;
impl BackingOpener for Refuse {
    fn open_backing(&mut self, _: &str, _: &Path) -> std::io::Result<ImageFile> {
        Err(std::io::Error::other("no backing files while fuzzing"))
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = disk::header::Header::parse(data);
    for readonly in [true, false] {
        let image = ImageFile {
            file: memfd(data),
            name: "fuzz.qcow2".into(),
            dir: "/nonexistent".into(),
        };
        let opts = OpenOptions {
            readonly,
            format: Some(DiskFormat::Qcow2),
            shareable: true,
            ..Default::default()
        };
        let Ok(mut d) = disk::open_file(image, &opts, &mut Refuse) else {
            continue;
        };
        let size = d.size();
        let mut buf = vec![0u8; 8192];
        for off in [0, size / 2, size.saturating_sub(8192)] {
            let _ = d.read_at(off, &[VolatileSlice::from(&mut buf[..])]);
            if !readonly {
                let _ = d.write_at(off, &[VolatileSlice::from(&mut buf[..4096])]);
                let _ = d.discard(off, 4096);
                let _ = d.write_zeroes(off, 512);
            }
        }
        let _ = d.flush();
    }
});
