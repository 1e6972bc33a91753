//! Why a VMM ended: its exit status (when it was our child), its last
//! stderr line (`vt-vmm --api-socket` always says how it ended) and whether
//! vtd asked it to stop, turned into a state and a one-line reason.

use std::process::ExitStatus;

use api::manager::VmState;

use crate::process;

/// What a VMM's end means: the state and a one-line reason.
pub fn classify(
    stopping: Option<String>,
    status: Option<ExitStatus>,
    line: &str,
    pid: u32,
) -> (VmState, String) {
    let said = |prefix: &str| line.strip_prefix(prefix).map(str::to_string);
    if let Some(crash) = said("vt-vmm: guest crashed: ") {
        return (VmState::Crashed, format!("guest crashed: {crash}"));
    }
    if let Some(why) = stopping {
        return (VmState::Stopped, why);
    }
    if let Some(sig) = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)) {
        return (
            VmState::Crashed,
            format!("vt-vmm was killed by {}", process::signal_name(sig)),
        );
    }
    if let Some(how) = said("vt-vmm: exit: ") {
        return (VmState::Stopped, how);
    }
    if let Some(err) = said("vt-vmm: error: ") {
        return (VmState::Crashed, format!("vt-vmm failed: {err}"));
    }
    match status.and_then(|s| s.code()) {
        Some(code) => (
            VmState::Crashed,
            format!("vt-vmm exited with status {code}"),
        ),
        None => (
            VmState::Crashed,
            format!("vt-vmm (pid {pid}) ended without saying why (killed while vtd was away?)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn code(c: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(c << 8))
    }

    #[test]
    fn exit_reasons() {
        let c = |stop: Option<&str>, st, line: &str| classify(stop.map(Into::into), st, line, 9);
        assert_eq!(
            c(None, Some(ExitStatus::from_raw(9)), ""),
            (
                VmState::Crashed,
                "vt-vmm was killed by signal 9 (SIGKILL)".into()
            )
        );
        assert_eq!(
            c(Some("stopped"), Some(ExitStatus::from_raw(9)), "").0,
            VmState::Stopped
        );
        assert_eq!(
            c(None, code(0), "vt-vmm: exit: guest powered off"),
            (VmState::Stopped, "guest powered off".into())
        );
        assert_eq!(
            c(None, code(1), "vt-vmm: guest crashed: triple fault").1,
            "guest crashed: triple fault"
        );
        assert_eq!(
            c(None, code(2), "vt-vmm: error: bad").1,
            "vt-vmm failed: bad"
        );
        assert_eq!(c(None, code(3), "").1, "vt-vmm exited with status 3");
        assert!(c(None, None, "").1.contains("pid 9"));
    }
}
