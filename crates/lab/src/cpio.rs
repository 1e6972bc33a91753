//! A writer for the cpio "newc" format, the one the Linux initramfs unpacker reads.
//!
//! Each entry is a 110-byte ASCII header (`070701` + 13 eight-digit hex fields),
//! the NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes.
//! The archive ends with an entry named `TRAILER!!!`. Names are written without
//! a leading `/`; owner is root, mtime 0, so archives are reproducible.

use std::io::{self, Read, Write};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Streams a newc archive into `W`.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    size: u64,
    rdev: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// A directory; `perm` is the permission bits (e.g. 0o755).
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFDIR | (perm & 0o7777),
            nlink: 2,
            size: 0,
            rdev: (0, 0),
        })
    }

    /// A regular file with the given contents.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.file_from(name, perm, data.len() as u64, &mut &data[..])
    }

    /// A regular file of `size` bytes read from `reader`.
    pub fn file_from(
        &mut self,
        name: &str,
        perm: u32,
        size: u64,
        reader: &mut impl Read,
    ) -> io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFREG | (perm & 0o7777),
            nlink: 1,
            size,
            rdev: (0, 0),
        })?;
        let copied = io::copy(&mut reader.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: expected {size} bytes, read {copied}"),
            ));
        }
        self.written += size;
        self.pad()
    }

    /// A symbolic link pointing at `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            size: target.len() as u64,
            rdev: (0, 0),
        })?;
        self.write_raw(target.as_bytes())?;
        self.pad()
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFCHR | (perm & 0o7777),
            nlink: 1,
            size: 0,
            rdev: (major, minor),
        })
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(Header {
            name: "TRAILER!!!",
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        })?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(&mut self, h: Header<'_>) -> io::Result<()> {
        let name = h.name.trim_start_matches('/');
        if name.is_empty() || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio entry name {:?}", h.name),
            ));
        }
        let size = u32::try_from(h.size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: larger than 4 GiB"),
            )
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino,
            h.mode,
            0, // uid
            0, // gid
            h.nlink,
            0, // mtime
            size,
            0, // devmajor
            0, // devminor
            h.rdev.0,
            h.rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        let mut text = String::with_capacity(110);
        text.push_str("070701");
        for f in fields {
            text.push_str(&format!("{f:08x}"));
        }
        self.write_raw(text.as_bytes())?;
        self.write_raw(name.as_bytes())?;
        self.write_raw(&[0])?;
        self.pad()
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = ((4 - self.written % 4) % 4) as usize;
        self.write_raw(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempdir::TempDir;
    use std::process::{Command, Stdio};

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("etc", 0o755).unwrap();
        w.file("/etc/hello", 0o644, b"hello world\n").unwrap();
        w.file("etc/odd", 0o600, b"abc").unwrap();
        w.dir("bin", 0o755).unwrap();
        w.file("bin/tool", 0o755, &[0u8, 1, 2, 3, 4, 5, 6]).unwrap();
        w.symlink("bin/link", "tool").unwrap();
        w.char_dev("console", 0o600, 5, 1).unwrap();
        w.finish().unwrap()
    }

    fn cpio(args: &[&str], cwd: &std::path::Path, input: &[u8]) -> String {
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the cpio tool is needed (apt-get install cpio)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "cpio {args:?}: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn layout_is_aligned() {
        let a = sample();
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
        // The trailer header is the last thing before final padding.
        let tail = String::from_utf8_lossy(&a[a.len() - 124..]).into_owned();
        assert!(tail.contains("TRAILER!!!"));
    }

    #[test]
    fn round_trips_through_cpio_tool() {
        let archive = sample();
        let dir = TempDir::new("cpio-test").unwrap();
        let listing = cpio(&["-itv", "--quiet"], dir.path(), &archive);
        assert!(listing.contains("crw-------"), "{listing}");
        assert!(listing.contains("5,"), "{listing}");
        assert!(listing.contains("bin/link -> tool"), "{listing}");

        // Extract everything but the device node (mknod needs privileges).
        cpio(
            &[
                "-idm",
                "--quiet",
                "--no-absolute-filenames",
                "--nonmatching",
                "console",
            ],
            dir.path(),
            &archive,
        );
        let p = dir.path();
        assert_eq!(
            std::fs::read(p.join("etc/hello")).unwrap(),
            b"hello world\n"
        );
        assert_eq!(std::fs::read(p.join("etc/odd")).unwrap(), b"abc");
        assert_eq!(
            std::fs::read(p.join("bin/tool")).unwrap(),
            [0, 1, 2, 3, 4, 5, 6]
        );
        let target = std::fs::read_link(p.join("bin/link")).unwrap();
        assert_eq!(target.to_str(), Some("tool"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn short_reader_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        let err = w.file_from("x", 0o644, 10, &mut &b"abc"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
