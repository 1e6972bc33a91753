//! The control socket's allow-list, installed first thing in the listener
//! thread; its connection threads (started by the listener) inherit it.
//!
//! It accepts connections on the socket bound before confinement, reads
//! the peer's credentials, sets its read and write timeouts, reads and writes HTTP on
//! the connection, hands commands to the event loop (a channel and an
//! eventfd write), and queues console input (UART FIFO, irqfd write).
//! It also counts the guest RAM's resident pages (mincore).
//! No `ioctl`, no `open`, no new sockets.

use super::{Result, Rules};

/// Adds the control socket threads' calls to `r`.
pub fn rules(r: &mut Rules) -> Result<()> {
    r.allow(&[
        libc::SYS_accept4,
        // std's UnixStream reads with recv and writes with send/write.
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        // Connection threads.
        libc::SYS_clone3,
        // The guest RAM's resident pages (`GET /vm/counters`).
        libc::SYS_mincore,
    ]);
    // SO_PEERCRED.
    r.allow_when(
        libc::SYS_getsockopt,
        vec![
            super::arg_eq(1, libc::SOL_SOCKET as u64)?,
            super::arg_eq(2, libc::SO_PEERCRED as u64)?,
        ],
    )?;
    // SO_RCVTIMEO (idle timeout, request deadline), SO_SNDTIMEO (write
    // timeout): vt-http's connection limits.
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        r.allow_when(
            libc::SYS_setsockopt,
            vec![
                super::arg_eq(1, libc::SOL_SOCKET as u64)?,
                super::arg_eq(2, opt as u64)?,
            ],
        )?;
    }
    Ok(())
}
