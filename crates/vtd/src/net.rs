//! A VM's networks: one tap per `bridge=` NIC, made by the VMM
//! (`--net tap=NAME`, gone when the VMM exits) and added to the bridge by
//! vtd once it exists (`SIOCBRADDIF`, what `brctl addif` does).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use api::manager::VmDefinition;

const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// `struct ifreq` with the interface index member.
#[repr(C)]
struct IfReqIndex {
    name: [u8; 16],
    ifindex: libc::c_int,
    _pad: [u8; 20],
}

/// The tap of NIC `i` of VM `name`: `vt` + 8 hex digits (FNV-1a of the
/// name) + `n` + index; at most 15 bytes, stable across restarts.
pub fn tap_name(name: &str, i: usize) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("vt{h:08x}n{i}")
}

/// The VMM flags for the VM's NICs.
pub fn net_flags(def: &VmDefinition) -> Vec<String> {
    def.networks
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            let mac = n
                .mac
                .as_ref()
                .map(|m| format!(",mac={m}"))
                .unwrap_or_default();
            [
                "--net".to_string(),
                format!("tap={}{mac}", tap_name(&def.name, i)),
            ]
        })
        .collect()
}

/// The index of interface `name` in vtd's network namespace (asked of
/// the kernel: /sys may show another namespace).
fn ifindex(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated name; no memory is kept.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    (index != 0).then_some(index)
}

/// Whether interface `bridge` exists (that it is a bridge, adding a port
/// finds out).
pub fn bridge_exists(bridge: &str) -> bool {
    ifindex(bridge).is_some()
}

/// Waits for `tap` to appear (the VMM makes it while building the VM),
/// then adds it to `bridge`.
pub fn attach(bridge: &str, tap: &str, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let index = loop {
        if let Some(i) = ifindex(tap) {
            break i;
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("tap {tap} did not appear"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut req = IfReqIndex {
        name: [0; 16],
        ifindex: index as libc::c_int,
        _pad: [0; 20],
    };
    let n = bridge.len().min(15);
    req.name[..n].copy_from_slice(&bridge.as_bytes()[..n]);
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is ours alone.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCBRADDIF reads a struct ifreq, which `req` is laid out as.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            SIOCBRADDIF as _,
            &req as *const IfReqIndex,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct ifreq` with the flags member.
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn name_bytes(name: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    let n = name.len().min(15);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

/// Creates tap `name` in vtd's network namespace with virtio-net headers
/// (what `vt-vmm --net tap=` would do), brings it up, and returns its
/// queue descriptor for a jailed VMM (the tap goes away with the last
/// descriptor). tuntap: the kernel's `Documentation/networking/tuntap.rst`.
pub fn create_tap(name: &str) -> io::Result<OwnedFd> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_VNET_HDR: libc::c_short = 0x4000;
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let req = IfReqFlags {
        name: name_bytes(name),
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `req` is
    // laid out as, valid for the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &req as *const IfReqFlags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is ours alone.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut up = IfReqFlags {
        name: name_bytes(name),
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read (and write) a struct ifreq.
    unsafe {
        if libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS as _,
            &mut up as *mut IfReqFlags,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        up.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFFLAGS as _,
            &up as *const IfReqFlags,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(tun.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_and_differ() {
        let a = tap_name("myvm", 0);
        assert!(a.len() <= 15, "{a}");
        assert_eq!(a, tap_name("myvm", 0));
        assert_ne!(a, tap_name("myvm", 1));
        assert_ne!(a, tap_name("myvm2", 0));
        assert!(tap_name(&"x".repeat(64), 9).len() <= 15);
    }
}
