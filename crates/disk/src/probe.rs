//! Format probing: what the first sector of a file says it is.
//!
//! Used to refuse, not to choose: a writable disk given without a format
//! whose first sector is an image header is refused (the guest would write
//! over the metadata), and a known format we do not read is named in the
//! error. Magics from QEMU's block drivers.

use std::fs::File;
use std::io;

/// How many bytes [`probe`] reads.
pub const PROBE_LEN: usize = 512;

/// What a file's first sector looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    /// No known image header: raw data.
    Raw,
    /// A qcow2 header (`QFI\xfb`, version 2 or 3).
    Qcow2,
    /// Another image format, named (e.g. `"vmdk"`), which we do not read.
    Other(&'static str),
}

/// Classifies the first bytes of a file (any length; short means raw
/// unless a magic fits).
pub fn probe_bytes(b: &[u8]) -> Probed {
    let at = |off: usize, magic: &[u8]| b.get(off..off + magic.len()) == Some(magic);
    if at(0, b"QFI\xfb") {
        let version = b
            .get(4..8)
            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        return match version {
            Some(2 | 3) => Probed::Qcow2,
            _ => Probed::Other("qcow"),
        };
    }
    const OTHERS: &[(usize, &[u8], &str)] = &[
        (0, b"KDMV", "vmdk"),
        (0, b"COWD", "vmdk"),
        (0, b"# Disk DescriptorFile", "vmdk"),
        (0, b"vhdxfile", "vhdx"),
        (0, b"QED\0", "qed"),
        (0, b"conectix", "vpc"),
        (0x40, b"\x7f\x10\xda\xbe", "vdi"),
        (0, b"LUKS\xba\xbe", "luks"),
        (0, b"WithoutFreeSpace", "parallels"),
        (0, b"WithouFreSpacExt", "parallels"),
        (0, b"Bochs Virtual HD Image", "bochs"),
        (0, b"#!/bin/sh\n#V2.0 Format\n", "cloop"),
    ];
    OTHERS
        .iter()
        .find(|(off, magic, _)| at(*off, magic))
        .map_or(Probed::Raw, |(_, _, name)| Probed::Other(name))
}

/// Reads the first [`PROBE_LEN`] bytes of `file` (fewer if it is shorter)
/// and classifies them with [`probe_bytes`].
pub fn probe(file: &File) -> io::Result<Probed> {
    let mut buf = [0u8; PROBE_LEN];
    let got = crate::read_prefix(file, &mut buf)?;
    Ok(probe_bytes(&buf[..got]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics() {
        assert_eq!(probe_bytes(b""), Probed::Raw);
        assert_eq!(probe_bytes(&[0u8; 512]), Probed::Raw);
        assert_eq!(probe_bytes(b"QFI\xfb\0\0\0\x03"), Probed::Qcow2);
        assert_eq!(probe_bytes(b"QFI\xfb\0\0\0\x02"), Probed::Qcow2);
        assert_eq!(probe_bytes(b"QFI\xfb\0\0\0\x01"), Probed::Other("qcow"));
        assert_eq!(probe_bytes(b"QFI\xfb"), Probed::Other("qcow"));
        assert_eq!(probe_bytes(b"KDMV...."), Probed::Other("vmdk"));
        assert_eq!(probe_bytes(b"vhdxfile"), Probed::Other("vhdx"));
        assert_eq!(probe_bytes(b"QED\0"), Probed::Other("qed"));
        let mut vdi = vec![0u8; 512];
        vdi[0x40..0x44].copy_from_slice(b"\x7f\x10\xda\xbe");
        assert_eq!(probe_bytes(&vdi), Probed::Other("vdi"));
    }
}
