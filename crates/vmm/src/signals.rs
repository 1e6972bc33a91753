//! Signals: SIGTERM/SIGINT end the VM through a signalfd; a real-time signal
//! kicks a vCPU thread out of KVM_RUN.

use std::cell::Cell;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Once;

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::Error;

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, set while a vCPU runs here.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: the pointer is this thread's kvm_run mapping, published by
            // `set_immediate_exit_ptr` and cleared before the mapping goes away.
            unsafe { std::ptr::write_volatile(p, 1) };
        }
    });
}

/// Publishes this thread's `immediate_exit` byte for the kick handler.
pub fn set_immediate_exit_ptr(p: *mut u8) {
    IMMEDIATE_EXIT.with(|c| c.set(p));
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    set
}

/// Installs the kick handler and blocks SIGTERM/SIGINT in this thread (and
/// so in every thread it starts). Call before starting threads.
pub fn init() -> Result<(), Error> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| Error::Io("cannot install the vCPU kick handler", e.into()));
    });
    res?;
    let set = termination_set();
    // SAFETY: `set` is a valid, initialised signal set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(Error::Io(
            "cannot block SIGTERM/SIGINT",
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
}

/// A signalfd that reads SIGTERM and SIGINT.
pub fn termination_fd() -> Result<OwnedFd, Error> {
    let set = termination_set();
    // SAFETY: `set` is valid; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::Io("signalfd", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads which signal arrived on a [`termination_fd`].
pub fn read_signal(fd: &OwnedFd) -> Option<i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: reading at most `size` bytes into `info`.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (n == size as isize).then_some(info.ssi_signo as i32)
}
