//! A tap interface with a virtio-net header on every frame (IFF_VNET_HDR),
//! so checksum and segmentation offloads pass between guest and host.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vm_memory::VolatileSlice;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETSNDBUF: libc::c_ulong = 0x4004_54d4;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;
pub const TUN_F_UFO: u32 = 0x10;

/// Most buffers one frame may be written from (the kernel's UIO_MAXIOV).
pub const MAX_IOVECS: usize = 1024;

/// struct ifreq with the flags member of its union.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

/// Why a tap could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] io::Error),
    #[error(
        "cannot attach to tap (it must exist and be ours, or we need CAP_NET_ADMIN to create it)"
    )]
    Attach(#[source] io::Error),
    #[error("cannot configure the tap ({0})")]
    Configure(&'static str, #[source] io::Error),
    #[error("interface name '{0}' is not valid")]
    Name(String),
}

/// An open tap queue.
pub struct Tap {
    file: File,
    name: String,
    /// False for a socket standing in for a tap (tests, fuzzing).
    is_tap: bool,
}

/// # Safety
///
/// `arg` must be what request `req` takes: a pointer valid for the call to
/// the type the kernel reads or writes for it, or an integer by value.
unsafe fn ioctl(fd: RawFd, req: libc::c_ulong, arg: *const libc::c_void) -> io::Result<()> {
    // SAFETY: the caller upholds this function's contract for `arg`.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Tap {
    /// Opens tap `name` (creating it if missing and we may), with 12-byte
    /// virtio-net headers, non-blocking, and brings it up if we created it.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() > 15 || name.contains(['/', '\0', ' ']) {
            return Err(TapError::Name(name.to_string()));
        }
        let existed = std::path::Path::new("/sys/class/net").join(name).exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq; `req` is one
        // (name, flags, padding to its 40 bytes) and lives across the call.
        unsafe { ioctl(file.as_raw_fd(), TUNSETIFF, (&req as *const IfReq).cast()) }
            .map_err(TapError::Attach)?;
        let tap = Tap::configure(file, name)?;
        if !existed {
            tap.set_up()
                .map_err(|e| TapError::Configure("SIOCSIFFLAGS", e))?;
        }
        Ok(tap)
    }

    /// Takes the tap queue already open as descriptor `fd` (attached with
    /// TUNSETIFF by whoever passed it, e.g. a manager making taps in the
    /// host's network namespace for a VMM in its own); `fd` stays open and
    /// a duplicate is used. Errors: `fd` is not a tap with virtio-net
    /// headers ([`TapError::Attach`]), or cannot be configured.
    pub fn from_fd(fd: RawFd, name: &str) -> Result<Tap, TapError> {
        let file = crate::files::dup(fd).map_err(TapError::Attach)?;
        let mut req = IfReq {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: TUNGETIFF writes a struct ifreq; `req` is one and lives
        // across the call.
        unsafe { ioctl(file.as_raw_fd(), TUNGETIFF, (&mut req as *mut IfReq).cast()) }
            .map_err(TapError::Attach)?;
        if req.flags & (IFF_TAP | IFF_VNET_HDR) != IFF_TAP | IFF_VNET_HDR {
            return Err(TapError::Attach(io::Error::other(
                "the descriptor is not a tap with IFF_VNET_HDR",
            )));
        }
        // SAFETY: F_GETFL/F_SETFL on our own descriptor with integer flags.
        unsafe {
            let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Tap::configure(file, name)
    }

    /// The queue's descriptor (for handing the tap to another process).
    pub fn into_fd(self) -> std::os::fd::OwnedFd {
        self.file.into()
    }

    /// Sets the header size and the send buffer on an attached tap queue.
    fn configure(file: File, name: &str) -> Result<Tap, TapError> {
        let hdr: libc::c_int = super::HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
        unsafe {
            ioctl(
                file.as_raw_fd(),
                TUNSETVNETHDRSZ,
                (&hdr as *const libc::c_int).cast(),
            )
        }
        .map_err(|e| TapError::Configure("TUNSETVNETHDRSZ", e))?;
        // No send-buffer cap (QEMU's default too): the host's stack paces
        // the guest through its own queues, and a frame the tap does refuse
        // waits for it to drain rather than being dropped.
        let sndbuf = libc::c_int::MAX;
        // SAFETY: TUNSETSNDBUF reads one int through the pointer.
        unsafe {
            ioctl(
                file.as_raw_fd(),
                TUNSETSNDBUF,
                (&sndbuf as *const libc::c_int).cast(),
            )
        }
        .map_err(|e| TapError::Configure("TUNSETSNDBUF", e))?;
        Ok(Tap {
            file,
            name: name.to_string(),
            is_tap: true,
        })
    }

    /// A stand-in for a tap, for tests and fuzzing, and the host's end of
    /// it: a non-blocking `SOCK_SEQPACKET` socket pair moves frames the way
    /// a tap does (a write is one frame, a read takes one frame and cuts it
    /// to the buffer). There are no offloads to set on it.
    pub fn socket_pair(name: &str) -> io::Result<(Tap, std::os::fd::OwnedFd)> {
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: socketpair fills the two-int array it is given.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nothing else.
        let (ours, host) = unsafe {
            (
                File::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        let tap = Tap {
            file: ours,
            name: name.to_string(),
            is_tap: false,
        };
        Ok((tap, host))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn set_up(&self) -> io::Result<()> {
        // SAFETY: plain socket(2) call; the fd is owned by `sock` below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is ours alone.
        let sock = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut req = IfReq {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        // SAFETY: SIOCGIFFLAGS fills the flags of the struct ifreq `req`.
        unsafe {
            ioctl(
                sock.as_raw_fd(),
                libc::SIOCGIFFLAGS as _,
                (&mut req as *mut IfReq).cast(),
            )
        }?;
        req.flags |= libc::IFF_UP as i16;
        // SAFETY: SIOCSIFFLAGS reads the struct ifreq `req`.
        unsafe {
            ioctl(
                sock.as_raw_fd(),
                libc::SIOCSIFFLAGS as _,
                (&req as *const IfReq).cast(),
            )
        }
    }

    /// Tells the kernel which offloads the guest accepts (TUN_F_*).
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        if !self.is_tap {
            return Ok(());
        }
        // SAFETY: TUNSETOFFLOAD takes the flags by value; nothing is dereferenced.
        unsafe {
            ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD,
                flags as usize as *const libc::c_void,
            )
        }
    }

    /// Reads one frame (with its header); WouldBlock when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        (&self.file).read(buf)
    }

    /// Writes one frame (header first) held in guest buffers.
    pub fn write_slices(&self, bufs: &[VolatileSlice]) -> io::Result<usize> {
        self.vectored(bufs, true)
    }

    /// Reads one frame (header first) straight into guest buffers; a frame
    /// longer than they are is cut short. WouldBlock when none is queued.
    pub fn read_slices(&self, bufs: &[VolatileSlice]) -> io::Result<usize> {
        self.vectored(bufs, false)
    }

    /// writev (`write`) or readv over the first [`MAX_IOVECS`] of `bufs`.
    fn vectored(&self, bufs: &[VolatileSlice], write: bool) -> io::Result<usize> {
        let iovs = iovecs(bufs);
        let (fd, count) = (self.file.as_raw_fd(), iovs.len() as libc::c_int);
        // SAFETY: each iovec points into guest memory that `bufs` borrows
        // for the whole call (an mmap-backed region: its address stays
        // valid while mapped, whatever the pointer guard's lifetime), with
        // the slice's length; writev only reads them, readv writes at most
        // that many bytes into each. No dirty bitmap is kept, so none is
        // marked.
        let n = unsafe {
            if write {
                libc::writev(fd, iovs.as_ptr(), count)
            } else {
                libc::readv(fd, iovs.as_ptr(), count)
            }
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// The first [`MAX_IOVECS`] of `bufs` as iovecs.
fn iovecs(bufs: &[VolatileSlice]) -> Vec<libc::iovec> {
    bufs.iter()
        .take(MAX_IOVECS)
        .map(|b| libc::iovec {
            iov_base: b.ptr_guard_mut().as_ptr().cast(),
            iov_len: b.len(),
        })
        .collect()
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
