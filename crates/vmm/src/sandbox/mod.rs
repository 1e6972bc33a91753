//! The VMM's own barriers against a hostile guest that takes it over:
//! seccomp allow-lists per thread kind ([`seccomp`]) and a Landlock ruleset
//! limiting the whole process to its own files ([`landlock`]).
//!
//! Neither depends on a jail: both work on a plain `vt-vmm`, and both leave
//! resources that arrive as file descriptors alone (an fd needs no path
//! rule, and the filters allow I/O on any fd the process holds).
//!
//! When each is put up (see ARCHITECTURE.md, "Confinement"):
//!
//! 1. [`Confinement::enter`] on the main thread before any other thread
//!    exists: compiles every filter once (so a thread installs its own with
//!    a single `seccomp(2)` call, nothing to allocate or fail late) and
//!    restricts the process with Landlock (Landlock applies to the calling
//!    thread and the threads it creates later, so it must come first);
//! 2. each thread installs the filter of its kind as the first thing in its
//!    body ([`enter_thread`]);
//! 3. the main thread installs its own filter after the first VM is built
//!    ([`enter_thread`]`(`[`ThreadKind::Main`]`)`), before the vCPUs start;
//!    vCPU threads (and the device workers they start) inherit it.

pub mod landlock;
pub mod seccomp;

use std::sync::OnceLock;

use api::control::{Confinement as Status, LandlockState, SeccompMode};
use api::VmConfig;

pub use seccomp::ThreadKind;

/// Why the barriers could not be put up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A thread kind's allow-list could not be compiled.
    #[error("seccomp filter for {0} threads")]
    SeccompBackend(&'static str, #[source] seccompiler::BackendError),
    /// The kernel refused the Landlock ruleset or a rule.
    #[error("landlock")]
    Landlock(#[source] ::landlock::RulesetError),
    /// A path for a Landlock rule could not be opened (`O_PATH`).
    #[error("landlock: {0}")]
    LandlockPath(String, #[source] std::io::Error),
    /// [`Confinement::enter`] was called a second time.
    #[error("the confinement was already set up in this process")]
    Twice,
}

/// What `vt-vmm --seccomp` and `--landlock` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The seccomp mode of every thread's filter.
    pub seccomp: SeccompMode,
    /// Whether to restrict the process with Landlock.
    pub landlock: bool,
}

impl Default for Policy {
    /// Both barriers on.
    fn default() -> Self {
        Policy {
            seccomp: SeccompMode::On,
            landlock: true,
        }
    }
}

impl Policy {
    /// Both barriers off (library users and tests that want none).
    pub fn off() -> Self {
        Policy {
            seccomp: SeccompMode::Off,
            landlock: false,
        }
    }
}

/// The process-wide state: the compiled filters and what is in force.
pub struct Confinement {
    filters: seccomp::Filters,
    status: Status,
}

static CONFINEMENT: OnceLock<Confinement> = OnceLock::new();

impl Confinement {
    /// Compiles the filters and applies Landlock for `config` (with the
    /// control socket already bound, if any). Call on the main thread
    /// before any other thread is started; once per process. With both
    /// barriers off it does nothing (and may be called again).
    pub fn enter(config: &VmConfig, policy: Policy) -> Result<Status, Error> {
        if policy == Policy::off() {
            return Ok(status());
        }
        if CONFINEMENT.get().is_some() {
            return Err(Error::Twice);
        }
        let filters = seccomp::Filters::compile(policy.seccomp)?;
        let (landlock, landlock_abi) = if policy.landlock {
            landlock::restrict(&landlock::Paths::of(config))?
        } else {
            (LandlockState::Off, landlock::kernel_abi())
        };
        if landlock == LandlockState::Unsupported {
            tracing::warn!("landlock: not supported by this kernel, running without it");
        }
        let status = Status {
            seccomp: policy.seccomp,
            landlock,
            landlock_abi,
        };
        CONFINEMENT
            .set(Confinement { filters, status })
            .map_err(|_| Error::Twice)?;
        Ok(status)
    }
}

/// What is in force in this process (all off before [`Confinement::enter`],
/// and with both barriers off).
pub fn status() -> Status {
    CONFINEMENT.get().map_or_else(
        || Status {
            landlock_abi: landlock::kernel_abi(),
            ..Status::default()
        },
        |c| c.status,
    )
}

/// Installs the filter of `kind` on the calling thread. Does nothing before
/// [`Confinement::enter`] or with `--seccomp off`. A filter that cannot be
/// installed ends the process (status 1): a thread must not run unconfined
/// when confinement was asked for.
pub fn enter_thread(kind: ThreadKind) {
    let Some(c) = CONFINEMENT.get() else { return };
    if let Err(e) = c.filters.install(kind) {
        eprintln!(
            "vt-vmm: error: seccomp filter for {} threads: {e}",
            kind.name()
        );
        std::process::exit(1);
    }
}

/// [`enter_thread`] for device worker threads (`devices` calls it through
/// its thread-start hook, having no dependency on this crate).
pub fn enter_worker_thread() {
    enter_thread(ThreadKind::Worker);
}
