//! The thread an active virtio device serves its queues on, so that device
//! work (disk I/O, tap reads) never runs on a vCPU thread.
//!
//! It waits (epoll) on the queues' notification eventfds, on extra file
//! descriptors the device asks for (a tap, a rate-limiter timer) and on a
//! stop eventfd.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

const STOP: u64 = u64::MAX;

/// Called first thing in every worker thread: the VMM installs the worker
/// seccomp filter there (this crate knows nothing of seccomp).
static THREAD_START: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets the function every worker thread calls before anything else (the
/// first call wins; later ones are ignored).
pub fn set_thread_start_hook(hook: fn()) {
    let _ = THREAD_START.set(hook);
}
/// Extra descriptors' tokens start here; queue n has token n.
pub const EXTRA_BASE: u64 = 1 << 32;

/// A device's queue processing. Each call does a bounded amount of work
/// and returns true when it stopped on that bound with more to do: the
/// worker then calls it again after looking at its other events (the stop
/// request first), so one busy queue cannot starve the rest or a reset.
pub trait QueueHandler: Send + 'static {
    /// Queue `index` was notified (or the worker just started).
    fn queue_event(&mut self, index: usize) -> bool;
    /// More descriptors to wait on (edge-triggered: read them until they
    /// would block), each with a token of the device's choice.
    fn extra_fds(&self) -> Vec<(RawFd, u64)> {
        Vec::new()
    }
    /// One of [`QueueHandler::extra_fds`] is ready (readable or writable).
    fn extra_event(&mut self, _token: u64) -> bool {
        false
    }
}

/// A running worker thread; dropping it stops and joins the thread.
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `handler` on a thread named `name`, woken by `queue_evts`.
    pub fn spawn<H: QueueHandler>(
        name: &str,
        queue_evts: Vec<Option<EventFd>>,
        mut handler: H,
    ) -> io::Result<Worker> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let add = |fd: RawFd, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(stop.as_raw_fd(), STOP)?;
        for (i, evt) in queue_evts.iter().enumerate() {
            if let Some(evt) = evt {
                add(evt.as_raw_fd(), i as u64)?;
            }
        }
        // Extra fds are edge-triggered: a tap stays readable while the
        // guest has no buffers, and writable nearly always, and the device
        // must not spin on it. Writability matters to a device whose writes
        // were refused (a full tap).
        for (fd, token) in handler.extra_fds() {
            let events = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(events, EXTRA_BASE + token),
            )?;
        }
        let stop_evt = stop.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                if let Some(hook) = THREAD_START.get() {
                    hook();
                }
                let again: Vec<u64> = (0..queue_evts.len() as u64)
                    .filter(|i| queue_evts.get(*i as usize).is_some_and(Option::is_some))
                    .collect();
                run(&epoll, &queue_evts, &stop_evt, &mut handler, again);
            })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }
}

fn run<H: QueueHandler>(
    epoll: &Epoll,
    queue_evts: &[Option<EventFd>],
    stop: &EventFd,
    handler: &mut H,
    mut again: Vec<u64>,
) {
    let mut events = vec![EpollEvent::default(); 16];
    loop {
        // Work left over: only peek at new events.
        let timeout = if again.is_empty() { -1 } else { 0 };
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("virtio worker: epoll_wait: {e}");
                return;
            }
        };
        let mut tokens = std::mem::take(&mut again);
        for ev in events.iter().take(n) {
            match ev.data() {
                STOP => {
                    let _ = stop.read();
                    return;
                }
                t => {
                    if let Some(Some(evt)) = usize::try_from(t).ok().and_then(|i| queue_evts.get(i))
                    {
                        let _ = evt.read();
                    }
                    if !tokens.contains(&t) {
                        tokens.push(t);
                    }
                }
            }
        }
        for t in tokens {
            let more = if t >= EXTRA_BASE {
                handler.extra_event(t - EXTRA_BASE)
            } else {
                handler.queue_event(t as usize)
            };
            if more {
                again.push(t);
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Record(mpsc::Sender<usize>);
    impl QueueHandler for Record {
        fn queue_event(&mut self, index: usize) -> bool {
            let _ = self.0.send(index);
            false
        }
    }

    /// Always has more work: the worker must still stop when asked.
    struct Busy(mpsc::Sender<usize>);
    impl QueueHandler for Busy {
        fn queue_event(&mut self, index: usize) -> bool {
            let _ = self.0.send(index);
            true
        }
    }

    #[test]
    fn a_handler_with_endless_work_is_called_again_and_still_stops() {
        let (tx, rx) = mpsc::channel();
        let a = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let w = Worker::spawn("t", vec![Some(a)], Busy(tx)).unwrap();
        let t = std::time::Duration::from_secs(5);
        for _ in 0..100 {
            assert_eq!(rx.recv_timeout(t).unwrap(), 0);
        }
        drop(w);
        while rx.try_recv().is_ok() {}
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_err());
    }

    #[test]
    fn runs_each_queue_once_then_on_notification_and_stops_on_drop() {
        let (tx, rx) = mpsc::channel();
        let a = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let b = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let b2 = b.try_clone().unwrap();
        let w = Worker::spawn("t", vec![Some(a), None, Some(b)], Record(tx)).unwrap();
        let t = std::time::Duration::from_secs(5);
        let mut first = [rx.recv_timeout(t).unwrap(), rx.recv_timeout(t).unwrap()];
        first.sort();
        assert_eq!(first, [0, 2]);
        b2.write(1).unwrap();
        assert_eq!(rx.recv_timeout(t).unwrap(), 2);
        drop(w);
        assert!(rx.recv_timeout(t).is_err(), "handler outlived the worker");
    }
}
