//! Signals: SIGTERM, SIGINT and SIGHUP end the VM through a signalfd; a
//! real-time signal kicks a vCPU thread out of KVM_RUN; the other signals
//! whose default action would end the process without a word (SIGUSR1/2,
//! SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT and the real-time
//! signals above the kick) are ignored. Faults (SIGSEGV, SIGBUS, ...),
//! SIGQUIT, SIGSYS (seccomp) and SIGKILL keep their default actions.

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
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    set
}

/// The signals [`init`] ignores.
pub fn ignored_signals() -> Vec<libc::c_int> {
    let mut v = vec![
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGSTKFLT,
    ];
    v.extend(kick_signal() + 1..=libc::SIGRTMAX());
    v
}

fn ignore(sig: libc::c_int) -> Result<(), Error> {
    // SAFETY: installing SIG_IGN touches no memory of ours.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(Error::Io(
            "cannot ignore a signal",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Installs the kick handler, ignores [`ignored_signals`] and blocks
/// SIGTERM/SIGINT/SIGHUP in this thread (and so in every thread it
/// starts). Call before starting threads.
pub fn init() -> Result<(), Error> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| Error::Io("cannot install the vCPU kick handler", e.into()));
    });
    res?;
    for sig in ignored_signals() {
        ignore(sig)?;
    }
    let set = termination_set();
    // SAFETY: `set` is a valid, initialised signal set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(Error::Io(
            "cannot block SIGTERM/SIGINT/SIGHUP",
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
}

/// A signalfd that reads SIGTERM, SIGINT and SIGHUP.
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
