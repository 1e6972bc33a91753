//! seccomp allow-lists, one per thread kind, each in its own file:
//!
//! | kind | file | installed | its filters (stacked) |
//! |---|---|---|---|
//! | main | `main.rs` | after the first VM is built | main |
//! | vCPU | `vcpu.rs` | first thing in the thread | main + vCPU |
//! | device worker | `worker.rs` | first thing in the thread | main + vCPU + worker |
//! | control API | `api.rs` | first thing in the listener (its connection threads inherit it) | api |
//! | console input | `console.rs` | first thing in the thread | console |
//!
//! A thread inherits the filters of the thread that created it and adds its
//! own; a call must pass every filter in its stack. vCPU threads are
//! started by the main thread, device workers by the vCPU thread whose MMIO
//! write activated the device: so the vCPU list also holds what a worker
//! needs, and the main list what a vCPU needs. The API and console threads
//! start before the main filter exists, and have only theirs.
//!
//! Every list denies by default with kill-process (`--seccomp on`) or
//! allows and logs (`--seccomp log`); `ioctl` is allowed only for the
//! request numbers listed, `fcntl` only for the commands std and we use,
//! `socket` only for the one datagram socket tap set-up needs, `tgkill`
//! only inside this process. Nothing allows `execve`, `ptrace`, `connect`,
//! `bind`, `open` of anything on a thread other than the main one, or
//! `clone`/`fork` (threads are made with `clone3`).

mod api;
mod console;
pub mod ioctls;
mod main;
mod vcpu;
mod worker;

use std::collections::BTreeMap;

use ::api::control::SeccompMode;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::Error;

/// The kinds of thread in a `vt-vmm` process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadKind {
    /// The main thread: builds (and rebuilds) the VM, runs the event loop.
    Main,
    /// A vCPU thread (`vcpu.rs`).
    Vcpu,
    /// A virtio device worker (`devices/src/virtio/worker.rs`).
    Worker,
    /// The control socket's listener and its connection threads.
    Api,
    /// The console input thread (stdin → UART).
    Console,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 5] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::Worker,
        ThreadKind::Api,
        ThreadKind::Console,
    ];

    /// The name used in messages and by `vt-cell-probe --thread`.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Main => "main",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Worker => "worker",
            ThreadKind::Api => "api",
            ThreadKind::Console => "console",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The filters a thread of this kind runs under, outermost first
    /// (inherited ones, then its own).
    pub fn stack(self) -> &'static [ThreadKind] {
        match self {
            ThreadKind::Main => &[ThreadKind::Main],
            ThreadKind::Vcpu => &[ThreadKind::Main, ThreadKind::Vcpu],
            ThreadKind::Worker => &[ThreadKind::Main, ThreadKind::Vcpu, ThreadKind::Worker],
            ThreadKind::Api => &[ThreadKind::Api],
            ThreadKind::Console => &[ThreadKind::Console],
        }
    }

    /// True for kinds whose threads start threads that install a filter of
    /// their own (main → vCPU, vCPU → worker): they must allow that.
    fn starts_confined_threads(self) -> bool {
        matches!(self, ThreadKind::Main | ThreadKind::Vcpu)
    }

    /// This kind's own allow-list.
    fn rules(self, pid: u32) -> Result<Rules> {
        let mut r = Rules::default();
        common(&mut r, pid)?;
        if self.starts_confined_threads() {
            // What a child needs to install its own filter (only ever a
            // further restriction): no_new_privs, then seccomp(2).
            r.allow_arg(libc::SYS_prctl, 0, &[libc::PR_SET_NO_NEW_PRIVS as u64])?;
            r.allow_arg(
                libc::SYS_seccomp,
                0,
                &[libc::SECCOMP_SET_MODE_FILTER as u64],
            )?;
        }
        match self {
            ThreadKind::Main => main::rules(&mut r)?,
            ThreadKind::Vcpu => vcpu::rules(&mut r)?,
            ThreadKind::Worker => worker::rules(&mut r)?,
            ThreadKind::Api => api::rules(&mut r)?,
            ThreadKind::Console => console::rules(&mut r)?,
        }
        Ok(r)
    }
}

/// An allow-list being built: syscall number → conditions (an empty list
/// allows the call whatever its arguments).
#[derive(Default)]
pub struct Rules(BTreeMap<i64, Option<Vec<SeccompRule>>>);

type Result<T> = std::result::Result<T, seccompiler::BackendError>;

impl Rules {
    /// Allows each of `calls` whatever the arguments.
    pub fn allow(&mut self, calls: &[libc::c_long]) {
        for c in calls {
            self.0.insert(*c, None);
        }
    }

    /// Allows `call` when argument `arg` (32 bits) is one of `values`.
    pub fn allow_arg(&mut self, call: libc::c_long, arg: u8, values: &[u64]) -> Result<()> {
        for v in values {
            let cond = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *v)?;
            self.allow_when(call, vec![cond])?;
        }
        Ok(())
    }

    /// Allows `call` when all of `conditions` hold.
    pub fn allow_when(
        &mut self,
        call: libc::c_long,
        conditions: Vec<SeccompCondition>,
    ) -> Result<()> {
        let rule = SeccompRule::new(conditions)?;
        // None: already allowed whatever the arguments.
        if let Some(rules) = self.0.entry(call).or_insert_with(|| Some(Vec::new())) {
            rules.push(rule);
        }
        Ok(())
    }

    /// Allows `ioctl` with each of these request numbers.
    pub fn allow_ioctls(&mut self, requests: &[u64]) -> Result<()> {
        self.allow_arg(libc::SYS_ioctl, 1, requests)
    }

    fn into_map(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.0
            .into_iter()
            .map(|(call, rules)| (call, rules.unwrap_or_default()))
            .collect()
    }
}

/// A condition: argument `arg` (32 bits) equals `value`.
pub fn arg_eq(arg: u8, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

/// What every Rust thread needs whatever it does: memory, futexes, its own
/// stack and signals, exiting, closing fds, writing (stderr, eventfds), the
/// clock, and aborting itself on a panic.
fn common(r: &mut Rules, pid: u32) -> Result<()> {
    r.allow(&[
        libc::SYS_futex,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_mremap,
        libc::SYS_brk,
        libc::SYS_sigaltstack,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sched_getaffinity,
        // Lock contention: spinning locks (std's, parking_lot's in imago,
        // glibc's) yield the CPU. Seen once on a vCPU thread in CI, which
        // the filter killed.
        libc::SYS_sched_yield,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getrandom,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_close,
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_rseq,
        libc::SYS_set_robust_list,
    ]);
    // Naming a new thread (std, in the child before it runs our code).
    r.allow_arg(libc::SYS_prctl, 0, &[libc::PR_SET_NAME as u64])?;
    // Debug builds check an fd with F_GETFD before closing it; dup with
    // close-on-exec (try_clone), and non-blocking flags.
    r.allow_arg(
        libc::SYS_fcntl,
        1,
        &[
            libc::F_GETFD as u64,
            libc::F_SETFD as u64,
            libc::F_GETFL as u64,
            libc::F_SETFL as u64,
            libc::F_DUPFD_CLOEXEC as u64,
            // Image locks (QEMU's OFD locks), taken when disks are opened.
            libc::F_OFD_GETLK as u64,
            libc::F_OFD_SETLK as u64,
        ],
    )?;
    // Signals to threads of this process only (vCPU kicks, abort()).
    let own = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, pid.into())?;
    r.allow_when(libc::SYS_tgkill, vec![own])?;
    Ok(())
}

/// The compiled filter of every kind, for one seccomp mode.
pub struct Filters {
    mode: SeccompMode,
    programs: BTreeMap<ThreadKind, BpfProgram>,
}

impl Filters {
    /// Compiles every kind's filter (none with [`SeccompMode::Off`]).
    pub fn compile(mode: SeccompMode) -> std::result::Result<Self, Error> {
        let mut programs = BTreeMap::new();
        if mode != SeccompMode::Off {
            let pid = std::process::id();
            for kind in ThreadKind::ALL {
                programs.insert(kind, compile(kind, mode, pid)?);
            }
        }
        Ok(Filters { mode, programs })
    }

    /// Installs `kind`'s own filter on the calling thread (it keeps the
    /// filters it inherited). Sets `no_new_privs` first, as seccomp needs.
    pub fn install(&self, kind: ThreadKind) -> std::result::Result<(), seccompiler::Error> {
        match self.programs.get(&kind) {
            Some(p) if self.mode != SeccompMode::Off => seccompiler::apply_filter(p),
            _ => Ok(()),
        }
    }
}

/// Compiles `kind`'s allow-list; a call outside it kills the process (or
/// is logged, with [`SeccompMode::Log`]).
pub fn compile(
    kind: ThreadKind,
    mode: SeccompMode,
    pid: u32,
) -> std::result::Result<BpfProgram, Error> {
    let what = kind.name();
    let mismatch = match mode {
        SeccompMode::Log => SeccompAction::Log,
        _ => SeccompAction::KillProcess,
    };
    let rules = kind
        .rules(pid)
        .map_err(|e| Error::SeccompBackend(what, e))?;
    let filter = SeccompFilter::new(
        rules.into_map(),
        mismatch,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| Error::SeccompBackend(what, e))?;
    BpfProgram::try_from(filter).map_err(|e| Error::SeccompBackend(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles_in_both_modes() {
        for mode in [SeccompMode::On, SeccompMode::Log] {
            for kind in ThreadKind::ALL {
                let p = compile(kind, mode, 1).unwrap();
                assert!(p.len() > 10, "{kind:?}");
                assert_eq!(ThreadKind::from_name(kind.name()), Some(kind));
            }
        }
        assert!(Filters::compile(SeccompMode::Off)
            .unwrap()
            .programs
            .is_empty());
    }

    #[test]
    fn dangerous_calls_are_in_no_list() {
        for kind in ThreadKind::ALL {
            let rules = kind.rules(1).unwrap().0;
            for call in [
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_ptrace,
                libc::SYS_connect,
                libc::SYS_bind,
                libc::SYS_fork,
                libc::SYS_vfork,
                libc::SYS_clone,
                libc::SYS_process_vm_writev,
                libc::SYS_kill,
                libc::SYS_mount,
                libc::SYS_setuid,
            ] {
                assert!(!rules.contains_key(&call), "{kind:?} allows {call}");
            }
        }
    }

    #[test]
    fn only_the_main_thread_opens_files_and_kvm_run_stays_off_the_workers() {
        for kind in ThreadKind::ALL {
            let rules = kind.rules(1).unwrap().0;
            assert_eq!(
                rules.contains_key(&libc::SYS_openat),
                kind == ThreadKind::Main,
                "{kind:?}"
            );
        }
        let worker = ThreadKind::Worker.rules(1).unwrap().0;
        assert!(!worker.contains_key(&libc::SYS_ioctl));
        let api = ThreadKind::Api.rules(1).unwrap().0;
        assert!(!api.contains_key(&libc::SYS_ioctl));
    }
}
